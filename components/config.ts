// Reads the whole stack config, validates it, and reports every problem at once.
// Nothing here registers a resource: index.ts calls loadStackConfig() first, so bad
// input stops the program before anything is created.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { isDeepStrictEqual } from "node:util";
import * as pulumi from "@pulumi/pulumi";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { type Cidr, contains, type Family, hasHostBits, hostAt, isAddress, overlaps, parseCidr, size } from "./net";

export const PROJECT = "wgexit";

// ---------------------------------------------------------------------------
// Field validators. Every string that can end up inside a shell script is held to a
// pattern that cannot contain shell metacharacters; the renderers quote as well.

const SHELL_META = /[\s$`;|&<>(){}[\]\\'"*?!#~]/;

function text(example: string) {
    return z.string({ error: `must be a string, for example ${example}` });
}

function shellSafe(pattern: RegExp, what: string, example: string) {
    return text(example).superRefine((value, ctx) => {
        if (SHELL_META.test(value)) {
            ctx.addIssue({
                code: "custom",
                message: `"${value}" contains shell metacharacters; ${what}, for example ${example}`,
            });
        } else if (!pattern.test(value)) {
            ctx.addIssue({ code: "custom", message: `"${value}" is not valid; ${what}, for example ${example}` });
        }
    });
}

const name = (example: string) =>
    shellSafe(/^[a-z][a-z0-9-]{0,30}$/, "use 1-31 lowercase letters, digits or '-', starting with a letter", example);

const interfaceName = (example: string) =>
    shellSafe(
        /^[A-Za-z][A-Za-z0-9_.-]{0,14}$/,
        "a Linux interface name is 1-15 letters, digits, '_', '.' or '-', starting with a letter",
        example,
    );

const hostName = (example: string) =>
    shellSafe(
        /^[A-Za-z0-9]([A-Za-z0-9.:-]{0,252})$/,
        "give an IP address or a DNS name",
        example,
    );

const userName = shellSafe(/^[a-z_][a-z0-9_-]{0,31}$/, "give a Unix user name", '"root" or "ubuntu"');

const port = (example: number) =>
    z
        .number({ error: `must be a whole number from 1 to 65535, for example ${example}` })
        .int({ error: `must be a whole number from 1 to 65535, for example ${example}` })
        .min(1, { error: `is out of range; use 1-65535, for example ${example}` })
        .max(65535, { error: `is out of range; use 1-65535, for example ${example}` });

function cidr(family: Family | "any", example: string) {
    const familyText = family === "any" ? "an IPv4 or IPv6" : `an IPv${family}`;
    return text(example).superRefine((value, ctx) => {
        if (SHELL_META.test(value)) {
            ctx.addIssue({ code: "custom", message: `"${value}" contains shell metacharacters; give ${familyText} CIDR, for example ${example}` });
            return;
        }
        const parsed = parseCidr(value);
        if (!parsed || (family !== "any" && parsed.family !== family)) {
            ctx.addIssue({ code: "custom", message: `"${value}" is not ${familyText} CIDR; for example ${example}` });
        } else if (hasHostBits(value)) {
            ctx.addIssue({ code: "custom", message: `"${value}" has host bits set; did you mean ${parsed.text}?` });
        }
    });
}

const wgPublicKey = text("a 44-character base64 key from `wg pubkey`").superRefine((value, ctx) => {
    const bytes = Buffer.from(value, "base64");
    if (!/^[A-Za-z0-9+/]{43}=$/.test(value) || bytes.length !== 32) {
        ctx.addIssue({
            code: "custom",
            message: `"${value.slice(0, 60)}" is not a WireGuard public key (32 bytes of base64, 44 characters ending in '='); create one with \`wg genkey | wg pubkey\``,
        });
    }
});

/** The key types Go's ssh.ParseAuthorizedKey (what @pulumi/command reads hostKey with) knows. */
const SSH_KEY_TYPES = ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"];

/** True when `line` is one authorized_keys line: type, base64 blob that names the same type, optional comment. */
export function isAuthorizedKeyLine(line: string): boolean {
    const m = /^(\S+) ([A-Za-z0-9+/]+={0,2})( [^\n]*)?$/.exec(line.trim());
    if (!m || !SSH_KEY_TYPES.includes(m[1])) return false;
    const blob = Buffer.from(m[2], "base64");
    if (blob.length < 4) return false;
    const length = blob.readUInt32BE(0);
    return blob.subarray(4, 4 + length).toString("latin1") === m[1];
}

const sshPublicKey = () =>
    text('"ssh-ed25519 AAAA... you@laptop"').refine(isAuthorizedKeyLine, {
        error: 'is not an OpenSSH public key; paste one line of ~/.ssh/id_ed25519.pub, for example "ssh-ed25519 AAAAC3Nza... you@laptop"',
    });

// @pulumi/command pins a host key with ssh.ParseAuthorizedKey (pulumi-command v1.2.1
// provider/pkg/provider/remote/connection.go:89): a fingerprint or a known_hosts line fails every step.
const hostKey = text('"ssh-ed25519 AAAAC3Nza..."').refine(isAuthorizedKeyLine, {
    error: "is not a public host key in authorized_keys form (a SHA256: fingerprint or a known_hosts line will not do); on the host run `cat /etc/ssh/ssh_host_ed25519_key.pub`, or from here `ssh-keyscan -t ed25519 HOST | cut -d' ' -f2-`",
});

/**
 * Whether a private key needs a passphrase: OpenSSH keys name their cipher right after the
 * "openssh-key-v1" magic (OpenSSH PROTOCOL.key), PEM keys say ENCRYPTED. @pulumi/command
 * parses the key with ssh.ParsePrivateKey unless privateKeyPassword is given, and that fails
 * on an encrypted key (pulumi-command v1.2.1 provider/pkg/provider/remote/connection.go:109-112).
 */
export function privateKeyIsEncrypted(pem: string): boolean {
    if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(pem)) return true;
    const body = /-----BEGIN OPENSSH PRIVATE KEY-----([\s\S]*?)-----END OPENSSH PRIVATE KEY-----/.exec(pem);
    if (!body) return false;
    const bytes = Buffer.from(body[1].replace(/\s+/g, ""), "base64");
    const magic = "openssh-key-v1\0";
    if (bytes.subarray(0, magic.length).toString("latin1") !== magic || bytes.length < magic.length + 4) return false;
    const length = bytes.readUInt32BE(magic.length);
    return bytes.subarray(magic.length + 4, magic.length + 4 + length).toString("latin1") !== "none";
}

const connection = z
    .object(
        {
            host: hostName('"198.51.100.10" or "gw.example.org"'),
            port: port(22).default(22),
            user: userName.default("root"),
            hostKey: hostKey.optional(),
        },
        { error: 'must be an object, for example {host: "198.51.100.10", user: "root"}' },
    )
    .strict();

// ---------------------------------------------------------------------------
// Placement- and role-specific objects.

const existingSchema = connection;

const ociSchema = z
    .object(
        {
            compartmentId: text('"ocid1.compartment.oc1..aaaa..."').regex(/^ocid1\.(compartment|tenancy)\.[a-z0-9.-]+\.[a-z0-9-]*\.[a-z0-9]+$/, {
                error: 'is not a compartment OCID; copy it from the OCI console, for example "ocid1.compartment.oc1..aaaaexample"',
            }),
            shape: text('"VM.Standard.A1.Flex"').default("VM.Standard.A1.Flex"),
            ocpus: z.number().positive().default(1),
            memoryInGbs: z.number().positive().default(6),
            bootVolumeGbs: z.number().int().min(50).default(50),
            imageOperatingSystem: text('"Canonical Ubuntu"').default("Canonical Ubuntu"),
            imageOperatingSystemVersion: text('"24.04"').default("24.04"),
            availabilityDomainIndex: z.number().int().min(0).max(2).default(0),
            vcnCidr: cidr(4, '"10.0.0.0/16"').default("10.0.0.0/16"),
            subnetCidr: cidr(4, '"10.0.0.0/24"').default("10.0.0.0/24"),
            ipv6: z.boolean().default(true),
        },
        { error: 'must be an object, for example {compartmentId: "ocid1.compartment.oc1..aaaa"}' },
    )
    .strict();

const ovhSchema = z
    .object(
        {
            serviceName: text('"0123456789abcdef0123456789abcdef"').regex(/^[a-f0-9]{32}$/, {
                error: 'is not an OVH Public Cloud project id (32 hex characters), for example "0123456789abcdef0123456789abcdef"',
            }),
            region: text('"GRA11"').regex(/^[A-Z]{2,5}[0-9]{0,3}$/, { error: 'is not an OVH region, for example "GRA11" or "BHS5"' }),
            flavorName: text('"d2-2"').default("d2-2"),
            imageName: text('"Ubuntu 24.04"').default("Ubuntu 24.04"),
            billingPeriod: z.enum(["hourly", "monthly"], { error: 'must be "hourly" or "monthly"' }).default("hourly"),
        },
        { error: 'must be an object, for example {serviceName: "0123...", region: "GRA11"}' },
    )
    .strict();

const absolutePath = (example: string) =>
    text(example).regex(/^\/[A-Za-z0-9._+/-]*$/, { error: `must be an absolute path of letters, digits, '.', '_', '+', '-' and '/', for example ${example}` });

const imageSource = text('"/var/lib/libvirt/images/debian-12-genericcloud-amd64.qcow2"').superRefine((value, ctx) => {
    const isPath = /^\/[A-Za-z0-9._+/-]+$/.test(value);
    const isUrl = /^https?:\/\/[A-Za-z0-9.-]+(:[0-9]+)?\/[A-Za-z0-9._~%+/-]*$/.test(value);
    if (!isPath && !isUrl) {
        ctx.addIssue({
            code: "custom",
            message: `"${value}" is neither an absolute path on the KVM host nor an http(s) URL without query or shell characters; for example "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"`,
        });
    }
});

const guestSchema = z
    .object({
        name: name('"web1"'),
        mac: text('"52:54:00:6b:00:10"')
            .regex(/^52:54:00(:[0-9a-f]{2}){3}$/, { error: 'must be a lowercase MAC in the 52:54:00 (QEMU) range, for example "52:54:00:6b:00:10"' })
            .optional(),
        hostIndex: z.number().int().min(2).optional(),
        image: imageSource,
        memoryMb: z.number().int().min(64).default(1024),
        vcpus: z.number().int().min(1).default(1),
        diskGb: z.number().int().min(1).default(10),
        user: userName.default("debian"),
        sshAuthorizedKeys: z.array(sshPublicKey()).default([]),
        // Direct kernel boot (no bootloader in the image), as used by appliance images and the lab.
        kernel: absolutePath('"/var/lib/libvirt/boot/vmlinuz"').optional(),
        initrd: absolutePath('"/var/lib/libvirt/boot/initrd.img"').optional(),
        cmdline: text('"console=ttyS0 root=/dev/vda1"')
            .regex(/^[\x20-\x7e]*$/, { error: "must be printable ASCII on one line, for example \"console=ttyS0 root=/dev/vda1\"" })
            .optional(),
    })
    .strict();

const networkSchema = z
    .object({
        name: name('"wgnet"'),
        bridge: interfaceName('"virbr-wg"'),
        cidr: cidr(4, '"192.168.100.0/24"'),
        cidrV6: cidr(6, '"fd66:100::/64"').optional(),
        resolvers: z.array(hostName('"9.9.9.9"')).default(["9.9.9.9", "2620:fe::fe"]),
        guests: z.array(guestSchema).default([]),
    })
    .strict();

const siteSchema = z
    .object({
        name: name('"home"'),
        connection,
        wgInterface: interfaceName('"wgexit0"').default("wgexit0"),
        hostIndex: z.number().int().min(2).optional(),
        lanCidrs: z.array(cidr("any", '"192.168.1.0/24"')).default([]),
        allowInboundFrom: z.array(cidr("any", '"10.66.0.0/24"')).default([]),
        serveDns: z.boolean().default(false),
        routeTable: z
            .number()
            .int()
            .min(1)
            .max(2147483647)
            .refine((t) => t < 253 || t > 255, { error: "253-255 are the kernel's default, main and local tables; use another, for example 7700" })
            .default(7700),
        domainType: z.enum(["kvm", "qemu"], { error: 'must be "kvm" (hardware virtualization) or "qemu" (software emulation)' }).default("kvm"),
        poolDir: absolutePath('"/var/lib/libvirt/images/wgexit"').default("/var/lib/libvirt/images/wgexit"),
        networks: z.array(networkSchema).min(1, { error: "needs at least one routed network" }),
    })
    .strict();

const address = (family: Family, example: string) =>
    text(example).refine((value) => isAddress(value, family), { error: `must be an IPv${family} address, for example ${example}` });

const laptopSchema = z
    .object({
        name: name('"laptop"'),
        os: z.enum(["linux", "macos"], { error: 'must be "linux" or "macos"' }),
        // The local Linux VM that holds the tunnel, and the laptop itself, both over SSH.
        vm: connection,
        laptop: connection,
        // The laptop↔VM link (a host-only or shared VM network): the laptop's and the VM's addresses on it.
        laptopAddress: address(4, '"192.168.64.1"'),
        vmAddress: address(4, '"192.168.64.2"'),
        laptopAddressV6: address(6, '"fd66:64::1"').optional(),
        vmAddressV6: address(6, '"fd66:64::2"').optional(),
        // The VM's interface on that link (Linux name).
        vmLink: interfaceName('"enp0s1"').default("eth0"),
        wgInterface: interfaceName('"wgexit1"').default("wgexit1"),
        hostIndex: z.number().int().min(2).optional(),
        resolver: address(4, '"9.9.9.9"').default("9.9.9.9"),
        routeTable: z.number().int().min(1).max(2147483647).refine((t) => t < 253 || t > 255, { error: "253-255 are the kernel's own tables; use another, for example 7701" }).default(7701),
        // macOS: the network service whose DNS is set, as `networksetup -listallnetworkservices` names it.
        networkService: text('"Wi-Fi"').regex(/^[A-Za-z0-9 ._()-]{1,64}$/, { error: 'must be a network service name such as "Wi-Fi"' }).default("Wi-Fi"),
    })
    .strict();

const portForwardSchema = z
    .object({
        name: name('"web"'),
        protocol: z.enum(["tcp", "udp"], { error: 'must be "tcp" or "udp"' }),
        // The port on the gateway's public address.
        port: port(443),
        // Where it goes: a site's declared guest, or an address in one of the site's networks.
        site: name('"home"'),
        guest: name('"web1"').optional(),
        address: address(4, '"192.168.100.50"').optional(),
        toPort: port(443).optional(),
    })
    .strict();

const stackName = text('"acme/wgexit/gateway"').regex(/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+){0,2}$/, {
    error: 'must be a stack name: "stack", "project/stack" or "org/project/stack", for example "acme/wgexit/gateway"',
});

const peerSchema = z
    .object({
        name: name('"phone"'),
        // Preferably made on the device (`wg genkey | wg pubkey`); or generateKey: true.
        publicKey: wgPublicKey.optional(),
        generateKey: z.boolean().default(false),
        // Put into the client config this peer imports.
        dns: z.array(hostName('"9.9.9.9"')).default(["9.9.9.9", "2620:fe::fe"]),
        hostIndex: z.number().int().min(2).optional(),
        allowedIps: z.array(cidr("any", '"192.168.200.0/24"')).default([]),
        canReach: z.array(name('"home"')).default([]),
    })
    .strict();

// ---------------------------------------------------------------------------
// The key table. Pulumi.yaml declares exactly these keys (a test keeps them in step).

const PLACEMENTS = ["existing", "oci", "ovh"] as const;
export type Placement = (typeof PLACEMENTS)[number];

const KEY_SCHEMAS = {
    placement: z.enum(PLACEMENTS, { error: 'must be one of "existing", "oci" or "ovh"' }),
    wgInterface: interfaceName('"wg0"'),
    listenPort: port(51820),
    tunnelMtu: z
        .number({ error: "must be a whole number, for example 1420" })
        .int()
        .min(1280, { error: "is below 1280, the IPv6 minimum; use 1420 for a 1500-byte path" })
        .max(8920, { error: "is too large; use 1420 unless every path is jumbo-frame clean" }),
    tunnelCidr: cidr(4, '"10.66.0.0/24"'),
    tunnelCidrV6: cidr(6, '"fd66:66:66::/64"'),
    adminCidrs: z.array(cidr("any", '"203.0.113.7/32"'), { error: 'must be a list of CIDRs, for example ["203.0.113.7/32"]' }),
    allowWorldSsh: z.boolean({ error: "must be true or false" }),
    sshUser: userName,
    sshPublicKey: sshPublicKey(),
    sshPrivateKey: text('"-----BEGIN OPENSSH PRIVATE KEY-----..."').regex(/-----BEGIN [A-Z ]*PRIVATE KEY-----/, {
        error: "is not a PEM/OpenSSH private key; set it with `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`",
    }),
    sshPrivateKeyPassword: text('"the passphrase"'),
    existing: existingSchema,
    oci: ociSchema,
    ovh: ovhSchema,
    peers: z.array(peerSchema, { error: "must be a list of peers" }),
    sites: z.array(siteSchema, { error: "must be a list of sites" }),
    laptops: z.array(laptopSchema, { error: "must be a list of laptops" }),
    portForwards: z.array(portForwardSchema, { error: "must be a list of port forwards" }),
    // Split layout: a site/laptop stack names its gateway stack; the gateway stack names them.
    gatewayStack: stackName,
    peerStacks: z.array(stackName, { error: 'must be a list of stack names, for example ["acme/wgexit/home"]' }),
} as const;

export type ConfigKey = keyof typeof KEY_SCHEMAS;
export const CONFIG_KEYS = Object.keys(KEY_SCHEMAS) as ConfigKey[];

/** Keys whose value must be stored encrypted (`pulumi config set --secret`). */
export const SECRET_KEYS: readonly ConfigKey[] = ["sshPrivateKey", "sshPrivateKeyPassword"];

/** Keys of the stack that runs the gateway; a site or laptop stack (gatewayStack) must leave them at their defaults. */
const GATEWAY_KEYS: readonly ConfigKey[] = ["placement", "existing", "oci", "ovh", "adminCidrs", "allowWorldSsh", "sshPublicKey", "peers", "peerStacks", "wgInterface", "listenPort", "tunnelCidr", "tunnelCidrV6", "tunnelMtu"];

export type SiteConfig = z.output<typeof siteSchema>;
export type NetworkConfig = z.output<typeof networkSchema>;
export type GuestConfig = z.output<typeof guestSchema>;
export type PeerConfig = z.output<typeof peerSchema>;
export type LaptopConfig = z.output<typeof laptopSchema>;
export type ConnectionConfig = z.output<typeof connection>;
export type OciConfig = z.output<typeof ociSchema>;
export type OvhConfig = z.output<typeof ovhSchema>;

/** A tunnel peer of the gateway with its allocated addresses. */
export interface TunnelPeer {
    name: string;
    kind: "site" | "peer" | "laptop";
    hostIndex: number;
    addressV4: string;
    addressV6: string;
    /** Subnets routed to this peer besides its own tunnel addresses. */
    routedCidrs: string[];
    /** Names of peers whose subnets this peer may open connections to. */
    canReach: string[];
}

export interface StackConfig {
    placement: Placement;
    gateway: {
        wgInterface: string;
        listenPort: number;
        tunnelMtu: number;
        tunnelCidr: string;
        tunnelCidrV6: string;
        addressV4: string;
        addressV6: string;
        adminCidrs: string[];
        allowWorldSsh: boolean;
    };
    sshUser: string;
    sshPublicKey?: string;
    hasSshPrivateKey: boolean;
    hasSshPrivateKeyPassword: boolean;
    existing?: ConnectionConfig;
    oci?: OciConfig;
    ovh?: OvhConfig;
    peers: PeerConfig[];
    sites: ResolvedSite[];
    laptops: LaptopConfig[];
    portForwards: PortForward[];
    tunnelPeers: TunnelPeer[];
    /** Split layout: the stack whose gateway this stack's sites and laptops join. */
    gatewayStack?: string;
    /** Split layout: the stacks whose sites and laptops this gateway takes as peers. */
    peerStacks: string[];
}



/** A guest with its address and MAC fixed, for the static DHCP lease. */
export interface ResolvedGuest extends GuestConfig {
    mac: string;
    addressV4: string;
}

/** A routed network with its host (bridge) addresses and DHCP pool worked out. */
export interface ResolvedNetwork extends Omit<NetworkConfig, "guests"> {
    bridgeV4: string;
    bridgeV6?: string;
    prefixV4: number;
    dhcpFirst: string;
    dhcpLast: string;
    guests: ResolvedGuest[];
}

export interface ResolvedSite extends Omit<SiteConfig, "networks"> {
    networks: ResolvedNetwork[];
}

/** A port on the gateway's public address, forwarded through the tunnel to a guest. */
export interface PortForward {
    name: string;
    protocol: "tcp" | "udp";
    port: number;
    site: string;
    /** The guest's address, and the bridge of the network it is on. */
    address: string;
    bridge: string;
    toPort: number;
}

export interface ConfigProblem {
    key: string;
    message: string;
}

export class ConfigError extends Error {
    constructor(readonly problems: ConfigProblem[]) {
        super(
            `The stack config has ${problems.length} problem${problems.length === 1 ? "" : "s"}; nothing was created:\n` +
                problems.map((p) => `  - ${p.key}: ${p.message}`).join("\n"),
        );
        this.name = "ConfigError";
    }
}

// ---------------------------------------------------------------------------
// Project defaults come from Pulumi.yaml, the one place they are declared.

interface Declaration {
    type: "string" | "integer" | "boolean" | "array" | "object";
    description: string;
    default?: unknown;
    secret?: boolean;
}

export function projectDeclarations(projectFile = path.join(__dirname, "..", "Pulumi.yaml")): Record<string, Declaration> {
    const project = parseYaml(fs.readFileSync(projectFile, "utf8")) as { config?: Record<string, Declaration> };
    return project.config ?? {};
}

function isEmpty(value: unknown): boolean {
    return value === "" || (Array.isArray(value) && value.length === 0) || (typeof value === "object" && value !== null && Object.keys(value).length === 0);
}

/** The stack sets `key` to something other than its declared default (the CLI adds the defaults of unset keys). */
function isSet(raw: Record<string, string>, key: ConfigKey, declarations: Record<string, Declaration>): boolean {
    const rawValue = raw[`${PROJECT}:${key}`];
    return rawValue !== undefined && !isDeepStrictEqual(decode(rawValue, declarations[key]), declarations[key]?.default);
}

/** Turns Pulumi's raw config strings into typed values, as the CLI would for typed keys. */
function decode(raw: string, decl: Declaration | undefined): unknown {
    if (!decl || decl.type === "string") return raw;
    try {
        return JSON.parse(raw);
    } catch {
        // Leave it as text: the schema then reports a type error that names the key.
        return raw;
    }
}

function keyPath(key: string, issuePath: PropertyKey[]): string {
    let out = `${PROJECT}:${key}`;
    for (const part of issuePath) out += typeof part === "number" ? `[${part}]` : `.${String(part)}`;
    return out;
}

/**
 * Validates raw config (keys as "wgexit:name" → string, as `pulumi.runtime.allConfig()` gives them).
 * Returns the typed config or throws ConfigError listing every problem.
 */
export function parseStackConfig(raw: Record<string, string>, declarations = projectDeclarations(), isSecret?: (fullKey: string) => boolean): StackConfig {
    const problems: ConfigProblem[] = [];
    const values: Record<string, unknown> = {};

    // A secret must be stored encrypted: in plain text it would sit in the stack file and in state.
    for (const key of SECRET_KEYS) {
        const fullKey = `${PROJECT}:${key}`;
        if (isSet(raw, key, declarations) && isSecret && !isSecret(fullKey)) {
            problems.push({ key: fullKey, message: `is stored in plain text; remove it (pulumi config rm ${key}) and set it again with \`pulumi config set --secret ${key}\`` });
        }
    }

    for (const fullKey of Object.keys(raw)) {
        if (!fullKey.startsWith(`${PROJECT}:`)) continue;
        const key = fullKey.slice(PROJECT.length + 1);
        if (!(key in KEY_SCHEMAS)) {
            problems.push({ key: fullKey, message: `is not a known key; the keys are ${CONFIG_KEYS.join(", ")} (see README "Config reference")` });
        }
    }

    for (const key of CONFIG_KEYS) {
        const decl = declarations[key];
        const rawValue = raw[`${PROJECT}:${key}`];
        const value = rawValue === undefined ? decl?.default : decode(rawValue, decl);
        // An empty default ("", [] or {}) means "not set", whether the CLI injected it or not.
        if (value === undefined || (isEmpty(decl?.default) && isDeepStrictEqual(value, decl?.default))) continue;
        const result = KEY_SCHEMAS[key].safeParse(value);
        if (result.success) {
            values[key] = result.data;
        } else {
            for (const issue of result.error.issues) {
                const where = keyPath(key, issue.path);
                const message = issue.code === "unrecognized_keys" ? `has unknown field(s) ${issue.keys.join(", ")}; check the spelling against README "Config reference"` : issue.message;
                problems.push({ key: where, message });
            }
        }
    }

    const v = values as Partial<{ [K in ConfigKey]: z.output<(typeof KEY_SCHEMAS)[K]> }>;
    const placement = v.placement;
    const requireKey = (key: ConfigKey, why: string, example: string) => {
        if (v[key] === undefined && !problems.some((p) => p.key.startsWith(`${PROJECT}:${key}`))) {
            problems.push({ key: `${PROJECT}:${key}`, message: `is required ${why}; for example ${example}` });
        }
    };

    requireKey("sshPrivateKey", "so the program can reach the hosts", "`pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`");
    if (v.sshPrivateKey && privateKeyIsEncrypted(v.sshPrivateKey) && !v.sshPrivateKeyPassword) {
        problems.push({ key: `${PROJECT}:sshPrivateKeyPassword`, message: "is required: sshPrivateKey is protected by a passphrase; set it with `pulumi config set --secret sshPrivateKeyPassword` (or use a key without one)" });
    }
    // A stack that uses another stack's gateway has none of its own: gateway keys belong there.
    // (Judged by the key being set, so a malformed gatewayStack is reported as that alone.) The CLI
    // hands the program every declared default, so a gateway key "is set" when it differs from its default.
    const usesRemoteGateway = isSet(raw, "gatewayStack", declarations);
    if (usesRemoteGateway) {
        for (const key of GATEWAY_KEYS) {
            if (isSet(raw, key, declarations)) problems.push({ key: `${PROJECT}:${key}`, message: `belongs in the gateway stack (${raw[`${PROJECT}:gatewayStack`]}); remove it here (pulumi config rm ${key})` });
        }
        if (!(v.sites ?? []).length && !(v.laptops ?? []).length) problems.push({ key: `${PROJECT}:gatewayStack`, message: "this stack has no sites or laptops to join that gateway; add one, or remove gatewayStack" });
    } else {
        requireKey("placement", "to choose where the gateway runs", '"existing"');
        requireKey("adminCidrs", "so the gateway knows who may reach SSH (the program itself applies peers over SSH)", '["203.0.113.7/32"]');
    }
    if (!usesRemoteGateway && placement === "existing") requireKey("existing", 'when placement is "existing"', '{host: "198.51.100.10", user: "root"}');
    if (usesRemoteGateway) {
        // nothing more: the gateway's facts come from its stack
    } else if (placement === "oci") {
        requireKey("oci", 'when placement is "oci"', '{compartmentId: "ocid1.compartment.oc1..aaaa"}');
        requireKey("sshPublicKey", "to log in to the new instance", '"ssh-ed25519 AAAA... you@laptop"');
    }
    if (!usesRemoteGateway && placement === "ovh") {
        requireKey("ovh", 'when placement is "ovh"', '{serviceName: "0123456789abcdef0123456789abcdef", region: "GRA11"}');
        requireKey("sshPublicKey", "to log in to the new instance", '"ssh-ed25519 AAAA... you@laptop"');
    }

    // World-open SSH needs an explicit opt-in.
    (v.adminCidrs ?? []).forEach((c, i) => {
        const parsed = parseCidr(c);
        if (parsed && parsed.prefix === 0 && v.allowWorldSsh !== true) {
            problems.push({
                key: `${PROJECT}:adminCidrs[${i}]`,
                message: `"${c}" opens SSH to the whole internet; list your own address instead (for example "203.0.113.7/32"), or set allowWorldSsh: true if you really mean it`,
            });
        }
    });

    const sites = resolveSites(v.sites ?? [], problems);
    const tunnelPeers = allocatePeers(v.sites ?? [], v.peers ?? [], v.laptops ?? [], v.tunnelCidr, v.tunnelCidrV6, problems);
    (v.laptops ?? []).forEach((l, i) => {
        if (l.laptopAddressV6 === undefined !== (l.vmAddressV6 === undefined)) {
            problems.push({ key: `${PROJECT}:laptops[${i}].${l.vmAddressV6 ? "laptopAddressV6" : "vmAddressV6"}`, message: "set both laptopAddressV6 and vmAddressV6 (IPv6 through the VM), or neither (the laptop's IPv6 is then blocked)" });
        }
        if (l.laptopAddress === l.vmAddress) problems.push({ key: `${PROJECT}:laptops[${i}].vmAddress`, message: "must differ from laptopAddress" });
    });
    // In a site stack the gateway's own ports are checked by the gateway stack, which applies the forwards.
    const portForwards = resolvePortForwards(v.portForwards ?? [], sites, usesRemoteGateway ? undefined : { listenPort: v.listenPort as number, sshPort: v.existing?.port ?? 22 }, problems);
    (v.peers ?? []).forEach((p, i) => {
        if ((p.publicKey === undefined) === !p.generateKey) {
            problems.push({
                key: `${PROJECT}:peers[${i}].publicKey`,
                message: p.generateKey
                    ? "set either publicKey or generateKey: true, not both"
                    : 'is required: the device\'s public key (on the device: wg genkey | tee private.key | wg pubkey), or set generateKey: true to have the program make one (it is then kept in the stack\'s state)',
            });
        }
    });
    checkOverlaps(v, problems);
    checkNames(v.sites ?? [], v.peers ?? [], v.laptops ?? [], problems);

    if (problems.length > 0) throw new ConfigError(problems);

    const tunnelV4 = parseCidr(v.tunnelCidr as string) as Cidr;
    const tunnelV6 = parseCidr(v.tunnelCidrV6 as string) as Cidr;
    return {
        placement: placement as Placement,
        gateway: {
            wgInterface: v.wgInterface as string,
            listenPort: v.listenPort as number,
            tunnelMtu: v.tunnelMtu as number,
            tunnelCidr: tunnelV4.text,
            tunnelCidrV6: tunnelV6.text,
            addressV4: hostAt(tunnelV4, 1),
            addressV6: hostAt(tunnelV6, 1),
            adminCidrs: (v.adminCidrs ?? []).map((c) => (parseCidr(c) as Cidr).text),
            allowWorldSsh: v.allowWorldSsh ?? false,
        },
        sshUser: v.sshUser as string,
        sshPublicKey: v.sshPublicKey,
        hasSshPrivateKey: v.sshPrivateKey !== undefined,
        hasSshPrivateKeyPassword: v.sshPrivateKeyPassword !== undefined,
        existing: placement === "existing" ? v.existing : undefined,
        oci: placement === "oci" ? v.oci : undefined,
        ovh: placement === "ovh" ? v.ovh : undefined,
        peers: v.peers ?? [],
        sites,
        laptops: v.laptops ?? [],
        portForwards,
        tunnelPeers,
        gatewayStack: v.gatewayStack,
        peerStacks: v.peerStacks ?? [],
    };
}

const remotePeerSchema = z
    .object({
        name: name('"home"'),
        kind: z.enum(["site", "laptop"]),
        publicKey: wgPublicKey,
        routedCidrs: z.array(cidr("any", '"192.168.100.0/24"')),
        hostIndex: z.number().int().min(2).optional(),
        // A site's port forwards: declared with the site, applied by the gateway.
        portForwards: z
            .array(z.object({ name: name('"web"'), protocol: z.enum(["tcp", "udp"]), port: port(443), address: address(4, '"192.168.100.10"'), bridge: interfaceName('"virbr-wg"'), toPort: port(443) }).strict())
            .default([]),
    })
    .strict();

/** What a site or laptop stack publishes for its gateway stack (its output tunnelPeers). */
export type RemotePeer = z.output<typeof remotePeerSchema>;

/**
 * The gateway stack's peers from other stacks: each stack's tunnelPeers output, checked and
 * given tunnel addresses after this stack's own peers. Throws ConfigError naming the stack.
 */
export function allocateRemotePeers(config: StackConfig, byStack: { stack: string; tunnelPeers: unknown }[]): { peer: TunnelPeer; publicKey: string; stack: string; portForwards: PortForward[] }[] {
    const problems: ConfigProblem[] = [];
    const found: { stack: string; key: string; peer: RemotePeer }[] = [];
    const names = new Map(config.tunnelPeers.map((p) => [p.name, `${PROJECT}:${p.kind}s`]));
    byStack.forEach(({ stack, tunnelPeers }, i) => {
        const key = `${PROJECT}:peerStacks[${i}]`;
        const parsed = z.array(remotePeerSchema).safeParse(tunnelPeers);
        if (!parsed.success) {
            problems.push({ key, message: `stack ${stack} has no valid tunnelPeers output (${parsed.error.issues[0]?.message}); run \`pulumi up\` in that stack first` });
            return;
        }
        for (const peer of parsed.data) {
            const prior = names.get(peer.name);
            if (prior) problems.push({ key, message: `stack ${stack} brings a peer named "${peer.name}", which ${prior} already has; rename one of them` });
            names.set(peer.name, `stack ${stack}`);
            found.push({ stack, key, peer });
        }
    });
    const local = config.tunnelPeers.map((p) => ({ key: `${PROJECT}:tunnelCidr`, name: p.name, kind: p.kind, hostIndex: p.hostIndex, routed: p.routedCidrs, canReach: p.canReach }));
    const remote = found.map((f) => ({ key: f.key, name: f.peer.name, kind: f.peer.kind, hostIndex: f.peer.hostIndex, routed: f.peer.routedCidrs, canReach: [] as string[] }));
    const all = allocate([...local, ...remote], config.gateway.tunnelCidr, config.gateway.tunnelCidrV6, problems);
    // The public ports a peer stack's sites ask for must be free on this gateway.
    const ports = new Map(config.portForwards.map((f) => [`${f.protocol}/${f.port}`, `this stack's portForwards (${f.name})`]));
    ports.set(`udp/${config.gateway.listenPort}`, "WireGuard (listenPort)");
    ports.set(`tcp/${config.existing?.port ?? 22}`, "the gateway's SSH");
    for (const f of found) {
        for (const forward of f.peer.portForwards) {
            const claim = `${forward.protocol}/${forward.port}`;
            const prior = ports.get(claim);
            if (prior) problems.push({ key: f.key, message: `stack ${f.stack} forwards ${claim} (${forward.name}), which ${prior} already uses; choose another port there` });
            ports.set(claim, `stack ${f.stack} (${forward.name})`);
        }
    }
    if (problems.length > 0) throw new ConfigError(problems);
    return found.map((f) => ({
        peer: all.find((p) => p.name === f.peer.name) as TunnelPeer,
        publicKey: f.peer.publicKey,
        stack: f.stack,
        portForwards: f.peer.portForwards.map((forward) => ({ ...forward, site: f.peer.name })),
    }));
}

/** Finds each forward's guest address and bridge; ports must be free on the gateway. */
function resolvePortForwards(forwards: z.output<typeof portForwardSchema>[], sites: ResolvedSite[], gateway: { listenPort: number; sshPort: number } | undefined, problems: ConfigProblem[]): PortForward[] {
    const taken = new Map<string, string>();
    const resolved: PortForward[] = [];
    forwards.forEach((f, i) => {
        const key = `${PROJECT}:portForwards[${i}]`;
        const claim = `${f.protocol}/${f.port}`;
        if (taken.has(claim)) problems.push({ key: `${key}.port`, message: `${claim} is already forwarded by ${taken.get(claim)}; use another port` });
        taken.set(claim, key);
        if (gateway && f.protocol === "udp" && f.port === gateway.listenPort) problems.push({ key: `${key}.port`, message: `udp/${f.port} is the gateway's WireGuard port (listenPort); use another port` });
        if (gateway && f.protocol === "tcp" && f.port === gateway.sshPort) problems.push({ key: `${key}.port`, message: `tcp/${f.port} is the gateway's SSH port; use another port` });
        const site = sites.find((s) => s.name === f.site);
        if (!site) {
            // A site that failed validation is already reported; naming it again would only confuse.
            if (problems.some((p) => p.key.startsWith(`${PROJECT}:sites`))) return;
            problems.push({ key: `${key}.site`, message: `"${f.site}" is not a site; use one of ${sites.map((s) => s.name).join(", ") || "(no sites declared)"}` });
            return;
        }
        if ((f.guest === undefined) === (f.address === undefined)) {
            problems.push({ key: `${key}.guest`, message: 'set either guest (a declared guest\'s name) or address (an address in one of the site\'s networks), for example guest: "web1"' });
            return;
        }
        for (const network of site.networks) {
            const guest = network.guests.find((g) => g.name === f.guest);
            const address = guest?.addressV4 ?? f.address;
            const cidr = parseCidr(network.cidr) as Cidr;
            const inside = address !== undefined && address !== network.bridgeV4 && contains(cidr, parseCidr(`${address}/32`) as Cidr);
            if (guest || (f.address !== undefined && inside)) {
                resolved.push({ name: f.name, protocol: f.protocol, port: f.port, site: site.name, address: address as string, bridge: network.bridge, toPort: f.toPort ?? f.port });
                return;
            }
        }
        problems.push(
            f.guest !== undefined
                ? { key: `${key}.guest`, message: `"${f.guest}" is not a guest of site ${site.name}; use one of ${site.networks.flatMap((n) => n.guests.map((g) => g.name)).join(", ") || "(no guests declared)"}` }
                : { key: `${key}.address`, message: `${f.address} is not a guest address in site ${site.name}'s networks (${site.networks.map((n) => n.cidr).join(", ")})` },
        );
    });
    return resolved;
}

/**
 * Fixes each network's addresses: the host (bridge) is .1, declared guests get static
 * leases in the lower half (from .10 unless hostIndex says otherwise), and the DHCP pool
 * is the upper half. MACs not given are derived from the site and guest names, so they
 * stay stable across runs.
 */
function resolveSites(sites: SiteConfig[], problems: ConfigProblem[]): ResolvedSite[] {
    const macs = new Map<string, string>();
    return sites.map((site, i) => ({
        ...site,
        networks: site.networks.map((network, j) => {
            const where = `${PROJECT}:sites[${i}].networks[${j}]`;
            const v4 = parseCidr(network.cidr) as Cidr;
            const total = Number(size(v4));
            const half = Math.floor(total / 2);
            if (total < 16) {
                problems.push({ key: `${where}.cidr`, message: `${v4.text} is too small for a host, guests and a DHCP pool; use /28 or larger, for example "192.168.100.0/24"` });
                return { ...network, bridgeV4: "", prefixV4: v4.prefix, dhcpFirst: "", dhcpLast: "", guests: [] };
            }
            if (network.cidrV6 && parseCidr(network.cidrV6)?.prefix !== 64) {
                problems.push({ key: `${where}.cidrV6`, message: `${network.cidrV6} must be a /64: guests configure IPv6 by SLAAC; for example "fd66:100::/64"` });
            }
            const taken = new Set<number>();
            for (const g of network.guests) if (g.hostIndex !== undefined) taken.add(g.hostIndex);
            let next = 10;
            const guests = network.guests.map((guest, k) => {
                const key = `${where}.guests[${k}]`;
                let index = guest.hostIndex;
                if (index === undefined) {
                    while (taken.has(next)) next++;
                    index = next;
                    taken.add(index);
                } else if (index >= half) {
                    problems.push({ key: `${key}.hostIndex`, message: `${index} is in the DHCP pool of ${v4.text}; static guests use 2-${half - 1}` });
                } else if (network.guests.some((g, other) => other < k && g.hostIndex === index)) {
                    problems.push({ key: `${key}.hostIndex`, message: `${index} is used by another guest on this network; give each guest its own index` });
                }
                if (index >= half) problems.push({ key, message: `no static address left below the DHCP pool of ${v4.text}; use a larger cidr` });
                const mac = guest.mac ?? derivedMac(`${site.name}/${guest.name}`);
                const prior = macs.get(mac);
                if (prior) problems.push({ key: `${key}.mac`, message: `${mac} is also used by ${prior}; give each guest its own MAC` });
                macs.set(mac, key);
                if (guest.initrd && !guest.kernel) problems.push({ key: `${key}.initrd`, message: "needs kernel as well (direct kernel boot); set kernel or remove initrd" });
                return { ...guest, mac, addressV4: hostAt(v4, Math.min(index, total - 2)) };
            });
            return {
                ...network,
                bridgeV4: hostAt(v4, 1),
                bridgeV6: network.cidrV6 ? hostAt(parseCidr(network.cidrV6) as Cidr, 1) : undefined,
                prefixV4: v4.prefix,
                dhcpFirst: hostAt(v4, half),
                dhcpLast: hostAt(v4, total - 2),
                guests,
            };
        }),
    }));
}

function derivedMac(seed: string): string {
    const digest = createHash("sha256").update(seed).digest();
    return `52:54:00:${[...digest.subarray(0, 3)].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
}

interface AllocationEntry {
    /** The config key that names this peer, for problems. */
    key: string;
    name: string;
    kind: TunnelPeer["kind"];
    hostIndex?: number;
    routed: string[];
    canReach: string[];
}

function allocatePeers(
    sites: SiteConfig[],
    peers: PeerConfig[],
    laptops: LaptopConfig[],
    tunnelCidr: string | undefined,
    tunnelCidrV6: string | undefined,
    problems: ConfigProblem[],
): TunnelPeer[] {
    const entries: AllocationEntry[] = [
        ...sites.map((s, i) => ({
            key: `${PROJECT}:sites[${i}]`,
            name: s.name,
            kind: "site" as const,
            hostIndex: s.hostIndex,
            routed: s.networks.flatMap((n) => [n.cidr, ...(n.cidrV6 ? [n.cidrV6] : [])]),
            canReach: [] as string[],
        })),
        ...peers.map((p, i) => ({
            key: `${PROJECT}:peers[${i}]`,
            name: p.name,
            kind: "peer" as const,
            hostIndex: p.hostIndex,
            routed: p.allowedIps,
            canReach: p.canReach,
        })),
        // A laptop's VM masquerades the laptop into its own tunnel address: nothing else is routed.
        ...laptops.map((l, i) => ({
            key: `${PROJECT}:laptops[${i}]`,
            name: l.name,
            kind: "laptop" as const,
            hostIndex: l.hostIndex,
            routed: [] as string[],
            canReach: [] as string[],
        })),
    ];
    return allocate(entries, tunnelCidr, tunnelCidrV6, problems);
}

/** Tunnel addresses in order, from .2, honouring pinned hostIndex values. */
function allocate(entries: AllocationEntry[], tunnelCidr: string | undefined, tunnelCidrV6: string | undefined, problems: ConfigProblem[]): TunnelPeer[] {
    const v4 = tunnelCidr ? parseCidr(tunnelCidr) : undefined;
    const v6 = tunnelCidrV6 ? parseCidr(tunnelCidrV6) : undefined;
    if (!v4 || !v6) return [];
    const maxIndex = Math.min(Number(size(v4)), Number(size(v6))) - 2;
    const taken = new Map<number, string>();
    for (const e of entries) {
        if (e.hostIndex === undefined) continue;
        if (e.hostIndex > maxIndex) {
            problems.push({ key: `${e.key}.hostIndex`, message: `${e.hostIndex} does not fit in ${v4.text}; use 2-${maxIndex}` });
        } else if (taken.has(e.hostIndex)) {
            problems.push({ key: `${e.key}.hostIndex`, message: `${e.hostIndex} is already used by "${taken.get(e.hostIndex)}"; give each peer its own index, for example ${Math.max(...taken.keys()) + 1}` });
        } else {
            taken.set(e.hostIndex, e.name);
        }
    }
    let next = 2;
    const out: TunnelPeer[] = [];
    for (const e of entries) {
        let index = e.hostIndex;
        if (index === undefined || index > maxIndex) {
            while (taken.has(next)) next++;
            index = next;
            taken.set(index, e.name);
        }
        if (index > maxIndex) {
            problems.push({ key: e.key, message: `no free tunnel address left in ${v4.text}; use a larger tunnelCidr such as "10.66.0.0/22"` });
            continue;
        }
        out.push({
            name: e.name,
            kind: e.kind,
            hostIndex: index,
            addressV4: hostAt(v4, index),
            addressV6: hostAt(v6, index),
            routedCidrs: e.routed.map((c) => (parseCidr(c) as Cidr).text),
            canReach: e.canReach,
        });
    }
    return out;
}

function checkOverlaps(v: Partial<Record<ConfigKey, unknown>>, problems: ConfigProblem[]): void {
    const blocks: { key: string; text: string }[] = [];
    const add = (key: string, value: unknown) => {
        if (typeof value === "string") blocks.push({ key, text: value });
    };
    add(`${PROJECT}:tunnelCidr`, v.tunnelCidr);
    add(`${PROJECT}:tunnelCidrV6`, v.tunnelCidrV6);
    const sites = (v.sites as SiteConfig[] | undefined) ?? [];
    sites.forEach((s, i) => {
        s.lanCidrs.forEach((c, j) => {
            add(`${PROJECT}:sites[${i}].lanCidrs[${j}]`, c);
        });
        s.networks.forEach((n, j) => {
            add(`${PROJECT}:sites[${i}].networks[${j}].cidr`, n.cidr);
            add(`${PROJECT}:sites[${i}].networks[${j}].cidrV6`, n.cidrV6);
        });
    });
    ((v.peers as PeerConfig[] | undefined) ?? []).forEach((p, i) => {
        p.allowedIps.forEach((c, j) => {
            add(`${PROJECT}:peers[${i}].allowedIps[${j}]`, c);
        });
    });
    const oci = v.oci as OciConfig | undefined;
    if (v.placement === "oci" && oci) add(`${PROJECT}:oci.vcnCidr`, oci.vcnCidr);

    for (let i = 0; i < blocks.length; i++) {
        for (let j = i + 1; j < blocks.length; j++) {
            const a = parseCidr(blocks[i].text);
            const b = parseCidr(blocks[j].text);
            if (a && b && overlaps(a, b)) {
                problems.push({
                    key: blocks[j].key,
                    message: `${b.text} overlaps ${blocks[i].key} (${a.text}); tunnel, guest, LAN and cloud subnets must be disjoint, for example guests on 192.168.100.0/24 and the tunnel on 10.66.0.0/24`,
                });
            }
        }
    }
    if (typeof v.tunnelCidr === "string") {
        const t = parseCidr(v.tunnelCidr);
        if (t && t.prefix > 29) problems.push({ key: `${PROJECT}:tunnelCidr`, message: `${t.text} is too small for a gateway and peers; use /29 or larger, for example "10.66.0.0/24"` });
    }
}

function checkNames(sites: SiteConfig[], peers: PeerConfig[], laptops: LaptopConfig[], problems: ConfigProblem[]): void {
    const seen = new Map<string, string>();
    const claim = (key: string, value: string, kind: string) => {
        const prior = seen.get(`${kind}:${value}`);
        if (prior) problems.push({ key, message: `"${value}" is already used by ${prior}; ${kind} names must be unique` });
        else seen.set(`${kind}:${value}`, key);
    };
    sites.forEach((s, i) => {
        claim(`${PROJECT}:sites[${i}].name`, s.name, "peer");
        const bridges = new Set<string>();
        s.networks.forEach((n, j) => {
            claim(`${PROJECT}:sites[${i}].networks[${j}].name`, `${s.name}/${n.name}`, "network");
            if (bridges.has(n.bridge)) problems.push({ key: `${PROJECT}:sites[${i}].networks[${j}].bridge`, message: `"${n.bridge}" is used twice on site "${s.name}"; give each network its own bridge` });
            bridges.add(n.bridge);
            if (n.bridge === s.wgInterface) problems.push({ key: `${PROJECT}:sites[${i}].networks[${j}].bridge`, message: `"${n.bridge}" is the site's wgInterface; pick another name such as "virbr-wg"` });
            n.guests.forEach((g, k) => {
                claim(`${PROJECT}:sites[${i}].networks[${j}].guests[${k}].name`, `${s.name}/${g.name}`, "guest");
            });
        });
    });
    laptops.forEach((l, i) => {
        claim(`${PROJECT}:laptops[${i}].name`, l.name, "peer");
    });
    const peerNames = new Set([...sites.map((s) => s.name), ...peers.map((p) => p.name)]);
    peers.forEach((p, i) => {
        claim(`${PROJECT}:peers[${i}].name`, p.name, "peer");
        p.canReach.forEach((target, j) => {
            if (!peerNames.has(target)) problems.push({ key: `${PROJECT}:peers[${i}].canReach[${j}]`, message: `"${target}" is not a site or peer name; use one of ${[...peerNames].join(", ")}` });
        });
    });
}

/** Config values as Pulumi hands them to a program: strings stay, anything else is JSON. */
export function encodeConfig(values: Record<string, unknown>, prefix = ""): Record<string, string> {
    return Object.fromEntries(
        Object.entries(values)
            .filter(([, v]) => v !== undefined)
            .map(([k, v]) => [`${prefix}${k}`, typeof v === "string" ? v : JSON.stringify(v)]),
    );
}

/** Reads and validates the running stack's config; throws before any resource is registered. */
export function loadStackConfig(): StackConfig {
    try {
        // isConfigSecret is not in the SDK's typings; without it the check is skipped, never wrong.
        const runtimeConfig = require("@pulumi/pulumi/runtime/config") as { isConfigSecret?: (k: string) => boolean };
        return parseStackConfig(pulumi.runtime.allConfig(), projectDeclarations(), runtimeConfig.isConfigSecret);
    } catch (e) {
        if (e instanceof ConfigError) throw new pulumi.RunError(e.message);
        throw e;
    }
}
