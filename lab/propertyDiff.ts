// Property diffs and paths as the Pulumi engine computes them, for the lab engine. Ported from
// pulumi/pulumi (v3.259):
//   - sdk/go/common/resource/properties_diff.go `PropertyValue.diff`: arrays element by element,
//     objects key by key, anything else (a secret too: it wraps its value) compared whole;
//   - sdk/go/common/resource/plugin/provider.go `NewDetailedDiffFromObjectDiff`: the paths of
//     a detailed diff ("connection", "triggers[4].host");
//   - sdk/go/common/resource/properties_path.go `ParsePropertyPath`, `Contains`, `Reset`;
//   - pkg/resource/deploy/step_generator.go `processIgnoreChanges` (ignored paths take the old
//     value) and `applyReplaceOnChanges` (a changed path under a replaceOnChanges path replaces).
import { isDeepStrictEqual } from "node:util";
import * as pulumi from "@pulumi/pulumi";

export type PathPart = string | number;
export type Kind = "add" | "delete" | "update";

/** A value the engine does not know yet (preview); it differs from anything. */
export const isUnknown = (v: unknown): boolean => pulumi.isUnknown(v);

/** "a.b[0].c" or 'a["b.c"]' → parts. */
export function parsePath(text: string): PathPart[] {
    const parts: PathPart[] = [];
    const re = /([^.[\]]+)|\[(\d+|\*)\]|\["([^"]*)"\]/g;
    for (const m of text.matchAll(re)) {
        if (m[1] !== undefined) parts.push(m[1]);
        else if (m[2] !== undefined) parts.push(m[2] === "*" ? "*" : Number(m[2]));
        else parts.push(m[3]);
    }
    return parts;
}

export function formatPath(parts: PathPart[]): string {
    return parts.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

/** properties_path.go Contains: `outer` is a prefix of `inner`; "*" matches any key or index. */
export function pathContains(outer: PathPart[], inner: PathPart[]): boolean {
    if (inner.length < outer.length) return false;
    return outer.every((p, i) => p === "*" || p === inner[i]);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v) && !isUnknown(v);

/** The detailed diff (path → kind) between old and new inputs. Absent keys and null are alike. */
export function detailedDiff(olds: Record<string, unknown>, news: Record<string, unknown>): Map<string, Kind> {
    const out = new Map<string, Kind>();
    const walk = (prefix: PathPart[], a: unknown, b: unknown) => {
        if (Array.isArray(a) && Array.isArray(b)) {
            for (let i = 0; i < Math.max(a.length, b.length); i++) {
                if (i >= a.length) out.set(formatPath([...prefix, i]), "add");
                else if (i >= b.length) out.set(formatPath([...prefix, i]), "delete");
                else walk([...prefix, i], a[i], b[i]);
            }
        } else if (isObject(a) && isObject(b)) {
            objects(prefix, a, b);
        } else if (isUnknown(b) || !isDeepStrictEqual(a, b)) {
            out.set(formatPath(prefix), a == null ? "add" : b == null ? "delete" : "update");
        }
    };
    const objects = (prefix: PathPart[], a: Record<string, unknown>, b: Record<string, unknown>) => {
        for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
            const [x, y] = [a[k] ?? null, b[k] ?? null];
            if (x === null && y === null) continue;
            if (x === null) out.set(formatPath([...prefix, k]), "add");
            else if (y === null) out.set(formatPath([...prefix, k]), "delete");
            else walk([...prefix, k], x, y);
        }
    };
    objects([], olds, news);
    return out;
}

/** True when any changed path lies under one of `paths` (applyReplaceOnChanges). */
export function touches(diff: Map<string, Kind>, paths: readonly string[]): boolean {
    const outer = paths.map(parsePath);
    return [...diff.keys()].some((k) => outer.some((o) => pathContains(o, parsePath(k))));
}

/** processIgnoreChanges: each ignored path takes its old value in the new inputs (when both have it). */
export function applyIgnoreChanges(olds: Record<string, unknown>, news: Record<string, unknown>, ignore: readonly string[]): Record<string, unknown> {
    const result = structuredCloneKeepingUnknowns(news);
    for (const text of ignore) {
        const parts = parsePath(text);
        let from: unknown = olds;
        let to: unknown = result;
        for (let i = 0; i < parts.length - 1; i++) {
            from = (from as Record<PathPart, unknown> | undefined)?.[parts[i]];
            to = (to as Record<PathPart, unknown> | undefined)?.[parts[i]];
        }
        const last = parts[parts.length - 1];
        if (from && to && typeof from === "object" && typeof to === "object" && last in (from as object)) {
            (to as Record<PathPart, unknown>)[last] = (from as Record<PathPart, unknown>)[last];
        }
    }
    return result;
}

function structuredCloneKeepingUnknowns<T>(v: T): T {
    if (Array.isArray(v)) return v.map(structuredCloneKeepingUnknowns) as T;
    if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, structuredCloneKeepingUnknowns(x)])) as T;
    return v;
}

/** Whether a value holds an unknown anywhere. */
export function containsUnknown(v: unknown): boolean {
    if (isUnknown(v)) return true;
    if (Array.isArray(v)) return v.some(containsUnknown);
    if (isObject(v)) return Object.values(v).some(containsUnknown);
    return false;
}
