// npm run bench [-- --quick]
// One run, on this machine: plan time under mocks as the estate grows (sites × guests), and,
// as root on Linux, the lab's data plane: our KVM site, the KVM seed's hand-made configuration
// and bare WireGuard, alternating round by round; an ablation of our data plane; and apply time
// with 1 and 8 new guests. Figures are medians over rounds with their spread, ratios are taken
// per round; the benchmark never fails because of timing. --quick is CI's smoke run. Each
// section says on stderr when it starts and how long it took.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { labUnsupportedReason } from "../lab/cli";
import { Lab } from "../lab/lab";
import { phase } from "../lab/progress";
import { baseConfig, runProgram } from "../test/helpers/program";
import { type ApplyTime, applyTimes } from "./applyTime";
import { bareSetup, oursSetup, type PmtuDownload, pmtuDownload, type Setup, seedSetup, STREAMS, type Walls } from "./dataplane";
import { type FailoverTimes, failoverTimes } from "./failover";
import { CATEGORIES, type CpuProfile, profile, profileUnsupportedReason } from "./profile";
import { ablation, alternate, type RoundResults, ratios, type Spread, spread, type VariantResult, verdict } from "./rounds";

const quick = process.argv.includes("--quick");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const KEY = (i: number) => Buffer.alloc(32, (i % 250) + 1).toString("base64");

/** An estate of `sites` KVM sites with `guests` guests each. */
function estate(sites: number, guests: number) {
    return Array.from({ length: sites }, (_, i) => ({
        name: `site${i}`,
        connection: { host: `198.51.100.${100 + (i % 100)}` },
        networks: [
            {
                name: "wgnet",
                bridge: "virbr-wg",
                cidr: `172.${16 + Math.floor(i / 256)}.${i % 256}.0/24`,
                guests: Array.from({ length: guests }, (_, g) => ({ name: `vm${g}`, image: "/var/lib/libvirt/images/base.qcow2" })),
            },
        ],
    }));
}

async function planTimes() {
    const sizes: [number, number][] = quick ? [[1, 1], [2, 2]] : [[1, 1], [10, 10], [50, 10]];
    const runs = quick ? 1 : 3;
    const rows: { sites: number; guestsPerSite: number; guests: number; medianMs: number; runs: number; resources: number; remoteCommands: number }[] = [];
    for (const [sites, guests] of sizes) {
        const times: number[] = [];
        let resources = 0;
        let commands = 0;
        await phase(`plan time for ${sites} sites × ${guests} guests (${runs} run${runs > 1 ? "s" : ""})`, async () => {
            for (let r = 0; r < runs; r++) {
                const start = process.hrtime.bigint();
                const run = await runProgram({ ...baseConfig("existing"), peers: [{ name: "phone", publicKey: KEY(0) }], sites: estate(sites, guests) });
                times.push(Number(process.hrtime.bigint() - start) / 1e6);
                resources = run.registrations.length;
                commands = run.registrations.filter((x) => x.type === "command:remote:Command").length;
            }
        }, "bench");
        rows.push({ sites, guestsPerSite: guests, guests: sites * guests, medianMs: Math.round(median(times)), runs, resources, remoteCommands: commands });
    }
    // Growth: what each extra guest costs between consecutive sizes; linear growth keeps it flat.
    return rows.map((row, i) => {
        const prev = rows[i - 1];
        return {
            ...row,
            resourcesPerGuest: Number((row.resources / row.guests).toFixed(2)),
            remoteCommandsPerGuest: Number((row.remoteCommands / row.guests).toFixed(2)),
            marginalMsPerGuest: prev ? Number(((row.medianMs - prev.medianMs) / (row.guests - prev.guests)).toFixed(1)) : null,
        };
    });
}

interface DataPlane {
    rounds: RoundResults;
    pmtu: { ours: PmtuDownload; seed: PmtuDownload };
    ablation: VariantResult[];
    profiles: { rate: number; seconds: number; ours: CpuProfile[]; seed: CpuProfile[] } | { skipped: string };
    applyTimes: ApplyTime[] | { skipped: string };
    failover: FailoverTimes;
    walls: Partial<Walls>;
    load: { before: number[]; after: number[] };
}

async function withSetup<T>(setup: Setup, work: () => Promise<T>): Promise<T> {
    await setup.up();
    try {
        return await work();
    } finally {
        await setup.down();
    }
}

async function dataPlane(): Promise<{ skipped: string } | DataPlane> {
    const reason = labUnsupportedReason();
    if (reason) {
        console.error(`[bench] data plane skipped: ${reason}`);
        return { skipped: reason };
    }
    const lab = await phase("data plane: building the lab world", () => Lab.start(), "bench");
    try {
        const o = quick
            ? { rounds: 1, seconds: 1, repeats: 1, pings: 5, ablationRounds: 1, ablationSeconds: 1, profileRounds: 1, profileRate: 20, profileSeconds: 2, pmtuLimit: 10, guests: [1, 2], failoverRounds: 1 }
            : { rounds: 8, seconds: 4, repeats: 3, pings: 20, ablationRounds: 4, ablationSeconds: 3, profileRounds: 3, profileRate: 150, profileSeconds: 5, pmtuLimit: 30, guests: [1, 8], failoverRounds: 3 };
        const load = { before: os.loadavg().map((l) => Number(l.toFixed(2))), after: [] as number[] };
        const walls: Partial<Walls> = {};
        const [ours, seed, bare] = [oursSetup(lab, walls), seedSetup(lab), bareSetup(lab)];
        // The seed first, on a fresh world: nothing learned by earlier flows can help it.
        const pmtu = {
            seed: await phase("data plane: 4 MB download, the seed", () => withSetup(seed, () => pmtuDownload(lab, o.pmtuLimit)), "bench"),
            ours: await phase("data plane: 4 MB download, ours", () => withSetup(ours, () => pmtuDownload(lab, o.pmtuLimit)), "bench"),
        };
        const rounds = await alternate(lab, [ours, seed, bare], o.rounds, o.seconds, o.repeats, o.pings);
        const variants = await withSetup(ours, () => ablation(lab, ours, o.ablationRounds, o.ablationSeconds));
        const profiles = await cpuProfiles(lab, ours, seed, o.profileRounds, o.profileRate, o.profileSeconds);
        // After the data-plane measurements (the guests of the next phase load the machine on purpose).
        load.after = os.loadavg().map((l) => Number(l.toFixed(2)));
        const applied = await applyTimes(lab, o.guests);
        const failover = await phase(`failover with two gateways (${o.failoverRounds} round${o.failoverRounds > 1 ? "s" : ""})`, () => failoverTimes(lab, o.failoverRounds), "bench");
        return { rounds, pmtu, ablation: variants, profiles, applyTimes: applied, failover, walls, load };
    } finally {
        await phase("data plane: teardown", () => lab.destroy(), "bench");
    }
}

/** Ours and the seed profiled in turn (ours, seed, then seed, ours, …), `rounds` each. */
async function cpuProfiles(lab: Lab, ours: Setup, seed: Setup, rounds: number, rate: number, seconds: number): Promise<DataPlane["profiles"]> {
    const reason = await profileUnsupportedReason();
    if (reason) {
        console.error(`[bench] CPU profile skipped: ${reason}`);
        return { skipped: reason };
    }
    const out = { rate, seconds, ours: [] as CpuProfile[], seed: [] as CpuProfile[] };
    for (let r = 0; r < rounds; r++) {
        for (const [name, setup] of r % 2 === 0 ? ([["ours", ours], ["seed", seed]] as const) : ([["seed", seed], ["ours", ours]] as const)) {
            out[name].push(await phase(`CPU profile ${r + 1}/${rounds}: ${setup.name} at ${rate} Mbit/s`, () => withSetup(setup, () => profile(lab, setup, rate, seconds)), "bench"));
        }
    }
    return out;
}

/** Plan time against estate size, as a small SVG line chart. */
function chart(plan: Awaited<ReturnType<typeof planTimes>>): string {
    const [w, h, pad] = [480, 280, 48];
    const maxX = Math.max(...plan.map((p) => p.guests));
    const maxY = Math.max(...plan.map((p) => p.medianMs)) * 1.1;
    const x = (v: number) => pad + (v / maxX) * (w - 2 * pad);
    const y = (v: number) => h - pad - (v / maxY) * (h - 2 * pad);
    const points = plan.map((p) => `${x(p.guests).toFixed(1)},${y(p.medianMs).toFixed(1)}`).join(" ");
    const labels = plan
        .map((p) => `<circle cx="${x(p.guests).toFixed(1)}" cy="${y(p.medianMs).toFixed(1)}" r="3"/><text x="${x(p.guests).toFixed(1)}" y="${(y(p.medianMs) - 8).toFixed(1)}" text-anchor="middle">${p.sites}×${p.guestsPerSite}: ${p.medianMs} ms</text>`)
        .join("\n  ");
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="11">
  <text x="${w / 2}" y="16" text-anchor="middle" font-size="13">Plan time under mocks against estate size (guests)</text>
  <line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" stroke="black"/>
  <line x1="${pad}" y1="${pad}" x2="${pad}" y2="${h - pad}" stroke="black"/>
  <text x="${w / 2}" y="${h - 12}" text-anchor="middle">guests (sites × guests per site), 0 – ${maxX}</text>
  <text x="14" y="${h / 2}" transform="rotate(-90 14 ${h / 2})" text-anchor="middle">median ms</text>
  <polyline fill="none" stroke="steelblue" stroke-width="2" points="${points}"/>
  ${labels}
</svg>
`;
}

function markdown(results: {
    machine: { cores: number; memoryGiB: number; node: string };
    quick: boolean;
    plan: Awaited<ReturnType<typeof planTimes>>;
    dataPlane: Awaited<ReturnType<typeof dataPlane>>;
}): string {
    const m = results.machine;
    const lines = [
        `Machine: ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}.${results.quick ? " Quick mode (smoke run): figures are not meaningful." : ""}`,
        "",
        "| sites × guests | plan time (median) | runs | resources | remote commands | per guest: resources / commands | marginal ms per guest |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        ...results.plan.map((p) => `| ${p.sites} × ${p.guestsPerSite} | ${p.medianMs} ms | ${p.runs} | ${p.resources} | ${p.remoteCommands} | ${p.resourcesPerGuest} / ${p.remoteCommandsPerGuest} | ${p.marginalMsPerGuest ?? "-"} |`),
    ];
    const d = results.dataPlane;
    if ("skipped" in d) {
        lines.push("", `Data plane: skipped (${d.skipped}).`);
        return lines.join("\n");
    }
    lines.push("", ...dataPlaneMarkdown(d));
    return lines.join("\n");
}

const fmt = (x: number | undefined, digits = 1) => (x === undefined ? "-" : x.toFixed(digits));
const range = (s: Spread | undefined, digits = 1) => (s ? `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})` : "-");
const iqr = (s: Spread | undefined) => (s ? `${s.median.toFixed(2)} (IQR ${s.q1.toFixed(2)}–${s.q3.toFixed(2)}, range ${s.min.toFixed(2)}–${s.max.toFixed(2)}, ${s.n} rounds)` : "-");
const headline = (s: Spread | undefined) => (verdict(s) === "ok" ? iqr(s) : `too noisy to claim a difference: ${iqr(s)}`);

function dataPlaneMarkdown(d: DataPlane): string[] {
    const by = (name: string) => d.rounds.setups.find((s) => s.name === name)?.samples ?? [];
    const [ours, seed, bare] = [by("wgexit"), by("KVM seed, by hand"), by("bare WireGuard (ceiling)")];
    const internet = (xs: typeof ours) => xs.map((x) => x.internet);
    const tunnel = (xs: typeof ours) => xs.map((x) => x.tunnel);
    const pathShare = (x: (typeof ours)[number]) => x.internet / x.tunnel;
    const pingMedian = (xs: number[][]) => spread(xs.map((p) => spread(p)?.median ?? Number.NaN).filter((x) => !Number.isNaN(x)));
    const row = (name: string, xs: typeof ours, pmtu?: PmtuDownload) =>
        `| ${name} | ${range(spread(internet(xs)))} | ${range(spread(tunnel(xs)))} | ${range(spread(ratios(internet(xs), tunnel(xs))), 2)} | ${range(pingMedian(xs.map((x) => x.pingInternetMs)), 3)} | ${range(pingMedian(xs.map((x) => x.pingTunnelMs)), 3)} | ${range(spread(xs.map((x) => x.gatewaySocketDropPct ?? Number.NaN).filter((x) => !Number.isNaN(x))), 1)} | ${pmtu ? (pmtu.completed ? `completes in ${pmtu.seconds} s` : `does not complete (${pmtu.bytes} bytes in ${pmtu.seconds} s)`) : "-"} |`;
    const latencyAdded = (a: typeof ours) => spread(a.map((x, i) => (spread(x.pingTunnelMs)?.median ?? 0) - (spread(bare[i]?.pingTunnelMs ?? [])?.median ?? 0)));
    const lines = [
        `Data plane: ${d.rounds.rounds} rounds; in each, ours, the seed and bare WireGuard come up, are measured (iperf3 to each end with ${STREAMS} streams, ${d.rounds.repeats} × ${d.rounds.seconds} s after 1 s left out, averaged; pings) and go down, in alternating order. Each cell: median over rounds (min–max). Load average (1, 5, 15 min) before: ${d.load.before.join(", ")}; after the ablation: ${d.load.after.join(", ")}.`,
        "",
        `| setup | guest → internet Mbit/s | → tunnel end Mbit/s | internet ÷ tunnel | ping internet ms | ping tunnel end ms | tunnel packets the gateway's socket dropped, % | 4 MB download, server drops "frag needed" |`,
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        row("wgexit", ours, d.pmtu.ours),
        row("KVM seed, by hand", seed, d.pmtu.seed),
        row("bare WireGuard, KVM host → gateway box (ceiling; to the internet with one NAT rule)", bare),
        "",
        "Headline ratios, taken per round (median, interquartile range, range):",
        "",
        `- ours ÷ seed, guest → internet: ${headline(spread(ratios(internet(ours), internet(seed))))}`,
        `- ours, guest → internet ÷ guest → tunnel end: ${iqr(spread(ratios(internet(ours), tunnel(ours))))}; bare WireGuard with one NAT rule, internet ÷ tunnel end (the cheapest way out: NAT and the lab's longer path, no firewall): ${iqr(spread(ratios(internet(bare), tunnel(bare))))}; ours ÷ that, per round: ${iqr(spread(ratios(ours.map(pathShare), bare.map(pathShare))))}`,
        `- ours ÷ bare WireGuard, to the tunnel end: ${iqr(spread(ratios(tunnel(ours), tunnel(bare))))}; the seed ÷ bare: ${iqr(spread(ratios(tunnel(seed), tunnel(bare))))}`,
        `- latency we add over bare WireGuard, to the tunnel end: ${range(latencyAdded(ours), 3)} ms (the seed: ${range(latencyAdded(seed), 3)} ms)`,
        "",
        "Ablation: each change alone on our running setup, against ours unchanged in alternation (guest → internet throughput, variant ÷ ours per round):",
        "",
        "| change | variant ÷ ours | what it gives up |",
        "| --- | --- | --- |",
        ...d.ablation.map((v) => `| ${v.name} | ${range(v.ratio, 2)} | ${v.note} |`),
        "",
        ...profileMarkdown(d.profiles),
    ];
    if ("skipped" in d.applyTimes) {
        lines.push("", `Apply time: skipped (${d.applyTimes.skipped}).`);
    } else {
        const [one, many] = [d.applyTimes[0], d.applyTimes[d.applyTimes.length - 1]];
        lines.push(
            "",
            "| new guests in one apply | apply (from empty) | steps at once (peak) | each guest's step | the guests' QEMU CPU by the end of the apply | destroy |",
            "| --- | --- | --- | --- | --- | --- |",
            ...d.applyTimes.map((a) => `| ${a.guests} | ${a.applyMs} ms | ${a.peakParallel} | ${a.guestStepMs[0]}–${a.guestStepMs[1]} ms | ${a.guestCpuMs} ms | ${a.destroyMs} ms |`),
            "",
            `Apply time, ${many.guests} guests ÷ ${one.guests}: ${(many.applyMs / one.applyMs).toFixed(2)} (one run each).`,
        );
    }
    const f = d.failover;
    lines.push(
        "",
        `Failover with two gateways (lab two-cloud stack; a probe every ${f.settings.probeIntervalSeconds} s, down after ${f.settings.failAfter} missed, back after ${f.settings.failbackAfterSeconds} s answering), the first cloud cut off and restored, ${f.failover.length} round${f.failover.length > 1 ? "s" : ""}: failover ${range(spread(f.failover.filter(Number.isFinite)), 1)} s, failback ${range(spread(f.failback.filter(Number.isFinite)), 1)} s${f.failover.some(Number.isNaN) || f.failback.some(Number.isNaN) ? " (some rounds got no answer in 40 s: see results.json)" : ""} (from the cut, or the return, to the guest's first answer from the other gateway's address).`,
    );
    lines.push("", `Lab wall time (ours, first round): apply ${d.walls.applyMs} ms, re-apply ${d.walls.reapplyMs} ms, destroy ${d.walls.destroyMs} ms.`);
    return lines;
}

function profileMarkdown(p: DataPlane["profiles"]): string[] {
    if ("skipped" in p) return [`CPU profile: skipped (${p.skipped}).`];
    const cell = (xs: CpuProfile[], f: (x: CpuProfile) => number, digits: number) => range(spread(xs.map(f)), digits);
    const row = (name: string, xs: CpuProfile[]) => `| ${name} | ${cell(xs, (x) => x.mbit, 0)} | ${CATEGORIES.map((c) => cell(xs, (x) => x.shares[c], 1)).join(" | ")} |`;
    const netfilter = ratios(p.ours.map((x) => x.shares.netfilter), p.seed.map((x) => x.shares.netfilter));
    return [
        `Where the CPU goes: guest → internet at ${p.rate} Mbit/s for ${p.seconds} s (a rate both carry), every CPU sampled by perf; % of the busy samples, by kernel function (netfilter, bridge, routing) or process (the rest of wireguard-go's), median over ${p.ours.length} rounds (min–max):`,
        "",
        `| setup | Mbit/s reached | ${CATEGORIES.join(" | ")} |`,
        `| --- | --- | ${CATEGORIES.map(() => "---").join(" | ")} |`,
        row("wgexit", p.ours),
        row("KVM seed, by hand", p.seed),
        "",
        `Netfilter share, ours ÷ the seed: ${iqr(spread(netfilter))}.`,
    ];
}

async function main() {
    const machine = { cores: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` };
    const plan = await planTimes();
    const dp = await dataPlane();
    const results = { date: new Date().toISOString(), quick, machine, plan, dataPlane: dp };
    const dir = path.join(__dirname, quick ? "out" : "");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "results.json"), `${JSON.stringify(results, null, 2)}\n`);
    const md = markdown(results);
    fs.writeFileSync(path.join(dir, "results.md"), `${md}\n`);
    fs.writeFileSync(path.join(dir, "plan-time.svg"), chart(plan));
    console.log(md);
}

main().then(
    () => process.exit(0),
    (e) => {
        console.error(e);
        process.exit(1);
    },
);
