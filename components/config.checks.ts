// Cross-checks of the stack config: what no single key's schema can see (prefixes that
// overlap across keys, names shared by sites, peers and laptops).
import type { ConfigKey, ConfigProblem, LaptopConfig, OciConfig, PeerConfig, SiteConfig } from "./config.schema";
import { PROJECT } from "./config.schema";
import { overlaps, parseCidr } from "./net";

export function checkOverlaps(v: Partial<Record<ConfigKey, unknown>>, problems: ConfigProblem[]): void {
    const blocks: { key: string; text: string }[] = [];
    const add = (key: string, value: unknown) => {
        if (typeof value === "string") blocks.push({ key, text: value });
    };
    add(`${PROJECT}:tunnelCidr`, v.tunnelCidr);
    add(`${PROJECT}:tunnelCidrV6`, v.tunnelCidrV6);
    const sites = (v.sites as SiteConfig[] | undefined) ?? [];
    sites.forEach((s, i) => {
        s.lanCidrs.forEach((c, j) => {
            add(`${PROJECT}:sites[${i}].lanCidrs[${j}]`, c);
        });
        s.networks.forEach((n, j) => {
            add(`${PROJECT}:sites[${i}].networks[${j}].cidr`, n.cidr);
            add(`${PROJECT}:sites[${i}].networks[${j}].cidrV6`, n.cidrV6);
        });
    });
    ((v.peers as PeerConfig[] | undefined) ?? []).forEach((p, i) => {
        p.allowedIps.forEach((c, j) => {
            add(`${PROJECT}:peers[${i}].allowedIps[${j}]`, c);
        });
    });
    const oci = v.oci as OciConfig | undefined;
    if (v.placement === "oci" && oci) add(`${PROJECT}:oci.vcnCidr`, oci.vcnCidr);

    for (let i = 0; i < blocks.length; i++) {
        for (let j = i + 1; j < blocks.length; j++) {
            const a = parseCidr(blocks[i].text);
            const b = parseCidr(blocks[j].text);
            if (a && b && overlaps(a, b)) {
                problems.push({
                    key: blocks[j].key,
                    message: `${b.text} overlaps ${blocks[i].key} (${a.text}); tunnel, guest, LAN and cloud subnets must be disjoint, for example guests on 192.168.100.0/24 and the tunnel on 10.66.0.0/24`,
                });
            }
        }
    }
    if (typeof v.tunnelCidr === "string") {
        const t = parseCidr(v.tunnelCidr);
        if (t && t.prefix > 29) problems.push({ key: `${PROJECT}:tunnelCidr`, message: `${t.text} is too small for a gateway and peers; use /29 or larger, for example "10.66.0.0/24"` });
    }
}

export function checkNames(sites: SiteConfig[], peers: PeerConfig[], laptops: LaptopConfig[], problems: ConfigProblem[]): void {
    const seen = new Map<string, string>();
    const claim = (key: string, value: string, kind: string) => {
        const prior = seen.get(`${kind}:${value}`);
        if (prior) problems.push({ key, message: `"${value}" is already used by ${prior}; ${kind} names must be unique` });
        else seen.set(`${kind}:${value}`, key);
    };
    sites.forEach((s, i) => {
        claim(`${PROJECT}:sites[${i}].name`, s.name, "peer");
        const bridges = new Set<string>();
        s.networks.forEach((n, j) => {
            claim(`${PROJECT}:sites[${i}].networks[${j}].name`, `${s.name}/${n.name}`, "network");
            if (bridges.has(n.bridge)) problems.push({ key: `${PROJECT}:sites[${i}].networks[${j}].bridge`, message: `"${n.bridge}" is used twice on site "${s.name}"; give each network its own bridge` });
            bridges.add(n.bridge);
            if (n.bridge === s.wgInterface) problems.push({ key: `${PROJECT}:sites[${i}].networks[${j}].bridge`, message: `"${n.bridge}" is the site's wgInterface; pick another name such as "virbr-wg"` });
            n.guests.forEach((g, k) => {
                claim(`${PROJECT}:sites[${i}].networks[${j}].guests[${k}].name`, `${s.name}/${g.name}`, "guest");
            });
        });
    });
    laptops.forEach((l, i) => {
        claim(`${PROJECT}:laptops[${i}].name`, l.name, "peer");
    });
    const peerNames = new Set([...sites.map((s) => s.name), ...peers.map((p) => p.name)]);
    peers.forEach((p, i) => {
        claim(`${PROJECT}:peers[${i}].name`, p.name, "peer");
        p.canReach.forEach((target, j) => {
            if (!peerNames.has(target)) problems.push({ key: `${PROJECT}:peers[${i}].canReach[${j}]`, message: `"${target}" is not a site or peer name; use one of ${[...peerNames].join(", ")}` });
        });
    });
}
