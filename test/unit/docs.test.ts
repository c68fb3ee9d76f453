// README "Config reference", Pulumi.yaml and the validator describe the same keys.
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { CONFIG_KEYS, ConfigError, parseStackConfig, projectDeclarations } from "../../components/config";
import { encodeConfig } from "../../lab/mocked";
import { have } from "../helpers/tools";

const REPO = path.join(__dirname, "..", "..");
const readme = fs.readFileSync(path.join(REPO, "README.md"), "utf8");

function referenceTable(): Map<string, string> {
    const section = readme.slice(readme.indexOf("## Config reference"), readme.indexOf("\n## ", readme.indexOf("## Config reference") + 5));
    const rows = new Map<string, string>();
    for (const m of section.matchAll(/^\| `([A-Za-z0-9]+)` \| ([a-z]+)/gm)) rows.set(m[1], m[2]);
    return rows;
}

describe("docs and declarations", () => {
    const declarations = projectDeclarations();

    it("Pulumi.yaml declares exactly the keys the validator reads", () => {
        assert.deepEqual(Object.keys(declarations).sort(), [...CONFIG_KEYS].sort());
    });

    it("every declaration has a type and a description", () => {
        for (const [key, d] of Object.entries(declarations)) {
            assert.ok(["string", "integer", "boolean", "array", "object"].includes(d.type), `${key} type`);
            assert.ok(d.description && d.description.length > 10, `${key} description`);
        }
    });

    it("README's config reference lists the same keys with the same types", () => {
        const table = referenceTable();
        assert.deepEqual([...table.keys()].sort(), Object.keys(declarations).sort());
        for (const [key, type] of table) assert.equal(type, declarations[key].type, `README type of ${key}`);
    });

    it("README's first screen states the two commands, and .ci/run calls the second", () => {
        const firstScreen = readme.slice(0, readme.indexOf("\n## "));
        assert.match(firstScreen, /^sudo \.\/demo\s+#/m);
        assert.match(firstScreen, /^sudo \.\/run-tests\s+#/m);
        const ci = fs.readFileSync(path.join(REPO, ".ci", "run"), "utf8");
        assert.match(ci, /^CI=true exec \.\/run-tests "\$@"$/m);
        assert.match(readme, /^pulumi up\s+#/m, "the Quickstart's pulumi up");
    });

    it("the repository's own shell scripts are shellcheck-clean", { skip: !have("shellcheck") && "SKIPPED LOUDLY: shellcheck is not installed" }, () => {
        // -x follows `source ops/setup.sh`, so the set-up is checked as ./demo and ./run-tests use it.
        const files = ["demo", "run-tests", ".ci/run", "ops/setup.sh", "lab/fetch-guest-kernel.sh"];
        const r = spawnSync("shellcheck", ["-x", ...files], { cwd: REPO, encoding: "utf8" });
        assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    });

    it("only sshPrivateKey is without a default (the CLI requires every key that has none)", () => {
        assert.deepEqual(Object.entries(declarations).filter(([, d]) => d.default === undefined).map(([k]) => k), ["sshPrivateKey"]);
    });

    for (const stackFile of ["Pulumi.dev.yaml", "Pulumi.lab.yaml", "Pulumi.prod.yaml", "Pulumi.prod-home.yaml", "Pulumi.multi.yaml"]) {
        it(`${stackFile} uses only declared keys`, () => {
            const stack = parseYaml(fs.readFileSync(path.join(REPO, stackFile), "utf8")) as { config: Record<string, unknown> };
            for (const key of Object.keys(stack.config)) {
                if (!key.startsWith("wgexit:")) continue;
                assert.ok(CONFIG_KEYS.includes(key.slice(7) as never), `${stackFile}: ${key}`);
            }
        });
    }

    for (const stackFile of ["Pulumi.dev.yaml", "Pulumi.prod.yaml", "Pulumi.prod-home.yaml", "Pulumi.multi.yaml"]) {
        it(`${stackFile} fails only on its placeholders`, () => {
            const stack = parseYaml(fs.readFileSync(path.join(REPO, stackFile), "utf8")) as { config: Record<string, unknown> };
            const raw = encodeConfig(stack.config);
            try {
                parseStackConfig(raw);
                assert.fail("placeholders should not validate");
            } catch (e) {
                assert.ok(e instanceof ConfigError);
                for (const p of e.problems) assert.match(p.key, /compartmentId|serviceName|adminCidrs|sshPublicKey|sshPrivateKey|publicKey|connection\.host|connection\.hostKey|sshAuthorizedKeys|peerStacks|gatewayStack/, `${p.key}: ${p.message}`);
            }
        });
    }
});
