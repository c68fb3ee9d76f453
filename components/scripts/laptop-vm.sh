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
	sync_laptop_rule 4 "$LAPTOP_V4"
	if [ -n "$LAPTOP_V6" ]; then
		ip -6 route replace unreachable default metric 4294967295 table "$ROUTE_TABLE"
		sync_laptop_rule 6 "$LAPTOP_V6"
	else
		while ip -6 rule del pref "$ROUTE_TABLE" 2>/dev/null; do :; done
	fi
	forget_previous_table
}

# sync_laptop_rule FAMILY ADDRESS: the one rule at ROUTE_TABLE's priority, for the laptop's
# address on VM_LINK. One left there by an earlier vmLink or laptop address goes, after the
# current one is in place.
sync_laptop_rule() {
	local f=$1 from=$2 have_from have_link
	ip "-$f" rule show pref "$ROUTE_TABLE" iif "$VM_LINK" from "$from" | grep -q . ||
		ip "-$f" rule add pref "$ROUTE_TABLE" iif "$VM_LINK" from "$from" lookup "$ROUTE_TABLE"
	ip "-$f" rule show pref "$ROUTE_TABLE" | sed -n 's/^[0-9]*:[[:space:]]*from \([^ ]*\) iif \([^ ]*\) .*/\1 \2/p' |
		while read -r have_from have_link; do
			[ "$have_from $have_link" = "$from $VM_LINK" ] || ip "-$f" rule del pref "$ROUTE_TABLE" iif "$have_link" from "$have_from"
		done
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
