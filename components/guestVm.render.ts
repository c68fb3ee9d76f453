// Pure renderers for one guest: its libvirt domain XML, its NoCloud seed (user-data and
// meta-data) and the env file the site script's guest-up reads. Snapshot-tested.
import { createHash } from "node:crypto";
import { create as createXml } from "xmlbuilder2";
import { stringify as toYaml } from "yaml";
import type { ResolvedGuest, ResolvedNetwork } from "./config";
import { SITE_DIR, SITE_SCRIPT, type SiteSettings } from "./kvmSite.render";
import { assignments, deliverAndRun, runIfPresent, shq } from "./shell";

export interface GuestPlacement {
    network: string;
    poolDir: string;
    domainType: "kvm" | "qemu";
}

/** libvirt domain: virtio disk (the overlay), the seed as a second read-only virtio disk, virtio NIC on the routed network, serial console. */
export function renderDomainXml(g: ResolvedGuest, p: GuestPlacement): string {
    const root = createXml({ version: "1.0" }).ele("domain", { type: p.domainType });
    root.ele("name").txt(g.name);
    root.ele("memory", { unit: "MiB" }).txt(String(g.memoryMb));
    root.ele("vcpu").txt(String(g.vcpus));
    const os = root.ele("os");
    os.ele("type").txt("hvm");
    if (g.kernel) {
        os.ele("kernel").txt(g.kernel);
        if (g.initrd) os.ele("initrd").txt(g.initrd);
        if (g.cmdline) os.ele("cmdline").txt(g.cmdline);
    } else {
        os.ele("boot", { dev: "hd" });
    }
    const features = root.ele("features");
    features.ele("acpi");
    features.ele("apic");
    if (p.domainType === "kvm") root.ele("cpu", { mode: "host-passthrough" });
    root.ele("on_poweroff").txt("destroy");
    root.ele("on_reboot").txt("restart");
    root.ele("on_crash").txt("destroy");
    const devices = root.ele("devices");
    const disk = devices.ele("disk", { type: "file", device: "disk" });
    disk.ele("driver", { name: "qemu", type: "qcow2" });
    disk.ele("source", { file: `${p.poolDir}/${g.name}.qcow2` });
    disk.ele("target", { dev: "vda", bus: "virtio" });
    // The seed is a read-only virtio disk labelled "cidata": NoCloud finds it by label, and
    // virtio needs no SATA or IDE driver in the guest (minimal cloud kernels have none).
    const seed = devices.ele("disk", { type: "file", device: "disk" });
    seed.ele("driver", { name: "qemu", type: "raw" });
    seed.ele("source", { file: `${p.poolDir}/${g.name}-seed.iso` });
    seed.ele("target", { dev: "vdb", bus: "virtio" });
    seed.ele("readonly");
    const nic = devices.ele("interface", { type: "network" });
    nic.ele("source", { network: p.network });
    nic.ele("mac", { address: g.mac });
    nic.ele("model", { type: "virtio" });
    const serial = devices.ele("serial", { type: "pty" });
    // The console is also logged, so a boot can be read without attaching to it.
    serial.ele("log", { file: `/var/log/libvirt/qemu/${g.name}-console.log`, append: "off" });
    serial.ele("target", { port: "0" });
    devices.ele("console", { type: "pty" }).ele("target", { type: "serial", port: "0" });
    devices.ele("rng", { model: "virtio" }).ele("backend", { model: "random" }).txt("/dev/urandom");
    return root.end({ prettyPrint: true, headless: true }).concat("\n");
}

/** NoCloud seed: hostname, the login user and its SSH keys. No password is set. */
export function renderGuestUserData(g: ResolvedGuest): string {
    const doc = {
        hostname: g.name,
        // cloud-init's schema refuses an empty key list: a guest without keys has none (console only).
        users: [{ name: g.user, groups: ["sudo"], shell: "/bin/bash", sudo: "ALL=(ALL) NOPASSWD:ALL", lock_passwd: true, ...(g.sshAuthorizedKeys.length ? { ssh_authorized_keys: g.sshAuthorizedKeys } : {}) }],
        ssh_pwauth: false,
    };
    return `#cloud-config\n${toYaml(doc, { lineWidth: 0 })}`;
}

export function renderGuestMetaData(siteName: string, g: ResolvedGuest): string {
    return toYaml({ "instance-id": `${siteName}-${g.name}`, "local-hostname": g.name });
}

/**
 * The base image's file name in the pool, keyed by its source (and its SHA-256 when given):
 * two images whose URLs end in the same name never share a base. The readable tail is the
 * source's own file name.
 */
export function baseImageName(source: string, sha256 = ""): string {
    const key = createHash("sha256").update(`${source}\n${sha256}`).digest("hex").slice(0, 16);
    const last = (source.split("/").pop() ?? "").replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 60) || "image";
    return `${key}-${last}`;
}

export function renderGuestEnv(g: ResolvedGuest, network: string): string {
    return `${assignments({ IMAGE: g.image, IMAGE_SHA256: g.imageSha256 ?? "", NETWORK: network, MAC: g.mac, ADDRESS: g.addressV4, DISK_GB: g.diskGb, BASE: baseImageName(g.image, g.imageSha256) })}\n`;
}

export function renderGuestUpCommand(g: ResolvedGuest, n: ResolvedNetwork, s: SiteSettings): string {
    const dir = `${SITE_DIR}/guests/${g.name}`;
    return deliverAndRun(
        [
            { path: `${dir}/guest.env`, content: renderGuestEnv(g, n.name), mode: "0644" },
            { path: `${dir}/domain.xml`, content: renderDomainXml(g, { network: n.name, poolDir: s.poolDir, domainType: s.domainType }), mode: "0644" },
            { path: `${dir}/user-data`, content: renderGuestUserData(g), mode: "0644" },
            { path: `${dir}/meta-data`, content: renderGuestMetaData(s.name, g), mode: "0644" },
        ],
        `${shq(SITE_SCRIPT)} guest-up ${shq(g.name)}`,
    );
}

export function renderGuestRemoveCommand(g: { name: string }): string {
    return runIfPresent(SITE_SCRIPT, `guest-remove ${shq(g.name)}`);
}
