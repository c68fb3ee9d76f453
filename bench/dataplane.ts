// Data-plane figures in the lab world, for our KVM site and for the KVM seed's hand-made
// configuration applied from its text in the same world:
//   - throughput guest → internet and guest → gateway (tunnel only), iperf3, median of runs;
//   - ping latency (median and p95) to the internet and to the gateway's tunnel address;
//   - a 4 MB download while the server drops ICMP "fragmentation needed".
import * as fs from "node:fs";
import * as path from "node:path";
import { inNs, run } from "../lab/exec";
import { startNamespaceGuest, stopNamespaceGuest } from "../lab/guests";
import type { Lab } from "../lab/lab";
import { LAB } from "../lab/world";

export interface PathFigures {
    throughputMbps: { internet: number; tunnel: number; runs: number; seconds: number };
    latencyMs: { internet: { median: number; p95: number }; tunnel: { median: number; p95: number }; pings: number };
    pmtuDownload: { completed: boolean; seconds: number; bytes: number };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(xs.length * 0.95) - 1)];

async function iperf(lab: Lab, server: string, port: number, seconds: number): Promise<number> {
    // One retry: an iperf3 server still closing the previous test answers "busy".
    const first = await iperfOnce(lab, server, port, seconds);
    return first > 0 ? first : iperfOnce(lab, server, port, seconds);
}

async function iperfOnce(lab: Lab, server: string, port: number, seconds: number): Promise<number> {
    const r = await inNs(lab.world.ns("guest"), `iperf3 -c ${server} -p ${port} -t ${seconds} -J`, { allowFail: true, timeoutMs: (seconds + 20) * 1000 });
    try {
        const report = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
        return Math.round(report.end.sum_received.bits_per_second / 1e5) / 10;
    } catch {
        return 0;
    }
}

async function pings(lab: Lab, target: string, count: number): Promise<number[]> {
    const r = await inNs(lab.world.ns("guest"), `ping -n -c ${count} -i 0.2 -W 2 ${target}`, { allowFail: true, timeoutMs: (count + 10) * 1000 });
    return [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
}

/** The download with the server dropping "fragmentation needed"; bounded at `limit` seconds. */
async function pmtuDownload(lab: Lab, limit: number): Promise<PathFigures["pmtuDownload"]> {
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

async function measure(lab: Lab, tunnelAddress: string, tunnelPort: number, opts: { runs: number; seconds: number; pings: number; pmtuLimit: number }): Promise<PathFigures> {
    const internet: number[] = [];
    const tunnel: number[] = [];
    for (let i = 0; i < opts.runs; i++) {
        internet.push(await iperf(lab, LAB.server.v4, 5201, opts.seconds));
        tunnel.push(await iperf(lab, tunnelAddress, tunnelPort, opts.seconds));
    }
    const pi = await pings(lab, LAB.server.v4, opts.pings);
    const pt = await pings(lab, tunnelAddress, opts.pings);
    return {
        throughputMbps: { internet: median(internet), tunnel: median(tunnel), runs: opts.runs, seconds: opts.seconds },
        latencyMs: { internet: { median: median(pi) ?? 0, p95: p95(pi) ?? 0 }, tunnel: { median: median(pt) ?? 0, p95: p95(pt) ?? 0 }, pings: opts.pings },
        pmtuDownload: await pmtuDownload(lab, opts.pmtuLimit),
    };
}

/** An iperf3 server on the gateway box, on its tunnel address: the "tunnel only" end. */
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

/** Our KVM site: the lab stack without the QEMU guest, the namespace guest as the client. */
export async function ours(lab: Lab, opts: Parameters<typeof measure>[3]): Promise<{ figures: PathFigures; walls: Walls }> {
    const sites = (lab.baseOverrides().sites as Record<string, unknown>[]).map((s) => ({
        ...s,
        networks: (s.networks as Record<string, unknown>[]).map((n) => ({ ...n, guests: [] })),
    }));
    const applied = await lab.apply({ sites });
    const reapplied = await lab.apply({ sites });
    await startNamespaceGuest(lab.world, "virbr-wg");
    // The gateway admits nothing from the tunnel; open the bench's iperf3 port for this run only.
    await lab.world.hostExec("cloud", "nft insert rule inet wgexit_gateway input iifname wg0 tcp dport 5202 accept; nft insert rule inet wgexit_gateway input iifname wg0 icmp type echo-request accept");
    const stop = await tunnelServer(lab, "10.66.0.1", 5202);
    let figures: PathFigures;
    try {
        figures = await measure(lab, "10.66.0.1", 5202, opts);
    } finally {
        await stop();
        await stopNamespaceGuest(lab.world);
    }
    const destroyed = await lab.apply({ sites }, true);
    return { figures, walls: { applyMs: applied.wallMs, reapplyMs: reapplied.wallMs, destroyMs: destroyed.wallMs } };
}

/**
 * The KVM seed, applied by hand from its text in the same world: wg-quick configs with its
 * PostUp rules (ens3 is the lab box's eth0), and a virt-manager-style routed network (MTU
 * 1500, libvirt DNS on). The per-guest `ip rule` is widened to the subnet, as the seed suggests.
 */
export async function seed(lab: Lab, opts: Parameters<typeof measure>[3]): Promise<PathFigures> {
    const w = lab.world;
    const dir = path.join(w.root, "seed");
    fs.mkdirSync(dir, { recursive: true });
    const key = async () => {
        const priv = (await run(["wg", "genkey"])).stdout.trim();
        return { priv, pub: (await run(["wg", "pubkey"], { input: priv })).stdout.trim() };
    };
    const [cloud, kvm] = [await key(), await key()];
    const cloudConf = path.join(dir, "wg1.conf");
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
    const kvmConf = path.join(dir, "wg1-kvm", "wg1.conf");
    fs.mkdirSync(path.dirname(kvmConf), { recursive: true });
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
    const wgQuick = (conf: string, action: "up" | "down") => `WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wg-quick ${action} ${conf}`;
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
    const stop = await tunnelServer(lab, "10.0.3.1", 5203);
    try {
        // The guest, as on the seed's network: default MTU 1500, an address from the subnet.
        const guest = w.ns("guest");
        await run(["ip", "link", "add", "g-nsguest", "netns", w.ns("kvm"), "type", "veth", "peer", "name", "eth0", "netns", guest]);
        await inNs(w.ns("kvm"), "ip link set g-nsguest master virbr-seed up");
        await inNs(guest, `ip link set eth0 up && ip addr add 192.168.100.150/24 dev eth0 && ip route add default via 192.168.100.1`);
        // STP on the seed's bridge: the port forwards after listening and learning.
        for (let i = 0; i < 60; i++) {
            if ((await inNs(guest, "ping -c 1 -W 1 192.168.100.1 >/dev/null", { allowFail: true })).code === 0) break;
        }
        return await measure(lab, "10.0.3.1", 5203, { ...opts, pmtuLimit: opts.pmtuLimit });
    } finally {
        await stop();
        await stopNamespaceGuest(w);
        await w.virsh("net-destroy seednet", true);
        await w.hostExec("kvm", wgQuick(kvmConf, "down"), true);
        await w.hostExec("cloud", `${wgQuick(cloudConf, "down")}; sysctl -qw net.ipv4.ip_forward=0`, true);
    }
}
