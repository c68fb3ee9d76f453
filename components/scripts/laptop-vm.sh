#!/bin/bash
# shellcheck source-path=SCRIPTDIR disable=SC2153 # the settings come from settings.env
# wgexit laptop VM role. Delivered with role.sh, status.sh, policy-routing.sh and its settings.env;
# do not edit on the VM.
#   install   install packages, make the key on this VM, enable at boot, bring up
#   up        kill switch and firewall, then the tunnel (idempotent)
#   down      take the tunnel down; the kill switch stays
#   remove    undo everything install did
#   status    the tunnel's handshake age and the kill switch; non-zero when something is off
set -euo pipefail
# Its settings come from settings.env beside it: WG_IF, MTU, ADDRESS_V4, ADDRESS_V6, ROUTE_TABLE,
#  VM_LINK, LAPTOP_V4, LAPTOP_V6, ROLE, ROLE_DIR, ROLE_SCRIPT, TABLE, UNIT, SYSCTL_FILE.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=/dev/null
. "$HERE/settings.env"

# shellcheck source=status.sh
. "$HERE/status.sh"
# shellcheck source=role.sh
. "$HERE/role.sh"

# shellcheck source=policy-routing.sh
. "$HERE/policy-routing.sh"

# The laptop's packets (and only those) are routed by ROUTE_TABLE: the tunnel, then an
# unreachable default, so they never fall back to the VM's own uplink.
sync_policy_routing() {
	ip -4 route replace unreachable default metric 4294967295 table "$ROUTE_TABLE"
	ip -4 rule show pref "$ROUTE_TABLE" | grep -q . || ip -4 rule add pref "$ROUTE_TABLE" iif "$VM_LINK" from "$LAPTOP_V4" lookup "$ROUTE_TABLE"
	if [ -n "$LAPTOP_V6" ]; then
		ip -6 route replace unreachable default metric 4294967295 table "$ROUTE_TABLE"
		ip -6 rule show pref "$ROUTE_TABLE" | grep -q . || ip -6 rule add pref "$ROUTE_TABLE" iif "$VM_LINK" from "$LAPTOP_V6" lookup "$ROUTE_TABLE"
	fi
	forget_previous_table
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
	drop_previous_table
	drop_policy_routing
	remove_role_leftovers
}

[ "$(id -u)" = 0 ] || die "run as root"
case "${1:-}" in
install) install ;;
up) up ;;
down) down ;;
remove) remove ;;
status) status ;;
public-key) cat "$ROLE_DIR/public.key" ;;
*) die "usage: $0 install|up|down|remove|status|public-key" ;;
esac
