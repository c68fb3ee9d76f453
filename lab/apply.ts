// One lab deployment, in its own process so the program's module state is fresh:
//   node --import tsx lab/apply.ts JOB.json
// Runs index.ts under the lab engine (or, with destroy, deletes everything in state)
// and writes what it executed to the job's result file.
import * as fs from "node:fs";
import { cloudInitAsScript } from "./cloudinit";
import { type EngineHooks, LabEngine, sshVia } from "./engine";
import { run } from "./exec";
import { runProgramUnderMocks } from "./mocked";

export interface ApplyJob {
    stack: string;
    config: Record<string, string>;
    secretKeys: string[];
    stateFile: string;
    resultFile: string;
    destroy: boolean;
    ctlNamespace: string;
    workDir: string;
    /** The lab box that plays the cloud instance, reached with the lab's own key. */
    cloudBox: { host: string; keyFile: string };
    cloudAddresses: { v4: string; v6: string };
    /** Outputs of the other stacks this one may reference (split layout), by stack name. */
    stackRefs: Record<string, Record<string, unknown>>;
}

export interface ApplyResult {
    executions: { action: string; key: string; ms: number }[];
    failures: string[];
    outputs: Record<string, unknown>;
    resourceCount: number;
    wallMs: number;
}

async function main(): Promise<void> {
    const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8")) as ApplyJob;
    const started = Date.now();
    const ssh = sshVia(job.ctlNamespace, job.workDir);
    const asRoot = (command: string) =>
        ssh({ host: job.cloudBox.host, user: "root", privateKey: fs.readFileSync(job.cloudBox.keyFile, "utf8") }, command);
    const hooks: EngineHooks = {
        ssh,
        local: (command) => run(["sh", "-c", command], { allowFail: true, timeoutMs: 600_000 }),
        cloudAddresses: job.cloudAddresses,
        stackOutputs: (name) => job.stackRefs[name],
        async instanceCreated(_kind, userData) {
            const r = await asRoot(cloudInitAsScript(userData));
            if (r.code !== 0) throw new Error(`cloud-init payload failed (${r.code}):\n${r.stderr.slice(-3000)}`);
        },
        async instanceDeleted() {
            // A deleted VM takes everything with it; the lab box is reused, so wipe the role.
            await asRoot("if [ -x /etc/wgexit/gateway/gateway.sh ]; then /etc/wgexit/gateway/gateway.sh remove; fi");
        },
    };
    const engine = new LabEngine(job.stateFile, hooks);
    let outputs: Record<string, unknown> = {};
    process.on("unhandledRejection", (e) => engine.fail(`unhandled: ${(e as Error)?.message ?? e}`));

    if (job.destroy) {
        await engine.finish(true);
    } else {
        try {
            outputs = await runProgramUnderMocks(engine, job.config, { stack: job.stack, secretKeys: job.secretKeys, abort: engine.failed });
            if (!engine.failures.length) await engine.finish(false);
        } catch (e) {
            engine.fail((e as Error).message);
        }
    }
    const result: ApplyResult = { executions: engine.executions, failures: engine.failures, outputs, resourceCount: engine.resourceCount, wallMs: Date.now() - started };
    fs.writeFileSync(job.resultFile, JSON.stringify(result, null, 2));
    process.exit(0);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
