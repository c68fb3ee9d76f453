# shellcheck shell=bash
# Sourced by the roles that policy-route traffic into the tunnel (site, laptop VM); they set ROUTE_TABLE.
# Removes the policy routing of ROUTE_TABLE (rules at its preference, and the table).
drop_policy_routing() {
	local f
	for f in 4 6; do
		while ip "-$f" rule del pref "$ROUTE_TABLE" 2>/dev/null; do :; done
		# flush leaves unreachable routes behind (IPv6), so the kill switch goes by name.
		while ip "-$f" route del unreachable default table "$ROUTE_TABLE" 2>/dev/null; do :; done
		ip "-$f" route flush table "$ROUTE_TABLE" 2>/dev/null || true
	done
}
