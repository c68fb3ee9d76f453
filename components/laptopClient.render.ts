// Pure renderers for a laptop client: the VM role (tunnel, SNAT, kill switch) and the laptop
// role. The laptop script is one body of shared logic plus a small platform driver (Linux or
// macOS): only the driver's functions differ, so the Linux lab exercises the shared logic.
import { renderPolicyRoutingFunctions, renderRoleFunctions, renderStatusCheck } from "./roleScript";
import { assignments, deliverAndRun, runIfPresent, shq } from "./shell";

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
}

export interface LaptopSettings {
    name: string;
    os: "linux" | "macos";
    vmAddress: string;
    vmAddressV6?: string;
    /** The gateway's public IPv4 address (or DNS name) and WireGuard port. */
    endpointHost: string;
    endpointPort: number;
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
    const wg = JSON.stringify(s.wgInterface);
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

/** The VM role's one script: install/up/down/remove/status. */
export function renderLaptopVmScript(s: LaptopVmSettings): string {
    return `#!/bin/bash
# wgexit laptop VM role. Rendered by components/laptopClient.render.ts; do not edit on the VM.
#   install   install packages, make the key on this VM, enable at boot, bring up
#   up        kill switch and firewall, then the tunnel (idempotent)
#   down      take the tunnel down; the kill switch stays
#   remove    undo everything install did
#   status    the tunnel's handshake age and the kill switch; non-zero when something is off
set -euo pipefail
${assignments({
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
})}

${renderRoleFunctions()}
${renderPolicyRoutingFunctions()}
# The laptop's packets (and only those) are routed by ROUTE_TABLE: the tunnel, then an
# unreachable default, so they never fall back to the VM's own uplink.
sync_policy_routing() {
	ip -4 route replace unreachable default metric 4294967295 table "$ROUTE_TABLE"
	ip -4 rule show pref "$ROUTE_TABLE" | grep -q . || ip -4 rule add pref "$ROUTE_TABLE" iif "$VM_LINK" from "$LAPTOP_V4" lookup "$ROUTE_TABLE"
	if [ -n "$LAPTOP_V6" ]; then
		ip -6 route replace unreachable default metric 4294967295 table "$ROUTE_TABLE"
		ip -6 rule show pref "$ROUTE_TABLE" | grep -q . || ip -6 rule add pref "$ROUTE_TABLE" iif "$VM_LINK" from "$LAPTOP_V6" lookup "$ROUTE_TABLE"
	fi
}

vm_table() { cat "$ROLE_DIR/ruleset.nft"; }

up() {
	enable_forwarding
	sync_policy_routing
	apply_table vm_table
	ensure_link
	ip link set dev "$WG_IF" mtu "$MTU"
	ip -4 address replace "$ADDRESS_V4" dev "$WG_IF"
	if [ -e /proc/sys/net/ipv6 ]; then ip -6 address replace "$ADDRESS_V6" dev "$WG_IF" nodad; fi
	sync_wireguard "$ROLE_DIR/peer.conf"
	ip link set dev "$WG_IF" up
	sysctl -q -w "net.ipv4.conf.$WG_IF.rp_filter=2" >/dev/null
	ip -4 route replace default dev "$WG_IF" table "$ROUTE_TABLE"
	if [ -n "$LAPTOP_V6" ]; then ip -6 route replace default dev "$WG_IF" table "$ROUTE_TABLE"; fi
}

down() {
	delete_link "$WG_IF"
}

kill_switch_complete() {
	ip -4 rule show pref "$ROUTE_TABLE" | grep . >/dev/null && ip -4 route show table "$ROUTE_TABLE" | grep '^unreachable default' >/dev/null
}

status() {
	check "tunnel $WG_IF" link_exists "$WG_IF"
	check "kill switch (rule and unreachable route)" kill_switch_complete
	check "firewall inet $TABLE" table_exists
	if link_exists "$WG_IF" >/dev/null 2>&1; then peer_status "$ROLE_DIR/peer.conf"; fi
	return "$STATUS_BAD"
}

install() {
	install_packages wg:wireguard-tools nft:nftables
	ensure_key
	install_unit "wgexit laptop VM (tunnel, SNAT and kill switch for the laptop)"
	start_unit
	up
	cat "$ROLE_DIR/public.key"
}

remove() {
	remove_unit
	drop_table
	drop_policy_routing
	local previous
	previous=$(cat "$ROLE_DIR/interface" 2>/dev/null || true)
	delete_link "\${previous:-$WG_IF}"
	restore_sysctl
	rm -f "$SYSCTL_FILE"
	rm -rf "$ROLE_DIR"
	rmdir /etc/wgexit 2>/dev/null || true
}

[ "$(id -u)" = 0 ] || die "run as root"
case "\${1:-}" in
install) install ;;
up) up ;;
down) down ;;
remove) remove ;;
status) status ;;
public-key) cat "$ROLE_DIR/public.key" ;;
*) die "usage: $0 install|up|down|remove|status|public-key" ;;
esac
`;
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

const LINUX_DRIVER = `# --- platform driver: Linux (ip route, nftables, resolv.conf or resolvectl) ---
physical_gateway() {
	# The default route stays in place under 0/1 and 128/1, so it still names the uplink.
	ip -4 route show default | awk '{for (i = 1; i < NF; i++) {if ($i == "via") g = $(i + 1); if ($i == "dev") d = $(i + 1)}; if (g != "") {print g, d; exit}}'
}

resolve_v4() {
	case $1 in
	*[!0-9.]*) getent ahostsv4 "$1" | awk '{print $1; exit}' ;;
	*) echo "$1" ;;
	esac
}

route_set() {
	local family=$1 prefix=$2 via=$3 dev=\${4:-}
	if [ -n "$dev" ]; then ip "-$family" route replace "$prefix" via "$via" dev "$dev"; else ip "-$family" route replace "$prefix" via "$via"; fi
}

route_unset() {
	ip "-$1" route del "$2" 2>/dev/null || true
}

route_present() {
	ip "-$1" route show "$2" | grep -q .
}

firewall_on() {
	local phys=$1 endpoint=$2
	{
		echo "table inet $LAPTOP_TABLE {}"
		echo "delete table inet $LAPTOP_TABLE"
		cat <<NFT_EOF
table inet $LAPTOP_TABLE {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "$phys" udp sport 67 udp dport 68 accept comment "DHCP"
		iifname "$phys" ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept comment "DHCPv6"
		iifname "$phys" counter drop comment "nothing arrives on the physical uplink"
	}
	chain output {
		type filter hook output priority filter; policy accept;
		oifname "$phys" udp sport 68 udp dport 67 accept comment "DHCP"
		oifname "$phys" udp sport 546 udp dport 547 accept comment "DHCPv6"
		oifname "$phys" ip daddr $endpoint udp dport $ENDPOINT_PORT accept comment "the VM's WireGuard flow, when the VM software NATs in user space"
		oifname "$phys" counter drop comment "kill switch: nothing of the laptop's own leaves the uplink"
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		oifname "$phys" ip saddr $VM_V4 ip daddr $endpoint udp dport $ENDPOINT_PORT accept comment "the VM's WireGuard flow"
		iifname "$phys" ip saddr $endpoint udp sport $ENDPOINT_PORT ct state established accept comment "its replies"
		oifname "$phys" counter drop comment "kill switch: only the WireGuard flow leaves the uplink"
		iifname "$phys" counter drop
	}
}
NFT_EOF
	} >"$STATE_DIR/firewall.nft"
	nft -f "$STATE_DIR/firewall.nft"
}

firewall_off() {
	if nft list table inet "$LAPTOP_TABLE" >/dev/null 2>&1; then nft delete table inet "$LAPTOP_TABLE"; fi
}

firewall_present() {
	nft list table inet "$LAPTOP_TABLE" >/dev/null 2>&1
}

# With systemd-resolved, DNS is set on the link to the VM; otherwise resolv.conf is replaced
# (the original, file or symlink, is kept and put back).
vm_link() {
	ip -4 route get "$VM_V4" | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'
}

uses_resolved() {
	command -v resolvectl >/dev/null 2>&1 && resolvectl status >/dev/null 2>&1
}

dns_save() {
	if ! uses_resolved && [ ! -e "$STATE_DIR/resolv.conf.saved" ] && [ ! -L "$STATE_DIR/resolv.conf.saved" ]; then
		cp -a /etc/resolv.conf "$STATE_DIR/resolv.conf.saved"
	fi
}

dns_set() {
	if uses_resolved; then
		resolvectl dns "$(vm_link)" "$RESOLVER"
		resolvectl domain "$(vm_link)" "~."
	else
		rm -f /etc/resolv.conf
		printf '# wgexit: through the tunnel\\nnameserver %s\\n' "$RESOLVER" >/etc/resolv.conf
	fi
}

dns_restore() {
	if uses_resolved; then
		resolvectl revert "$(vm_link)" 2>/dev/null || true
	elif [ -e "$STATE_DIR/resolv.conf.saved" ] || [ -L "$STATE_DIR/resolv.conf.saved" ]; then
		rm -f /etc/resolv.conf
		mv -f "$STATE_DIR/resolv.conf.saved" /etc/resolv.conf
	fi
}

dns_present() {
	if uses_resolved; then resolvectl dns "$(vm_link)" | grep -qF "$RESOLVER"; else grep -qx "nameserver $RESOLVER" /etc/resolv.conf; fi
}

# NetworkManager runs dispatcher scripts when the network changes (Wi-Fi roaming).
watch_on() {
	if [ -d /etc/NetworkManager/dispatcher.d ]; then
		printf '#!/bin/sh\\n# wgexit: keep the endpoint route on the current uplink\\nexec %s reroute\\n' "$ROLE_SCRIPT" >/etc/NetworkManager/dispatcher.d/90-wgexit-laptop
		chmod 755 /etc/NetworkManager/dispatcher.d/90-wgexit-laptop
	fi
}

watch_off() {
	rm -f /etc/NetworkManager/dispatcher.d/90-wgexit-laptop
}
`;

const MACOS_DRIVER = `# --- platform driver: macOS (route, pf anchor, networksetup, launchd) ---
PF_ANCHOR="com.apple/wgexit"
PLIST=/Library/LaunchDaemons/org.wgexit.laptop.plist

physical_gateway() {
	# netstat lists the real default entry; 'route get default' would answer with 0/1.
	netstat -rn -f inet | awk '$1 == "default" && $4 !~ /^utun/ {print $2, $4; exit}'
}

resolve_v4() {
	case $1 in
	*[!0-9.]*) dscacheutil -q host -a name "$1" | awk '/^ip_address:/ {print $2; exit}' ;;
	*) echo "$1" ;;
	esac
}

route_set() {
	local family=$1 prefix=$2 via=$3 inet=-inet
	[ "$family" = 6 ] && inet=-inet6
	route -q -n delete "$inet" "$prefix" >/dev/null 2>&1 || true
	route -q -n add "$inet" "$prefix" "$via" >/dev/null
}

route_unset() {
	local inet=-inet
	[ "$1" = 6 ] && inet=-inet6
	route -q -n delete "$inet" "$2" >/dev/null 2>&1 || true
}

route_present() {
	local inet=inet
	[ "$1" = 6 ] && inet=inet6
	netstat -rn -f "$inet" | awk -v p="$2" '$1 == p {found = 1} END {exit !found}'
}

# The anchor sits under com.apple/*, which the stock /etc/pf.conf already evaluates, so
# /etc/pf.conf is never edited. pf is enabled with a reference token, released on removal.
firewall_on() {
	local phys=$1 endpoint=$2
	cat >"$STATE_DIR/pf.conf" <<PF_EOF
pass out quick on $phys proto udp from any port 68 to any port 67
pass in quick on $phys proto udp from any port 67 to any port 68
pass out quick on $phys proto udp from any to $endpoint port $ENDPOINT_PORT keep state
block drop quick on $phys all
PF_EOF
	pfctl -q -a "$PF_ANCHOR" -f "$STATE_DIR/pf.conf"
	if [ ! -s "$STATE_DIR/pf.token" ]; then
		pfctl -E 2>&1 | awk '/Token/ {print $NF}' >"$STATE_DIR/pf.token"
	fi
}

firewall_off() {
	pfctl -q -a "$PF_ANCHOR" -F all 2>/dev/null || true
	if [ -s "$STATE_DIR/pf.token" ]; then pfctl -q -X "$(cat "$STATE_DIR/pf.token")" 2>/dev/null || true; fi
	rm -f "$STATE_DIR/pf.token"
}

firewall_present() {
	pfctl -a "$PF_ANCHOR" -s rules 2>/dev/null | grep -q '^block drop'
}

dns_save() {
	if [ ! -e "$STATE_DIR/dns.saved" ]; then
		networksetup -getdnsservers "$NETWORK_SERVICE" | grep -v "aren't any" >"$STATE_DIR/dns.saved" || true
	fi
}

dns_set() {
	networksetup -setdnsservers "$NETWORK_SERVICE" "$RESOLVER"
}

dns_restore() {
	[ -e "$STATE_DIR/dns.saved" ] || return 0
	if [ -s "$STATE_DIR/dns.saved" ]; then
		# shellcheck disable=SC2046 # one server per word
		networksetup -setdnsservers "$NETWORK_SERVICE" $(cat "$STATE_DIR/dns.saved")
	else
		networksetup -setdnsservers "$NETWORK_SERVICE" empty
	fi
	rm -f "$STATE_DIR/dns.saved"
}

dns_present() {
	networksetup -getdnsservers "$NETWORK_SERVICE" | grep -qx "$RESOLVER"
}

# launchd re-runs 'reroute' whenever the network configuration changes (Wi-Fi roaming).
watch_on() {
	cat >"$PLIST" <<PLIST_EOF
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key><string>org.wgexit.laptop</string>
	<key>ProgramArguments</key><array><string>$ROLE_SCRIPT</string><string>reroute</string></array>
	<key>WatchPaths</key><array><string>/Library/Preferences/SystemConfiguration</string></array>
	<key>RunAtLoad</key><true/>
</dict>
</plist>
PLIST_EOF
	launchctl bootout system/org.wgexit.laptop 2>/dev/null || true
	launchctl bootstrap system "$PLIST"
}

watch_off() {
	launchctl bootout system/org.wgexit.laptop 2>/dev/null || true
	rm -f "$PLIST"
}
`;

/** The laptop role: shared logic over one platform driver. Bash 3.2 compatible (macOS). */
export function renderLaptopScript(s: LaptopSettings): string {
    const dir = laptopDir(s.os);
    return `#!/bin/bash
# wgexit laptop role (${s.os}). Rendered by components/laptopClient.render.ts; do not edit here.
# All traffic goes to the local VM that holds the tunnel; the physical uplink carries only
# DHCP and the VM's WireGuard flow to the gateway.
#   install   save what it changes, then up, and watch for network changes
#   up        routes via the VM, the endpoint route via the current uplink, firewall, DNS
#   reroute   re-detect the uplink (after roaming) and move the endpoint route and firewall
#   down      put routes, firewall and DNS back as they were; keep the saved state
#   remove    down, stop watching, delete everything
#   status    routes, firewall and DNS; non-zero when something is off (the VM reports the tunnel)
set -eu
${assignments({
    VM_V4: s.vmAddress,
    VM_V6: s.vmAddressV6 ?? "",
    ENDPOINT_HOST: s.endpointHost,
    ENDPOINT_PORT: s.endpointPort,
    RESOLVER: s.resolver,
    STATE_DIR: dir,
    ROLE_SCRIPT: `${dir}/laptop.sh`,
    // Only the platform's own driver reads these.
    ...(s.os === "macos" ? { NETWORK_SERVICE: s.networkService } : { LAPTOP_TABLE }),
})}

log() { printf 'wgexit-laptop: %s\\n' "$*" >&2; }
die() { log "$*"; exit 1; }

${s.os === "macos" ? MACOS_DRIVER : LINUX_DRIVER}
# --- shared logic ---
uplink() {
	local found
	found=$(physical_gateway)
	[ -n "$found" ] || die "no default route: connect to a network first"
	echo "$found"
}

endpoint_v4() {
	local address
	address=$(resolve_v4 "$ENDPOINT_HOST")
	[ -n "$address" ] || die "cannot resolve the gateway endpoint $ENDPOINT_HOST"
	echo "$address"
}

up() {
	local gw dev endpoint found previous
	found=$(uplink)
	gw=\${found% *} dev=\${found#* }
	endpoint=$(endpoint_v4)
	dns_save
	# The firewall first: nothing leaks while the routes change.
	firewall_on "$dev" "$endpoint"
	previous=$(cat "$STATE_DIR/endpoint" 2>/dev/null || true)
	if [ -n "$previous" ] && [ "$previous" != "$endpoint" ]; then route_unset 4 "$previous/32"; fi
	route_set 4 "$endpoint/32" "$gw" "$dev"
	echo "$endpoint" >"$STATE_DIR/endpoint"
	route_set 4 0.0.0.0/1 "$VM_V4"
	route_set 4 128.0.0.0/1 "$VM_V4"
	if [ -n "$VM_V6" ]; then
		route_set 6 ::/1 "$VM_V6"
		route_set 6 8000::/1 "$VM_V6"
	fi
	dns_set
}

reroute() {
	[ -e "$STATE_DIR/endpoint" ] || return 0
	up
}

down() {
	local endpoint
	route_unset 4 0.0.0.0/1
	route_unset 4 128.0.0.0/1
	route_unset 6 ::/1
	route_unset 6 8000::/1
	endpoint=$(cat "$STATE_DIR/endpoint" 2>/dev/null || true)
	if [ -n "$endpoint" ]; then route_unset 4 "$endpoint/32"; fi
	rm -f "$STATE_DIR/endpoint"
	dns_restore
	firewall_off
}

${renderStatusCheck()}
routes_via_vm() { route_present 4 0.0.0.0/1 && route_present 4 128.0.0.0/1; }
endpoint_routed() { [ -e "$STATE_DIR/endpoint" ] && route_present 4 "$(cat "$STATE_DIR/endpoint")/32"; }

status() {
	check "routes 0/1 and 128/1 via the VM" routes_via_vm
	check "endpoint route via the uplink" endpoint_routed
	check "uplink firewall" firewall_present
	check "DNS $RESOLVER" dns_present
	return "$STATUS_BAD"
}

install() {
	mkdir -p "$STATE_DIR"
	up
	watch_on
}

remove() {
	watch_off
	down
	rm -rf "$STATE_DIR"
	rmdir "\${STATE_DIR%/*}" 2>/dev/null || true
}

[ "$(id -u)" = 0 ] || die "run as root"
case "\${1:-}" in
install) install ;;
up) up ;;
reroute) reroute ;;
down) down ;;
remove) remove ;;
status) status ;;
*) die "usage: $0 install|up|reroute|down|remove|status" ;;
esac
`;
}

/** Commands run on hosts whose login shell may be zsh (macOS): the script runs under /bin/sh. */
function anyShell(script: string): string {
    return `/bin/sh <<'WGEXIT_SH_EOF'\n${script}WGEXIT_SH_EOF\n`;
}

export function renderLaptopVmInstallCommand(s: LaptopVmSettings, g: LaptopGateway): string {
    return deliverAndRun(
        [
            { path: `${VM_DIR}/ruleset.nft`, content: renderLaptopVmRuleset(s), mode: "0644" },
            { path: `${VM_DIR}/peer.conf`, content: renderLaptopVmPeerConf(g), mode: "0644" },
            { path: VM_SCRIPT, content: renderLaptopVmScript(s), mode: "0755" },
        ],
        `${shq(VM_SCRIPT)} install`,
    );
}

export function renderLaptopVmRemoveCommand(): string {
    return runIfPresent(VM_SCRIPT, "remove");
}

export function renderLaptopInstallCommand(s: LaptopSettings): string {
    const script = `${laptopDir(s.os)}/laptop.sh`;
    return anyShell(deliverAndRun([{ path: script, content: renderLaptopScript(s), mode: "0755" }], `${shq(script)} install`));
}

export function renderLaptopRemoveCommand(os: LaptopSettings["os"]): string {
    return anyShell(runIfPresent(`${laptopDir(os)}/laptop.sh`, "remove"));
}
