// Pure renderers for a host with more than one gateway (a KVM site, a laptop's VM): the
// settings of components/scripts/failover.sh, and each further gateway's tunnel (its addresses
// and its WireGuard peer). The first gateway's tunnel stays the role's own (site.sh, vm.sh),
// unchanged.
import type { FailoverConfig } from "./config";
import type { SiteGateway } from "./kvmSite.render";
import { SITE_DIR } from "./kvmSite.render";
import { VM_DIR } from "./laptopClient.render";
import { deliverAndRun, type FileToWrite, preflight, runIfPresent, scriptFile, scriptWithSettings, settingsFile, shq } from "./shell";

/** The role the failover runs beside: where its files go, its own table and unit, and whose traffic it moves. */
export interface FailoverRole {
    dir: string;
    table: string;
    unit: string;
    /** For the switch log and status: "guest traffic", "laptop traffic". */
    traffic: string;
}

export const SITE_FAILOVER: FailoverRole = { dir: SITE_DIR, table: "wgexit_site_failover", unit: "wgexit-site-failover.service", traffic: "guest traffic" };
export const LAPTOP_VM_FAILOVER: FailoverRole = { dir: VM_DIR, table: "wgexit_laptop_vm_failover", unit: "wgexit-laptop-vm-failover.service", traffic: "laptop traffic" };

export const failoverScript = (role: FailoverRole) => `${role.dir}/failover.sh`;
/** Connection marks for "came in by tunnel n" (0x77e1, 0x77e2, …): far from the small marks other tools use. */
const MARK_BASE = 0x77e0;

export interface FailoverTunnel {
    /** The gateway's name (status lines and the switch log). */
    gateway: string;
    wgInterface: string;
    /** The host's own addresses in this gateway's tunnel. */
    addressV4: string;
    addressV6: string;
    mtu: number;
    /** The gateway's tunnel address: what the health check pings. */
    probe: string;
}

/** Every tunnel of the host in order of preference (the first is the role's own), and how to choose. */
export interface FailoverSettings {
    role: FailoverRole;
    tunnels: FailoverTunnel[];
    failover: FailoverConfig;
    /** The role's routeTable: the reply tables are the numbers just below it. */
    routeTable: number;
    /** Where the traffic it moves comes in: a site's guest bridges, a laptop VM's link to the laptop. */
    ingress: string[];
}

/**
 * Replies go back by the tunnel their connection came in on: one table per tunnel, numbered
 * just below the role's routeTable (each number is also its rules' priority, so they are
 * looked at first), selected by the connection's mark.
 */
export function replyTables(f: Pick<FailoverSettings, "tunnels" | "routeTable">): number[] {
    return f.tunnels.map((_, i) => f.routeTable - f.tunnels.length + i);
}

const mark = (i: number) => `0x${(MARK_BASE + i + 1).toString(16)}`;

/** The failover's own table: a connection that comes in by a tunnel is marked; the replies carry its mark. */
export function renderFailoverRuleset(f: FailoverSettings): string {
    const ingress = `{ ${f.ingress.map((b) => JSON.stringify(b)).join(", ")} }`;
    const marks = f.tunnels.map((_, i) => mark(i));
    return `# wgexit failover: replies leave by the tunnel their connection came in on. Replaced whole by ${failoverScript(f.role)}.
table inet ${f.role.table} {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
${f.tunnels.map((t, i) => `		iifname ${JSON.stringify(t.wgInterface)} ct state new ct mark set ${marks[i]} comment "came in from gateway ${t.gateway}"`).join("\n")}
		iifname ${ingress} ct mark { ${marks.join(", ")} } meta mark set ct mark comment "a reply: back the same way"
	}
}
`;
}

export function renderFailoverSettings(f: FailoverSettings): string {
    return settingsFile({
        TUNNELS: f.tunnels.map((t) => t.wgInterface).join(" "),
        GATEWAYS: f.tunnels.map((t) => t.gateway).join(" "),
        PROBES: f.tunnels.map((t) => t.probe).join(" "),
        PROBE_INTERVAL: f.failover.probeIntervalSeconds,
        FAIL_AFTER: f.failover.failAfter,
        FAILBACK_AFTER: f.failover.failbackAfterSeconds,
        FAILOVER_UNIT: f.role.unit,
        REPLY_TABLES: replyTables(f).join(" "),
        REPLY_MARKS: f.tunnels.map((_, i) => mark(i)).join(" "),
        FAILOVER_TABLE: f.role.table,
        INGRESS: f.ingress.join(" "),
        TRAFFIC: f.role.traffic,
    });
}

/** A further gateway as the peer of its tunnel: AllowedIPs is everything, policy routing decides. */
export function renderTunnelPeerConf(t: FailoverTunnel, g: SiteGateway): string {
    return `# ${t.gateway}
[Peer]
PublicKey = ${g.publicKey}
Endpoint = ${g.endpoint}
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
`;
}

export function failoverFiles(f: FailoverSettings, peers: SiteGateway[]): FileToWrite[] {
    const further = f.tunnels.slice(1);
    const dir = f.role.dir;
    return [
        { path: `${dir}/failover.env`, content: renderFailoverSettings(f), mode: "0644" },
        { path: `${dir}/failover.nft`, content: renderFailoverRuleset(f), mode: "0644" },
        ...further.flatMap((t, i) => [
            { path: `${dir}/tunnels/${t.wgInterface}/settings.env`, content: settingsFile({ ADDRESS_V4: `${t.addressV4}/32`, ADDRESS_V6: `${t.addressV6}/128`, MTU: t.mtu }), mode: "0644" },
            { path: `${dir}/tunnels/${t.wgInterface}/peer.conf`, content: renderTunnelPeerConf(t, peers[i]), mode: "0644" },
        ]),
        { path: failoverScript(f.role), content: scriptFile("failover.sh"), mode: "0755" },
    ];
}

/** Brings up the tunnels to the further gateways and starts the health check; `peers` are those gateways, in order. */
export function renderFailoverInstallCommand(f: FailoverSettings, peers: SiteGateway[]): string {
    const links = f.tunnels.slice(1).map((t) => preflight({ roleDir: `${f.role.dir}/tunnels/${t.wgInterface}`, wgInterface: t.wgInterface }));
    const marker = "WGEXIT_FAILOVER_PREFLIGHT_EOF";
    const tables = scriptWithSettings("failover-preflight.sh", { ROLE_DIR: f.role.dir, REPLY_TABLES: replyTables(f).join(" ") });
    return deliverAndRun(failoverFiles(f, peers), `${shq(failoverScript(f.role))} install`, [...links, `$S bash -s <<'${marker}'\n${tables.replace(/\n$/, "")}\n${marker}`].join("\n"));
}

export function renderFailoverRemoveCommand(role: FailoverRole): string {
    return runIfPresent(failoverScript(role), "remove");
}
