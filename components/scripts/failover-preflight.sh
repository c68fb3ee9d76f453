#!/bin/bash
# shellcheck disable=SC2153 # the settings are assigned in front of this script
# Runs before a failover step delivers anything (sent on stdin, like preflight.sh):
# the policy-routing tables and rule priorities that send replies back by the tunnel their
# connection came in on must be free, or this host's own. Its settings, assigned in front of it:
#   ROLE_DIR       the role's directory (its failover.env names the tables it holds)
#   REPLY_TABLES   the tables, one per tunnel; each number is also its rules' priority
# A refusal exits 3 with the reason; the host is left exactly as it was.
set -euo pipefail

refuse() {
	printf 'wgexit: refused before any change: %s\n' "$*" >&2
	exit 3
}

ours=$(sed -n "s/^REPLY_TABLES='\([0-9 ]*\)'\$/\1/p" "$ROLE_DIR/failover.env" 2>/dev/null || true)
for table in $REPLY_TABLES; do
	case " $ours " in *" $table "*) continue ;; esac
	for family in 4 6; do
		if ip "-$family" rule show pref "$table" 2>/dev/null | grep -q .; then
			refuse "rule priority $table is already used on this host (ip -$family rule show pref $table); the failover needs the priorities just below routeTable: set another routeTable"
		fi
		if ip "-$family" route show table "$table" 2>/dev/null | grep -q .; then
			refuse "route table $table already has routes on this host (ip -$family route show table $table); the failover needs the tables just below routeTable: set another routeTable"
		fi
	done
done
