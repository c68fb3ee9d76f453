// The split layout for real: a gateway stack and a home-site stack, each with its own state,
// wired only by their outputs (the lab engine answers StackReferences with the other stack's
// last outputs). The first deploy in the documented order, a namespace guest egressing
// through the gateway, a missing stack refused with nothing done; then a second gateway in
// the gateway stack, which the site stack's site joins, reports on (npm run status) and fails
// over to; and destroy of both.
import { inNs, waitFor } from "./exec";
import { startNamespaceGuest, stopNamespaceGuest } from "./guests";
import type { StackOutputsRead } from "./engine";
import { diffLines, type Lab, labStackFile, type StackOutputs, stackRef, statusPeerLines, statusProblems, stepsTaken } from "./lab";
import { FAILOVER, SECOND_GATEWAY } from "./twoCloudsScenario";
import { LAB } from "./world";

const GATEWAY = "lab-gateway";
const HOME = "lab-home";

export async function splitScenario(lab: Lab): Promise<void> {
    const group = "stacks/split";
    const w = lab.world;
    const file = labStackFile();
    // The committed home site without its QEMU guest (the site scenario boots that one).
    const site = { ...(file["wgexit:sites"] as Record<string, unknown>[])[0], networks: ((file["wgexit:sites"] as { networks: Record<string, unknown>[] }[])[0].networks ?? []).map((n) => ({ ...n, guests: [] })) };
    const peers = (lab.baseOverrides().peers as Record<string, unknown>[]).map((p) => ({ ...p, canReach: [] }));
    const gateway = (peerStacks: string[], stackRefs: Record<string, StackOutputsRead>, extra: Record<string, unknown> = {}) =>
        lab.apply({ sites: [], laptops: [], peers, peerStacks, ...extra }, false, { name: GATEWAY, stackRefs });
    const homeConfig = { gatewayStack: GATEWAY, sshPrivateKey: lab.baseOverrides().sshPrivateKey, sites: [site] };
    const home = (stackRefs: Record<string, StackOutputsRead>, allowFailure = false) => lab.apply({}, false, { name: HOME, config: homeConfig, stackRefs, allowFailure });
    // The KVM host as a stock install leaves it (as in the site scenario), settled before the snapshot.
    await waitFor("libvirt's default network", async () => (await w.virsh("net-list --name", true)).stdout.includes("default"), 30_000, 250);
    await w.hostExec("kvm", "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1");
    const kvmBefore = await w.hostSnapshot("kvm");
    const cloudBefore = await w.hostSnapshot("cloud");
    const cloud2Before = await w.hostSnapshot("cloud2");

    // A missing gateway stack: refused before anything runs.
    const missing = await home({}, true);
    lab.record(group, "a missing gateway stack is refused, with the key and the fix, and nothing runs", missing.executions.length === 0 && /wgexit:gatewayStack: cannot read the outputs .*lab-gateway.*Nothing was created/.test(missing.failures.join(" ")), `${stepsTaken(missing)}; ${missing.failures.join(" ").slice(0, 160)}`);

    // 1. The gateway stack. 2. The site stack makes its key and waits.
    const g1 = await gateway([], {});
    const h1 = await home({ [GATEWAY]: stackRef(g1) });
    const published = (h1.outputs.tunnelPeers as { name: string; publicKey: string }[] | undefined)?.[0];
    const onHost = (await w.hostExec("kvm", "cat /etc/wgexit/site/private.key | wg pubkey")).stdout.trim();
    lab.record(group, "first site run: only the key, published as tunnelPeers, the site waits for its gateway", stepsTaken(h1) === "create site-home-key" && published?.publicKey === onHost && (h1.outputs.waitingForGateway as string[]).includes("home"), `${stepsTaken(h1)}; published ${published?.publicKey ?? "nothing"}`);

    // 3. The gateway stack takes the site from its output. 4. The site joins.
    const g2 = await gateway([HOME], { [HOME]: stackRef(h1) });
    const gwPeers = (await w.hostExec("cloud", "wg show wg0 peers")).stdout;
    const address = (g2.outputs as unknown as StackOutputs).peerAddresses?.home?.addressV4;
    lab.record(group, "the gateway stack reads the site's key from its outputs and gives it an address", gwPeers.includes(onHost) && address !== undefined && stepsTaken(g2) === "update gateway-peers", `${stepsTaken(g2)}; home at ${address}`);
    const h2 = await home({ [GATEWAY]: stackRef(g2) });
    const tunnelAddress = (await w.hostExec("kvm", "ip -4 -o addr show dev wgexit0 | awk '{print $4}'", true)).stdout.trim();
    lab.record(group, "second site run: the site joins with the gateway's key and its allocated address", tunnelAddress === `${address}/32` && (h2.outputs.waitingForGateway as string[]).length === 0, `${stepsTaken(h2)}; wgexit0 ${tunnelAddress || "missing"}`);

    const lease = await startNamespaceGuest(w, "virbr-wg");
    try {
        const seen = await inNs(w.ns("guest"), `curl -s -m 5 http://${LAB.server.v4}:${LAB.server.httpPort}/`, { allowFail: true });
        lab.record(group, "a guest of the site stack egresses through the gateway stack's gateway", seen.stdout.trim() === LAB.cloudPublic.v4, `lease ${lease.ip}, server saw ${seen.stdout.trim() || "nothing"}`);
    } finally {
        await stopNamespaceGuest(w);
    }

    const homeAgain = await home({ [GATEWAY]: stackRef(g2) });
    const again = [homeAgain, await gateway([HOME], { [HOME]: stackRef(homeAgain) })];
    lab.record(group, "re-running both stacks changes nothing", again.every((r) => r.executions.length === 0), again.map(stepsTaken).join("; "));

    // A second gateway in the gateway stack: it takes the site stack's site at once; the site
    // stack then gives its site a tunnel to it and the health check, from the published facts.
    const twoClouds = { gateways: [SECOND_GATEWAY], failover: FAILOVER };
    const g3 = await gateway([HOME], { [HOME]: stackRef(homeAgain) }, twoClouds);
    const secondPeers = (await w.hostExec("cloud2", "wg show wg0 peers", true)).stdout;
    lab.record(group, "a second gateway in the gateway stack takes the peer stack's site as its peer", secondPeers.includes(onHost) && /create gateway-ovh-install/.test(stepsTaken(g3)), stepsTaken(g3));
    const h3 = await home({ [GATEWAY]: stackRef(g3) });
    const index = Number(address?.split(".")[3]);
    const secondTunnel = (await w.hostExec("kvm", "ip -4 -o addr show dev wgexit0-2 | awk '{print $4}'", true)).stdout.trim();
    lab.record(group, "the site stack joins the second gateway from its outputs: a tunnel at the site's host index in its block, and the health check", secondTunnel === `10.67.0.${index}/32` && /create site-home-failover/.test(stepsTaken(h3)), `${stepsTaken(h3)}; wgexit0-2 ${secondTunnel || "missing"}`);

    // As the site's systemd unit runs it (lab hosts have no systemd); a guest asks who it is.
    const watch = w.startHostDaemon("failover-watch", "kvm", ["/etc/wgexit/site/failover.sh", "watch"]);
    await startNamespaceGuest(w, "virbr-wg");
    try {
        const egress = async () => (await inNs(w.ns("guest"), `curl -s -m 1 http://${LAB.server.v4}:${LAB.server.httpPort}/`, { allowFail: true })).stdout.trim();
        await waitFor("the guest's first answer through the first gateway", async () => (await egress()) === LAB.cloudPublic.v4, 30_000, 250).catch(() => undefined);
        const before = await egress();
        // `npm run status` with the site stack's file: its site, through the failover script the
        // gateway stack's further gateway made it install, judging both gateways it joined.
        const report = await lab.status(lab.writeStackFile({}, "Pulumi.lab-home.yaml", { config: homeConfig }));
        const peerLines = statusPeerLines(report);
        lab.record(
            group,
            "npm run status for the site stack: its site through failover.sh, the gateway carrying guest traffic, both gateways judged; the gateways left to their stack",
            report.code === 0 &&
                /^site home\s+guest traffic\s+ok\s+by gateway gateway \(wgexit0\)/m.test(report.stdout) &&
                ["gateway", "ovh"].every((g) => peerLines.some((l) => new RegExp(`peer ${g}\\s+ok\\s+handshake \\d+ s ago`).test(l) && !/not judged/.test(l))) &&
                !/^gateway/m.test(report.stdout) &&
                report.stderr.includes(GATEWAY),
            report.code === 0 ? [...report.stdout.split("\n").filter((l) => /guest traffic/.test(l)), ...peerLines].map((l) => l.replace(/\s+/g, " ")).join("; ") : statusProblems(report),
        );
        const cut = Date.now();
        await inNs(w.ns("inet"), "ip link set i-vcn down");
        let moved = Number.NaN;
        try {
            await waitFor("the guest's first answer through the second gateway", async () => (await egress()) === LAB.cloud2.v4, 30_000, 200);
            moved = (Date.now() - cut) / 1000;
        } catch {
            // recorded below
        } finally {
            await inNs(w.ns("inet"), "ip link set i-vcn up");
        }
        lab.record(group, "the first cloud cut off: the peer stack's guests leave by the second gateway", before === LAB.cloudPublic.v4 && !Number.isNaN(moved), `before the cut ${before || "nothing"}; ${Number.isNaN(moved) ? "no answer through the second in 30 s" : `through the second after ${moved.toFixed(1)} s`}`);
    } finally {
        await stopNamespaceGuest(w);
        await w.stopLabDaemon(watch);
    }

    // Destroy: the site stack first (its host), then the gateway stack.
    await lab.apply({}, true, { name: HOME, config: homeConfig });
    await lab.apply(twoClouds, true, { name: GATEWAY });
    const kvmAfter = await w.hostSnapshot("kvm");
    const cloudAfter = await w.hostSnapshot("cloud");
    const cloud2After = await w.hostSnapshot("cloud2");
    const same = kvmBefore === kvmAfter && cloudBefore === cloudAfter && cloud2Before === cloud2After;
    lab.record(group, "destroying both stacks leaves the KVM host and both gateway hosts as they were", same, same ? "identical" : diffLines(`${kvmBefore}${cloudBefore}${cloud2Before}`, `${kvmAfter}${cloudAfter}${cloud2After}`));
}
