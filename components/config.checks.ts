// Cross-checks of the stack config: what no single key's schema can see (prefixes that
// overlap across keys, names shared by sites, peers and laptops).
import type { ConfigKey, ConfigProblem, ExtraGatewayConfig, LaptopConfig, OciConfig, PeerConfig, SiteConfig } from "./config.schema";
import { PROJECT } from "./config.schema";
import { contains, isAddress, isPrivate, overlaps, parseCidr } from "./net";

export function checkOverlaps(v: Partial<Record<ConfigKey, unknown>>, problems: ConfigProblem[]): void {
    // lan: the site whose home network it is (two homes may well both use 192.168.1.0/24).
    const blocks: { key: string; text: string; lanOf?: number }[] = [];
    const add = (key: string, value: unknown, lanOf?: number) => {
        if (typeof value === "string") blocks.push({ key, text: value, lanOf });
    };
    add(`${PROJECT}:tunnelCidr`, v.tunnelCidr);
    add(`${PROJECT}:tunnelCidrV6`, v.tunnelCidrV6);
    const sites = (v.sites as SiteConfig[] | undefined) ?? [];
    sites.forEach((s, i) => {
        s.lanCidrs.forEach((c, j) => {
            add(`${PROJECT}:sites[${i}].lanCidrs[${j}]`, c, i);
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
    ((v.gateways as ExtraGatewayConfig[] | undefined) ?? []).forEach((g, i) => {
        add(`${PROJECT}:gateways[${i}].tunnelCidr`, g.tunnelCidr);
        add(`${PROJECT}:gateways[${i}].tunnelCidrV6`, g.tunnelCidrV6);
        // Two OCI gateways may each have a VCN of the default 10.0.0.0/16: they never meet.
        if (g.placement === "oci" && g.oci && v.placement !== "oci") add(`${PROJECT}:gateways[${i}].oci.vcnCidr`, g.oci.vcnCidr);
    });

    for (let i = 0; i < blocks.length; i++) {
        for (let j = i + 1; j < blocks.length; j++) {
            const differentHomes = blocks[i].lanOf !== undefined && blocks[j].lanOf !== undefined && blocks[i].lanOf !== blocks[j].lanOf;
            if (differentHomes) continue;
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

/**
 * One role per host: a site's KVM host and a laptop's VM each hold one role directory, route
 * table and key (/etc/wgexit/site, /etc/wgexit/laptop-vm), so two of them on one host would
 * overwrite each other (the second install would remove the first one's kill switch).
 */
export function checkHosts(sites: SiteConfig[], laptops: LaptopConfig[], problems: ConfigProblem[]): void {
    const seen = new Map<string, string>();
    const claim = (key: string, c: { host: string; port: number }, role: string) => {
        const id = `${role}|${c.host.toLowerCase()}:${c.port}`;
        const prior = seen.get(id);
        if (prior) problems.push({ key, message: `${c.host}:${c.port} already runs a ${role} for ${prior}; one host holds one ${role} (its directory, route table and key), so give each its own host` });
        else seen.set(id, key);
    };
    sites.forEach((s, i) => {
        claim(`${PROJECT}:sites[${i}].connection.host`, s.connection, "site");
    });
    laptops.forEach((l, i) => {
        claim(`${PROJECT}:laptops[${i}].vm.host`, l.vm, "laptop VM");
        claim(`${PROJECT}:laptops[${i}].laptop.host`, l.laptop, "laptop");
    });
}

/**
 * What the gateway routes into the tunnel (the tunnel blocks, guest networks, peers'
 * allowedIps) becomes a route on the gateway: a public prefix there takes that part of the
 * internet away from the gateway, and one holding the gateway's own address or an operator's
 * address sends SSH replies into the tunnel in the middle of an apply.
 */
export function checkRoutedPrefixes(v: Partial<Record<ConfigKey, unknown>>, problems: ConfigProblem[]): void {
    const routed: { key: string; text: string; publicAllowed: boolean }[] = [];
    const add = (key: string, text: unknown, publicAllowed = false) => {
        if (typeof text === "string") routed.push({ key, text, publicAllowed });
    };
    add(`${PROJECT}:tunnelCidr`, v.tunnelCidr);
    add(`${PROJECT}:tunnelCidrV6`, v.tunnelCidrV6);
    ((v.gateways as ExtraGatewayConfig[] | undefined) ?? []).forEach((g, i) => {
        add(`${PROJECT}:gateways[${i}].tunnelCidr`, g.tunnelCidr);
        add(`${PROJECT}:gateways[${i}].tunnelCidrV6`, g.tunnelCidrV6);
    });
    ((v.sites as SiteConfig[] | undefined) ?? []).forEach((s, i) => {
        s.networks.forEach((n, j) => {
            add(`${PROJECT}:sites[${i}].networks[${j}].cidr`, n.cidr);
            add(`${PROJECT}:sites[${i}].networks[${j}].cidrV6`, n.cidrV6);
        });
    });
    ((v.peers as PeerConfig[] | undefined) ?? []).forEach((p, i) => {
        p.allowedIps.forEach((c, j) => {
            add(`${PROJECT}:peers[${i}].allowedIps[${j}]`, c, p.allowPublicPrefixes);
        });
    });
    const existing = v.placement === "existing" ? (v.existing as { host?: string } | undefined) : undefined;
    const protectedPrefixes = [
        ...((v.adminCidrs as string[] | undefined) ?? []).map((c, i) => ({ key: `${PROJECT}:adminCidrs[${i}]`, cidr: parseCidr(c), what: "an operator's address" })),
        ...(existing?.host && isAddress(existing.host) ? [{ key: `${PROJECT}:existing.host`, cidr: parseCidr(`${existing.host}/${isAddress(existing.host, 4) ? 32 : 128}`), what: "the gateway's own address" }] : []),
        ...((v.gateways as ExtraGatewayConfig[] | undefined) ?? []).flatMap((g, i) =>
            g.placement === "existing" && g.existing?.host && isAddress(g.existing.host)
                ? [{ key: `${PROJECT}:gateways[${i}].existing.host`, cidr: parseCidr(`${g.existing.host}/${isAddress(g.existing.host, 4) ? 32 : 128}`), what: "a gateway's own address" }]
                : [],
        ),
    ];
    for (const r of routed) {
        const c = parseCidr(r.text);
        if (!c) continue;
        if (!r.publicAllowed && !isPrivate(c)) {
            const optIn = r.key.includes(".allowedIps[") ? "; if the peer really owns it, set allowPublicPrefixes: true on the peer" : "";
            problems.push({ key: r.key, message: `${c.text} is public address space: routed into the tunnel, it would take those addresses away from the gateway's internet; use a private (RFC 1918) or ULA (fd00::/8) prefix, for example "192.168.200.0/24"${optIn}` });
        }
        for (const p of protectedPrefixes) {
            if (p.cidr && p.cidr.family === c.family && contains(c, p.cidr)) {
                problems.push({ key: r.key, message: `${c.text} contains ${p.what} (${p.key}, ${p.cidr.text}): the gateway would route it into the tunnel and lose that connection; narrow the prefix` });
            }
        }
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
