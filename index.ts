// wgexit: read the stack config, compose the components, export public facts.
// Every behaviour lives in components/<name>.ts and its renderer components/<name>.render.ts.
// Two layouts: all in one stack (a gateway with its sites, laptops and clients), or split
// (this stack's sites and laptops join the gateway of `gatewayStack`; a gateway stack takes
// the peers of its `peerStacks`). Stacks exchange only public keys, addresses and subnets.
import * as pulumi from "@pulumi/pulumi";
import { CloudGateway } from "./components/cloudGateway";
import { gatewayPeerFor } from "./components/cloudGateway.render";
import {
    addressesIn,
    allocateRemotePeers,
    ConfigError,
    type ConfigProblem,
    checkSitesForGateways,
    type FailoverConfig,
    FIRST_GATEWAY,
    type GatewaySettingsConfig,
    loadStackConfig,
    type StackConfig,
    type TunnelPeer,
    tunnelInterfaceFor,
} from "./components/config";
import type { SshCredentials } from "./components/connection";
import { KvmSite } from "./components/kvmSite";
import { LaptopClient } from "./components/laptopClient";
import { RoamingClient } from "./components/roamingClient";
import { indexIn, parseCidr } from "./components/net";
import { type GatewayFacts, readGatewayStack, readPeerStacks } from "./components/stacks";

type Outputs = Record<string, unknown>;

interface GatewayView {
    publicKey: pulumi.Input<string>;
    endpoint: pulumi.Input<string>;
    publicAddress: pulumi.Input<string>;
    listenPort: number;
    tunnelMtu: number;
    /** Tunnel addresses by peer name; a site or laptop without one waits for its gateway. */
    addresses: Record<string, { addressV4: string; addressV6: string; hostIndex?: number }>;
    /** The first gateway's tunnel address: what a site's health check pings. */
    probe: string;
    /** The further gateways (key gateways), which sites and laptops join as well, and how they choose between all of them. */
    further?: FurtherView[];
    failover?: FailoverConfig;
}

/** A further gateway as the others see it: its tunnel settings, and its key and endpoint once it exists. */
interface FurtherView {
    name: string;
    settings: Pick<GatewaySettingsConfig, "tunnelCidr" | "tunnelCidrV6" | "tunnelMtu" | "addressV4" | "listenPort">;
    publicKey: pulumi.Input<string>;
    endpoint: pulumi.Input<string>;
    /** Its public address: what a laptop lets its VM reach. */
    publicAddress: pulumi.Input<string>;
}

/** The KVM sites and laptops of this stack, joined to the gateway where it knows them. */
function sitesAndLaptops(config: StackConfig, gateway: GatewayView, ssh: SshCredentials) {
    const tunnelOf = (name: string) => {
        const a = gateway.addresses[name];
        return a && { ...a, mtu: gateway.tunnelMtu };
    };
    const further = gateway.further ?? [];
    // A site's or laptop VM's tunnel to each further gateway, at its host index in that gateway's block.
    const failoverOf = (host: { name: string; wgInterface: string }) => {
        const hostIndex = gateway.addresses[host.name]?.hostIndex;
        return further.length && hostIndex !== undefined && gateway.failover
            ? {
                  first: { gateway: FIRST_GATEWAY, probe: gateway.probe },
                  further: further.map((f, n) => ({
                      gateway: f.name,
                      wgInterface: tunnelInterfaceFor(host.wgInterface, n + 1),
                      ...addressesIn(f.settings, hostIndex),
                      mtu: f.settings.tunnelMtu,
                      probe: f.settings.addressV4,
                      publicKey: f.publicKey,
                      endpoint: f.endpoint,
                      publicAddress: f.publicAddress,
                      listenPort: f.settings.listenPort,
                  })),
                  settings: gateway.failover,
              }
            : undefined;
    };
    const sites = config.sites.map((site) => {
        const a = tunnelOf(site.name);
        const kvm = new KvmSite(`site-${site.name}`, {
            site,
            tunnel: a && { ...a, gateway: { publicKey: gateway.publicKey, endpoint: gateway.endpoint }, failover: failoverOf(site) },
            portForwards: config.portForwards.filter((f) => f.site === site.name),
            ssh,
        });
        return { name: site.name, kvm, hostIndex: site.hostIndex };
    });
    const laptops = config.laptops.map((laptop) => {
        const a = tunnelOf(laptop.name);
        const client = new LaptopClient(`laptop-${laptop.name}`, {
            laptop,
            tunnel: a && { ...a, gateway: { publicKey: gateway.publicKey, endpoint: gateway.endpoint, publicAddress: gateway.publicAddress, listenPort: gateway.listenPort }, failover: failoverOf(laptop) },
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
    const addresses = Object.fromEntries(config.tunnelPeers.map((p) => [p.name, { addressV4: p.addressV4, addressV6: p.addressV6, hostIndex: p.hostIndex }]));
    const further = config.extraGateways.map((g) => {
        const [publicKey, resolveKey] = pulumi.deferredOutput<string>();
        const [endpoint, resolveEndpoint] = pulumi.deferredOutput<string>();
        const [publicAddress, resolveAddress] = pulumi.deferredOutput<string>();
        return {
            name: g.name,
            settings: g.settings,
            config: g,
            publicKey,
            endpoint,
            publicAddress,
            resolve: (made: CloudGateway) => {
                resolveKey(made.publicKey);
                resolveEndpoint(made.endpoint);
                resolveAddress(made.publicAddress);
            },
        };
    });
    const view = { publicKey: gatewayKey, endpoint: gatewayEndpoint, publicAddress: gatewayAddress, listenPort: config.gateway.listenPort, tunnelMtu: config.gateway.tunnelMtu, addresses, probe: config.gateway.addressV4, further, failover: config.failover };
    const local = sitesAndLaptops(config, view, ssh);
    const clients = config.peers.map((peer) => {
        const a = addresses[peer.name];
        const client = new RoamingClient(`peer-${peer.name}`, {
            publicKey: peer.publicKey,
            addressV4: a.addressV4,
            addressV6: a.addressV6,
            dns: peer.dns,
            mtu: config.gateway.tunnelMtu,
            gateway: { publicKey: gatewayKey, endpoint: gatewayEndpoint },
            ...(further.length
                ? { furtherGateways: further.map((f) => ({ name: f.name, ...addressesIn(f.settings, a.hostIndex), mtu: f.settings.tunnelMtu, publicKey: f.publicKey, endpoint: f.endpoint })) }
                : {}),
        });
        return { name: peer.name, client };
    });

    const keys = new Map<string, pulumi.Input<string>>([
        ...local.sites.map((s) => [s.name, s.kvm.publicKey] as const),
        ...local.laptops.map((l) => [l.name, l.client.publicKey] as const),
        ...clients.map((c) => [c.name, c.client.publicKey] as const),
        ...remote.map((r) => [r.peer.name, r.publicKey] as const),
    ]);
    const everyone = [...config.tunnelPeers, ...remote.map((r) => r.peer)];
    const forwards = [...config.portForwards, ...remote.flatMap((r) => r.portForwards)];
    // Every gateway is a peer of the others: the first is reached at its deferred facts too.
    const first = { name: FIRST_GATEWAY, settings: config.gateway, publicKey: gatewayKey, endpoint: gatewayEndpoint };
    const all = [first, ...further.map((f) => ({ name: f.name, settings: f.settings, publicKey: f.publicKey, endpoint: f.endpoint }))];
    const meshFor = (self: string) => all.filter((g) => g.name !== self).map((g) => meshPeer(g));
    const gateway = new CloudGateway("gateway", {
        placement: config.placement,
        settings: further.length ? { ...config.gateway, answerProbes: true } : config.gateway,
        existing: config.existing,
        oci: config.oci,
        ovh: config.ovh,
        sshUser: config.sshUser,
        sshPublicKey: config.sshPublicKey,
        ssh,
        peers: [...everyone.map((p) => ({ ...gatewayPeerFor(p, everyone), publicKey: keys.get(p.name) as pulumi.Input<string> })), ...meshFor(FIRST_GATEWAY)],
        portForwards: forwards,
    });
    resolveGatewayKey(gateway.publicKey);
    resolveGatewayEndpoint(gateway.endpoint);
    resolveGatewayAddress(gateway.publicAddress);
    // Further gateways take every peer of the first (sites, laptops and roaming clients, this
    // stack's and its peer stacks'), and open the same port forwards as the first: a forwarded
    // service stays reachable, at that gateway's address, while the first is down.
    const furtherGateways = further.map((f) => {
        const inThisTunnel = (p: TunnelPeer) => ({ ...p, ...addressesIn(f.settings, p.hostIndex) });
        const peers = everyone.map(inThisTunnel);
        const made = new CloudGateway(`gateway-${f.name}`, {
            placement: f.config.placement,
            settings: { ...f.settings, answerProbes: true },
            existing: f.config.existing,
            oci: f.config.oci,
            ovh: f.config.ovh,
            sshUser: config.sshUser,
            sshPublicKey: config.sshPublicKey,
            ssh,
            peers: [...peers.map((p) => ({ ...gatewayPeerFor(p, peers), publicKey: keys.get(p.name) as pulumi.Input<string> })), ...meshFor(f.name)],
            portForwards: forwards,
        });
        f.resolve(made);
        return { name: f.name, made, settings: f.settings };
    });

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
        ...(furtherGateways.length
            ? {
                  // What a peer stack's sites join (components/stacks.ts reads it), in order of preference.
                  furtherGateways: Object.fromEntries(
                      furtherGateways.map((g, n) => [
                          g.name,
                          {
                              publicKey: g.made.publicKey,
                              endpoint: g.made.endpoint,
                              address: g.made.publicAddress,
                              tunnelCidr: g.settings.tunnelCidr,
                              tunnelCidrV6: g.settings.tunnelCidrV6,
                              gatewayAddress: g.settings.addressV4,
                              mtu: g.settings.tunnelMtu,
                              listenPort: g.settings.listenPort,
                              preference: n + 2,
                          },
                      ]),
                  ),
                  failover: config.failover,
                  /** One more config per further gateway, by client, then by gateway (secret). */
                  clientConfigsByGateway: pulumi.secret(Object.fromEntries(clients.map((c) => [c.name, c.client.furtherConfigs]))),
              }
            : {}),
    };
}

/** Another gateway as a peer of this one: reached at its endpoint, routing its tunnel block. */
function meshPeer(g: { name: string; settings: StackConfig["gateway"]; publicKey: pulumi.Input<string>; endpoint: pulumi.Input<string> }) {
    return {
        name: g.name,
        publicKey: g.publicKey,
        allowedIps: [g.settings.tunnelCidr, g.settings.tunnelCidrV6],
        routedCidrs: [],
        reachableCidrs: [],
        mesh: { endpoint: g.endpoint, addresses: [`${g.settings.addressV4}/32`, `${g.settings.addressV6}/128`] },
    };
}

/** This stack's sites and laptops join the gateway of another stack. */
async function joinRemoteGateway(config: StackConfig, stack: string, ssh: SshCredentials): Promise<Outputs> {
    const facts: GatewayFacts = await readGatewayStack(stack);
    const further = facts.further?.gateways ?? [];
    let addresses: GatewayView["addresses"] = facts.peerAddresses;
    if (further.length) {
        const problems: ConfigProblem[] = [];
        checkSitesForGateways(config.sites, config.laptops, further.length + 1, problems);
        if (problems.length) throw new ConfigError(problems);
        // A site keeps its host index in every gateway's block: the index of its address in the first's.
        const first = parseCidr(facts.tunnelCidr);
        addresses = Object.fromEntries(Object.entries(facts.peerAddresses).map(([name, a]) => [name, { ...a, hostIndex: first && indexIn(first, a.addressV4) }]));
    }
    const view: GatewayView = {
        ...facts,
        addresses,
        probe: facts.gatewayAddress,
        further: further.map((g) => ({
            name: g.name,
            settings: { tunnelCidr: g.tunnelCidr, tunnelCidrV6: g.tunnelCidrV6, tunnelMtu: g.mtu, addressV4: g.gatewayAddress, listenPort: g.listenPort },
            publicKey: g.publicKey,
            endpoint: g.endpoint,
            publicAddress: g.address,
        })),
        failover: facts.further?.failover,
    };
    const local = sitesAndLaptops(config, view, ssh);
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
