// Helpers shared by every renderer that produces shell for a host.

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
export function deliverAndRun(files: FileToWrite[], command: string): string {
    const lines = ["set -eu", 'S=""; [ "$(id -u)" = 0 ] || S="sudo -n"'];
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

/** Runs a command as root if it exists; succeeds quietly when it does not (used by delete steps). */
export function runIfPresent(script: string, args: string): string {
    return `S=""; [ "$(id -u)" = 0 ] || S="sudo -n"\nif [ -x ${shq(script)} ]; then $S ${shq(script)} ${args}; fi\n`;
}
