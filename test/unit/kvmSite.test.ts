// The KVM site's renderers (snapshots, real-tool checks) and the site under mocks.
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseStackConfig } from "../../components/config";
import { baseImageName, renderDomainXml, renderGuestMetaData, renderGuestRemoveCommand, renderGuestUpCommand, renderGuestUserData } from "../../components/guestVm.render";
import {
    renderNetworkRemoveCommand,
    renderNetworkUpCommand,
    renderNetworkXml,
    renderSiteInstallCommand,
    renderSitePeerConf,
    renderSiteRemoveCommand,
    renderSiteRuleset,
    renderSiteSettings,
    siteFiles,
    type SiteSettings,
} from "../../components/kvmSite.render";
import { encodeConfig } from "../../lab/mocked";
import { baseConfig, FAKE_GATEWAY_KEY, FAKE_SITE_KEY, LABNET, PEER_KEY, runProgram, SITE, TEST_SSH_PUBLIC_KEY, WEB_GUEST, WGNET } from "../helpers/program";
import { matchSnapshot } from "../helpers/snapshot";
import { canRunNft, cloudInitSchema, deliveredText, have, nftCheck, shellcheck, virtXmlValidate } from "../helpers/tools";

const config = parseStackConfig(encodeConfig({ ...baseConfig("existing"), sites: [SITE] }, "wgexit:"));
const site = config.sites[0];
const settings: SiteSettings = {
    name: site.name,
    wgInterface: site.wgInterface,
    tunnelMtu: 1420,
    addressV4: "10.66.0.2",
    addressV6: "fd66:66:66::2",
    routeTable: site.routeTable,
    networks: site.networks,
    allowInboundFrom: site.allowInboundFrom,
    lanCidrs: site.lanCidrs,
    serveDns: false,
    poolDir: site.poolDir,
    domainType: "kvm",
    portForwards: [{ name: "https", protocol: "tcp", port: 443, site: "home", address: "192.168.100.10", bridge: "virbr-wg", toPort: 8443 }],
};
const gateway = { publicKey: FAKE_GATEWAY_KEY, endpoint: "198.51.100.10:51820" };
const [wgnet, labnet] = site.networks;
const [web, tiny] = wgnet.guests;

const section = (text: string, from: string, to?: string) => text.slice(text.indexOf(from), to ? text.indexOf(to) : undefined);

describe("KVM site renderers", () => {
    it("settings snapshot", () => matchSnapshot("site.settings.env", renderSiteSettings(settings)));
    it("ruleset snapshot", () => matchSnapshot("site.nft", renderSiteRuleset(settings)));
    it("network XML snapshot", () => matchSnapshot("site-network.xml", renderNetworkXml(wgnet, settings)));
    it("domain XML snapshots", () => {
        matchSnapshot("guest-domain.xml", renderDomainXml(web, { network: "wgnet", poolDir: settings.poolDir, domainType: "kvm" }));
        matchSnapshot("guest-domain-direct-kernel.xml", renderDomainXml(tiny, { network: "wgnet", poolDir: settings.poolDir, domainType: "qemu" }));
    });
    it("seed snapshots", () => matchSnapshot("guest-user-data.yaml", `${renderGuestUserData(web)}---\n${renderGuestMetaData("home", web)}`));

    // The chain a packet is judged by, as its rules without comments, one per line.
    const rules = (text: string, name: string) => {
        const body = text.slice(text.indexOf(`chain ${name} {`));
        return body.slice(body.indexOf("\n") + 1, body.indexOf("\n\t}")).split("\n").map((l) => l.trim().replace(/ comment .*/, ""));
    };

    it("input: each source to its own chain; the tunnel gets only replies, guests get only DHCP (no DNS by default)", () => {
        const ruleset = renderSiteRuleset(settings);
        assert.deepEqual(rules(ruleset, "input"), [
            "type filter hook input priority filter; policy accept;",
            'iifname vmap { "wgexit0" : jump input_from_tunnel, "virbr-wg" : jump input_from_guests, "virbr-lab" : jump input_from_guests }',
        ]);
        assert.deepEqual(rules(ruleset, "input_from_tunnel"), ["ct state established,related accept", "counter drop"]);
        const guests = rules(ruleset, "input_from_guests");
        assert.ok(guests.includes("udp sport 68 udp dport 67 accept"));
        assert.equal(guests.at(-1), "counter drop", "guests cannot reach the host");
        assert.ok(!guests.some((r) => r.includes("dport 53")));
        assert.ok(rules(renderSiteRuleset({ ...settings, serveDns: true }), "input_from_guests").includes("meta l4proto { tcp, udp } th dport 53 accept"));
    });

    it("forward: guests to the tunnel and their own network only, inbound only from allowInboundFrom, nothing between tunnel and LAN", () => {
        const ruleset = renderSiteRuleset(settings);
        assert.deepEqual(rules(ruleset, "forward"), [
            "type filter hook forward priority filter; policy accept;",
            'iifname vmap { "wgexit0" : jump forward_from_tunnel, "virbr-wg" : jump forward_from_guests, "virbr-lab" : jump forward_from_guests }',
            'oifname { "virbr-wg", "virbr-lab" } counter drop',
            'oifname "wgexit0" counter drop',
        ], "whatever no chain took: nothing else reaches guests or enters the tunnel");
        assert.deepEqual(rules(ruleset, "forward_from_guests"), [
            "ip daddr { 192.168.1.0/24 } counter drop",
            'oifname "wgexit0" tcp flags syn / syn,rst tcp option maxseg size set rt mtu',
            'iifname "virbr-wg" oifname "wgexit0" ip saddr 192.168.100.0/24 accept',
            'iifname "virbr-wg" oifname "wgexit0" ip6 saddr fd66:100::/64 accept',
            'iifname "virbr-lab" oifname "wgexit0" ip saddr 192.168.101.0/24 accept',
            'iifname "virbr-wg" oifname "virbr-wg" accept',
            'iifname "virbr-lab" oifname "virbr-lab" accept',
            "counter drop",
        ], "the home network refused first, even via the internet; each bridge only its own subnet to the tunnel, and its guests to each other (bridged traffic br_netfilter brings here), never across networks");
        assert.deepEqual(rules(ruleset, "forward_from_tunnel"), [
            "tcp flags syn / syn,rst tcp option maxseg size set rt mtu",
            'oifname { "virbr-wg", "virbr-lab" } ct state established,related accept',
            'oifname "virbr-wg" ip saddr { 10.66.0.0/24 } ip daddr 192.168.100.0/24 ct state new accept',
            'oifname "virbr-wg" ip6 saddr { fd66:66:66::/64 } ip6 daddr fd66:100::/64 ct state new accept',
            'oifname "virbr-lab" ip saddr { 10.66.0.0/24 } ip daddr 192.168.101.0/24 ct state new accept',
            'oifname "virbr-wg" ip daddr 192.168.100.10 tcp dport 8443 ct state new accept',
            "counter drop",
        ], "replies to guests second (the clamp sees the SYN-ACK first), new connections only from allowInboundFrom and port forwards");
        const closed = renderSiteRuleset({ ...settings, allowInboundFrom: [], portForwards: [] });
        assert.doesNotMatch(closed, /ct state new accept/, "no inbound when allowInboundFrom and portForwards are empty");
    });

    it("policy routing: one rule per bridge, the kill switch, the host's own traffic untouched", () => {
        const script = deliveredText(siteFiles(settings, gateway));
        assert.match(script, /BRIDGES='virbr-wg virbr-lab'/);
        assert.match(script, /ip "-\$f" rule add pref "\$ROUTE_TABLE" iif "\$bridge" lookup "\$ROUTE_TABLE"/);
        assert.match(script, /route replace unreachable default metric 4294967295 table "\$ROUTE_TABLE"/);
        assert.match(script, /ADDRESS_V4='10\.66\.0\.2\/32'/, "a host address, no connected route into the tunnel");
        assert.doesNotMatch(script, /from all lookup|ip route replace default dev "\$WG_IF"$/m);
        const up = section(script, "up() {", "down() {");
        assert.ok(up.indexOf("sync_policy_routing") < up.indexOf("ensure_link"), "the kill switch is in place before the tunnel comes up");
        assert.ok(up.indexOf("apply_table") < up.indexOf("ensure_link"), "the firewall is in place before the tunnel comes up");
        assert.doesNotMatch(section(script, "down() {", "install() {"), /drop_policy_routing|drop_table/, "down keeps the kill switch");
    });

    it("peer: the gateway with AllowedIPs everything and a keepalive", () => {
        assert.equal(
            renderSitePeerConf(gateway),
            `# gateway\n[Peer]\nPublicKey = ${FAKE_GATEWAY_KEY}\nEndpoint = 198.51.100.10:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n# Keeps the home NAT mapping open so the WireGuard network can reach guests.\nPersistentKeepalive = 25\n`,
        );
    });

    it("network: routed on the tunnel, tunnel MTU, libvirt DNS off, resolvers by DHCP", () => {
        const xml = renderNetworkXml(wgnet, settings);
        assert.match(xml, /<forward mode="route" dev="wgexit0"\/>/);
        assert.match(xml, /<mtu size="1420"\/>/);
        assert.match(xml, /<dns enable="no"\/>/);
        assert.match(xml, /<range start="192\.168\.100\.128" end="192\.168\.100\.254"\/>/);
        assert.match(xml, /dhcp-option=option:dns-server,9\.9\.9\.9/);
        assert.match(xml, /dhcp-option=option6:dns-server,\[2620:fe::fe\]/);
        assert.doesNotMatch(xml, /<host /, "static leases belong to the guests (virsh net-update), not the network definition");
        assert.doesNotMatch(renderNetworkXml(labnet, settings), /option6/, "no IPv6 resolvers without an IPv6 subnet");
        assert.doesNotMatch(renderNetworkXml(wgnet, { ...settings, serveDns: true }), /dns enable="no"|dnsmasq:option /);
    });

    it("domain: virtio disk overlay, read-only seed disk, virtio NIC on the network, logged serial console", () => {
        const xml = renderDomainXml(web, { network: "wgnet", poolDir: "/var/lib/libvirt/images/wgexit", domainType: "kvm" });
        assert.match(xml, /<source file="\/var\/lib\/libvirt\/images\/wgexit\/web\.qcow2"\/>\s*<target dev="vda" bus="virtio"\/>/);
        assert.match(xml, /<source file="\/var\/lib\/libvirt\/images\/wgexit\/web-seed\.iso"\/>\s*<target dev="vdb" bus="virtio"\/>\s*<readonly\/>/);
        assert.match(xml, /<source network="wgnet"\/>\s*<mac address="52:54:00:[0-9a-f:]{8}"\/>\s*<model type="virtio"\/>/);
        assert.match(xml, /<serial type="pty">\s*<log file="\/var\/log\/libvirt\/qemu\/web-console\.log"/);
        assert.match(renderDomainXml(tiny, { network: "wgnet", poolDir: "/p", domainType: "qemu" }), /<kernel>\/srv\/boot\/vmlinuz<\/kernel>/);
    });

    it("seed: hostname, user with the SSH keys, no password", () => {
        const userData = renderGuestUserData(web);
        assert.match(userData, /^#cloud-config\nhostname: web\n/);
        assert.match(userData, /lock_passwd: true/);
        assert.ok(userData.includes(TEST_SSH_PUBLIC_KEY));
        assert.match(renderGuestMetaData("home", web), /instance-id: home-web\nlocal-hostname: web\n/);
    });

    it("is shellcheck-clean", { skip: !have("shellcheck") && "SKIPPED LOUDLY: shellcheck is not installed" }, () => {
        const scripts: [string, string, string][] = [
            ["settings.env", renderSiteSettings(settings), "bash"],
            ["install command", renderSiteInstallCommand(settings, gateway), "sh"],
            ["remove command", renderSiteRemoveCommand(), "sh"],
            ["network up", renderNetworkUpCommand(wgnet, settings), "sh"],
            ["network remove", renderNetworkRemoveCommand(wgnet), "sh"],
            ["guest up", renderGuestUpCommand(web, wgnet, settings), "sh"],
            ["guest remove", renderGuestRemoveCommand(web), "sh"],
        ];
        for (const [name, script, shell] of scripts) {
            const r = shellcheck(script, shell);
            assert.equal(r.status, 0, `${name}:\n${r.out}`);
        }
    });

    it("ruleset passes nft -c", { skip: !canRunNft() && "SKIPPED LOUDLY: nft -c needs nft and root" }, () => {
        for (const s of [settings, { ...settings, serveDns: true, allowInboundFrom: [] }]) {
            const r = nftCheck(renderSiteRuleset(s));
            assert.equal(r.status, 0, r.out);
        }
    });

    it("network and domain XML pass virt-xml-validate", { skip: !have("virt-xml-validate") && "SKIPPED LOUDLY: virt-xml-validate (libvirt-clients + libxml2-utils) is not installed" }, () => {
        for (const [xml, kind] of [
            [renderNetworkXml(wgnet, settings), "network"],
            [renderNetworkXml(labnet, { ...settings, serveDns: true }), "network"],
            [renderDomainXml(web, { network: "wgnet", poolDir: settings.poolDir, domainType: "kvm" }), "domain"],
            [renderDomainXml(tiny, { network: "wgnet", poolDir: settings.poolDir, domainType: "qemu" }), "domain"],
        ]) {
            const r = virtXmlValidate(xml, kind);
            assert.equal(r.status, 0, `${kind}:\n${r.out}\n${xml}`);
        }
    });

    it("guest user data passes cloud-init schema, with keys and without", { skip: !have("cloud-init") && "SKIPPED LOUDLY: cloud-init is not installed" }, () => {
        for (const guest of [web, { ...web, sshAuthorizedKeys: [] }]) {
            const userData = renderGuestUserData(guest);
            const r = cloudInitSchema(userData);
            assert.equal(r.status, 0, `${r.out}\n${userData}`);
        }
        assert.doesNotMatch(renderGuestUserData({ ...web, sshAuthorizedKeys: [] }), /ssh_authorized_keys/);
    });
});

describe("KvmSite under mocks", () => {
    it("wires keys both ways, orders steps, and carries no private key", async () => {
        const run = await runProgram({ ...baseConfig("existing"), sites: [SITE] });
        const graph = run.registrations.map((r) => `${r.type}::${r.name}`).sort();
        matchSnapshot("graph-site.txt", `${graph.join("\n")}\n`);

        const byName = new Map(run.registrations.map((r) => [r.name, r]));
        const install = byName.get("site-home-install");
        assert.ok(install, "the site installs");
        assert.match(String(install.inputs.create), new RegExp(`PublicKey = ${FAKE_GATEWAY_KEY.replace(/[+/=]/g, "\\$&")}`), "the site gets the gateway's key");
        const peers = String(byName.get("gateway-peers")?.inputs.create);
        assert.ok(peers.includes(`# home\n[Peer]\nPublicKey = ${FAKE_SITE_KEY}\nAllowedIPs = 10.66.0.2/32, fd66:66:66::2/128, 192.168.100.0/24, fd66:100::/64, 192.168.101.0/24\n`), peers);
        assert.ok(peers.includes(`PublicKey = ${PEER_KEY}`), "roaming peers stay");
        for (const n of ["site-home-network-wgnet", "site-home-network-lab", "site-home-guest-web-domain", "site-home-guest-tiny-domain"]) assert.ok(byName.has(n), n);
        assert.deepEqual(run.outputs.sitePublicKeys, { home: FAKE_SITE_KEY });
        assert.deepEqual(run.outputs.siteGuests, { home: { web: "192.168.100.10", tiny: "192.168.100.11" } });
        for (const r of run.registrations) assert.doesNotMatch(JSON.stringify(r.inputs), /PrivateKey = [A-Za-z0-9+/]{43}=/);
    });

    it("base images are keyed by their source (and SHA-256): two URLs ending in one file name never share a base", () => {
        const a = baseImageName("https://a.example/images/debian.qcow2");
        const b = baseImageName("https://b.example/other/debian.qcow2");
        assert.notEqual(a, b);
        assert.match(a, /^[0-9a-f]{16}-debian\.qcow2$/, "readable tail: the source's own file name");
        assert.equal(baseImageName("https://a.example/images/debian.qcow2"), a, "the same source, the same base");
        assert.notEqual(baseImageName("https://a.example/images/debian.qcow2", "ab".repeat(32)), a, "a new SHA-256 for the same URL is a new base");
        assert.match(baseImageName("/srv/img/My Image (1).qcow2"), /^[0-9a-f]{16}-My_Image__1_\.qcow2$/);
    });

    it("adding a guest changes only that guest's step; a new image replaces the guest", async () => {
        const commands = (run: Awaited<ReturnType<typeof runProgram>>) =>
            new Map(run.registrations.filter((r) => r.type === "command:remote:Command").map((r) => [r.name, JSON.stringify(r.inputs)]));
        const before = commands(await runProgram({ ...baseConfig("existing"), sites: [SITE] }));
        const grown = { ...SITE, networks: [{ ...WGNET, guests: [...WGNET.guests, { name: "extra", image: "/srv/images/base.qcow2" }] }, LABNET] };
        const after = commands(await runProgram({ ...baseConfig("existing"), sites: [grown] }));
        const changed = [...after.keys()].filter((k) => before.get(k) !== after.get(k));
        assert.deepEqual(changed, ["site-home-guest-extra-domain"]);
        const guest = (await runProgram({ ...baseConfig("existing"), sites: [SITE] })).registrations.find((r) => r.name === "site-home-guest-web-domain");
        assert.ok(guest, "the guest's domain step exists");
        assert.deepEqual((guest.inputs.triggers as unknown[]).slice(0, 2), [WEB_GUEST.image, 10], "image and disk size are replace triggers");
    });
});
