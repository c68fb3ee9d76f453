// The split layout under mocks: a gateway stack takes the peers of a site stack, the site
// stack joins the gateway stack, the order of the first deploy, and missing stacks.
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { unwrap } from "../../lab/engine";
import { containsPrivateKey } from "../../policy/policies";
import { baseConfig, FAKE_GATEWAY_KEY, FAKE_SITE_KEY, LAPTOP, PEER_KEY, type ProgramRun, runProgram, SITE, TEST_SSH_PRIVATE_KEY } from "../helpers/program";

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

    describe("with two gateways", () => {
        const OVH = { name: "ovh", placement: "existing", existing: { host: "198.51.100.40", user: "root" }, tunnelCidr: "10.67.0.0/24", tunnelCidrV6: "fd66:67:67::/64", listenPort: 51821 };
        const gatewayStack = (extra: Record<string, unknown> = {}) => ({ ...baseConfig("existing"), peerStacks: [HOME], gateways: [OVH], failover: { probeIntervalSeconds: 1, failAfter: 2, failbackAfterSeconds: 30 }, ...extra });

        it("the further gateway takes the peer stack's site and its port forward; the site stack joins both, with the gateway stack's failover settings", async () => {
            const site1 = await runProgram(siteStack, "home", { [GATEWAY]: (await runProgram(baseConfig("existing"), "gateway")).outputs });
            const gateway = await runProgram(gatewayStack(), "gateway", { [HOME]: site1.outputs });
            const second = command(gateway, "gateway-ovh-peers");
            assert.match(second, new RegExp(`# home\\n\\[Peer\\]\\nPublicKey = ${FAKE_SITE_KEY.replace(/[+/=]/g, "\\$&")}\\nAllowedIPs = 10\\.67\\.0\\.3/32, fd66:67:67::3/128, 192\\.168\\.100\\.0/24`));
            assert.match(second, /tcp dport 443 dnat ip to 192\.168\.100\.10:8443 comment "port forward https"/);
            const published = gateway.outputs.furtherGateways as Record<string, Record<string, unknown>>;
            assert.deepEqual(Object.keys(published.ovh).sort(), ["address", "endpoint", "gatewayAddress", "listenPort", "mtu", "preference", "publicKey", "tunnelCidr", "tunnelCidrV6"]);

            const site2 = await runProgram(siteStack, "home", { [GATEWAY]: gateway.outputs });
            const failover = command(site2, "site-home-failover");
            assert.match(failover, /TUNNELS='wgexit0 wgexit0-2'\nGATEWAYS='gateway ovh'\nPROBES='10\.66\.0\.1 10\.67\.0\.1'\nPROBE_INTERVAL='1'\nFAIL_AFTER='2'\nFAILBACK_AFTER='30'/);
            assert.match(failover, /ADDRESS_V4='10\.67\.0\.3\/32'/, "the site's host index in the gateway stack's first block, in the second's");
            assert.match(failover, /Endpoint = 198\.51\.100\.40:51821/);
            const install = command(site2, "site-home-install");
            assert.match(install, /iifname vmap \{ "wgexit0" : jump forward_from_tunnel, "wgexit0-2" : jump forward_from_tunnel, /, "from either tunnel");
            assert.match(install, /\toifname "virbr-wg" ip daddr 192\.168\.100\.10 tcp dport 8443 ct state new accept comment "port forward https"/);
        });

        it("a peer stack's laptop joins both gateways: the further one takes its VM, the VM gets a tunnel to each, the laptop lets it reach both", async () => {
            const withLaptop = { ...siteStack, laptops: [LAPTOP] };
            const site1 = await runProgram(withLaptop, "home", { [GATEWAY]: (await runProgram(baseConfig("existing"), "gateway")).outputs });
            const gateway = await runProgram(gatewayStack(), "gateway", { [HOME]: site1.outputs });
            const vmIndex = (gateway.outputs.peerAddresses as Record<string, { addressV4: string }>).mac.addressV4.split(".")[3];
            assert.match(command(gateway, "gateway-ovh-peers"), new RegExp(`# mac\\n\\[Peer\\]\\nPublicKey = \\S+\\nAllowedIPs = 10\\.67\\.0\\.${vmIndex}/32, fd66:67:67::${vmIndex}/128\\n`));
            const site2 = await runProgram(withLaptop, "home", { [GATEWAY]: gateway.outputs });
            const failover = command(site2, "laptop-mac-failover");
            assert.match(failover, /TUNNELS='wgexit1 wgexit1-2'\nGATEWAYS='gateway ovh'\nPROBES='10\.66\.0\.1 10\.67\.0\.1'\nPROBE_INTERVAL='1'\nFAIL_AFTER='2'\nFAILBACK_AFTER='30'/);
            assert.match(failover, new RegExp(`ADDRESS_V4='10\\.67\\.0\\.${vmIndex}/32'`), "the VM's host index in the first block, in the second's");
            assert.match(command(site2, "laptop-mac-laptop"), /ENDPOINT_PORT='51820'\nMORE_ENDPOINTS='198\.51\.100\.40:51821'\n/, "the further gateway's own port");
        });

        it("a site stack refuses a routeTable whose numbers below meet another, once its gateway stack has two gateways", async () => {
            const site1 = await runProgram(siteStack, "home", { [GATEWAY]: (await runProgram(baseConfig("existing"), "gateway")).outputs });
            const gateway = await runProgram(gatewayStack(), "gateway", { [HOME]: site1.outputs });
            // A laptop's VM on the site's own host, on the table just below the site's.
            const laptop = { ...LAPTOP, vm: SITE.connection, routeTable: 7699 };
            const run = await runProgram({ ...siteStack, laptops: [laptop] }, "home", { [GATEWAY]: gateway.outputs }, { allowFailure: true });
            assert.match(run.error ?? "", /wgexit:sites\[0\]\.routeTable: with 2 gateways the site also uses tables 7698-7699, and wgexit:laptops\[0\]\.routeTable is 7699/);
            assert.deepEqual(commands(run), []);
        });

        it("a peer stack's port forward may not take a further gateway's WireGuard port", async () => {
            const site1 = await runProgram({ ...siteStack, portForwards: [{ name: "game", protocol: "udp", port: 51821, site: "home", guest: "web" }] }, "home", { [GATEWAY]: (await runProgram(baseConfig("existing"), "gateway")).outputs });
            const run = await runProgram(gatewayStack(), "gateway", { [HOME]: site1.outputs }, { allowFailure: true });
            assert.match(run.error ?? "", /wgexit:peerStacks\[0\]: stack acme\/wgexit\/home forwards udp\/51821 \(game\), which gateway ovh's WireGuard \(wgexit:gateways\[0\]\.listenPort\) already uses/);
            assert.deepEqual(commands(run), []);
        });

        it("a gateway stack deployed by an older wgexit (furtherGateways without the fields sites need) stops the site stack with the fix", async () => {
            const site1 = await runProgram(siteStack, "home", { [GATEWAY]: (await runProgram(baseConfig("existing"), "gateway")).outputs });
            const outputs = (await runProgram(gatewayStack(), "gateway", { [HOME]: site1.outputs })).outputs;
            const older = { ...outputs, failover: undefined, furtherGateways: { ovh: { publicKey: FAKE_GATEWAY_KEY, endpoint: "198.51.100.40:51821", address: "198.51.100.40", tunnelCidr: "10.67.0.0/24", gatewayAddress: "10.67.0.1" } } };
            const run = await runProgram(siteStack, "home", { [GATEWAY]: older }, { allowFailure: true });
            assert.match(run.error ?? "", /wgexit:gatewayStack: the output furtherGateways\.ovh has no tunnelCidrV6, mtu, listenPort, preference of stack "acme\/wgexit\/gateway"; run `pulumi up` in acme\/wgexit\/gateway with this version of wgexit first\. Nothing was created\./);
            assert.deepEqual(commands(run), []);
        });
    });

    it("a site stack runs the same with the defaults the CLI injects for gateway keys", async () => {
        const gateway = (await runProgram(baseConfig("existing"), "gateway")).outputs;
        const [asCli, asGiven] = await Promise.all([runProgram(siteStack, "home", { [GATEWAY]: gateway }, { asCli: true }), runProgram(siteStack, "home", { [GATEWAY]: gateway })]);
        assert.deepEqual(commands(asCli), ["site-home-key"]);
        assert.deepEqual(commands(asCli), commands(asGiven));
    });
});
