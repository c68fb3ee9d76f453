// The lab engine: Pulumi mocks that behave like the deployment engine and the providers this
// program uses. The real program (index.ts) runs unchanged; every @pulumi/command resource it
// registers is executed for real (over SSH into lab hosts). Each behaviour is taken from the
// real source (pulumi/pulumi v3.259, pulumi/pulumi-command v1.2.1, the bridged OCI and OVH
// providers; see lab/providers.ts and lab/propertyDiff.ts):
//   - a step starts when the program registers its resource, which the SDK does once the
//     resource's inputs and dependsOn have resolved; independent steps run in parallel, at most
//     `parallel` at once (pkg/cmd/pulumi/operations/up.go: defaultParallel = 4 × CPUs;
//     pkg/resource/deploy/step_executor.go: a pool of workers);
//   - the step comes from a diff of every input (propertyDiff.ts) after ignoreChanges, and the
//     provider's rules (providers.ts changeFor): same, update or replace;
//   - update runs the new `update` command, or `create` again when there is none
//     (pulumi-command provider/pkg/provider/remote/commandController.go `Update`);
//   - replace with deleteBeforeReplace deletes first, from the recorded state, then creates
//     (pkg/resource/deploy/step_generator.go); without it the old one is deleted at the end;
//   - what the program no longer declares is deleted at the end, each resource only after
//     every resource that depends on it (step_generator.go GenerateDeletes/ScheduleDeletes),
//     independent deletes in parallel;
//   - the first failure stops new steps; steps already running finish (step_executor.go).
//   - preview (pulumi preview, and the pass `pulumi up` makes first) executes nothing and
//     saves nothing: a resource being created or replaced has its provider-computed outputs
//     unknown (commandController.go `Create` on DryRun returns no stdout); inputs that are
//     unknown count as changed.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type * as pulumi from "@pulumi/pulumi";
import { type RunResult, run } from "./exec";
import { applyIgnoreChanges, containsUnknown, detailedDiff, isUnknown, touches } from "./propertyDiff";
import { type Change, changeFor, computedNames, computedOnCreate, invoke, isCommand, REBUILDS_INSTANCE } from "./providers";

export interface StateEntry {
    key: string;
    type: string;
    name: string;
    id: string;
    inputs: Record<string, unknown>;
    outputs: Record<string, unknown>;
    /** Keys of the resources this one depends on: it is deleted before them. */
    dependencies: string[];
    deleteBeforeReplace: boolean;
}

export interface EngineState {
    resources: StateEntry[];
}

export type Action = "create" | "update" | "replace" | "delete";

export interface Execution {
    action: Action;
    key: string;
    ms: number;
}

/** The resource options the engine acts on, as the SDK sends them (RegisterResourceRequest). */
export interface RegistrationOptions {
    dependencies: string[];
    deleteBeforeReplace: boolean;
    ignoreChanges: string[];
    replaceOnChanges: string[];
}

/** Another stack's outputs as the engine reads them for a StackReference. */
export interface StackOutputsRead {
    outputs: Record<string, unknown>;
    secretOutputNames: string[];
}

/** What the engine needs from the world it runs in. */
export interface EngineHooks {
    /** Runs a command on a host reached over SSH with the given connection. */
    ssh(connection: SshConnectionInputs, command: string): Promise<RunResult>;
    /** Runs a local command. */
    local(command: string): Promise<RunResult>;
    /** A cloud instance was created (or its disk rebuilt): deliver its user data as cloud-init would. */
    instanceCreated(kind: "oci" | "ovh", userData: string): Promise<void>;
    /** A cloud instance was deleted (or its disk rebuilt): the machine is gone. */
    instanceDeleted(kind: "oci" | "ovh"): Promise<void>;
    cloudAddresses: { v4: string; v6: string };
    /** Another stack's outputs, for a StackReference; undefined when there is no such stack. */
    stackOutputs(name: string): StackOutputsRead | undefined;
}

export interface SshConnectionInputs {
    host: string;
    port?: number;
    user?: string;
    privateKey?: string;
    privateKeyPassword?: string;
    hostKey?: string;
}

export interface EngineOptions {
    /** A preview: plan only. */
    preview?: boolean;
    /** Steps at once; the engine's default is 4 × the CPU count. */
    parallel?: number;
    /** The clouds have published newer images since the last run. */
    newerImages?: boolean;
}

/** What a preview says it would do, by resource key. */
export type Plan = Record<string, Exclude<Change, "same"> | "create" | "delete">;

const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270";
/** The wire form of an unknown value (sdk/nodejs/runtime/rpc.ts unknownValue). */
const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/** Removes Pulumi's secret wrappers, recursively; unknowns stay unknown. */
export function unwrap(value: unknown): unknown {
    if (isUnknown(value)) return value;
    if (Array.isArray(value)) return value.map(unwrap);
    if (value && typeof value === "object") {
        const obj = value as Record<string, unknown>;
        if (obj[SECRET_SIG] !== undefined && "value" in obj) return unwrap(obj.value);
        return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, unwrap(v)]));
    }
    return value;
}

/** `urn:pulumi:stack::project::parent$type::name` → the lab's key `type::name`. */
export function keyOfUrn(urn: string): string {
    const parts = urn.split("::");
    const name = parts.slice(3).join("::");
    const type = parts[2].split("$").pop() as string;
    return `${type}::${name}`;
}

class Semaphore {
    private waiting: (() => void)[] = [];
    private free: number;
    constructor(size: number) {
        this.free = size;
    }
    async run<T>(f: () => Promise<T>): Promise<T> {
        if (this.free > 0) this.free--;
        else await new Promise<void>((resolve) => this.waiting.push(resolve));
        try {
            return await f();
        } finally {
            const next = this.waiting.shift();
            if (next) next();
            else this.free++;
        }
    }
}

/** lab/apply.ts's exit code for a deployment that ran and failed (its result file says why). */
export const EXIT_FAILED = 2;

/** A step's failure, already recorded when the step ended (before another step may start). */
class StepFailed extends Error {}

/** A step not started because an earlier one failed (the engine reports only the first error). */
class NotRun extends StepFailed {
    constructor() {
        super("not run: an earlier step failed");
    }
}

export const DEFAULT_PARALLEL = 4 * os.cpus().length;

export class LabEngine implements pulumi.runtime.Mocks {
    readonly executions: Execution[] = [];
    readonly failures: string[] = [];
    /** The steps planned (preview) or taken (apply), by key. */
    readonly plan: Plan = {};
    /** The most steps that ran at once. */
    peakParallel = 0;
    private running = 0;
    private onFailure: () => void = () => undefined;
    /** Settles at the first failure. */
    readonly failed = new Promise<void>((resolve) => {
        this.onFailure = resolve;
    });
    private readonly seen = new Set<string>();
    private readonly registrations = new Map<string, RegistrationOptions>();
    /** Replaced resources whose old instance is deleted at the end (no deleteBeforeReplace). */
    private readonly pendingDeletes: StateEntry[] = [];
    private readonly state: EngineState;
    private readonly pool: Semaphore;
    readonly preview: boolean;

    constructor(
        private readonly stateFile: string,
        private readonly hooks: EngineHooks,
        private readonly options: EngineOptions = {},
    ) {
        this.state = fs.existsSync(stateFile) ? (JSON.parse(fs.readFileSync(stateFile, "utf8")) as EngineState) : { resources: [] };
        this.preview = options.preview ?? false;
        this.pool = new Semaphore(options.parallel ?? DEFAULT_PARALLEL);
    }

    fail(message: string): void {
        this.failures.push(message);
        this.onFailure();
    }

    /** Called by the mock monitor with each registration's options, before newResource. */
    noteRegistration(type: string, name: string, options: RegistrationOptions): void {
        this.registrations.set(`${type}::${name}`, options);
    }

    private find(key: string): StateEntry | undefined {
        return this.state.resources.find((r) => r.key === key);
    }

    private save(): void {
        if (this.preview) return;
        fs.mkdirSync(path.dirname(this.stateFile), { recursive: true });
        fs.writeFileSync(this.stateFile, JSON.stringify(this.state, null, 2));
    }

    private record(entry: StateEntry): StateEntry {
        const at = this.state.resources.findIndex((r) => r.key === entry.key);
        if (at >= 0) this.state.resources[at] = entry;
        else this.state.resources.push(entry);
        this.save();
        return entry;
    }

    /** Forgets one recorded resource (by id: a replaced one's successor has the same key). */
    private forget(entry: StateEntry): void {
        this.state.resources = this.state.resources.filter((r) => r.key !== entry.key || r.id !== entry.id);
        this.save();
    }

    /** One step on the worker pool; preview only records the plan. */
    private async step<T>(action: Action, key: string, f: () => Promise<T>): Promise<T | undefined> {
        this.plan[key] = action;
        if (this.preview) return undefined;
        return this.pool.run(async () => {
            if (this.failures.length) throw new NotRun();
            this.peakParallel = Math.max(this.peakParallel, ++this.running);
            const start = Date.now();
            try {
                return await f();
            } catch (e) {
                this.fail(`${key}: ${(e as Error).message}`);
                throw new StepFailed((e as Error).message);
            } finally {
                this.running--;
                this.executions.push({ action, key, ms: Date.now() - start });
            }
        });
    }

    call(args: pulumi.runtime.MockCallArgs): Record<string, unknown> {
        return invoke(args, this.options.newerImages ?? false);
    }

    async newResource(args: pulumi.runtime.MockResourceArgs): Promise<{ id: string | undefined; state: Record<string, unknown> }> {
        const key = `${args.type}::${args.name}`;
        // A StackReference reads the other stack's last outputs, its secret ones as secrets.
        if (args.type === "pulumi:pulumi:StackReference") {
            const name = String(args.inputs.name);
            const read = this.hooks.stackOutputs(name);
            if (!read) throw new Error(`unknown stack "${name}"`);
            const outputs = Object.fromEntries(
                Object.entries(read.outputs).map(([k, v]) => [k, read.secretOutputNames.includes(k) ? { [SECRET_SIG]: SECRET_VALUE, value: v } : v]),
            );
            return { id: name, state: { name, outputs, secretOutputNames: read.secretOutputNames } };
        }
        this.seen.add(key);
        if (!args.custom) return { id: undefined, state: {} };
        const options = this.registrations.get(key) ?? { dependencies: [], deleteBeforeReplace: false, ignoreChanges: [], replaceOnChanges: [] };
        const inputs = unwrap(args.inputs) as Record<string, unknown>;
        try {
            const entry = await this.apply(key, args.type, args.name, inputs, options);
            return { id: entry.id || undefined, state: entry.outputs };
        } catch (e) {
            if (!(e instanceof StepFailed)) this.fail(`${key}: ${(e as Error).message}`);
            throw e;
        }
    }

    private async apply(key: string, type: string, name: string, news: Record<string, unknown>, options: RegistrationOptions): Promise<StateEntry> {
        const prior = this.find(key);
        const dependencies = options.dependencies.map(keyOfUrn);
        const base = { key, type, name, dependencies, deleteBeforeReplace: options.deleteBeforeReplace };
        if (!prior) {
            if (this.preview) return this.planned("create", base, news);
            const outputs = await this.step("create", key, () => this.create(type, news));
            return this.record({ ...base, id: newId(name), inputs: news, outputs: outputs ?? {} });
        }
        const inputs = applyIgnoreChanges(prior.inputs, news, options.ignoreChanges);
        const diff = detailedDiff(prior.inputs, inputs);
        const change = changeFor(type, diff, options.replaceOnChanges);
        if (change === "same") {
            // Dependencies are refreshed in state even when nothing runs.
            return this.preview ? prior : this.record({ ...prior, dependencies });
        }
        if (this.preview) return this.planned(change, { ...base, id: prior.id, prior }, inputs);
        if (change === "update") {
            const outputs = await this.step("update", key, () => this.update(prior, inputs, diff));
            return this.record({ ...base, id: prior.id, inputs, outputs: outputs ?? prior.outputs });
        }
        // Replace. The lab has one box per cloud: an instance is always gone before its successor.
        const deleteFirst = options.deleteBeforeReplace || /instance:Instance$/.test(type);
        const outputs = await this.step("replace", key, async () => {
            if (deleteFirst) await this.delete(prior);
            else this.pendingDeletes.push(prior);
            return this.create(type, inputs);
        });
        return this.record({ ...base, id: newId(name), inputs, outputs: outputs ?? {} });
    }

    /** A preview's answer: what is known now, and unknown for what the provider will compute. */
    private planned(action: Exclude<Change, "same"> | "create", entry: { key: string; type: string; name: string; id?: string; prior?: StateEntry }, inputs: Record<string, unknown>): StateEntry {
        this.plan[entry.key] = action;
        const unknowns = Object.fromEntries(computedNames(entry.type).map((n) => [n, UNKNOWN]));
        const known = action === "update" && !isCommand(entry.type) ? { ...entry.prior?.outputs, ...inputs } : { ...inputs, ...unknowns };
        return {
            key: entry.key,
            type: entry.type,
            name: entry.name,
            // A resource being created has no id yet: the SDK reads "" as unknown in a preview.
            id: action === "update" ? (entry.id ?? "") : "",
            inputs,
            outputs: containsUnknown(inputs) ? { ...known, ...unknowns } : known,
            dependencies: [],
            deleteBeforeReplace: false,
        };
    }

    private async create(type: string, inputs: Record<string, unknown>): Promise<Record<string, unknown>> {
        if (isCommand(type)) {
            const r = await this.exec(type, inputs, inputs.create as string | undefined);
            return { ...inputs, stdout: r.stdout, stderr: r.stderr };
        }
        const kind = instanceKind(type);
        if (kind) await this.hooks.instanceCreated(kind, userDataOf(kind, inputs));
        return { ...inputs, ...computedOnCreate(type, inputs, this.hooks.cloudAddresses) };
    }

    private async update(prior: StateEntry, inputs: Record<string, unknown>, diff: ReturnType<typeof detailedDiff>): Promise<Record<string, unknown>> {
        if (isCommand(prior.type)) {
            // commandController.go Update: `update` when given, else `create` again, on the new inputs.
            const r = await this.exec(prior.type, inputs, (inputs.update ?? inputs.create) as string | undefined);
            return { ...inputs, stdout: r.stdout, stderr: r.stderr };
        }
        const kind = instanceKind(prior.type);
        if (kind && touches(diff, REBUILDS_INSTANCE[prior.type] ?? [])) {
            // An in-place boot volume replacement: to everything on the disk, a new machine.
            await this.hooks.instanceDeleted(kind);
            await this.hooks.instanceCreated(kind, userDataOf(kind, inputs));
        }
        return { ...prior.outputs, ...inputs };
    }

    private exec(type: string, inputs: Record<string, unknown>, script: string | undefined): Promise<RunResult> {
        if (!script) return Promise.resolve({ code: 0, stdout: "", stderr: "" });
        if (type === "command:local:Command") return this.checked(this.hooks.local(script), script);
        return this.checked(this.hooks.ssh(inputs.connection as SshConnectionInputs, script), script);
    }

    private async checked(p: Promise<RunResult>, script: string): Promise<RunResult> {
        const r = await p;
        if (r.code !== 0) throw new Error(`exit ${r.code}\n--- command\n${script.slice(0, 300)}\n--- stderr\n${r.stderr.slice(-3000)}\n--- stdout\n${r.stdout.slice(-1000)}`);
        return r;
    }

    /** Deletes one resource with its recorded inputs (pulumi-command: the old `delete`, the old connection). */
    private async delete(entry: StateEntry): Promise<void> {
        if (isCommand(entry.type)) await this.exec(entry.type, entry.inputs, entry.inputs.delete as string | undefined);
        const kind = instanceKind(entry.type);
        if (kind) await this.hooks.instanceDeleted(kind);
        this.forget(entry);
    }

    /**
     * Deletes what the program no longer declares (everything, for destroy) and the old halves
     * of create-before-delete replacements: each one after every resource that depends on it,
     * independent ones in parallel. A failed delete stops the rest.
     */
    async finish(destroyAll = false): Promise<void> {
        const stale = [...this.pendingDeletes, ...this.state.resources.filter((r) => destroyAll || !this.seen.has(r.key))];
        if (this.preview) {
            for (const entry of stale) if (!this.seen.has(entry.key) || destroyAll) this.plan[entry.key] = "delete";
            return;
        }
        const done = new Map<StateEntry, Promise<void>>();
        const deleteAfterDependents = (entry: StateEntry): Promise<void> => {
            let p = done.get(entry);
            if (!p) {
                const dependents = stale.filter((other) => other !== entry && other.dependencies.includes(entry.key));
                p = Promise.all(dependents.map(deleteAfterDependents)).then(async () => {
                    await this.step("delete", entry.key, () => this.delete(entry));
                });
                done.set(entry, p);
            }
            return p;
        };
        const results = await Promise.allSettled(stale.map(deleteAfterDependents));
        // Each failed delete was recorded by its step; anything else is the engine's own fault.
        for (const r of results) if (r.status === "rejected" && !(r.reason instanceof StepFailed)) this.fail(`delete: ${(r.reason as Error).message}`);
    }

    /** Every resource the program registered (components too), by key. */
    get registered(): string[] {
        return [...this.seen].sort();
    }

    get resourceCount(): number {
        return this.state.resources.length;
    }
}

function newId(name: string): string {
    return `${name}-${crypto.randomBytes(4).toString("hex")}`;
}

function instanceKind(type: string): "oci" | "ovh" | undefined {
    if (type === "oci:Core/instance:Instance") return "oci";
    if (type === "ovh:CloudProject/instance:Instance") return "ovh";
    return undefined;
}

function userDataOf(kind: "oci" | "ovh", inputs: Record<string, unknown>): string {
    return kind === "oci" ? Buffer.from(String((inputs.metadata as Record<string, string>).user_data), "base64").toString() : String(inputs.userData);
}

/**
 * SSH through the operator's namespace, as @pulumi/command's remote.Command connects
 * (provider/pkg/provider/remote/connection.go): the key parsed as given (an encrypted key needs
 * privateKeyPassword, like Go's ssh.ParsePrivateKey), and with hostKey set, that key and no other.
 */
export function sshVia(ctlNamespace: string, keyDir: string) {
    const keyFiles = new Map<string, Promise<string>>();
    const keyFileFor = (privateKey: string, password: string | undefined): Promise<string> => {
        const id = crypto.createHash("sha256").update(`${privateKey}\0${password ?? ""}`).digest("hex").slice(0, 16);
        let file = keyFiles.get(id);
        if (!file) {
            file = (async () => {
                const keyFile = path.join(keyDir, `engine-key-${id}`);
                fs.writeFileSync(keyFile, `${privateKey.trimEnd()}\n`, { mode: 0o600 });
                // Without a password the key must open with none; with one, it is opened with it.
                const opened = await run(["ssh-keygen", "-p", "-P", password ?? "", "-N", "", "-f", keyFile], { allowFail: true });
                if (opened.code !== 0) {
                    fs.rmSync(keyFile, { force: true });
                    throw new Error(password === undefined ? "ssh: this private key is passphrase protected" : "x509: decryption password incorrect");
                }
                return keyFile;
            })();
            keyFiles.set(id, file);
        }
        return file;
    };
    return async (c: SshConnectionInputs, command: string): Promise<RunResult> => {
        let keyFile: string;
        try {
            keyFile = await keyFileFor(String(c.privateKey ?? ""), c.privateKeyPassword);
        } catch (e) {
            return { code: 255, stdout: "", stderr: `failed to parse the private key: ${(e as Error).message}` };
        }
        const port = c.port ?? 22;
        const hostOptions = c.hostKey
            ? (() => {
                  const knownHosts = path.join(keyDir, `known-hosts-${crypto.createHash("sha256").update(`${c.host}:${port}:${c.hostKey}`).digest("hex").slice(0, 16)}`);
                  fs.writeFileSync(knownHosts, `${port === 22 ? c.host : `[${c.host}]:${port}`} ${c.hostKey.trim()}\n`);
                  return ["-o", "StrictHostKeyChecking=yes", "-o", `UserKnownHostsFile=${knownHosts}`];
              })()
            : ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"];
        const argv = [
            "ip", "netns", "exec", ctlNamespace,
            "ssh", "-i", keyFile, "-p", String(port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", ...hostOptions,
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
            `${c.user ?? "root"}@${c.host}`, "--", command,
        ];
        return run(argv, { allowFail: true, timeoutMs: 600_000 });
    };
}
