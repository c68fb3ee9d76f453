# shellcheck shell=bash
# Sourced by the roles that policy-route traffic into the tunnel (site, laptop VM); they set ROUTE_TABLE.
# Removes the policy routing of a table (ROUTE_TABLE unless one is named): the rules at its
# preference, and the table.
drop_policy_routing() {
	local table=${1:-$ROUTE_TABLE} f
	for f in 4 6; do
		while ip "-$f" rule del pref "$table" 2>/dev/null; do :; done
		# flush leaves unreachable routes behind (IPv6), so the kill switch goes by name.
		while ip "-$f" route del unreachable default table "$table" 2>/dev/null; do :; done
		ip "-$f" route flush table "$table" 2>/dev/null || true
	done
}

# The table the role's rules and routes are in is written down (ROLE_DIR/route-table), so that
# after a change of ROUTE_TABLE the previous table's are taken away: nothing of it stays behind,
# not even after remove. Called once the new table's rules and kill switch are in place, so
# guest traffic meets one or the other at every instant, never the main table.
forget_previous_table() {
	drop_previous_table
	echo "$ROUTE_TABLE" >"$ROLE_DIR/route-table"
}

drop_previous_table() {
	local previous
	previous=$(cat "$ROLE_DIR/route-table" 2>/dev/null || true)
	if [ -n "$previous" ] && [ "$previous" != "$ROUTE_TABLE" ]; then drop_policy_routing "$previous"; fi
}
