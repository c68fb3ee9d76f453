// The lab engine's semantics, pinned against what the real engine and providers do (each rule
// cites its source in lab/engine.ts, lab/providers.ts and lab/propertyDiff.ts). The engine is
// driven directly, with hooks that record what would run on a host.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import type { ApplyResult } from "../../lab/apply";
import { type EngineHooks, type EngineOptions, keyOfUrn, LabEngine, type SshConnectionInputs } from "../../lab/engine";
import { previewMismatches } from "../../lab/lab";
import { applyIgnoreChanges, detailedDiff } from "../../lab/propertyDiff";
import { changeFor } from "../../lab/providers";

const REMOTE = "command:remote:Command";

class World {
    readonly ran: string[] = [];
    readonly stateFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "wgexit-engine-")), "state.json");
    running = 0;
    hooks: EngineHooks = {
        ssh: async (c: SshConnectionInputs, command: string) => {
            this.running++;
            await new Promise((r) => setTimeout(r, 30));
            this.running--;
            this.ran.push(`${c.host}: ${command}`);
            return { code: command === "fail" ? 1 : 0, stdout: `out of ${command}`, stderr: "" };
        },
        local: async () => ({ code: 0, stdout: "", stderr: "" }),
        instanceCreated: async (kind) => void this.ran.push(`${kind} instance created`),
        instanceDeleted: async (kind) => void this.ran.push(`${kind} instance deleted`),
        cloudAddresses: { v4: "203.0.113.10", v6: "2001:db8::10" },
        stackOutputs: () => undefined,
    };

    engine(options: EngineOptions = {}): LabEngine {
        return new LabEngine(this.stateFile, this.hooks, options);
    }
}

interface Resource {
    type?: string;
    name: string;
    inputs: Record<string, unknown>;
    dependsOn?: string[];
    ignoreChanges?: string[];
    deleteBeforeReplace?: boolean;
}

const urn = (name: string, type = REMOTE) => `urn:pulumi:lab::wgexit::wgexit:index:Site$${type}::${name}`;
const step = (name: string, create: string, extra: Record<string, unknown> = {}): Resource => ({ name, inputs: { connection: { host: "h1" }, create, delete: `undo ${create}`, ...extra }, deleteBeforeReplace: true });

/** Registers resources as the program would: each once its dependencies have answered. */
async function deploy(engine: LabEngine, resources: Resource[]): Promise<Map<string, { id: string | undefined; state: Record<string, unknown> }>> {
    const answers = new Map<string, Promise<{ id: string | undefined; state: Record<string, unknown> }>>();
    for (const r of resources) {
        const type = r.type ?? REMOTE;
        answers.set(
            r.name,
            Promise.all((r.dependsOn ?? []).map((d) => answers.get(d))).then(() => {
                engine.noteRegistration(type, r.name, { dependencies: (r.dependsOn ?? []).map((d) => urn(d)), deleteBeforeReplace: r.deleteBeforeReplace ?? false, ignoreChanges: r.ignoreChanges ?? [], replaceOnChanges: type === REMOTE ? ["triggers[*]"] : [] });
                return engine.newResource({ type, name: r.name, inputs: r.inputs, custom: true, provider: "", id: undefined } as unknown as pulumi.runtime.MockResourceArgs);
            }),
        );
    }
    await Promise.allSettled(answers.values());
    const out = new Map<string, { id: string | undefined; state: Record<string, unknown> }>();
    for (const [k, v] of answers) out.set(k, await v);
    return out;
}

const actions = (e: LabEngine) => e.executions.map((x) => `${x.action} ${x.key.split("::")[1]}`).sort();

describe("the lab engine", () => {
    it("runs independent steps at once, never more than --parallel", async () => {
        const world = new World();
        const engine = world.engine({ parallel: 2 });
        await deploy(engine, ["a", "b", "c", "d", "e"].map((n) => step(n, n)));
        assert.equal(engine.peakParallel, 2);
        const serial = new World();
        const one = serial.engine({ parallel: 1 });
        await deploy(one, ["a", "b", "c"].map((n) => step(n, n)));
        assert.equal(one.peakParallel, 1);
    });

    it("a changed command without `update` runs `create` again in place, no delete (pulumi-command Update)", async () => {
        const world = new World();
        await deploy(world.engine(), [step("a", "v1")]);
        const second = world.engine();
        await deploy(second, [step("a", "v2")]);
        assert.deepEqual(actions(second), ["update a"]);
        assert.deepEqual(world.ran, ["h1: v1", "h1: v2"]);
    });

    it("a changed connection host alone is an update on the new host: the old host is never cleaned", async () => {
        const world = new World();
        await deploy(world.engine(), [step("a", "v1")]);
        const second = world.engine();
        await deploy(second, [{ ...step("a", "v1"), inputs: { ...step("a", "v1").inputs, connection: { host: "h2" } } }]);
        assert.deepEqual(actions(second), ["update a"]);
        assert.deepEqual(world.ran, ["h1: v1", "h2: v1"]);
    });

    it("changed triggers replace: delete with the recorded state first (deleteBeforeReplace), then create", async () => {
        const world = new World();
        await deploy(world.engine(), [step("a", "v1", { triggers: [{ host: "h1" }] })]);
        const second = world.engine();
        await deploy(second, [{ ...step("a", "v2"), inputs: { connection: { host: "h2" }, create: "v2", delete: "undo v2", triggers: [{ host: "h2" }] } }]);
        assert.deepEqual(actions(second), ["replace a"]);
        assert.deepEqual(world.ran, ["h1: v1", "h1: undo v1", "h2: v2"]);
    });

    it("nothing changed: nothing runs", async () => {
        const world = new World();
        await deploy(world.engine(), [step("a", "v1"), step("b", "v1", { update: "u" })]);
        const second = world.engine();
        await deploy(second, [step("a", "v1"), step("b", "v1", { update: "u" })]);
        assert.deepEqual(second.executions, []);
    });

    it("deletes each resource after every resource that depends on it", async () => {
        const world = new World();
        await deploy(world.engine(), [step("base", "base"), { ...step("mid", "mid"), dependsOn: ["base"] }, { ...step("top", "top"), dependsOn: ["mid"] }, step("other", "other")]);
        const destroy = world.engine();
        await destroy.finish(true);
        const order = world.ran.slice(4);
        assert.ok(order.indexOf("h1: undo top") < order.indexOf("h1: undo mid") && order.indexOf("h1: undo mid") < order.indexOf("h1: undo base"), order.join(", "));
        assert.equal(destroy.resourceCount, 0);
    });

    it("stops starting steps after the first failure", async () => {
        const world = new World();
        const engine = world.engine({ parallel: 1 });
        await deploy(engine, [step("bad", "fail"), step("b", "b"), step("c", "c")]).catch(() => undefined);
        assert.equal(engine.failures.length, 1);
        assert.deepEqual(world.ran, ["h1: fail"]);
    });

    it("a preview runs and saves nothing; what a create computes is unknown, and the plan says what would run", async () => {
        const world = new World();
        await deploy(world.engine(), [step("a", "v1")]);
        const preview = world.engine({ preview: true });
        const answers = await deploy(preview, [step("a", "v2"), step("b", "v1")]);
        assert.deepEqual(world.ran, ["h1: v1"]);
        assert.deepEqual(preview.plan, { [`${REMOTE}::a`]: "update", [`${REMOTE}::b`]: "create" });
        assert.equal(answers.get("b")?.state.stdout, "04da6b54-80e4-46f7-96ec-b56ff0331ba9");
        assert.equal(answers.get("b")?.id, undefined);
        assert.equal(JSON.parse(fs.readFileSync(world.stateFile, "utf8")).resources.length, 1, "state untouched");
    });

    it("an unknown input in a preview counts as a change", async () => {
        const world = new World();
        await deploy(world.engine(), [step("a", "v1")]);
        const preview = world.engine({ preview: true });
        await deploy(preview, [{ ...step("a", "v1"), inputs: { ...step("a", "v1").inputs, create: pulumi.runtime.unknownValue } }]);
        assert.deepEqual(preview.plan, { [`${REMOTE}::a`]: "update" });
    });

    it("OCI instance: ignoreChanges pins the image; without it a new image rebuilds the disk in place", async () => {
        const instance = (image: string, ignoreChanges: string[]): Resource => ({
            type: "oci:Core/instance:Instance",
            name: "gw",
            inputs: { availabilityDomain: "AD-1", sourceDetails: { sourceType: "image", sourceId: image }, metadata: { user_data: Buffer.from("#cloud-config\n").toString("base64") } },
            ignoreChanges,
        });
        const world = new World();
        await deploy(world.engine(), [instance("img-1", ["metadata", "sourceDetails.sourceId"])]);
        const pinned = world.engine();
        await deploy(pinned, [instance("img-2", ["metadata", "sourceDetails.sourceId"])]);
        assert.deepEqual(pinned.executions, []);
        const unpinned = world.engine();
        await deploy(unpinned, [instance("img-2", [])]);
        assert.deepEqual(actions(unpinned), ["update gw"]);
        assert.deepEqual(world.ran.slice(1), ["oci instance deleted", "oci instance created"], "an in-place boot volume replacement is a new machine");
    });

    it("provider diffs: OVH instances have no update; OCI subnets replace on vcnId, update on displayName", () => {
        const diff = (a: Record<string, unknown>, b: Record<string, unknown>) => detailedDiff(a, b);
        assert.equal(changeFor("ovh:CloudProject/instance:Instance", diff({ name: "a" }, { name: "b" }), []), "replace");
        assert.equal(changeFor("oci:Core/subnet:Subnet", diff({ vcnId: "1" }, { vcnId: "2" }), []), "replace");
        assert.equal(changeFor("oci:Core/subnet:Subnet", diff({ displayName: "1" }, { displayName: "2" }), []), "update");
        assert.equal(changeFor("oci:Core/instance:Instance", diff({ metadata: { user_data: "a" } }, { metadata: { user_data: "b" } }), []), "replace");
        assert.equal(changeFor(REMOTE, diff({ triggers: ["a"] }, { triggers: ["b"] }), ["triggers[*]"]), "replace");
        assert.equal(changeFor(REMOTE, diff({ create: "a" }, { create: "b" }), ["triggers[*]"]), "update");
        assert.deepEqual([...diff({ triggers: [1, { host: "a" }] }, { triggers: [1, { host: "b" }] }).keys()], ["triggers[1].host"]);
        assert.deepEqual(applyIgnoreChanges({ a: { b: 1, c: 1 } }, { a: { b: 2, c: 2 } }, ["a.b"]), { a: { b: 1, c: 2 } });
    });

    it("keys come from URNs as the engine names resources (the type is the URN's last type)", () => {
        assert.equal(keyOfUrn("urn:pulumi:lab::wgexit::wgexit:index:KvmSite$command:remote:Command::site-home-key"), "command:remote:Command::site-home-key");
    });

    it("the preview check catches an update step the preview did not announce, and a different set of resources", () => {
        const result = (plan: ApplyResult["plan"], registered: string[], executions: ApplyResult["executions"] = []): ApplyResult => ({ executions, failures: [], outputs: {}, secretOutputs: [], plan, peakParallel: 0, registered, resourceCount: 0, wallMs: 0 });
        assert.deepEqual(previewMismatches(result({ a: "update" }, ["a"]), result({ a: "update" }, ["a"], [{ action: "update", key: "a", ms: 1 }])), []);
        assert.equal(previewMismatches(result({}, ["a"]), result({}, ["a"], [{ action: "update", key: "a", ms: 1 }])).length, 1);
        assert.equal(previewMismatches(result({ a: "update" }, ["a"]), result({}, ["a"], [{ action: "replace", key: "a", ms: 1 }])).length, 1);
        assert.equal(previewMismatches(result({}, ["a"]), result({}, ["a", "b"])).length, 1);
    });
});
