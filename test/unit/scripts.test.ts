// What runs on a host is plain shell in components/scripts/, read as it is delivered; the
// TypeScript renders only data (settings, rulesets, peer files, XML, cloud-init).
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import * as ts from "typescript";
import { type GatewaySettings, renderGatewayCloudInit, renderGatewayInstallCommand } from "../../components/cloudGateway.render";
import { type PreflightSettings, preflight as renderPreflight, scriptFile } from "../../components/shell";
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
        assert.ok(command.indexOf("bash -s <<'WGEXIT_PREFLIGHT_EOF'") < command.indexOf(" tee "), "preflight first");
        assert.ok(command.includes(scriptFile("preflight.sh").replace(/\n$/, "")));
        assert.ok(command.includes("SSH_FROM='203.0.113.7/32'"), "the new firewall's SSH sources go to the preflight");
    });

    it(
        "preflight refuses a link, a rule priority or a route table that is someone else's, and a step that would cut the operator's session",
        { skip: (process.getuid?.() !== 0 || !have("ip") || !have("unshare")) && "SKIPPED LOUDLY: needs root, ip and unshare to make a network namespace" },
        () => {
            // A namespace of its own stands in for the host; it is deleted whatever happens.
            const ns = `wgexit-preflight-${process.pid}`;
            const sh = (command: string, env: Record<string, string> = {}) =>
                spawnSync("ip", ["netns", "exec", ns, "bash", "-c", command], { encoding: "utf8", env: { ...process.env, ...env } });
            // As delivered: the preflight command the renderers put in front of a step.
            const preflight = (p: Partial<PreflightSettings>, sshConnection = "") =>
                sh(`S=""\n${renderPreflight({ roleDir: "/nonexistent", wgInterface: "wgexit0", ...p })}`, { SSH_CONNECTION: sshConnection });
            assert.equal(spawnSync("ip", ["netns", "add", ns]).status, 0);
            try {
                assert.equal(preflight({ routeTable: 7700, bridges: ["virbr-wg"] }).status, 0, "a free host passes");
                sh("ip link set lo up");
                const uplink = preflight({ wgInterface: "lo" });
                assert.equal(uplink.status, 3);
                assert.match(uplink.stderr, /refused before any change: a link named lo already exists on this host and is not this role's WireGuard link/);
                assert.match(preflight({ bridges: ["lo"] }).stderr, /a link named lo already exists on this host and is not a bridge of this site's networks/);
                sh("ip rule add pref 7700 from 192.0.2.1 lookup 100");
                assert.match(preflight({ routeTable: 7700 }).stderr, /rule priority 7700 is already used on this host/);
                // An installed role keeps its own table, and may not move to one that is taken.
                const roleDir = fs.mkdtempSync(path.join(os.tmpdir(), "wgexit-preflight-"));
                fs.writeFileSync(path.join(roleDir, "interface"), "wgexit0\n");
                fs.writeFileSync(path.join(roleDir, "settings.env"), "ROUTE_TABLE='7700'\n");
                assert.equal(preflight({ roleDir, routeTable: 7700 }).status, 0, "its own table, in use by itself");
                sh("ip rule add pref 7800 from 192.0.2.1 lookup 100");
                assert.match(preflight({ roleDir, routeTable: 7800 }).stderr, /rule priority 7800 is already used on this host/);
                fs.rmSync(roleDir, { recursive: true });
                sh("ip rule del pref 7800; ip rule del pref 7700; ip route add unreachable 192.0.2.0/24 table 7700");
                assert.match(preflight({ routeTable: 7700 }).stderr, /route table 7700 already has routes/);

                // The operator's session, as sshd describes it: client address and port, server address and port.
                const state = () => sh("ip -d link show; ip route show table all; ip -6 route show table all; ip rule; ip -6 rule").stdout;
                const before = state();
                const operator = "203.0.113.20 50122 203.0.113.10 22";
                const ssh = { port: 22, from: ["198.51.100.0/24", "2001:db8::/32"] };
                const locked = preflight({ ssh }, operator);
                assert.equal(locked.status, 3);
                assert.match(locked.stderr, /your SSH session comes from 203\.0\.113\.20, which adminCidrs \(198\.51\.100\.0\/24 2001:db8::\/32\) does not contain/);
                assert.equal(preflight({ ssh: { port: 22, from: ["203.0.113.0/24"] } }, operator).status, 0, "an operator inside adminCidrs passes");
                assert.equal(preflight({ ssh: { port: 22, from: ["0.0.0.0/0", "::/0"] } }, "::ffff:203.0.113.20 50122 203.0.113.10 22").status, 0, "a v4-mapped client is its IPv4 address");
                assert.match(preflight({ ssh: { port: 2222, from: ["203.0.113.0/24"] } }, operator).stderr, /arrives on port 22 of this host, but the new firewall opens SSH on port 2222 only/);
                const routed = preflight({ routed: { prefixes: ["192.168.200.0/24", "203.0.113.16/28"], what: "a peer's allowedIps" } }, operator);
                assert.equal(routed.status, 3);
                assert.match(routed.stderr, /comes from 203\.0\.113\.20, inside 203\.0\.113\.16\/28 \(a peer's allowedIps\)/);
                assert.match(preflight({ routed: { prefixes: ["2001:db8:20::/64"], what: "a guest network" } }, "2001:db8:20::99 50122 2001:db8:20::10 22").stderr, /inside 2001:db8:20::\/64 \(a guest network\)/);
                assert.equal(preflight({ routed: { prefixes: ["203.0.113.21/32", "127.0.0.0/8"], what: "x" } }, operator).status, 0, "a neighbouring prefix does not contain the operator");
                assert.equal(preflight({ ssh }).status, 0, "without an SSH session (cloud-init, a console) there is nothing to keep");
                assert.equal(state(), before, "the checks leave the host's links, routes and rules as they were");
            } finally {
                spawnSync("ip", ["netns", "del", ns]);
            }
        },
    );

    it("no shell escapes in TypeScript (git grep -c '\\\\\\$' components finds none)", () => {
        for (const { file, text } of sources) assert.ok(!text.includes("\\$"), `${file} escapes a shell $`);
    });
});
