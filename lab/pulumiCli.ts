// The Pulumi CLI's config handling, as `pulumi up` / `preview` apply it before a program
// starts, so that the lab and the tests hand the program exactly what the CLI would, and
// refuse what the CLI would refuse. Ported from pulumi/pulumi (v3.259):
//   - pkg/workspace/config.go `mergeConfig` (reached from ValidateStackConfigAndApplyProjectConfig
//     in `up`/`preview`): a project-namespace key with no `default`/`value` that the stack does not
//     set is missing; every other unset key gets its default injected;
//   - pkg/workspace/config.go `validateStackConfigValue`: `secret: true` keys must be stored
//     encrypted, typed keys must match their type;
//   - sdk/go/common/workspace/project.go `ValidateConfigValue`, `InferFullTypeName` and
//     `Project.Validate` (a default must match its type; arrays need `items`);
//   - sdk/go/common/resource/config/object.go `MarshalString`: the program receives scalars as
//     their text (YAML numbers and booleans as JSON text) and objects/arrays as JSON.
import * as fs from "node:fs";
import * as path from "node:path";
import { parse as parseYaml } from "yaml";

interface ItemsType {
    type: string;
    items?: ItemsType;
}

export interface ProjectConfigType {
    type?: string;
    description?: string;
    items?: ItemsType;
    default?: unknown;
    value?: unknown;
    secret?: boolean;
}

export interface Project {
    name: string;
    config: Record<string, ProjectConfigType>;
}

/** The CLI stopped before the program ran; the message is the CLI's own. */
export class CliConfigError extends Error {}

const REPO = path.join(__dirname, "..");

export function readProject(file = path.join(REPO, "Pulumi.yaml")): Project {
    const p = parseYaml(fs.readFileSync(file, "utf8")) as { name: string; config?: Record<string, ProjectConfigType> };
    return { name: p.name, config: p.config ?? {} };
}

/** A stack file's `config:` map ("ns:key" → value as YAML gives it). */
export function readStackFile(file: string): Record<string, unknown> {
    return ((parseYaml(fs.readFileSync(file, "utf8")) as { config?: Record<string, unknown> } | null)?.config ?? {}) as Record<string, unknown>;
}

/** project.go InferFullTypeName. */
function fullTypeName(type: string, items?: ItemsType): string {
    return items ? `array<${fullTypeName(items.type, items.items)}>` : type;
}

/** project.go ValidateConfigValue. */
export function validateConfigValue(type: string, items: ItemsType | undefined, value: unknown): boolean {
    if (type === "string") return typeof value === "string";
    if (type === "integer") {
        if (typeof value === "number") return Number.isInteger(value);
        // strconv.Atoi: an optional sign and decimal digits.
        return typeof value === "string" && /^[+-]?[0-9]+$/.test(value);
    }
    if (type === "boolean") return value === "true" || value === "false" || typeof value === "boolean";
    if (type === "object") return typeof value === "object" && value !== null && !Array.isArray(value);
    if (!Array.isArray(value) || !items) return false;
    return value.every((item) => validateConfigValue(items.type, items.items, item));
}

/** Project.Validate, for the project's own namespace. */
export function validateProject(project: Project): void {
    for (const [key, t] of Object.entries(project.config)) {
        if (t.default !== undefined && t.value !== undefined) throw new CliConfigError(`project config '${key}' cannot have both a 'default' and 'value' attribute`);
        if (t.type === "array" && !t.items) throw new CliConfigError(`The configuration key '${key}' declares an array but does not specify the underlying type via the 'items' attribute`);
        if (t.type && t.default !== undefined && !validateConfigValue(t.type, t.items, t.default)) {
            throw new CliConfigError(`The default value specified for configuration key '${key}' is not of the expected type '${fullTypeName(t.type, t.items)}'`);
        }
    }
}

/** config.go formatMissingKeys + missingStackConfigurationKeysError. */
function missingKeysError(stack: string, keys: string[]): CliConfigError {
    const sorted = [...keys].sort();
    const list = sorted.length === 1 ? `'${sorted[0]}'` : `${sorted.slice(0, -1).map((k, i) => (i === sorted.length - 2 ? `'${k}' ` : `'${k}', `)).join("")}and '${sorted[sorted.length - 1]}'`;
    return new CliConfigError(`Stack '${stack}' is missing configuration value${keys.length > 1 ? "s" : ""} ${list}`);
}

/** A stack value as the program receives it (object.go MarshalString), and whether it is an object. */
function asProgramText(value: unknown): { text: string; object: boolean } {
    if (typeof value === "string") return { text: value, object: false };
    if (typeof value === "number" || typeof value === "boolean") return { text: JSON.stringify(value), object: false };
    return { text: JSON.stringify(value), object: true };
}

export interface CliConfig {
    /** "ns:key" → text, as `pulumi.runtime.allConfig()` returns it in the program. */
    config: Record<string, string>;
    /** The keys stored encrypted. */
    secretKeys: string[];
}

/**
 * What the CLI hands the program for one stack: the stack file's values (`secure` ones given
 * here in plain text, listed in `secureKeys`) with the project's defaults injected, after the
 * CLI's checks. Throws CliConfigError with the CLI's message where it would stop.
 */
export function cliConfig(project: Project, stackName: string, stackValues: Record<string, unknown>, secureKeys: readonly string[] = []): CliConfig {
    validateProject(project);
    const merged = new Map<string, { text: string; object: boolean; secure: boolean }>();
    for (const [key, value] of Object.entries(stackValues)) {
        if (value === undefined || value === null) continue;
        merged.set(key, { ...asProgramText(value), secure: secureKeys.includes(key) });
    }
    const missing: string[] = [];
    for (const key of Object.keys(project.config).sort()) {
        const t = project.config[key];
        const full = key.includes(":") ? key : `${project.name}:${key}`;
        if (merged.has(full)) continue;
        const fallback = t.value ?? t.default;
        if (fallback === undefined) {
            if (full.startsWith(`${project.name}:`)) missing.push(key);
            continue;
        }
        // createConfigValue: primitives as fmt.Sprintf("%v"), anything else as a JSON object value.
        const primitive = typeof fallback === "string" || typeof fallback === "number" || typeof fallback === "boolean";
        merged.set(full, { text: primitive ? String(fallback) : JSON.stringify(fallback), object: !primitive, secure: false });
    }
    if (missing.length) throw missingKeysError(stackName, missing);
    for (const key of Object.keys(project.config).sort()) {
        const t = project.config[key];
        const full = key.includes(":") ? key : `${project.name}:${key}`;
        const v = merged.get(full);
        if (!v) continue;
        if (t.secret && !v.secure) throw new CliConfigError(`Stack '${stackName}' with configuration key '${key}' must be encrypted as it's secret`);
        if (t.type && !validateConfigValue(t.type, t.items, v.object ? JSON.parse(v.text) : v.text)) {
            throw new CliConfigError(`Stack '${stackName}' with configuration key '${key}' must be of type '${fullTypeName(t.type, t.items)}'`);
        }
    }
    return {
        config: Object.fromEntries([...merged].map(([k, v]) => [k, v.text])),
        secretKeys: [...merged].filter(([, v]) => v.secure).map(([k]) => k),
    };
}
