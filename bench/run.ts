// npm run bench [-- --quick]
// A first benchmark: plan time under mocks as the peer list grows, and (as root on Linux)
// lab wall time for apply, re-apply and destroy. Figures are ratios from one run; it
// never fails because of timing. Data-plane figures arrive with the benchmark issue.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { labUnsupportedReason } from "../lab/cli";
import { gatewayScenario, Lab } from "../lab/lab";
import { baseConfig, runProgram } from "../test/helpers/program";

const quick = process.argv.includes("--quick");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function peers(n: number) {
    return Array.from({ length: n }, (_, i) => ({
        name: `peer${i}`,
        publicKey: Buffer.alloc(32, i + 1).toString("base64"),
        allowedIps: [`172.20.${i}.0/24`],
    }));
}

async function planTimes() {
    const sizes = quick ? [1, 10] : [1, 10, 50];
    const runs = quick ? 1 : 3;
    const rows = [];
    for (const n of sizes) {
        const times: number[] = [];
        let resources = 0;
        let commands = 0;
        for (let r = 0; r < runs; r++) {
            const start = process.hrtime.bigint();
            const run = await runProgram({ ...baseConfig("oci"), peers: peers(n) });
            times.push(Number(process.hrtime.bigint() - start) / 1e6);
            resources = run.registrations.length;
            commands = run.registrations.filter((x) => x.type === "command:remote:Command").length;
        }
        rows.push({ peers: n, medianMs: Math.round(median(times)), runs, resources, remoteCommands: commands });
    }
    return rows;
}

async function labTimes() {
    const reason = labUnsupportedReason();
    if (reason) return { skipped: reason };
    const lab = await Lab.start();
    try {
        const t0 = Date.now();
        await gatewayScenario(lab, "existing");
        const total = Date.now() - t0;
        const failed = lab.checks.filter((c) => !c.pass).length;
        return { scenarioMs: total, checks: lab.checks.length, failed };
    } finally {
        await lab.destroy();
    }
}

async function main() {
    const machine = { cores: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` };
    const plan = await planTimes();
    const lab = await labTimes();
    const base = plan[0].medianMs;
    const results = { date: new Date().toISOString(), quick, machine, plan: plan.map((p) => ({ ...p, ratioToOnePeer: Number((p.medianMs / base).toFixed(2)) })), lab };
    const dir = path.join(__dirname, quick ? "out" : "");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "results.json"), `${JSON.stringify(results, null, 2)}\n`);
    const md = [
        `Machine: ${machine.cores} cores, ${machine.memoryGiB} GiB, Node ${machine.node}. ${quick ? "Quick mode (smoke run)." : ""}`,
        "",
        "| peers | plan time (median) | runs | resources | remote commands | ratio to 1 peer |",
        "| --- | --- | --- | --- | --- | --- |",
        ...results.plan.map((p) => `| ${p.peers} | ${p.medianMs} ms | ${p.runs} | ${p.resources} | ${p.remoteCommands} | ${p.ratioToOnePeer} |`),
    ].join("\n");
    fs.writeFileSync(path.join(dir, "results.md"), `${md}\n`);
    console.log(md);
    console.log(`\nlab: ${JSON.stringify(lab)}`);
}

main().then(
    () => process.exit(0),
    (e) => {
        console.error(e);
        process.exit(1);
    },
);
