// Checks by the real tools. Each returns undefined when the tool is missing so the
// caller can skip loudly; CI installs them all.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export function have(tool: string): boolean {
    return spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;
}

function withFile(name: string, content: string, f: (file: string) => { status: number | null; out: string }) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wgexit-test-"));
    try {
        const file = path.join(dir, name);
        fs.writeFileSync(file, content);
        return f(file);
    } finally {
        fs.rmSync(dir, { recursive: true, force: true });
    }
}

function runTool(argv: string[]) {
    const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

export const shellcheck = (script: string, shell = "bash") => withFile("script.sh", script, (f) => runTool(["shellcheck", "-s", shell, f]));
/** `nft -c` parses and checks a ruleset without applying it (needs root for the netlink checks). */
export const nftCheck = (ruleset: string) => withFile("rules.nft", ruleset, (f) => runTool(["nft", "-c", "-f", f]));
export const cloudInitSchema = (userData: string) => withFile("user-data.yaml", userData, (f) => runTool(["cloud-init", "schema", "-c", f]));
export const virtXmlValidate = (xml: string, kind: string) => withFile(`${kind}.xml`, xml, (f) => runTool(["virt-xml-validate", f, kind]));

export const canRunNft = () => have("nft") && process.getuid?.() === 0;

/** Everything a step delivers to a host (settings, scripts, rulesets), as one text to search. */
export const deliveredText = (files: { path: string; content: string }[]) => files.map((f) => `# --- ${f.path}\n${f.content}`).join("\n");
