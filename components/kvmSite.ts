// KvmSite: a KVM host that joins the tunnel for its guests only. The host makes its own
// key, policy-routes each guest bridge into the tunnel behind a kill switch, seals itself
// and its LAN off with its own nftables table, and runs libvirt routed networks and
// guests (GuestVm) defined from generated XML. Renderers live in kvmSite.render.ts.
import * as pulumi from "@pulumi/pulumi";
import type { PortForward, ResolvedSite } from "./config";
import { type HostConnection, hostStep } from "./connection";
import { GuestVm } from "./guestVm";
import {
    renderNetworkRemoveCommand,
    renderNetworkUpCommand,
    renderSiteInstallCommand,
    renderSiteRemoveCommand,
    type SiteGateway,
    type SiteSettings,
} from "./kvmSite.render";

export interface KvmSiteArgs {
    site: ResolvedSite;
    /** This site's tunnel addresses, allocated by the config. */
    addressV4: string;
    addressV6: string;
    tunnelMtu: number;
    gateway: { publicKey: pulumi.Input<string>; endpoint: pulumi.Input<string> };
    /** Ports the gateway forwards to this site's guests: the site's firewall lets them in. */
    portForwards: PortForward[];
    sshPrivateKey: pulumi.Input<string>;
}

export class KvmSite extends pulumi.ComponentResource {
    /** The site's WireGuard public key, read from the host after it made its key. */
    readonly publicKey: pulumi.Output<string>;
    /** Guest subnets routed through the tunnel. */
    readonly routedCidrs: string[];
    /** Static guest addresses by guest name. */
    readonly guestAddresses: Record<string, string>;
    readonly connection: HostConnection;

    constructor(name: string, args: KvmSiteArgs, opts?: pulumi.ComponentResourceOptions) {
        super("wgexit:index:KvmSite", name, {}, opts);
        const site = args.site;
        const c = site.connection;
        this.connection = { host: c.host, port: c.port, user: c.user, privateKey: args.sshPrivateKey, hostKey: c.hostKey };
        const settings: SiteSettings = {
            name: site.name,
            wgInterface: site.wgInterface,
            tunnelMtu: args.tunnelMtu,
            addressV4: args.addressV4,
            addressV6: args.addressV6,
            routeTable: site.routeTable,
            networks: site.networks,
            allowInboundFrom: site.allowInboundFrom,
            lanCidrs: site.lanCidrs,
            serveDns: site.serveDns,
            poolDir: site.poolDir,
            domainType: site.domainType,
            portForwards: args.portForwards,
        };

        const installCommand = pulumi
            .all([args.gateway.publicKey, args.gateway.endpoint])
            .apply(([publicKey, endpoint]) => renderSiteInstallCommand(settings, { publicKey, endpoint } satisfies SiteGateway));
        const install = hostStep(
            `${name}-install`,
            { connection: this.connection, create: installCommand, update: installCommand, delete: renderSiteRemoveCommand() },
            { parent: this },
        );

        // Networks, then guests on them; destroy runs in the reverse order.
        for (const network of site.networks) {
            const net = hostStep(
                `${name}-network-${network.name}`,
                {
                    connection: this.connection,
                    create: renderNetworkUpCommand(network, settings),
                    update: renderNetworkUpCommand(network, settings),
                    delete: renderNetworkRemoveCommand(network),
                },
                { parent: this, dependsOn: [install] },
            );
            for (const guest of network.guests) {
                new GuestVm(`${name}-guest-${guest.name}`, { guest, network, settings, connection: this.connection, after: [net] }, { parent: this });
            }
        }

        this.publicKey = install.stdout.apply((out) => out.trim().split("\n").pop()?.trim() ?? "");
        this.routedCidrs = site.networks.flatMap((n) => [n.cidr, ...(n.cidrV6 ? [n.cidrV6] : [])]);
        this.guestAddresses = Object.fromEntries(site.networks.flatMap((n) => n.guests.map((g) => [g.name, g.addressV4])));
        this.registerOutputs({ publicKey: this.publicKey, routedCidrs: this.routedCidrs, guestAddresses: this.guestAddresses });
    }
}
