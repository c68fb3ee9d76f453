// The lab engine: Pulumi mocks that behave like a small deployment engine.
// The real program (index.ts) runs unchanged; every @pulumi/command resource it
// registers is executed for real (remote commands over SSH into lab hosts), in the
// order the program's data dependencies impose. State persists between runs, so a
// second run with the same config executes nothing and a changed config executes
// only the difference, following @pulumi/command 1.2 semantics:
//   - no prior state            -> create
//   - triggers changed          -> replace (delete with the old state, then create;
//                                  every host step in this program is deleteBeforeReplace)
//   - other inputs changed      -> update if an update command is given, else replace
//   - removed from the program  -> delete, in reverse creation order, from recorded state
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type * as pulumi from "@pulumi/pulumi";
import { type RunResult, run } from "./exec";

export interface StateEntry {
    key: string;
    type: string;
    name: string;
    id: string;
    inputs: Record<string, unknown>;
    outputs: Record<string, unknown>;
    seq: number;
}

export interface EngineState {
    seq: number;
    resources: StateEntry[];
}

export type Action = "create" | "update" | "replace" | "delete";

export interface Execution {
    action: Action;
    key: string;
    ms: number;
}

/** What the engine needs from the world it runs in. */
export interface EngineHooks {
    /** Runs a command on a host reached over SSH with the given connection. */
    ssh(connection: SshConnectionInputs, command: string): Promise<RunResult>;
    /** Runs a local command. */
    local(command: string): Promise<RunResult>;
    /** A cloud instance was created: deliver its user data as cloud-init would. */
    instanceCreated(kind: "oci" | "ovh", userData: string): Promise<void>;
    /** A cloud instance was deleted: the machine is gone. */
    instanceDeleted(kind: "oci" | "ovh"): Promise<void>;
    cloudAddresses: { v4: string; v6: string };
    /** Another stack's outputs, for a StackReference; undefined when there is no such stack. */
    stackOutputs(name: string): Record<string, unknown> | undefined;
}

export interface SshConnectionInputs {
    host: string;
    port?: number;
    user?: string;
    privateKey?: string;
    hostKey?: string;
}

const SECRET_SIG = "4dabf18193072939515e22adb298388d";

/** Removes Pulumi's secret wrappers, recursively. */
export function unwrap(value: unknown): unknown {
    if (Array.isArray(value)) return value.map(unwrap);
    if (value && typeof value === "object") {
        const obj = value as Record<string, unknown>;
        if (obj[SECRET_SIG] !== undefined && "value" in obj) return unwrap(obj.value);
        return Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, unwrap(v)]));
    }
    return value;
}

const COMMAND_FIELDS = ["create", "update", "delete", "connection", "environment", "stdin", "interpreter", "dir"];
const stable = (v: unknown) => JSON.stringify(v ?? null);

export class LabEngine implements pulumi.runtime.Mocks {
    readonly executions: Execution[] = [];
    readonly failures: string[] = [];
    private onFailure: () => void = () => undefined;
    /** Settles at the first failure. */
    readonly failed = new Promise<void>((resolve) => {
        this.onFailure = resolve;
    });
    private readonly seen = new Set<string>();
    private readonly state: EngineState;

    constructor(
        private readonly stateFile: string,
        private readonly hooks: EngineHooks,
    ) {
        this.state = fs.existsSync(stateFile) ? (JSON.parse(fs.readFileSync(stateFile, "utf8")) as EngineState) : { seq: 0, resources: [] };
    }

    fail(message: string): void {
        this.failures.push(message);
        this.onFailure();
    }

    private find(key: string): StateEntry | undefined {
        return this.state.resources.find((r) => r.key === key);
    }

    private save(): void {
        fs.mkdirSync(path.dirname(this.stateFile), { recursive: true });
        fs.writeFileSync(this.stateFile, JSON.stringify(this.state, null, 2));
    }

    /** Records a resource; an update keeps its place in creation order (deletes run newest first). */
    private record(entry: Omit<StateEntry, "seq">, keepSeq?: number): StateEntry {
        this.state.resources = this.state.resources.filter((r) => r.key !== entry.key);
        const full = { ...entry, seq: keepSeq ?? ++this.state.seq };
        this.state.resources.push(full);
        this.save();
        return full;
    }

    private forget(key: string): void {
        this.state.resources = this.state.resources.filter((r) => r.key !== key);
        this.save();
    }

    private async timed<T>(action: Action, key: string, f: () => Promise<T>): Promise<T> {
        const start = Date.now();
        try {
            return await f();
        } finally {
            this.executions.push({ action, key, ms: Date.now() - start });
        }
    }

    call(args: pulumi.runtime.MockCallArgs): Record<string, unknown> {
        switch (args.token) {
            case "oci:Identity/getAvailabilityDomains:getAvailabilityDomains":
                return { availabilityDomains: [{ id: "lab-ad-1", name: "Lab:AD-1", compartmentId: args.inputs.compartmentId }] };
            case "oci:Core/getImages:getImages":
                return { images: [{ id: "ocid1.image.oc1..labubuntu", displayName: "Canonical-Ubuntu-24.04-aarch64-2026.10.01-0", operatingSystem: "Canonical Ubuntu", operatingSystemVersion: "24.04" }] };
            case "ovh:CloudProject/getImages:getImages":
                return { images: [{ id: "lab-image-ubuntu", name: "Ubuntu 24.04", region: args.inputs.region }] };
            case "ovh:CloudProject/getFlavors:getFlavors":
                return { flavors: [{ id: "lab-flavor-d2-2", name: "d2-2", region: args.inputs.region, vcpus: 1, ram: 2048 }] };
            default:
                throw new Error(`lab engine: invoke ${args.token} is not mocked`);
        }
    }

    async newResource(args: pulumi.runtime.MockResourceArgs): Promise<{ id: string | undefined; state: Record<string, unknown> }> {
        const key = `${args.type}::${args.name}`;
        // A StackReference only reads the other stack's last outputs; nothing to record.
        if (args.type === "pulumi:pulumi:StackReference") {
            const name = String(args.inputs.name);
            const outputs = this.hooks.stackOutputs(name);
            if (!outputs) throw new Error(`unknown stack "${name}"`);
            return { id: name, state: { name, outputs, secretOutputNames: [] } };
        }
        this.seen.add(key);
        if (!args.custom) return { id: undefined, state: {} };
        const inputs = unwrap(args.inputs) as Record<string, unknown>;
        try {
            const entry = await this.apply(key, args.type, args.name, inputs);
            return { id: entry.id, state: entry.outputs };
        } catch (e) {
            this.fail(`${key}: ${(e as Error).message}`);
            throw e;
        }
    }

    private async apply(key: string, type: string, name: string, inputs: Record<string, unknown>): Promise<StateEntry> {
        const prior = this.find(key);
        if (type === "command:remote:Command" || type === "command:local:Command") {
            if (prior) {
                const triggersChanged = stable(prior.inputs.triggers) !== stable(inputs.triggers);
                const changed = COMMAND_FIELDS.some((f) => stable(prior.inputs[f]) !== stable(inputs[f]));
                if (!triggersChanged && !changed) return prior;
                if (!triggersChanged && inputs.update) {
                    const result = await this.timed("update", key, () => this.exec(type, inputs, inputs.update as string));
                    return this.record({ key, type, name, id: prior.id, inputs, outputs: { ...inputs, stdout: result.stdout, stderr: result.stderr } }, prior.seq);
                }
                await this.timed("replace", key, () => this.deleteEntry(prior));
            }
            const result = await this.timed(prior ? "replace" : "create", key, () => this.exec(type, inputs, inputs.create as string | undefined));
            return this.record({ key, type, name, id: `${name}-${Date.now()}`, inputs, outputs: { ...inputs, stdout: result.stdout, stderr: result.stderr } });
        }
        // Cloud instances: created once; later input changes are ignored by the program's ignoreChanges.
        if (type === "oci:Core/instance:Instance" || type === "ovh:CloudProject/instance:Instance") {
            if (prior) return prior;
            const kind = type.startsWith("oci") ? "oci" : "ovh";
            const userData = kind === "oci" ? Buffer.from(String((inputs.metadata as Record<string, string>).user_data), "base64").toString() : String(inputs.userData);
            await this.timed("create", key, () => this.hooks.instanceCreated(kind, userData));
            const { v4, v6 } = this.hooks.cloudAddresses;
            const outputs =
                kind === "oci"
                    ? { ...inputs, publicIp: v4, privateIp: "10.0.0.2", state: "RUNNING" }
                    : { ...inputs, addresses: [{ ip: v4, version: 4 }, { ip: v6, version: 6 }], status: "ACTIVE" };
            return this.record({ key, type, name, id: `lab-${kind}-instance`, inputs, outputs });
        }
        // Other cloud resources: no side effect in the lab; record them with plausible outputs.
        if (prior && stable(prior.inputs) === stable(inputs)) return prior;
        return this.record({ key, type, name, id: prior?.id ?? `${name}-id`, inputs, outputs: { ...inputs, ...computedOutputs(type, inputs) } });
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

    private async deleteEntry(entry: StateEntry): Promise<void> {
        if (entry.type === "command:remote:Command" || entry.type === "command:local:Command") {
            // Delete runs from recorded state: the old delete command and the old connection.
            await this.exec(entry.type, entry.inputs, entry.inputs.delete as string | undefined);
        } else if (entry.type === "oci:Core/instance:Instance") {
            await this.hooks.instanceDeleted("oci");
        } else if (entry.type === "ovh:CloudProject/instance:Instance") {
            await this.hooks.instanceDeleted("ovh");
        }
        this.forget(entry.key);
    }

    /** Deletes what the program no longer declares (all of it, for destroy), newest first. */
    async finish(destroyAll = false): Promise<void> {
        const stale = this.state.resources.filter((r) => destroyAll || !this.seen.has(r.key)).sort((a, b) => b.seq - a.seq);
        for (const entry of stale) {
            try {
                await this.timed("delete", entry.key, () => this.deleteEntry(entry));
            } catch (e) {
                this.fail(`delete ${entry.key}: ${(e as Error).message}`);
                return; // stop: later deletes may depend on this one
            }
        }
    }

    get resourceCount(): number {
        return this.state.resources.length;
    }
}

function computedOutputs(type: string, inputs: Record<string, unknown>): Record<string, unknown> {
    switch (type) {
        // Made once, then kept in the lab's state like the random provider keeps it in Pulumi's.
        case "random:index/randomBytes:RandomBytes": {
            const bytes = crypto.randomBytes(Number(inputs.length));
            return { base64: bytes.toString("base64"), hex: bytes.toString("hex") };
        }
        case "oci:Core/vcn:Vcn":
            return { ipv6cidrBlocks: ["2001:db8:10::/56"], defaultRouteTableId: "lab-rt", defaultSecurityListId: "lab-sl", defaultDhcpOptionsId: "lab-dhcp" };
        default:
            return {};
    }
}

/** SSH through the operator's namespace, like @pulumi/command's remote.Command. */
export function sshVia(ctlNamespace: string, keyDir: string) {
    return async (c: SshConnectionInputs, command: string): Promise<RunResult> => {
        const keyFile = path.join(keyDir, "engine-key");
        fs.writeFileSync(keyFile, `${String(c.privateKey ?? "").trimEnd()}\n`, { mode: 0o600 });
        const argv = [
            "ip", "netns", "exec", ctlNamespace,
            "ssh", "-i", keyFile, "-p", String(c.port ?? 22),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
            `${c.user ?? "root"}@${c.host}`, "--", command,
        ];
        return run(argv, { allowFail: true, timeoutMs: 600_000 });
    };
}
