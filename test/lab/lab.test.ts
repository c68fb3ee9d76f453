// The lab inside npm test: the real program applied to the namespace world, then the
// isolation and leak matrix. Needs Linux and root; elsewhere it skips, loudly.
import * as assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { labUnsupportedReason } from "../../lab/cli";
import { type Check, formatMatrix, gatewayScenario, Lab } from "../../lab/lab";
import { laptopScenario } from "../../lab/laptopScenario";
import { siteScenario } from "../../lab/siteScenario";
import { splitScenario } from "../../lab/splitScenario";
import { twoCloudsLaptopScenario } from "../../lab/twoCloudsLaptopScenario";
import { twoCloudsScenario } from "../../lab/twoCloudsScenario";

const reason = labUnsupportedReason();
if (reason) {
    console.error(`\n!!! LAB SKIPPED: ${reason}. The end-to-end checks did NOT run. !!!\n`);
}

describe("lab", { skip: reason ? `LAB SKIPPED: ${reason}` : false }, () => {
    let lab: Lab;
    before(async () => {
        lab = await Lab.start();
    });
    after(async () => {
        if (!lab) return;
        console.log(formatMatrix(lab.checks));
        const left = await lab.destroy();
        assert.deepEqual(left, [], "the lab leaves no namespace, process or file behind");
    });

    const assertGroup = async (group: string) => {
        const checks = lab.checks.filter((c: Check) => c.group === group);
        assert.ok(checks.length > 5, `${group} ran`);
        const failed = checks.filter((c) => !c.pass);
        if (failed.length) console.error(await lab.world.debugDump());
        assert.deepEqual(failed.map((c) => `${c.name}: ${c.detail}`), [], `${group} failed checks`);
    };

    it("gateway on an existing host: egress, isolation, idempotence, clean destroy", async () => {
        await gatewayScenario(lab, "existing");
        await assertGroup("gateway/existing");
    });

    it("gateway on OCI: the cloud-init payload runs, Oracle's iptables rules survive", async () => {
        await gatewayScenario(lab, "oci");
        await assertGroup("gateway/oci");
    });

    it("KVM site: guests egress only through the tunnel, the host and the LAN stay sealed, a broken kill switch is caught, destroy is clean", async () => {
        await siteScenario(lab);
        await assertGroup("site/kvm");
        assert.ok(lab.checks.some((c) => c.name.startsWith("the leak check fails when the kill switch is removed") && c.pass));
    });

    it("split layout: a gateway stack and a site stack wired only by their outputs, first deploy in order, a missing stack refused", async () => {
        await splitScenario(lab);
        await assertGroup("stacks/split");
    });

    it("two clouds: gateways tied, guests fail over and back behind the kill switch, 0 packets leak, replies by the tunnel they came in on, clean destroy", async () => {
        await twoCloudsScenario(lab);
        await assertGroup("gateways/two-clouds");
    });

    it("laptop (Linux) through its local VM: only the WireGuard flow on the uplink, no leak with the tunnel down, a broken kill switch is caught, roaming, exact restore", async () => {
        await laptopScenario(lab);
        await assertGroup("laptop/linux");
    });

    it("a laptop on two gateways: its VM fails over and back behind its kill switch, only the WireGuard flows on the laptop's Wi-Fi, clean destroy", async () => {
        await twoCloudsLaptopScenario(lab);
        await assertGroup("gateways/two-clouds-laptop");
    });

    it("a sabotaged forward rule makes the matrix fail (the checks can fail)", async () => {
        const sabotage = new Lab(lab.world);
        sabotage.peerPrivateKey = lab.peerPrivateKey;
        sabotage.peerPublicKey = lab.peerPublicKey;
        await gatewayScenario(sabotage, "existing", { sabotage: true });
        const failed = sabotage.checks.filter((c) => !c.pass).map((c) => c.name);
        assert.ok(failed.includes("forward to 169.254.169.254 dropped"), `expected the metadata check to fail, failed: ${failed.join(", ")}`);
        assert.ok(failed.includes("forward to the gateway's private network dropped"));
    });
});
