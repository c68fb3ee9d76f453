// LaptopClient: a Mac or Linux desktop sends all its traffic through a local Linux VM that
// holds the tunnel. The VM makes its key, SNATs the laptop into the tunnel behind a kill
// switch; the laptop routes everything to the VM, keeps only the endpoint route on its
// uplink, and firewalls that uplink down to DHCP and the WireGuard flow. Renderers live in
// laptopClient.render.ts.
import * as pulumi from "@pulumi/pulumi";
import type { LaptopConfig } from "./config";
import { type HostConnection, hostStep } from "./connection";
import {
    type LaptopSettings,
    type LaptopVmSettings,
    renderLaptopInstallCommand,
    renderLaptopRemoveCommand,
    renderLaptopVmInstallCommand,
    renderLaptopVmRemoveCommand,
} from "./laptopClient.render";

export interface LaptopClientArgs {
    laptop: LaptopConfig;
    /** The VM's tunnel addresses, allocated by the config. */
    addressV4: string;
    addressV6: string;
    tunnelMtu: number;
    gateway: { publicKey: pulumi.Input<string>; endpoint: pulumi.Input<string>; publicAddress: pulumi.Input<string>; listenPort: number };
    sshPrivateKey: pulumi.Input<string>;
}

export class LaptopClient extends pulumi.ComponentResource {
    /** The VM's WireGuard public key. */
    readonly publicKey: pulumi.Output<string>;

    constructor(name: string, args: LaptopClientArgs, opts?: pulumi.ComponentResourceOptions) {
        super("wgexit:index:LaptopClient", name, {}, opts);
        const l = args.laptop;
        const connect = (c: LaptopConfig["vm"]): HostConnection => ({ host: c.host, port: c.port, user: c.user, privateKey: args.sshPrivateKey, hostKey: c.hostKey });
        const vmSettings: LaptopVmSettings = {
            name: l.name,
            wgInterface: l.wgInterface,
            tunnelMtu: args.tunnelMtu,
            addressV4: args.addressV4,
            addressV6: args.addressV6,
            routeTable: l.routeTable,
            vmLink: l.vmLink,
            laptopAddress: l.laptopAddress,
            laptopAddressV6: l.laptopAddressV6,
        };
        const vmInstall = pulumi
            .all([args.gateway.publicKey, args.gateway.endpoint])
            .apply(([publicKey, endpoint]) => renderLaptopVmInstallCommand(vmSettings, { publicKey, endpoint }));
        const vm = hostStep(`${name}-vm`, { connection: connect(l.vm), create: vmInstall, update: vmInstall, delete: renderLaptopVmRemoveCommand() }, { parent: this });

        const laptopInstall = pulumi.output(args.gateway.publicAddress).apply((endpointHost) => {
            const settings: LaptopSettings = {
                name: l.name,
                os: l.os,
                vmAddress: l.vmAddress,
                vmAddressV6: l.vmAddressV6,
                endpointHost,
                endpointPort: args.gateway.listenPort,
                resolver: l.resolver,
                networkService: l.networkService,
            };
            return renderLaptopInstallCommand(settings);
        });
        // The laptop switches over only once its VM holds the tunnel; destroy restores it first.
        const laptop = hostStep(
            `${name}-laptop`,
            { connection: connect(l.laptop), create: laptopInstall, update: laptopInstall, delete: renderLaptopRemoveCommand(l.os) },
            { parent: this, dependsOn: [vm] },
        );

        this.publicKey = vm.stdout.apply((out) => out.trim().split("\n").pop()?.trim() ?? "");
        this.registerOutputs({ publicKey: this.publicKey, laptopConfigured: laptop.id });
    }
}
