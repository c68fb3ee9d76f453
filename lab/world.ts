// The lab world: network namespaces standing in for the internet, an OCI-like cloud
// network with its gateway box, a home router with a LAN, and the operator's machine.
// Nothing here touches the machine's own network: every link is created directly
// inside lab namespaces, and every address is a documentation or private prefix.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { type Daemon, inNs, isAlive, run, startDaemon, stopPid, tail, waitFor } from "./exec";

/** Addresses of the lab world. Documentation prefixes stand in for the internet. */
export const LAB = {
    internetV4: "203.0.113.0/24",
    internetV6: "2001:db8:113::/64",
    routerV4: "203.0.113.1",
    routerV6: "2001:db8:113::1",
    server: { v4: "203.0.113.80", v6: "2001:db8:113::80", httpPort: 8080 },
    cloudPublic: { v4: "203.0.113.10", v6: "2001:db8:10::2" },
    // The second cloud (OVH-like): its public addresses sit on the instance's own interface.
    cloud2: { v4: "203.0.113.40", v6: "2001:db8:113::40" },
    cloudPrivate: { v4: "10.0.0.2", net: "10.0.0.0/24", routerV4: "10.0.0.1", routerV6: "2001:db8:10::1", neighbour: "10.0.0.3" },
    metadata: "169.254.169.254",
    home: { wanV4: "203.0.113.20", wanV6: "2001:db8:113::20", lanV4: "192.168.1.1", lanV6: "2001:db8:20::1", lanNet: "192.168.1.0/24", lanNetV6: "2001:db8:20::/64" },
    lanDevice: { v4: "192.168.1.50", v6: "2001:db8:20::50" },
    operator: { v4: "192.168.1.99", v6: "2001:db8:20::99" },
    kvm: { v4: "192.168.1.10", v6: "2001:db8:20::10" },
    // A laptop on the same Wi-Fi (the home LAN plays the coffee shop), with a local VM on a
    // host-only link, and a management link standing for "Pulumi runs on the laptop itself".
    laptop: { wlanV4: "192.168.1.60", wlanV6: "2001:db8:20::60", linkV4: "192.168.64.1", linkV6: "fd66:64::1", mgmt: "10.99.0.2", ctlMgmt: "10.99.0.1" },
    laptopVm: { v4: "192.168.64.2", v6: "fd66:64::2", net: "192.168.64.0/24" },
    testPeer: { v4: "203.0.113.30", v6: "2001:db8:113::30", subnet: "192.168.200.0/24", subnetHost: "192.168.200.1", subnetV6: "fd66:200::/64", subnetHostV6: "fd66:200::1" },
} as const;

export type Role = "inet" | "srv" | "vcn" | "cloud" | "cloud2" | "home" | "lan" | "ctl" | "peer" | "kvm" | "guest" | "guest2" | "laptop" | "lvm";
const ROLES: Role[] = ["inet", "srv", "vcn", "cloud", "cloud2", "home", "lan", "ctl", "peer", "kvm", "guest", "guest2", "laptop", "lvm"];

export interface SshHost {
    role: Role;
    pid: number;
    dir: string;
    address: string;
}

export interface WorldManifest {
    runId: string;
    root: string;
    namespaces: Record<Role, string>;
    pids: { name: string; pid: number; logFile: string }[];
    sshHosts: Record<string, SshHost>;
    sshKey: string;
    wgInterfaces: string[];
}

/** Files a role may replace and must restore; snapshots compare their content, not their overlay copy. */
const RESTORED_FILES = ["/etc/resolv.conf"];

export const PYTHON = fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

export class LabWorld {
    readonly daemons: Daemon[] = [];

    private constructor(readonly m: WorldManifest) {}

    ns(role: Role): string {
        return this.m.namespaces[role];
    }

    get root(): string {
        return this.m.root;
    }

    get sshKeyFile(): string {
        return this.m.sshKey;
    }

    /** A unique WireGuard interface name for harness-run tunnels (the /run/wireguard socket dir is shared). */
    wgName(suffix: string): string {
        const name = `wx${this.m.runId}${suffix}`.slice(0, 15);
        if (!this.m.wgInterfaces.includes(name)) this.m.wgInterfaces.push(name);
        this.save();
        return name;
    }

    static async create(): Promise<LabWorld> {
        const runId = crypto.randomBytes(3).toString("hex");
        const root = fs.mkdtempSync(path.join(os.tmpdir(), `wgexit-lab-${runId}-`));
        const namespaces = Object.fromEntries(ROLES.map((r) => [r, `wgexit-lab-${runId}-${r}`])) as Record<Role, string>;
        const world = new LabWorld({ runId, root, namespaces, pids: [], sshHosts: {}, sshKey: path.join(root, "operator_ed25519"), wgInterfaces: [] });
        world.save();
        try {
            await world.build();
        } catch (e) {
            const debug = await world.debugDump().catch(() => "");
            await world.destroy();
            throw new Error(`lab world failed to build: ${(e as Error).message}\n${debug}`);
        }
        return world;
    }

    static load(manifestFile: string): LabWorld {
        return new LabWorld(JSON.parse(fs.readFileSync(manifestFile, "utf8")) as WorldManifest);
    }

    /** Manifests of worlds left running (by --keep, or by a crash). */
    static findLeftovers(): string[] {
        return fs
            .readdirSync(os.tmpdir())
            .filter((d) => d.startsWith("wgexit-lab-"))
            .map((d) => path.join(os.tmpdir(), d, "world.json"))
            .filter((f) => fs.existsSync(f));
    }

    save(): void {
        fs.writeFileSync(path.join(this.m.root, "world.json"), JSON.stringify(this.m, null, 2));
    }

    private async build(): Promise<void> {
        for (const role of ROLES) await run(["ip", "netns", "add", this.ns(role)]);
        for (const role of ROLES) await inNs(this.ns(role), "ip link set lo up");

        // The internet: one bridge in "inet", which also routes the sub-prefixes behind hosts.
        await inNs(this.ns("inet"), `ip link add br0 type bridge && ip link set br0 up &&
            ip addr add ${LAB.routerV4}/24 dev br0 && ip addr add ${LAB.routerV6}/64 dev br0 nodad &&
            sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1`);
        const internetHosts: [Role, string, string][] = [
            ["srv", LAB.server.v4, LAB.server.v6],
            ["vcn", LAB.cloudPublic.v4, "2001:db8:113::10"],
            ["home", LAB.home.wanV4, LAB.home.wanV6],
            ["peer", LAB.testPeer.v4, LAB.testPeer.v6],
        ];
        for (const [role, v4, v6] of internetHosts) {
            await this.link("inet", `i-${role}`, role, "wan");
            await inNs(this.ns("inet"), `ip link set i-${role} master br0 up`);
            await inNs(this.ns(role), `ip link set wan up && ip addr add ${v4}/24 dev wan && ip addr add ${v6}/64 dev wan nodad &&
                ip route add default via ${LAB.routerV4} && ip -6 route add default via ${LAB.routerV6}`);
        }
        // The OVH-like instance: its public addresses as /32 and /128 with an on-link router, as
        // OVH Public Cloud configures them (so its gateway role sees no provider LAN to protect).
        await this.link("inet", "i-cloud2", "cloud2", "wan");
        await inNs(this.ns("inet"), "ip link set i-cloud2 master br0 up");
        await inNs(this.ns("cloud2"), `ip link set wan up && ip addr add ${LAB.cloud2.v4}/32 dev wan && ip addr add ${LAB.cloud2.v6}/128 dev wan nodad &&
            ip route add ${LAB.routerV4} dev wan && ip route add default via ${LAB.routerV4} dev wan &&
            ip -6 route add ${LAB.routerV6} dev wan && ip -6 route add default via ${LAB.routerV6} dev wan`);
        await inNs(this.ns("inet"), `ip -6 route add 2001:db8:10::/64 via 2001:db8:113::10 && ip -6 route add ${LAB.home.lanNetV6} via ${LAB.home.wanV6}`);

        // OCI-like VCN: the instance has only a private address; the VCN maps the public one 1:1
        // and serves the metadata endpoint. A neighbour VM shares the private subnet.
        await this.link("vcn", "priv", "cloud", "eth0");
        await inNs(this.ns("vcn"), `ip link set priv up && ip addr add ${LAB.cloudPrivate.routerV4}/24 dev priv &&
            ip addr add ${LAB.cloudPrivate.neighbour}/24 dev priv && ip addr add ${LAB.metadata}/32 dev priv &&
            ip addr add ${LAB.cloudPrivate.routerV6}/64 dev priv nodad &&
            sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 &&
            nft -f - <<'EOF'
table ip vcn {
	chain prerouting { type nat hook prerouting priority dstnat; iifname "wan" ip daddr ${LAB.cloudPublic.v4} dnat to ${LAB.cloudPrivate.v4}; }
	chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" ip saddr ${LAB.cloudPrivate.v4} snat to ${LAB.cloudPublic.v4}; }
}
EOF`);
        await inNs(this.ns("cloud"), `ip link set eth0 up && ip addr add ${LAB.cloudPrivate.v4}/24 dev eth0 &&
            ip addr add ${LAB.cloudPublic.v6}/64 dev eth0 nodad && ip route add default via ${LAB.cloudPrivate.routerV4} &&
            ip route add 169.254.0.0/16 dev eth0 && ip -6 route add default via ${LAB.cloudPrivate.routerV6}`);

        // Home: router with NAT44 and a routed IPv6 LAN; the LAN device and the operator sit on it.
        await inNs(this.ns("home"), `ip link add br0 type bridge && ip link set br0 up &&
            ip addr add ${LAB.home.lanV4}/24 dev br0 && ip addr add ${LAB.home.lanV6}/64 dev br0 nodad &&
            sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 &&
            nft -f - <<'EOF'
table ip home {
	chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" ip saddr ${LAB.home.lanNet} masquerade; }
}
EOF`);
        for (const [role, v4, v6] of [
            ["lan", LAB.lanDevice.v4, LAB.lanDevice.v6],
            ["ctl", LAB.operator.v4, LAB.operator.v6],
            ["kvm", LAB.kvm.v4, LAB.kvm.v6],
        ] as [Role, string, string][]) {
            await this.attachToHomeLan(role, "eth0", v4, v6);
        }

        // The laptop: Wi-Fi on the LAN, a host-only link to its VM, whose own uplink is NATed by
        // the laptop as VM software does (in its own table), and the operator's management link.
        await this.attachToHomeLan("laptop", "wlan0", LAB.laptop.wlanV4, LAB.laptop.wlanV6);
        await this.link("laptop", "vmnet0", "lvm", "eth0");
        await this.link("ctl", "mgmt0", "laptop", "mgmt0");
        await inNs(this.ns("laptop"), `ip link set vmnet0 up && ip addr add ${LAB.laptop.linkV4}/24 dev vmnet0 && ip addr add ${LAB.laptop.linkV6}/64 dev vmnet0 nodad &&
            ip link set mgmt0 up && ip addr add ${LAB.laptop.mgmt}/30 dev mgmt0 &&
            sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 &&
            nft -f - <<'EOF'
table ip vmsoftware {
	chain postrouting { type nat hook postrouting priority srcnat; oifname "wlan0" ip saddr ${LAB.laptopVm.net} masquerade; }
}
EOF`);
        await inNs(this.ns("lvm"), `ip link set eth0 up && ip addr add ${LAB.laptopVm.v4}/24 dev eth0 && ip addr add ${LAB.laptopVm.v6}/64 dev eth0 nodad &&
            ip route add default via ${LAB.laptop.linkV4}`);
        await inNs(this.ns("ctl"), `ip link set mgmt0 up && ip addr add ${LAB.laptop.ctlMgmt}/30 dev mgmt0 && ip route add ${LAB.laptopVm.net} via ${LAB.laptop.mgmt}`);

        // The test peer: a subnet behind it (on a veth pair: this kernel has no dummy module).
        await inNs(this.ns("peer"), `ip link add sub0 type veth peer name sub1 && ip link set sub1 up && ip link set sub0 up &&
            ip addr add ${LAB.testPeer.subnetHost}/24 dev sub0 && ip addr add ${LAB.testPeer.subnetHostV6}/64 dev sub0 nodad`);

        // Servers: the echo web server and a resolver on the internet; listeners that must stay silent.
        fs.writeFileSync(path.join(this.root, "resolver.log"), "");
        this.daemon("srv-http", "srv", [PYTHON, path.join(__dirname, "echo_server.py"), `--files=${this.filesDir}`, this.logPath("srv-http-clients"), String(LAB.server.httpPort), LAB.server.v4, LAB.server.v6]);
        this.daemon("srv-dns", "srv", [
            "dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root", "--pid-file=",
            `--listen-address=${LAB.server.v4}`, `--listen-address=${LAB.server.v6}`,
            `--address=/example.test/${LAB.server.v4}`, `--address=/example.test/${LAB.server.v6}`,
            "--log-queries", `--log-facility=${path.join(this.root, "resolver.log")}`,
        ]);
        this.daemon("srv-iperf3", "srv", ["iperf3", "--server", "--bind", LAB.server.v4, "--port", "5201"]);
        this.daemon("vcn-metadata", "vcn", [PYTHON, path.join(__dirname, "echo_server.py"), this.logPath("vcn-metadata-clients"), "80", LAB.metadata, LAB.cloudPrivate.neighbour]);
        this.daemon("lan-listener", "lan", [PYTHON, path.join(__dirname, "echo_server.py"), this.logPath("lan-clients"), "80", LAB.lanDevice.v4, LAB.lanDevice.v6]);

        // The operator's SSH key, and sshd on the cloud box.
        await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wgexit-lab-operator", "-f", this.m.sshKey]);
        await this.startSshHost("cloud", LAB.cloudPrivate.v4);
        await this.startSshHost("cloud2", LAB.cloud2.v4);
        await this.startSshHost("kvm", LAB.kvm.v4, { libvirt: true });
        await this.startSshHost("laptop", LAB.laptop.mgmt);
        await this.startSshHost("lvm", LAB.laptopVm.v4);

        await waitFor("lab servers", async () => {
            const r = await inNs(this.ns("srv"), `curl -s -m 1 http://${LAB.server.v4}:${LAB.server.httpPort}/`, { allowFail: true });
            return r.code === 0;
        });
        this.clearLog("srv-http-clients");
    }

    /** What the lab internet's web server offers under /files/ (the guest's base image). */
    get filesDir(): string {
        return path.join(this.root, "guest-boot");
    }

    logPath(name: string): string {
        return path.join(this.root, `${name}.log`);
    }

    clearLog(name: string): void {
        fs.writeFileSync(this.logPath(name), "");
    }

    readLog(name: string): string[] {
        try {
            return fs.readFileSync(this.logPath(name), "utf8").split("\n").filter(Boolean);
        } catch {
            return [];
        }
    }

    private async link(roleA: Role, nameA: string, roleB: Role, nameB: string): Promise<void> {
        await run(["ip", "link", "add", nameA, "netns", this.ns(roleA), "type", "veth", "peer", "name", nameB, "netns", this.ns(roleB)]);
    }

    async attachToHomeLan(role: Role, ifname: string, v4: string, v6: string): Promise<void> {
        await this.link("home", `h-${role}`, role, ifname);
        await inNs(this.ns("home"), `ip link set h-${role} master br0 up`);
        await inNs(this.ns(role), `ip link set ${ifname} up && ip addr add ${v4}/24 dev ${ifname} && ip addr add ${v6}/64 dev ${ifname} nodad &&
            ip route add default via ${LAB.home.lanV4} && ip -6 route add default via ${LAB.home.lanV6}`);
    }

    /** A process the lab starts in a namespace mid-run; tracked by PID like the world's own. */
    startLabDaemon(name: string, role: Role, argv: string[]): Daemon {
        return this.daemon(name, role, argv);
    }

    /** A process on an SSH host, as its own service manager would run it (the host's network and mounts). */
    startHostDaemon(name: string, role: Role, argv: string[]): Daemon {
        const host = this.m.sshHosts[role];
        if (!host) throw new Error(`${role} is not an SSH host`);
        const d = startDaemon(name, ["nsenter", "-t", String(host.pid), "-m", "-n", "--", ...argv], path.join(this.root, `${name}.out`));
        this.daemons.push(d);
        this.m.pids.push({ name, pid: d.pid, logFile: d.logFile });
        this.save();
        return d;
    }

    async stopLabDaemon(d: Daemon): Promise<void> {
        await stopPid(d.pid);
        this.m.pids = this.m.pids.filter((p) => p.pid !== d.pid);
        this.save();
    }

    private daemon(name: string, role: Role, argv: string[]): Daemon {
        const d = startDaemon(name, ["ip", "netns", "exec", this.ns(role), ...argv], path.join(this.root, `${name}.out`));
        this.daemons.push(d);
        this.m.pids.push({ name, pid: d.pid, logFile: d.logFile });
        this.save();
        return d;
    }

    /**
     * sshd in the role's namespace, in a private mount namespace: /run is a private tmpfs
     * (so /run/wireguard is not shared) and /etc is an overlay whose upper layer records
     * exactly what the program changed on this "host".
     */
    async startSshHost(role: Role, address: string, opts: { libvirt?: boolean } = {}): Promise<SshHost> {
        const dir = path.join(this.root, `host-${role}`);
        for (const d of ["etc-upper", "etc-work"]) fs.mkdirSync(path.join(dir, d), { recursive: true });
        // Lab hosts resolve through the lab's own resolver, never the machine's.
        fs.writeFileSync(path.join(dir, "etc-upper", "resolv.conf"), `nameserver ${LAB.server.v4}\n`);
        await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "ssh_host_ed25519_key")]);
        fs.copyFileSync(`${this.m.sshKey}.pub`, path.join(dir, "authorized_keys"));
        fs.writeFileSync(
            path.join(dir, "sshd_config"),
            [
                "Port 22",
                "ListenAddress 0.0.0.0",
                "ListenAddress ::",
                `HostKey ${dir}/ssh_host_ed25519_key`,
                `AuthorizedKeysFile ${dir}/authorized_keys`,
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PidFile none",
                "LogLevel ERROR",
                "",
            ].join("\n"),
        );
        const boot = [
            `mount -n -t overlay overlay -o lowerdir=/etc,upperdir=${dir}/etc-upper,workdir=${dir}/etc-work /etc`,
            "mount -n -t tmpfs -o mode=755 lab-run /run",
            "mkdir -p /run/sshd",
            ...(opts.libvirt ? this.libvirtBoot(dir) : []),
            `exec /usr/sbin/sshd -D -e -f ${dir}/sshd_config`,
        ].join(" && ");
        const d = this.daemon(`sshd-${role}`, role, ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", boot]);
        const host: SshHost = { role, pid: d.pid, dir, address };
        this.m.sshHosts[role] = host;
        this.save();
        await waitFor(`sshd in ${role}`, async () => {
            if (!isAlive(d.pid)) throw new Error(`sshd in ${role} exited:\n${tail(d.logFile)}`);
            const r = await inNs(this.ns(role), "ss -Htln 'sport = :22' | grep -q .", { allowFail: true });
            return r.code === 0;
        });
        return host;
    }

    /**
     * libvirtd in the host's private mount namespace, on lab copies of its directories, as a
     * stock Debian host runs it: the "default" NAT network autostarts. The lab's qemu.conf
     * runs QEMU as root without cgroups or namespaces (there is no systemd here).
     */
    private libvirtBoot(dir: string): string[] {
        const lv = path.join(dir, "libvirt");
        const copies: [string, string][] = [
            ["/etc/libvirt", "etc"],
            ["/var/lib/libvirt", "lib"],
            ["/var/log/libvirt", "log"],
            ["/var/cache/libvirt", "cache"],
        ];
        for (const [from, to] of copies) fs.cpSync(from, path.join(lv, to), { recursive: true });
        fs.appendFileSync(
            path.join(lv, "etc", "qemu.conf"),
            '\n# wgexit lab\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\ncgroup_controllers = [ ]\nnamespaces = [ ]\nstdio_handler = "file"\n',
        );
        fs.appendFileSync(path.join(lv, "etc", "libvirtd.conf"), '\n# wgexit lab\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n');
        const autostart = path.join(lv, "etc", "qemu", "networks", "autostart");
        fs.mkdirSync(autostart, { recursive: true });
        if (!fs.existsSync(path.join(autostart, "default.xml"))) fs.symlinkSync("/etc/libvirt/qemu/networks/default.xml", path.join(autostart, "default.xml"));
        return [
            ...copies.map(([target, from]) => `mount -n --bind ${lv}/${from} ${target}`),
            "mkdir -p /run/libvirt",
            "/usr/sbin/libvirtd --daemon",
        ];
    }

    /** Runs virsh inside the KVM host. */
    virsh(args: string, allowFail = false) {
        return this.hostExec("kvm", `virsh -q ${args}`, allowFail);
    }

    /** Runs a command inside an SSH host's namespaces (network and mount), as root. */
    hostExec(role: Role, script: string, allowFail = false) {
        const host = this.m.sshHosts[role];
        if (!host) throw new Error(`${role} is not an SSH host`);
        return run(["nsenter", "-t", String(host.pid), "-m", "-n", "--", "sh", "-c", script], { allowFail });
    }

    /**
     * Everything a host change could leave behind: addresses, links, routes in every table,
     * rules, the nftables and iptables rulesets, sysctls we touch, and files under /etc and /run.
     */
    async hostSnapshot(role: Role): Promise<string> {
        const host = this.m.sshHosts[role];
        const state = await this.hostExec(
            role,
            [
                // Names, MTUs and masters (carrier and DAD states settle on their own).
                "echo '# links'; ip -o link show | awk '{m = \"\"; for (i = 1; i < NF; i++) { if ($i == \"mtu\") u = $(i + 1); if ($i == \"master\") m = $(i + 1) }; print $2, u, m}'",
                "echo '# addresses'; ip -o addr show | awk '{$1=\"\"; print}' | sed 's/ valid_lft.*//; s/ tentative//'",
                "echo '# rules'; ip rule show; ip -6 rule show",
                "echo '# routes'; { ip -4 route show table all; ip -6 route show table all | grep -v '^local\\|^multicast\\|^anycast'; } | sed 's/ linkdown//'",
                "echo '# nft'; nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'",
                "echo '# iptables'; iptables-save 2>/dev/null | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'",
                "echo '# sysctl'; sysctl net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv6.conf.eth0.accept_ra 2>/dev/null",
                // Files a role replaces and restores: their type and content, wherever they live.
                `echo '# restored files'; for f in ${RESTORED_FILES.join(" ")}; do stat -c '%n %F %a' "$f"; readlink "$f"; sha256sum "$f"; done 2>&1`,
                "echo '# run'; find /run -mindepth 1 -not -path '/run/sshd*' -not -path '/run/wireguard' -not -path '/run/libvirt/*' -printf '%p %y\\n' | sort",
                ...(role === "kvm"
                    ? [
                          "echo '# libvirt'; virsh -q list --all --name; virsh -q net-list --all --name; virsh -q pool-list --all --name",
                          "echo '# libvirt state'; find /run/libvirt /var/lib/libvirt -not -name '*.pid' -not -name '*.sock*' -printf '%p %y\\n' | sort",
                          "echo '# sysctl'; sysctl net.ipv6.conf.eth0.accept_ra",
                      ]
                    : []),
            ].join("; "),
        );
        // Overlay upper layer: directories that merely got copied up are not changes.
        const upper = path.join(host.dir, "etc-upper");
        const changes: string[] = [];
        const walk = (rel: string) => {
            for (const entry of fs.readdirSync(path.join(upper, rel), { withFileTypes: true })) {
                const r = path.join(rel, entry.name);
                if (entry.isDirectory()) {
                    if (!fs.existsSync(path.join("/etc", r))) changes.push(`+dir /etc/${r}`);
                    walk(r);
                } else {
                    changes.push(`${entry.isCharacterDevice() ? "-" : "+"}file /etc/${r}`);
                }
            }
        };
        walk("");
        const restored = new Set(RESTORED_FILES.map((f) => `+file ${f}`));
        changes.splice(0, changes.length, ...changes.filter((c) => !restored.has(c)));
        return `${state.stdout}# files\n${changes.sort().join("\n")}\n`;
    }

    /** Context for a failed check: rulesets, routes and the last lines of every daemon log. */
    async debugDump(): Promise<string> {
        const out: string[] = [];
        for (const role of ROLES) {
            const r = await inNs(this.ns(role), "ip -br addr; ip route; ip rule; nft list ruleset 2>&1 | head -80; wg show 2>/dev/null", { allowFail: true, timeoutMs: 10_000 }).catch(() => undefined);
            if (r) out.push(`=== ${role}\n${r.stdout}${r.stderr}`);
        }
        for (const p of this.m.pids) out.push(`=== log ${p.name} (pid ${p.pid}, ${isAlive(p.pid) ? "running" : "exited"})\n${tail(p.logFile)}`);
        return out.join("\n");
    }

    /** Stops what the lab started (by PID), deletes its namespaces and files. Safe to call twice. */
    async destroy(): Promise<string[]> {
        const problems: string[] = [];
        for (const p of [...this.m.pids].reverse()) await stopPid(p.pid);
        for (const name of this.m.wgInterfaces) {
            for (const role of ROLES) await inNs(this.ns(role), `ip link del ${name} 2>/dev/null`, { allowFail: true }).catch(() => undefined);
        }
        // wireguard-go processes started in lab namespaces exit when their link goes with the namespace.
        for (const role of ROLES) {
            const pids = await run(["ip", "netns", "pids", this.ns(role)], { allowFail: true }).catch(() => undefined);
            for (const pid of (pids?.stdout ?? "").split("\n").filter(Boolean)) await stopPid(Number(pid));
            await run(["ip", "netns", "del", this.ns(role)], { allowFail: true });
        }
        await waitFor("wireguard-go sockets to go", () => this.m.wgInterfaces.every((n) => !fs.existsSync(`/var/run/wireguard/${n}.sock`)), 10_000).catch((e) => problems.push(String(e)));
        const left = await run(["ip", "netns", "list"]);
        for (const role of ROLES) if (left.stdout.includes(this.ns(role))) problems.push(`namespace ${this.ns(role)} is still there`);
        fs.rmSync(this.m.root, { recursive: true, force: true });
        if (fs.existsSync(this.m.root)) problems.push(`${this.m.root} is still there`);
        return problems;
    }
}
