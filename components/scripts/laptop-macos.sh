# shellcheck shell=bash
# Sourced by laptop.sh on macOS (bash 3.2).
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
# $2: the VM's WireGuard flows, "address:port" per line.
firewall_on() {
	local phys=$1 flow
	{
		echo "pass out quick on $phys proto udp from any port 68 to any port 67"
		echo "pass in quick on $phys proto udp from any port 67 to any port 68"
		for flow in $2; do echo "pass out quick on $phys proto udp from any to ${flow%:*} port ${flow##*:} keep state"; done
		echo "block drop quick on $phys all"
	} >"$STATE_DIR/pf.conf"
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

# The VM software's NAT state for a WireGuard flow of the VM (address, port), made on the
# previous network, goes once the new routes and rules are in place: the next packet makes a
# state on the new uplink.
forget_flow() {
	pfctl -q -k "$VM_V4" -k "$1" 2>/dev/null || true
}

ping_once() { ping -c 1 -t 2 "$1"; }

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

