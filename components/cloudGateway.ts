// CloudGateway: the WireGuard exit. Placement "existing" converges a host over SSH;
// "oci" and "ovh" create an instance whose cloud-init runs the same script at first boot.
// After that, every placement is kept in step over SSH: converge, read the public key,
// apply peers. Renderers live in cloudGateway.render.ts.
import * as ovh from "@ovhcloud/pulumi-ovh";
import * as oci from "@pulumi/oci";
import * as pulumi from "@pulumi/pulumi";
import type { ConnectionConfig, OciConfig, OvhConfig, Placement, PortForward } from "./config";
import {
    type GatewayPeer,
    type GatewaySettings,
    renderGatewayCloudInit,
    renderGatewayInstallCommand,
    renderGatewayPeersCommand,
    renderGatewayPeersRemoveCommand,
    renderGatewayReadyCommand,
    renderGatewayRemoveCommand,
} from "./cloudGateway.render";
import { type HostConnection, hostStep, type SshCredentials } from "./connection";
import { parseCidr } from "./net";

/** A peer as the gateway sees it; its key usually comes from another component's output. */
export interface GatewayPeerInput extends Omit<GatewayPeer, "publicKey" | "mesh"> {
    publicKey: pulumi.Input<string>;
    /** Another gateway of the stack, whose endpoint is known once it exists. */
    mesh?: { endpoint: pulumi.Input<string>; addresses: string[] };
}

export interface CloudGatewayArgs {
    placement: Placement;
    settings: Omit<GatewaySettings, "sshPort">;
    existing?: ConnectionConfig;
    oci?: OciConfig;
    ovh?: OvhConfig;
    /** Login user on new instances. */
    sshUser: string;
    /** Installed on new instances. */
    sshPublicKey?: string;
    ssh: SshCredentials;
    peers: GatewayPeerInput[];
    /** Public ports sent through the tunnel to site guests; applied with the peers. */
    portForwards: PortForward[];
}

export class CloudGateway extends pulumi.ComponentResource {
    /** The gateway's WireGuard public key, read from the host after it made its key. */
    readonly publicKey: pulumi.Output<string>;
    /** Public IPv4 address (or the host name given for an existing host). */
    readonly publicAddress: pulumi.Output<string>;
    /** "address:port" for peers' Endpoint. */
    readonly endpoint: pulumi.Output<string>;
    readonly connection: HostConnection;

    constructor(name: string, args: CloudGatewayArgs, opts?: pulumi.ComponentResourceOptions) {
        super("wgexit:index:CloudGateway", name, {}, opts);

        const sshPort = args.placement === "existing" ? (args.existing as ConnectionConfig).port : 22;
        const settings: GatewaySettings = { ...args.settings, sshPort };

        let connection: HostConnection;
        let instance: pulumi.Resource | undefined;
        if (args.placement === "existing") {
            const e = args.existing as ConnectionConfig;
            connection = { host: e.host, port: e.port, user: e.user, credentials: args.ssh, hostKey: e.hostKey, namedByUser: true };
        } else {
            const userData = renderGatewayCloudInit(settings, args.sshPublicKey as string);
            const made =
                args.placement === "oci"
                    ? this.ociInstance(name, args.oci as OciConfig, settings, args.sshPublicKey as string, userData, args.portForwards)
                    : this.ovhInstance(name, args.ovh as OvhConfig, args.sshPublicKey as string, userData);
            instance = made.instance;
            connection = { host: made.host, port: 22, user: args.sshUser, credentials: args.ssh, namedByUser: false };
        }
        this.connection = connection;

        const dependsOn = instance ? [instance] : [];
        // Cloud instances: wait for cloud-init's first run before converging over SSH.
        const ready = instance
            ? hostStep(`${name}-cloud-init`, { connection, create: renderGatewayReadyCommand(), waitForBoot: true }, { parent: this, dependsOn })
            : undefined;

        // The same install runs on every placement; on a cloud instance it is a no-op the
        // first time and carries later setting changes (user data changes are ignored there).
        const install = hostStep(
            `${name}-install`,
            {
                connection,
                create: renderGatewayInstallCommand(settings),
                update: renderGatewayInstallCommand(settings),
                delete: args.placement === "existing" ? renderGatewayRemoveCommand() : undefined,
            },
            { parent: this, dependsOn: ready ? [ready] : dependsOn },
        );

        const peersCommand = pulumi
            .all(args.peers.map((p) => pulumi.all([p.publicKey, p.mesh?.endpoint])))
            .apply((resolved) =>
                renderGatewayPeersCommand(
                    settings,
                    args.peers.map((p, i) => {
                        const [publicKey, endpoint] = resolved[i];
                        return { ...p, publicKey, mesh: p.mesh && { endpoint: endpoint as string, addresses: p.mesh.addresses } };
                    }),
                    args.portForwards,
                ),
            );
        const peers = hostStep(
            `${name}-peers`,
            {
                connection,
                create: peersCommand,
                update: peersCommand,
                delete: renderGatewayPeersRemoveCommand(settings),
            },
            { parent: this, dependsOn: [install] },
        );

        this.publicKey = install.stdout.apply((out) => lastLine(out));
        this.publicAddress = pulumi.output(connection.host);
        this.endpoint = pulumi.interpolate`${endpointHost(this.publicAddress)}:${settings.listenPort}`;
        this.registerOutputs({ publicKey: this.publicKey, publicAddress: this.publicAddress, endpoint: this.endpoint, peersApplied: peers.id });
    }

    private ociInstance(name: string, c: OciConfig, s: GatewaySettings, sshPublicKey: string, userData: string, forwards: PortForward[]) {
        const parent = { parent: this };
        const vcn = new oci.core.Vcn(`${name}-vcn`, { compartmentId: c.compartmentId, cidrBlocks: [c.vcnCidr], isIpv6enabled: c.ipv6, displayName: `${name}-vcn`, dnsLabel: "wgexit" }, parent);
        const igw = new oci.core.InternetGateway(`${name}-igw`, { compartmentId: c.compartmentId, vcnId: vcn.id, enabled: true, displayName: `${name}-igw` }, parent);
        const routeTable = new oci.core.RouteTable(
            `${name}-routes`,
            {
                compartmentId: c.compartmentId,
                vcnId: vcn.id,
                displayName: `${name}-routes`,
                routeRules: [
                    { networkEntityId: igw.id, destination: "0.0.0.0/0", destinationType: "CIDR_BLOCK", description: "internet" },
                    ...(c.ipv6 ? [{ networkEntityId: igw.id, destination: "::/0", destinationType: "CIDR_BLOCK", description: "internet (IPv6)" }] : []),
                ],
            },
            parent,
        );
        const world = c.ipv6 ? ["0.0.0.0/0", "::/0"] : ["0.0.0.0/0"];
        const securityList = new oci.core.SecurityList(
            `${name}-seclist`,
            {
                compartmentId: c.compartmentId,
                vcnId: vcn.id,
                displayName: `${name}-seclist`,
                ingressSecurityRules: [
                    ...world.map((source) => ({ protocol: "17", source, description: "WireGuard", udpOptions: { min: s.listenPort, max: s.listenPort } })),
                    ...s.adminCidrs.map((source) => ({ protocol: "6", source, description: "SSH from admin", tcpOptions: { min: 22, max: 22 } })),
                    // Port forwards (IPv4 only: guests have no public IPv6 address behind NAT66).
                    ...forwards.map((f) => {
                        const range = { min: f.port, max: f.port };
                        return f.protocol === "tcp"
                            ? { protocol: "6", source: "0.0.0.0/0", description: `port forward ${f.name}`, tcpOptions: range }
                            : { protocol: "17", source: "0.0.0.0/0", description: `port forward ${f.name}`, udpOptions: range };
                    }),
                    // Path MTU discovery needs "fragmentation needed" / "packet too big" in.
                    { protocol: "1", source: "0.0.0.0/0", description: "PMTU", icmpOptions: { type: 3, code: 4 } },
                    ...(c.ipv6 ? [{ protocol: "58", source: "::/0", description: "PMTU (IPv6)", icmpOptions: { type: 2 } }] : []),
                ],
                egressSecurityRules: world.map((destination) => ({ protocol: "all", destination, description: "egress" })),
            },
            parent,
        );
        const subnet = new oci.core.Subnet(
            `${name}-subnet`,
            {
                compartmentId: c.compartmentId,
                vcnId: vcn.id,
                cidrBlock: c.subnetCidr,
                ipv6cidrBlock: c.ipv6 ? vcn.ipv6cidrBlocks.apply((blocks) => firstSubnet64(blocks[0])) : undefined,
                routeTableId: routeTable.id,
                securityListIds: [securityList.id],
                displayName: `${name}-subnet`,
                dnsLabel: "gw",
                prohibitPublicIpOnVnic: false,
            },
            parent,
        );
        const domains = oci.identity.getAvailabilityDomainsOutput({ compartmentId: c.compartmentId }, parent);
        const images = oci.core.getImagesOutput(
            {
                compartmentId: c.compartmentId,
                operatingSystem: c.imageOperatingSystem,
                operatingSystemVersion: c.imageOperatingSystemVersion,
                shape: c.shape,
                sortBy: "TIMECREATED",
                sortOrder: "DESC",
            },
            parent,
        );
        const flex = c.shape.endsWith(".Flex");
        const instance = new oci.core.Instance(
            `${name}-instance`,
            {
                compartmentId: c.compartmentId,
                availabilityDomain: domains.availabilityDomains.apply((d) => {
                    if (!d[c.availabilityDomainIndex]) throw new Error(`wgexit:oci.availabilityDomainIndex: ${c.availabilityDomainIndex} does not exist; this region has ${d.length}`);
                    return d[c.availabilityDomainIndex].name;
                }),
                shape: c.shape,
                shapeConfig: flex ? { ocpus: c.ocpus, memoryInGbs: c.memoryInGbs } : undefined,
                displayName: `${name}-gateway`,
                sourceDetails: {
                    sourceType: "image",
                    sourceId: images.images.apply((list) => {
                        const image = list.find((i) => !/Minimal/i.test(i.displayName));
                        if (!image) throw new Error(`wgexit:oci: no ${c.imageOperatingSystem} ${c.imageOperatingSystemVersion} image for shape ${c.shape}`);
                        return image.id;
                    }),
                    bootVolumeSizeInGbs: String(c.bootVolumeGbs),
                },
                createVnicDetails: { subnetId: subnet.id, assignPublicIp: "true", assignIpv6ip: c.ipv6, hostnameLabel: "gateway" },
                metadata: { ssh_authorized_keys: sshPublicKey, user_data: Buffer.from(userData).toString("base64") },
                instanceOptions: { areLegacyImdsEndpointsDisabled: true },
            },
            // Later setting changes are converged over SSH instead of replacing the instance. The
            // image is the newest at creation and then pinned: @pulumi/oci marks sourceId updatable,
            // which rebuilds the boot volume (a new key, no peers) when Oracle publishes an image.
            { parent: this, ignoreChanges: ["metadata", "sourceDetails.sourceId"] },
        );
        return { instance, host: instance.publicIp };
    }

    private ovhInstance(name: string, c: OvhConfig, sshPublicKey: string, userData: string) {
        const parent = { parent: this };
        const images = ovh.cloudproject.getImagesOutput({ serviceName: c.serviceName, region: c.region, osType: "linux" }, parent);
        const flavors = ovh.cloudproject.getFlavorsOutput({ serviceName: c.serviceName, region: c.region }, parent);
        const instance = new ovh.cloudproject.Instance(
            `${name}-instance`,
            {
                serviceName: c.serviceName,
                region: c.region,
                name: `${name}-gateway`,
                billingPeriod: c.billingPeriod,
                bootFrom: {
                    imageId: images.images.apply((list) => {
                        const image = list.find((i) => i.name === c.imageName);
                        if (!image) throw new Error(`wgexit:ovh.imageName: "${c.imageName}" not found in ${c.region}; choose one of ${list.map((i) => i.name).slice(0, 8).join(", ")}`);
                        return image.id;
                    }),
                },
                flavor: {
                    flavorId: flavors.flavors.apply((list) => {
                        const flavor = list.find((f) => f.name === c.flavorName);
                        if (!flavor) throw new Error(`wgexit:ovh.flavorName: "${c.flavorName}" not found in ${c.region}; choose one of ${list.map((f) => f.name).slice(0, 8).join(", ")}`);
                        return flavor.id;
                    }),
                },
                network: { public: true },
                sshKeyCreate: { name: `${name}-admin`, publicKey: sshPublicKey },
                userData,
            },
            // bootFrom is ForceNew: an image looked up anew must never replace the instance (a new
            // address and key for every client). The image is the one found at creation.
            { parent: this, ignoreChanges: ["userData", "bootFrom"] },
        );
        const host = instance.addresses.apply((addresses) => {
            const v4 = addresses.find((a) => a.version === 4);
            if (!v4) throw new Error("the OVH instance has no public IPv4 address");
            return v4.ip;
        });
        return { instance, host };
    }
}

function lastLine(text: string): string {
    const lines = text.trim().split("\n");
    return lines[lines.length - 1].trim();
}

/** The first /64 of a VCN's IPv6 block (OCI subnets are always /64). */
function firstSubnet64(block: string): string {
    const parsed = parseCidr(block);
    if (parsed?.family !== 6) throw new Error(`unexpected VCN IPv6 block "${block}"`);
    return `${parsed.text.split("/")[0]}/64`;
}

function endpointHost(host: pulumi.Output<string>): pulumi.Output<string> {
    return host.apply((h) => (h.includes(":") ? `[${h}]` : h));
}
