// Helpers shared by every renderer that delivers shell to a host. The shell itself lives in
// components/scripts/ as plain files; renderers only produce the settings they read.
import * as fs from "node:fs";
import * as path from "node:path";

const SCRIPTS_DIR = path.join(__dirname, "scripts");

/** A script from components/scripts/, as it is delivered: verbatim. */
export function scriptFile(name: string): string {
    return fs.readFileSync(path.join(SCRIPTS_DIR, name), "utf8");
}

/** A short step script run as the command itself, its settings assigned in front of it. */
export function scriptWithSettings(name: string, settings: Record<string, string | number>): string {
    return `${assignments(settings)}\n${scriptFile(name)}`;
}

/** POSIX single-quote quoting: safe for any string. */
export function shq(value: string | number): string {
    return `'${String(value).replace(/'/g, `'\\''`)}'`;
}

/** A bash `NAME='value'` assignment block. */
export function assignments(values: Record<string, string | number>): string {
    return Object.entries(values)
        .map(([k, v]) => `${k}=${shq(v)}`)
        .join("\n");
}

/** A role's settings.env: what its script reads, one assignment per line. */
export function settingsFile(values: Record<string, string | number>): string {
    return `# Settings of this role, written by wgexit; its script sources this file.\n# shellcheck disable=SC2034 # read by that script\n${assignments(values)}\n`;
}

export interface FileToWrite {
    path: string;
    content: string;
    mode: string;
}

/**
 * The command a connection runs to install files and then run one command as root.
 * It is a single string, so @pulumi/command sends it to the host's shell unchanged;
 * each file travels as a quoted heredoc, so nothing in it is expanded.
 */
export function deliverAndRun(files: FileToWrite[], command: string, preflight?: string): string {
    const lines = ["set -eu", 'S=""; [ "$(id -u)" = 0 ] || S="sudo -n"'];
    if (preflight) lines.push(preflight);
    for (const f of files) {
        const dir = f.path.replace(/\/[^/]+$/, "");
        const marker = `WGEXIT_${f.path.replace(/[^A-Za-z0-9]/g, "_").toUpperCase()}_EOF`;
        if (f.content.includes(marker)) throw new Error(`file ${f.path} contains its own heredoc marker`);
        lines.push(`$S mkdir -p ${shq(dir)}`);
        lines.push(`$S tee ${shq(`${f.path}.new`)} >/dev/null <<'${marker}'`);
        lines.push(f.content.replace(/\n$/, ""));
        lines.push(marker);
        lines.push(`$S chmod ${f.mode} ${shq(`${f.path}.new`)}`);
        lines.push(`$S mv -f ${shq(`${f.path}.new`)} ${shq(f.path)}`);
    }
    lines.push(`$S ${command}`);
    return `${lines.join("\n")}\n`;
}

/**
 * A role's files in its directory: settings.env, the role script (executable) and the shared
 * scripts it sources, each from components/scripts/.
 */
export function roleFiles(dir: string, role: { script: string; as: string }, settings: string, shared: string[]): FileToWrite[] {
    return [
        { path: `${dir}/settings.env`, content: settings, mode: "0644" },
        ...shared.map((name) => ({ path: `${dir}/${name}`, content: scriptFile(name), mode: "0644" })),
        { path: `${dir}/${role.as}`, content: scriptFile(role.script), mode: "0755" },
    ];
}

export interface PreflightSettings {
    roleDir: string;
    wgInterface: string;
    /** The role's policy-routing table (none for the gateway). */
    routeTable?: number;
    /** A site's guest bridges. */
    bridges?: string[];
    /** The port and prefixes the role's new firewall accepts SSH on/from, when the step installs one. */
    ssh?: { port: number; from: string[] };
    /** Prefixes the step routes away from the host's uplink, and what they are (for the message). */
    routed?: { prefixes: string[]; what: string };
}

/**
 * Runs components/scripts/preflight.sh from stdin, before anything is delivered: a refusal
 * leaves the host exactly as it was. The session's SSH_CONNECTION is handed over by value,
 * because sudo does not pass it on.
 */
export function preflight(p: PreflightSettings): string {
    const marker = "WGEXIT_PREFLIGHT_EOF";
    const script = scriptWithSettings("preflight.sh", {
        ROLE_DIR: p.roleDir,
        WG_IF: p.wgInterface,
        ROUTE_TABLE: p.routeTable ?? "",
        BRIDGES: (p.bridges ?? []).join(" "),
        SSH_PORT: p.ssh?.port ?? "",
        SSH_FROM: (p.ssh?.from ?? []).join(" "),
        ROUTED: (p.routed?.prefixes ?? []).join(" "),
        ROUTED_WHAT: p.routed?.what ?? "",
    });
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell, expanded by the host's shell
    const passOperator = '$S env OPERATOR="${SSH_CONNECTION:-}" bash -s';
    return `${passOperator} <<'${marker}'\n${script.replace(/\n$/, "")}\n${marker}`;
}

/** Runs a command as root if it exists; succeeds quietly when it does not (used by delete steps). */
export function runIfPresent(script: string, args: string): string {
    return `S=""; [ "$(id -u)" = 0 ] || S="sudo -n"\nif [ -x ${shq(script)} ]; then $S ${shq(script)} ${args}; fi\n`;
}
