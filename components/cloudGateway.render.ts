// Pure renderers for the gateway role: the settings of components/scripts/gateway.sh, its
// nftables ruleset, its peer files and the cloud-init payload that delivers the same files.
// Everything here is a function of plain values, so it is snapshot-tested.
import { stringify as toYaml } from "yaml";
import type { PortForward, StackConfig } from "./config";
import { parseCidr } from "./net";
import { deliverAndRun, type FileToWrite, preflight, roleFiles, runIfPresent, scriptWithSettings, settingsFile, shq } from "./shell";

export const GATEWAY_DIR = "/etc/wgexit/gateway";
export const GATEWAY_SCRIPT = `${GATEWAY_DIR}/gateway.sh`;
export const GATEWAY_RULESET = `${GATEWAY_DIR}/ruleset.nft`;
export const GATEWAY_TABLE = "wgexit_gateway";
/** Routes the gateway installs carry this protocol number, so it can find and remove exactly its own. */
export const ROUTE_PROTO = 77;

/** The validated gateway config, plus the SSH port the input chain must leave open. */
export type GatewaySettings = Omit<StackConfig["gateway"], "allowWorldSsh"> & {
    sshPort: number;
    /** With more than one gateway: answer pings to the tunnel address (sites' health probes, the other gateways). */
    answerProbes?: boolean;
};

export interface GatewayPeer {
    name: string;
    publicKey: string;
    /** Tunnel addresses and routed subnets of this peer (its WireGuard AllowedIPs). */
    allowedIps: string[];
    /** Subnets behind the peer that may use the internet (its tunnel address is always included). */
    routedCidrs: string[];
    /** Other peers' subnets this peer may open connections to. */
    reachableCidrs: string[];
    /** Another gateway of the stack: reached at its endpoint; this gateway's peers may reach its tunnel addresses. */
    mesh?: { endpoint: string; addresses: string[] };
}

// Destinations forwarded traffic may never reach through the internet rule. Peer-to-peer
// traffic is allowed only by explicit rules in peer_links.
const NON_INTERNET_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/3",
];
const NON_INTERNET_V6 = ["::/127", "::ffff:0:0/96", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "ff00::/8"];

const split = (cidrs: string[], family: 4 | 6) => cidrs.filter((c) => parseCidr(c)?.family === family);
const set = (items: string[]) => (items.length > 0 ? ` elements = { ${items.join(", ")} }` : "");

/** The static part of the gateway's table. Host facts and peers are added by the script. */
export function renderGatewayRuleset(s: GatewaySettings): string {
    const wg = JSON.stringify(s.wgInterface);
    return `# wgexit gateway firewall: one table, replaced atomically by ${GATEWAY_SCRIPT}.
table inet ${GATEWAY_TABLE} {
	# Filled at apply time with the on-link networks of this host (its provider LAN).
	set local_nets_v4 { type ipv4_addr; flags interval; auto-merge; }
	set local_nets_v6 { type ipv6_addr; flags interval; auto-merge; }
	# Filled from the peer list: tunnel addresses and routed subnets of every peer.
	set peer_nets_v4 { type ipv4_addr; flags interval; auto-merge; }
	set peer_nets_v6 { type ipv6_addr; flags interval; auto-merge; }
	set admin_v4 { type ipv4_addr; flags interval; auto-merge;${set(split(s.adminCidrs, 4))} }
	set admin_v6 { type ipv6_addr; flags interval; auto-merge;${set(split(s.adminCidrs, 6))} }
	set non_internet_v4 { type ipv4_addr; flags interval; elements = { ${NON_INTERNET_V4.join(", ")} } }
	set non_internet_v6 { type ipv6_addr; flags interval; elements = { ${NON_INTERNET_V6.join(", ")} } }

	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		ct state invalid drop
		udp dport ${s.listenPort} accept comment "WireGuard"
		tcp dport ${s.sshPort} ip saddr @admin_v4 accept comment "SSH from admin CIDRs"
		tcp dport ${s.sshPort} ip6 saddr @admin_v6 accept comment "SSH from admin CIDRs"
		udp sport 67 udp dport 68 accept comment "DHCPv4 client"
		ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept comment "DHCPv6 client"
		icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept comment "IPv6 neighbour discovery"
${s.answerProbes ? probeRules(s) : ""}		counter comment "dropped input"
	}

	chain forward {
		type filter hook forward priority filter; policy drop;
		tcp flags syn / syn,rst tcp option maxseg size set rt mtu comment "clamp MSS to the path MTU"
		# Established first: a packet passes every rule above the one that accepts it, and this
		# chain judged each connection's first packet. The drops below hold for every new
		# connection; a reply to a port forward's client on the gateway's own network passes.
		ct state established,related accept
		ct state invalid drop
		iifname ${wg} ip daddr 169.254.0.0/16 counter drop comment "metadata service and iSCSI boot volume"
		iifname ${wg} ip daddr @local_nets_v4 counter drop comment "the gateway's own network"
		iifname ${wg} ip6 daddr @local_nets_v6 counter drop comment "the gateway's own network"
		oifname ${wg} ct status dnat accept comment "port forwards, to the guest each one names"
		iifname ${wg} oifname ${wg} jump peer_links
		iifname ${wg} oifname != ${wg} ip saddr @peer_nets_v4 ip daddr != @non_internet_v4 accept comment "peers to the internet"
		iifname ${wg} oifname != ${wg} ip6 saddr @peer_nets_v6 ip6 daddr != @non_internet_v6 accept comment "peers to the internet"
		counter comment "dropped forward"
	}

	# Peer-to-peer paths declared with canReach; filled from the peer list.
	chain peer_links {
	}

	# Connections to this host's own addresses from outside the tunnel, on a forwarded port,
	# go to the guest behind the tunnel; the guest sees the client's real address.
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname != ${wg} fib daddr type local jump port_forwards
	}

	# Filled from the port forwards.
	chain port_forwards {
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname != ${wg} ip saddr @peer_nets_v4 masquerade comment "NAT44 out the public interface"
		oifname != ${wg} ip6 saddr @peer_nets_v6 masquerade comment "NAT66 from the ULA tunnel prefix"
	}
}
`;
}

function probeRules(s: GatewaySettings): string {
    const wg = JSON.stringify(s.wgInterface);
    return `		iifname ${wg} ip daddr ${s.addressV4} icmp type echo-request accept comment "health probes: sites and the other gateways"
		iifname ${wg} ip6 daddr ${s.addressV6} icmpv6 type echo-request accept comment "health probes: sites and the other gateways"
`;
}

/** nft statements for the peer list, appended to the ruleset in the same transaction. */
export function renderGatewayPeersNft(s: GatewaySettings, peers: GatewayPeer[], forwards: PortForward[] = []): string {
    const t = `inet ${GATEWAY_TABLE}`;
    const lines = [`# Peers of the wgexit gateway (${peers.length}).`];
    const nets = [s.tunnelCidr, s.tunnelCidrV6, ...peers.flatMap((p) => p.routedCidrs)];
    const v4 = split(nets, 4);
    const v6 = split(nets, 6);
    if (v4.length) lines.push(`add element ${t} peer_nets_v4 { ${v4.join(", ")} }`);
    if (v6.length) lines.push(`add element ${t} peer_nets_v6 { ${v6.join(", ")} }`);
    const wg = JSON.stringify(s.wgInterface);
    for (const p of peers) {
        const sources = p.allowedIps;
        for (const family of [4, 6] as const) {
            const from = split(sources, family);
            const to = split(p.reachableCidrs, family);
            if (!from.length || !to.length) continue;
            const ip = family === 4 ? "ip" : "ip6";
            lines.push(
                `add rule ${t} peer_links iifname ${wg} ${ip} saddr { ${from.join(", ")} } ${ip} daddr { ${to.join(", ")} } accept comment ${JSON.stringify(`${p.name} may reach its declared peers`)}`,
            );
        }
    }
    for (const p of peers) {
        if (!p.mesh) continue;
        for (const family of [4, 6] as const) {
            const to = split(p.mesh.addresses, family);
            if (!to.length) continue;
            const ip = family === 4 ? "ip" : "ip6";
            lines.push(`add rule ${t} peer_links iifname ${wg} ${ip} saddr ${family === 4 ? s.tunnelCidr : s.tunnelCidrV6} ${ip} daddr { ${to.join(", ")} } accept comment ${JSON.stringify(`this gateway's peers may reach gateway ${p.name}`)}`);
        }
    }
    for (const f of forwards) {
        lines.push(`add rule ${t} port_forwards meta nfproto ipv4 ${f.protocol} dport ${f.port} dnat ip to ${f.address}:${f.toPort} comment ${JSON.stringify(`port forward ${f.name}`)}`);
    }
    return `${lines.join("\n")}\n`;
}

/** WireGuard [Peer] sections; the [Interface] part is added on the host from the local key. */
export function renderGatewayPeersConf(peers: GatewayPeer[]): string {
    const sections = peers.map(
        (p) => `# ${p.name}\n[Peer]\nPublicKey = ${p.publicKey}\nAllowedIPs = ${p.allowedIps.join(", ")}\n${p.mesh ? `Endpoint = ${p.mesh.endpoint}\nPersistentKeepalive = 25\n` : ""}`,
    );
    return sections.join("\n");
}

/** What components/scripts/gateway.sh reads: its settings.env. */
export function renderGatewaySettings(s: GatewaySettings): string {
    return settingsFile({
        WG_IF: s.wgInterface,
        LISTEN_PORT: s.listenPort,
        MTU: s.tunnelMtu,
        ADDRESS_V4: `${s.addressV4}/${s.tunnelCidr.split("/")[1]}`,
        ADDRESS_V6: `${s.addressV6}/${s.tunnelCidrV6.split("/")[1]}`,
        ROLE: "wgexit-gateway",
        ROLE_DIR: GATEWAY_DIR,
        ROLE_SCRIPT: GATEWAY_SCRIPT,
        TABLE: GATEWAY_TABLE,
        ROUTE_PROTO,
        UNIT: "wgexit-gateway.service",
        SYSCTL_FILE: "/etc/sysctl.d/60-wgexit-gateway.conf",
        LEGACY_TAG: "wgexit-gateway",
    });
}

export function gatewayFiles(s: GatewaySettings): FileToWrite[] {
    return [
        { path: GATEWAY_RULESET, content: renderGatewayRuleset(s), mode: "0644" },
        ...roleFiles(GATEWAY_DIR, { script: "gateway.sh", as: "gateway.sh" }, renderGatewaySettings(s), ["status.sh", "role.sh"]),
    ];
}

/** The SSH command that installs (or converges) the gateway role on a host. */
export function renderGatewayInstallCommand(s: GatewaySettings): string {
    return deliverAndRun(gatewayFiles(s), `${shq(GATEWAY_SCRIPT)} install`, preflight({ roleDir: GATEWAY_DIR, wgInterface: s.wgInterface, ssh: { port: s.sshPort, from: s.adminCidrs } }));
}

export function renderGatewayRemoveCommand(): string {
    return runIfPresent(GATEWAY_SCRIPT, "remove");
}

/** Applies the peer list to a running gateway without restarting the tunnel. */
export function renderGatewayPeersCommand(s: GatewaySettings, peers: GatewayPeer[], forwards: PortForward[] = []): string {
    return deliverAndRun(
        [
            { path: `${GATEWAY_DIR}/peers.conf`, content: renderGatewayPeersConf(peers), mode: "0644" },
            { path: `${GATEWAY_DIR}/peers.nft`, content: renderGatewayPeersNft(s, peers, forwards), mode: "0644" },
        ],
        `${shq(GATEWAY_SCRIPT)} up`,
        preflight({ roleDir: GATEWAY_DIR, wgInterface: s.wgInterface, routed: { prefixes: peers.flatMap((p) => p.allowedIps), what: "a peer's allowedIps, routed into the tunnel" } }),
    );
}

/** Peers removed on delete: the tunnel keeps running with none. */
export function renderGatewayPeersRemoveCommand(s: GatewaySettings): string {
    return `if [ -x ${shq(GATEWAY_SCRIPT)} ]; then\n${renderGatewayPeersCommand(s, [])}fi\n`;
}

/** Waits (bounded) until the role is up, then prints the gateway's public key. */
export function renderGatewayReadyCommand(timeoutSeconds = 900): string {
    return scriptWithSettings("gateway-ready.sh", { READY_FILE: `${GATEWAY_DIR}/ready`, KEY_FILE: `${GATEWAY_DIR}/public.key`, TIMEOUT: timeoutSeconds });
}

/** cloud-init user data: write the same files, then run the same install. */
export function renderGatewayCloudInit(s: GatewaySettings, sshPublicKey: string): string {
    const doc = {
        // Keys go to the image's default user (ubuntu on OCI and OVH Ubuntu images).
        ssh_authorized_keys: [sshPublicKey],
        ssh_pwauth: false,
        disable_root: true,
        package_update: true,
        packages: ["wireguard-tools", "nftables"],
        write_files: gatewayFiles(s).map((f) => ({ path: f.path, permissions: f.mode, owner: "root:root", content: f.content })),
        runcmd: [[GATEWAY_SCRIPT, "install"]],
    };
    return `#cloud-config\n${toYaml(doc, { lineWidth: 0 })}`;
}

/** What the gateway needs to know about one tunnel peer, from the validated config. */
export function gatewayPeerFor(
    peer: { name: string; addressV4: string; addressV6: string; routedCidrs: string[]; canReach: string[] },
    all: { name: string; addressV4: string; addressV6: string; routedCidrs: string[] }[],
): Omit<GatewayPeer, "publicKey"> {
    const own = [`${peer.addressV4}/32`, `${peer.addressV6}/128`];
    const targets = all.filter((p) => peer.canReach.includes(p.name));
    return {
        name: peer.name,
        allowedIps: [...own, ...peer.routedCidrs],
        routedCidrs: peer.routedCidrs,
        reachableCidrs: targets.flatMap((t) => [`${t.addressV4}/32`, `${t.addressV6}/128`, ...t.routedCidrs]),
    };
}
