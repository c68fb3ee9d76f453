// KvmSite: a KVM host that joins the tunnel for its guests only. The host makes its own
// key, policy-routes each guest bridge into the tunnel behind a kill switch, seals itself
// and its LAN off with its own nftables table, and runs libvirt routed networks and
// guests (GuestVm) defined from generated XML. Renderers live in kvmSite.render.ts.
import * as pulumi from "@pulumi/pulumi";
import type { PortForward, ResolvedSite } from "./config";
import { type HostConnection, hostStep, type SshCredentials } from "./connection";
import { GuestVm } from "./guestVm";
import {
    renderNetworkRemoveCommand,
    renderNetworkUpCommand,
    renderSiteInstallCommand,
    renderSiteRemoveCommand,
    SITE_DIR,
    type SiteGateway,
    type SiteSettings,
} from "./kvmSite.render";
import { renderHostKeyCommand, renderHostKeyRemoveCommand } from "./roleScript";
import { type FailoverPlan, failoverStep } from "./failover";
import { SITE_FAILOVER } from "./failover.render";

export interface KvmSiteArgs {
    site: ResolvedSite;
    /**
     * How the site joins the tunnel. Absent while its gateway (in another stack) does not know
     * it yet: the site then only makes its key, for the gateway stack to read.
     */
    tunnel?: {
        /** This site's tunnel addresses, allocated by the gateway's config. */
        addressV4: string;
        addressV6: string;
        mtu: number;
        gateway: { publicKey: pulumi.Input<string>; endpoint: pulumi.Input<string> };
        /**
         * More than one gateway (key gateways): the first one's name and tunnel address, the
         * others in order of preference, and how the site chooses between them.
         */
        failover?: FailoverPlan;
    };
    /** Ports the gateway forwards to this site's guests: the site's firewall lets them in. */
    portForwards: PortForward[];
    ssh: SshCredentials;
}

export class KvmSite extends pulumi.ComponentResource {
    /** The site's WireGuard public key, read from the host after it made its key. */
    readonly publicKey: pulumi.Output<string>;
    /** Guest subnets routed through the tunnel. */
    readonly routedCidrs: string[];
    /** Static guest addresses by guest name. */
    readonly guestAddresses: Record<string, string>;
    readonly connection: HostConnection;
    /** False while the site waits for its gateway stack to take it as a peer. */
    readonly joined: boolean;

    constructor(name: string, args: KvmSiteArgs, opts?: pulumi.ComponentResourceOptions) {
        super("wgexit:index:KvmSite", name, {}, opts);
        const site = args.site;
        const c = site.connection;
        this.connection = { host: c.host, port: c.port, user: c.user, credentials: args.ssh, hostKey: c.hostKey, namedByUser: true };
        // The key first: it needs nothing from the gateway, and the gateway needs it.
        const key = hostStep(`${name}-key`, { connection: this.connection, create: renderHostKeyCommand(SITE_DIR), delete: renderHostKeyRemoveCommand(SITE_DIR) }, { parent: this });
        this.publicKey = key.stdout.apply((out) => out.trim().split("\n").pop()?.trim() ?? "");
        this.routedCidrs = site.networks.flatMap((n) => [n.cidr, ...(n.cidrV6 ? [n.cidrV6] : [])]);
        this.guestAddresses = Object.fromEntries(site.networks.flatMap((n) => n.guests.map((g) => [g.name, g.addressV4])));
        this.joined = args.tunnel !== undefined;
        if (args.tunnel) this.join(name, site, args.tunnel, args.portForwards, key);
        this.registerOutputs({ publicKey: this.publicKey, routedCidrs: this.routedCidrs, guestAddresses: this.guestAddresses, joined: this.joined });
    }

    /** The host tunnel, its firewall and policy routing, the networks and the guests. */
    private join(name: string, site: ResolvedSite, tunnel: NonNullable<KvmSiteArgs["tunnel"]>, portForwards: PortForward[], key: pulumi.Resource): void {
        const settings: SiteSettings = {
            name: site.name,
            wgInterface: site.wgInterface,
            tunnelMtu: tunnel.mtu,
            addressV4: tunnel.addressV4,
            addressV6: tunnel.addressV6,
            routeTable: site.routeTable,
            networks: site.networks,
            allowInboundFrom: site.allowInboundFrom,
            lanCidrs: site.lanCidrs,
            serveDns: site.serveDns,
            poolDir: site.poolDir,
            domainType: site.domainType,
            portForwards,
            ...(tunnel.failover ? { extraTunnels: tunnel.failover.further.map((g) => g.wgInterface) } : {}),
        };

        const installCommand = pulumi
            .all([tunnel.gateway.publicKey, tunnel.gateway.endpoint])
            .apply(([publicKey, endpoint]) => renderSiteInstallCommand(settings, { publicKey, endpoint } satisfies SiteGateway));
        const install = hostStep(
            `${name}-install`,
            { connection: this.connection, create: installCommand, update: installCommand, delete: renderSiteRemoveCommand() },
            { parent: this, dependsOn: [key] },
        );

        // The tunnels to the further gateways and the health check that moves guest traffic between all of them.
        if (tunnel.failover) {
            const bridges = site.networks.map((n) => n.bridge);
            failoverStep(`${name}-failover`, SITE_FAILOVER, settings, bridges, tunnel.failover, this.connection, { parent: this, dependsOn: [install] });
        }

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
    }
}
