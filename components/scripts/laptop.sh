#!/bin/bash
# shellcheck source-path=SCRIPTDIR disable=SC2153 # the settings come from settings.env
# wgexit laptop role (Linux or macOS). Delivered with its platform's driver (laptop-linux.sh or
# laptop-macos.sh), status.sh and its settings.env; do not edit here.
# All traffic goes to the local VM that holds the tunnel; the physical uplink carries only
# DHCP and the VM's WireGuard flows to the gateways (with several gateways, the VM holds a
# tunnel to each and moves the laptop's traffic between them: its failover.sh).
#   install   save what it changes, then up, and watch for network changes
#   up        routes via the VM, the endpoint routes via the current uplink, firewall, DNS
#   reroute   re-detect the uplink (after roaming) and move the endpoint routes and firewall
#   down      put routes, firewall and DNS back as they were; keep the saved state
#   remove    down, stop watching, delete everything
#   status    routes, firewall, DNS, the VM and a probe through its tunnel; non-zero when traffic cannot pass
set -eu
# Its settings come from settings.env beside it: ENDPOINT_HOST, ENDPOINT_PORT, LAPTOP_TABLE,
#  NETWORK_SERVICE, RESOLVER, ROLE_SCRIPT, STATE_DIR, VM_V4, VM_V6, OS; with several gateways
#  also MORE_ENDPOINTS (the others' "host:port", space-separated).
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=/dev/null
. "$HERE/settings.env"

log() { printf 'wgexit-laptop: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# The platform driver: the only place with OS-specific commands.
# shellcheck source=laptop-linux.sh
. "$HERE/laptop-$OS.sh"
# --- shared logic ---
uplink() {
	local found
	found=$(physical_gateway)
	[ -n "$found" ] || die "no default route: connect to a network first"
	echo "$found"
}

# The VM's WireGuard flows, one "address:port" per gateway (the first first), resolved now.
endpoint_flows() {
	local spec host address
	for spec in "$ENDPOINT_HOST:$ENDPOINT_PORT" ${MORE_ENDPOINTS:-}; do
		host=${spec%:*}
		address=$(resolve_v4 "$host")
		[ -n "$address" ] || die "cannot resolve the gateway endpoint $host"
		echo "$address:${spec##*:}"
	done
}

# The endpoint addresses routed by the uplink now (STATE_DIR/endpoint: one per line).
routed_endpoints() { cat "$STATE_DIR/endpoint" 2>/dev/null || true; }

up() {
	local gw dev flows flow found previous
	found=$(uplink)
	gw=${found% *} dev=${found#* }
	flows=$(endpoint_flows)
	dns_save
	# The firewall first: nothing leaks while the routes change.
	firewall_on "$dev" "$flows"
	for previous in $(routed_endpoints); do
		case $'\n'"$flows" in *$'\n'"$previous:"*) ;; *) route_unset 4 "$previous/32" ;; esac
	done
	for flow in $flows; do route_set 4 "${flow%:*}/32" "$gw" "$dev"; done
	for flow in $flows; do echo "${flow%:*}"; done >"$STATE_DIR/endpoint"
	route_set 4 0.0.0.0/1 "$VM_V4"
	route_set 4 128.0.0.0/1 "$VM_V4"
	if [ -n "$VM_V6" ]; then
		route_set 6 ::/1 "$VM_V6"
		route_set 6 8000::/1 "$VM_V6"
	fi
	for flow in $flows; do forget_flow "${flow%:*}" "${flow##*:}"; done
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
	for endpoint in $(routed_endpoints); do route_unset 4 "$endpoint/32"; done
	rm -f "$STATE_DIR/endpoint"
	dns_restore
	firewall_off
}

# shellcheck source=status.sh
. "$HERE/status.sh"

routes_via_vm() { route_present 4 0.0.0.0/1 && route_present 4 128.0.0.0/1; }

# tcp_probe HOST PORT SECONDS: a TCP connection opens within the time (bash's /dev/tcp; macOS
# has no timeout(1)).
tcp_probe() {
	local pid killer code
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null &
	pid=$!
	(sleep "$3" && kill "$pid") >/dev/null 2>&1 &
	killer=$!
	code=0
	wait "$pid" || code=$?
	kill "$killer" 2>/dev/null || true
	return "$code"
}
endpoint_routed() {
	local endpoint
	[ -s "$STATE_DIR/endpoint" ] || return 1
	for endpoint in $(routed_endpoints); do route_present 4 "$endpoint/32" || return 1; done
}

status() {
	check "routes 0/1 and 128/1 via the VM" routes_via_vm
	check "endpoint routes via the uplink" endpoint_routed
	check "uplink firewall" firewall_present
	check "DNS $RESOLVER" dns_present
	# The whole path, as the user needs it: the VM, its tunnel, the gateway, the internet.
	check "the VM answers ($VM_V4)" ping_once "$VM_V4"
	check "traffic passes the tunnel (TCP to the resolver $RESOLVER:53 within 4 s)" tcp_probe "$RESOLVER" 53 4
	return "$STATUS_BAD"
}

# A first switch-over that fails halfway (a route the VM link refuses, DNS that cannot be set)
# is undone: routes, firewall and DNS go back as they were, and the laptop uses its network
# directly. A later one that fails leaves the kill switch closed, and says so.
undo_first_install() {
	local code=$?
	[ "$code" = 0 ] && return 0
	log "the switch-over failed (exit $code); putting routes, firewall and DNS back as they were"
	watch_off
	down
	rm -rf "$STATE_DIR"
	rmdir "${STATE_DIR%/*}" 2>/dev/null || true
	exit "$code"
}

kill_switch_stays() {
	local code=$?
	[ "$code" = 0 ] && return 0
	log "the switch-over failed (exit $code); the kill switch stays closed: only the VM's WireGuard flows may leave the uplink ('$ROLE_SCRIPT down' gives the network back without the tunnel)"
	exit "$code"
}

install() {
	# Installed before: it says so (or, from an earlier version, it has an endpoint recorded).
	if [ -e "$STATE_DIR/installed" ] || [ -e "$STATE_DIR/endpoint" ]; then trap kill_switch_stays EXIT; else trap undo_first_install EXIT; fi
	mkdir -p "$STATE_DIR"
	up
	watch_on
	touch "$STATE_DIR/installed"
	trap - EXIT
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
