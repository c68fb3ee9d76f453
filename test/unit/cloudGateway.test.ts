// The gateway's renderers (snapshots, real-tool checks) and the component under mocks.
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
    GATEWAY_TABLE,
    gatewayFiles,
    type GatewaySettings,
    gatewayPeerFor,
    renderGatewayCloudInit,
    renderGatewayInstallCommand,
    renderGatewayPeersCommand,
    renderGatewayPeersNft,
    renderGatewayReadyCommand,
    renderGatewayRemoveCommand,
    renderGatewayRuleset,
    renderGatewaySettings,
} from "../../components/cloudGateway.render";
import { unwrap } from "../../lab/engine";
import { baseConfig, FAKE_GATEWAY_KEY, PEER_KEY, runProgram, TEST_SSH_PUBLIC_KEY } from "../helpers/program";
import { matchSnapshot } from "../helpers/snapshot";
import { canRunNft, cloudInitSchema, deliveredText, have, nftCheck, shellcheck } from "../helpers/tools";

const settings: GatewaySettings = {
    wgInterface: "wg0",
    listenPort: 51820,
    tunnelMtu: 1420,
    tunnelCidr: "10.66.0.0/24",
    tunnelCidrV6: "fd66:66:66::/64",
    addressV4: "10.66.0.1",
    addressV6: "fd66:66:66::1",
    adminCidrs: ["203.0.113.7/32", "2001:db8:7::/48"],
    sshPort: 22,
};
const tunnel = [
    { name: "home", addressV4: "10.66.0.2", addressV6: "fd66:66:66::2", routedCidrs: ["192.168.100.0/24", "fd66:100::/64"], canReach: [] },
    { name: "laptop", addressV4: "10.66.0.3", addressV6: "fd66:66:66::3", routedCidrs: [], canReach: ["home"] },
];
const peers = tunnel.map((p) => ({ ...gatewayPeerFor(p, tunnel), publicKey: PEER_KEY }));
const forwards = [{ name: "https", protocol: "tcp" as const, port: 443, site: "home", address: "192.168.100.10", bridge: "virbr-wg", toPort: 8443 }];

describe("gateway renderers", () => {
    it("settings snapshot", () => matchSnapshot("gateway.settings.env", renderGatewaySettings(settings)));
    it("ruleset snapshot", () => matchSnapshot("gateway.nft", renderGatewayRuleset(settings)));
    it("peers snapshot", () => matchSnapshot("gateway-peers.nft", renderGatewayPeersNft(settings, peers, forwards)));
    it("cloud-init snapshot", () => matchSnapshot("gateway-cloud-init.yaml", renderGatewayCloudInit(settings, TEST_SSH_PUBLIC_KEY)));

    it("sets an explicit MTU, forwarding, and the key on the host", () => {
        const script = deliveredText(gatewayFiles(settings));
        assert.match(script, /MTU='1420'/);
        assert.match(script, /ip link set dev "\$WG_IF" mtu "\$MTU"/);
        assert.match(script, /keys=\(net.ipv4.ip_forward\) wanted=\(1\)/);
        assert.match(script, /umask 077 && wg genkey/);
        assert.doesNotMatch(script, /PrivateKey = [A-Za-z0-9+/]{43}=/);
    });

    it("input admits only WireGuard, admin SSH and established traffic", () => {
        const rules = renderGatewayRuleset(settings);
        const input = rules.slice(rules.indexOf("chain input"), rules.indexOf("chain forward"));
        assert.match(input, /policy drop/);
        assert.match(input, /udp dport 51820 accept/);
        assert.match(input, /tcp dport 22 ip saddr @admin_v4 accept/);
        assert.match(rules, /set admin_v4 .* elements = \{ 203\.0\.113\.7\/32 \}/);
        assert.doesNotMatch(input, /tcp dport 22 accept/);
    });

    it("forward drops metadata, the local network and non-internet ranges, clamps MSS, and masquerades", () => {
        const rules = renderGatewayRuleset(settings);
        const forward = rules.slice(rules.indexOf("chain forward"), rules.indexOf("chain peer_links"));
        assert.match(forward, /policy drop/);
        assert.match(forward, /ip daddr 169\.254\.0\.0\/16 counter drop/);
        assert.match(forward, /ip daddr @local_nets_v4 counter drop/);
        assert.match(forward, /maxseg size set rt mtu/);
        assert.match(forward, /ip daddr != @non_internet_v4 accept/);
        // Established connections first (each one's first packet met the rules below); the drops
        // come before every rule that can admit a new connection.
        const rulesOnly = forward.split("\n").filter((l) => l.trim() && !l.trim().startsWith("#"));
        const firstAccept = rulesOnly.findIndex((l) => / accept( |$)/.test(l));
        assert.match(rulesOnly[firstAccept], /^\s*ct state established,related accept$/);
        for (const admits of ["ct status dnat accept", "jump peer_links", "@non_internet_v4 accept", "@non_internet_v6 accept"]) {
            for (const drop of ["169.254.0.0/16 counter drop", "@local_nets_v4 counter drop", "@local_nets_v6 counter drop"]) assert.ok(forward.indexOf(drop) < forward.indexOf(admits), `${drop} must come before ${admits}`);
        }
        assert.match(rules, /ip6 saddr @peer_nets_v6 masquerade/);
    });

    it("lets peers reach only the peers they declare", () => {
        const nft = renderGatewayPeersNft(settings, peers);
        assert.match(nft, /peer_links iifname "wg0" ip saddr \{ 10\.66\.0\.3\/32 \} ip daddr \{ 10\.66\.0\.2\/32, 192\.168\.100\.0\/24 \} accept/);
        assert.doesNotMatch(nft, /ip saddr \{ 10\.66\.0\.2\/32/);
    });

    it("forwards public ports to guests, keeping the client's address", () => {
        const nft = renderGatewayPeersNft(settings, peers, forwards);
        assert.match(nft, /add rule inet wgexit_gateway port_forwards meta nfproto ipv4 tcp dport 443 dnat ip to 192\.168\.100\.10:8443 comment "port forward https"/);
        const rules = renderGatewayRuleset(settings);
        assert.match(rules, /iifname != "wg0" fib daddr type local jump port_forwards/, "only traffic from outside the tunnel to the host's own addresses");
        const forward = rules.slice(rules.indexOf("chain forward"), rules.indexOf("chain peer_links"));
        assert.match(forward, /oifname "wg0" ct status dnat accept/);
        const postrouting = rules.slice(rules.indexOf("chain postrouting"));
        assert.doesNotMatch(postrouting, /oifname "wg0".*masquerade/, "forwarded connections are not masqueraded: the guest sees the client");
    });

    it("is shellcheck-clean", { skip: !have("shellcheck") && "SKIPPED LOUDLY: shellcheck is not installed" }, () => {
        const scripts: [string, string, string][] = [
            ["settings.env", renderGatewaySettings(settings), "bash"],
            ["install command", renderGatewayInstallCommand(settings), "sh"],
            ["remove command", renderGatewayRemoveCommand(), "sh"],
            ["peers command", renderGatewayPeersCommand(settings, peers), "sh"],
            ["ready command", renderGatewayReadyCommand(), "sh"],
        ];
        for (const [name, script, shell] of scripts) {
            const r = shellcheck(script, shell);
            assert.equal(r.status, 0, `${name}:\n${r.out}`);
        }
    });

    it("ruleset with peers passes nft -c", { skip: !canRunNft() && "SKIPPED LOUDLY: nft -c needs nft and root" }, () => {
        const r = nftCheck(`${renderGatewayRuleset(settings)}${renderGatewayPeersNft(settings, peers, forwards)}add element inet ${GATEWAY_TABLE} local_nets_v4 { 10.0.0.0/24 }\n`);
        assert.equal(r.status, 0, r.out);
    });

    it("user data passes cloud-init schema", { skip: !have("cloud-init") && "SKIPPED LOUDLY: cloud-init is not installed" }, () => {
        const r = cloudInitSchema(renderGatewayCloudInit(settings, TEST_SSH_PUBLIC_KEY));
        assert.equal(r.status, 0, r.out);
        assert.match(r.out, /Valid cloud-config/);
    });
});

const WG_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** Every string in a value, with whether it sat inside a secret. */
function strings(value: unknown, secret = false, out: { s: string; secret: boolean }[] = []) {
    if (typeof value === "string") out.push({ s: value, secret });
    else if (Array.isArray(value)) for (const v of value) strings(v, secret, out);
    else if (value && typeof value === "object") {
        const obj = value as Record<string, unknown>;
        const isSecret = obj["4dabf18193072939515e22adb298388d"] !== undefined;
        for (const v of Object.values(obj)) strings(v, secret || isSecret, out);
    }
    return out;
}

describe("CloudGateway under mocks", () => {
    for (const placement of ["existing", "oci", "ovh"] as const) {
        it(`${placement}: resource graph, ingress rules, user data and no private key`, async () => {
            const run = await runProgram(baseConfig(placement));
            const graph = run.registrations.map((r) => `${r.type}::${r.name}`).sort();
            matchSnapshot(`graph-${placement}.txt`, `${graph.join("\n")}\n`);

            const steps = run.registrations.filter((r) => r.type === "command:remote:Command").map((r) => r.name);
            assert.ok(steps.includes("gateway-install") && steps.includes("gateway-peers"));
            if (placement !== "existing") assert.ok(steps.includes("gateway-cloud-init"), "cloud placements wait for cloud-init");
            assert.equal(run.outputs.gatewayPublicKey, FAKE_GATEWAY_KEY);

            const install = run.registrations.find((r) => r.name === "gateway-install");
            assert.equal(Boolean(install?.inputs.delete), placement === "existing", "only an existing host is uninstalled; cloud instances are deleted");

            if (placement === "oci") {
                const sl = run.registrations.find((r) => r.type === "oci:Core/securityList:SecurityList");
                const ingress = (sl?.inputs.ingressSecurityRules ?? []) as { protocol: string; source: string; tcpOptions?: { min: number }; udpOptions?: { min: number } }[];
                const world = ingress.filter((r) => r.source === "0.0.0.0/0" || r.source === "::/0");
                assert.ok(world.every((r) => r.protocol === "17" || r.protocol === "1" || r.protocol === "58"), "only UDP (WireGuard) and PMTU ICMP are open to the world");
                assert.ok(world.filter((r) => r.protocol === "17").every((r) => r.udpOptions?.min === 51820));
                assert.deepEqual(ingress.filter((r) => r.protocol === "6").map((r) => r.source), ["203.0.113.7/32"]);
                const instance = run.registrations.find((r) => r.type === "oci:Core/instance:Instance");
                const metadata = instance?.inputs.metadata as { user_data: string };
                const userData = Buffer.from(metadata.user_data, "base64").toString();
                assert.match(userData, /^#cloud-config\n/);
                if (have("cloud-init")) assert.equal(cloudInitSchema(userData).status, 0);
                assert.ok(run.invokes.includes("oci:Core/getImages:getImages"));
                assert.equal((instance?.inputs.sourceDetails as { sourceId?: string } | undefined)?.sourceId, "ocid1.image.full", "the newest non-minimal image");
            }
            if (placement === "ovh") {
                const instance = run.registrations.find((r) => r.type === "ovh:CloudProject/instance:Instance");
                assert.match(String(instance?.inputs.userData), /^#cloud-config\n/);
                assert.equal((instance?.inputs.flavor as { flavorId?: string } | undefined)?.flavorId, "flv-d2");
                assert.equal(run.outputs.gatewayEndpoint, "198.51.100.20:51820");
            }

            // No WireGuard private key anywhere: every key-shaped string is a known public key,
            // and the only PEM key (the SSH key) travels inside a secret.
            const known = new Set([FAKE_GATEWAY_KEY, PEER_KEY]);
            for (const r of run.registrations) {
                for (const { s, secret } of [...strings(r.inputs), ...strings(r.outputs), ...strings(run.outputs)]) {
                    for (const token of s.split(/[\s"'=,]+/).map((t) => `${t}=`).filter((t) => WG_KEY.test(t))) {
                        assert.ok(known.has(token), `${r.type}::${r.name} carries an unknown key-shaped value ${token}`);
                    }
                    if (/PRIVATE KEY-----/.test(s)) assert.ok(secret, `${r.type}::${r.name} carries a private key outside a secret`);
                }
                assert.doesNotMatch(JSON.stringify(unwrap(r.inputs)), /PrivateKey = [A-Za-z0-9+/]{43}=/);
            }
        });

        it(`${placement}: how steps reach the host, and what replaces what`, async () => {
            const run = await runProgram({ ...baseConfig(placement), sshPrivateKeyPassword: "correct horse" });
            const steps = run.registrations.filter((r) => r.type === "command:remote:Command");
            for (const step of steps) {
                const connection = unwrap(step.inputs.connection) as { dialErrorLimit: number; privateKeyPassword?: string; host: string };
                // -1 would retry forever, and a refused login counts as a dial error (pulumi-command connection.go).
                assert.equal(connection.dialErrorLimit, step.name === "gateway-cloud-init" ? 120 : 10, `${step.name}: a bounded dial budget`);
                assert.equal(connection.privateKeyPassword, "correct horse", `${step.name}: the key's passphrase is passed on`);
                assert.equal(step.options?.deleteBeforeReplace, true, `${step.name}: the old one goes before the new one`);
                const triggers = (step.inputs.triggers ?? []) as unknown[];
                // A host the user named belongs to the step: moving it replaces the step, so the old host is cleaned.
                assert.equal(triggers.some((t) => JSON.stringify(t) === JSON.stringify({ host: connection.host })), placement === "existing", `${step.name}: the host in its triggers`);
            }
            const instance = run.registrations.find((r) => /instance:Instance$/.test(r.type));
            // Nothing upstream may replace or rebuild the gateway: the image found at creation stays.
            if (placement === "oci") assert.deepEqual(instance?.options?.ignoreChanges, ["metadata", "sourceDetails.sourceId"]);
            if (placement === "ovh") assert.deepEqual(instance?.options?.ignoreChanges, ["userData", "bootFrom"]);
        });
    }
});
