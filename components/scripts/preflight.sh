#!/bin/bash
# Runs before a role's install delivers anything (the install command sends it on stdin, so
# nothing is written first): refuses names that belong to something else on this host.
#   preflight.sh ROLE_DIR WG_IF ROUTE_TABLE [BRIDGE...]   (ROUTE_TABLE "" for the gateway)
# A refusal exits 3 with the reason; the host is left exactly as it was.
set -euo pipefail
role_dir=$1 wg_if=$2 route_table=$3
shift 3

refuse() {
	printf 'wgexit: refused before any change: %s\n' "$*" >&2
	exit 3
}

# The tunnel link: free, or the WireGuard link this role made (its name is in ROLE_DIR/interface).
if ip link show dev "$wg_if" >/dev/null 2>&1; then
	if [ "$(cat "$role_dir/interface" 2>/dev/null || true)" != "$wg_if" ] || ! wg show "$wg_if" >/dev/null 2>&1; then
		refuse "a link named $wg_if already exists on this host and is not this role's WireGuard link; set another wgInterface"
	fi
fi

# The policy-routing table, and the rule priority of the same number: free, unless this role
# is installed already (its rules and routes are the ones there).
if [ -n "$route_table" ] && [ ! -e "$role_dir/interface" ]; then
	for family in 4 6; do
		if ip "-$family" rule show pref "$route_table" 2>/dev/null | grep -q .; then
			refuse "rule priority $route_table is already used on this host (ip -$family rule show pref $route_table); set another routeTable"
		fi
		if ip "-$family" route show table "$route_table" 2>/dev/null | grep -q .; then
			refuse "route table $route_table already has routes on this host (ip -$family route show table $route_table); set another routeTable"
		fi
	done
fi

# Guest bridges: free, or made by one of this site's libvirt networks.
for bridge in "$@"; do
	ip link show dev "$bridge" >/dev/null 2>&1 || continue
	if ! grep -qsF "<bridge name=\"$bridge\"" "$role_dir"/networks/*.applied; then
		refuse "a link named $bridge already exists on this host and is not a bridge of this site's networks; set another bridge"
	fi
done
