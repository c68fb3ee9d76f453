// One lab deployment, in its own process so the program's module state is fresh:
//   node --import tsx lab/apply.ts JOB.json
// Runs index.ts under the lab engine (or, with destroy, deletes everything in state)
// and writes what it executed (or, with preview, what it would) to the job's result file.
import * as fs from "node:fs";
import { cloudInitAsScript } from "./cloudinit";
import { type EngineHooks, EXIT_FAILED, LabEngine, type Plan, type StackOutputsRead, sshVia } from "./engine";
import { run } from "./exec";
import { runProgramUnderMocks } from "./mocked";

export interface ApplyJob {
    stack: string;
    config: Record<string, string>;
    secretKeys: string[];
    stateFile: string;
    resultFile: string;
    destroy: boolean;
    /** Plan only, as `pulumi preview` (and the first half of `pulumi up`). */
    preview: boolean;
    /** Steps at once (the engine's --parallel); absent: its default. */
    parallel?: number;
    /** The clouds have published newer images since the last run. */
    newerImages: boolean;
    ctlNamespace: string;
    workDir: string;
    /** The lab box that plays the cloud instance, reached with the lab's own key. */
    cloudBox: { host: string; keyFile: string };
    cloudAddresses: { v4: string; v6: string };
    /** Outputs of the other stacks this one may reference (split layout), by stack name. */
    stackRefs: Record<string, StackOutputsRead>;
}

export interface ApplyResult {
    executions: { action: string; key: string; ms: number }[];
    failures: string[];
    outputs: Record<string, unknown>;
    /** The names of the outputs that are secrets (what a StackReference reads as secretOutputNames). */
    secretOutputs: string[];
    /** What was planned (preview) or done (apply), by resource key. */
    plan: Plan;
    /** The most steps that ran at once. */
    peakParallel: number;
    /** Every resource the program registered, by key. */
    registered: string[];
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
    const engine = new LabEngine(job.stateFile, hooks, { preview: job.preview, parallel: job.parallel, newerImages: job.newerImages });
    let outputs: Record<string, unknown> = {};
    const secretOutputs: string[] = [];
    process.on("unhandledRejection", (e) => engine.fail(`unhandled: ${(e as Error)?.message ?? e}`));

    if (job.destroy) {
        await engine.finish(true);
    } else {
        try {
            outputs = await runProgramUnderMocks(engine, job.config, {
                stack: job.stack,
                secretKeys: job.secretKeys,
                abort: engine.failed,
                secretOutputs,
                preview: job.preview,
                onRegistration: (type, name, options) => engine.noteRegistration(type, name, options),
            });
            if (!engine.failures.length) await engine.finish(false);
        } catch (e) {
            engine.fail((e as Error).message);
        }
    }
    const result: ApplyResult = {
        executions: engine.executions,
        failures: engine.failures,
        outputs,
        secretOutputs,
        plan: engine.plan,
        peakParallel: engine.peakParallel,
        registered: engine.registered,
        resourceCount: engine.resourceCount,
        wallMs: Date.now() - started,
    };
    fs.writeFileSync(job.resultFile, JSON.stringify(result, null, 2));
    // A failed deployment leaves registrations pending, which the SDK's exit hook reports as
    // leaks (and turns into exit 1) only when the exit code is 0: say it failed, as Pulumi would.
    process.exit(result.failures.length ? EXIT_FAILED : 0);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
