// Plain-words messages for the config schema's generic checks (issue #14): where a field has no
// message of its own (z.number().int().min(64), z.boolean(), a .strict() object), zod would say
// "Invalid input: expected number, received string"; this says what is wrong with the value and
// what to give instead. config.schema.ts registers it with z.config({ customError }).
// Precedence (zod v4 finalizeIssue): a check's own `error`, then its schema's `error`, then the
// parse call's, then this; so every message written in the schema keeps winning.
import type { z } from "zod";

type RawIssue = z.core.$ZodRawIssue;
type Schema = z.core.$ZodType;

/** The README section that lists every key and field. */
const README_TABLE = 'README "Config reference"';

/** A value as the user wrote it, short enough for one line. */
export function showValue(value: unknown): string {
    if (value === undefined) return "nothing";
    if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value);
    if (value === null) return "null";
    let text: string;
    try {
        text = JSON.stringify(value) ?? String(value);
    } catch {
        text = String(value);
    }
    return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function quoteList(values: readonly unknown[]): string {
    const shown = values.map((v) => (typeof v === "string" ? JSON.stringify(v) : String(v)));
    return shown.length <= 1 ? (shown[0] ?? "") : `${shown.slice(0, -1).join(", ")} or ${shown[shown.length - 1]}`;
}

function plural(n: number | bigint, one: string, many: string): string {
    return `${n} ${Number(n) === 1 ? one : many}`;
}

// ---------------------------------------------------------------------------
// Numbers: the bounds and wholeness a number schema holds values to, read from its checks.

interface NumberRule {
    whole: boolean;
    min?: { value: number | bigint; inclusive: boolean };
    max?: { value: number | bigint; inclusive: boolean };
}

function numberRule(schema: Schema | undefined): NumberRule {
    const rule: NumberRule = { whole: false };
    if (!schema) return rule;
    const own = schema._zod.def as z.core.$ZodTypeDef & Partial<z.core.$ZodCheckNumberFormatDef>;
    if (own.check === "number_format" && own.format !== "float32" && own.format !== "float64") rule.whole = true;
    for (const check of (schema._zod.def.checks ?? []) as z.core.$ZodChecks[]) {
        const def = check._zod.def;
        if (def.check === "number_format" || def.check === "bigint_format") {
            if (def.format !== "float32" && def.format !== "float64") rule.whole = true;
        } else if (def.check === "multiple_of") {
            if (Number(def.value) === 1) rule.whole = true;
        } else if (def.check === "greater_than") {
            const value = def.value as number | bigint;
            if (rule.min === undefined || value > rule.min.value) rule.min = { value, inclusive: def.inclusive };
        } else if (def.check === "less_than") {
            const value = def.value as number | bigint;
            if (rule.max === undefined || value < rule.max.value) rule.max = { value, inclusive: def.inclusive };
        }
    }
    return rule;
}

/** "a number", "a whole number of at least 64", "a number greater than 0", "a whole number from 0 to 2". */
function describeNumber(rule: NumberRule): string {
    const kind = rule.whole ? "a whole number" : "a number";
    const { min, max } = rule;
    if (min && max && min.inclusive && max.inclusive) return `${kind} from ${min.value} to ${max.value}`;
    const parts: string[] = [];
    if (min) parts.push(min.inclusive ? `of at least ${min.value}` : `greater than ${min.value}`);
    if (max) parts.push(max.inclusive ? `${min ? "and " : ""}of at most ${max.value}` : `${min ? "and " : ""}less than ${max.value}`);
    return parts.length ? `${kind} ${parts.join(" ")}` : kind;
}

/** The number rule of the schema an issue belongs to, with the bound the issue reports taking precedence. */
function issueNumberRule(iss: RawIssue): NumberRule {
    const rule = numberRule(iss.schema ?? (iss.inst as Schema | undefined));
    if (iss.code === "too_small") rule.min = { value: iss.minimum, inclusive: iss.inclusive !== false };
    if (iss.code === "too_big") rule.max = { value: iss.maximum, inclusive: iss.inclusive !== false };
    if (iss.code === "invalid_type" && iss.expected === "int") rule.whole = true;
    if (iss.origin === "int") rule.whole = true;
    return rule;
}

// ---------------------------------------------------------------------------
// Objects: the keys an object schema takes, required first.

function objectShape(schema: unknown): Record<string, Schema> | undefined {
    const def = (schema as Schema | undefined)?._zod?.def as Partial<z.core.$ZodObjectDef> | undefined;
    return def?.type === "object" && def.shape ? (def.shape as Record<string, Schema>) : undefined;
}

/** "name, image (required); mac, hostIndex, ... (optional)" */
function describeKeys(shape: Record<string, Schema>): string {
    const keys = Object.keys(shape);
    const required = keys.filter((k) => shape[k]._zod.optin === undefined);
    const optional = keys.filter((k) => shape[k]._zod.optin !== undefined);
    if (!required.length) return optional.join(", ");
    if (!optional.length) return required.join(", ");
    return `${required.join(", ")} (required); ${optional.join(", ")} (optional)`;
}

function editDistance(a: string, b: string): number {
    let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
        const current = [i];
        for (let j = 1; j <= b.length; j++) {
            current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
        }
        previous = current;
    }
    return previous[b.length];
}

/** The known key an unknown one is most likely a misspelling of. */
function closestKey(unknown: string, known: string[]): string | undefined {
    const sameLetters = known.find((k) => k.toLowerCase() === unknown.toLowerCase());
    if (sameLetters) return sameLetters;
    let best: string | undefined;
    let bestDistance = Math.max(1, Math.min(2, Math.floor(unknown.length / 4)));
    for (const k of known) {
        const d = editDistance(unknown.toLowerCase(), k.toLowerCase());
        if (d <= bestDistance) {
            best = k;
            bestDistance = d - 1;
        }
    }
    return best;
}

// ---------------------------------------------------------------------------
// The messages, one per issue kind.

/** What a value of the expected type is, for "must be ..." and "give ...". */
function expectedValue(iss: RawIssue & { code: "invalid_type" }): string {
    switch (iss.expected) {
        case "number":
        case "int":
        case "bigint":
            return describeNumber(issueNumberRule(iss));
        case "boolean":
            return "true or false";
        case "string":
            return "a string";
        case "array":
        case "tuple":
        case "set":
            return "a list";
        case "object":
        case "record":
        case "map":
            return "an object";
        case "null":
            return "null";
        case "undefined":
        case "never":
        case "void":
            return "left out";
        default:
            return `a ${iss.expected}`;
    }
}

function invalidType(iss: RawIssue & { code: "invalid_type" }): string {
    const input = iss.input;
    const want = expectedValue(iss);
    const shape = iss.expected === "object" ? objectShape(iss.inst) : undefined;
    const keys = shape ? `; its keys are: ${describeKeys(shape)}` : "";
    if (input === undefined && want !== "left out") return `is required; give ${want}${keys}`;
    if (want === "left out") return `must be left out, got ${showValue(input)}`;
    let hint = "";
    if (typeof input === "string" && (iss.expected === "number" || iss.expected === "int") && input.trim() !== "" && Number.isFinite(Number(input))) {
        hint = `; write ${input.trim()} without quotes`;
    } else if (iss.expected === "boolean" && (input === "true" || input === "false")) {
        hint = `; write ${input} without quotes`;
    } else if (iss.expected === "array") {
        const entryShape = objectShape((iss.inst?._zod.def as Partial<z.core.$ZodArrayDef> | undefined)?.element);
        if (entryShape) hint = `; each entry is an object with keys: ${describeKeys(entryShape)}`;
        else if (input !== null && typeof input !== "object") hint = `; for one entry write [${showValue(input)}]`;
    } else if (iss.expected === "string" && (typeof input === "number" || typeof input === "boolean")) {
        hint = `; put it in quotes: "${input}"`;
    }
    return `must be ${want}, got ${showValue(input)}${hint}${keys}`;
}

function sizeWords(origin: string): [string, string] | undefined {
    switch (origin) {
        case "array":
        case "set":
            return ["entry", "entries"];
        case "string":
            return ["character", "characters"];
        case "file":
            return ["byte", "bytes"];
        case "map":
        case "record":
            return ["key", "keys"];
        default:
            return undefined;
    }
}

function sizeOf(input: unknown): number | undefined {
    if (typeof input === "string" || Array.isArray(input)) return input.length;
    if (input instanceof Set || input instanceof Map) return input.size;
    return undefined;
}

function tooSmallOrBig(iss: RawIssue & { code: "too_small" | "too_big" }): string {
    const small = iss.code === "too_small";
    const bound = small ? iss.minimum : iss.maximum;
    const words = sizeWords(iss.origin);
    if (words) {
        const size = sizeOf(iss.input);
        const got = size === undefined ? "" : `, got ${size}`;
        const [one, many] = words;
        if (iss.exact) return `needs exactly ${plural(bound, one, many)}${got}`;
        if (small) return iss.inclusive === false ? `needs more than ${plural(bound, one, many)}${got}` : `needs at least ${plural(bound, one, many)}${got}`;
        return iss.inclusive === false ? `needs fewer than ${plural(bound, one, many)}${got}` : `has too many ${many}: at most ${bound}${got}`;
    }
    if (iss.origin === "number" || iss.origin === "int" || iss.origin === "bigint") {
        return `must be ${describeNumber(issueNumberRule(iss))}, got ${showValue(iss.input)}`;
    }
    if (iss.origin === "date") {
        const when = new Date(Number(bound)).toISOString();
        return `must be ${small ? "on or after" : "on or before"} ${when}, got ${showValue(iss.input)}`;
    }
    return `must be ${small ? "at least" : "at most"} ${bound}, got ${showValue(iss.input)}`;
}

function unrecognizedKeys(iss: RawIssue & { code: "unrecognized_keys" }): string {
    const shape = objectShape(iss.inst);
    const known = shape ? Object.keys(shape) : [];
    const named = iss.keys.map((k) => {
        const guess = closestKey(k, known);
        return guess ? `"${k}" (did you mean "${guess}"?)` : `"${k}"`;
    });
    const head = `unknown key${iss.keys.length === 1 ? "" : "s"} ${named.join(", ")}`;
    if (!shape) return `${head}; check the spelling against ${README_TABLE}`;
    return `${head}; this object's keys are: ${known.join(", ")} (see ${README_TABLE})`;
}

function invalidFormat(iss: RawIssue & { code: "invalid_format" }): string {
    const got = showValue(iss.input);
    switch (iss.format) {
        case "regex":
            return `does not have the form this field takes (it must match ${iss.pattern ?? "its pattern"}), got ${got}`;
        case "starts_with":
            return `must start with ${showValue(iss.prefix)}, got ${got}`;
        case "ends_with":
            return `must end with ${showValue(iss.suffix)}, got ${got}`;
        case "includes":
            return `must contain ${showValue(iss.includes)}, got ${got}`;
        default:
            return `must be a valid ${iss.format}, got ${got}`;
    }
}

/**
 * zod v4 `customError`: a plain-words message for an issue no schema or check gave one.
 * Returns undefined only for an issue kind it does not know, leaving it to zod's locale.
 */
export function configIssueMessage(iss: RawIssue): string | undefined {
    switch (iss.code) {
        case "invalid_type":
            return invalidType(iss);
        case "too_small":
        case "too_big":
            return tooSmallOrBig(iss);
        case "not_multiple_of":
            return iss.divisor === 1 ? `must be a whole number, got ${showValue(iss.input)}` : `must be a multiple of ${iss.divisor}, got ${showValue(iss.input)}`;
        case "unrecognized_keys":
            return unrecognizedKeys(iss);
        case "invalid_value":
            if (iss.input === undefined) return `is required; give ${iss.values.length === 1 ? "" : "one of "}${quoteList(iss.values)}`;
            return iss.values.length === 1 ? `must be ${quoteList(iss.values)}, got ${showValue(iss.input)}` : `must be one of ${quoteList(iss.values)}, got ${showValue(iss.input)}`;
        case "invalid_format":
            return invalidFormat(iss);
        case "invalid_union":
            return `matches none of the forms this field takes, got ${showValue(iss.input)}`;
        case "invalid_key":
            return `has a key that is not allowed here: ${showValue(iss.input)}`;
        case "invalid_element":
            return `has an entry that is not allowed here: ${showValue(iss.key)}`;
        case "custom":
            return `is not accepted here, got ${showValue(iss.input)}`;
        default:
            return undefined;
    }
}
