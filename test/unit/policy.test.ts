// The policy pack, without the engine: each rule rejects a bad program and accepts the real
// one (index.ts under mocks, fed to the rules as the engine would).
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { PolicyResource, ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy } from "@pulumi/policy";
import { unwrap } from "../../lab/engine";
import { noPrivateKeyInUserDataOrOutputs, onlyWireGuardIsPublic, secretsStaySecret, sshNotOpenToTheWorld } from "../../policy/policies";
import { baseConfig, type ProgramRun, runProgram, TEST_SSH_PRIVATE_KEY } from "../helpers/program";

const DEFAULTS = { allowWorldSsh: false, wireguardPort: 51820, forwardedPorts: [] as string[], secretOutputs: ["clientConfigs"] };
type Config = Partial<typeof DEFAULTS>;

function violationsOf(policy: ResourceValidationPolicy, type: string, props: Record<string, unknown>, config: Config = {}): string[] {
    const found: string[] = [];
    const args = { type, props, urn: `urn:pulumi:test::wgexit::${type}::x`, name: "x", opts: {}, getConfig: () => ({ ...DEFAULTS, ...config }) } as unknown as ResourceValidationArgs;
    const validate = policy.validateResource;
    for (const v of Array.isArray(validate) ? validate : [validate]) v?.(args, (message) => found.push(message));
    return found;
}

function stackViolationsOf(policy: StackValidationPolicy, resources: { type: string; name: string; props: Record<string, unknown> }[], config: Config = {}): string[] {
    const found: string[] = [];
    const args = {
        resources: resources.map((r) => ({ ...r, urn: `urn:pulumi:test::wgexit::${r.type}::${r.name}`, opts: {}, dependencies: [], propertyDependencies: {} }) as unknown as PolicyResource),
        getConfig: () => ({ ...DEFAULTS, ...config }),
    } as unknown as StackValidationArgs;
    policy.validateStack?.(args, (message) => found.push(message));
    return found;
}

const SECURITY_LIST = "oci:Core/securityList:SecurityList";
const rule = (r: Record<string, unknown>) => ({ ingressSecurityRules: [r] });
const worldSsh = rule({ protocol: "6", source: "0.0.0.0/0", description: "SSH", tcpOptions: { min: 22, max: 22 } });
const WG_PRIVATE = "PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

/** The real program's resources and outputs, as the policy engine hands them over: secrets unwrapped. */
function asStack(run: ProgramRun) {
    return [
        ...run.registrations.filter((r) => r.custom).map((r) => ({ type: r.type, name: r.name, props: unwrap(r.inputs) as Record<string, unknown> })),
        { type: "pulumi:pulumi:Stack", name: "wgexit-test", props: unwrap(run.outputs) as Record<string, unknown> },
    ];
}

describe("policy pack", () => {
    let program: ProgramRun | undefined;
    const real = async () => {
        program ??= await runProgram({ ...baseConfig("oci"), placement: "oci" });
        return program;
    };

    it("ssh-not-open-to-the-world: rejects world SSH (and all-ports TCP), accepts it only when opted in", () => {
        assert.equal(violationsOf(sshNotOpenToTheWorld, SECURITY_LIST, worldSsh).length, 1);
        assert.equal(violationsOf(sshNotOpenToTheWorld, SECURITY_LIST, rule({ protocol: "6", source: "::/0" })).length, 1, "no tcpOptions means every port");
        assert.match(violationsOf(sshNotOpenToTheWorld, SECURITY_LIST, worldSsh)[0], /adminCidrs/);
        assert.deepEqual(violationsOf(sshNotOpenToTheWorld, SECURITY_LIST, worldSsh, { allowWorldSsh: true }), []);
        assert.deepEqual(violationsOf(sshNotOpenToTheWorld, SECURITY_LIST, rule({ protocol: "6", source: "203.0.113.7/32", tcpOptions: { min: 22, max: 22 } })), []);
    });

    it("only-wireguard-is-public: rejects any other world-open port, accepts WireGuard, PMTU ICMP and declared forwards", () => {
        assert.equal(violationsOf(onlyWireGuardIsPublic, SECURITY_LIST, rule({ protocol: "6", source: "0.0.0.0/0", tcpOptions: { min: 443, max: 443 } })).length, 1);
        assert.equal(violationsOf(onlyWireGuardIsPublic, SECURITY_LIST, rule({ protocol: "17", source: "0.0.0.0/0", udpOptions: { min: 51820, max: 51830 } })).length, 1, "a range around the port is too wide");
        assert.equal(violationsOf(onlyWireGuardIsPublic, SECURITY_LIST, rule({ protocol: "all", source: "::/0" })).length, 1);
        assert.equal(violationsOf(onlyWireGuardIsPublic, SECURITY_LIST, worldSsh).length, 1);
        assert.deepEqual(violationsOf(onlyWireGuardIsPublic, SECURITY_LIST, rule({ protocol: "17", source: "0.0.0.0/0", udpOptions: { min: 51820, max: 51820 } })), []);
        assert.deepEqual(violationsOf(onlyWireGuardIsPublic, SECURITY_LIST, rule({ protocol: "6", source: "0.0.0.0/0", tcpOptions: { min: 443, max: 443 } }), { forwardedPorts: ["tcp/443"] }), []);
        const nsg = { direction: "INGRESS", protocol: "6", source: "0.0.0.0/0", tcpOptions: { destinationPortRange: { min: 8080, max: 8080 } } };
        assert.equal(violationsOf(onlyWireGuardIsPublic, "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule", nsg).length, 1);
    });

    it("no-private-key-in-user-data-or-outputs: rejects keys in user data and plain outputs", () => {
        const userData = Buffer.from(`#cloud-config\nwrite_files:\n- content: |\n    ${WG_PRIVATE}\n`).toString("base64");
        assert.equal(stackViolationsOf(noPrivateKeyInUserDataOrOutputs, [{ type: "oci:Core/instance:Instance", name: "gw", props: { metadata: { user_data: userData } } }]).length, 1);
        assert.equal(stackViolationsOf(noPrivateKeyInUserDataOrOutputs, [{ type: "ovh:CloudProject/instance:Instance", name: "gw", props: { userData: TEST_SSH_PRIVATE_KEY } }]).length, 1);
        assert.equal(stackViolationsOf(noPrivateKeyInUserDataOrOutputs, [{ type: "pulumi:pulumi:Stack", name: "s", props: { debug: { key: WG_PRIVATE } } }]).length, 1);
        assert.deepEqual(stackViolationsOf(noPrivateKeyInUserDataOrOutputs, [{ type: "pulumi:pulumi:Stack", name: "s", props: { clientConfigs: { phone: `[Interface]\n${WG_PRIVATE}\n` } } }]), [], "generated client configs are secret outputs");
        assert.deepEqual(stackViolationsOf(noPrivateKeyInUserDataOrOutputs, [{ type: "pulumi:pulumi:Stack", name: "s", props: { config: "[Interface]\nPrivateKey = <your device's private key>\n" } }]), [], "a placeholder is not a key");
    });

    it("secrets-stay-secret: rejects a key outside the connection's secret field", () => {
        const command = "command:remote:Command";
        assert.equal(stackViolationsOf(secretsStaySecret, [{ type: command, name: "c", props: { create: `echo '${TEST_SSH_PRIVATE_KEY}' > key`, connection: { privateKey: TEST_SSH_PRIVATE_KEY } } }]).length, 1);
        assert.equal(stackViolationsOf(secretsStaySecret, [{ type: "oci:Core/instance:Instance", name: "i", props: { freeformTags: { key: WG_PRIVATE } } }]).length, 1);
        assert.deepEqual(stackViolationsOf(secretsStaySecret, [{ type: command, name: "c", props: { create: "true", connection: { privateKey: TEST_SSH_PRIVATE_KEY } } }]), []);
    });

    it("the real program (OCI placement) passes every rule", async () => {
        const run = await real();
        const lists = run.registrations.filter((r) => r.type === SECURITY_LIST);
        assert.equal(lists.length, 1);
        for (const policy of [sshNotOpenToTheWorld, onlyWireGuardIsPublic]) assert.deepEqual(violationsOf(policy, SECURITY_LIST, lists[0].inputs), [], policy.name);
        for (const policy of [noPrivateKeyInUserDataOrOutputs, secretsStaySecret]) assert.deepEqual(stackViolationsOf(policy, asStack(run)), [], policy.name);
    });
});
