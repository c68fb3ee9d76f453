// Pure renderers for a site with more than one gateway: the settings of
// components/scripts/site-failover.sh, and each further gateway's tunnel (its addresses and
// its WireGuard peer). The first gateway's tunnel stays site.sh's, unchanged.
import type { FailoverConfig } from "./config";
import type { SiteGateway } from "./kvmSite.render";
import { SITE_DIR } from "./kvmSite.render";
import { deliverAndRun, type FileToWrite, preflight, runIfPresent, scriptFile, settingsFile, shq } from "./shell";

export const FAILOVER_SCRIPT = `${SITE_DIR}/failover.sh`;

export interface SiteTunnel {
    /** The gateway's name (status lines and the switch log). */
    gateway: string;
    wgInterface: string;
    /** The site's own addresses in this gateway's tunnel. */
    addressV4: string;
    addressV6: string;
    mtu: number;
    /** The gateway's tunnel address: what the health check pings. */
    probe: string;
}

/** Every tunnel of the site in order of preference (the first is site.sh's), and how to choose. */
export interface FailoverSettings {
    tunnels: SiteTunnel[];
    failover: FailoverConfig;
}

export function renderFailoverSettings(f: FailoverSettings): string {
    return settingsFile({
        TUNNELS: f.tunnels.map((t) => t.wgInterface).join(" "),
        GATEWAYS: f.tunnels.map((t) => t.gateway).join(" "),
        PROBES: f.tunnels.map((t) => t.probe).join(" "),
        PROBE_INTERVAL: f.failover.probeIntervalSeconds,
        FAIL_AFTER: f.failover.failAfter,
        FAILBACK_AFTER: f.failover.failbackAfterSeconds,
        FAILOVER_UNIT: "wgexit-site-failover.service",
    });
}

/** A further gateway as the peer of its tunnel: AllowedIPs is everything, policy routing decides. */
export function renderTunnelPeerConf(t: SiteTunnel, g: SiteGateway): string {
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
    return [
        { path: `${SITE_DIR}/failover.env`, content: renderFailoverSettings(f), mode: "0644" },
        ...further.flatMap((t, i) => [
            { path: `${SITE_DIR}/tunnels/${t.wgInterface}/settings.env`, content: settingsFile({ ADDRESS_V4: `${t.addressV4}/32`, ADDRESS_V6: `${t.addressV6}/128`, MTU: t.mtu }), mode: "0644" },
            { path: `${SITE_DIR}/tunnels/${t.wgInterface}/peer.conf`, content: renderTunnelPeerConf(t, peers[i]), mode: "0644" },
        ]),
        { path: FAILOVER_SCRIPT, content: scriptFile("site-failover.sh"), mode: "0755" },
    ];
}

/** Brings up the tunnels to the further gateways and starts the health check; `peers` are those gateways, in order. */
export function renderFailoverInstallCommand(f: FailoverSettings, peers: SiteGateway[]): string {
    const checks = f.tunnels.slice(1).map((t) => preflight({ roleDir: `${SITE_DIR}/tunnels/${t.wgInterface}`, wgInterface: t.wgInterface }));
    return deliverAndRun(failoverFiles(f, peers), `${shq(FAILOVER_SCRIPT)} install`, checks.join("\n"));
}

export function renderFailoverRemoveCommand(): string {
    return runIfPresent(FAILOVER_SCRIPT, "remove");
}
