#!/bin/bash
# shellcheck disable=SC2153 # the settings are assigned in front of this script
# Runs before a step delivers anything (the step's command sends it on stdin, so nothing is
# written first): refuses names that belong to something else on this host, and a step that
# would cut the operator's SSH session. Its settings, assigned in front of it:
#   ROLE_DIR      the role's directory
#   WG_IF         its WireGuard link
#   ROUTE_TABLE   its policy-routing table ("" for none)
#   BRIDGES       a site's guest bridges, space-separated
#   SSH_PORT, SSH_FROM   the port and the prefixes the role's new firewall accepts SSH on/from
#                 ("" when this step leaves SSH alone)
#   ROUTED, ROUTED_WHAT  prefixes this step routes away from the host's uplink, and what they are
#   OPERATOR      sshd's SSH_CONNECTION for the session running this step ("" without SSH)
# A refusal exits 3 with the reason; the host is left exactly as it was.
set -euo pipefail

refuse() {
	printf 'wgexit: refused before any change: %s\n' "$*" >&2
	exit 3
}

# The tunnel link: free, or the WireGuard link this role made (its name is in ROLE_DIR/interface).
if ip link show dev "$WG_IF" >/dev/null 2>&1; then
	if [ "$(cat "$ROLE_DIR/interface" 2>/dev/null || true)" != "$WG_IF" ] || ! wg show "$WG_IF" >/dev/null 2>&1; then
		refuse "a link named $WG_IF already exists on this host and is not this role's WireGuard link; set another wgInterface"
	fi
fi

# The policy-routing table, and the rule priority of the same number: free, unless this role
# is installed with it already (its rules and routes are the ones there).
installed_table=$(sed -n "s/^ROUTE_TABLE='\([0-9]*\)'\$/\1/p" "$ROLE_DIR/settings.env" 2>/dev/null || true)
if [ -n "$ROUTE_TABLE" ] && { [ ! -e "$ROLE_DIR/interface" ] || [ "$ROUTE_TABLE" != "$installed_table" ]; }; then
	for family in 4 6; do
		if ip "-$family" rule show pref "$ROUTE_TABLE" 2>/dev/null | grep -q .; then
			refuse "rule priority $ROUTE_TABLE is already used on this host (ip -$family rule show pref $ROUTE_TABLE); set another routeTable"
		fi
		if ip "-$family" route show table "$ROUTE_TABLE" 2>/dev/null | grep -q .; then
			refuse "route table $ROUTE_TABLE already has routes on this host (ip -$family route show table $ROUTE_TABLE); set another routeTable"
		fi
	done
fi

# Guest bridges: free, or made by one of this site's libvirt networks.
for bridge in $BRIDGES; do
	ip link show dev "$bridge" >/dev/null 2>&1 || continue
	if ! grep -qsF "<bridge name=\"$bridge\"" "$ROLE_DIR"/networks/*.applied; then
		refuse "a link named $bridge already exists on this host and is not a bridge of this site's networks; set another bridge"
	fi
done

# first_containing ADDRESS PREFIX...: prints the first prefix that contains ADDRESS. The kernel's
# own route lookup decides, in a private network namespace that vanishes with this command, so
# nothing on the host changes.
first_containing() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	unshare --net bash -c '
		address=$1; shift
		ip link set lo up
		for prefix in "$@"; do
			ip route add "$prefix" dev lo
			case $(ip route get "$address" 2>/dev/null) in local*) ;; *" dev lo "*) echo "$prefix"; exit 0 ;; esac
			ip route del "$prefix" dev lo
		done
		exit 1' bash "$@"
}

# The operator's session: its next connection is still accepted, and its replies still leave
# the way they came (not into the tunnel, not onto a guest bridge).
if [ -n "${OPERATOR:-}" ] && { [ -n "$SSH_FROM" ] || [ -n "$ROUTED" ]; }; then
	# Without a private network namespace (unshare missing, or a container that forbids it) the
	# check cannot be made; a step that would change SSH or routes is refused rather than risked.
	unshare --net true 2>/dev/null || refuse "cannot check that this step keeps your SSH session: 'unshare --net' does not work on this host (util-linux missing, or a container without CAP_SYS_ADMIN)"
	read -r client _ _ server_port <<<"$OPERATOR"
	client=${client#::ffff:}
	if [ -n "$SSH_FROM" ]; then
		if [ "$server_port" != "$SSH_PORT" ]; then
			refuse "your SSH session arrives on port $server_port of this host, but the new firewall opens SSH on port $SSH_PORT only; set the connection's port to the port sshd listens on here ($server_port), or connect on $SSH_PORT"
		fi
		# shellcheck disable=SC2086 # a list of prefixes
		first_containing "$client" $SSH_FROM >/dev/null ||
			refuse "your SSH session comes from $client, which adminCidrs ($SSH_FROM) does not contain: the new firewall would refuse your next connection; add $client (or its network) to adminCidrs"
	fi
	# shellcheck disable=SC2086 # a list of prefixes
	if [ -n "$ROUTED" ] && prefix=$(first_containing "$client" $ROUTED); then
		refuse "your SSH session comes from $client, inside $prefix ($ROUTED_WHAT), which this step routes away from the host's uplink: the replies to your session would be lost; remove that prefix or manage this host from another address"
	fi
fi
