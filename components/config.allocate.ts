// Address allocation: tunnel addresses for sites, peers and laptops (in order, honouring
// pinned hostIndex values), each guest's address and MAC, each network's DHCP pool, port
// forwards resolved to guests, and the peers other stacks publish.
import { createHash } from "node:crypto";
import { z } from "zod";
import type { StackConfig } from "./config";
import { sshPortOf } from "./config.gateways";
import {
    ConfigError,
    type ConfigProblem,
    type GuestConfig,
    type LaptopConfig,
    type NetworkConfig,
    type PeerConfig,
    PROJECT,
    type portForwardSchema,
    type RemotePeer,
    remotePeerSchema,
    type SiteConfig,
} from "./config.schema";
import { type Cidr, contains, hostAt, parseCidr, size } from "./net";

/** A tunnel peer of the gateway with its allocated addresses. */
export interface TunnelPeer {
    name: string;
    kind: "site" | "peer" | "laptop";
    hostIndex: number;
    addressV4: string;
    addressV6: string;
    /** Subnets routed to this peer besides its own tunnel addresses. */
    routedCidrs: string[];
    /** Names of peers whose subnets this peer may open connections to. */
    canReach: string[];
}

/** A guest with its address and MAC fixed, for the static DHCP lease. */
export interface ResolvedGuest extends GuestConfig {
    mac: string;
    addressV4: string;
}

/** A routed network with its host (bridge) addresses and DHCP pool worked out. */
export interface ResolvedNetwork extends Omit<NetworkConfig, "guests"> {
    bridgeV4: string;
    bridgeV6?: string;
    prefixV4: number;
    dhcpFirst: string;
    dhcpLast: string;
    guests: ResolvedGuest[];
}

export interface ResolvedSite extends Omit<SiteConfig, "networks"> {
    networks: ResolvedNetwork[];
}

/** A port on the gateway's public address, forwarded through the tunnel to a guest. */
export interface PortForward {
    name: string;
    protocol: "tcp" | "udp";
    port: number;
    site: string;
    /** The guest's address, and the bridge of the network it is on. */
    address: string;
    bridge: string;
    toPort: number;
}

/**
 * The gateway stack's peers from other stacks: each stack's tunnelPeers output, checked and
 * given tunnel addresses after this stack's own peers. Throws ConfigError naming the stack.
 */
export function allocateRemotePeers(config: StackConfig, byStack: { stack: string; tunnelPeers: unknown }[]): { peer: TunnelPeer; publicKey: string; stack: string; portForwards: PortForward[] }[] {
    const problems: ConfigProblem[] = [];
    const found: { stack: string; key: string; peer: RemotePeer }[] = [];
    const names = new Map(config.tunnelPeers.map((p) => [p.name, `${PROJECT}:${p.kind}s`]));
    byStack.forEach(({ stack, tunnelPeers }, i) => {
        const key = `${PROJECT}:peerStacks[${i}]`;
        const parsed = z.array(remotePeerSchema).safeParse(tunnelPeers);
        if (!parsed.success) {
            problems.push({ key, message: `stack ${stack} has no valid tunnelPeers output (${parsed.error.issues[0]?.message}); run \`pulumi up\` in that stack first` });
            return;
        }
        for (const peer of parsed.data) {
            const prior = names.get(peer.name);
            if (prior) problems.push({ key, message: `stack ${stack} brings a peer named "${peer.name}", which ${prior} already has; rename one of them` });
            names.set(peer.name, `stack ${stack}`);
            found.push({ stack, key, peer });
        }
    });
    const local = config.tunnelPeers.map((p) => ({ key: `${PROJECT}:tunnelCidr`, name: p.name, kind: p.kind, hostIndex: p.hostIndex, routed: p.routedCidrs, canReach: p.canReach }));
    const remote = found.map((f) => ({ key: f.key, name: f.peer.name, kind: f.peer.kind, hostIndex: f.peer.hostIndex, routed: f.peer.routedCidrs, canReach: [] as string[] }));
    const all = allocate([...local, ...remote], config.gateway.tunnelCidr, config.gateway.tunnelCidrV6, problems);
    // The public ports a peer stack's sites ask for must be free on this gateway.
    const ports = new Map(config.portForwards.map((f) => [`${f.protocol}/${f.port}`, `this stack's portForwards (${f.name})`]));
    ports.set(`udp/${config.gateway.listenPort}`, "WireGuard (listenPort)");
    ports.set(`tcp/${config.existing?.port ?? 22}`, "the gateway's SSH");
    // Forwards are opened on every gateway: a further gateway's own ports are taken too.
    config.extraGateways.forEach((g, n) => {
        if (!ports.has(`udp/${g.settings.listenPort}`)) ports.set(`udp/${g.settings.listenPort}`, `gateway ${g.name}'s WireGuard (${PROJECT}:gateways[${n}].listenPort)`);
        const ssh = `tcp/${sshPortOf(g)}`;
        if (!ports.has(ssh)) ports.set(ssh, `gateway ${g.name}'s SSH`);
    });
    for (const f of found) {
        for (const forward of f.peer.portForwards) {
            const claim = `${forward.protocol}/${forward.port}`;
            const prior = ports.get(claim);
            if (prior) problems.push({ key: f.key, message: `stack ${f.stack} forwards ${claim} (${forward.name}), which ${prior} already uses; choose another port there` });
            ports.set(claim, `stack ${f.stack} (${forward.name})`);
        }
    }
    // A peer stack's site or laptop joins every gateway at its host index: each further block must hold it.
    for (const f of found) {
        const index = all.find((p) => p.name === f.peer.name)?.hostIndex ?? 0;
        config.extraGateways.forEach((g, n) => {
            const capacity = Number(size(parseCidr(g.settings.tunnelCidr) as Cidr)) - 2;
            if (index > capacity) problems.push({ key: f.key, message: `stack ${f.stack}'s ${f.peer.kind} ${f.peer.name} has host index ${index}, beyond what ${PROJECT}:gateways[${n}].tunnelCidr (${g.settings.tunnelCidr}) holds (${capacity}); use a block as large as tunnelCidr there` });
        });
    }
    if (problems.length > 0) throw new ConfigError(problems);
    return found.map((f) => ({
        peer: all.find((p) => p.name === f.peer.name) as TunnelPeer,
        publicKey: f.peer.publicKey,
        stack: f.stack,
        portForwards: f.peer.portForwards.map((forward) => ({ ...forward, site: f.peer.name })),
    }));
}

/** Finds each forward's guest address and bridge; ports must be free on the gateway. */
export function resolvePortForwards(forwards: z.output<typeof portForwardSchema>[], sites: ResolvedSite[], gateway: { listenPort: number; sshPort: number } | undefined, problems: ConfigProblem[]): PortForward[] {
    const taken = new Map<string, string>();
    const resolved: PortForward[] = [];
    forwards.forEach((f, i) => {
        const key = `${PROJECT}:portForwards[${i}]`;
        const claim = `${f.protocol}/${f.port}`;
        if (taken.has(claim)) problems.push({ key: `${key}.port`, message: `${claim} is already forwarded by ${taken.get(claim)}; use another port` });
        taken.set(claim, key);
        if (gateway && f.protocol === "udp" && f.port === gateway.listenPort) problems.push({ key: `${key}.port`, message: `udp/${f.port} is the gateway's WireGuard port (listenPort); use another port` });
        if (gateway && f.protocol === "tcp" && f.port === gateway.sshPort) problems.push({ key: `${key}.port`, message: `tcp/${f.port} is the gateway's SSH port; use another port` });
        const site = sites.find((s) => s.name === f.site);
        if (!site) {
            // A site that failed validation is already reported; naming it again would only confuse.
            if (problems.some((p) => p.key.startsWith(`${PROJECT}:sites`))) return;
            problems.push({ key: `${key}.site`, message: `"${f.site}" is not a site; use one of ${sites.map((s) => s.name).join(", ") || "(no sites declared)"}` });
            return;
        }
        if ((f.guest === undefined) === (f.address === undefined)) {
            problems.push({ key: `${key}.guest`, message: 'set either guest (a declared guest\'s name) or address (an address in one of the site\'s networks), for example guest: "web1"' });
            return;
        }
        for (const network of site.networks) {
            const guest = network.guests.find((g) => g.name === f.guest);
            const address = guest?.addressV4 ?? f.address;
            const cidr = parseCidr(network.cidr) as Cidr;
            const inside = address !== undefined && address !== network.bridgeV4 && contains(cidr, parseCidr(`${address}/32`) as Cidr);
            if (guest || (f.address !== undefined && inside)) {
                resolved.push({ name: f.name, protocol: f.protocol, port: f.port, site: site.name, address: address as string, bridge: network.bridge, toPort: f.toPort ?? f.port });
                return;
            }
        }
        problems.push(
            f.guest !== undefined
                ? { key: `${key}.guest`, message: `"${f.guest}" is not a guest of site ${site.name}; use one of ${site.networks.flatMap((n) => n.guests.map((g) => g.name)).join(", ") || "(no guests declared)"}` }
                : { key: `${key}.address`, message: `${f.address} is not a guest address in site ${site.name}'s networks (${site.networks.map((n) => n.cidr).join(", ")})` },
        );
    });
    return resolved;
}

/**
 * Fixes each network's addresses: the host (bridge) is .1, declared guests get static
 * leases in the lower half (from .10 unless hostIndex says otherwise), and the DHCP pool
 * is the upper half. MACs not given are derived from the site and guest names, so they
 * stay stable across runs.
 */
export function resolveSites(sites: SiteConfig[], problems: ConfigProblem[]): ResolvedSite[] {
    const macs = new Map<string, string>();
    return sites.map((site, i) => ({
        ...site,
        networks: site.networks.map((network, j) => {
            const where = `${PROJECT}:sites[${i}].networks[${j}]`;
            const v4 = parseCidr(network.cidr) as Cidr;
            const total = Number(size(v4));
            const half = Math.floor(total / 2);
            if (total < 16) {
                problems.push({ key: `${where}.cidr`, message: `${v4.text} is too small for a host, guests and a DHCP pool; use /28 or larger, for example "192.168.100.0/24"` });
                return { ...network, bridgeV4: "", prefixV4: v4.prefix, dhcpFirst: "", dhcpLast: "", guests: [] };
            }
            if (network.cidrV6 && parseCidr(network.cidrV6)?.prefix !== 64) {
                problems.push({ key: `${where}.cidrV6`, message: `${network.cidrV6} must be a /64: guests configure IPv6 by SLAAC; for example "fd66:100::/64"` });
            }
            const taken = new Set<number>();
            for (const g of network.guests) if (g.hostIndex !== undefined) taken.add(g.hostIndex);
            // Static guests from .10 up; a small network (a /28 has 2-7) starts right after the bridge.
            let next = half > 10 ? 10 : 2;
            const guests = network.guests.map((guest, k) => {
                const key = `${where}.guests[${k}]`;
                let index = guest.hostIndex;
                if (index === undefined) {
                    while (taken.has(next)) next++;
                    index = next;
                    taken.add(index);
                    } else if (index >= half) {
                    problems.push({ key: `${key}.hostIndex`, message: `${index} is in the DHCP pool of ${v4.text}; static guests use 2-${half - 1}` });
                } else if (network.guests.some((g, other) => other < k && g.hostIndex === index)) {
                    problems.push({ key: `${key}.hostIndex`, message: `${index} is used by another guest on this network; give each guest its own index` });
                }
                const mac = guest.mac ?? derivedMac(`${site.name}/${guest.name}`);
                const prior = macs.get(mac);
                if (prior) problems.push({ key: `${key}.mac`, message: `${mac} is also used by ${prior}; give each guest its own MAC` });
                macs.set(mac, key);
                if (guest.initrd && !guest.kernel) problems.push({ key: `${key}.initrd`, message: "needs kernel as well (direct kernel boot); set kernel or remove initrd" });
                return { ...guest, mac, addressV4: hostAt(v4, Math.min(index, total - 2)) };
            });
            return {
                ...network,
                bridgeV4: hostAt(v4, 1),
                bridgeV6: network.cidrV6 ? hostAt(parseCidr(network.cidrV6) as Cidr, 1) : undefined,
                prefixV4: v4.prefix,
                dhcpFirst: hostAt(v4, half),
                dhcpLast: hostAt(v4, total - 2),
                guests,
            };
        }),
    }));
}

function derivedMac(seed: string): string {
    const digest = createHash("sha256").update(seed).digest();
    return `52:54:00:${[...digest.subarray(0, 3)].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
}

interface AllocationEntry {
    /** The config key that names this peer, for problems. */
    key: string;
    name: string;
    kind: TunnelPeer["kind"];
    hostIndex?: number;
    routed: string[];
    canReach: string[];
}

export function allocatePeers(
    sites: SiteConfig[],
    peers: PeerConfig[],
    laptops: LaptopConfig[],
    tunnelCidr: string | undefined,
    tunnelCidrV6: string | undefined,
    problems: ConfigProblem[],
): TunnelPeer[] {
    const entries: AllocationEntry[] = [
        ...sites.map((s, i) => ({
            key: `${PROJECT}:sites[${i}]`,
            name: s.name,
            kind: "site" as const,
            hostIndex: s.hostIndex,
            routed: s.networks.flatMap((n) => [n.cidr, ...(n.cidrV6 ? [n.cidrV6] : [])]),
            canReach: [] as string[],
        })),
        ...peers.map((p, i) => ({
            key: `${PROJECT}:peers[${i}]`,
            name: p.name,
            kind: "peer" as const,
            hostIndex: p.hostIndex,
            routed: p.allowedIps,
            canReach: p.canReach,
        })),
        // A laptop's VM masquerades the laptop into its own tunnel address: nothing else is routed.
        ...laptops.map((l, i) => ({
            key: `${PROJECT}:laptops[${i}]`,
            name: l.name,
            kind: "laptop" as const,
            hostIndex: l.hostIndex,
            routed: [] as string[],
            canReach: [] as string[],
        })),
    ];
    return allocate(entries, tunnelCidr, tunnelCidrV6, problems);
}

/** Tunnel addresses in order, from .2, honouring pinned hostIndex values. */
function allocate(entries: AllocationEntry[], tunnelCidr: string | undefined, tunnelCidrV6: string | undefined, problems: ConfigProblem[]): TunnelPeer[] {
    const v4 = tunnelCidr ? parseCidr(tunnelCidr) : undefined;
    const v6 = tunnelCidrV6 ? parseCidr(tunnelCidrV6) : undefined;
    if (!v4 || !v6) return [];
    // Every peer takes the same index in both blocks, so the IPv6 block must hold as many.
    if (size(v6) < size(v4)) {
        problems.push({ key: `${PROJECT}:tunnelCidrV6`, message: `${v6.text} holds fewer addresses than tunnelCidr ${v4.text}, and every peer needs one of each; use a /64, for example "fd66:66:66::/64"` });
        return [];
    }
    const maxIndex = Number(size(v4)) - 2;
    const taken = new Map<number, string>();
    for (const e of entries) {
        if (e.hostIndex === undefined) continue;
        if (e.hostIndex > maxIndex) {
            problems.push({ key: `${e.key}.hostIndex`, message: `${e.hostIndex} does not fit in ${v4.text}; use 2-${maxIndex}` });
        } else if (taken.has(e.hostIndex)) {
            problems.push({ key: `${e.key}.hostIndex`, message: `${e.hostIndex} is already used by "${taken.get(e.hostIndex)}"; give each peer its own index, for example ${Math.max(...taken.keys()) + 1}` });
        } else {
            taken.set(e.hostIndex, e.name);
        }
    }
    let next = 2;
    const out: TunnelPeer[] = [];
    for (const e of entries) {
        let index = e.hostIndex;
        if (index === undefined || index > maxIndex) {
            while (taken.has(next)) next++;
            index = next;
            taken.set(index, e.name);
        }
        if (index > maxIndex) {
            problems.push({ key: e.key, message: `no free tunnel address left in ${v4.text}; use a larger tunnelCidr such as "10.66.0.0/22"` });
            continue;
        }
        out.push({
            name: e.name,
            kind: e.kind,
            hostIndex: index,
            addressV4: hostAt(v4, index),
            addressV6: hostAt(v6, index),
            routedCidrs: e.routed.map((c) => (parseCidr(c) as Cidr).text),
            canReach: e.canReach,
        });
    }
    return out;
}
