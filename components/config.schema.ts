// The schema of the stack config: every key, its fields, and the validators that hold each
// value to what the program and its hosts accept. A new key starts here, in KEY_SCHEMAS (and
// in Pulumi.yaml and the README's table, which a test keeps in step).
import { z } from "zod";
import { configIssueMessage } from "./config.messages";
import { type Family, hasHostBits, isAddress, parseCidr } from "./net";
z.config({ customError: configIssueMessage }); // plain words where a field has no message of its own (config.messages.ts)

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
            // One-zone regions ("GRA11", "BHS5") and 3-AZ regions ("EU-WEST-PAR"), as OVH's API spells them.
            region: text('"GRA11"').regex(/^([A-Z]{2,5}[0-9]{0,3}|[A-Z]{2}(-[A-Z]+){2})$/, { error: 'is not an OVH region, for example "GRA11", "BHS5" or "EU-WEST-PAR"' }),
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
        // Checked on the host before the image enters the pool; required for http://, where nothing else vouches for what arrives.
        imageSha256: text('"6b7e0c3e...(64 hex digits)"')
            .regex(/^[0-9a-f]{64}$/, { error: "must be the image's SHA-256 as 64 lowercase hex digits, as `sha256sum IMAGE` prints it (or the SHA256SUMS file next to the image)" })
            .optional(),
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
    .strict()
    .superRefine((g, ctx) => {
        if (g.image.startsWith("http://") && !g.imageSha256) {
            ctx.addIssue({
                code: "custom",
                path: ["imageSha256"],
                message: `is required for an http:// image (${g.image}): nothing else vouches for what arrives; give its SHA-256 (\`sha256sum IMAGE\`, or the SHA256SUMS file beside it), or use an https:// URL`,
            });
        }
    });

/** A resolver handed to guests or clients: DHCP and WireGuard configs carry addresses, not names. */
const resolverAddress = (example: string) =>
    text(example).refine((value) => isAddress(value), { error: `is not an IP address; resolvers are handed out by address (DHCP, a client's DNS line), for example ${example}` });

/**
 * A policy-routing table. Its number is also the priority of the rule that selects it, and
 * that rule must be looked at before the main table's (priority 32766), or it never matches.
 */
const routeTable = (fallback: number) =>
    z
        .number({ error: `must be a number, for example ${fallback}` })
        .int({ error: `must be a whole number from 1 to 32765, for example ${fallback}` })
        .min(1, { error: `must be 1-32765 (it is also the rule's priority, which must come before the main table's 32766), for example ${fallback}` })
        .max(32765, { error: `must be 1-32765 (it is also the rule's priority, which must come before the main table's 32766), for example ${fallback}` })
        .refine((t) => t < 253 || t > 255, { error: `253-255 are the kernel's default, main and local tables; use another, for example ${fallback}` })
        .default(fallback);

const networkSchema = z
    .object({
        name: name('"wgnet"'),
        bridge: interfaceName('"virbr-wg"'),
        cidr: cidr(4, '"192.168.100.0/24"'),
        cidrV6: cidr(6, '"fd66:100::/64"').optional(),
        resolvers: z.array(resolverAddress('"9.9.9.9"')).default(["9.9.9.9", "2620:fe::fe"]),
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
        routeTable: routeTable(7700),
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
        routeTable: routeTable(7701),
        // macOS: the network service whose DNS is set, as `networksetup -listallnetworkservices` names it.
        // Stock names include "/" ("USB 10/100/1000 LAN"); the value reaches the laptop quoted.
        networkService: text('"Wi-Fi"').regex(/^[A-Za-z0-9 ._()/,+-]{1,64}$/, { error: 'must be a network service name as `networksetup -listallnetworkservices` prints it, such as "Wi-Fi"' }).default("Wi-Fi"),
    })
    .strict();

export const portForwardSchema = z
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
        dns: z.array(resolverAddress('"9.9.9.9"')).default(["9.9.9.9", "2620:fe::fe"]),
        hostIndex: z.number().int().min(2).optional(),
        allowedIps: z.array(cidr("any", '"192.168.200.0/24"')).default([]),
        // allowedIps outside private/ULA space are refused unless this says the peer owns them.
        allowPublicPrefixes: z.boolean({ error: "must be true or false" }).default(false),
        canReach: z.array(name('"home"')).default([]),
    })
    .strict();

/**
 * A gateway besides the one the top-level keys describe (issue "two clouds"): its own
 * placement, host or instance, tunnel block and port. SSH keys and adminCidrs are the stack's.
 * Sites join every gateway and send guest traffic through one at a time, in this order
 * after the first; unset interface settings are the first gateway's.
 */
const extraGatewaySchema = z
    .object({
        name: name('"ovh"'),
        placement: z.enum(["existing", "oci", "ovh"], { error: 'must be one of "existing", "oci" or "ovh"' }),
        existing: connection.optional(),
        oci: ociSchema.optional(),
        ovh: ovhSchema.optional(),
        wgInterface: interfaceName('"wg0"').optional(),
        listenPort: port(51820).optional(),
        tunnelMtu: z.number().int().min(1280).max(8920).optional(),
        tunnelCidr: cidr(4, '"10.67.0.0/24"'),
        tunnelCidrV6: cidr(6, '"fd66:67:67::/64"'),
    })
    .strict();

/** How a site with more than one gateway decides which one carries guest traffic. */
const failoverSchema = z
    .object({
        // One probe per gateway per interval: a ping to its tunnel address through its tunnel.
        probeIntervalSeconds: z.number().int().min(1).max(60).default(2),
        // Consecutive failed probes before a gateway counts as down.
        failAfter: z.number().int().min(1).max(20).default(3),
        // A preferred gateway must answer this long without a miss before traffic goes back to it.
        failbackAfterSeconds: z.number().int().min(0).max(86400).default(60),
    })
    .strict();

// ---------------------------------------------------------------------------
// The key table. Pulumi.yaml declares exactly these keys (a test keeps them in step).

const PLACEMENTS = ["existing", "oci", "ovh"] as const;
export type Placement = (typeof PLACEMENTS)[number];

export const KEY_SCHEMAS = {
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
    // More than one gateway: the top-level keys describe the first, these the others.
    gateways: z.array(extraGatewaySchema, { error: "must be a list of gateways" }),
    failover: failoverSchema,
} as const;

export type ConfigKey = keyof typeof KEY_SCHEMAS;
export const CONFIG_KEYS = Object.keys(KEY_SCHEMAS) as ConfigKey[];

/** Keys whose value must be stored encrypted (`pulumi config set --secret`). */
export const SECRET_KEYS: readonly ConfigKey[] = ["sshPrivateKey", "sshPrivateKeyPassword"];

/** Keys of the stack that runs the gateway; a site or laptop stack (gatewayStack) must leave them at their defaults. */
export const GATEWAY_KEYS: readonly ConfigKey[] = ["placement", "existing", "oci", "ovh", "adminCidrs", "allowWorldSsh", "sshPublicKey", "peers", "peerStacks", "wgInterface", "listenPort", "tunnelCidr", "tunnelCidrV6", "tunnelMtu", "gateways", "failover"];

export type SiteConfig = z.output<typeof siteSchema>;
export type NetworkConfig = z.output<typeof networkSchema>;
export type GuestConfig = z.output<typeof guestSchema>;
export type PeerConfig = z.output<typeof peerSchema>;
export type LaptopConfig = z.output<typeof laptopSchema>;
export type ConnectionConfig = z.output<typeof connection>;
export type OciConfig = z.output<typeof ociSchema>;
export type OvhConfig = z.output<typeof ovhSchema>;
export type ExtraGatewayConfig = z.output<typeof extraGatewaySchema>;
export type FailoverConfig = z.output<typeof failoverSchema>;

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

export const remotePeerSchema = z
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
