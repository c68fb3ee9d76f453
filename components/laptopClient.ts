// LaptopClient: a Mac or Linux desktop sends all its traffic through a local Linux VM that
// holds the tunnel. The VM makes its key, SNATs the laptop into the tunnel behind a kill
// switch; the laptop routes everything to the VM, keeps only the endpoint routes on its
// uplink, and firewalls that uplink down to DHCP and the WireGuard flows. With more than one
// gateway the VM holds a tunnel to each and its health check moves the laptop's traffic
// between them (failover.ts, as on a KVM site). Renderers live in laptopClient.render.ts.
import * as pulumi from "@pulumi/pulumi";
import type { LaptopConfig } from "./config";
import { type HostConnection, hostStep, type SshCredentials } from "./connection";
import { type FailoverPlan, type FurtherGateway, failoverStep } from "./failover";
import { LAPTOP_VM_FAILOVER } from "./failover.render";
import {
    type LaptopSettings,
    type LaptopVmSettings,
    renderLaptopInstallCommand,
    renderLaptopRemoveCommand,
    renderLaptopVmInstallCommand,
    renderLaptopVmRemoveCommand,
    VM_DIR,
} from "./laptopClient.render";
import { renderHostKeyCommand, renderHostKeyRemoveCommand } from "./roleScript";

export interface LaptopClientArgs {
    laptop: LaptopConfig;
    /**
     * How the VM joins the tunnel. Absent while its gateway (in another stack) does not know
     * it yet: the VM then only makes its key, and the laptop is left alone.
     */
    tunnel?: {
        /** The VM's tunnel addresses, allocated by the gateway's config. */
        addressV4: string;
        addressV6: string;
        mtu: number;
        gateway: { publicKey: pulumi.Input<string>; endpoint: pulumi.Input<string>; publicAddress: pulumi.Input<string>; listenPort: number };
        /** More than one gateway: as a site's (KvmSiteArgs), each further one with the address and port the laptop lets the VM reach. */
        failover?: FailoverPlan<FurtherLaptopGateway>;
    };
    ssh: SshCredentials;
}

export interface FurtherLaptopGateway extends FurtherGateway {
    publicAddress: pulumi.Input<string>;
    listenPort: number;
}

export class LaptopClient extends pulumi.ComponentResource {
    /** The VM's WireGuard public key. */
    readonly publicKey: pulumi.Output<string>;
    /** False while the VM waits for its gateway stack to take it as a peer. */
    readonly joined: boolean;

    constructor(name: string, args: LaptopClientArgs, opts?: pulumi.ComponentResourceOptions) {
        super("wgexit:index:LaptopClient", name, {}, opts);
        const l = args.laptop;
        const connect = (c: LaptopConfig["vm"]): HostConnection => ({ host: c.host, port: c.port, user: c.user, credentials: args.ssh, hostKey: c.hostKey, namedByUser: true });
        const vmConnection = connect(l.vm);
        // The key first: it needs nothing from the gateway, and the gateway needs it.
        const key = hostStep(`${name}-key`, { connection: vmConnection, create: renderHostKeyCommand(VM_DIR), delete: renderHostKeyRemoveCommand(VM_DIR) }, { parent: this });
        this.publicKey = key.stdout.apply((out) => out.trim().split("\n").pop()?.trim() ?? "");
        this.joined = args.tunnel !== undefined;
        if (args.tunnel) this.join(name, l, args.tunnel, vmConnection, connect(l.laptop), key);
        this.registerOutputs({ publicKey: this.publicKey, joined: this.joined });
    }

    /** The VM's tunnel, SNAT and kill switch, then the laptop's switch-over. */
    private join(name: string, l: LaptopConfig, tunnel: NonNullable<LaptopClientArgs["tunnel"]>, vmConnection: HostConnection, laptopConnection: HostConnection, key: pulumi.Resource): void {
        const further = tunnel.failover?.further ?? [];
        const vmSettings: LaptopVmSettings = {
            name: l.name,
            wgInterface: l.wgInterface,
            tunnelMtu: tunnel.mtu,
            addressV4: tunnel.addressV4,
            addressV6: tunnel.addressV6,
            routeTable: l.routeTable,
            vmLink: l.vmLink,
            laptopAddress: l.laptopAddress,
            laptopAddressV6: l.laptopAddressV6,
            ...(further.length ? { extraTunnels: further.map((g) => g.wgInterface) } : {}),
        };
        const vmInstall = pulumi
            .all([tunnel.gateway.publicKey, tunnel.gateway.endpoint])
            .apply(([publicKey, endpoint]) => renderLaptopVmInstallCommand(vmSettings, { publicKey, endpoint }));
        const vm = hostStep(`${name}-vm`, { connection: vmConnection, create: vmInstall, update: vmInstall, delete: renderLaptopVmRemoveCommand() }, { parent: this, dependsOn: [key] });
        // The VM's tunnels to the further gateways and the health check that moves the laptop's traffic between all of them.
        if (tunnel.failover) failoverStep(`${name}-failover`, LAPTOP_VM_FAILOVER, vmSettings, [l.vmLink], tunnel.failover, vmConnection, { parent: this, dependsOn: [vm] });

        const laptopInstall = pulumi.all([tunnel.gateway.publicAddress, ...further.map((g) => g.publicAddress)]).apply(([endpointHost, ...others]) => {
            const settings: LaptopSettings = {
                name: l.name,
                os: l.os,
                vmAddress: l.vmAddress,
                vmAddressV6: l.vmAddressV6,
                endpointHost,
                endpointPort: tunnel.gateway.listenPort,
                ...(further.length ? { moreEndpoints: further.map((g, i) => `${others[i]}:${g.listenPort}`) } : {}),
                resolver: l.resolver,
                networkService: l.networkService,
            };
            return renderLaptopInstallCommand(settings);
        });
        // The laptop switches over only once its VM holds the tunnel; destroy restores it first.
        hostStep(`${name}-laptop`, { connection: laptopConnection, create: laptopInstall, update: laptopInstall, delete: renderLaptopRemoveCommand(l.os) }, { parent: this, dependsOn: [vm] });
    }
}
