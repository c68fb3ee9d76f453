// A laptop with two gateways: its VM holds a tunnel to each and its health check (the VM's
// failover.sh watch, as its systemd unit would run it) moves the laptop's traffic while each
// cloud is cut off in turn, with the far end of the laptop's Wi-Fi captured throughout: only
// the VM's WireGuard flows to the two endpoints may leave it, whichever gateway carries it.
import { diffLines, type Lab, labStackFile, stepsTaken } from "./lab";
import { captureUplink } from "./laptopScenario";
import { cutCloud, DETECTION_BOUND_S, FAILOVER, SECOND_GATEWAY, startEgressProbe, waitForHealthChecks } from "./twoCloudsScenario";
import { LAB } from "./world";

const VM_FAILOVER = "/etc/wgexit/laptop-vm/failover.sh";
const HEALTH_RECORDS = "/run/wgexit-laptop-vm-failover/*.health";

export async function twoCloudsLaptopScenario(lab: Lab): Promise<void> {
    const group = "gateways/two-clouds-laptop";
    const w = lab.world;
    const before = { laptop: await w.hostSnapshot("laptop"), vm: await w.hostSnapshot("lvm"), cloud: await w.hostSnapshot("cloud"), cloud2: await w.hostSnapshot("cloud2") };
    // The gateways and the laptop alone (no site, so no peer may name one).
    const peers = (lab.baseOverrides().peers as Record<string, unknown>[]).map((p) => ({ ...p, canReach: [] }));
    const config = { sites: [], peers, laptops: labStackFile()["wgexit:laptops"], gateways: [SECOND_GATEWAY], failover: FAILOVER };

    const applied = await lab.apply(config);
    const made = applied.executions.map((e) => e.key.split("::")[1]);
    const vmKey = (await w.hostExec("lvm", "cat /etc/wgexit/laptop-vm/public.key")).stdout.trim();
    const secondPeers = (await w.hostExec("cloud2", "wg show wg0 peers")).stdout;
    lab.record(
        group,
        "one apply gives the laptop's VM a tunnel to each gateway (both take it as a peer) and its health check",
        ["gateway-ovh-install", "laptop-laptop-vm", "laptop-laptop-failover", "laptop-laptop-laptop"].every((n) => made.includes(n)) && secondPeers.includes(vmKey),
        `${applied.executions.length} steps in ${applied.wallMs} ms; gateway ovh ${secondPeers.includes(vmKey) ? "has" : "lacks"} the VM's key`,
    );

    const watch = w.startHostDaemon("laptop-failover-watch", "lvm", [VM_FAILOVER, "watch"]);
    let probe: Awaited<ReturnType<typeof startEgressProbe>> | undefined;
    const times: Record<string, number> = {};
    let lateAnswers = -1;
    let kill = "";
    try {
        await waitForHealthChecks(lab, "lvm", HEALTH_RECORDS);
        const capture = await captureUplink(
            lab,
            async () => {
                probe = await startEgressProbe(lab, "laptop-egress", "laptop");
                const p = probe;
                times.first = p.answers().at(-1)?.seen === LAB.cloudPublic.v4 ? 0 : Number.NaN;
                const t1 = Date.now() / 1000;
                await cutCloud(lab, "vcn", true);
                times.failover = await p.firstAnswer(t1, LAB.cloud2.v4, 40_000);
                const t2 = Date.now() / 1000;
                await cutCloud(lab, "vcn", false);
                times.failback = await p.firstAnswer(t2, LAB.cloudPublic.v4, 60_000);
                const t3 = Date.now() / 1000;
                await cutCloud(lab, "vcn", true);
                await cutCloud(lab, "cloud2", true);
                await new Promise((r) => setTimeout(r, (DETECTION_BOUND_S + 4) * 1000));
                lateAnswers = p.answers().filter((e) => e.t > t3 + DETECTION_BOUND_S && e.seen !== "-").length;
                kill = (await w.hostExec("lvm", "ip -4 route show table 7701")).stdout.trim().replace(/\n/g, " | ");
                await cutCloud(lab, "vcn", false);
                await cutCloud(lab, "cloud2", false);
                times.resumed = await p.firstAnswer(Date.now() / 1000, LAB.cloudPublic.v4, 40_000);
            },
            [LAB.laptop.wlanV4],
            [`${LAB.cloudPublic.v4}.51820`, `${LAB.cloud2.v4}.51820`],
        );
        lab.record(group, "the laptop leaves by the first gateway, as its public address", times.first === 0, `server saw ${probe?.answers()[0]?.seen ?? "nothing"}`);
        lab.record(group, `the first cloud cut off: the laptop leaves by the second within ${DETECTION_BOUND_S} s`, times.failover <= DETECTION_BOUND_S, `failover time ${times.failover.toFixed(1)} s`);
        lab.record(group, `the first cloud back: the laptop returns after its ${FAILOVER.failbackAfterSeconds} s hold, not before`, times.failback >= FAILOVER.failbackAfterSeconds && times.failback <= FAILOVER.failbackAfterSeconds + DETECTION_BOUND_S, `returned after ${times.failback.toFixed(1)} s`);
        lab.record(group, "both clouds cut off: the VM's kill switch refuses the laptop's traffic, nothing answers", lateAnswers === 0 && !/^default dev/m.test(kill) && /unreachable default/.test(kill), `table 7701: ${kill}; ${lateAnswers} answers; both back: first answer after ${times.resumed.toFixed(1)} s`);
        const wireguard = capture.wireguard;
        const toSecond = wireguard.filter((f) => f.includes(`> ${LAB.cloud2.v4}.51820`)).length;
        lab.record(group, "through all of it: only the VM's WireGuard flows to the two endpoints leave the laptop's Wi-Fi (and ARP)", capture.leaks.length === 0 && toSecond > 0 && wireguard.length > toSecond, capture.leaks[0] ?? `${wireguard.length} WireGuard frames (${toSecond} to the second gateway), ${capture.fromLaptop.length - wireguard.length} ARP, nothing else`);
    } finally {
        await probe?.stop();
        await cutCloud(lab, "vcn", false);
        await cutCloud(lab, "cloud2", false);
    }

    const status = await lab.status(lab.writeStackFile(config, "Pulumi.lab-twoclouds-laptop.yaml"));
    const switches = (await w.hostExec("lvm", "cat /etc/wgexit/laptop-vm/failover/switches.log", true)).stdout.trim().split("\n");
    lab.record(
        group,
        "npm run status: the laptop's VM says which gateway carries the laptop's traffic; every switch is logged on the VM",
        status.code === 0 && /^laptop laptop \(VM\)\s+laptop traffic\s+ok\s+by gateway gateway \(wgexit1\)/m.test(status.stdout) && /^gateway ovh\s+peer laptop\s+ok/m.test(status.stdout) && switches.length >= 3,
        `${status.stdout.split("\n").filter((l) => /laptop traffic|^gateway ovh\s+peer laptop|problem/.test(l)).join(" | ") || status.stderr.slice(0, 200)}; ${switches.length} switches logged, last: ${switches.at(-1)}`,
    );
    await w.stopLabDaemon(watch);

    const again = await lab.apply(config);
    lab.record(group, "re-applying changes nothing", again.executions.length === 0, stepsTaken(again));
    await lab.apply(config, true);
    const after = { laptop: await w.hostSnapshot("laptop"), vm: await w.hostSnapshot("lvm"), cloud: await w.hostSnapshot("cloud"), cloud2: await w.hostSnapshot("cloud2") };
    const same = before.laptop === after.laptop && before.vm === after.vm && before.cloud === after.cloud && before.cloud2 === after.cloud2;
    lab.record(group, "destroy leaves the laptop, its VM and both gateway hosts as they were", same, same ? "identical" : diffLines(Object.values(before).join(""), Object.values(after).join("")));
}
