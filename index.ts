// wgexit: read the stack config, compose the components, export public facts.
// Every behaviour lives in components/<name>.ts and its renderer components/<name>.render.ts.
// Two layouts: all in one stack (a gateway with its sites, laptops and clients), or split
// (this stack's sites and laptops join the gateway of `gatewayStack`; a gateway stack takes
// the peers of its `peerStacks`). Stacks exchange only public keys, addresses and subnets.
import * as pulumi from "@pulumi/pulumi";
import { CloudGateway } from "./components/cloudGateway";
import { gatewayPeerFor } from "./components/cloudGateway.render";
import { allocateRemotePeers, ConfigError, loadStackConfig, type StackConfig } from "./components/config";
import type { SshCredentials } from "./components/connection";
import { KvmSite } from "./components/kvmSite";
import { LaptopClient } from "./components/laptopClient";
import { RoamingClient } from "./components/roamingClient";
import { type GatewayFacts, readGatewayStack, readPeerStacks } from "./components/stacks";

type Outputs = Record<string, unknown>;

interface GatewayView {
    publicKey: pulumi.Input<string>;
    endpoint: pulumi.Input<string>;
    publicAddress: pulumi.Input<string>;
    listenPort: number;
    tunnelMtu: number;
    /** Tunnel addresses by peer name; a site or laptop without one waits for its gateway. */
    addresses: Record<string, { addressV4: string; addressV6: string }>;
}

/** The KVM sites and laptops of this stack, joined to the gateway where it knows them. */
function sitesAndLaptops(config: StackConfig, gateway: GatewayView, ssh: SshCredentials) {
    const tunnelOf = (name: string) => {
        const a = gateway.addresses[name];
        return a && { ...a, mtu: gateway.tunnelMtu };
    };
    const sites = config.sites.map((site) => {
        const a = tunnelOf(site.name);
        const kvm = new KvmSite(`site-${site.name}`, {
            site,
            tunnel: a && { ...a, gateway: { publicKey: gateway.publicKey, endpoint: gateway.endpoint } },
            portForwards: config.portForwards.filter((f) => f.site === site.name),
            ssh,
        });
        return { name: site.name, kvm, hostIndex: site.hostIndex };
    });
    const laptops = config.laptops.map((laptop) => {
        const a = tunnelOf(laptop.name);
        const client = new LaptopClient(`laptop-${laptop.name}`, {
            laptop,
            tunnel: a && { ...a, gateway: { publicKey: gateway.publicKey, endpoint: gateway.endpoint, publicAddress: gateway.publicAddress, listenPort: gateway.listenPort } },
            ssh,
        });
        return { name: laptop.name, client, hostIndex: laptop.hostIndex };
    });
    const outputs: Outputs = {
        sitePublicKeys: Object.fromEntries(sites.map((s) => [s.name, s.kvm.publicKey])),
        siteGuests: Object.fromEntries(sites.map((s) => [s.name, s.kvm.guestAddresses])),
        laptopPublicKeys: Object.fromEntries(laptops.map((l) => [l.name, l.client.publicKey])),
        // What a gateway stack reads from this one (split layout).
        tunnelPeers: [
            ...sites.map((s) => ({
                name: s.name,
                kind: "site",
                publicKey: s.kvm.publicKey,
                routedCidrs: s.kvm.routedCidrs,
                hostIndex: s.hostIndex,
                portForwards: config.portForwards.filter((f) => f.site === s.name).map(({ site: _site, ...f }) => f),
            })),
            ...laptops.map((l) => ({ name: l.name, kind: "laptop", publicKey: l.client.publicKey, routedCidrs: [], hostIndex: l.hostIndex })),
        ],
        waitingForGateway: [...sites.filter((s) => !s.kvm.joined).map((s) => s.name), ...laptops.filter((l) => !l.client.joined).map((l) => l.name)],
    };
    return { sites, laptops, outputs };
}

/** This stack runs the gateway, with its own sites, laptops and clients and those of its peer stacks. */
async function gatewayStack(config: StackConfig, ssh: SshCredentials): Promise<Outputs> {
    const remote = allocateRemotePeers(config, await readPeerStacks(config.peerStacks));

    // The gateway needs each host's and client's public key and they need the gateway's: the
    // keys come from steps that need nothing from the gateway, and the gateway's facts are
    // promised to the others (no resource cycle).
    const [gatewayKey, resolveGatewayKey] = pulumi.deferredOutput<string>();
    const [gatewayEndpoint, resolveGatewayEndpoint] = pulumi.deferredOutput<string>();
    const [gatewayAddress, resolveGatewayAddress] = pulumi.deferredOutput<string>();
    const addresses = Object.fromEntries(config.tunnelPeers.map((p) => [p.name, { addressV4: p.addressV4, addressV6: p.addressV6 }]));
    const view = { publicKey: gatewayKey, endpoint: gatewayEndpoint, publicAddress: gatewayAddress, listenPort: config.gateway.listenPort, tunnelMtu: config.gateway.tunnelMtu, addresses };
    const local = sitesAndLaptops(config, view, ssh);
    const clients = config.peers.map((peer) => {
        const a = addresses[peer.name];
        const client = new RoamingClient(`peer-${peer.name}`, { publicKey: peer.publicKey, ...a, dns: peer.dns, mtu: config.gateway.tunnelMtu, gateway: { publicKey: gatewayKey, endpoint: gatewayEndpoint } });
        return { name: peer.name, client };
    });

    const keys = new Map<string, pulumi.Input<string>>([
        ...local.sites.map((s) => [s.name, s.kvm.publicKey] as const),
        ...local.laptops.map((l) => [l.name, l.client.publicKey] as const),
        ...clients.map((c) => [c.name, c.client.publicKey] as const),
        ...remote.map((r) => [r.peer.name, r.publicKey] as const),
    ]);
    const everyone = [...config.tunnelPeers, ...remote.map((r) => r.peer)];
    const gateway = new CloudGateway("gateway", {
        placement: config.placement,
        settings: config.gateway,
        existing: config.existing,
        oci: config.oci,
        ovh: config.ovh,
        sshUser: config.sshUser,
        sshPublicKey: config.sshPublicKey,
        ssh,
        peers: everyone.map((p) => ({ ...gatewayPeerFor(p, everyone), publicKey: keys.get(p.name) as pulumi.Input<string> })),
        portForwards: [...config.portForwards, ...remote.flatMap((r) => r.portForwards)],
    });
    resolveGatewayKey(gateway.publicKey);
    resolveGatewayEndpoint(gateway.endpoint);
    resolveGatewayAddress(gateway.publicAddress);

    return {
        gatewayPublicKey: gateway.publicKey,
        gatewayEndpoint: gateway.endpoint,
        gatewayAddress: gateway.publicAddress,
        tunnel: {
            cidr: config.gateway.tunnelCidr,
            cidrV6: config.gateway.tunnelCidrV6,
            gatewayAddress: config.gateway.addressV4,
            gatewayAddressV6: config.gateway.addressV6,
            mtu: config.gateway.tunnelMtu,
            listenPort: config.gateway.listenPort,
        },
        // Every peer's tunnel addresses, those of the peer stacks' sites and laptops included.
        peerAddresses: Object.fromEntries(everyone.map((p) => [p.name, { addressV4: p.addressV4, addressV6: p.addressV6, routedCidrs: p.routedCidrs }])),
        ...local.outputs,
        /** Ready-to-import configs for roaming clients (secret: a generated key is inside). */
        clientConfigs: pulumi.secret(Object.fromEntries(clients.map((c) => [c.name, c.client.config]))),
    };
}

/** This stack's sites and laptops join the gateway of another stack. */
async function joinRemoteGateway(config: StackConfig, stack: string, ssh: SshCredentials): Promise<Outputs> {
    const facts: GatewayFacts = await readGatewayStack(stack);
    const local = sitesAndLaptops(config, { ...facts, addresses: facts.peerAddresses }, ssh);
    const waiting = local.outputs.waitingForGateway as string[];
    if (waiting.length) {
        pulumi.log.warn(`${waiting.join(", ")} made ${waiting.length > 1 ? "their keys" : "its key"} but ${stack} does not list ${waiting.length > 1 ? "them" : "it"} yet: add this stack (<org>/${pulumi.getProject()}/${pulumi.getStack()}) to peerStacks there, run \`pulumi up\` there, then here again.`);
    }
    return { gatewayStack: stack, gatewayEndpoint: facts.endpoint, ...local.outputs };
}

export = async (): Promise<Outputs> => {
    const config = loadStackConfig();
    const secrets = new pulumi.Config();
    const ssh: SshCredentials = {
        privateKey: secrets.requireSecret("sshPrivateKey"),
        privateKeyPassword: config.hasSshPrivateKeyPassword ? secrets.requireSecret("sshPrivateKeyPassword") : undefined,
    };
    try {
        return config.gatewayStack ? await joinRemoteGateway(config, config.gatewayStack, ssh) : await gatewayStack(config, ssh);
    } catch (e) {
        if (e instanceof ConfigError) throw new pulumi.RunError(e.message);
        throw e;
    }
};
