#!/bin/bash
# wgexit laptop role (macos). Rendered by components/laptopClient.render.ts; do not edit here.
# All traffic goes to the local VM that holds the tunnel; the physical uplink carries only
# DHCP and the VM's WireGuard flow to the gateway.
#   install   save what it changes, then up, and watch for network changes
#   up        routes via the VM, the endpoint route via the current uplink, firewall, DNS
#   reroute   re-detect the uplink (after roaming) and move the endpoint route and firewall
#   down      put routes, firewall and DNS back as they were; keep the saved state
#   remove    down, stop watching, delete everything
#   status    routes, firewall and DNS; non-zero when something is off (the VM reports the tunnel)
set -eu
VM_V4='192.168.64.2'
VM_V6='fd66:64::2'
ENDPOINT_HOST='198.51.100.10'
ENDPOINT_PORT='51820'
RESOLVER='9.9.9.9'
STATE_DIR='/var/db/wgexit/laptop'
ROLE_SCRIPT='/var/db/wgexit/laptop/laptop.sh'
NETWORK_SERVICE='Wi-Fi'

log() { printf 'wgexit-laptop: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- platform driver: macOS (route, pf anchor, networksetup, launchd) ---
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
	gw=${found% *} dev=${found#* }
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

# --- status: lines the status command reads ------------------------------------------
STATUS_BAD=0

# check WHAT COMMAND...: runs COMMAND quietly and reports whether it succeeded.
check() {
	local what=$1
	shift
	if "$@" >/dev/null 2>&1; then
		echo "check $what ok"
	else
		echo "check $what FAIL"
		STATUS_BAD=1
	fi
}

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
	rmdir "${STATE_DIR%/*}" 2>/dev/null || true
}

[ "$(id -u)" = 0 ] || die "run as root"
case "${1:-}" in
install) install ;;
up) up ;;
reroute) reroute ;;
down) down ;;
remove) remove ;;
status) status ;;
*) die "usage: $0 install|up|reroute|down|remove|status" ;;
esac
