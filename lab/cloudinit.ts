// Runs a cloud-init payload the way cloud-init's modules would on first boot, for the
// modules this project uses: write_files (config stage), then runcmd (final stage).
// Modules that need a real image (packages, ssh keys for the default user) are checked
// for shape but not executed: the lab hosts already have the packages.
import { parse as parseYaml } from "yaml";
import { shq } from "../components/shell";

interface WriteFile {
    path: string;
    content?: string;
    encoding?: string;
    permissions?: string;
    owner?: string;
}

const HANDLED = new Set(["write_files", "runcmd", "packages", "package_update", "ssh_authorized_keys", "ssh_pwauth", "disable_root"]);

/** A root shell script equivalent to the payload's write_files + runcmd. */
export function cloudInitAsScript(userData: string): string {
    if (!userData.startsWith("#cloud-config\n")) throw new Error("user data is not a #cloud-config document");
    const doc = parseYaml(userData) as Record<string, unknown>;
    const unknown = Object.keys(doc).filter((k) => !HANDLED.has(k));
    if (unknown.length) throw new Error(`the lab does not emulate cloud-init modules: ${unknown.join(", ")}`);
    const lines = ["set -eu"];
    for (const f of (doc.write_files as WriteFile[] | undefined) ?? []) {
        const bytes = f.encoding === "b64" || f.encoding === "base64" ? Buffer.from(f.content ?? "", "base64") : Buffer.from(f.content ?? "");
        const dir = f.path.replace(/\/[^/]+$/, "") || "/";
        lines.push(`mkdir -p ${shq(dir)}`);
        lines.push(`printf %s ${shq(bytes.toString("base64"))} | base64 -d > ${shq(f.path)}`);
        lines.push(`chmod ${shq(f.permissions ?? "0644")} ${shq(f.path)}`);
        lines.push(`chown ${shq(f.owner ?? "root:root")} ${shq(f.path)}`);
    }
    for (const cmd of (doc.runcmd as (string | string[])[] | undefined) ?? []) {
        lines.push(Array.isArray(cmd) ? cmd.map((a) => shq(a)).join(" ") : cmd);
    }
    return `${lines.join("\n")}\n`;
}
