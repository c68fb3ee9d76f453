// GuestVm: one libvirt guest on a KVM site's routed network: a copy-on-write overlay on a
// pooled base image, a NoCloud seed built on the host, a static lease, and the domain,
// started and set to autostart. The host-side work is the site script's guest-up and
// guest-remove; the files it reads are rendered in guestVm.render.ts.
import * as pulumi from "@pulumi/pulumi";
import type { ResolvedGuest, ResolvedNetwork } from "./config";
import { type HostConnection, hostStep } from "./connection";
import { renderGuestRemoveCommand, renderGuestUpCommand } from "./guestVm.render";
import type { SiteSettings } from "./kvmSite.render";

export interface GuestVmArgs {
    guest: ResolvedGuest;
    network: ResolvedNetwork;
    settings: SiteSettings;
    connection: HostConnection;
    /** Steps that must exist first (the guest's network). */
    after: pulumi.Resource[];
}

/** One libvirt guest: overlay disk on a pooled base image, NoCloud seed, static lease, domain. */
export class GuestVm extends pulumi.ComponentResource {
    readonly address: string;

    constructor(name: string, args: GuestVmArgs, opts?: pulumi.ComponentResourceOptions) {
        super("wgexit:index:GuestVm", name, {}, opts);
        const up = renderGuestUpCommand(args.guest, args.network, args.settings);
        const step = hostStep(
            `${name}-domain`,
            {
                connection: args.connection,
                create: up,
                // Memory, CPUs, seed or boot settings: redefined in place (effective at the next boot).
                update: up,
                delete: renderGuestRemoveCommand(args.guest),
                // A new image, disk size, MAC or network makes a new guest: Pulumi shows a replace.
                triggers: [args.guest.image, args.guest.diskGb, args.guest.mac, args.network.name],
            },
            { parent: this, dependsOn: args.after },
        );
        this.address = args.guest.addressV4;
        this.registerOutputs({ address: this.address, defined: step.id });
    }
}
