// Config exactly as the Pulumi CLI hands it: the CLI's rules (lab/pulumiCli.ts, ported from
// pulumi/pulumi pkg/workspace/config.go) pinned, and every example stack run through them and
// then through the program, with and without the injected defaults.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { CliConfigError, cliConfig, type Project, readProject } from "../../lab/pulumiCli";
import { PEER_KEY, type ProgramRun, runProgram, TEST_SSH_PRIVATE_KEY, TEST_SSH_PUBLIC_KEY } from "../helpers/program";

const REPO = path.join(__dirname, "..", "..");

const project: Project = {
    name: "demo",
    config: {
        needed: { type: "string" },
        also: { type: "integer" },
        port: { type: "integer", default: 22 },
        names: { type: "array", items: { type: "string" }, default: [] },
        token: { type: "string", secret: true },
        "aws:region": { type: "string" },
    },
};

describe("the Pulumi CLI's config rules", () => {
    it("a declared key without a default is required, in the CLI's words", () => {
        assert.throws(() => cliConfig(project, "dev", { "demo:token": "t" }, ["demo:token"]), new CliConfigError("Stack 'dev' is missing configuration values 'also' and 'needed'"));
        assert.throws(() => cliConfig(project, "dev", { "demo:also": 1, "demo:token": "t" }, ["demo:token"]), new CliConfigError("Stack 'dev' is missing configuration value 'needed'"));
    });

    it("keys of another namespace are never required", () => {
        const { config } = cliConfig(project, "dev", { "demo:needed": "x", "demo:also": 2, "demo:token": "t" }, ["demo:token"]);
        assert.equal(config["aws:region"], undefined);
    });

    it("every declared default is injected, as the program's text", () => {
        const { config, secretKeys } = cliConfig(project, "dev", { "demo:needed": "x", "demo:also": 2, "demo:token": "t" }, ["demo:token"]);
        assert.deepEqual(config, { "demo:needed": "x", "demo:also": "2", "demo:token": "t", "demo:port": "22", "demo:names": "[]" });
        assert.deepEqual(secretKeys, ["demo:token"]);
    });

    it("a secret key stored in plain text stops the CLI", () => {
        assert.throws(() => cliConfig(project, "dev", { "demo:needed": "x", "demo:also": 2, "demo:token": "t" }), /Stack 'dev' with configuration key 'token' must be encrypted as it's secret/);
    });

    it("a value of the wrong type stops the CLI", () => {
        assert.throws(() => cliConfig(project, "dev", { "demo:needed": "x", "demo:also": "two", "demo:token": "t" }, ["demo:token"]), /configuration key 'also' must be of type 'integer'/);
        assert.throws(() => cliConfig(project, "dev", { "demo:needed": "x", "demo:also": 2, "demo:token": "t", "demo:names": [1] }, ["demo:token"]), /key 'names' must be of type 'array<string>'/);
    });

    it("this project's Pulumi.yaml passes the CLI's own checks, and only sshPrivateKey is required", () => {
        assert.throws(() => cliConfig(readProject(), "any", {}), new CliConfigError("Stack 'any' is missing configuration value 'sshPrivateKey'"));
        const { config } = cliConfig(readProject(), "any", { "wgexit:sshPrivateKey": TEST_SSH_PRIVATE_KEY }, ["wgexit:sshPrivateKey"]);
        assert.equal(config["wgexit:gatewayStack"], "");
        assert.equal(config["wgexit:existing"], "{}");
    });
});

/** A stack file's `<placeholders>` filled in, as a user would fill them. */
function filledStack(file: string): Record<string, unknown> {
    const fills: [RegExp, string][] = [
        [/<ssh-ed25519 AAAA\.\.\.[^>]*>/g, TEST_SSH_PUBLIC_KEY],
        [/<44-character base64 public key>/g, PEER_KEY],
        [/publicKey: SET-BY-THE-LAB/g, `publicKey: ${PEER_KEY}`],
        [/SET-BY-THE-LAB/g, "run-1"],
        [/<acme>/g, "acme"],
        [/<ocid1\.compartment\.oc1\.\.your-compartment>/g, "ocid1.compartment.oc1..aaaaexample"],
        [/<([^<>\s]+)>/g, "$1"],
    ];
    let text = fs.readFileSync(path.join(REPO, file), "utf8");
    for (const [re, to] of fills) text = text.replace(re, to);
    assert.doesNotMatch(text, /<[^>]*>/, `${file}: a placeholder left`);
    const values = (parseYaml(text) as { config: Record<string, unknown> }).config;
    return Object.fromEntries(Object.entries({ ...values, "wgexit:sshPrivateKey": TEST_SSH_PRIVATE_KEY }).filter(([k]) => k.startsWith("wgexit:")).map(([k, v]) => [k.slice(7), v]));
}

// What each example stack references, as its counterpart would publish it.
const GATEWAY_OUTPUTS = {
    gatewayPublicKey: "R2F0ZXdheVB1YmxpY0tleUZvclRlc3RzT25seTAwMDA=",
    gatewayEndpoint: "198.51.100.10:51820",
    gatewayAddress: "198.51.100.10",
    tunnel: { mtu: 1420, listenPort: 51820 },
    peerAddresses: { home: { addressV4: "10.77.0.2", addressV6: "fd66:77:77::2" } },
};
const STACK_OUTPUTS: Record<string, Record<string, Record<string, unknown>>> = {
    "Pulumi.prod.yaml": { "acme/wgexit/prod-home": { tunnelPeers: [] } },
    "Pulumi.prod-home.yaml": { "acme/wgexit/prod": GATEWAY_OUTPUTS },
};

const resources = (run: ProgramRun) =>
    run.registrations
        .map((r) => ({ type: r.type, name: r.name, inputs: JSON.stringify(r.inputs) }))
        .sort((a, b) => `${a.type}::${a.name}`.localeCompare(`${b.type}::${b.name}`));

describe("every example stack under the CLI's rules", () => {
    for (const file of ["Pulumi.dev.yaml", "Pulumi.prod.yaml", "Pulumi.prod-home.yaml", "Pulumi.lab.yaml", "Pulumi.multi.yaml"]) {
        it(`${file}: the CLI accepts it, and the program registers the same resources with or without the injected defaults`, async () => {
            const stack = filledStack(file);
            const name = path.basename(file, ".yaml").slice("Pulumi.".length);
            const values = Object.fromEntries(Object.entries(stack).map(([k, v]) => [`wgexit:${k}`, v]));
            assert.doesNotThrow(() => cliConfig(readProject(), name, values, ["wgexit:sshPrivateKey"]));
            const refs = STACK_OUTPUTS[file] ?? {};
            const [asCli, asGiven] = await Promise.all([runProgram(stack, name, refs, { asCli: true }), runProgram(stack, name, refs)]);
            assert.ok(asCli.registrations.some((r) => r.type === "command:remote:Command"), "the program registered its host steps");
            assert.deepEqual(resources(asCli), resources(asGiven));
            assert.deepEqual(asCli.outputs, asGiven.outputs);
        });
    }
});
