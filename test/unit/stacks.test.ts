// The split layout under mocks: a gateway stack takes the peers of a site stack, the site
// stack joins the gateway stack, the order of the first deploy, and missing stacks.
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { unwrap } from "../../lab/engine";
import { containsPrivateKey } from "../../policy/policies";
import { baseConfig, FAKE_GATEWAY_KEY, FAKE_SITE_KEY, PEER_KEY, type ProgramRun, runProgram, SITE, TEST_SSH_PRIVATE_KEY } from "../helpers/program";

const GATEWAY = "acme/wgexit/gateway";
const HOME = "acme/wgexit/home";
// The site declares its own port forward; the gateway stack applies it.
const siteStack = { gatewayStack: GATEWAY, sshPrivateKey: TEST_SSH_PRIVATE_KEY, sites: [SITE], portForwards: [{ name: "https", protocol: "tcp", port: 443, site: "home", guest: "web", toPort: 8443 }] };
const commands = (run: ProgramRun) => run.registrations.filter((r) => r.type === "command:remote:Command").map((r) => r.name);
const command = (run: ProgramRun, name: string) => String(unwrap(run.registrations.find((r) => r.name === name)?.inputs.create));

describe("split layout", () => {
    it("first deploy, in order: gateway, site (key only), gateway takes the site, site joins", async () => {
        // 1. The gateway stack alone.
        const gateway1 = await runProgram({ ...baseConfig("existing") }, "gateway");
        assert.deepEqual(Object.keys(gateway1.outputs.peerAddresses as object), ["phone"]);

        // 2. The site stack: its gateway does not know it yet, so it only makes its key.
        const site1 = await runProgram(siteStack, "home", { [GATEWAY]: gateway1.outputs });
        assert.deepEqual(commands(site1), ["site-home-key"], "nothing but the key before the gateway knows the site");
        assert.deepEqual(site1.outputs.waitingForGateway, ["home"]);
        const published = site1.outputs.tunnelPeers as { name: string; publicKey: string; routedCidrs: string[] }[];
        assert.deepEqual(published, [
            {
                name: "home",
                kind: "site",
                publicKey: FAKE_SITE_KEY,
                routedCidrs: ["192.168.100.0/24", "fd66:100::/64", "192.168.101.0/24"],
                portForwards: [{ name: "https", protocol: "tcp", port: 443, address: "192.168.100.10", bridge: "virbr-wg", toPort: 8443 }],
            },
        ]);

        // 3. The gateway stack names the site stack and takes its peer, with an address.
        const gateway2 = await runProgram({ ...baseConfig("existing"), peerStacks: [HOME] }, "gateway", { [HOME]: site1.outputs });
        assert.deepEqual((gateway2.outputs.peerAddresses as Record<string, { addressV4: string }>).home.addressV4, "10.66.0.3");
        assert.ok(command(gateway2, "gateway-peers").includes(`# home\n[Peer]\nPublicKey = ${FAKE_SITE_KEY}\nAllowedIPs = 10.66.0.3/32, fd66:66:66::3/128, 192.168.100.0/24, fd66:100::/64, 192.168.101.0/24\n`));
        assert.ok(!commands(gateway2).some((c) => c.startsWith("site-")), "the gateway stack never touches the site's host");
        assert.match(command(gateway2, "gateway-peers"), /tcp dport 443 dnat ip to 192\.168\.100\.10:8443 comment "port forward https"/, "the site's port forward is applied by the gateway");

        // 4. The site stack joins: its tunnel, networks and guests, with the gateway's key and its address.
        const site2 = await runProgram(siteStack, "home", { [GATEWAY]: gateway2.outputs });
        assert.deepEqual(commands(site2).sort(), ["site-home-guest-tiny-domain", "site-home-guest-web-domain", "site-home-install", "site-home-key", "site-home-network-lab", "site-home-network-wgnet"]);
        const install = command(site2, "site-home-install");
        assert.match(install, new RegExp(`PublicKey = ${FAKE_GATEWAY_KEY}\\nEndpoint = 198\\.51\\.100\\.10:51820`));
        assert.match(install, /ADDRESS_V4='10\.66\.0\.3\/32'/);
        assert.match(install, /ip daddr 192\.168\.100\.10 tcp dport 8443 ct state new accept comment "port forward https"/, "and let in by the site");
        assert.deepEqual(site2.outputs.waitingForGateway, []);

        // Only public facts crossed: no stack's outputs hold a private key.
        for (const run of [gateway1, site1, gateway2, site2]) {
            const { clientConfigs: _secret, ...plain } = run.outputs;
            assert.ok(!containsPrivateKey(JSON.stringify(plain)), "a private key in the outputs");
        }
    });

    it("a missing gateway stack stops the site stack before anything is created", async () => {
        const run = await runProgram(siteStack, "home", {}, { allowFailure: true });
        assert.match(run.error ?? "", /wgexit:gatewayStack: cannot read the outputs .*"acme\/wgexit\/gateway".*Nothing was created/);
        assert.deepEqual(commands(run), []);
    });

    it("a missing or undeployed peer stack stops the gateway stack before anything is created", async () => {
        const missing = await runProgram({ ...baseConfig("existing"), peerStacks: [HOME] }, "gateway", {}, { allowFailure: true });
        assert.match(missing.error ?? "", /wgexit:peerStacks\[0\]: cannot read the outputs .*acme\/wgexit\/home/);
        assert.deepEqual(commands(missing), []);
        const empty = await runProgram({ ...baseConfig("existing"), peerStacks: [HOME] }, "gateway", { [HOME]: {} }, { allowFailure: true });
        assert.match(empty.error ?? "", /there is no output "tunnelPeers".*run `pulumi up` in acme\/wgexit\/home first/);
        assert.deepEqual(commands(empty), []);
    });

    it("a peer stack's peer may not take a name or address already used", async () => {
        const clash = { tunnelPeers: [{ name: "phone", kind: "site", publicKey: FAKE_SITE_KEY, routedCidrs: [] }] };
        const run = await runProgram({ ...baseConfig("existing"), peerStacks: [HOME] }, "gateway", { [HOME]: clash }, { allowFailure: true });
        assert.match(run.error ?? "", /wgexit:peerStacks\[0\]: stack acme\/wgexit\/home brings a peer named "phone"/);
        assert.deepEqual(commands(run), []);
    });

    it("a site's port forward may not take a port the gateway already uses", async () => {
        const site1 = await runProgram({ ...siteStack, portForwards: [{ name: "ssh", protocol: "tcp", port: 22, site: "home", guest: "web" }] }, "home", { [GATEWAY]: (await runProgram(baseConfig("existing"), "gateway")).outputs });
        const run = await runProgram({ ...baseConfig("existing"), peerStacks: [HOME] }, "gateway", { [HOME]: site1.outputs }, { allowFailure: true });
        assert.match(run.error ?? "", /wgexit:peerStacks\[0\]: stack acme\/wgexit\/home forwards tcp\/22 \(ssh\), which the gateway's SSH already uses/);
        assert.deepEqual(commands(run), []);
    });

    it("gateway keys in a site stack are refused, naming where they belong", async () => {
        const run = await runProgram({ ...siteStack, adminCidrs: ["203.0.113.7/32"], peers: [{ name: "phone", publicKey: PEER_KEY }] }, "home", {}, { allowFailure: true });
        assert.match(run.error ?? "", /wgexit:adminCidrs: belongs in the gateway stack \(acme\/wgexit\/gateway\)/);
        assert.match(run.error ?? "", /wgexit:peers: belongs in the gateway stack/);
        assert.deepEqual(run.registrations, []);
    });

    it("a site stack runs the same with the defaults the CLI injects for gateway keys", async () => {
        const gateway = (await runProgram(baseConfig("existing"), "gateway")).outputs;
        const [asCli, asGiven] = await Promise.all([runProgram(siteStack, "home", { [GATEWAY]: gateway }, { asCli: true }), runProgram(siteStack, "home", { [GATEWAY]: gateway })]);
        assert.deepEqual(commands(asCli), ["site-home-key"]);
        assert.deepEqual(commands(asCli), commands(asGiven));
    });
});
