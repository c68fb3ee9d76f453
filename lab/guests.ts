// Lab guests on a KVM site's libvirt network:
//   - a namespace guest: a veth plugged into the libvirt bridge, configured by busybox udhcpc
//     from libvirt's DHCP (and by SLAAC for IPv6), like any VM's NIC would be;
//   - the boot files of a real QEMU guest: a stock Debian kernel and a busybox initramfs
//     whose /init takes a lease, reads its NoCloud seed, probes the lab internet and
//     prints what it saw on the serial console, which libvirt logs.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { inNs, run, waitFor } from "./exec";
import { LAB, type LabWorld } from "./world";

/** Where `lab/fetch-guest-kernel.sh` unpacks the kernel package; /boot is the fallback. */
export const GUEST_KERNEL_DIR = process.env.WGEXIT_LAB_KERNEL_DIR ?? "/var/cache/wgexit-lab/kernel";

export interface Lease {
    ip: string;
    mask: string;
    router: string;
    dns: string;
    mtu: string;
}

const UDHCPC_SCRIPT = `#!/bin/sh
# busybox udhcpc hook: apply the lease and record it for the lab.
case "$1" in
deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	[ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
	ip route replace default via "$router" dev "$interface"
	printf 'ip=%s\\nmask=%s\\nrouter=%s\\ndns=%s\\nmtu=%s\\n' "$ip" "$mask" "$router" "$dns" "$mtu" >"$LEASE_FILE"
	;;
esac
exit 0
`;

/** Plugs the "guest" namespace into the libvirt bridge on the KVM host and takes a DHCP lease. */
export async function startNamespaceGuest(world: LabWorld, bridge: string): Promise<Lease> {
    const guest = world.ns("guest");
    const leaseFile = path.join(world.root, "nsguest.lease");
    const script = path.join(world.root, "udhcpc.sh");
    fs.writeFileSync(script, UDHCPC_SCRIPT, { mode: 0o755 });
    fs.rmSync(leaseFile, { force: true });
    await run(["ip", "link", "add", "g-nsguest", "netns", world.ns("kvm"), "type", "veth", "peer", "name", "eth0", "netns", guest]);
    await inNs(world.ns("kvm"), `ip link set g-nsguest master ${bridge} up`);
    // A VM's NIC: IPv6 by router advertisements, no forwarding.
    await inNs(guest, "sysctl -qw net.ipv6.conf.eth0.accept_ra=1 net.ipv6.conf.eth0.autoconf=1 && ip link set eth0 up");
    await run(["ip", "netns", "exec", guest, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "20", "-T", "1", "-O", "mtu", "-s", script], {
        env: { ...process.env, LEASE_FILE: leaseFile },
        timeoutMs: 60_000,
    });
    const lease = Object.fromEntries(
        fs
            .readFileSync(leaseFile, "utf8")
            .trim()
            .split("\n")
            .map((l) => l.split("=") as [string, string]),
    ) as unknown as Lease;
    await waitFor("a SLAAC address on the namespace guest", async () => {
        // Usable: past duplicate address detection, with the default route from the same RA.
        const r = await inNs(guest, "ip -6 -o addr show dev eth0 scope global -tentative; ip -6 route show default", { allowFail: true });
        return r.stdout.includes("inet6") && r.stdout.includes("default via");
    }, 20_000, 250);
    return lease;
}

/** The guest namespace's global IPv6 address (from SLAAC). */
export async function namespaceGuestV6(world: LabWorld): Promise<string> {
    const r = await inNs(world.ns("guest"), "ip -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1 | head -n1");
    return r.stdout.trim();
}

export async function stopNamespaceGuest(world: LabWorld): Promise<void> {
    await inNs(world.ns("kvm"), "ip link del g-nsguest 2>/dev/null", { allowFail: true });
}

/** A second VM on the bridge ("guest2"), with fixed addresses: the namespace guest's neighbour. */
export async function startNeighbourGuest(world: LabWorld, bridge: string, v4: string, v6: string): Promise<void> {
    await run(["ip", "link", "add", "g-nsguest2", "netns", world.ns("kvm"), "type", "veth", "peer", "name", "eth0", "netns", world.ns("guest2")]);
    await inNs(world.ns("kvm"), `ip link set g-nsguest2 master ${bridge} up`);
    await inNs(world.ns("guest2"), `ip link set eth0 up && ip addr add ${v4} dev eth0 && ip addr add ${v6} dev eth0 nodad`);
}

export async function stopNeighbourGuest(world: LabWorld): Promise<void> {
    await inNs(world.ns("kvm"), "ip link del g-nsguest2 2>/dev/null", { allowFail: true });
}

export interface GuestBootFiles {
    kernel: string;
    initrd: string;
    /** The base image, as the lab internet serves it. */
    imageUrl: string;
    /** Its SHA-256 (imageSha256): the lab serves it over http://, where the program requires one. */
    imageSha256: string;
}

function findKernel(): { vmlinuz: string; modules: string } | undefined {
    for (const root of [GUEST_KERNEL_DIR, "/"]) {
        const boot = path.join(root, "boot");
        if (!fs.existsSync(boot)) continue;
        const vmlinuz = fs.readdirSync(boot).filter((f) => f.startsWith("vmlinuz-")).sort().pop();
        if (!vmlinuz) continue;
        const modules = path.join(root, "lib", "modules", vmlinuz.slice("vmlinuz-".length));
        if (fs.existsSync(path.join(modules, "modules.dep"))) return { vmlinuz: path.join(boot, vmlinuz), modules };
    }
    return undefined;
}

export function guestKernelMissingReason(): string | undefined {
    return findKernel() ? undefined : `no guest kernel with modules in ${GUEST_KERNEL_DIR} or /boot; run: sudo lab/fetch-guest-kernel.sh`;
}

/** Modules in load order: each module after its dependencies (from modules.dep). */
function moduleClosure(modulesDir: string, wanted: string[]): string[] {
    const deps = new Map<string, string[]>();
    for (const line of fs.readFileSync(path.join(modulesDir, "modules.dep"), "utf8").split("\n")) {
        const [mod, rest] = line.split(":");
        if (mod) deps.set(mod, (rest ?? "").trim().split(/\s+/).filter(Boolean));
    }
    const byName = new Map([...deps.keys()].map((m) => [path.basename(m).replace(/\.ko(\.xz|\.zst|\.gz)?$/, ""), m]));
    const order: string[] = [];
    const visit = (mod: string) => {
        if (order.includes(mod)) return;
        for (const d of deps.get(mod) ?? []) visit(d);
        order.push(mod);
    };
    for (const name of wanted) {
        const mod = byName.get(name);
        if (mod) visit(mod);
    }
    return order;
}

const GUEST_MODULES = ["virtio_pci", "virtio_net", "virtio_blk", "isofs"];

function guestInit(probes: { v4: string; v6: string; port: number; name: string }): string {
    return `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod "/modules/$m" 2>/dev/null; done
say() { echo "WGEXIT $*" >/dev/ttyS0; }
ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -n -q -t 30 -T 1 -O mtu -s /udhcpc.sh
. /lease
say "LEASE ip=$ip router=$router dns=$dns mtu=$mtu"
mkdir -p /seed
i=0; while [ ! -e /dev/vdb ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
if mount -t iso9660 -o ro /dev/vdb /seed; then say "SEED $(grep local-hostname /seed/meta-data)"; fi
i=0; while ! ip -6 addr show dev eth0 scope global | grep -q inet6 && [ $i -lt 40 ]; do sleep 0.5; i=$((i + 1)); done
for try in 1 2 3 4 5 6 7 8 9 10; do
	r4=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${probes.v4} ${probes.port} | tail -n 1)
	r6=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${probes.v6} ${probes.port} | tail -n 1)
	if [ -n "$r4" ] && [ -n "$r6" ]; then break; fi
	sleep 2
done
say "HTTP4 $r4"
say "HTTP6 $r6"
say "DNS $(nslookup ${probes.name} "$dns" 2>&1 | grep -c '${probes.v4}')"
say "DONE"
poweroff -f
`;
}

const GUEST_UDHCPC = `#!/bin/sh
case "$1" in
bound | renew)
	ip addr add "$ip/$mask" dev "$interface"
	[ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
	ip route replace default via "$router"
	printf 'ip=%s\\nrouter=%s\\ndns=%s\\nmtu=%s\\n' "$ip" "$router" "$dns" "$mtu" >/lease
	;;
esac
exit 0
`;

/** Builds the QEMU guest's kernel, initramfs and a small base disk image under the lab root. */
export async function buildGuestBootFiles(world: LabWorld): Promise<GuestBootFiles> {
    const kernel = findKernel();
    if (!kernel) throw new Error(guestKernelMissingReason());
    const dir = path.join(world.root, "guest-boot");
    const tree = path.join(dir, "initramfs");
    for (const d of ["bin", "proc", "sys", "dev", "modules", "tmp"]) fs.mkdirSync(path.join(tree, d), { recursive: true });
    fs.copyFileSync("/bin/busybox", path.join(tree, "bin", "busybox"));
    fs.chmodSync(path.join(tree, "bin", "busybox"), 0o755);
    const order: string[] = [];
    for (const mod of moduleClosure(kernel.modules, GUEST_MODULES)) {
        const target = path.basename(mod).replace(/\.(xz|zst|gz)$/, "");
        const source = path.join(kernel.modules, mod);
        if (mod.endsWith(".xz")) await run(["sh", "-c", `xz -dc '${source}' > '${path.join(tree, "modules", target)}'`]);
        else if (mod.endsWith(".zst")) await run(["sh", "-c", `zstd -dc '${source}' > '${path.join(tree, "modules", target)}'`]);
        else fs.copyFileSync(source, path.join(tree, "modules", target));
        order.push(target);
    }
    fs.writeFileSync(path.join(tree, "modules.order"), `${order.join("\n")}\n`);
    fs.writeFileSync(path.join(tree, "init"), guestInit({ v4: LAB.server.v4, v6: LAB.server.v6, port: LAB.server.httpPort, name: "example.test" }), { mode: 0o755 });
    fs.writeFileSync(path.join(tree, "udhcpc.sh"), GUEST_UDHCPC, { mode: 0o755 });
    const initrd = path.join(dir, "initrd.gz");
    await run(["sh", "-c", `cd '${tree}' && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > '${initrd}'`]);
    if (dir !== world.filesDir) throw new Error("the lab web server serves the guest files from world.filesDir");
    await run(["qemu-img", "create", "-q", "-f", "qcow2", path.join(dir, "base.qcow2"), "64M"]);
    const vmlinuz = path.join(dir, "vmlinuz");
    fs.copyFileSync(kernel.vmlinuz, vmlinuz);
    const imageSha256 = createHash("sha256").update(fs.readFileSync(path.join(dir, "base.qcow2"))).digest("hex");
    return { kernel: vmlinuz, initrd, imageUrl: `http://${LAB.server.v4}:${LAB.server.httpPort}/files/base.qcow2`, imageSha256 };
}
