// Rounds and their statistics. Setups alternate within every round (ours, the seed, bare
// WireGuard, then again), so a change in the machine's load touches all of them alike; every
// figure is the median over rounds with its spread, and a ratio is taken per round.
import { inNs } from "../lab/exec";
import type { Lab } from "../lab/lab";
import { phase } from "../lab/progress";
import { LAB } from "../lab/world";
import { iperf, type Sample, type Setup, sample } from "./dataplane";

export interface Spread {
    median: number;
    min: number;
    max: number;
    /** Interquartile range. */
    q1: number;
    q3: number;
    n: number;
}

export function spread(xs: number[]): Spread | undefined {
    if (xs.length === 0) return undefined;
    const s = [...xs].sort((a, b) => a - b);
    const at = (p: number) => {
        const i = (s.length - 1) * p;
        const lo = Math.floor(i);
        return s[lo] + (s[Math.ceil(i)] - s[lo]) * (i - lo);
    };
    const r = (v: number) => Number(v.toFixed(3));
    return { median: r(at(0.5)), min: r(s[0]), max: r(s[s.length - 1]), q1: r(at(0.25)), q3: r(at(0.75)), n: s.length };
}

/** Per-round ratios a[i] / b[i]. */
export const ratios = (a: number[], b: number[]) => a.map((x, i) => x / b[i]).filter((x) => Number.isFinite(x));

/**
 * A ratio is a claim only when its rounds agree: when the interquartile range is wider than the
 * distance of the median from `against` (1 for "faster or slower than"), the noise could make
 * either claim, and the headline says so.
 */
export function verdict(s: Spread | undefined, against = 1): "too noisy" | "ok" {
    if (!s || s.n < 3) return "too noisy";
    return s.q3 - s.q1 > Math.abs(s.median - against) ? "too noisy" : "ok";
}

export interface RoundResults {
    setups: { name: string; samples: Sample[] }[];
    rounds: number;
    seconds: number;
    /** iperf3 runs per figure per round (their mean is the round's figure). */
    repeats: number;
}

/** `rounds` rounds; in each, every setup comes up, is measured once, and goes down. */
export async function alternate(lab: Lab, setups: Setup[], rounds: number, seconds: number, repeats: number, pingCount: number): Promise<RoundResults> {
    const results = setups.map((s) => ({ name: s.name, samples: [] as Sample[] }));
    for (let r = 0; r < rounds; r++) {
        // ABC, then CBA: no setup always follows the same one.
        const order = r % 2 === 0 ? setups.map((_, i) => i) : setups.map((_, i) => setups.length - 1 - i);
        for (const i of order) {
            const setup = setups[i];
            await phase(`round ${r + 1}/${rounds}: ${setup.name}`, async () => {
                await setup.up();
                try {
                    results[i].samples.push(await sample(lab, setup, seconds, pingCount, repeats));
                } finally {
                    await setup.down();
                }
            }, "bench");
        }
    }
    return { setups: results, rounds, seconds, repeats };
}

export interface Variant {
    name: string;
    /** What it gives up, if anything. */
    note: string;
    apply: HostCommand[];
    undo: HostCommand[];
}

/** A command and the lab host (or the guest namespace) it runs on. */
type HostCommand = [role: "kvm" | "cloud" | "guest", command: string];
const on = (role: HostCommand[0], command: string): HostCommand => [role, command];

// A role's `up` (and the site's `seal`) leave a table alone when what they would apply equals
// what they applied last, so a variant that edited rules in place restores them from scratch.
const RESTORE_GATEWAY = "nft delete table inet wgexit_gateway && /etc/wgexit/gateway/gateway.sh up";
const RESTORE_SITE = "nft delete table inet wgexit_site && /etc/wgexit/site/site.sh seal";

/** Each variant changes one thing on our running setup; measured against ours unchanged in alternation. */
export const VARIANTS: Variant[] = [
    {
        name: "guest MTU 1500 (MSS clamped, like the seed) instead of the tunnel MTU",
        note: "none: the clamp and PMTU discovery cover it",
        apply: [on("kvm", "ip link set g-nsguest mtu 1500 && ip link set virbr-wg mtu 1500"), on("guest", "ip link set eth0 mtu 1500")],
        undo: [on("guest", "ip link set eth0 mtu 1420"), on("kvm", "ip link set virbr-wg mtu 1420 && ip link set g-nsguest mtu 1420")],
    },
    {
        name: "site table removed (no site firewall)",
        note: "guest isolation, LAN protection, the tunnel's reach: the site's security",
        apply: [on("kvm", "nft delete table inet wgexit_site")],
        undo: [on("kvm", "/etc/wgexit/site/site.sh seal")],
    },
    {
        name: "gateway table replaced by a bare NAT rule",
        note: "the gateway's input and forward policy: its security",
        apply: [on("cloud", `nft delete table inet wgexit_gateway && nft -f - <<'EOF'\ntable ip wgexit_bench_nat {\n\tchain postrouting { type nat hook postrouting priority srcnat; oifname != "wg0" ip saddr { 10.66.0.0/24, 192.168.100.0/24 } masquerade; }\n}\nEOF`)],
        undo: [on("cloud", "nft delete table ip wgexit_bench_nat && /etc/wgexit/gateway/gateway.sh up")],
    },
    {
        name: "gateway forward chain: established connections accepted after the drops (the order before 2026-12-03)",
        note: "nothing; the old order also dropped the replies to a port forward's client on the gateway's own network",
        apply: [
            on(
                "cloud",
                "c='inet wgexit_gateway'; est=$(nft -a list chain $c forward | sed -n 's/^\\s*ct state established,related accept # handle \\([0-9]*\\)$/\\1/p'); last=$(nft -a list chain $c forward | sed -n 's/.*@local_nets_v6 counter.* # handle \\([0-9]*\\)$/\\1/p'); nft delete rule $c forward handle $est && nft add rule $c forward position $last ct state established,related accept",
            ),
        ],
        undo: [on("cloud", RESTORE_GATEWAY)],
    },
    {
        name: "MSS clamp removed (site and gateway)",
        note: "TCP through paths that drop ICMP \"fragmentation needed\"",
        apply: [
            on("kvm", "for c in forward_from_guests forward_from_tunnel; do nft -a list chain inet wgexit_site $c | sed -n 's/.*maxseg.* # handle \\([0-9]*\\)$/\\1/p' | xargs -r -n1 nft delete rule inet wgexit_site $c handle; done"),
            on("cloud", "nft -a list chain inet wgexit_gateway forward | sed -n 's/.*maxseg.* # handle \\([0-9]*\\)$/\\1/p' | xargs -r -n1 nft delete rule inet wgexit_gateway forward handle"),
        ],
        undo: [on("kvm", RESTORE_SITE), on("cloud", RESTORE_GATEWAY)],
    },
    {
        name: "policy routing by source (the seed's `from` rule) instead of by bridge",
        note: "a guest that spoofs another source falls through to the main table",
        apply: [on("kvm", "ip rule del pref 7700 iif virbr-wg && ip rule add pref 7700 from 192.168.100.0/24 lookup 7700")],
        undo: [on("kvm", "ip rule del pref 7700 from 192.168.100.0/24 lookup 7700 && ip rule add pref 7700 iif virbr-wg lookup 7700")],
    },
];

async function runAll(lab: Lab, commands: HostCommand[]): Promise<void> {
    for (const [role, command] of commands) {
        if (role === "guest") await inNs(lab.world.ns("guest"), command);
        else await lab.world.hostExec(role, command);
    }
}

export interface VariantResult {
    name: string;
    note: string;
    /** Per round: the variant's guest → internet throughput divided by ours in the same round. */
    ratio: Spread | undefined;
}

/** With ours up: each variant against ours, alternating, guest → internet throughput. */
export async function ablation(lab: Lab, ours: Setup, rounds: number, seconds: number): Promise<VariantResult[]> {
    const results: VariantResult[] = [];
    const internet = () => iperf(lab, ours.client, LAB.server.v4, 5201, seconds);
    for (const v of VARIANTS) {
        const base: number[] = [];
        const changed: number[] = [];
        await phase(`ablation: ${v.name} (${rounds} rounds)`, async () => {
            const measureChanged = async () => {
                await runAll(lab, v.apply);
                try {
                    changed.push(await internet());
                } finally {
                    await runAll(lab, v.undo);
                }
            };
            // Ours first in even rounds, the variant first in odd ones: neither always follows the other.
            for (let r = 0; r < rounds; r++) {
                if (r % 2 === 0) {
                    base.push(await internet());
                    await measureChanged();
                } else {
                    await measureChanged();
                    base.push(await internet());
                }
            }
        }, "bench");
        results.push({ name: v.name, note: v.note, ratio: spread(ratios(changed, base)) });
    }
    return results;
}
