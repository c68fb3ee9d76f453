// The laptop client's renderers: snapshots, every macOS rule and route asserted (macOS cannot
// run here), shellcheck and nft -c; and the component under mocks.
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import {
    type LaptopSettings,
    type LaptopVmSettings,
    renderLaptopInstallCommand,
    renderLaptopRemoveCommand,
    laptopFiles,
    laptopVmFiles,
    renderLaptopSettings,
    renderLaptopVmInstallCommand,
    renderLaptopVmRemoveCommand,
    renderLaptopVmRuleset,
    renderLaptopVmSettings,
} from "../../components/laptopClient.render";
import { baseConfig, FAKE_GATEWAY_KEY, FAKE_SITE_KEY, LAPTOP, runProgram } from "../helpers/program";
import { matchSnapshot } from "../helpers/snapshot";
import { canRunNft, deliveredText, have, nftCheck, shellcheck } from "../helpers/tools";

const vm: LaptopVmSettings = {
    name: "mac",
    wgInterface: "wgexit1",
    tunnelMtu: 1420,
    addressV4: "10.66.0.3",
    addressV6: "fd66:66:66::3",
    routeTable: 7701,
    vmLink: "eth0",
    laptopAddress: "192.168.64.1",
    laptopAddressV6: "fd66:64::1",
};
const laptop = (os: LaptopSettings["os"]): LaptopSettings => ({
    name: "mac",
    os,
    vmAddress: "192.168.64.2",
    vmAddressV6: "fd66:64::2",
    endpointHost: "198.51.100.10",
    endpointPort: 51820,
    resolver: "9.9.9.9",
    networkService: "Wi-Fi",
});
const gateway = { publicKey: FAKE_GATEWAY_KEY, endpoint: "198.51.100.10:51820" };
const fn = (script: string, name: string) => script.slice(script.indexOf(`${name}() {`), script.indexOf("\n}\n", script.indexOf(`${name}() {`)));


describe("laptop renderers", () => {
    it("snapshots", () => {
        matchSnapshot("laptop-vm.settings.env", renderLaptopVmSettings(vm));
        matchSnapshot("laptop-vm.nft", renderLaptopVmRuleset(vm));
        matchSnapshot("laptop-linux.settings.env", renderLaptopSettings(laptop("linux")));
        matchSnapshot("laptop-macos.settings.env", renderLaptopSettings(laptop("macos")));
    });

    it("VM: the laptop leaves only through the tunnel, masqueraded, with a kill switch", () => {
        const rules = renderLaptopVmRuleset(vm);
        assert.match(rules, /iifname "eth0" oifname "wgexit1" ip saddr 192\.168\.64\.1 accept/);
        assert.match(rules, /ip saddr 192\.168\.64\.1 counter drop comment "kill switch/);
        assert.match(rules, /oifname "wgexit1" ip saddr 192\.168\.64\.1 masquerade/);
        assert.match(rules, /oifname "wgexit1" ip6 saddr fd66:64::1 masquerade/);
        assert.match(rules, /iifname "wgexit1" counter drop comment "nothing from the tunnel reaches the VM"/);
        const script = deliveredText(laptopVmFiles(vm, gateway));
        assert.match(script, /ip "-\$f" rule add pref "\$ROUTE_TABLE" iif "\$VM_LINK" from "\$from" lookup "\$ROUTE_TABLE"/);
        assert.match(fn(script, "sync_policy_routing"), /sync_laptop_rule 4 "\$LAPTOP_V4"[\s\S]*sync_laptop_rule 6 "\$LAPTOP_V6"/);
        assert.match(script, /route replace unreachable default metric 4294967295 table "\$ROUTE_TABLE"/);
        assert.doesNotMatch(fn(script, "down"), /drop_policy_routing|drop_table/, "down keeps the kill switch");
        assert.match(fn(script, "\nstatus"), /peer_status .*peer\.conf/, "status reports the handshake with the gateway");
    });

    it("macOS: routes, endpoint routes, pf anchor, DNS and the roaming watcher", () => {
        const script = deliveredText(laptopFiles(laptop("macos")));
        const up = fn(script, "up");
        for (const route of ['route_set 4 0.0.0.0/1 "$VM_V4"', 'route_set 4 128.0.0.0/1 "$VM_V4"', 'route_set 6 ::/1 "$VM_V6"', 'route_set 6 8000::/1 "$VM_V6"', `route_set 4 "\${flow%:*}/32" "$gw" "$dev"`]) {
            assert.ok(up.includes(route), route);
        }
        assert.ok(up.indexOf("firewall_on") < up.indexOf("route_set"), "the firewall is up before any route moves");
        assert.match(fn(script, "physical_gateway"), /netstat -rn -f inet \| awk '\$1 == "default"/);
        assert.match(fn(script, "route_set"), /route -q -n add "\$inet" "\$prefix" "\$via"/);
        const pf = fn(script, "firewall_on");
        assert.deepEqual(
            [...pf.matchAll(/echo "((?:pass|block) [^"]*)"/g)].map((m) => m[1]),
            [
                "pass out quick on $phys proto udp from any port 68 to any port 67",
                "pass in quick on $phys proto udp from any port 67 to any port 68",
                `pass out quick on $phys proto udp from any to \${flow%:*} port \${flow##*:} keep state`,
                "block drop quick on $phys all",
            ],
            "only DHCP and the WireGuard flows pass on the physical interface",
        );
        assert.match(pf, /for flow in \$2; do echo "pass out quick on \$phys proto udp from any to/, "one rule per gateway's flow");
        assert.match(pf, /pfctl -q -a "\$PF_ANCHOR" -f/);
        assert.match(script, /PF_ANCHOR="com\.apple\/wgexit"/, "an anchor the stock pf.conf already loads");
        assert.match(pf, /pfctl -E/);
        assert.match(fn(script, "firewall_off"), /pfctl -q -X/, "the pf enable reference is released");
        // Roaming with traffic in flight: the NAT state made on the previous network goes, after the new routes and rules.
        assert.match(fn(script, "forget_flow"), /pfctl -q -k "\$VM_V4" -k "\$1"/);
        assert.ok(up.lastIndexOf("route_set") < up.indexOf(`forget_flow "\${flow%:*}" "\${flow##*:}"`), "the flows are forgotten once the new routes are in place");
        assert.match(fn(script, "ping_once"), /ping -c 1 -t 2 "\$1"/, "macOS ping: -t is the deadline");
        assert.match(fn(script, "dns_save"), /networksetup -getdnsservers "\$NETWORK_SERVICE"/);
        assert.match(fn(script, "dns_set"), /networksetup -setdnsservers "\$NETWORK_SERVICE" "\$RESOLVER"/);
        assert.match(fn(script, "dns_restore"), /-setdnsservers "\$NETWORK_SERVICE" empty/);
        const watch = fn(script, "watch_on");
        assert.match(watch, /<key>WatchPaths<\/key><array><string>\/Library\/Preferences\/SystemConfiguration<\/string>/);
        assert.match(watch, /<string>\$ROLE_SCRIPT<\/string><string>reroute<\/string>/);
        assert.match(watch, /launchctl bootstrap system/);
        const down = fn(script, "down");
        for (const step of ["route_unset 4 0.0.0.0/1", "route_unset 4 128.0.0.0/1", "route_unset 6 ::/1", "route_unset 6 8000::/1", "dns_restore", "firewall_off"]) assert.ok(down.includes(step), step);
        assert.match(renderLaptopInstallCommand(laptop("macos")), /^\/bin\/sh <<'WGEXIT_SH_EOF'\n/, "zsh login shells run it under /bin/sh");
    });

    it("the shared logic is the same on both platforms; only the driver differs", () => {
        // The same files but settings.env and the driver (laptop-linux.sh or laptop-macos.sh).
        const shared = (os: LaptopSettings["os"]) => laptopFiles(laptop(os)).filter((f) => !/settings\.env$|laptop-(linux|macos)\.sh$/.test(f.path)).map((f) => `${f.path.replace(/.*\//, "")}\n${f.content}`);
        assert.deepEqual(shared("linux"), shared("macos"));
        assert.equal(laptopFiles(laptop("linux")).length, shared("linux").length + 2);
        const linux = deliveredText(laptopFiles(laptop("linux")));
        assert.doesNotMatch(linux, /pfctl|networksetup|launchctl|netstat/);
        assert.doesNotMatch(deliveredText(laptopFiles(laptop("macos"))), /\bnft\b|\bip route\b|resolvectl/);
        assert.match(fn(linux, "firewall_on"), /oifname "\$phys" ip saddr \$VM_V4 ip daddr \. udp dport \{ \$flows \} accept/);
    });

    it("is shellcheck-clean", { skip: !have("shellcheck") && "SKIPPED LOUDLY: shellcheck is not installed" }, () => {
        const scripts: [string, string, string][] = [
            ["vm settings.env", renderLaptopVmSettings(vm), "bash"],
            ["laptop settings.env (linux)", renderLaptopSettings(laptop("linux")), "bash"],
            ["laptop settings.env (macos)", renderLaptopSettings(laptop("macos")), "bash"],
            ["vm install", renderLaptopVmInstallCommand(vm, gateway), "sh"],
            ["vm remove", renderLaptopVmRemoveCommand(), "sh"],
            ["laptop install (macos)", renderLaptopInstallCommand(laptop("macos")), "sh"],
            ["laptop remove (linux)", renderLaptopRemoveCommand("linux"), "sh"],
        ];
        for (const [name, script, shell] of scripts) {
            const r = shellcheck(script, shell);
            assert.equal(r.status, 0, `${name}:\n${r.out}`);
        }
    });

    it("the Linux laptop's firewall, as firewall_on writes it for two gateways, passes nft -c and opens exactly their flows", { skip: !canRunNft() && "SKIPPED LOUDLY: nft -c needs nft and root" }, () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wgexit-laptop-fw-"));
        try {
            const driver = laptopFiles(laptop("linux")).find((f) => f.path.endsWith("/laptop-linux.sh"))?.content ?? "";
            // The driver's firewall_on with nft stubbed: what it would apply, written to STATE_DIR.
            fs.writeFileSync(path.join(dir, "laptop-linux.sh"), driver);
            const r = spawnSync("bash", ["-c", `set -eu; nft() { :; }; LAPTOP_TABLE=wgexit_laptop VM_V4=192.168.64.2 STATE_DIR=${dir}; . ${dir}/laptop-linux.sh; firewall_on wlan0 "$(printf '198.51.100.10:51820\n198.51.100.40:51821\n')"`], { encoding: "utf8" });
            assert.equal(r.status, 0, r.stderr);
            const rules = fs.readFileSync(path.join(dir, "firewall.nft"), "utf8");
            assert.match(rules, /oifname "wlan0" ip saddr 192\.168\.64\.2 ip daddr \. udp dport \{ 198\.51\.100\.10 \. 51820, 198\.51\.100\.40 \. 51821 \} accept/);
            assert.match(rules, /iifname "wlan0" ip saddr \. udp sport \{ 198\.51\.100\.10 \. 51820, 198\.51\.100\.40 \. 51821 \} ct state established accept/);
            const check = nftCheck(rules);
            assert.equal(check.status, 0, check.out);
        } finally {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });

    it("VM ruleset passes nft -c", { skip: !canRunNft() && "SKIPPED LOUDLY: nft -c needs nft and root" }, () => {
        for (const s of [vm, { ...vm, laptopAddressV6: undefined }, { ...vm, extraTunnels: ["wgexit1-2"] }]) {
            const r = nftCheck(renderLaptopVmRuleset(s));
            assert.equal(r.status, 0, r.out);
        }
    });
});

describe("LaptopClient under mocks", () => {
    it("the VM's key reaches the gateway; the laptop switches over after its VM", async () => {
        const run = await runProgram({ ...baseConfig("existing"), laptops: [LAPTOP] });
        const byName = new Map(run.registrations.map((r) => [r.name, r]));
        assert.ok(byName.has("laptop-mac-vm") && byName.has("laptop-mac-laptop"));
        assert.match(String(byName.get("laptop-mac-laptop")?.inputs.create), /ENDPOINT_HOST='198\.51\.100\.10'/);
        assert.ok(String(byName.get("gateway-peers")?.inputs.create).includes(`# mac\n[Peer]\nPublicKey = ${FAKE_SITE_KEY}\nAllowedIPs = 10.66.0.3/32, fd66:66:66::3/128\n`));
        assert.deepEqual(run.outputs.laptopPublicKeys, { mac: FAKE_SITE_KEY });
    });
});
