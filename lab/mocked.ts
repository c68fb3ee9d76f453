// Running the real program (index.ts) under Pulumi mocks: shared by the lab engine's
// apply process and the unit tests' program runs. One run per process: the Pulumi
// runtime keeps per-process state.
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import type { RegistrationOptions } from "./engine";

// The config encoding lives with the config reader; the lab and the tests import it from here too.
export { encodeConfig } from "../components/config";

interface RegisterResourceRequest {
    getType(): string;
    getName(): string;
    getCustom(): boolean;
    getDependenciesList(): string[];
    getDeletebeforereplace(): boolean;
    getIgnorechangesList(): string[];
    getReplaceonchangesList(): string[];
}

/**
 * Wraps the mock monitor's registerResource (sdk/nodejs/runtime/mocks.ts MockMonitor) so the
 * options the SDK put in the request (sdk/nodejs/runtime/resource.ts prepareResource and
 * registerResource) reach the lab engine as they would reach the real one.
 */
function noteRegistrations(note: (type: string, name: string, options: RegistrationOptions) => void): void {
    const settings = require("@pulumi/pulumi/runtime/settings") as { getMonitor(): { registerResource(req: RegisterResourceRequest, callback: unknown): unknown } };
    const monitor = settings.getMonitor();
    const original = monitor.registerResource.bind(monitor);
    monitor.registerResource = (req, callback) => {
        note(req.getType(), req.getName(), {
            dependencies: req.getDependenciesList(),
            deleteBeforeReplace: req.getDeletebeforereplace(),
            ignoreChanges: req.getIgnorechangesList(),
            replaceOnChanges: req.getReplaceonchangesList(),
        });
        return original(req, callback);
    };
}

/** An output's value; in a preview, unknown parts stay unknown (pulumi.isUnknown) instead of never resolving. */
function promiseOf<T>(o: pulumi.Output<T>): Promise<T> {
    // OutputImpl.promise(withUnknowns) is internal (sdk/nodejs/output.ts), but it is what the
    // runtime itself uses to serialize stack outputs in a preview.
    return (o as unknown as { promise(withUnknowns: boolean): Promise<T> }).promise(true);
}

/**
 * Sets config and mocks, loads index.ts, and resolves its exports once every registration
 * has been answered. `abort` ends the wait early (a failed resource leaves its dependants'
 * outputs unresolved forever).
 */
export async function runProgramUnderMocks(
    mocks: pulumi.runtime.Mocks,
    config: Record<string, string>,
    opts: {
        stack: string;
        secretKeys: string[];
        abort?: Promise<void>;
        /** Filled with the names of secret exports. */
        secretOutputs?: string[];
        /** A preview (pulumi.runtime.isDryRun() is true; provider-computed values may be unknown). */
        preview?: boolean;
        /** Told each registration's resource options (the SDK's mocks do not pass them on). */
        onRegistration?: (type: string, name: string, options: RegistrationOptions) => void;
    },
): Promise<Record<string, unknown>> {
    const abort = opts.abort ?? new Promise<void>(() => undefined);
    pulumi.runtime.setAllConfig(config, opts.secretKeys);
    await pulumi.runtime.setMocks(mocks, "wgexit", opts.stack, opts.preview ?? false);
    if (opts.onRegistration) noteRegistrations(opts.onRegistration);
    // index.ts exports an async entry point, as Pulumi programs may: its result is the stack's outputs.
    const entry = require(path.join(__dirname, "..", "index")) as () => Promise<Record<string, unknown>>;
    const program = await Promise.race([entry(), abort.then(() => ({}) as Record<string, unknown>)]);
    const outputs: Record<string, unknown> = {};
    const exports = Promise.all(
        Object.entries(program).map(async ([k, v]) => {
            // Stack outputs may nest Outputs in plain objects; pulumi.output resolves them deeply.
            outputs[k] = await promiseOf(pulumi.output(v));
            if (opts.secretOutputs && (await pulumi.isSecret(pulumi.output(v)))) opts.secretOutputs.push(k);
        }),
    );
    await Promise.race([exports, abort]);
    // Internal to the SDK, but the only way to know every registration has been answered.
    const settings = require("@pulumi/pulumi/runtime/settings") as { waitForRPCs(): Promise<void> };
    await Promise.race([settings.waitForRPCs(), abort]);
    return outputs;
}
