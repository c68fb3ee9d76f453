// The status command's pure parts: which hosts it asks, how it reads their answers, and
// when it calls the estate unhealthy. The lab runs it for real against live hosts.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import { stringify as toYaml } from "yaml";
import { parseStackConfig } from "../../components/config";
import { encodeConfig } from "../../lab/mocked";
import { UsageError } from "../../ops/args";
import { formatStatus, gatewayHosts, main, parseStatus, STALE_SECONDS, stackFileConfig, statusTargets } from "../../ops/status";
import { baseConfig, LAPTOP, SITE } from "../helpers/program";

const config = parseStackConfig(encodeConfig({ ...baseConfig("existing"), sites: [SITE], laptops: [LAPTOP] }, "wgexit:"));

describe("status", () => {
    it("asks the gateway, each site, and each laptop and its VM, with the role's script", () => {
        const targets = statusTargets(config, gatewayHosts(config, [], undefined));
        assert.deepEqual(
            targets.map((t) => [t.label, `${t.user}@${t.host}:${t.port}`, t.scripts.join(" "), t.roamingPeers.join(",")]),
            [
                ["gateway", "root@198.51.100.10:22", "/etc/wgexit/gateway/gateway.sh", "phone"],
                ["site home", "root@192.168.1.10:22", "/etc/wgexit/site/site.sh", ""],
                ["laptop mac (VM)", "root@192.168.64.2:22", "/etc/wgexit/laptop-vm/vm.sh", ""],
                ["laptop mac", "admin@192.168.64.1:22", "/var/db/wgexit/laptop/laptop.sh", ""],
            ],
        );
    });

    it("with two gateways: asks the second too, and the site's failover script, which names the gateway carrying guest traffic", () => {
        const two = parseStackConfig(
            encodeConfig({ ...baseConfig("existing"), sites: [SITE], gateways: [{ name: "ovh", placement: "existing", existing: { host: "198.51.100.40" }, tunnelCidr: "10.67.0.0/24", tunnelCidrV6: "fd66:67:67::/64" }] }, "wgexit:"),
        );
        const targets = statusTargets(two, gatewayHosts(two, [], undefined));
        assert.deepEqual(
            targets.map((t) => [t.label, t.host, t.scripts.join(" "), t.roamingPeers.join(",")]),
            [
                ["gateway", "198.51.100.10", "/etc/wgexit/gateway/gateway.sh", "phone"],
                ["gateway ovh", "198.51.100.40", "/etc/wgexit/gateway/gateway.sh", "phone"],
                ["site home", "192.168.1.10", "/etc/wgexit/site/failover.sh", ""],
            ],
        );
        // Each gateway judges the other (a mesh peer keeps alive), as it judges the site.
        const gateway = parseStatus(targets[0], "peer ovh handshake=never rx=0 tx=0\npeer phone handshake=never rx=0 tx=0\n");
        assert.deepEqual(gateway.map((l) => [l.item, l.ok, l.judged]), [
            ["peer ovh", false, true],
            ["peer phone", true, false],
        ]);
        const site = targets[2];
        const on = parseStatus(site, "check failover watch running ok\ncarrier ovh via wgexit0-2 since 42\npeer ovh handshake=5 rx=100 tx=200\n");
        assert.deepEqual(on.map((l) => [l.item, l.ok, l.detail]), [
            ["failover watch running", true, "in place"],
            ["guest traffic", true, "by gateway ovh (wgexit0-2), for 42 s"],
            ["peer ovh", true, "handshake 5 s ago, rx 0.0 MiB, tx 0.0 MiB"],
        ]);
        const none = parseStatus(site, "carrier none\n");
        assert.deepEqual(none.map((l) => [l.item, l.ok, l.detail]), [["guest traffic", false, "no gateway answers: the kill switch holds it"]]);
    });

    it("judges tunnels that keep alive, reports roaming clients without judging them", () => {
        const [gateway] = statusTargets(config, { gateway: "198.51.100.10" });
        const lines = parseStatus(
            gateway,
            [
                "check tunnel wg0 ok",
                "check routes for every peer FAIL",
                "peer home handshake=12 rx=1048576 tx=2097152",
                `peer mac handshake=${STALE_SECONDS + 1} rx=0 tx=0`,
                "peer phone handshake=never rx=0 tx=0",
                "something else",
            ].join("\n"),
        );
        assert.deepEqual(
            lines.map((l) => [l.item, l.ok, l.judged]),
            [
                ["tunnel wg0", true, true],
                ["routes for every peer", false, true],
                ["peer home", true, true],
                ["peer mac", false, true],
                ["peer phone", true, false],
            ],
        );
        assert.match(lines[2].detail, /handshake 12 s ago, rx 1\.0 MiB, tx 2\.0 MiB/);
        const report = formatStatus(lines);
        assert.match(report, /peer phone +idle +no handshake yet.*not judged/);
        assert.match(report, /\n2 problems$/);
        assert.match(formatStatus(lines.filter((l) => l.ok)), /\nhealthy$/);
    });

    it("in a site or laptop stack of the split layout: its own hosts only, through the failover script where one is installed", () => {
        const member = parseStackConfig(encodeConfig({ gatewayStack: "acme/wgexit/prod", sshPrivateKey: baseConfig("existing").sshPrivateKey, sites: [SITE], laptops: [LAPTOP] }, "wgexit:"));
        const targets = statusTargets(member, {});
        assert.deepEqual(
            targets.map((t) => [t.label, t.scripts.join(" "), t.roamingPeers.join(",")]),
            [
                ["site home", "/etc/wgexit/site/failover.sh /etc/wgexit/site/site.sh", ""],
                ["laptop mac (VM)", "/etc/wgexit/laptop-vm/failover.sh /etc/wgexit/laptop-vm/vm.sh", ""],
                ["laptop mac", "/var/db/wgexit/laptop/laptop.sh", ""],
            ],
        );
        // --gateway belongs to the gateway stack's status: refused here, with where to use it.
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wgexit-status-"));
        const errors: string[] = [];
        const original = console.error;
        console.error = (m: string) => errors.push(m);
        try {
            const file = path.join(dir, "Pulumi.home.yaml");
            fs.writeFileSync(file, toYaml({ config: { "wgexit:gatewayStack": "acme/wgexit/prod", "wgexit:sites": [SITE] } }));
            assert.equal(main(["--config", file, "--gateway", "198.51.100.10"]), 2);
        } finally {
            console.error = original;
            fs.rmSync(dir, { recursive: true, force: true });
        }
        assert.match(errors.join("\n"), /--gateway: this stack's gateways are those of stack acme\/wgexit\/prod/);
        // Every gateway the site joined, named by the gateway stack, is judged.
        const lines = parseStatus(targets[0], "carrier ovh via wgexit0-2 since 42\npeer gateway handshake=200 rx=0 tx=0\npeer ovh handshake=5 rx=0 tx=0\n");
        assert.deepEqual(lines.map((l) => [l.item, l.ok, l.judged]), [
            ["guest traffic", true, true],
            ["peer gateway", false, true],
            ["peer ovh", true, true],
        ]);
    });

    it("finds a further gateway on a new instance by --gateway NAME=ADDRESS or the stack's outputs, and names the fix when it cannot", () => {
        const cloud = parseStackConfig(
            encodeConfig({ ...baseConfig("existing"), sites: [SITE], gateways: [{ name: "ovh", placement: "ovh", ovh: { serviceName: "0123456789abcdef0123456789abcdef", region: "GRA11" }, tunnelCidr: "10.67.0.0/24", tunnelCidrV6: "fd66:67:67::/64" }] }, "wgexit:"),
        );
        const asked: string[] = [];
        const outputs = (stack: string, output: string) => {
            asked.push(`${stack} ${output}`);
            return output === "furtherGateways" ? { ovh: { address: "198.51.100.40" } } : undefined;
        };
        assert.deepEqual(gatewayHosts(cloud, [], "dev", outputs), { gateway: "198.51.100.10", ovh: "198.51.100.40" });
        assert.deepEqual(asked, ["dev furtherGateways"]);
        assert.deepEqual(gatewayHosts(cloud, ["ovh=192.0.2.40", "192.0.2.10"], undefined), { gateway: "192.0.2.10", ovh: "192.0.2.40" });
        const targets = statusTargets(cloud, gatewayHosts(cloud, ["ovh=192.0.2.40"], undefined));
        assert.deepEqual(targets.slice(0, 2).map((t) => [t.label, `${t.user}@${t.host}:${t.port}`]), [
            ["gateway", "root@198.51.100.10:22"],
            ["gateway ovh", "ubuntu@192.0.2.40:22"],
        ]);
        assert.throws(() => gatewayHosts(cloud, [], undefined), (e: Error) => e instanceof UsageError && /gateway ovh is on a new instance.*furtherGateways; pass --gateway ovh=<address>/.test(e.message));
        assert.throws(() => gatewayHosts(cloud, [], "dev", () => ({})), /the output has no address for it/);
        assert.throws(() => gatewayHosts(cloud, ["ohv=192.0.2.40"], undefined), /no further gateway is named ohv in this stack \(gateways: ovh\)/);
    });

    it("reads a stack file without its secrets", () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wgexit-status-"));
        try {
            const file = path.join(dir, "Pulumi.test.yaml");
            const { sshPrivateKey: _unused, ...plain } = baseConfig("existing");
            const prefixed = Object.fromEntries(Object.entries(plain).map(([k, v]) => [`wgexit:${k}`, v]));
            fs.writeFileSync(file, toYaml({ config: { ...prefixed, "wgexit:sshPrivateKey": { secure: "v1:abc" } } }));
            const parsed = parseStackConfig(stackFileConfig(file));
            assert.equal(parsed.existing?.host, "198.51.100.10");
        } finally {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });

    it("names the missing flag on bad usage (exit 2)", () => {
        const errors: string[] = [];
        const original = console.error;
        console.error = (m: string) => errors.push(m);
        try {
            assert.equal(main([]), 2);
            assert.equal(main(["--config"]), 2);
            assert.equal(main(["--config", "/nonexistent/Pulumi.x.yaml"]), 2);
        } finally {
            console.error = original;
        }
        assert.match(errors[0], /--stack dev/);
        assert.match(errors[1], /--config needs a value/);
        assert.match(errors[2], /no stack file/);
    });
});
