// What runs on a host is plain shell in components/scripts/, read as it is delivered; the
// TypeScript renders only data (settings, rulesets, peer files, XML, cloud-init).
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import * as ts from "typescript";
import { type GatewaySettings, renderGatewayCloudInit, renderGatewayInstallCommand } from "../../components/cloudGateway.render";
import { scriptFile } from "../../components/shell";
import { have } from "../helpers/tools";

const COMPONENTS = path.join(__dirname, "..", "..", "components");
const SCRIPTS = path.join(COMPONENTS, "scripts");
const sources = fs.readdirSync(COMPONENTS).filter((f) => f.endsWith(".ts")).map((f) => ({ file: f, text: fs.readFileSync(path.join(COMPONENTS, f), "utf8") }));

/** Every template literal of a TypeScript file, as written (found by the TypeScript parser). */
function templateLiterals(file: string, text: string): string[] {
    const found: string[] = [];
    const visit = (node: ts.Node, source: ts.SourceFile) => {
        if (ts.isNoSubstitutionTemplateLiteral(node) || ts.isTemplateExpression(node)) found.push(node.getText(source));
        ts.forEachChild(node, (child) => visit(child, source));
    };
    const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
    visit(source, source);
    return found;
}

/** Lines that only shell has: control flow, function definitions, `local`, `set -e`. */
const SHELL_LINE = /^\s*(if |then$|fi\b|for |while |do$|done\b|case |esac\b|local |set -e|[a-z_]+\(\) \{)/m;

describe("host scripts as files", () => {
    it("the scripts in components/scripts/ are shellcheck-clean as they stand", { skip: !have("shellcheck") && "SKIPPED LOUDLY: shellcheck is not installed" }, () => {
        const files = fs.readdirSync(SCRIPTS).filter((f) => f.endsWith(".sh"));
        assert.ok(files.length >= 10, `${files.length} scripts`);
        const r = spawnSync("shellcheck", ["-x", ...files], { cwd: SCRIPTS, encoding: "utf8" });
        assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    });

    it("no TypeScript under components/ holds shell code in a template literal beyond a one-line invocation", () => {
        for (const { file, text } of sources) {
            for (const literal of templateLiterals(file, text)) {
                if (!literal.includes("\n")) continue;
                assert.doesNotMatch(literal, SHELL_LINE, `${file}: shell inside a template literal:\n${literal.slice(0, 300)}`);
            }
        }
    });

    it("the check above fails on shell in a template literal (it can fail)", () => {
        const placeholder = ["$", "{x}"].join("");
        const [literal] = templateLiterals("x.ts", `const s = \`set -eu\nif [ -e ${placeholder} ]; then\n\techo y\nfi\n\`;`);
        assert.match(literal, SHELL_LINE);
    });

    it("a step's command carries its scripts verbatim, so an edited script changes the step and is re-applied", () => {
        const settings: GatewaySettings = { wgInterface: "wg0", listenPort: 51820, tunnelMtu: 1420, tunnelCidr: "10.66.0.0/24", tunnelCidrV6: "fd66:66:66::/64", addressV4: "10.66.0.1", addressV6: "fd66:66:66::1", adminCidrs: ["203.0.113.7/32"], sshPort: 22 };
        const command = renderGatewayInstallCommand(settings);
        for (const name of ["gateway.sh", "role.sh", "status.sh"]) assert.ok(command.includes(scriptFile(name).replace(/\n$/, "")), `${name} is delivered as it stands`);
        assert.ok(renderGatewayCloudInit(settings, "ssh-ed25519 AAAA").includes("ensure_key()"), "cloud-init delivers the same files");
        // The preflight comes on stdin before the first file is written: a refusal changes nothing.
        assert.ok(command.indexOf("bash -s -- '/etc/wgexit/gateway' 'wg0' ''") < command.indexOf(" tee "), "preflight first");
        assert.ok(command.includes(scriptFile("preflight.sh").replace(/\n$/, "")));
    });

    it(
        "preflight.sh refuses a link, a rule priority or a route table that is someone else's, and passes a free host",
        { skip: (process.getuid?.() !== 0 || !have("ip")) && "SKIPPED LOUDLY: needs root and ip to make a network namespace" },
        () => {
            // A namespace of its own stands in for the host; it is deleted whatever happens.
            const ns = `wgexit-preflight-${process.pid}`;
            const sh = (command: string) => spawnSync("ip", ["netns", "exec", ns, "bash", "-c", command], { encoding: "utf8" });
            const preflight = (args: string) => sh(`bash ${path.join(SCRIPTS, "preflight.sh")} ${args}`);
            assert.equal(spawnSync("ip", ["netns", "add", ns]).status, 0);
            try {
                assert.equal(preflight("/nonexistent wgexit0 7700 virbr-wg").status, 0, "a free host passes");
                sh("ip link set lo up");
                const uplink = preflight("/nonexistent lo ''");
                assert.equal(uplink.status, 3);
                assert.match(uplink.stderr, /refused before any change: a link named lo already exists on this host and is not this role's WireGuard link/);
                assert.match(preflight("/nonexistent wgexit0 '' lo").stderr, /a link named lo already exists on this host and is not a bridge of this site's networks/);
                sh("ip rule add pref 7700 from 192.0.2.1 lookup 100");
                assert.match(preflight("/nonexistent wgexit0 7700").stderr, /rule priority 7700 is already used on this host/);
                sh("ip rule del pref 7700; ip route add unreachable 192.0.2.0/24 table 7700");
                assert.match(preflight("/nonexistent wgexit0 7700").stderr, /route table 7700 already has routes/);
            } finally {
                spawnSync("ip", ["netns", "del", ns]);
            }
        },
    );

    it("no shell escapes in TypeScript (git grep -c '\\\\\\$' components finds none)", () => {
        for (const { file, text } of sources) assert.ok(!text.includes("\\$"), `${file} escapes a shell $`);
    });
});
