// Pure renderers for a KVM site: the settings of components/scripts/site.sh, its nftables table, its WireGuard
// peer, the libvirt routed network, and each guest's domain XML and NoCloud seed.
// Everything here is a function of plain values, so it is snapshot-tested.
import { create as createXml } from "xmlbuilder2";
import type { PortForward, ResolvedNetwork } from "./config";
import { parseCidr } from "./net";
import { deliverAndRun, type FileToWrite, type PreflightSettings, preflight, roleFiles, runIfPresent, settingsFile, shq } from "./shell";

export const SITE_DIR = "/etc/wgexit/site";
export const SITE_SCRIPT = `${SITE_DIR}/site.sh`;
export const SITE_TABLE = "wgexit_site";
/** The libvirt storage pool that holds base images, overlays and seeds. */
export const POOL_NAME = "wgexit";

export interface SiteSettings {
    name: string;
    wgInterface: string;
    tunnelMtu: number;
    /** This site's own tunnel addresses (no prefix: the host never routes its own traffic into the tunnel). */
    addressV4: string;
    addressV6: string;
    routeTable: number;
    networks: ResolvedNetwork[];
    /** WireGuard-network subnets that may open connections to guests. */
    allowInboundFrom: string[];
    /** The home network's prefixes (its LAN, global IPv6 prefix, public address): guests never reach them. */
    lanCidrs: string[];
    serveDns: boolean;
    poolDir: string;
    domainType: "kvm" | "qemu";
    /** Ports forwarded from the gateway's public address to guests of this site. */
    portForwards: PortForward[];
    /** Tunnels to the stack's other gateways (failover.render.ts): the firewall treats them as the first. */
    extraTunnels?: string[];
}

export interface SiteGateway {
    publicKey: string;
    /** "host:port". */
    endpoint: string;
}

const family = (cidrs: string[], f: 4 | 6) => cidrs.filter((c) => parseCidr(c)?.family === f);
const quoted = (names: string[]) => `{ ${names.map((n) => JSON.stringify(n)).join(", ")} }`;

/**
 * The site's table: guests reach only the tunnel, the tunnel reaches only guests, the host stays
 * sealed. Each hook dispatches on the input interface with one verdict-map lookup, so a packet
 * is judged only by the rules for where it came from (the host's other traffic by none), and
 * the replies to guests are accepted by the second rule they meet.
 */
export function renderSiteRuleset(s: SiteSettings): string {
    const tunnels = [s.wgInterface, ...(s.extraTunnels ?? [])];
    const wg = tunnels.length > 1 ? quoted(tunnels) : JSON.stringify(s.wgInterface);
    const bridges = quoted(s.networks.map((n) => n.bridge));
    const inbound4 = family(s.allowInboundFrom, 4);
    const inbound6 = family(s.allowInboundFrom, 6);
    const lan4 = family(s.lanCidrs, 4);
    const lan6 = family(s.lanCidrs, 6);
    const dispatch = (fromTunnel: string, fromGuests: string) =>
        `iifname vmap { ${[...tunnels.map((t) => `${JSON.stringify(t)} : jump ${fromTunnel}`), ...s.networks.map((n) => `${JSON.stringify(n.bridge)} : jump ${fromGuests}`)].join(", ")} }`;
    const chain = (name: string, rules: (string | false | undefined)[]) =>
        `\tchain ${name} {\n${rules.filter((r): r is string => typeof r === "string").map((r) => `\t\t${r}\n`).join("")}\t}`;
    const clamp = `tcp flags syn / syn,rst tcp option maxseg size set rt mtu comment "clamp MSS to the tunnel MTU"`;

    const chains = [
        chain("input", ["type filter hook input priority filter; policy accept;", dispatch("input_from_tunnel", "input_from_guests")]),
        chain("input_from_tunnel", ["ct state established,related accept", `counter drop comment "nothing from the tunnel reaches the host"`]),
        chain("input_from_guests", [
            `ct state established,related accept comment "replies to the host's own connections"`,
            `udp sport 68 udp dport 67 accept comment "DHCPv4 from guests"`,
            `icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept comment "IPv6 neighbour and router discovery"`,
            s.serveDns && `meta l4proto { tcp, udp } th dport 53 accept comment "DNS served by the host (serveDns)"`,
            `counter drop comment "guests cannot reach the host"`,
        ]),
        chain("forward", [
            "type filter hook forward priority filter; policy accept;",
            dispatch("forward_from_tunnel", "forward_from_guests"),
            `oifname ${bridges} counter drop comment "only the tunnel reaches guests"`,
            `oifname ${wg} counter drop comment "nothing else enters the tunnel"`,
        ]),
        chain("forward_from_guests", [
            lan4.length > 0 && `ip daddr { ${lan4.join(", ")} } counter drop comment "guests never reach the home network, not even through the internet"`,
            lan6.length > 0 && `ip6 daddr { ${lan6.join(", ")} } counter drop comment "guests never reach the home network, not even through the internet"`,
            `oifname ${wg} ${clamp}`,
            ...s.networks.flatMap((n) => [
                `iifname ${JSON.stringify(n.bridge)} oifname ${wg} ip saddr ${n.cidr} accept comment "guests of ${n.name} to the tunnel"`,
                n.cidrV6 && `iifname ${JSON.stringify(n.bridge)} oifname ${wg} ip6 saddr ${n.cidrV6} accept comment "guests of ${n.name} to the tunnel"`,
            ]),
            // Bridged, not routed: this chain sees them only where br_netfilter is loaded (Docker
            // loads it), and guests of one network reach each other on any libvirt network.
            ...s.networks.map((n) => `iifname ${JSON.stringify(n.bridge)} oifname ${JSON.stringify(n.bridge)} accept comment "guests of ${n.name} to each other"`),
            `counter drop comment "guests reach only the tunnel (not the LAN)"`,
        ]),
        chain("forward_from_tunnel", [
            clamp,
            `oifname ${bridges} ct state established,related accept comment "replies to guests"`,
            ...s.networks.flatMap((n) => [
                inbound4.length > 0 && `oifname ${JSON.stringify(n.bridge)} ip saddr { ${inbound4.join(", ")} } ip daddr ${n.cidr} ct state new accept comment "allowInboundFrom to ${n.name}"`,
                inbound6.length > 0 && n.cidrV6 && `oifname ${JSON.stringify(n.bridge)} ip6 saddr { ${inbound6.join(", ")} } ip6 daddr ${n.cidrV6} ct state new accept comment "allowInboundFrom to ${n.name}"`,
            ]),
            ...s.portForwards.map((f) => `oifname ${JSON.stringify(f.bridge)} ip daddr ${f.address} ${f.protocol} dport ${f.toPort} ct state new accept comment ${JSON.stringify(`port forward ${f.name}`)}`),
            `counter drop comment "the tunnel reaches nothing else (not the LAN)"`,
        ]),
    ];
    return `# wgexit site firewall: one table, replaced atomically by ${SITE_SCRIPT}.
# Policies are accept so the host's other traffic (its LAN services, other libvirt
# networks) is left alone; every rule concerns the tunnel or the guest bridges.
table inet ${SITE_TABLE} {
${chains.join("\n\n")}
}
`;
}

/** The gateway as this site's only WireGuard peer. AllowedIPs is everything: policy routing decides what enters. */
export function renderSitePeerConf(g: SiteGateway): string {
    return `# gateway
[Peer]
PublicKey = ${g.publicKey}
Endpoint = ${g.endpoint}
AllowedIPs = 0.0.0.0/0, ::/0
# Keeps the home NAT mapping open so the WireGuard network can reach guests.
PersistentKeepalive = 25
`;
}

/** What components/scripts/site.sh reads: its settings.env. */
export function renderSiteSettings(s: SiteSettings): string {
    return settingsFile({
        WG_IF: s.wgInterface,
        MTU: s.tunnelMtu,
        ADDRESS_V4: `${s.addressV4}/32`,
        ADDRESS_V6: `${s.addressV6}/128`,
        ROUTE_TABLE: s.routeTable,
        BRIDGES: s.networks.map((n) => n.bridge).join(" "),
        POOL_NAME,
        POOL_DIR: s.poolDir,
        ROLE: "wgexit-site",
        ROLE_DIR: SITE_DIR,
        ROLE_SCRIPT: SITE_SCRIPT,
        TABLE: SITE_TABLE,
        UNIT: "wgexit-site.service",
        SYSCTL_FILE: "/etc/sysctl.d/60-wgexit-site.conf",
    });
}

/**
 * The libvirt routed network. libvirt's DNS is off (it would resolve through the host's
 * own resolvers, outside the tunnel); DHCP hands out the configured resolvers instead,
 * and the tunnel MTU (libvirt adds the DHCP MTU option from <mtu>).
 */
export function renderNetworkXml(n: ResolvedNetwork, s: Pick<SiteSettings, "wgInterface" | "tunnelMtu" | "serveDns" | "extraTunnels">): string {
    const root = createXml({ version: "1.0" }).ele("network", { "xmlns:dnsmasq": "http://libvirt.org/schemas/network/dnsmasq/1.0" });
    root.ele("name").txt(n.name);
    // libvirt lets a routed network out through `dev` alone (and rejects the rest); with more than
    // one gateway guests leave by whichever tunnel is up, and the site's table confines them to those.
    root.ele("forward", s.extraTunnels?.length ? { mode: "route" } : { mode: "route", dev: s.wgInterface });
    root.ele("bridge", { name: n.bridge, stp: "off", delay: "0" });
    root.ele("mtu", { size: String(s.tunnelMtu) });
    if (!s.serveDns) root.ele("dns", { enable: "no" });
    const v4 = root.ele("ip", { address: n.bridgeV4, prefix: String(n.prefixV4) });
    v4.ele("dhcp").ele("range", { start: n.dhcpFirst, end: n.dhcpLast });
    if (n.cidrV6 && n.bridgeV6) root.ele("ip", { family: "ipv6", address: n.bridgeV6, prefix: "64" });
    if (!s.serveDns) {
        const options = root.ele("dnsmasq:options");
        const v4Resolvers = n.resolvers.filter((r) => !r.includes(":"));
        const v6Resolvers = n.resolvers.filter((r) => r.includes(":"));
        if (v4Resolvers.length) options.ele("dnsmasq:option", { value: `dhcp-option=option:dns-server,${v4Resolvers.join(",")}` });
        if (v6Resolvers.length && n.cidrV6) options.ele("dnsmasq:option", { value: `dhcp-option=option6:dns-server,${v6Resolvers.map((r) => `[${r}]`).join(",")}` });
    }
    return root.end({ prettyPrint: true, headless: true }).concat("\n");
}

// --- commands the component runs over SSH ------------------------------------------------

export function siteFiles(s: SiteSettings, g: SiteGateway): FileToWrite[] {
    return [
        { path: `${SITE_DIR}/ruleset.nft`, content: renderSiteRuleset(s), mode: "0644" },
        { path: `${SITE_DIR}/peer.conf`, content: renderSitePeerConf(g), mode: "0644" },
        ...roleFiles(SITE_DIR, { script: "site.sh", as: "site.sh" }, renderSiteSettings(s), ["status.sh", "role.sh", "policy-routing.sh"]),
    ];
}

/** A guest network's prefixes go to its bridge, where the site's firewall drops what arrives for the host. */
function guestRoutes(networks: ResolvedNetwork[]): PreflightSettings["routed"] {
    return { prefixes: networks.flatMap((n) => (n.cidrV6 ? [n.cidr, n.cidrV6] : [n.cidr])), what: "a guest network, routed to its bridge" };
}

/** Installs or converges the site role; the last line of its output is the site's public key. */
export function renderSiteInstallCommand(s: SiteSettings, g: SiteGateway): string {
    return deliverAndRun(siteFiles(s, g), `${shq(SITE_SCRIPT)} install`, preflight({ roleDir: SITE_DIR, wgInterface: s.wgInterface, routeTable: s.routeTable, bridges: s.networks.map((n) => n.bridge), routed: guestRoutes(s.networks) }));
}

export function renderSiteRemoveCommand(): string {
    return runIfPresent(SITE_SCRIPT, "remove");
}

export function renderNetworkUpCommand(n: ResolvedNetwork, s: SiteSettings): string {
    return deliverAndRun(
        [{ path: `${SITE_DIR}/networks/${n.name}.xml`, content: renderNetworkXml(n, s), mode: "0644" }],
        `${shq(SITE_SCRIPT)} network-up ${shq(n.name)}`,
        preflight({ roleDir: SITE_DIR, wgInterface: s.wgInterface, routed: guestRoutes([n]) }),
    );
}

export function renderNetworkRemoveCommand(n: { name: string }): string {
    return runIfPresent(SITE_SCRIPT, `network-remove ${shq(n.name)}`);
}
