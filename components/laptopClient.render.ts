// Pure renderers for a laptop client: the settings of the VM role (components/scripts/
// laptop-vm.sh: tunnel, SNAT, kill switch) and of the laptop role (laptop.sh: one body of
// shared logic plus a small platform driver, laptop-linux.sh or laptop-macos.sh; only the
// driver's functions differ, so the Linux lab exercises the shared logic).
import { deliverAndRun, type FileToWrite, preflight, roleFiles, runIfPresent, settingsFile, shq } from "./shell";

export const VM_DIR = "/etc/wgexit/laptop-vm";
export const VM_SCRIPT = `${VM_DIR}/vm.sh`;
export const VM_TABLE = "wgexit_laptop_vm";
export const LAPTOP_TABLE = "wgexit_laptop";

export interface LaptopVmSettings {
    name: string;
    wgInterface: string;
    tunnelMtu: number;
    addressV4: string;
    addressV6: string;
    routeTable: number;
    /** The VM's interface towards the laptop, and the laptop's addresses on it. */
    vmLink: string;
    laptopAddress: string;
    laptopAddressV6?: string;
    /** Tunnels to the stack's other gateways (failover.render.ts): the firewall treats them as the first. */
    extraTunnels?: string[];
}

export interface LaptopSettings {
    name: string;
    os: "linux" | "macos";
    vmAddress: string;
    vmAddressV6?: string;
    /** The gateway's public IPv4 address (or DNS name) and WireGuard port. */
    endpointHost: string;
    endpointPort: number;
    /** With more than one gateway, the others' "host:port", in order: the VM's WireGuard flows to them pass too. */
    moreEndpoints?: string[];
    resolver: string;
    /** macOS: the network service whose DNS servers are set. */
    networkService: string;
}

export interface LaptopGateway {
    publicKey: string;
    endpoint: string;
}

/** The VM's table: the laptop's traffic leaves only through the tunnel, masqueraded to the VM's tunnel address. */
export function renderLaptopVmRuleset(s: LaptopVmSettings): string {
    const wg = s.extraTunnels?.length ? `{ ${[s.wgInterface, ...s.extraTunnels].map((n) => JSON.stringify(n)).join(", ")} }` : JSON.stringify(s.wgInterface);
    const link = JSON.stringify(s.vmLink);
    const v6 = s.laptopAddressV6;
    return `# wgexit laptop VM firewall: one table, replaced atomically by ${VM_SCRIPT}.
table inet ${VM_TABLE} {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname ${wg} ct state established,related accept
		iifname ${wg} counter drop comment "nothing from the tunnel reaches the VM"
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		tcp flags syn / syn,rst tcp option maxseg size set rt mtu comment "clamp MSS to the tunnel MTU"
		iifname ${link} oifname ${wg} ip saddr ${s.laptopAddress} accept comment "the laptop to the tunnel"
${v6 ? `		iifname ${link} oifname ${wg} ip6 saddr ${v6} accept comment "the laptop to the tunnel"\n` : ""}		iifname ${wg} oifname ${link} ct state established,related accept
		ip saddr ${s.laptopAddress} counter drop comment "kill switch: the laptop leaves only through the tunnel"
${v6 ? `		ip6 saddr ${v6} counter drop comment "kill switch: the laptop leaves only through the tunnel"\n` : ""}		iifname ${wg} counter drop comment "the tunnel reaches nothing else"
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname ${wg} ip saddr ${s.laptopAddress} masquerade comment "SNAT the laptop into the tunnel"
${v6 ? `		oifname ${wg} ip6 saddr ${v6} masquerade comment "SNAT the laptop into the tunnel"\n` : ""}	}
}
`;
}

/** What components/scripts/laptop-vm.sh (vm.sh on the VM) reads: its settings.env. */
export function renderLaptopVmSettings(s: LaptopVmSettings): string {
    return settingsFile({
        WG_IF: s.wgInterface,
        MTU: s.tunnelMtu,
        ADDRESS_V4: `${s.addressV4}/32`,
        ADDRESS_V6: `${s.addressV6}/128`,
        ROUTE_TABLE: s.routeTable,
        VM_LINK: s.vmLink,
        LAPTOP_V4: s.laptopAddress,
        LAPTOP_V6: s.laptopAddressV6 ?? "",
        ROLE: "wgexit-laptop-vm",
        ROLE_DIR: VM_DIR,
        ROLE_SCRIPT: VM_SCRIPT,
        TABLE: VM_TABLE,
        UNIT: "wgexit-laptop-vm.service",
        SYSCTL_FILE: "/etc/sysctl.d/60-wgexit-laptop-vm.conf",
    });
}

export function renderLaptopVmPeerConf(g: LaptopGateway): string {
    return `# gateway
[Peer]
PublicKey = ${g.publicKey}
Endpoint = ${g.endpoint}
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
`;
}

// ---------------------------------------------------------------------------------------
// The laptop. The platform drivers are the only place with OS-specific commands.

/** Where the laptop role lives on each platform. */
export function laptopDir(os: LaptopSettings["os"]): string {
    return os === "macos" ? "/var/db/wgexit/laptop" : "/etc/wgexit/laptop";
}

/** What components/scripts/laptop.sh reads: its settings.env. */
export function renderLaptopSettings(s: LaptopSettings): string {
    const dir = laptopDir(s.os);
    return settingsFile({
        OS: s.os,
        VM_V4: s.vmAddress,
        VM_V6: s.vmAddressV6 ?? "",
        ENDPOINT_HOST: s.endpointHost,
        ENDPOINT_PORT: s.endpointPort,
        ...(s.moreEndpoints?.length ? { MORE_ENDPOINTS: s.moreEndpoints.join(" ") } : {}),
        RESOLVER: s.resolver,
        STATE_DIR: dir,
        ROLE_SCRIPT: `${dir}/laptop.sh`,
        // Only the platform's own driver reads these.
        ...(s.os === "macos" ? { NETWORK_SERVICE: s.networkService } : { LAPTOP_TABLE }),
    });
}

/** The laptop's files: settings, the shared logic, and its platform's driver (the only OS-specific part). */
export function laptopFiles(s: LaptopSettings): FileToWrite[] {
    const dir = laptopDir(s.os);
    return roleFiles(dir, { script: "laptop.sh", as: "laptop.sh" }, renderLaptopSettings(s), ["status.sh", `laptop-${s.os}.sh`]);
}

export function laptopVmFiles(s: LaptopVmSettings, g: LaptopGateway): FileToWrite[] {
    return [
        { path: `${VM_DIR}/ruleset.nft`, content: renderLaptopVmRuleset(s), mode: "0644" },
        { path: `${VM_DIR}/peer.conf`, content: renderLaptopVmPeerConf(g), mode: "0644" },
        ...roleFiles(VM_DIR, { script: "laptop-vm.sh", as: "vm.sh" }, renderLaptopVmSettings(s), ["status.sh", "role.sh", "policy-routing.sh"]),
    ];
}

/** Commands run on hosts whose login shell may be zsh (macOS): the script runs under /bin/sh. */
function anyShell(script: string): string {
    return `/bin/sh <<'WGEXIT_SH_EOF'\n${script}WGEXIT_SH_EOF\n`;
}

export function renderLaptopVmInstallCommand(s: LaptopVmSettings, g: LaptopGateway): string {
    return deliverAndRun(laptopVmFiles(s, g), `${shq(VM_SCRIPT)} install`, preflight({ roleDir: VM_DIR, wgInterface: s.wgInterface, routeTable: s.routeTable }));
}

export function renderLaptopVmRemoveCommand(): string {
    return runIfPresent(VM_SCRIPT, "remove");
}

export function renderLaptopInstallCommand(s: LaptopSettings): string {
    return anyShell(deliverAndRun(laptopFiles(s), `${shq(`${laptopDir(s.os)}/laptop.sh`)} install`));
}

export function renderLaptopRemoveCommand(os: LaptopSettings["os"]): string {
    return anyShell(runIfPresent(`${laptopDir(os)}/laptop.sh`, "remove"));
}
