// Roaming clients: the config they import, the generated key's public half (checked against
// `wg pubkey`), the component under mocks, and the QR code (decoded with zbarimg).
import * as assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import { OWN_KEY_PLACEHOLDER, renderClientConfig, wireguardPublicKey } from "../../components/roamingClient.render";
import { unwrap } from "../../lab/engine";
import { main as clientMain } from "../../ops/client";
import { baseConfig, FAKE_GATEWAY_KEY, GENERATED_CLIENT_KEY, PEER_KEY, runProgram } from "../helpers/program";
import { matchSnapshot } from "../helpers/snapshot";
import { have } from "../helpers/tools";

const settings = { addressV4: "10.66.0.2", addressV6: "fd66:66:66::2", dns: ["9.9.9.9", "2620:fe::fe"], mtu: 1420, gatewayPublicKey: FAKE_GATEWAY_KEY, endpoint: "198.51.100.10:51820" };

describe("roaming client", () => {
    it("config: full tunnel through the gateway, DNS, MTU, keepalive; a placeholder when the device made its key", () => {
        matchSnapshot("client-generated.conf", renderClientConfig({ ...settings, privateKey: GENERATED_CLIENT_KEY }));
        const own = renderClientConfig(settings);
        assert.ok(own.includes(`PrivateKey = ${OWN_KEY_PLACEHOLDER}`));
        assert.match(own, /Address = 10\.66\.0\.2\/32, fd66:66:66::2\/128\nDNS = 9\.9\.9\.9, 2620:fe::fe\nMTU = 1420\n/);
        assert.match(own, /AllowedIPs = 0\.0\.0\.0\/0, ::\/0\nPersistentKeepalive = 25\n$/);
    });

    it("the public key of a generated key is what `wg pubkey` says", { skip: !have("wg") && "SKIPPED LOUDLY: wg is not installed" }, () => {
        for (let i = 0; i < 5; i++) {
            const key = execFileSync("wg", ["genkey"], { encoding: "utf8" }).trim();
            assert.equal(wireguardPublicKey(key), execFileSync("wg", ["pubkey"], { input: key, encoding: "utf8" }).trim());
        }
        // Unclamped random bytes too: X25519 clamps, as WireGuard does.
        const raw = Buffer.alloc(32, 0xff).toString("base64");
        assert.equal(wireguardPublicKey(raw), execFileSync("wg", ["pubkey"], { input: raw, encoding: "utf8" }).trim());
    });

    it("under mocks: a generated key becomes the gateway's peer and stays inside a secret output", async () => {
        const run = await runProgram({ ...baseConfig("existing"), peers: [{ name: "phone", publicKey: PEER_KEY }, { name: "tablet", generateKey: true, dns: ["203.0.113.53"] }] });
        const keys = run.registrations.filter((r) => r.type === "random:index/randomBytes:RandomBytes");
        assert.deepEqual(keys.map((r) => [r.name, r.inputs.length]), [["peer-tablet-key", 32]], "only the peer without a key gets one generated");
        const peers = String(unwrap(run.registrations.find((r) => r.name === "gateway-peers")?.inputs.create));
        assert.ok(peers.includes(`# tablet\n[Peer]\nPublicKey = ${wireguardPublicKey(GENERATED_CLIENT_KEY)}\n`), "the gateway knows the generated key's public half");
        assert.ok(!peers.includes(GENERATED_CLIENT_KEY), "the private key never reaches a host command");
        const configs = run.outputs.clientConfigs as Record<string, string>;
        assert.match(configs.tablet, new RegExp(`PrivateKey = ${GENERATED_CLIENT_KEY.replace(/[+/]/g, "\\$&")}\nAddress = 10\\.66\\.0\\.3/32`));
        assert.match(configs.tablet, /DNS = 203\.0\.113\.53\n/);
        assert.ok(configs.phone.includes(OWN_KEY_PLACEHOLDER));
        assert.ok(run.secretOutputs.includes("clientConfigs"), "clientConfigs is a secret output");
    });

    it("npm run client: terminal QR, NAME.conf and NAME.png (0600) that decode to the config", async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wgexit-client-"));
        const original = console.log;
        const printed: string[] = [];
        console.log = (m: string) => printed.push(String(m));
        try {
            const config = renderClientConfig({ ...settings, privateKey: GENERATED_CLIENT_KEY });
            fs.writeFileSync(path.join(dir, "outputs.json"), JSON.stringify({ clientConfigs: { tablet: config } }));
            assert.equal(await clientMain(["tablet", "--outputs", path.join(dir, "outputs.json"), "--out", dir]), 0);
            assert.equal(fs.readFileSync(path.join(dir, "tablet.conf"), "utf8"), config);
            for (const f of ["tablet.conf", "tablet.png"]) assert.equal(fs.statSync(path.join(dir, f)).mode & 0o777, 0o600, f);
            assert.deepEqual([...fs.readFileSync(path.join(dir, "tablet.png")).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
            assert.match(printed[0], /[▀▄█]/, "a QR code drawn in the terminal");
            if (have("zbarimg")) {
                const decoded = spawnSync("zbarimg", ["-q", "--raw", path.join(dir, "tablet.png")], { encoding: "utf8" });
                assert.equal(decoded.stdout.replace(/\n+$/, ""), config.replace(/\n+$/, ""), "the PNG decodes to the config");
            } else {
                console.error("SKIPPED LOUDLY: zbarimg is not installed; the QR code was not decoded");
            }
            assert.equal(await clientMain(["nobody", "--outputs", path.join(dir, "outputs.json"), "--out", dir]), 2);
            // Two clouds: the further gateway's config, by its name.
            const ovh = renderClientConfig({ ...settings, addressV4: "10.67.0.2", addressV6: "fd66:67:67::2", endpoint: "198.51.100.40:51820", privateKey: GENERATED_CLIENT_KEY });
            fs.writeFileSync(path.join(dir, "outputs.json"), JSON.stringify({ clientConfigs: { tablet: config }, clientConfigsByGateway: { tablet: { ovh } } }));
            assert.equal(await clientMain(["tablet", "--gateway", "ovh", "--outputs", path.join(dir, "outputs.json"), "--out", dir]), 0);
            assert.equal(fs.readFileSync(path.join(dir, "tablet-ovh.conf"), "utf8"), ovh);
            assert.equal(fs.statSync(path.join(dir, "tablet-ovh.png")).mode & 0o777, 0o600);
            assert.equal(await clientMain(["tablet", "--gateway", "gcp", "--outputs", path.join(dir, "outputs.json"), "--out", dir]), 2);
        } finally {
            console.log = original;
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });
});
