// The failover step beside a role that has more than one gateway (a KVM site, a laptop's VM):
// the tunnels to the further gateways and the health check that moves the role's traffic
// between all of them. Renderers live in failover.render.ts; the script is scripts/failover.sh.
import * as pulumi from "@pulumi/pulumi";
import type { FailoverConfig } from "./config";
import { type HostConnection, hostStep } from "./connection";
import { type FailoverRole, renderFailoverInstallCommand, renderFailoverRemoveCommand, type FailoverTunnel } from "./failover.render";

/** One of the stack's further gateways, as a site or laptop VM joins it. */
export interface FurtherGateway extends FailoverTunnel {
    publicKey: pulumi.Input<string>;
    endpoint: pulumi.Input<string>;
}

/** The first gateway's name and tunnel address, the others in order of preference, and how to choose. */
export interface FailoverPlan<G extends FurtherGateway = FurtherGateway> {
    first: { gateway: string; probe: string };
    further: G[];
    settings: FailoverConfig;
}

/** The role's own tunnel to the first gateway, and the table its traffic is policy-routed to. */
export interface OwnTunnel {
    wgInterface: string;
    addressV4: string;
    addressV6: string;
    tunnelMtu: number;
    routeTable: number;
}

export function failoverStep(
    name: string,
    role: FailoverRole,
    own: OwnTunnel,
    ingress: string[],
    plan: FailoverPlan,
    connection: HostConnection,
    opts: pulumi.CustomResourceOptions,
): pulumi.Resource {
    const tunnels: FailoverTunnel[] = [
        { gateway: plan.first.gateway, wgInterface: own.wgInterface, addressV4: own.addressV4, addressV6: own.addressV6, mtu: own.tunnelMtu, probe: plan.first.probe },
        ...plan.further.map((g) => ({ gateway: g.gateway, wgInterface: g.wgInterface, addressV4: g.addressV4, addressV6: g.addressV6, mtu: g.mtu, probe: g.probe })),
    ];
    const command = pulumi
        .all(plan.further.map((g) => pulumi.all([g.publicKey, g.endpoint])))
        .apply((peers) => renderFailoverInstallCommand({ role, tunnels, failover: plan.settings, routeTable: own.routeTable, ingress }, peers.map(([publicKey, endpoint]) => ({ publicKey, endpoint }))));
    return hostStep(name, { connection, create: command, update: command, delete: renderFailoverRemoveCommand(role) }, opts);
}
