// Where the CPU goes, at a rate every setup carries: perf samples every CPU while iperf3 sends
// guest → internet at a fixed rate, and each sample is put in one category by its kernel
// function (netfilter, bridge, routing) or its process (wireguard-go). Shares of the busy
// samples compare the setups' per-packet work; throughput at saturation cannot, on a machine
// whose speed moves by ±10 % from one minute to the next.
import { execFile, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { inNs } from "../lab/exec";
import type { Lab } from "../lab/lab";
import { LAB } from "../lab/world";
import type { Setup } from "./dataplane";

export const CATEGORIES = ["netfilter", "bridge", "routing", "wireguard-go"] as const;
export type Category = (typeof CATEGORIES)[number];

/** A sample's category by kernel symbol; the rest of wireguard-go's samples (its crypto, its system calls) by process. */
const BY_SYMBOL: [Category, RegExp][] = [
    ["netfilter", /^(nft_|__nft_|nf_|__nf_|ipt_|ip6t_|xt_|ipv4_conntrack|ipv6_conntrack|hash_conntrack|tcp_in_window)/],
    ["bridge", /^(br_|__br_)/],
    ["routing", /^(fib_|__fib_|fib4_|fib6_|ip_route_|__ip_route_|ip6_route_|rt_|ip_forward)/],
];
const IDLE = /^(pv_native_safe_halt|default_idle|cpu_idle|poll_idle|acpi_idle|intel_idle|mwait_idle|do_idle)/;

export interface CpuProfile {
    /** The rate iperf3 reached, Mbit/s. */
    mbit: number;
    busySamples: number;
    /** Percent of the busy samples, by category. */
    shares: Record<Category, number>;
}

/** Why the profile cannot be taken here, or undefined. */
export async function profileUnsupportedReason(): Promise<string | undefined> {
    try {
        await promisify(execFile)("perf", ["record", "-e", "cpu-clock", "-a", "-o", "/dev/null", "--", "true"]);
        return undefined;
    } catch (e) {
        return `perf cannot sample every CPU here (${String((e as Error).message).split("\n")[0]}); install linux-perf and run as root`;
    }
}

/** Categorises `perf script` lines of the form "comm ip symbol". */
export function categorise(lines: string[]): { busy: number; counts: Record<Category, number> } {
    const counts = Object.fromEntries(CATEGORIES.map((c) => [c, 0])) as Record<Category, number>;
    let busy = 0;
    for (const line of lines) {
        const m = /^\s*(.+?)\s+[0-9a-f]{4,}\s+(\S+)/.exec(line);
        if (!m || IDLE.test(m[2])) continue;
        busy++;
        const bySymbol = BY_SYMBOL.find(([, re]) => re.test(m[2]));
        if (bySymbol) counts[bySymbol[0]]++;
        else if (m[1] === "wireguard-go") counts["wireguard-go"]++;
    }
    return { busy, counts };
}

/** One profile of a setup that is up: `seconds` of iperf3 at `mbit`, every CPU sampled at 999 Hz. */
export async function profile(lab: Lab, setup: Setup, mbit: number, seconds: number): Promise<CpuProfile> {
    const data = path.join(lab.world.root, "bench-perf.data");
    const perf = spawn("perf", ["record", "-q", "-e", "cpu-clock", "-a", "-F", "999", "-o", data, "--", "sleep", String(seconds)], { stdio: "ignore" });
    const exited = new Promise((resolve) => perf.on("exit", resolve));
    let r: Awaited<ReturnType<typeof inNs>>;
    try {
        r = await inNs(lab.world.ns(setup.client), `iperf3 -c ${LAB.server.v4} -p 5201 -b ${mbit}M -t ${seconds} -J`, { allowFail: true, timeoutMs: (seconds + 20) * 1000 });
    } finally {
        await exited;
    }
    const script = await promisify(execFile)("perf", ["script", "-i", data, "-F", "comm,ip,sym"], { maxBuffer: 1 << 28 });
    fs.rmSync(data, { force: true });
    const { busy, counts } = categorise(script.stdout.split("\n"));
    let reached = 0;
    try {
        reached = (JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e6;
    } catch {
        // iperf3 failed: the rate stays 0 and the table shows it.
    }
    const share = (n: number) => Number(((100 * n) / Math.max(1, busy)).toFixed(2));
    return { mbit: Math.round(reached), busySamples: busy, shares: Object.fromEntries(CATEGORIES.map((c) => [c, share(counts[c])])) as Record<Category, number> };
}
