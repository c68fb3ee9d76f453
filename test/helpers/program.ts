// Runs the real program (index.ts) under Pulumi mocks and records what it registers.
import * as assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import type * as pulumi from "@pulumi/pulumi";
import { ConfigError, parseStackConfig, SECRET_KEYS } from "../../components/config";
import type { RegistrationOptions } from "../../lab/engine";
import { encodeConfig, runProgramUnderMocks } from "../../lab/mocked";
import { cliConfig, readProject } from "../../lab/pulumiCli";

export interface Registration {
    type: string;
    name: string;
    inputs: Record<string, unknown>;
    outputs: Record<string, unknown>;
    custom: boolean;
    /** The resource options the engine acts on (ignoreChanges, deleteBeforeReplace, …). */
    options?: RegistrationOptions;
}

export const FAKE_GATEWAY_KEY = "R2F0ZXdheVB1YmxpY0tleUZvclRlc3RzT25seTAwMDA=";
/** What the mocked random provider returns for a generated client key (32 bytes). */
export const GENERATED_CLIENT_KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
export const FAKE_SITE_KEY = "U2l0ZVB1YmxpY0tleUZvclRlc3RzT25seTAwMDAwMDA=";
const REPO = path.join(__dirname, "..", "..");

/** Other stacks' outputs, by stack name, for StackReferences (split layout). */
export type StackOutputsByName = Record<string, Record<string, unknown>>;

class RecordingMocks implements pulumi.runtime.Mocks {
    readonly registrations: Registration[] = [];
    readonly options = new Map<string, RegistrationOptions>();
    readonly invokes: string[] = [];

    constructor(private readonly stacks: StackOutputsByName = {}) {}

    newResource(args: pulumi.runtime.MockResourceArgs) {
        if (args.type === "pulumi:pulumi:StackReference") {
            const name = String(args.inputs.name);
            this.registrations.push({ type: args.type, name: args.name, inputs: args.inputs, outputs: {}, custom: true });
            // As the engine answers for a stack that does not exist.
            if (!(name in this.stacks)) throw new Error(`unknown stack "${name}"`);
            return { id: name, state: { name, outputs: this.stacks[name], secretOutputNames: [] } };
        }
        const outputs: Record<string, unknown> = { ...args.inputs };
        if (args.type === "command:remote:Command") {
            const key = args.name.startsWith("site-") || args.name.startsWith("laptop-") ? FAKE_SITE_KEY : FAKE_GATEWAY_KEY;
            outputs.stdout = (args.name.startsWith("gateway") && args.name.endsWith("-install")) || args.name.endsWith("-key") ? `installed\n${key}\n` : "";
            outputs.stderr = "";
        }
        if (args.type === "random:index/randomBytes:RandomBytes") outputs.base64 = GENERATED_CLIENT_KEY;
        if (args.type === "oci:Core/instance:Instance") outputs.publicIp = "198.51.100.10";
        if (args.type === "oci:Core/vcn:Vcn") outputs.ipv6cidrBlocks = ["2603:c020:4000:aa00::/56"];
        if (args.type === "ovh:CloudProject/instance:Instance") outputs.addresses = [{ ip: "198.51.100.20", version: 4 }, { ip: "2001:db8:51::20", version: 6 }];
        this.registrations.push({ type: args.type, name: args.name, inputs: args.inputs, outputs, custom: args.custom ?? true, options: this.options.get(`${args.type}::${args.name}`) });
        return { id: args.custom ? `${args.name}-id` : undefined, state: outputs };
    }

    call(args: pulumi.runtime.MockCallArgs) {
        this.invokes.push(args.token);
        switch (args.token) {
            case "oci:Identity/getAvailabilityDomains:getAvailabilityDomains":
                return { availabilityDomains: [{ name: "Uocm:EU-FRANKFURT-1-AD-1" }, { name: "Uocm:EU-FRANKFURT-1-AD-2" }] };
            case "oci:Core/getImages:getImages":
                return { images: [{ id: "ocid1.image.minimal", displayName: "Canonical-Ubuntu-24.04-Minimal-aarch64" }, { id: "ocid1.image.full", displayName: "Canonical-Ubuntu-24.04-aarch64-2026.10.01-0" }] };
            case "ovh:CloudProject/getImages:getImages":
                return { images: [{ id: "img-2204", name: "Ubuntu 22.04" }, { id: "img-2404", name: "Ubuntu 24.04" }] };
            case "ovh:CloudProject/getFlavors:getFlavors":
                return { flavors: [{ id: "flv-b2", name: "b2-7" }, { id: "flv-d2", name: "d2-2" }] };
            default:
                throw new Error(`unmocked invoke ${args.token}`);
        }
    }
}

export interface ProgramRun {
    registrations: Registration[];
    invokes: string[];
    outputs: Record<string, unknown>;
    secretOutputs: string[];
    /** Set when the program failed; registrations then show what it had registered. */
    error?: string;
}

export interface RunOptions {
    allowFailure?: boolean;
    /**
     * Hand the program its config as the Pulumi CLI would (lab/pulumiCli.ts): the project's
     * declared defaults injected, after the CLI's checks. Without it, only the given keys.
     */
    asCli?: boolean;
}

/** The keys a stack stores encrypted, as the CLI names them. */
const SECURE_KEYS = SECRET_KEYS.map((k) => `wgexit:${k}`);

/** Runs the program once under RecordingMocks in this process (a process runs it once). */
export async function runProgramHere(config: Record<string, unknown>, stack = "test", stacks: StackOutputsByName = {}, opts: RunOptions = {}): Promise<ProgramRun> {
    const mocks = new RecordingMocks(stacks);
    const secretOutputs: string[] = [];
    try {
        const values = Object.fromEntries(Object.entries(config).map(([k, v]) => [`wgexit:${k}`, v]));
        const given = opts.asCli
            ? cliConfig(readProject(), stack, values, SECURE_KEYS.filter((k) => k in values))
            : { config: encodeConfig(config, "wgexit:"), secretKeys: SECURE_KEYS.filter((k) => k in values) };
        const outputs = await runProgramUnderMocks(mocks, given.config, {
            stack,
            secretKeys: given.secretKeys,
            secretOutputs,
            onRegistration: (type, name, options) => mocks.options.set(`${type}::${name}`, options),
        });
        return { registrations: mocks.registrations, invokes: mocks.invokes, outputs, secretOutputs };
    } catch (e) {
        return { registrations: mocks.registrations, invokes: mocks.invokes, outputs: {}, secretOutputs, error: (e as Error).message };
    }
}

/**
 * config: keys without the "wgexit:" prefix; non-strings are JSON-encoded like Pulumi does.
 * stacks: the outputs of the stacks this one references. Each run gets its own process: the
 * Pulumi runtime keeps per-process state. A failed program rejects, unless allowFailure.
 */
export function runProgram(config: Record<string, unknown>, stack = "test", stacks: StackOutputsByName = {}, opts: RunOptions = {}): Promise<ProgramRun> {
    return new Promise((resolve, reject) => {
        const child = execFile(process.execPath, ["--import", "tsx", path.join(__dirname, "runProgram.ts"), stack], { cwd: REPO, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
            if (err) return reject(new Error(`program run failed: ${err.message}\n${stderr}`));
            const run = JSON.parse(stdout) as ProgramRun;
            if (run.error && !opts.allowFailure) return reject(new Error(`program failed: ${run.error}`));
            resolve(run);
        });
        child.stdin?.end(JSON.stringify({ config, stacks, asCli: opts.asCli ?? false }));
    });
}

/** Not a key: the OpenSSH header of an unencrypted one (cipher "none"), then filler. */
export const TEST_SSH_PRIVATE_KEY = `-----BEGIN OPENSSH PRIVATE KEY-----\n${openSshKeyHeader("none")}testonlynotakey\n-----END OPENSSH PRIVATE KEY-----`;
/** The same for a key protected by a passphrase (cipher aes256-ctr, as ssh-keygen makes them). */
export const TEST_SSH_ENCRYPTED_KEY = `-----BEGIN OPENSSH PRIVATE KEY-----\n${openSshKeyHeader("aes256-ctr")}testonlynotakey\n-----END OPENSSH PRIVATE KEY-----`;

function openSshKeyHeader(cipher: string): string {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(cipher.length);
    const bytes = Buffer.concat([Buffer.from("openssh-key-v1\0", "latin1"), length, Buffer.from(cipher, "latin1")]);
    // Zero-padded to whole base64 groups, so the filler that follows stays valid base64.
    return Buffer.concat([bytes, Buffer.alloc((3 - (bytes.length % 3)) % 3)]).toString("base64");
}
export const TEST_SSH_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0000000000000000000 test@wgexit";
export const PEER_KEY = "UGVlclB1YmxpY0tleUZvclRlc3RzT25seTAwMDAwMDA=";

export function baseConfig(placement: "existing" | "oci" | "ovh"): Record<string, unknown> {
    const common = {
        placement,
        adminCidrs: ["203.0.113.7/32"],
        sshPrivateKey: TEST_SSH_PRIVATE_KEY,
        peers: [{ name: "phone", publicKey: PEER_KEY, allowedIps: [] }],
    };
    if (placement === "existing") return { ...common, existing: { host: "198.51.100.10", user: "root" } };
    if (placement === "oci") return { ...common, sshPublicKey: TEST_SSH_PUBLIC_KEY, oci: { compartmentId: "ocid1.compartment.oc1..aaaaexample" } };
    return { ...common, sshPublicKey: TEST_SSH_PUBLIC_KEY, ovh: { serviceName: "0123456789abcdef0123456789abcdef", region: "GRA11" } };
}

// Shared fixtures: one KVM site with two networks, and one macOS laptop.
export const WEB_GUEST = { name: "web", image: "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2", sshAuthorizedKeys: [TEST_SSH_PUBLIC_KEY] };
export const WGNET = {
    name: "wgnet",
    bridge: "virbr-wg",
    cidr: "192.168.100.0/24",
    cidrV6: "fd66:100::/64",
    guests: [
        WEB_GUEST,
        { name: "tiny", image: "/srv/images/base.qcow2", kernel: "/srv/boot/vmlinuz", initrd: "/srv/boot/initrd.gz", cmdline: "console=ttyS0 panic=-1", memoryMb: 256 },
    ] as Record<string, unknown>[],
};
export const LABNET = { name: "lab", bridge: "virbr-lab", cidr: "192.168.101.0/24", resolvers: ["9.9.9.9"] };

export const SITE = {
    name: "home",
    connection: { host: "192.168.1.10", user: "root" },
    lanCidrs: ["192.168.1.0/24"],
    allowInboundFrom: ["10.66.0.0/24", "fd66:66:66::/64"],
    networks: [WGNET, LABNET] as Record<string, unknown>[],
};

export const LAPTOP = {
    name: "mac",
    os: "macos",
    vm: { host: "192.168.64.2", user: "root" },
    laptop: { host: "192.168.64.1", user: "admin" },
    laptopAddress: "192.168.64.1",
    vmAddress: "192.168.64.2",
};

/** A config object as the program reads it (project-prefixed keys, values as the CLI encodes them). */
export const configValues = (c: Record<string, unknown>) => encodeConfig(c, "wgexit:");

/** The problems parseStackConfig reports for a config (none when it parses). */
export function configProblems(config: Record<string, unknown>): { key: string; message: string }[] {
    try {
        parseStackConfig(configValues(config));
    } catch (e) {
        assert.ok(e instanceof ConfigError, String(e));
        return e.problems;
    }
    return [];
}
