// Reads the whole stack config, validates it, and reports every problem at once.
// Nothing here registers a resource: index.ts calls loadStackConfig() first, so bad
// input stops the program before anything is created.
// The schema is in config.schema.ts, address allocation in config.allocate.ts, the
// cross-checks in config.checks.ts; this file reads the raw config and puts them together.
import * as fs from "node:fs";
import * as path from "node:path";
import { isDeepStrictEqual } from "node:util";
import * as pulumi from "@pulumi/pulumi";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { allocatePeers, type PortForward, type ResolvedSite, resolvePortForwards, resolveSites, type TunnelPeer } from "./config.allocate";
import { checkHosts, checkNames, checkOverlaps, checkRoutedPrefixes } from "./config.checks";
import { type ExtraGateway, type GatewaySettingsConfig, checkForwardsOnGateways, checkSitesForGateways, resolveExtraGateways } from "./config.gateways";
import {
    CONFIG_KEYS,
    ConfigError,
    type ConfigKey,
    type ConfigProblem,
    type ConnectionConfig,
    type FailoverConfig,
    GATEWAY_KEYS,
    KEY_SCHEMAS,
    type LaptopConfig,
    type OciConfig,
    type OvhConfig,
    type PeerConfig,
    type Placement,
    PROJECT,
    privateKeyIsEncrypted,
    SECRET_KEYS,
} from "./config.schema";
import { hostAt, parseCidr } from "./net";

export * from "./config.allocate";
export * from "./config.gateways";
export * from "./config.schema";

export interface StackConfig {
    placement: Placement;
    gateway: GatewaySettingsConfig;
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
    /** Gateways after the first (key gateways), in the order sites prefer them. */
    extraGateways: ExtraGateway[];
    failover: FailoverConfig;
    /** Split layout: the stack whose gateway this stack's sites and laptops join. */
    gatewayStack?: string;
    /** Split layout: the stacks whose sites and laptops this gateway takes as peers. */
    peerStacks: string[];
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
                problems.push({ key: where, message: issue.message });
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

    // World-open SSH needs an explicit opt-in, also when the world comes in slices: no IPv4
    // prefix shorter than /8 and no IPv6 prefix shorter than /16 (0.0.0.0/1 + 128.0.0.0/1 is /0).
    (v.adminCidrs ?? []).forEach((c, i) => {
        const parsed = parseCidr(c);
        if (!parsed || v.allowWorldSsh === true) return;
        const widest = parsed.family === 4 ? 8 : 16;
        if (parsed.prefix === 0) {
            problems.push({
                key: `${PROJECT}:adminCidrs[${i}]`,
                message: `"${c}" opens SSH to the whole internet; list your own address instead (for example "203.0.113.7/32"), or set allowWorldSsh: true if you really mean it`,
            });
        } else if (parsed.prefix < widest) {
            problems.push({
                key: `${PROJECT}:adminCidrs[${i}]`,
                message: `"${c}" opens SSH to 1/${2 ** parsed.prefix} of the internet (IPv${parsed.family} prefixes must be /${widest} or longer); list your own address instead (for example "203.0.113.7/32"), or set allowWorldSsh: true if you really mean it`,
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
    checkHosts(v.sites ?? [], v.laptops ?? [], problems);
    checkRoutedPrefixes(v, problems);

    const tunnelV4Parsed = typeof v.tunnelCidr === "string" ? parseCidr(v.tunnelCidr) : undefined;
    const tunnelV6Parsed = typeof v.tunnelCidrV6 === "string" ? parseCidr(v.tunnelCidrV6) : undefined;
    const firstSettings =
        tunnelV4Parsed && tunnelV6Parsed
            ? {
                  wgInterface: v.wgInterface as string,
                  listenPort: v.listenPort as number,
                  tunnelMtu: v.tunnelMtu as number,
                  tunnelCidr: tunnelV4Parsed.text,
                  tunnelCidrV6: tunnelV6Parsed.text,
                  addressV4: hostAt(tunnelV4Parsed, 1),
                  addressV6: hostAt(tunnelV6Parsed, 1),
                  adminCidrs: (v.adminCidrs ?? []).map((c) => parseCidr(c)?.text ?? c),
                  allowWorldSsh: v.allowWorldSsh ?? false,
              }
            : undefined;
    const extraGateways = resolveExtraGateways(v.gateways ?? [], { settings: firstSettings, placement, existing: v.existing }, tunnelPeers, { sites: v.sites ?? [], laptops: v.laptops ?? [] }, problems);
    checkForwardsOnGateways(v.portForwards ?? [], extraGateways, problems);
    if (extraGateways.length) checkSitesForGateways(v.sites ?? [], v.laptops ?? [], extraGateways.length + 1, problems);

    if (problems.length > 0) throw new ConfigError(problems);

    return {
        placement: placement as Placement,
        // Both tunnel blocks parsed (no problems were found), so the first gateway's settings exist.
        gateway: firstSettings as GatewaySettingsConfig,
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
        extraGateways,
        failover: v.failover ?? KEY_SCHEMAS.failover.parse({}),
        gatewayStack: v.gatewayStack,
        peerStacks: v.peerStacks ?? [],
    };
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
