#!/bin/bash
# shellcheck source-path=SCRIPTDIR disable=SC2153 # the settings come from settings.env
# wgexit gateway role. Delivered with role.sh, status.sh and its settings.env; do not edit on
# the host.
#   install  install packages, make the key on this host, enable at boot, bring up
#   up       bring the tunnel, routes and firewall in line with the files (idempotent)
#   down     take the tunnel and firewall down, keep the files
#   remove   undo everything install did
#   status   tunnel, firewall, routes and each peer's last handshake; non-zero when something is off
set -euo pipefail
# Its settings come from settings.env beside it: WG_IF, LISTEN_PORT, MTU, ADDRESS_V4, ADDRESS_V6,
#  ROLE, ROLE_DIR, ROLE_SCRIPT, TABLE, ROUTE_PROTO, UNIT, SYSCTL_FILE, LEGACY_TAG.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=/dev/null
. "$HERE/settings.env"

# shellcheck source=status.sh
. "$HERE/status.sh"
# shellcheck source=role.sh
. "$HERE/role.sh"

with_prefix() {
	case $1 in
	*/*) echo "$1" ;;
	*:*) echo "$1/128" ;;
	*) echo "$1/32" ;;
	esac
}

# Routes for every peer's AllowedIPs, tagged with ROUTE_PROTO; stale ones are removed.
sync_routes() {
	local want have cidr
	want=$(wg show "$WG_IF" allowed-ips | cut -f2 | tr ' ' '\n' | grep '/' | sort -u || true)
	for cidr in $want; do
		ip route replace "$cidr" dev "$WG_IF" proto "$ROUTE_PROTO"
	done
	have=$({ ip -4 route show dev "$WG_IF" proto "$ROUTE_PROTO"; ip -6 route show dev "$WG_IF" proto "$ROUTE_PROTO"; } | cut -d' ' -f1)
	for cidr in $have; do
		cidr=$(with_prefix "$cidr")
		if ! grep -qxF "$cidr" <<<"$want"; then ip route delete "$cidr" dev "$WG_IF" proto "$ROUTE_PROTO"; fi
	done
}

local_net_elements() {
	local family=$1 set=$2 nets
	nets=$(ip "-$family" route show table main proto kernel | awk -v wg="$WG_IF" '$2 == "dev" && $3 != wg && $1 !~ /^fe80:/ {print $1}' | sort -u | paste -sd, -)
	if [ -n "$nets" ]; then echo "add element inet $TABLE $set { $nets }"; fi
}

gateway_table() {
	cat "$ROLE_DIR/ruleset.nft"
	local_net_elements 4 local_nets_v4
	local_net_elements 6 local_nets_v6
	cat "$ROLE_DIR/peers.nft"
}

# Images that filter with iptables (OCI ships REJECT in INPUT and FORWARD) would still
# reject what our table accepts, because every base chain must accept. Insert tagged
# ACCEPTs ahead of them, only where such a ruleset exists, and never touch their chains.
legacy_rules() {
	echo "INPUT -p udp --dport $LISTEN_PORT"
	echo "FORWARD -i $WG_IF"
	echo "FORWARD -o $WG_IF"
}

legacy_filters() {
	"$1" -w -S "$2" 2>/dev/null | grep -q -e '^-A ' -e '^-P [A-Z]* DROP'
}

open_legacy_firewall() {
	local tool rule
	for tool in iptables ip6tables; do
		command -v "$tool" >/dev/null 2>&1 || continue
		while read -r -a rule; do
			legacy_filters "$tool" "${rule[0]}" || continue
			"$tool" -w -C "${rule[@]}" -m comment --comment "$LEGACY_TAG" -j ACCEPT 2>/dev/null ||
				"$tool" -w -I "${rule[@]:0:1}" 1 "${rule[@]:1}" -m comment --comment "$LEGACY_TAG" -j ACCEPT
		done < <(legacy_rules)
	done
}

close_legacy_firewall() {
	local tool rule
	for tool in iptables ip6tables; do
		command -v "$tool" >/dev/null 2>&1 || continue
		while read -r -a rule; do
			while "$tool" -w -C "${rule[@]}" -m comment --comment "$LEGACY_TAG" -j ACCEPT 2>/dev/null; do
				"$tool" -w -D "${rule[@]}" -m comment --comment "$LEGACY_TAG" -j ACCEPT
			done
		done < <(legacy_rules)
	done
}

up() {
	enable_forwarding
	ensure_link
	ip link set dev "$WG_IF" mtu "$MTU"
	ip -4 address replace "$ADDRESS_V4" dev "$WG_IF"
	if [ -e /proc/sys/net/ipv6 ]; then ip -6 address replace "$ADDRESS_V6" dev "$WG_IF" nodad; fi
	touch "$ROLE_DIR/peers.nft"
	sync_wireguard "$ROLE_DIR/peers.conf" "ListenPort = $LISTEN_PORT"
	ip link set dev "$WG_IF" up
	sync_routes
	apply_table gateway_table
	open_legacy_firewall
}

down() {
	close_legacy_firewall
	drop_table
	delete_link "$WG_IF"
}

# Every peer's AllowedIPs has its route on the tunnel.
routes_complete() {
	local cidr family
	for cidr in $(wg show "$WG_IF" allowed-ips | cut -f2 | tr ' ' '
' | grep '/'); do
		case $cidr in *:*) family=6 ;; *) family=4 ;; esac
		ip "-$family" route show "$cidr" dev "$WG_IF" proto "$ROUTE_PROTO" | grep . >/dev/null || return 1
	done
}

status() {
	check "tunnel $WG_IF" link_exists "$WG_IF"
	check "firewall inet $TABLE" table_exists
	check "forwarding" test "$(sysctl -n net.ipv4.ip_forward)" = 1
	if link_exists "$WG_IF" >/dev/null 2>&1; then
		check "routes for every peer" routes_complete
		peer_status "$ROLE_DIR/peers.conf"
	fi
	return "$STATUS_BAD"
}

# A first install that fails halfway (the listen port taken, a module missing) is undone, so
# the host is as it was before; a later one leaves the running gateway as it is.
undo_first_install() {
	local code=$?
	[ "$code" = 0 ] && return 0
	log "the first install failed (exit $code); undoing what it did, so this host is as it was"
	remove
	exit "$code"
}

install() {
	install_packages wg:wireguard-tools nft:nftables
	if [ ! -e "$ROLE_DIR/ready" ]; then trap undo_first_install EXIT; fi
	ensure_key
	install_unit "wgexit gateway (WireGuard exit, NAT and firewall)"
	start_unit
	# Without systemd (or when already active) converge directly; up is idempotent.
	up
	touch "$ROLE_DIR/ready"
	trap - EXIT
	cat "$ROLE_DIR/public.key"
}

remove() {
	remove_unit
	down
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
