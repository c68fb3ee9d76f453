// The KVM site scenario of the matrix: the gateway plus the home site with a real libvirtd,
// a namespace guest and a QEMU guest, then every isolation and leak check of the KVM-site
// issue, re-apply, and a destroy that must leave the KVM host as it was.
import * as fs from "node:fs";
import * as path from "node:path";
import { baseImageName } from "../components/guestVm.render";
import { renderNetworkUpCommand, type SiteSettings } from "../components/kvmSite.render";
import { inNs, waitFor } from "./exec";
import { buildGuestBootFiles, guestKernelMissingReason, namespaceGuestV6, startNamespaceGuest, startNeighbourGuest, stopNamespaceGuest, stopNeighbourGuest } from "./guests";
import { type Check, diffLines, failureLine, Lab, type StackOutputs, statusPeerLines, statusProblems, stepsTaken } from "./lab";
import { LAB, PYTHON, type Role } from "./world";

const SITE_TABLE_CMD = "/etc/wgexit/site/site.sh";
const BRIDGE = "virbr-wg";
const SITE_WG = "wgexit0";
const HTTP = (host: string) => `http://${host.includes(":") ? `[${host}]` : host}:${LAB.server.httpPort}/`;

/**
 * Counts what a guest's probes would deliver to a namespace: new TCP connections, UDP and
 * pings to its own addresses. Late replies of earlier flows (SYN-ACK retries, their ICMP
 * errors) are not the guest's packets and are not counted.
 */
export async function watchArrivals(lab: Lab, role: Role): Promise<() => Promise<number>> {
    const ns = lab.world.ns(role);
    await inNs(
        ns,
        `nft -f - <<'EOF'
table inet wgexit_lab_watch {}
delete table inet wgexit_lab_watch
table inet wgexit_lab_watch {
	chain input {
		type filter hook input priority -400; policy accept;
		fib daddr type local tcp flags syn / syn,ack counter
		fib daddr type local meta l4proto udp counter
		fib daddr type local icmp type echo-request counter
		fib daddr type local icmpv6 type echo-request counter
	}
}
EOF`,
    );
    return async () => {
        const r = await inNs(ns, "nft list table inet wgexit_lab_watch; nft delete table inet wgexit_lab_watch");
        return [...r.stdout.matchAll(/counter packets (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    };
}

export interface HostileGatewayResult {
    /** Packets that reached the LAN device, and connections its listener logged. */
    arrived: number;
    lanClients: number;
    /** Whether the site host's SSH answered on its tunnel address. */
    sshOpen: boolean;
}

/**
 * A gateway turned hostile, as the site's firewall must survive it: it routes the home LAN
 * into its tunnel (routes, and the site's allowed-ips widened to the LAN and the guests),
 * sends to the LAN device from its tunnel address, a LAN address and a guest address over
 * IPv4 and IPv6, and tries the site host's SSH through the tunnel. The gateway is put back
 * (gateway.sh up) whatever happens. The two-cloud scenario turns its second gateway so.
 */
export async function hostileGateway(lab: Lab, role: "cloud" | "cloud2", p: { siteKey: string; siteTunnelV4: string; gatewayTunnelV4: string }): Promise<HostileGatewayResult> {
    const w = lab.world;
    const lanWatch = await watchArrivals(lab, "lan");
    w.clearLog("lan-clients");
    await w.hostExec(
        role,
        `wg set wg0 peer ${p.siteKey} allowed-ips ${p.siteTunnelV4}/32,192.168.100.0/24,fd66:100::/64,${LAB.home.lanNet},${LAB.home.lanNetV6}
        ip route add ${LAB.home.lanNet} dev wg0; ip -6 route add ${LAB.home.lanNetV6} dev wg0
        ip addr add 192.168.1.77/32 dev wg0; ip addr add 192.168.100.77/32 dev wg0`,
    );
    try {
        for (const source of [p.gatewayTunnelV4, "192.168.1.77", "192.168.100.77"]) {
            await inNs(w.ns(role), `curl -s -m 2 --interface ${source} http://${LAB.lanDevice.v4}/; ping -c 2 -W 1 -I ${source} ${LAB.lanDevice.v4}; true`, { allowFail: true });
        }
        await inNs(w.ns(role), `curl -s -g -m 2 http://[${LAB.lanDevice.v6}]/; ping -6 -c 2 -W 1 ${LAB.lanDevice.v6}; true`, { allowFail: true });
        const ssh = await inNs(w.ns(role), `timeout 3 bash -c '</dev/tcp/${p.siteTunnelV4}/22'`, { allowFail: true });
        return { arrived: await lanWatch(), lanClients: w.readLog("lan-clients").length, sshOpen: ssh.code === 0 };
    } finally {
        await w.hostExec(role, `ip route del ${LAB.home.lanNet} dev wg0; ip -6 route del ${LAB.home.lanNetV6} dev wg0; ip addr del 192.168.1.77/32 dev wg0; ip addr del 192.168.100.77/32 dev wg0; /etc/wgexit/gateway/gateway.sh up`, true);
    }
}

/** What a guest's traffic achieves: HTTP over IPv4 and IPv6, DNS, and the LAN device. */
async function guestProbes(lab: Lab, resolver: string) {
    const g = lab.world.ns("guest");
    const curl = async (url: string, seconds = 3) => {
        const r = await inNs(g, `curl -s -g -m ${seconds} ${url}`, { allowFail: true, timeoutMs: (seconds + 5) * 1000 });
        return r.code === 0 ? r.stdout.trim() : undefined;
    };
    const dns = await inNs(g, `timeout 4 busybox nslookup example.test ${resolver}`, { allowFail: true });
    return {
        http4: await curl(HTTP(LAB.server.v4)),
        http6: await curl(HTTP(LAB.server.v6)),
        dns: dns.code === 0 && dns.stdout.includes(LAB.server.v4),
        lan4: await curl(`http://${LAB.lanDevice.v4}/`, 2),
        lan6: await curl(`http://[${LAB.lanDevice.v6}]/`, 2),
    };
}

/** Guest traffic with the tunnel gone: nothing may arrive on the internet or the LAN. */
async function leakCheck(lab: Lab, group: string, what: string, resolver: string): Promise<void> {
    const internet = await watchArrivals(lab, "srv");
    const lan = await watchArrivals(lab, "lan");
    const p = await guestProbes(lab, resolver);
    const [atServer, atLan] = [await internet(), await lan()];
    const answered = Object.entries(p).filter(([, v]) => v).map(([k]) => k);
    lab.record(group, `${what}: 0 guest packets reach the internet or the LAN (IPv4, IPv6, DNS)`, atServer === 0 && atLan === 0 && answered.length === 0, `internet saw ${atServer} packets, LAN saw ${atLan}, answered: ${answered.join(", ") || "none"}`);
}

export async function siteScenario(lab: Lab): Promise<void> {
    const group = "site/kvm";
    const w = lab.world;
    const missing = guestKernelMissingReason();
    if (missing) {
        lab.record(group, "a guest kernel is available for the QEMU guest", false, missing);
        return;
    }
    lab.guestFiles ??= await buildGuestBootFiles(w);
    // The KVM host as a stock install leaves it: libvirtd with its default NAT network.
    await waitFor("libvirt's default network", async () => (await w.virsh("net-list --name", true)).stdout.includes("default"), 30_000, 250);
    await w.hostExec("kvm", "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1");
    const before = await w.hostSnapshot("kvm");
    const cloudBefore = await w.hostSnapshot("cloud");

    w.clearLog("srv-http-clients");
    const applied = await lab.apply({});
    const outputs = applied.outputs as unknown as StackOutputs;
    lab.record(group, "apply creates the gateway, the site, its network and guest", applied.executions.length >= 5, `${applied.executions.map((e) => e.key.split("::")[1]).join(", ")} in ${applied.wallMs} ms`);
    const siteKey = outputs.sitePublicKeys?.home ?? "";
    const keyOnHost = (await w.hostExec("kvm", "stat -c %a /etc/wgexit/site/private.key; cat /etc/wgexit/site/public.key")).stdout.trim().split("\n");
    lab.record(group, "site key made on the host (0600), public key exported", keyOnHost[0] === "600" && keyOnHost[1] === siteKey && /^[A-Za-z0-9+/]{43}=$/.test(siteKey), siteKey);
    const httpClients = w.readLog("srv-http-clients");
    const pool = (await w.hostExec("kvm", "ls /var/lib/libvirt/images/wgexit; virsh -q vol-list wgexit | awk '{print $1}'")).stdout.split("\n").filter(Boolean);
    const labBase = `base-${baseImageName(lab.guestFiles?.imageUrl ?? "", lab.guestFiles?.imageSha256)}`;
    lab.record(group, "base image fetched by URL into the storage pool, overlay and seed beside it", [labBase, "qguest.qcow2", "qguest-seed.iso"].every((f) => pool.filter((p) => p === f).length === 2), pool.join(" "));
    lab.record(group, "the host's own traffic (the image download) leaves by its own uplink", httpClients.includes(LAB.home.wanV4), `web server saw ${[...new Set(httpClients)].join(", ")}`);
    const gwPeers = (await w.hostExec("cloud", "wg show wg0 peers")).stdout;
    lab.record(group, "the gateway has the site as a peer", gwPeers.includes(siteKey), `${gwPeers.trim().split("\n").length} peers`);

    // The QEMU guest booted from the program's domain XML while the apply finished; read its console.
    const consoleLog = "/var/log/libvirt/qemu/qguest-console.log";
    let consoleText = "";
    await waitFor("the QEMU guest's probes", async () => {
        consoleText = (await w.hostExec("kvm", `cat ${consoleLog} 2>/dev/null`, true)).stdout;
        return consoleText.includes("WGEXIT DONE");
    }, 240_000, 1000).catch(() => undefined);
    const said = (key: string) => consoleText.match(new RegExp(`WGEXIT ${key} ?(.*)`))?.[1]?.trim() ?? "";
    const qguestIp = outputs.siteGuests?.home?.qguest;
    lab.record(group, "QEMU guest: static lease from libvirt's DHCP, tunnel MTU, configured resolver", said("LEASE").includes(`ip=${qguestIp}`) && said("LEASE").includes("mtu=1420") && said("LEASE").includes(`dns=${LAB.server.v4}`), said("LEASE") || consoleText.slice(-300));
    lab.record(group, "QEMU guest: NoCloud seed built on the host and attached", said("SEED") === "local-hostname: qguest", said("SEED") || "no seed line");
    lab.record(group, "QEMU guest egresses as the gateway (IPv4)", said("HTTP4") === LAB.cloudPublic.v4, `server saw ${said("HTTP4") || "nothing"}`);
    lab.record(group, "QEMU guest egresses as the gateway (IPv6)", said("HTTP6") === LAB.cloudPublic.v6, `server saw ${said("HTTP6") || "nothing"}`);
    const autostart = (await w.virsh("dominfo qguest", true)).stdout;
    lab.record(group, "QEMU guest defined with autostart", /Autostart:\s+enable/.test(autostart), autostart.match(/Autostart:.*/)?.[0] ?? "not defined");

    // The namespace guest: a NIC on the libvirt bridge.
    const lease = await startNamespaceGuest(w, BRIDGE);
    try {
        lab.record(group, "namespace guest: lease from libvirt's DHCP pool, MTU and resolvers by DHCP", lease.ip.startsWith("192.168.100.") && Number(lease.ip.split(".")[3]) >= 128 && lease.mtu === "1420" && lease.dns.split(" ").includes(LAB.server.v4), `ip=${lease.ip} router=${lease.router} dns=${lease.dns} mtu=${lease.mtu}`);
        const resolver = LAB.server.v4;
        fs.writeFileSync(path.join(w.root, "resolver.log"), "");
        const p = await guestProbes(lab, resolver);
        const v6 = await namespaceGuestV6(w);
        lab.record(group, "namespace guest egresses as the gateway (IPv4)", p.http4 === LAB.cloudPublic.v4, `server saw ${p.http4 ?? "nothing"}`);
        lab.record(group, "namespace guest egresses as the gateway (IPv6)", p.http6 === LAB.cloudPublic.v6, `SLAAC ${v6}, server saw ${p.http6 ?? "nothing"}`);
        const queries = fs.readFileSync(path.join(w.root, "resolver.log"), "utf8").split("\n").filter((l) => / from /.test(l) && /query\[/.test(l));
        const sources = [...new Set(queries.map((l) => l.replace(/.* from /, "").trim()))];
        lab.record(group, "DNS from a guest is seen by the resolver only from the gateway's address", p.dns && sources.length > 0 && sources.every((a) => a === LAB.cloudPublic.v4), `answered ${p.dns}, resolver saw ${sources.join(", ") || "nothing"}`);
        lab.record(group, "guest → LAN device: blocked", !p.lan4 && !p.lan6 && w.readLog("lan-clients").length === 0, `answers ${p.lan4 ?? "none"}/${p.lan6 ?? "none"}, LAN device saw ${w.readLog("lan-clients").length}`);

        // A neighbour on the same network: guests of one network reach each other, as on any
        // libvirt network, also where the host passes bridged traffic through its firewall
        // (br_netfilter, which Docker loads; the lab's namespaces inherit it from the machine).
        const neighbour = { v4: "192.168.100.60", v6: "fd66:100::60" };
        await startNeighbourGuest(w, BRIDGE, `${neighbour.v4}/24`, `${neighbour.v6}/64`);
        try {
            const brnf = (await inNs(w.ns("kvm"), "cat /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/bridge/bridge-nf-call-ip6tables 2>/dev/null | tr '\\n' ' '", { allowFail: true })).stdout.trim();
            const reach = async (address: string) => (await inNs(w.ns("guest"), `ping -n -c 3 -W 2 ${address}`, { allowFail: true })).code === 0;
            const [v4, v6] = [await reach(neighbour.v4), await reach(neighbour.v6)];
            lab.record(group, "guest → another guest of its network: reachable (IPv4, IPv6), bridged traffic through netfilter", v4 && v6, `IPv4 ${v4 ? "answered" : "silent"}, IPv6 ${v6 ? "answered" : "silent"}; bridge-nf-call-iptables/ip6tables: ${brnf || "br_netfilter not loaded"}`);
        } finally {
            await stopNeighbourGuest(w);
        }

        // The host: every address it has, from the guest and from the gateway.
        const hostAddresses = ["192.168.100.1", "fd66:100::1", LAB.kvm.v4, LAB.kvm.v6, outputs.peerAddresses.home.addressV4, outputs.peerAddresses.home.addressV6];
        const open = async (role: Role, address: string) =>
            (await inNs(w.ns(role), `timeout 3 bash -c '</dev/tcp/${address}/22' 2>/dev/null && echo open || echo closed`, { allowFail: true })).stdout.trim() === "open";
        const fromGuest = [];
        for (const a of hostAddresses) if (await open("guest", a)) fromGuest.push(a);
        const dnsOnHost = await inNs(w.ns("guest"), "timeout 4 busybox nslookup example.test 192.168.100.1", { allowFail: true });
        lab.record(group, "guest → every host address (bridge, LAN, tunnel): blocked", fromGuest.length === 0 && dnsOnHost.code !== 0, fromGuest.length ? `SSH open on ${fromGuest.join(", ")}` : `SSH closed on ${hostAddresses.length} addresses, host DNS ${dnsOnHost.code === 0 ? "answered" : "silent"}`);
        const fromGateway = [];
        for (const a of ["192.168.100.1", "fd66:100::1", outputs.peerAddresses.home.addressV4, outputs.peerAddresses.home.addressV6]) if (await open("cloud", a)) fromGateway.push(a);
        lab.record(group, "gateway → every host address: blocked", fromGateway.length === 0, fromGateway.length ? `open on ${fromGateway.join(", ")}` : "closed on the bridge and tunnel addresses");

        // The WireGuard network → guests, per allowInboundFrom.
        const listener = await startGuestListener(lab);
        const wg = await lab.peerUp(outputs);
        try {
            const fromPeer = async () => {
                w.clearLog("guest-clients");
                const body = await lab.httpFrom("peer", LAB.testPeer.subnetHost, `http://${lease.ip}/`, 5);
                return { body, seen: w.readLog("guest-clients") };
            };
            const allowed = await fromPeer();
            lab.record(group, "WireGuard network → guest: allowed (allowInboundFrom)", allowed.body === LAB.testPeer.subnetHost && allowed.seen.includes(LAB.testPeer.subnetHost), `guest saw ${allowed.seen.join(", ") || "nothing"}`);
            const closed = await lab.apply({ sites: siteWith(lab, { allowInboundFrom: [] }) });
            const denied = await fromPeer();
            lab.record(group, "WireGuard network → guest: denied when configured off", denied.body === undefined && denied.seen.length === 0 && closed.executions.every((e) => e.key.endsWith("site-home-install")), `${stepsTaken(closed)}; guest saw ${denied.seen.length}`);
            await lab.apply({});

            // A public port on the gateway, forwarded through the tunnel to the guest.
            const forwarded = await lab.apply({ portForwards: [{ name: "web", protocol: "tcp", port: 8081, site: "home", address: lease.ip, toPort: 80 }] });
            const viaGateway = await fetchForwarded(lab, LAB.cloudPublic.v4, 3);
            lab.record(group, "port forward: the gateway's public port reaches the guest, which sees the real client address", viaGateway.body === LAB.server.v4 && viaGateway.seen.includes(LAB.server.v4), `answer ${viaGateway.body ?? "none"}, guest saw ${viaGateway.seen.join(", ") || "nothing"}, ${viaGateway.attempts} attempt(s)`);
            lab.record(group, "adding a port forward updates the gateway's peers and the site in place", forwarded.executions.length === 2 && forwarded.executions.every((e) => e.action === "update" && /::(gateway-peers|site-home-install)$/.test(e.key)), stepsTaken(forwarded));
            await lab.apply({});
            const removed = await fetchForwarded(lab, LAB.cloudPublic.v4, 1);
            lab.record(group, "removing the port forward closes it", removed.body === undefined && removed.seen.length === 0, `answer ${removed.body ?? "none"}, guest saw ${removed.seen.length}`);
        } finally {
            await lab.peerDown(wg);
            listener();
        }

        // A hostile gateway routes the LAN into the tunnel and sends, with several sources.
        const hostile = await hostileGateway(lab, "cloud", { siteKey, siteTunnelV4: outputs.peerAddresses.home.addressV4, gatewayTunnelV4: "10.66.0.1" });
        lab.record(group, "hostile gateway with LAN routes and allowed-ips → LAN device: 0 packets arrive, the site host's SSH stays closed", hostile.arrived === 0 && hostile.lanClients === 0 && !hostile.sshOpen, `LAN device saw ${hostile.arrived} packets; site SSH ${hostile.sshOpen ? "open" : "closed"}`);

        // A 4 MB download while the server drops "fragmentation needed".
        await inNs(w.ns("srv"), `nft -f - <<'EOF'
table inet wgexit_lab_pmtu {
	chain input { type filter hook input priority -400; icmp type destination-unreachable icmp code frag-needed drop; icmpv6 type packet-too-big drop; }
}
EOF`);
        const started = Date.now();
        const download = await inNs(w.ns("guest"), `curl -s -m 60 -o /dev/null -w '%{size_download}' ${HTTP(LAB.server.v4)}bytes/4194304`, { allowFail: true, timeoutMs: 70_000 });
        await inNs(w.ns("srv"), "nft delete table inet wgexit_lab_pmtu");
        lab.record(group, "4 MB download completes while the server drops ICMP fragmentation-needed", download.stdout.trim() === "4194304", `${download.stdout.trim() || 0} bytes in ${((Date.now() - started) / 1000).toFixed(1)} s`);

        // `npm run status` from the operator: healthy, then the fault once the host's tunnel goes.
        const stackFile = lab.writeStackFile({}, "Pulumi.lab-site.yaml");
        const healthy = await lab.status(stackFile);
        lab.record(group, "status: healthy, with each peer's handshake age and bytes", healthy.code === 0 && /peer home\s+ok\s+handshake \d+ s ago, rx/.test(healthy.stdout) && /\nhealthy$/.test(healthy.stdout.trim()), healthy.code === 0 ? statusPeerLines(healthy).join("; ") : statusProblems(healthy));

        // Kill switch: the host's tunnel deleted, then the gateway dead.
        await w.hostExec("kvm", `ip link del ${SITE_WG}`);
        const fault = await lab.status(stackFile);
        lab.record(group, "status reports the site's missing tunnel and exits non-zero", fault.code === 1 && /site home\s+tunnel wgexit0\s+FAIL/.test(fault.stdout), statusProblems(fault));
        await leakCheck(lab, group, "site tunnel deleted", resolver);
        await w.hostExec("kvm", `${SITE_TABLE_CMD} up`);
        await w.hostExec("cloud", "ip link del wg0");
        await leakCheck(lab, group, "gateway dead", resolver);
        await w.hostExec("cloud", "/etc/wgexit/gateway/gateway.sh up");
        await w.hostExec("kvm", `ip link del ${SITE_WG}`);
        const caught = await sabotageKillSwitch(lab, resolver);
        lab.record(group, "the leak check fails when the kill switch is removed (the checks can fail)", caught.pass === false, caught.detail);
        await bootWindow(lab, group, resolver);
        await w.hostExec("kvm", `${SITE_TABLE_CMD} up`);
        await waitFor("guest egress after the tunnel returns", async () => (await guestProbes(lab, resolver)).http4 === LAB.cloudPublic.v4, 30_000, 1000).catch(() => undefined);
        const back = await guestProbes(lab, resolver);
        lab.record(group, "egress resumes once tunnel and gateway are back", back.http4 === LAB.cloudPublic.v4, `server saw ${back.http4 ?? "nothing"}`);
    } finally {
        await stopNamespaceGuest(w);
    }

    const again = await lab.apply({});
    lab.record(group, "re-apply changes nothing", again.executions.length === 0, stepsTaken(again));

    // A changed routeTable moves the guests' rules and kill switch to the new table, in place,
    // and back; nothing of the table left behind stays (the destroy check below sees the rest).
    const routing = async () => (await w.hostExec("kvm", "for f in 4 6; do ip -$f rule show; for t in 7700 7800; do ip -$f route show table $t | sed \"s/^/table $t: /\"; done; done")).stdout;
    const moved = await lab.apply({ sites: siteWith(lab, { routeTable: 7800 }) });
    const there = await routing();
    const movedBack = await lab.apply({});
    const back = await routing();
    const only = (text: string, table: number, other: number) =>
        (text.match(new RegExp(`^${table}:\\s+from all iif virbr-wg lookup ${table}`, "gm")) ?? []).length === 2 &&
        (text.match(new RegExp(`^table ${table}: default dev wgexit0`, "gm")) ?? []).length === 2 &&
        (text.match(new RegExp(`^table ${table}: unreachable default`, "gm")) ?? []).length === 2 &&
        !new RegExp(`\\b${other}\\b`).test(text);
    lab.record(
        group,
        "a changed routeTable moves the guests' rules, tunnel route and kill switch to the new table in place, and back; nothing of the old table is left",
        stepsTaken(moved) === "update site-home-install" && stepsTaken(movedBack) === "update site-home-install" && only(there, 7800, 7700) && only(back, 7700, 7800),
        `${stepsTaken(moved)}, then ${stepsTaken(movedBack)}; at 7800: ${there.split("\n").filter((l) => /7700|7800/.test(l)).length} lines${only(there, 7800, 7700) ? "" : ` (${there.replace(/\n/g, " | ").slice(0, 300)})`}; back at 7700: ${only(back, 7700, 7800) ? "clean" : back.replace(/\n/g, " | ").slice(0, 300)}`,
    );

    await severalGuestsAtOnce(lab, group);
    await foreignNetworkRefused(lab, group);
    await foreignNamesRefused(lab, group);

    const destroyed = await lab.apply({}, true);
    const after = await w.hostSnapshot("kvm");
    lab.record(group, "destroy leaves the KVM host as it was (rules, routes, ruleset, links, files, libvirt)", before === after, before === after ? `identical after ${destroyed.executions.length} deletes` : diffLines(before, after));
    const cloudAfter = await w.hostSnapshot("cloud");
    lab.record(group, "destroy leaves the gateway host as it was", cloudBefore === cloudAfter, cloudBefore === cloudAfter ? "identical" : diffLines(cloudBefore, cloudAfter));

    await foreignPoolRefused(lab, group, before);
}

/**
 * Another tool's storage pool named like the site's ("wgexit", elsewhere on disk): the guest's
 * step is refused and leaves nothing of the guest; destroy then removes the rest and leaves
 * that pool as it was.
 */
async function foreignPoolRefused(lab: Lab, group: string, clean: string): Promise<void> {
    const w = lab.world;
    const dir = "/var/lib/libvirt/images/other-tool";
    await w.hostExec("kvm", `mkdir -p ${dir} && touch ${dir}/their-disk.qcow2 && virsh -q pool-define-as wgexit dir --target ${dir} >/dev/null && virsh -q pool-start wgexit >/dev/null`);
    const theirs = async () => (await w.hostExec("kvm", `virsh -q pool-dumpxml wgexit | grep -v '<allocation\\|<available'; ls -a ${dir}`, true)).stdout;
    const poolBefore = await theirs();
    const refused = await lab.apply({}, false, { allowFailure: true });
    const said = failureLine(refused, /.*storage pool named wgexit already exists.*/);
    const guestLeft = (await w.hostExec("kvm", "ls /etc/wgexit/site/guests; virsh -q list --all --name", true)).stdout.trim();
    lab.record(group, "a libvirt pool named wgexit that the site did not make is refused; the guest's step leaves nothing", /was not made by this site/.test(said) && guestLeft === "" && (await theirs()) === poolBefore, `${said.slice(0, 110)}; left: ${guestLeft || "nothing"}`);
    await lab.apply({}, true);
    const kept = (await theirs()) === poolBefore;
    await w.hostExec("kvm", `virsh -q pool-destroy wgexit >/dev/null; virsh -q pool-undefine wgexit >/dev/null; rm -rf ${dir}`, true);
    const after = await w.hostSnapshot("kvm");
    lab.record(group, "destroy then leaves the other tool's pool as it was and the rest of the host clean", kept && after === clean, after === clean ? `pool kept: ${kept}` : diffLines(clean, after));
}

/**
 * Three guests of one new image in one apply: the engine runs their steps at once, as Pulumi
 * does, so they fetch the shared base image at the same time. One base, three overlays, no
 * partial download left; removing them removes that base and leaves the other guest's. The
 * new image's URL ends in the same file name as the first guest's: it still gets a base of its
 * own (bases are keyed by source). An image whose SHA-256 is not the configured one never
 * enters the pool.
 */
async function severalGuestsAtOnce(lab: Lab, group: string): Promise<void> {
    const w = lab.world;
    // Served slowly, like a real image: each guest's step starts while another is still downloading it.
    const burstUrl = `http://${LAB.server.v4}:${LAB.server.httpPort}/slow/base.qcow2`;
    const burstBase = `base-${baseImageName(burstUrl, lab.guestFiles?.imageSha256)}`;
    const withGuests = (extra: (first: Record<string, unknown>) => Record<string, unknown>[]) =>
        (lab.baseOverrides().sites as { networks: { guests: Record<string, unknown>[] }[] }[]).map((site) => ({
            ...site,
            networks: site.networks.map((n, i) => (i === 0 ? { ...n, guests: [...n.guests, ...extra(n.guests[0])] } : n)),
        }));
    const sites = withGuests((first) => ["burst1", "burst2", "burst3"].map((name) => ({ ...first, name, image: burstUrl, memoryMb: 128 })));
    const pool = async () => (await w.hostExec("kvm", "ls -a /var/lib/libvirt/images/wgexit")).stdout.split("\n").filter((f) => f && !f.startsWith("."));
    const added = await lab.apply({ sites });
    const domains = (await w.virsh("list --all --name", true)).stdout;
    const files = await pool();
    const guestSteps = added.executions.filter((e) => /guest-burst\d-domain$/.test(e.key));
    lab.record(
        group,
        "three guests of one new image in one apply, their steps at once: one base image, three overlays, no partial download",
        guestSteps.length === 3 && added.peakParallel >= 2 && ["burst1", "burst2", "burst3"].every((g) => domains.includes(g) && files.includes(`${g}.qcow2`)) && files.filter((f) => f === burstBase).length === 1 && files.filter((f) => f.startsWith("base-")).length === 2 && !files.some((f) => f.endsWith(".part")),
        `${guestSteps.length} guest steps, up to ${added.peakParallel} at once; pool: ${files.join(" ")}`,
    );
    await lab.apply({});
    const left = await pool();
    const labBase = `base-${baseImageName(lab.guestFiles?.imageUrl ?? "", lab.guestFiles?.imageSha256)}`;
    lab.record(group, "removing them removes their base image and keeps the other guest's", !left.some((f) => /burst/.test(f) || f === burstBase) && left.includes(labBase) && left.includes("qguest.qcow2"), left.join(" "));

    const tampered = await lab.apply({ sites: withGuests((first) => [{ ...first, name: "tampered", image: burstUrl, imageSha256: "0".repeat(64), memoryMb: 128 }]) }, false, { allowFailure: true });
    const afterTamper = await pool();
    const guestDirs = (await w.hostExec("kvm", "ls /etc/wgexit/site/guests; virsh -q list --all --name")).stdout.split("\n").filter(Boolean);
    const said = failureLine(tampered, /.*not the 0{64} the config gives.*/);
    lab.record(group, "an image whose SHA-256 is not imageSha256 is refused and never enters the pool", /has SHA-256 [0-9a-f]{64}, not the/.test(said) && afterTamper.join(" ") === left.join(" ") && !guestDirs.includes("tampered"), `${said.slice(0, 120)}; pool: ${afterTamper.join(" ")}; guests: ${guestDirs.join(" ")}`);
    await lab.apply({});
}

/**
 * The step that brings up a network named like libvirt's own "default" (exactly the command the
 * program would run): refused, the default network untouched, the host byte-identical. Before,
 * it destroyed and replaced libvirt's default network.
 */
async function foreignNetworkRefused(lab: Lab, group: string): Promise<void> {
    const w = lab.world;
    const before = await w.hostSnapshot("kvm");
    const network = { name: "default", bridge: "virbr-other", cidr: "192.168.120.0/24", resolvers: [LAB.server.v4], guests: [], bridgeV4: "192.168.120.1", prefixV4: 24, dhcpFirst: "192.168.120.128", dhcpLast: "192.168.120.254" };
    const step = renderNetworkUpCommand(network, { wgInterface: SITE_WG, tunnelMtu: 1420, serveDns: false } as SiteSettings);
    const r = await w.hostExec("kvm", step, true);
    const after = await w.hostSnapshot("kvm");
    const active = (await w.virsh("net-info default", true)).stdout;
    lab.record(
        group,
        "a network named like libvirt's own default is refused, the default network untouched and the host byte-identical",
        r.code !== 0 && /a libvirt network named default already exists/.test(r.stderr) && /Active:\s+yes/.test(active) && before === after,
        before === after ? `exit ${r.code}: ${r.stderr.trim().split("\n").pop()}` : diffLines(before, after),
    );
}

/**
 * The boot window: after a reboot nothing of ours is in the kernel until something loads it,
 * and the guest (already running here) may send before the site's unit has run. libvirt's own
 * route-mode REJECT rules are removed too, as on a distro whose libvirt leaves them out. Without
 * anything of ours the guest leaks (the check can fail); after the command the site installs
 * as libvirt's ExecStartPre (read from the drop-in on the host, run as systemd would), 0 packets
 * leave, with no tunnel yet.
 */
async function bootWindow(lab: Lab, group: string, resolver: string): Promise<void> {
    const w = lab.world;
    const dropIn = (await w.hostExec("kvm", "cat /etc/systemd/system/libvirtd.service.d/50-wgexit-site.conf /etc/systemd/system/virtnetworkd.service.d/50-wgexit-site.conf", true)).stdout;
    const seal = dropIn.match(/^ExecStartPre=(.+)$/m)?.[1] ?? "";
    const libvirtRules = "/run/wgexit-lab-libvirt-rules";
    await w.hostExec(
        "kvm",
        `ip link del ${SITE_WG} 2>/dev/null; nft delete table inet wgexit_site
        for f in 4 6; do ip -$f rule del pref 7700 iif ${BRIDGE}; ip -$f route flush table 7700; done
        for t in iptables ip6tables; do for c in LIBVIRT_FWO LIBVIRT_FWI LIBVIRT_FWX; do
            $t -S $c 2>/dev/null | grep '^-A' >${libvirtRules}.$t.$c || true; $t -F $c 2>/dev/null || true
        done; done`,
    );
    try {
        const bare = new Lab(w);
        await leakCheck(bare, "site/boot-unsealed", "after a reboot, nothing of ours loaded and libvirt's rules gone", resolver);
        lab.record(group, "boot window without the seal leaks (the check can fail)", bare.checks[0]?.pass === false, bare.checks[0]?.detail ?? "no check");
        const sealed = await w.hostExec("kvm", seal || "false", true);
        lab.record(group, "libvirt's units run the site's seal before they start (drop-in for libvirtd and virtnetworkd)", seal === `${SITE_TABLE_CMD} seal` && (dropIn.match(/^ExecStartPre=/gm) ?? []).length === 2 && sealed.code === 0, seal || "no drop-in");
        await leakCheck(lab, group, "boot window, the seal loaded, no tunnel yet, libvirt's rules gone", resolver);
    } finally {
        // Put back rule by rule (restoring the whole table would reorder its chains).
        await w.hostExec("kvm", `for f in ${libvirtRules}.*; do t=\${f#${libvirtRules}.}; t=\${t%%.*}; xargs -r -L1 $t <"$f"; rm -f "$f"; done`);
    }
}

/**
 * The site's install step, re-run with a bridge named like libvirt's own virbr0 and then with a
 * routeTable whose rule priority another program uses: each refused before any change.
 */
async function foreignNamesRefused(lab: Lab, group: string): Promise<void> {
    const w = lab.world;
    const site = (lab.baseOverrides().sites as { networks: Record<string, unknown>[] }[])[0];
    const cases: [string, Record<string, unknown>, RegExp][] = [
        ["a bridge named like libvirt's own virbr0", { networks: site.networks.map((n, i) => (i === 0 ? { ...n, bridge: "virbr0" } : n)) }, /a link named virbr0 already exists on this host and is not a bridge of this site's networks/],
        ["a routeTable whose rule priority another program uses", { routeTable: 7800 }, /rule priority 7800 is already used on this host/],
    ];
    await w.hostExec("kvm", "ip rule add pref 7800 from 192.0.2.1 lookup 100");
    try {
        for (const [what, change, expected] of cases) {
            const before = await w.hostSnapshot("kvm");
            const refused = await lab.apply({ sites: siteWith(lab, change) }, false, { allowFailure: true });
            const after = await w.hostSnapshot("kvm");
            const said = failureLine(refused, /.*refused before any change.*/);
            lab.record(group, `${what}: refused before any change, the host byte-identical`, expected.test(said) && before === after, before === after ? said : diffLines(before, after));
        }
    } finally {
        await w.hostExec("kvm", "ip rule del pref 7800 from 192.0.2.1 lookup 100");
    }
    const again = await lab.apply({});
    lab.record(group, "after the refusals the operator's SSH still works and nothing is left to do", again.executions.length === 0, stepsTaken(again));
}

/** The committed site with some fields changed (the lab's guest files kept). */
function siteWith(lab: Lab, change: Record<string, unknown>): unknown[] {
    return (lab.baseOverrides().sites as Record<string, unknown>[]).map((s) => ({ ...s, ...change }));
}

/** An HTTP listener on the namespace guest that logs client addresses. */
export async function startGuestListener(lab: Lab): Promise<() => void> {
    const w = lab.world;
    w.clearLog("guest-clients");
    const v4 = (await inNs(w.ns("guest"), "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1")).stdout.trim();
    const d = w.startLabDaemon("guest-http", "guest", [PYTHON, path.join(__dirname, "echo_server.py"), w.logPath("guest-clients"), "80", v4]);
    await waitFor("the guest's listener", async () => (await inNs(w.ns("guest"), "ss -Htln 'sport = :80' | grep -q .", { allowFail: true })).code === 0);
    return () => {
        void w.stopLabDaemon(d);
    };
}

/**
 * The lab's internet server fetching the guest listener's page through the port forward on
 * `address`:8081: the answer, and whom the guest saw. Up to `tries` times, as a browser would:
 * the apply's steps run at once, so a first connection may meet a tunnel still re-handshaking.
 */
export async function fetchForwarded(lab: Lab, address: string, tries: number) {
    const w = lab.world;
    for (let attempts = 1; ; attempts++) {
        w.clearLog("guest-clients");
        const r = await inNs(w.ns("srv"), `curl -s -m 5 --interface ${LAB.server.v4} http://${address}:8081/`, { allowFail: true, timeoutMs: 15_000 });
        const body = r.code === 0 ? r.stdout.trim() : undefined;
        if (body !== undefined || attempts >= tries) return { body, seen: w.readLog("guest-clients"), attempts };
    }
}

/**
 * The deliberately broken kill switch: its unreachable routes removed and both firewalls
 * opened to the bridge. The same leak check must now fail; its result is returned.
 */
async function sabotageKillSwitch(lab: Lab, resolver: string): Promise<Check> {
    const sabotage = new Lab(lab.world);
    const w = lab.world;
    await w.hostExec(
        "kvm",
        `ip route del unreachable default table 7700; ip -6 route del unreachable default table 7700
        nft insert rule inet wgexit_site forward iifname ${BRIDGE} accept
        iptables -I FORWARD 1 -i ${BRIDGE} -j ACCEPT; ip6tables -I FORWARD 1 -i ${BRIDGE} -j ACCEPT`,
    );
    await leakCheck(sabotage, "site/sabotage", "kill switch removed, site tunnel deleted", resolver);
    await w.hostExec(
        "kvm",
        `iptables -D FORWARD -i ${BRIDGE} -j ACCEPT; ip6tables -D FORWARD -i ${BRIDGE} -j ACCEPT
        nft delete table inet wgexit_site; rm -f /etc/wgexit/site/applied.nft`,
    );
    return sabotage.checks[0];
}
