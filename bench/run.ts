// npm run bench [-- --quick]
// One run, on this machine: plan time under mocks as the estate grows (sites × guests), and,
// as root on Linux, the lab's data plane for our KVM site and for the KVM seed's hand-made
// configuration in the same world, plus the lab's wall time. Figures are medians and ratios;
// the benchmark never fails because of timing. --quick is CI's smoke run. Each section says
// on stderr when it starts and how long it took.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { labUnsupportedReason } from "../lab/cli";
import { Lab } from "../lab/lab";
import { phase } from "../lab/progress";
import { baseConfig, runProgram } from "../test/helpers/program";
import { ours, type PathFigures, seed, type Walls } from "./dataplane";

const quick = process.argv.includes("--quick");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ratio = (a: number, b: number) => (b > 0 ? Number((a / b).toFixed(2)) : null);
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

async function dataPlane(): Promise<{ skipped: string } | { ours: PathFigures; seed: PathFigures; walls: Walls }> {
    const reason = labUnsupportedReason();
    if (reason) {
        console.error(`[bench] data plane skipped: ${reason}`);
        return { skipped: reason };
    }
    const lab = await phase("data plane: building the lab world", () => Lab.start(), "bench");
    try {
        const opts = quick ? { runs: 1, seconds: 1, pings: 5, pmtuLimit: 10 } : { runs: 3, seconds: 5, pings: 40, pmtuLimit: 30 };
        // The seed first, on a fresh world: nothing learned by earlier flows can help it.
        const theirs = await phase("data plane: the KVM seed's configuration, applied by hand", () => seed(lab, opts), "bench");
        const mine = await phase("data plane: wgexit's KVM site (apply, measure, re-apply, destroy)", () => ours(lab, opts), "bench");
        return { ours: mine.figures, seed: theirs, walls: mine.walls };
    } finally {
        await phase("data plane: teardown", () => lab.destroy(), "bench");
    }
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
    const row = (label: string, a: PathFigures) =>
        `| ${label} | ${a.throughputMbps.internet} | ${a.throughputMbps.tunnel} | ${ratio(a.throughputMbps.internet, a.throughputMbps.tunnel)} | ${a.latencyMs.internet.median} / ${a.latencyMs.internet.p95} | ${a.latencyMs.tunnel.median} / ${a.latencyMs.tunnel.p95} | ${a.pmtuDownload.completed ? `completes in ${a.pmtuDownload.seconds} s` : `does not complete (${a.pmtuDownload.bytes} bytes in ${a.pmtuDownload.seconds} s)`} |`;
    lines.push(
        "",
        `| setup | guest → internet Mbit/s | guest → gateway (tunnel only) Mbit/s | internet / tunnel | ping internet ms (median / p95) | ping tunnel ms (median / p95) | 4 MB download, server drops "frag needed" |`,
        "| --- | --- | --- | --- | --- | --- | --- |",
        row("wgexit", d.ours),
        row("KVM seed, by hand", d.seed),
        "",
        `Ours against the seed, guest → internet throughput: ${ratio(d.ours.throughputMbps.internet, d.seed.throughputMbps.internet)}. ` +
            `Throughput is the median of ${d.ours.throughputMbps.runs} iperf3 runs of ${d.ours.throughputMbps.seconds} s; latency from ${d.ours.latencyMs.pings} pings.`,
        "",
        `Lab wall time: apply ${d.walls.applyMs} ms, re-apply ${d.walls.reapplyMs} ms, destroy ${d.walls.destroyMs} ms (one run).`,
    );
    return lines.join("\n");
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
