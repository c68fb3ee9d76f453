// The setups the benchmark compares in the lab world, each brought up and taken down whole so
// that rounds can alternate them (ours, the seed, bare WireGuard, ours, …):
//   - ours: the program's KVM site, applied by the lab engine (the namespace guest as client);
//   - seed: the KVM seed's hand-made configuration, applied from its text;
//   - bare: WireGuard alone between the KVM host and the gateway box, as wg-quick makes it
//     (no firewall, no policy routing, no NAT): the ceiling of this machine; to the internet
//     with one masquerade rule added while that is measured: the cheapest way out.
// And one measurement: iperf3 throughput to the internet and to the far tunnel address, pings,
// and a 4 MB download while the server drops ICMP "fragmentation needed".
import * as fs from "node:fs";
import * as path from "node:path";
import { inNs, run } from "../lab/exec";
import { startNamespaceGuest, stopNamespaceGuest } from "../lab/guests";
import type { Lab } from "../lab/lab";
import { LAB } from "../lab/world";

export interface PmtuDownload {
    completed: boolean;
    seconds: number;
    bytes: number;
}

export async function iperf(lab: Lab, client: Setup["client"], server: string, port: number, seconds: number): Promise<number> {
    // One retry: an iperf3 server still closing the previous test answers "busy".
    const first = await iperfOnce(lab, client, server, port, seconds);
    return first > 0 ? first : iperfOnce(lab, client, server, port, seconds);
}

/**
 * TCP streams per iperf3 run. One stream's throughput under the lab's ~10 % socket loss (see
 * gatewaySocketDropPct) is set by when its losses fall: 4 s runs on one bring-up varied by 9.9 %
 * (coefficient of variation, ours) with one stream and 4.0 % with four (2026-12-03, 6 runs
 * each; the seed 4.0 % and 2.8 %). Four streams measure what the tunnel carries, not one
 * congestion window's luck.
 */
export const STREAMS = 4;

async function iperfOnce(lab: Lab, client: Setup["client"], server: string, port: number, seconds: number): Promise<number> {
    // The first second (TCP's slow start, the tunnel's first handshake) is left out of the figure.
    const r = await inNs(lab.world.ns(client), `iperf3 -c ${server} -p ${port} -O 1 -t ${seconds} -P ${STREAMS} -J`, { allowFail: true, timeoutMs: (seconds + 21) * 1000 });
    try {
        const report = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
        return Math.round(report.end.sum_received.bits_per_second / 1e5) / 10;
    } catch {
        return 0;
    }
}

async function pings(lab: Lab, client: Setup["client"], target: string, count: number): Promise<number[]> {
    const r = await inNs(lab.world.ns(client), `ping -n -c ${count} -i 0.2 -W 2 ${target}`, { allowFail: true, timeoutMs: (count + 10) * 1000 });
    return [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
}

/** The download with the server dropping "fragmentation needed"; bounded at `limit` seconds. */
export async function pmtuDownload(lab: Lab, limit: number): Promise<PmtuDownload> {
    const srv = lab.world.ns("srv");
    // Forget path MTUs the server learned from earlier runs: it must discover them now, or fail.
    await inNs(srv, "ip route flush cache; ip -6 route flush cache; ip tcp_metrics flush all 2>/dev/null; true");
    await inNs(lab.world.ns("guest"), "ip route flush cache; ip tcp_metrics flush all 2>/dev/null; true");
    await inNs(srv, `nft -f - <<'EOF'
table inet wgexit_bench_pmtu {
	chain input { type filter hook input priority -400; icmp type destination-unreachable icmp code frag-needed drop; icmpv6 type packet-too-big drop; }
}
EOF`);
    try {
        const started = Date.now();
        const r = await inNs(lab.world.ns("guest"), `curl -s -m ${limit} -o /dev/null -w '%{size_download}' http://${LAB.server.v4}:${LAB.server.httpPort}/bytes/4194304`, { allowFail: true, timeoutMs: (limit + 10) * 1000 });
        const bytes = Number(r.stdout.trim() || 0);
        return { completed: bytes === 4194304, seconds: Number(((Date.now() - started) / 1000).toFixed(2)), bytes };
    } finally {
        await inNs(srv, "nft delete table inet wgexit_bench_pmtu");
    }
}

export interface Sample {
    /** Mbit/s to the internet server. */
    internet: number;
    /** Mbit/s to the far end's tunnel address. */
    tunnel: number;
    pingInternetMs: number[];
    pingTunnelMs: number[];
    /** Of the WireGuard datagrams that reached the gateway box during the throughput runs, the % its socket dropped. */
    gatewaySocketDropPct: number;
}

/** The gateway box's UDP counters (absolute, both families): datagrams taken and dropped for a full receive buffer. */
async function gatewayUdp(lab: Lab): Promise<{ received: number; dropped: number }> {
    const r = await inNs(lab.world.ns("cloud"), "nstat -asz UdpInDatagrams UdpRcvbufErrors Udp6InDatagrams Udp6RcvbufErrors");
    const value = (pattern: string) => [...r.stdout.matchAll(new RegExp(`^${pattern}\\s+(\\d+)`, "gm"))].reduce((sum, m) => sum + Number(m[1]), 0);
    return { received: value("Udp6?InDatagrams"), dropped: value("Udp6?RcvbufErrors") };
}

/**
 * One measurement of a setup that is up: what a round records. Throughput is the mean of
 * `repeats` runs: a 4 s run of user-space WireGuard on 2 cores moves by ±10 % from one run to
 * the next within one bring-up (2026-12-03, as much as between bring-ups), so one run a round
 * left the headline moving by a tenth between full benchmark runs.
 */
export async function sample(lab: Lab, setup: Setup, seconds: number, pingCount: number, repeats: number): Promise<Sample> {
    const mean = async (server: string, port: number) => {
        let sum = 0;
        for (let i = 0; i < repeats; i++) sum += await iperf(lab, setup.client, server, port, seconds);
        return Math.round((sum / repeats) * 10) / 10;
    };
    const before = await gatewayUdp(lab);
    await setup.internetBy?.up();
    let internet: number;
    let pingInternetMs: number[];
    try {
        internet = await mean(LAB.server.v4, 5201);
        pingInternetMs = await pings(lab, setup.client, LAB.server.v4, pingCount);
    } finally {
        await setup.internetBy?.down();
    }
    const tunnel = await mean(setup.tunnel.address, setup.tunnel.port);
    const after = await gatewayUdp(lab);
    const dropped = after.dropped - before.dropped;
    return {
        internet,
        tunnel,
        gatewaySocketDropPct: Number(((100 * dropped) / Math.max(1, after.received - before.received + dropped)).toFixed(2)),
        pingInternetMs,
        pingTunnelMs: await pings(lab, setup.client, setup.tunnel.address, pingCount),
    };
}

export interface Setup {
    name: string;
    /** The namespace the client runs in. */
    client: "guest" | "kvm";
    /**
     * Bare WireGuard's way to the internet: forwarding and one masquerade rule at the gateway box,
     * in place only while the internet is measured, so its tunnel figure (the ceiling) has no NAT.
     */
    internetBy?: { up(): Promise<void>; down(): Promise<void> };
    /** An iperf3 server on the gateway box's tunnel address. */
    tunnel: { address: string; port: number };
    up(): Promise<void>;
    down(): Promise<void>;
}

/** Our KVM site: the lab stack without the QEMU guest, the namespace guest as the client. */
export function oursSetup(lab: Lab, walls: Partial<Walls> = {}): Setup {
    const sites = (lab.baseOverrides().sites as Record<string, unknown>[]).map((s) => ({
        ...s,
        networks: (s.networks as Record<string, unknown>[]).map((n) => ({ ...n, guests: [] })),
    }));
    let stop: (() => Promise<void>) | undefined;
    return {
        name: "wgexit",
        client: "guest",
        tunnel: { address: "10.66.0.1", port: 5202 },
        async up() {
            const applied = await lab.apply({ sites });
            walls.applyMs ??= applied.wallMs;
            walls.reapplyMs ??= (await lab.apply({ sites })).wallMs;
            await startNamespaceGuest(lab.world, "virbr-wg");
            // The gateway admits nothing from the tunnel; open the bench's iperf3 port for this run
            // only, after the rule that accepts established traffic, so the tunnel's own datagrams
            // meet the gateway's input chain as they do in production (not two extra rules first).
            await lab.world.hostExec("cloud", `c='inet wgexit_gateway input'; h=$(nft -a list chain $c | sed -n 's/^\\s*ct state established,related accept # handle \\([0-9]*\\)$/\\1/p'); test -n "$h" && nft add rule $c position $h iifname wg0 tcp dport 5202 accept && nft add rule $c position $h iifname wg0 icmp type echo-request accept`);
            stop = await tunnelServer(lab, "10.66.0.1", 5202);
            ensureOwnSessions("wgexit");
        },
        async down() {
            await stop?.();
            await stopNamespaceGuest(lab.world);
            const destroyed = await lab.apply({ sites }, true);
            walls.destroyMs ??= destroyed.wallMs;
        },
    };
}

// wg-quick in a session of its own (setsid), as our scripts' wireguard-go is in the SSH session
// that started it. The kernel's scheduler autogroups (kernel.sched_autogroup_enabled, on by
// default) share CPU between sessions, not processes: a wireguard-go left in the bench's own
// session competes as a plain task, one in its own session as a group. That alone moved the
// seed from 241-285 to 190-210 Mbit/s and ours from 177-214 to 257 when swapped (2026-12-02), so
// every setup's wireguard-go gets a session of its own, and sharedSchedulingGroups() checks it.
const wgQuick = (conf: string, action: "up" | "down") => `WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 setsid --wait wg-quick ${action} ${conf}`;

/** Whether the kernel schedules by autogroup (kernel.sched_autogroup_enabled). */
export const autogroupsOn = () => fs.existsSync("/proc/self/autogroup") && fs.readFileSync("/proc/sys/kernel/sched_autogroup_enabled", "utf8").trim() !== "0";

/**
 * The wireguard-go processes that share this process's scheduler autogroup (empty when
 * autogroups are off): a setup whose tunnel processes do would be measured on other terms.
 */
export function sharedSchedulingGroups(): string[] {
    const group = (pid: string) => fs.readFileSync(`/proc/${pid}/autogroup`, "utf8").split(" ")[0];
    if (!autogroupsOn()) return [];
    const own = group("self");
    const shared: string[] = [];
    for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
        try {
            const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
            if (path.basename(cmdline[0]) === "wireguard-go" && group(pid) === own) shared.push(`${cmdline.join(" ").trim()} (pid ${pid})`);
        } catch {
            // The process ended while we looked.
        }
    }
    return shared;
}

/** Refuses to measure a setup whose wireguard-go shares the bench's scheduling group. */
function ensureOwnSessions(setup: string): void {
    const shared = sharedSchedulingGroups();
    if (shared.length) throw new Error(`${setup}: ${shared.join(", ")} share(s) the benchmark's scheduler autogroup; start it in a session of its own (setsid)`);
}

async function keyPair() {
    const priv = (await run(["wg", "genkey"])).stdout.trim();
    return { priv, pub: (await run(["wg", "pubkey"], { input: priv })).stdout.trim() };
}

/**
 * The KVM seed, applied by hand from its text in the same world: wg-quick configs with its
 * PostUp rules (ens3 is the lab box's eth0), and a virt-manager-style routed network (MTU
 * 1500, libvirt DNS on). The per-guest `ip rule` is widened to the subnet, as the seed suggests.
 */
export function seedSetup(lab: Lab): Setup {
    const w = lab.world;
    const dir = path.join(w.root, "seed");
    const cloudConf = path.join(dir, "wg1.conf");
    const kvmConf = path.join(dir, "wg1-kvm", "wg1.conf");
    let stop: (() => Promise<void>) | undefined;
    return {
        name: "KVM seed, by hand",
        client: "guest",
        tunnel: { address: "10.0.3.1", port: 5203 },
        async up() {
            fs.mkdirSync(path.dirname(kvmConf), { recursive: true });
            const [cloud, kvm] = [await keyPair(), await keyPair()];
            fs.writeFileSync(
                cloudConf,
                `[Interface]
Address = 10.0.3.1/24
ListenPort = 51821
PrivateKey = ${cloud.priv}
PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE; ip6tables -A FORWARD -i %i -j ACCEPT; ip6tables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
PostDown = iptables -D FORWARD -i %i -j ACCEPT; iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE; ip6tables -D FORWARD -i %i -j ACCEPT; ip6tables -t nat -D POSTROUTING -o eth0 -j MASQUERADE

[Peer]
PublicKey = ${kvm.pub}
AllowedIPs = 192.168.100.0/24
`,
                { mode: 0o600 },
            );
            fs.writeFileSync(
                kvmConf,
                `[Interface]
Address = 10.0.3.2/24
PrivateKey = ${kvm.priv}
Table = off
PostUp = ip rule add from 192.168.100.0/24 table 42; ip route add default dev %i table 42; iptables -A INPUT -d 10.0.3.2 -j DROP
PostDown = ip rule del from 192.168.100.0/24 table 42; iptables -D INPUT -d 10.0.3.2 -j DROP

[Peer]
PublicKey = ${cloud.pub}
AllowedIPs = 0.0.0.0/0
Endpoint = ${LAB.cloudPublic.v4}:51821
`,
                { mode: 0o600 },
            );
            // The seed assumes forwarding is on at the gateway (its cloud image); the lab box starts with it off.
            await w.hostExec("cloud", `sysctl -qw net.ipv4.ip_forward=1 && ${wgQuick(cloudConf, "up")}`);
            await w.hostExec("kvm", wgQuick(kvmConf, "up"));
            const netXml = path.join(dir, "seednet.xml");
            fs.writeFileSync(
                netXml,
                `<network>
  <name>seednet</name>
  <forward mode='route' dev='wg1'/>
  <bridge name='virbr-seed' stp='on' delay='0'/>
  <ip address='192.168.100.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.100.128' end='192.168.100.254'/></dhcp>
  </ip>
</network>
`,
            );
            await w.virsh(`net-create ${netXml}`);
            stop = await tunnelServer(lab, "10.0.3.1", 5203);
            // The guest, as on the seed's network: default MTU 1500, an address from the subnet.
            const guest = w.ns("guest");
            await run(["ip", "link", "add", "g-nsguest", "netns", w.ns("kvm"), "type", "veth", "peer", "name", "eth0", "netns", guest]);
            await inNs(w.ns("kvm"), "ip link set g-nsguest master virbr-seed up");
            await inNs(guest, "ip link set eth0 up && ip addr add 192.168.100.150/24 dev eth0 && ip route add default via 192.168.100.1");
            // STP on the seed's bridge: the port forwards after listening and learning. (Not a ping
            // to the bridge: the seed's rule `from 192.168.100.0/24` sends the host's own replies
            // from 192.168.100.1 into the tunnel, so the host never answers its guests.)
            await waitForwarding(w.ns("kvm"), "g-nsguest");
            ensureOwnSessions("the seed");
        },
        async down() {
            await stop?.();
            await stopNamespaceGuest(w);
            await w.virsh("net-destroy seednet", true);
            await w.hostExec("kvm", wgQuick(kvmConf, "down"), true);
            await w.hostExec("cloud", `${wgQuick(cloudConf, "down")}; sysctl -qw net.ipv4.ip_forward=0`, true);
        },
    };
}

/** Waits (bounded) until a bridge port is in STP's forwarding state (3). */
async function waitForwarding(ns: string, port: string): Promise<void> {
    for (let i = 0; i < 150; i++) {
        if ((await inNs(ns, `cat /sys/class/net/${port}/brport/state`)).stdout.trim() === "3") return;
        await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`bridge port ${port} did not reach the forwarding state in 30 s`);
}

/**
 * The ceiling: WireGuard alone between the KVM host and the gateway box, as wg-quick makes it
 * (no PostUp, no firewall, no policy routing, no NAT), the same binary on the same two hosts.
 * The KVM host routes the internet server through it (AllowedIPs), reached only while
 * internetBy's NAT is in place: what NAT and the lab's longer path to the internet cost alone.
 */
export function bareSetup(lab: Lab): Setup {
    const w = lab.world;
    const dir = path.join(w.root, "bare");
    const cloudConf = path.join(dir, "wg3.conf");
    const kvmConf = path.join(dir, "kvm", "wg3.conf");
    let stop: (() => Promise<void>) | undefined;
    return {
        name: "bare WireGuard (ceiling)",
        client: "kvm",
        tunnel: { address: "10.0.9.1", port: 5204 },
        // The lab box starts with forwarding off (as the seed's setup notes).
        internetBy: {
            up: () =>
                w.hostExec("cloud", `sysctl -qw net.ipv4.ip_forward=1 && nft -f - <<'EOF'\ntable ip wgexit_bench_bare_nat {\n\tchain postrouting { type nat hook postrouting priority srcnat; oifname "eth0" ip saddr 10.0.9.2 masquerade; }\n}\nEOF`).then(() => undefined),
            down: () => w.hostExec("cloud", "nft delete table ip wgexit_bench_bare_nat; sysctl -qw net.ipv4.ip_forward=0", true).then(() => undefined),
        },
        async up() {
            fs.mkdirSync(path.dirname(kvmConf), { recursive: true });
            const [cloud, kvm] = [await keyPair(), await keyPair()];
            fs.writeFileSync(cloudConf, `[Interface]\nAddress = 10.0.9.1/24\nListenPort = 51824\nPrivateKey = ${cloud.priv}\n\n[Peer]\nPublicKey = ${kvm.pub}\nAllowedIPs = 10.0.9.2/32\n`, { mode: 0o600 });
            fs.writeFileSync(kvmConf, `[Interface]\nAddress = 10.0.9.2/24\nPrivateKey = ${kvm.priv}\n\n[Peer]\nPublicKey = ${cloud.pub}\nAllowedIPs = 10.0.9.1/32, ${LAB.server.v4}/32\nEndpoint = ${LAB.cloudPublic.v4}:51824\n`, { mode: 0o600 });
            await w.hostExec("cloud", wgQuick(cloudConf, "up"));
            await w.hostExec("kvm", wgQuick(kvmConf, "up"));
            stop = await tunnelServer(lab, "10.0.9.1", 5204);
            ensureOwnSessions("bare WireGuard");
        },
        async down() {
            await stop?.();
            await w.hostExec("kvm", wgQuick(kvmConf, "down"), true);
            await w.hostExec("cloud", wgQuick(cloudConf, "down"), true);
        },
    };
}

/** An iperf3 server on the gateway box, on a tunnel address: the "tunnel only" end. */
async function tunnelServer(lab: Lab, address: string, port: number) {
    const d = lab.world.startLabDaemon(`bench-iperf3-${port}`, "cloud", ["iperf3", "--server", "--bind", address, "--port", String(port)]);
    for (let i = 0; i < 50; i++) {
        if ((await inNs(lab.world.ns("cloud"), `ss -Htln 'sport = :${port}' | grep -q .`, { allowFail: true })).code === 0) break;
        await new Promise((r) => setTimeout(r, 100));
    }
    return () => lab.world.stopLabDaemon(d);
}

export interface Walls {
    applyMs: number;
    reapplyMs: number;
    destroyMs: number;
}
