// The laptop scenario of the matrix: the gateway plus a Linux laptop whose traffic goes
// through its local VM. A capture on the far end of the laptop's Wi-Fi link (in the home
// router, out of the laptop's reach) must see nothing from the laptop but the VM's
// WireGuard flow, while the laptop pings, browses and resolves; with the tunnel down nothing
// leaks; a broken kill switch is caught; roaming moves the endpoint route; destroy puts the
// laptop and its VM back exactly as they were.
import * as fs from "node:fs";
import * as path from "node:path";
import { isDatagramTo } from "./capture";
import { inNs, waitFor } from "./exec";
import { type Check, diffLines, failureLine, Lab, labStackFile, type StackOutputs, statusPeerLines, statusProblems, stepsTaken } from "./lab";
import { LAB } from "./world";

const LAPTOP_SCRIPT = "/etc/wgexit/laptop/laptop.sh";
const VM_SCRIPT = "/etc/wgexit/laptop-vm/vm.sh";
const VM_WG = "wgexit1";
const ENDPOINT = `${LAB.cloudPublic.v4}.51820`;
const HTTP = (host: string) => `http://${host.includes(":") ? `[${host}]` : host}:${LAB.server.httpPort}/`;
// The second café: another subnet on the same Wi-Fi (the home router plays both routers), with
// its own resolver, which alone knows the name cafe.test.
const CAFE2 = { router: "192.168.7.1", routerV6: "2001:db8:7::1", laptop: "192.168.7.60", net: "192.168.7.0/24", name: "cafe.test" };
/** The longest the laptop may go without an answer across a roam, in seconds. */
const ROAM_RECOVERY_BOUND_S = 10;

interface Capture {
    /** Frames sent by the laptop's Wi-Fi interface, as tcpdump prints them. */
    fromLaptop: string[];
    /** Those that are the VM's WireGuard flow to an endpoint. */
    wireguard: string[];
    /** Those that are neither ARP nor the VM's WireGuard flow to an endpoint. */
    leaks: string[];
}

/**
 * Captures every frame on the home router's side of the laptop's Wi-Fi link while `during`
 * runs. Only ARP and UDP to the gateways' endpoints ("address.port") may come from the laptop.
 */
export async function captureUplink(lab: Lab, during: () => Promise<void>, laptopAddresses: string[] = [LAB.laptop.wlanV4], endpoints: string[] = [ENDPOINT]): Promise<Capture> {
    const w = lab.world;
    const pcap = path.join(w.root, "laptop-uplink.pcap");
    fs.rmSync(pcap, { force: true });
    w.clearLog("tcpdump-laptop");
    const d = w.startLabDaemon("tcpdump-laptop", "home", ["tcpdump", "-i", "h-laptop", "-nn", "-U", "-s", "128", "-w", pcap]);
    await waitFor("tcpdump on the laptop's uplink", () => fs.readFileSync(d.logFile, "utf8").includes("listening on"), 10_000);
    try {
        await during();
    } finally {
        await w.stopLabDaemon(d);
    }
    const mac = (await inNs(w.ns("laptop"), "cat /sys/class/net/wlan0/address")).stdout.trim();
    const frames = (await inNs(w.ns("home"), `tcpdump -r ${pcap} -nn -e 2>/dev/null`, { allowFail: true })).stdout.split("\n").filter(Boolean);
    const fromLaptop = frames.filter((f) => f.split(" ")[1] === mac);
    const wireguard = fromLaptop.filter((f) => isDatagramTo(f, endpoints, laptopAddresses));
    return { fromLaptop, wireguard, leaks: fromLaptop.filter((f) => !/ethertype ARP/.test(f) && !wireguard.includes(f)) };
}

/** What the laptop achieves: ping, HTTP over IPv4 and IPv6, DNS through its resolv.conf, the LAN device. */
async function laptopProbes(lab: Lab) {
    const w = lab.world;
    const sh = async (script: string) => w.hostExec("laptop", script, true);
    const curl = async (url: string, seconds = 4) => {
        const r = await sh(`curl -s -g -m ${seconds} ${url}`);
        return r.code === 0 ? r.stdout.trim() : undefined;
    };
    const dns = await sh("timeout 5 busybox nslookup example.test");
    return {
        ping4: (await sh(`ping -c 2 -W 2 ${LAB.server.v4}`)).code === 0,
        ping6: (await sh(`ping -6 -c 2 -W 2 ${LAB.server.v6}`)).code === 0,
        http4: await curl(HTTP(LAB.server.v4)),
        http6: await curl(HTTP(LAB.server.v6)),
        dns: dns.code === 0 && dns.stdout.includes(LAB.server.v4),
        lan: await curl(`http://${LAB.lanDevice.v4}/`, 2),
    };
}

/** The laptop's traffic with its tunnel gone: no answer, nothing on the uplink, nothing anywhere. */
async function leakCheck(lab: Lab, group: string, what: string): Promise<void> {
    const w = lab.world;
    w.clearLog("srv-http-clients");
    w.clearLog("lan-clients");
    let probes: Awaited<ReturnType<typeof laptopProbes>> | undefined;
    const capture = await captureUplink(lab, async () => {
        probes = await laptopProbes(lab);
    });
    const answered = Object.entries(probes ?? {}).filter(([, v]) => v).map(([k]) => k);
    const arrived = w.readLog("srv-http-clients").length + w.readLog("lan-clients").length;
    lab.record(group, `${what}: 0 packets leak (uplink capture, internet, LAN; IPv4, IPv6, DNS)`, capture.leaks.length === 0 && answered.length === 0 && arrived === 0, capture.leaks[0] ?? `answered: ${answered.join(", ") || "none"}; ${arrived} connections arrived; ${capture.fromLaptop.length} frames from the laptop, none but ARP and WireGuard`);
}

export async function laptopScenario(lab: Lab): Promise<void> {
    const group = "laptop/linux";
    const w = lab.world;
    // The gateway and the laptop alone (no site, so no peer may name one).
    const peers = (lab.baseOverrides().peers as Record<string, unknown>[]).map((p) => ({ ...p, canReach: [] }));
    const overrides = { sites: [], peers, laptops: labStackFile()["wgexit:laptops"] };
    const before = { laptop: await w.hostSnapshot("laptop"), vm: await w.hostSnapshot("lvm") };
    const lanToLaptop = async () => (await inNs(w.ns("lan"), `timeout 3 bash -c '</dev/tcp/${LAB.laptop.wlanV4}/22' 2>/dev/null && echo open || echo closed`, { allowFail: true })).stdout.trim();
    const exposedBefore = await lanToLaptop();

    const applied = await lab.apply(overrides);
    const outputs = applied.outputs as unknown as StackOutputs;
    lab.record(group, "apply creates the gateway, the VM's tunnel and the laptop's switch-over", applied.executions.some((e) => e.key.endsWith("laptop-laptop-laptop")), `${applied.executions.map((e) => e.key.split("::")[1]).join(", ")} in ${applied.wallMs} ms`);
    const vmKey = outputs.laptopPublicKeys?.laptop ?? "";
    const keyOnVm = (await w.hostExec("lvm", "stat -c %a /etc/wgexit/laptop-vm/private.key; cat /etc/wgexit/laptop-vm/public.key")).stdout.trim().split("\n");
    lab.record(group, "VM key made on the VM (0600), public key exported", keyOnVm[0] === "600" && keyOnVm[1] === vmKey && /^[A-Za-z0-9+/]{43}=$/.test(vmKey), vmKey);
    const gwPeers = (await w.hostExec("cloud", "wg show wg0 peers")).stdout;
    lab.record(group, "the gateway has the VM as a peer", gwPeers.includes(vmKey), `${gwPeers.trim().split("\n").length} peers`);

    // Everything the laptop does, while the far end of its uplink is captured.
    fs.writeFileSync(path.join(w.root, "resolver.log"), "");
    w.clearLog("srv-http-clients");
    w.clearLog("lan-clients");
    let p: Awaited<ReturnType<typeof laptopProbes>> | undefined;
    const capture = await captureUplink(lab, async () => {
        p = await laptopProbes(lab);
    });
    const probes = p as Awaited<ReturnType<typeof laptopProbes>>;
    lab.record(group, "laptop egresses as the gateway (IPv4)", probes.http4 === LAB.cloudPublic.v4 && probes.ping4, `server saw ${probes.http4 ?? "nothing"}, ping ${probes.ping4 ? "answered" : "lost"}`);
    lab.record(group, "laptop egresses as the gateway (IPv6)", probes.http6 === LAB.cloudPublic.v6 && probes.ping6, `server saw ${probes.http6 ?? "nothing"}, ping ${probes.ping6 ? "answered" : "lost"}`);
    const queries = fs.readFileSync(path.join(w.root, "resolver.log"), "utf8").split("\n").filter((l) => / from /.test(l) && /query\[/.test(l));
    const sources = [...new Set(queries.map((l) => l.replace(/.* from /, "").trim()))];
    lab.record(group, "DNS goes to the configured resolver through the tunnel", probes.dns && sources.length > 0 && sources.every((a) => a === LAB.cloudPublic.v4), `answered ${probes.dns}, resolver saw ${sources.join(", ") || "nothing"}`);
    const wireguard = capture.wireguard.length;
    lab.record(group, "uplink capture: only UDP to the gateway endpoint leaves the laptop (and ARP)", capture.leaks.length === 0 && wireguard > 0, capture.leaks.length ? `leaked: ${capture.leaks.slice(0, 3).join(" | ")}` : `${wireguard} WireGuard frames, ${capture.fromLaptop.length - wireguard} ARP, nothing else`);
    lab.record(group, "laptop → device on the same Wi-Fi: blocked", probes.lan === undefined && w.readLog("lan-clients").length === 0, `LAN device saw ${w.readLog("lan-clients").length} connections`);
    const exposed = await lanToLaptop();
    lab.record(group, "device on the same Wi-Fi → laptop: blocked", exposedBefore === "open" && exposed === "closed", `SSH from the LAN: ${exposedBefore} before, ${exposed} after`);

    // `npm run status` from the operator: every host of the stack, then the fault.
    const stackFile = lab.writeStackFile(overrides, "Pulumi.lab-laptop.yaml");
    const healthy = await lab.status(stackFile);
    const peerLines = statusPeerLines(healthy);
    lab.record(group, "status: healthy, with the handshake's age", healthy.code === 0 && peerLines.length === 3 && peerLines.every((l) => /handshake \d+ s ago/.test(l) || /not judged/.test(l)), healthy.code === 0 ? peerLines.join("; ") : statusProblems(healthy));

    // Kill switch: the VM's tunnel deleted.
    await w.hostExec("lvm", `ip link del ${VM_WG}`);
    const faulty = await lab.status(stackFile);
    lab.record(group, "status reports the missing tunnel and exits non-zero", faulty.code === 1 && /laptop laptop \(VM\)\s+tunnel wgexit1\s+FAIL/.test(faulty.stdout), statusProblems(faulty));
    await leakCheck(lab, group, "VM tunnel deleted");
    // The same check must fail when the kill switches are broken: the laptop's firewall and
    // routes gone, so it falls back to its Wi-Fi.
    const caught = await sabotageKillSwitch(lab);
    lab.record(group, "the leak check fails when the laptop's kill switch is removed (the checks can fail)", caught.pass === false, caught.detail);
    await w.hostExec("laptop", `${LAPTOP_SCRIPT} up`);
    await w.hostExec("lvm", `${VM_SCRIPT} up`);

    await roamWithTraffic(lab, group);

    const again = await lab.apply(overrides);
    lab.record(group, "re-apply changes nothing", again.executions.length === 0, stepsTaken(again));

    // Another laptop address: the VM's one rule per family follows it in place, and back.
    const rules = async () => (await w.hostExec("lvm", "ip -4 rule show pref 7701; ip -6 rule show pref 7701")).stdout.trim().split("\n").map((l) => l.replace(/\s+/g, " "));
    const laptops = labStackFile()["wgexit:laptops"] as Record<string, unknown>[];
    const moved = await lab.apply({ ...overrides, laptops: laptops.map((l) => ({ ...l, laptopAddress: "192.168.64.9", laptopAddressV6: "fd66:64::9" })) });
    const there = await rules();
    const movedBack = await lab.apply(overrides);
    const back = await rules();
    const exactly = (lines: string[], v4: string, v6: string) => lines.join("|") === `7701: from ${v4} iif eth0 lookup 7701|7701: from ${v6} iif eth0 lookup 7701`;
    lab.record(
        group,
        "another laptop address: the VM's rule for each family follows it in place, and back, with none left from before",
        stepsTaken(moved) === "update laptop-laptop-vm" && stepsTaken(movedBack) === "update laptop-laptop-vm" && exactly(there, "192.168.64.9", "fd66:64::9") && exactly(back, "192.168.64.1", "fd66:64::1"),
        `${stepsTaken(moved)}: ${there.join("; ")}; ${stepsTaken(movedBack)}: ${back.join("; ")}`,
    );

    const destroyed = await lab.apply(overrides, true);
    const after = { laptop: await w.hostSnapshot("laptop"), vm: await w.hostSnapshot("lvm") };
    lab.record(group, "destroy restores the laptop exactly (routes, firewall, DNS, files)", before.laptop === after.laptop, before.laptop === after.laptop ? `identical after ${destroyed.executions.length} deletes` : diffLines(before.laptop, after.laptop));
    lab.record(group, "destroy restores the VM exactly", before.vm === after.vm, before.vm === after.vm ? "identical" : diffLines(before.vm, after.vm));
    const reachable = await lanToLaptop();
    lab.record(group, "after destroy the laptop uses its Wi-Fi directly again", reachable === "open", `SSH from the LAN: ${reachable}`);

    await switchOverUndone(lab, group, overrides);
}

/**
 * A switch-over that fails halfway: the laptop has lost its IPv6 address on the VM link, so
 * the IPv6 routes via the VM are refused after the firewall, the endpoint route and the IPv4
 * routes are in place. The laptop puts everything back: byte-identical, its Wi-Fi usable.
 */
async function switchOverUndone(lab: Lab, group: string, overrides: Record<string, unknown>): Promise<void> {
    const w = lab.world;
    await w.hostExec("laptop", `ip addr del ${LAB.laptop.linkV6}/64 dev vmnet0`);
    try {
        const clean = await w.hostSnapshot("laptop");
        const failed = await lab.apply(overrides, false, { allowFailure: true });
        const after = await w.hostSnapshot("laptop");
        const said = failureLine(failed, /.*switch-over failed.*/);
        lab.record(group, "a first switch-over that fails halfway is undone: the laptop byte-identical", /putting routes, firewall and DNS back/.test(said) && after === clean, after === clean ? said : diffLines(clean, after));
    } finally {
        await w.hostExec("laptop", `ip addr add ${LAB.laptop.linkV6}/64 dev vmnet0 nodad`);
    }
    await lab.apply(overrides, true);
}

/**
 * The laptop moves to another café (another subnet, another router, another resolver) while a
 * ping runs through the tunnel and the VM's WireGuard keeps sending. As on a real laptop: the
 * address goes, the new one comes with its default route and its DHCP's resolv.conf, and a
 * second later the network watcher runs `reroute`. Egress must resume within the bound, and
 * nothing but the WireGuard flow from the laptop's own address may leave the Wi-Fi. Then
 * `status` on the laptop must fail while the VM's tunnel is gone, and `down` must leave the
 * laptop resolving through the café it is in. At the end the laptop is back at the first café.
 */
async function roamWithTraffic(lab: Lab, group: string): Promise<void> {
    const w = lab.world;
    const resolverLog = path.join(w.root, "cafe2-resolver.log");
    fs.writeFileSync(resolverLog, "");
    await inNs(w.ns("home"), `ip addr add ${CAFE2.router}/24 dev br0 && nft add table ip cafe2 && nft 'add chain ip cafe2 postrouting { type nat hook postrouting priority srcnat; }' && nft add rule ip cafe2 postrouting oifname wan ip saddr ${CAFE2.net} masquerade`);
    const resolver = w.startLabDaemon("cafe2-dns", "home", ["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root", "--pid-file=", `--listen-address=${CAFE2.router}`, `--address=/${CAFE2.name}/${CAFE2.router}`, `--address=/${CAFE2.name}/${CAFE2.routerV6}`, "--log-queries", `--log-facility=${resolverLog}`]);
    const originalResolvConf = (await w.hostExec("laptop", "cat /etc/wgexit/laptop/resolv.conf.saved 2>/dev/null || cat /etc/resolv.conf")).stdout;
    const ping = w.startLabDaemon("roam-ping", "laptop", ["ping", "-D", "-n", "-i", "0.2", "-W", "1", LAB.server.v4]);
    let roamedAt = 0;
    try {
        await waitFor("the ping through the tunnel", () => /bytes from/.test(fs.readFileSync(ping.logFile, "utf8")), 10_000);
        const capture = await captureUplink(
            lab,
            async () => {
                roamedAt = Date.now() / 1000;
                // The Wi-Fi joins café 2: its address and router, then its DHCP's resolv.conf; the watcher fires a second later.
                await w.hostExec("laptop", `ip addr del ${LAB.laptop.wlanV4}/24 dev wlan0 && ip addr add ${CAFE2.laptop}/24 dev wlan0 && ip route replace default via ${CAFE2.router} dev wlan0 && printf 'nameserver ${CAFE2.router}\n' >/etc/resolv.conf.dhcp && mv -f /etc/resolv.conf.dhcp /etc/resolv.conf`);
                await new Promise((r) => setTimeout(r, 1000));
                await w.hostExec("laptop", `${LAPTOP_SCRIPT} reroute`);
                await waitFor("egress after roaming", () => repliesAfter(fs.readFileSync(ping.logFile, "utf8"), roamedAt + 1.2).length > 0, ROAM_RECOVERY_BOUND_S * 1000, 200).catch(() => undefined);
                // The traffic after the gap is captured too.
                await new Promise((r) => setTimeout(r, 3000));
            },
            [LAB.laptop.wlanV4, CAFE2.laptop],
        );
        const first = repliesAfter(fs.readFileSync(ping.logFile, "utf8"), roamedAt + 1.2)[0];
        const recovery = first === undefined ? undefined : first - roamedAt;
        const wireguard = capture.wireguard.length;
        lab.record(
            group,
            `roaming with traffic in flight: egress resumes within ${ROAM_RECOVERY_BOUND_S} s`,
            recovery !== undefined && recovery <= ROAM_RECOVERY_BOUND_S,
            recovery === undefined ? `no reply in ${ROAM_RECOVERY_BOUND_S} s` : `first reply ${recovery.toFixed(1)} s after the Wi-Fi changed (the watcher ran at 1.0 s)`,
        );
        lab.record(group, "roaming with traffic in flight: 0 frames leave but the WireGuard flow from the laptop's own address", capture.leaks.length === 0 && wireguard > 0, capture.leaks.length ? `${capture.leaks.length} leaked, e.g. ${capture.leaks[0]}` : `${wireguard} WireGuard frames, nothing else`);
    } finally {
        await w.stopLabDaemon(ping);
    }

    // status on the laptop itself sees the whole path: with the VM's tunnel gone it fails, in bounded time.
    await w.hostExec("lvm", `ip link del ${VM_WG}`);
    const started = Date.now();
    const broken = await w.hostExec("laptop", `${LAPTOP_SCRIPT} status`, true);
    const took = (Date.now() - started) / 1000;
    lab.record(group, "laptop.sh status fails while the VM's tunnel is gone (bounded in time)", broken.code !== 0 && took < 15, `exit ${broken.code} in ${took.toFixed(1)} s: ${broken.stdout.split("\n").filter((l) => /FAIL/.test(l)).join("; ") || broken.stdout.trim().split("\n").pop()}`);
    await w.hostExec("lvm", `${VM_SCRIPT} up`);

    // down after roaming: names resolve through café 2's resolver.
    await w.hostExec("laptop", `${LAPTOP_SCRIPT} down`);
    const looked = await w.hostExec("laptop", `timeout 5 busybox nslookup ${CAFE2.name}`, true);
    const asked = fs.readFileSync(resolverLog, "utf8").split("\n").some((l) => l.includes(`query[A] ${CAFE2.name}`));
    lab.record(group, "down after roaming resolves names through the network the laptop is on now", looked.code === 0 && looked.stdout.includes(CAFE2.router) && asked, `nslookup ${CAFE2.name}: exit ${looked.code}; café 2's resolver ${asked ? "answered" : "was not asked"}; resolv.conf: ${(await w.hostExec("laptop", "cat /etc/resolv.conf")).stdout.trim().replace(/\n/g, " | ")}`);

    // Back to the first café, as its DHCP would write it, and up again.
    await w.hostExec("laptop", `ip addr del ${CAFE2.laptop}/24 dev wlan0 && ip addr add ${LAB.laptop.wlanV4}/24 dev wlan0 && ip route replace default via ${LAB.home.lanV4} dev wlan0 && cat >/etc/resolv.conf <<'EOF'\n${originalResolvConf.trimEnd()}\nEOF\n${LAPTOP_SCRIPT} up`);
    await w.stopLabDaemon(resolver);
    await inNs(w.ns("home"), `nft delete table ip cafe2; ip addr del ${CAFE2.router}/24 dev br0`);
    await waitFor("egress back at the first café", async () => (await laptopProbes(lab)).http4 === LAB.cloudPublic.v4, 30_000, 1000).catch(() => undefined);
}

/** Unix times of the replies in `ping -D` output, after `since`. */
function repliesAfter(log: string, since: number): number[] {
    return [...log.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from/gm)].map((m) => Number(m[1])).filter((t) => t > since);
}

/** Removes the laptop's firewall and its routes to the VM, then runs the same leak check. */
async function sabotageKillSwitch(lab: Lab): Promise<Check> {
    const sabotage = new Lab(lab.world);
    await lab.world.hostExec("laptop", "nft delete table inet wgexit_laptop; ip route del 0.0.0.0/1; ip route del 128.0.0.0/1; ip -6 route del ::/1; ip -6 route del 8000::/1; true");
    await leakCheck(sabotage, "laptop/sabotage", "kill switch removed, VM tunnel deleted");
    return sabotage.checks[0];
}
