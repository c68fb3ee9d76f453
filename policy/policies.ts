// The wgexit policy pack's rules, as plain policy objects so they can be unit-tested with
// fabricated arguments (no engine). policy/index.ts serves them as a pack:
//   pulumi preview --policy-pack policy
import type { PolicyConfigSchema, ReportViolation, ResourceValidationPolicy, StackValidationPolicy } from "@pulumi/policy";

const WORLD = new Set(["0.0.0.0/0", "::/0"]);
const SECURITY_LIST = "oci:Core/securityList:SecurityList";
const NSG_RULE = "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule";
const OCI_INSTANCE = "oci:Core/instance:Instance";
const OVH_INSTANCE = "ovh:CloudProject/instance:Instance";
const STACK = "pulumi:pulumi:Stack";

interface PortRange {
    min?: number;
    max?: number;
}

/** One ingress rule, as OCI's security lists and NSG rules spell it. */
interface IngressRule {
    protocol?: string;
    source?: string;
    description?: string;
    tcpOptions?: PortRange & { destinationPortRange?: PortRange };
    udpOptions?: PortRange & { destinationPortRange?: PortRange };
    icmpOptions?: { type?: number; code?: number };
}

export interface PublicPortsConfig {
    allowWorldSsh: boolean;
    wireguardPort: number;
    /** Port forwards the stack declares, as "tcp/443" or "udp/27015". */
    forwardedPorts: string[];
}

const publicPortsSchema: PolicyConfigSchema = {
    properties: {
        allowWorldSsh: { type: "boolean", default: false },
        wireguardPort: { type: "integer", default: 51820 },
        forwardedPorts: { type: "array", items: { type: "string", pattern: "^(tcp|udp)/[0-9]{1,5}$" }, default: [] },
    },
};

/** OCI's ingress rules of a security list or an NSG rule, with who they are open to. */
function ingressRules(type: string, props: Record<string, unknown>): IngressRule[] {
    if (type === SECURITY_LIST) return (props.ingressSecurityRules as IngressRule[] | undefined) ?? [];
    if (type === NSG_RULE && props.direction === "INGRESS") return [props as IngressRule];
    return [];
}

function ports(rule: IngressRule, options: "tcpOptions" | "udpOptions"): PortRange {
    const o = rule[options];
    // No options means every port; NSG rules nest the range one level deeper.
    return { min: o?.destinationPortRange?.min ?? o?.min ?? 1, max: o?.destinationPortRange?.max ?? o?.max ?? 65535 };
}

const covers = (r: PortRange, port: number) => (r.min ?? 1) <= port && port <= (r.max ?? 65535);
const exactly = (r: PortRange, port: number) => r.min === port && r.max === port;

function describeRule(rule: IngressRule): string {
    return `${rule.description ? `"${rule.description}" ` : ""}(protocol ${rule.protocol}, from ${rule.source})`;
}

/** Is this world-open ingress rule one the stack is allowed to have? */
export function isAllowedPublicRule(rule: IngressRule, c: PublicPortsConfig): boolean {
    if (rule.protocol === "17" && exactly(ports(rule, "udpOptions"), c.wireguardPort)) return true;
    // Path MTU discovery: "fragmentation needed" (ICMP 3/4) and "packet too big" (ICMPv6 2).
    if (rule.protocol === "1" && rule.icmpOptions?.type === 3 && rule.icmpOptions.code === 4) return true;
    if (rule.protocol === "58" && rule.icmpOptions?.type === 2) return true;
    if (rule.protocol === "6" && c.allowWorldSsh && exactly(ports(rule, "tcpOptions"), 22)) return true;
    for (const forward of c.forwardedPorts) {
        const [proto, port] = forward.split("/");
        const options = proto === "tcp" ? "tcpOptions" : "udpOptions";
        if (rule.protocol === (proto === "tcp" ? "6" : "17") && exactly(ports(rule, options), Number(port))) return true;
    }
    return false;
}

export const sshNotOpenToTheWorld: ResourceValidationPolicy = {
    name: "ssh-not-open-to-the-world",
    description: "SSH (TCP 22) is never open to 0.0.0.0/0 or ::/0 unless allowWorldSsh is set.",
    enforcementLevel: "mandatory",
    configSchema: { properties: { allowWorldSsh: { type: "boolean", default: false } } },
    validateResource: (args, reportViolation) => {
        if (args.getConfig<{ allowWorldSsh: boolean }>().allowWorldSsh) return;
        for (const rule of ingressRules(args.type, args.props)) {
            if (!WORLD.has(rule.source ?? "")) continue;
            const tcp = rule.protocol === "6" || rule.protocol === "all";
            if (tcp && covers(ports(rule, "tcpOptions"), 22)) {
                reportViolation(`${describeRule(rule)} opens SSH to the whole internet; list your own address in adminCidrs, or set the policy's allowWorldSsh`);
            }
        }
    },
};

export const onlyWireGuardIsPublic: ResourceValidationPolicy = {
    name: "only-wireguard-is-public",
    description: "From the whole internet, only the WireGuard UDP port (plus path-MTU ICMP and declared port forwards) is open.",
    enforcementLevel: "mandatory",
    configSchema: publicPortsSchema,
    validateResource: (args, reportViolation) => {
        const c = args.getConfig<PublicPortsConfig>();
        for (const rule of ingressRules(args.type, args.props)) {
            if (WORLD.has(rule.source ?? "") && !isAllowedPublicRule(rule, c)) {
                reportViolation(`${describeRule(rule)} is open to the whole internet; only UDP ${c.wireguardPort} (WireGuard) may be, or a port listed in forwardedPorts`);
            }
        }
    },
};

const PEM_PRIVATE_KEY = /-----BEGIN [A-Z ]*PRIVATE KEY-----/;
// A WireGuard key on a config line; placeholders such as "<your device's key>" do not match.
const WG_PRIVATE_KEY = /PrivateKey\s*=\s*[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=/;

export function containsPrivateKey(text: string): boolean {
    return PEM_PRIVATE_KEY.test(text) || WG_PRIVATE_KEY.test(text);
}

/** Every string in a value, with its property path. */
function strings(value: unknown, at: string, out: [string, string][] = []): [string, string][] {
    if (typeof value === "string") out.push([at, value]);
    else if (Array.isArray(value)) {
        for (const [i, v] of value.entries()) strings(v, `${at}[${i}]`, out);
    } else if (value && typeof value === "object") {
        for (const [k, v] of Object.entries(value)) strings(v, at ? `${at}.${k}` : k, out);
    }
    return out;
}

function userData(type: string, props: Record<string, unknown>): string | undefined {
    if (type === OCI_INSTANCE) {
        const encoded = (props.metadata as Record<string, string> | undefined)?.user_data;
        return encoded === undefined ? undefined : Buffer.from(encoded, "base64").toString("utf8");
    }
    if (type === OVH_INSTANCE) return props.userData as string | undefined;
    return undefined;
}

export const noPrivateKeyInUserDataOrOutputs: StackValidationPolicy = {
    name: "no-private-key-in-user-data-or-outputs",
    description: "No private key (PEM or WireGuard) appears in cloud-init user data or in the stack's outputs; keys are made on the hosts.",
    enforcementLevel: "mandatory",
    configSchema: { properties: { secretOutputs: { type: "array", items: { type: "string" }, default: ["clientConfigs"] } } },
    validateStack: (args, reportViolation: ReportViolation) => {
        const { secretOutputs } = args.getConfig<{ secretOutputs: string[] }>();
        for (const r of args.resources) {
            const data = userData(r.type, r.props);
            if (data !== undefined && containsPrivateKey(data)) reportViolation(`the user data of ${r.name} carries a private key; keys are made on the host`, r.urn);
            if (r.type !== STACK) continue;
            for (const [at, text] of strings(r.props, "")) {
                // Outputs the program always wraps in pulumi.secret (generated client configs).
                if (secretOutputs.includes(at.split(/[.[]/)[0])) continue;
                if (containsPrivateKey(text)) reportViolation(`stack output ${at} carries a private key`, r.urn);
            }
        }
    },
};

/** Where the program passes secret material, always through pulumi.secret or a secret config value. */
const SECRET_FIELDS: Record<string, string[]> = {
    "command:remote:Command": ["connection.privateKey", "connection.password"],
    "command:remote:CopyToRemote": ["connection.privateKey", "connection.password"],
};

export const secretsStaySecret: StackValidationPolicy = {
    name: "secrets-stay-secret",
    description:
        "Private keys appear only in the fields that carry the stack's secret config (an SSH connection's privateKey), never in commands, tags, names or other inputs where Pulumi would store them in plain text.",
    enforcementLevel: "mandatory",
    validateStack: (args, reportViolation) => {
        for (const r of args.resources) {
            if (r.type === STACK) continue;
            const allowed = SECRET_FIELDS[r.type] ?? [];
            for (const [at, text] of strings(r.props, "")) {
                if (allowed.includes(at)) continue;
                if (containsPrivateKey(text)) reportViolation(`${r.type} ${r.name}: ${at} carries a private key; pass it as a secret config value (pulumi config set --secret) to the connection only`, r.urn);
            }
        }
    },
};

export const POLICIES = [sshNotOpenToTheWorld, onlyWireGuardIsPublic, noPrivateKeyInUserDataOrOutputs, secretsStaySecret];
