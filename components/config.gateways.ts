// The stack's gateways after the first (key `gateways`): each checked against the first and
// the others (names, hosts, ports, tunnel blocks big enough for every peer), with its own
// settings worked out. The first gateway is still described by the top-level keys.
import type { TunnelPeer } from "./config.allocate";
import { type ConfigProblem, type ConnectionConfig, type ExtraGatewayConfig, type LaptopConfig, type OciConfig, type OvhConfig, type Placement, PROJECT, type SiteConfig } from "./config.schema";
import { type Cidr, hostAt, parseCidr, size } from "./net";

/** The name the first gateway goes by in status lines and outputs (its resources keep their names). */
export const FIRST_GATEWAY = "gateway";

export interface GatewaySettingsConfig {
    wgInterface: string;
    listenPort: number;
    tunnelMtu: number;
    tunnelCidr: string;
    tunnelCidrV6: string;
    addressV4: string;
    addressV6: string;
    adminCidrs: string[];
    allowWorldSsh: boolean;
}

export interface ExtraGateway {
    name: string;
    placement: Placement;
    existing?: ConnectionConfig;
    oci?: OciConfig;
    ovh?: OvhConfig;
    settings: GatewaySettingsConfig;
}

/** A peer's address in another gateway's tunnel: the same host index, in that block. */
export function addressesIn(settings: Pick<GatewaySettingsConfig, "tunnelCidr" | "tunnelCidrV6">, hostIndex: number): { addressV4: string; addressV6: string } {
    return { addressV4: hostAt(parseCidr(settings.tunnelCidr) as Cidr, hostIndex), addressV6: hostAt(parseCidr(settings.tunnelCidrV6) as Cidr, hostIndex) };
}

export function resolveExtraGateways(
    gateways: ExtraGatewayConfig[],
    first: { settings?: GatewaySettingsConfig; placement?: Placement; existing?: ConnectionConfig },
    peers: TunnelPeer[],
    hosts: { sites: SiteConfig[]; laptops: LaptopConfig[] },
    problems: ConfigProblem[],
): ExtraGateway[] {
    const key = (i: number, field: string) => `${PROJECT}:gateways[${i}].${field}`;
    const names = new Map<string, string>([[FIRST_GATEWAY, "the first gateway (the top-level keys)"]]);
    // Same host twice: two gateways would overwrite one role directory; a site or laptop VM there would be routed by it.
    const hostsSeen = new Map<string, string>();
    const claimHost = (host: string | undefined, where: string) => {
        if (!host) return undefined;
        const prior = hostsSeen.get(host.toLowerCase());
        if (!prior) hostsSeen.set(host.toLowerCase(), where);
        return prior;
    };
    if (first.placement === "existing") claimHost(first.existing?.host, `${PROJECT}:existing.host (the first gateway)`);
    for (const [i, s] of hosts.sites.entries()) claimHost(s.connection.host, `${PROJECT}:sites[${i}].connection.host`);
    for (const [i, l] of hosts.laptops.entries()) claimHost(l.vm.host, `${PROJECT}:laptops[${i}].vm.host`);
    const highestIndex = Math.max(1, ...peers.map((p) => p.hostIndex));

    const out: ExtraGateway[] = [];
    gateways.forEach((g, i) => {
        const before = problems.length;
        const prior = names.get(g.name);
        if (prior) problems.push({ key: key(i, "name"), message: `"${g.name}" is already the name of ${prior}; give each gateway its own name, for example "ovh"` });
        names.set(g.name, key(i, "name"));
        const placed = g[g.placement];
        if (!placed) {
            const example = { existing: '{host: "198.51.100.20", user: "root"}', oci: '{compartmentId: "ocid1.compartment.oc1..aaaa"}', ovh: '{serviceName: "0123456789abcdef0123456789abcdef", region: "GRA11"}' }[g.placement];
            problems.push({ key: key(i, g.placement), message: `is required when this gateway's placement is "${g.placement}"; for example ${example}` });
        }
        for (const other of ["existing", "oci", "ovh"] as const) {
            if (other !== g.placement && g[other]) problems.push({ key: key(i, other), message: `is set but this gateway's placement is "${g.placement}"; remove it, or set placement: "${other}"` });
        }
        if (g.placement === "existing" && g.existing) {
            const priorHost = claimHost(g.existing.host, key(i, "existing.host"));
            if (priorHost) problems.push({ key: key(i, "existing.host"), message: `${g.existing.host} is already used by ${priorHost}; each gateway needs a host of its own (one role directory, one firewall table each)` });
        }
        const listenPort = g.listenPort ?? first.settings?.listenPort ?? 51820;
        const sshPort = sshPortOf(g);
        if (listenPort === sshPort) problems.push({ key: key(i, "listenPort"), message: `${listenPort} is this gateway's SSH port; WireGuard needs a UDP port of its own, for example 51820` });
        // Guest networks take the first gateway's MTU; a smaller tunnel behind them would drop what fits the first.
        if (g.tunnelMtu !== undefined && first.settings && g.tunnelMtu < first.settings.tunnelMtu) {
            problems.push({ key: key(i, "tunnelMtu"), message: `${g.tunnelMtu} is below tunnelMtu ${first.settings.tunnelMtu}, which guest networks use; guests would send packets this tunnel cannot carry. Use ${first.settings.tunnelMtu} or more, or lower tunnelMtu` });
        }
        const v4 = parseCidr(g.tunnelCidr);
        const v6 = parseCidr(g.tunnelCidrV6);
        if (v4 && v6) {
            // Every peer keeps its host index in every gateway's block, so each block must hold the highest.
            const capacity = Number(size(v4)) - 2;
            if (v4.prefix > 29) problems.push({ key: key(i, "tunnelCidr"), message: `${v4.text} is too small for a gateway and peers; use /29 or larger, for example "10.67.0.0/24"` });
            else if (highestIndex > capacity) problems.push({ key: key(i, "tunnelCidr"), message: `${v4.text} holds host indexes up to ${capacity}, but a peer has index ${highestIndex} (peers keep their index in every gateway's block); use a block as large as tunnelCidr` });
            if (size(v6) < size(v4)) problems.push({ key: key(i, "tunnelCidrV6"), message: `${v6.text} holds fewer addresses than this gateway's tunnelCidr ${v4.text}; use a /64, for example "fd66:67:67::/64"` });
        }
        if (problems.length > before || !v4 || !v6 || !first.settings) return;
        out.push({
            name: g.name,
            placement: g.placement,
            existing: g.existing,
            oci: g.oci,
            ovh: g.ovh,
            settings: {
                ...first.settings,
                wgInterface: g.wgInterface ?? first.settings.wgInterface,
                listenPort,
                tunnelMtu: g.tunnelMtu ?? first.settings.tunnelMtu,
                tunnelCidr: v4.text,
                tunnelCidrV6: v6.text,
                addressV4: hostAt(v4, 1),
                addressV6: hostAt(v6, 1),
            },
        });
    });
    return out;
}

/** A gateway's SSH port: an existing host's as configured, a new cloud instance's 22. */
export function sshPortOf(g: Pick<ExtraGatewayConfig, "placement" | "existing">): number {
    return g.placement === "existing" ? (g.existing?.port ?? 22) : 22;
}

/**
 * Port forwards are opened on every gateway (each is a way in while another is down), so none
 * may take a further gateway's WireGuard or SSH port. A clash with the first gateway's ports is
 * reported by resolvePortForwards already and not again here.
 */
export function checkForwardsOnGateways(forwards: { protocol: "tcp" | "udp"; port: number }[], gateways: ExtraGateway[], problems: ConfigProblem[]): void {
    forwards.forEach((f, i) => {
        const key = `${PROJECT}:portForwards[${i}].port`;
        gateways.forEach((g, n) => {
            if (problems.some((p) => p.key === key)) return;
            const sshPort = sshPortOf(g);
            if (f.protocol === "udp" && f.port === g.settings.listenPort) {
                problems.push({ key, message: `udp/${f.port} is gateway ${g.name}'s WireGuard port (${PROJECT}:gateways[${n}].listenPort), and forwards are opened on every gateway; use another port` });
            } else if (f.protocol === "tcp" && f.port === sshPort) {
                problems.push({ key, message: `tcp/${f.port} is gateway ${g.name}'s SSH port (${PROJECT}:gateways[${n}]${g.placement === "existing" ? ".existing.port" : ""}), and forwards are opened on every gateway; use another port` });
            }
        });
    });
}

/**
 * What every site and laptop VM needs with `count` gateways, in a gateway stack or in a stack
 * that joins one: reply tables (one per gateway, just below routeTable: failover.render.ts)
 * clear of 253-255 and of the routeTable of any other role on the same host (a site and a
 * laptop's VM may share one), and no bridge or VM link named like a further tunnel.
 */
export function checkSitesForGateways(
    sites: { routeTable: number; wgInterface: string; connection: { host: string; port: number }; networks: { bridge: string }[] }[],
    laptops: { routeTable: number; wgInterface: string; vm: { host: string; port: number }; vmLink: string }[],
    count: number,
    problems: ConfigProblem[],
): void {
    const id = (c: { host: string; port: number }) => `${c.host.toLowerCase()}:${c.port}`;
    const hosts = [
        ...sites.map((s, i) => ({ key: `${PROJECT}:sites[${i}]`, what: "the site", host: id(s.connection), routeTable: s.routeTable, wgInterface: s.wgInterface, links: s.networks.map((n, j) => ({ name: n.bridge, key: `networks[${j}].bridge`, example: "virbr-wg" })) })),
        ...laptops.map((l, i) => ({ key: `${PROJECT}:laptops[${i}]`, what: "the laptop's VM", host: id(l.vm), routeTable: l.routeTable, wgInterface: l.wgInterface, links: [{ name: l.vmLink, key: "vmLink", example: "enp0s2" }] })),
    ];
    for (const h of hosts) {
        const low = h.routeTable - count;
        const clash = hosts.find((t) => t.host === h.host && t.routeTable >= low && t.routeTable < h.routeTable);
        if (low < 1 || (low <= 255 && h.routeTable - 1 >= 253)) {
            problems.push({ key: `${h.key}.routeTable`, message: `with ${count} gateways ${h.what} also uses tables ${low}-${h.routeTable - 1} (replies by the tunnel they came in on); use a routeTable of ${count + 1} or more that keeps them clear of 253-255, for example 7700` });
        } else if (clash) {
            problems.push({ key: `${h.key}.routeTable`, message: `with ${count} gateways ${h.what} also uses tables ${low}-${h.routeTable - 1}, and ${clash.key}.routeTable is ${clash.routeTable}; leave ${count} free numbers below each routeTable on a host` });
        }
        for (let n = 1; n < count; n++) {
            const name = tunnelInterfaceFor(h.wgInterface, n);
            for (const link of h.links) {
                if (link.name === name) problems.push({ key: `${h.key}.${link.key}`, message: `"${name}" is ${h.what}'s tunnel to gateway ${n + 1}; pick another name such as "${link.example}"` });
            }
        }
    }
}

/** A site's tunnel interface for its n-th gateway (n ≥ 1): the first's name and the gateway's number. */
export function tunnelInterfaceFor(wgInterface: string, n: number): string {
    return n === 0 ? wgInterface : `${wgInterface.slice(0, 12)}-${n + 1}`;
}
