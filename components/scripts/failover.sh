#!/bin/bash
# shellcheck source-path=SCRIPTDIR disable=SC2153 # the settings come from settings.env and failover.env
# wgexit with more than one gateway, on a KVM site or a laptop's VM. Delivered beside the role's
# script (site.sh or vm.sh, which holds the tunnel to the first gateway) with failover.env, and
# per other gateway tunnels/IF/settings.env and tunnels/IF/peer.conf; do not edit on the host.
#   up       bring up the tunnels to the other gateways
#   watch    the health check, round after round (the role's -failover service runs it)
#   check    one round: probe every gateway, move the traffic if the one carrying it failed
#   status   which gateway carries the traffic and since when; each tunnel's handshake
#   remove   stop the watch, remove the other tunnels; the traffic goes back to the first
# The traffic (TRAFFIC: a site's guests, a laptop's) leaves by one tunnel at a time: the
# default route of ROUTE_TABLE, the table the role policy-routes it to (from INGRESS). A gateway
# is down after FAIL_AFTER probes in a row go unanswered (a ping to its tunnel address through
# its own tunnel, 1 s each); traffic then moves to the first gateway, in order, whose last probe
# was answered. It goes back to a preferred gateway once that one has answered every probe for
# FAILBACK_AFTER seconds. With no gateway answering, the route is removed and the kill switch
# behind it (the role's unreachable default) refuses the traffic: it never falls through to the
# host's own uplink.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=/dev/null
. "$HERE/settings.env"
# shellcheck source=/dev/null
. "$HERE/failover.env"
# shellcheck source=status.sh
. "$HERE/status.sh"
# shellcheck source=role.sh
. "$HERE/role.sh"
# ROLE (settings.env) is the role beside it: wgexit-site, wgexit-laptop-vm.
ROLE=$ROLE-failover

read -r -a tunnels <<<"$TUNNELS"
read -r -a gateways <<<"$GATEWAYS"
read -r -a probes <<<"$PROBES"
read -r -a reply_tables <<<"$REPLY_TABLES"
read -r -a reply_marks <<<"$REPLY_MARKS"
STATE_DIR=$ROLE_DIR/failover
ACTIVE_FILE=$STATE_DIR/active
SWITCH_LOG=$STATE_DIR/switches.log
# What changes every round lives in /run (tmpfs), not on the host's disk.
RUN_DIR=/run/$ROLE
PID_FILE=$RUN_DIR/watch.pid

# The other gateways' links, made as role.sh makes the first (role.sh is not changed for this:
# it is delivered to every host, and a changed file would update every existing stack).
make_link() {
	local name=$1
	ip link show dev "$name" >/dev/null 2>&1 && return 0
	if ! ip link add dev "$name" type wireguard 2>/dev/null; then
		command -v wireguard-go >/dev/null 2>&1 || die "no WireGuard kernel module and no wireguard-go"
		WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go "$name"
	fi
}

# role.sh's sync_wireguard, for another link than the first (bash scoping: it sees this WG_IF).
sync_tunnel() {
	local WG_IF=$1
	sync_wireguard "$2"
}

tunnel_up() {
	local name=$1 dir=$HERE/tunnels/$1 ADDRESS_V4 ADDRESS_V6 MTU
	# shellcheck source=/dev/null
	. "$dir/settings.env"
	echo "$name" >"$dir/interface"
	make_link "$name"
	ip link set dev "$name" mtu "$MTU"
	ip -4 address replace "$ADDRESS_V4" dev "$name"
	if [ -e /proc/sys/net/ipv6 ]; then ip -6 address replace "$ADDRESS_V6" dev "$name" nodad; fi
	sync_tunnel "$name" "$dir/peer.conf"
	ip link set dev "$name" up
	sysctl -q -w "net.ipv4.conf.$name.rp_filter=2" >/dev/null
}

# Tunnels of gateways no longer in the settings go, with their directories.
prune_tunnels() {
	local dir name
	for dir in "$HERE"/tunnels/*/; do
		[ -d "$dir" ] || continue
		name=$(basename "$dir")
		case " $TUNNELS " in *" $name "*) continue ;; esac
		if [ "$(route_dev)" = "$name" ]; then route_via ""; fi
		if [ "$(cat "$dir/interface" 2>/dev/null || true)" = "$name" ]; then delete_link "$name"; fi
		rm -rf "$dir"
	done
}

# Replies leave by the tunnel their connection came in on (a peer behind the second gateway
# reaching a guest while guest traffic uses the first): the failover's nftables table marks each
# connection by the tunnel it came in from, and per tunnel a rule sends the marked replies
# (from INGRESS) to a table of its own, whose unreachable default keeps them off the uplink.
sync_reply_routing() {
	local i f table link have
	mkdir -p "$STATE_DIR"
	for i in "${!tunnels[@]}"; do
		table=${reply_tables[$i]}
		for f in 4 6; do
			[ "$f" = 6 ] && [ ! -e /proc/sys/net/ipv6 ] && continue
			ip "-$f" route replace unreachable default metric 4294967295 table "$table"
			if ip link show dev "${tunnels[$i]}" >/dev/null 2>&1; then ip "-$f" route replace default dev "${tunnels[$i]}" table "$table"; fi
			for link in $INGRESS; do
				ip "-$f" rule show pref "$table" iif "$link" | grep -q . ||
					ip "-$f" rule add pref "$table" iif "$link" fwmark "${reply_marks[$i]}" lookup "$table"
			done
			for have in $(ip "-$f" rule show pref "$table" | sed -n 's/.* iif \([^ ]*\) .*/\1/p'); do
				case " $INGRESS " in *" $have "*) ;; *) ip "-$f" rule del pref "$table" iif "$have" ;; esac
			done
		done
	done
	{
		echo "table inet $FAILOVER_TABLE {}"
		echo "delete table inet $FAILOVER_TABLE"
		cat "$HERE/failover.nft"
	} | nft -f -
	# Tables of a gateway no longer in the settings (their number moved) go.
	for table in $(cat "$STATE_DIR/reply.tables" 2>/dev/null || true); do
		case " $REPLY_TABLES " in *" $table "*) ;; *) drop_reply_table "$table" ;; esac
	done
	echo "$REPLY_TABLES" >"$STATE_DIR/reply.tables"
}

drop_reply_table() {
	local f
	for f in 4 6; do
		[ "$f" = 6 ] && [ ! -e /proc/sys/net/ipv6 ] && continue
		while ip "-$f" rule del pref "$1" 2>/dev/null; do :; done
		# flush leaves unreachable routes behind (IPv6), as policy-routing.sh knows.
		while ip "-$f" route del unreachable default table "$1" 2>/dev/null; do :; done
		ip "-$f" route flush table "$1" 2>/dev/null || true
	done
}

drop_reply_routing() {
	local table
	if nft list table inet "$FAILOVER_TABLE" >/dev/null 2>&1; then nft delete table inet "$FAILOVER_TABLE"; fi
	for table in "${reply_tables[@]}" $(cat "$STATE_DIR/reply.tables" 2>/dev/null || true); do drop_reply_table "$table"; done
}

up() {
	local name
	mkdir -p "$STATE_DIR"
	prune_tunnels
	for name in "${tunnels[@]:1}"; do tunnel_up "$name"; done
	sync_reply_routing
}

# The tunnel the traffic leaves by now ("" when the kill switch holds it).
route_dev() { ip -4 route show table "$ROUTE_TABLE" | sed -n 's/^default dev \([^ ]*\).*/\1/p'; }

# Points the traffic at one tunnel, or (with "") at none: the unreachable default remains.
route_via() {
	local target=$1 current f
	current=$(route_dev)
	for f in 4 6; do
		[ "$f" = 6 ] && [ ! -e /proc/sys/net/ipv6 ] && continue
		if [ -n "$target" ]; then
			ip "-$f" route replace default dev "$target" table "$ROUTE_TABLE"
		elif [ -n "$current" ]; then
			ip "-$f" route del default dev "$current" table "$ROUTE_TABLE" 2>/dev/null || true
		fi
	done
}

gateway_of() {
	local i
	for i in "${!tunnels[@]}"; do [ "${tunnels[$i]}" = "$1" ] && echo "${gateways[$i]}"; done
	return 0
}

note_switch() {
	local to=$1 why=$2 line
	if [ -n "$to" ]; then line="$TRAFFIC now leaves by gateway $(gateway_of "$to") ($to): $why"; else line="no gateway answers: $TRAFFIC refused (kill switch): $why"; fi
	printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$line" >>"$SWITCH_LOG"
	printf '%s %s\n' "${to:--}" "$(date +%s)" >"$ACTIVE_FILE"
	logger -t "$ROLE" "$line" 2>/dev/null || true
	log "$line"
}

probe() { ping -n -q -c 1 -W 1 -I "$1" "$2" >/dev/null 2>&1; }

# Probes every gateway at once, so a round takes at most one second whatever their number; sets
# the caller's answered[i] to 1 or 0 per tunnel.
probe_all() {
	local i
	local -a pids
	for i in "${!tunnels[@]}"; do
		probe "${tunnels[$i]}" "${probes[$i]}" &
		pids[i]=$!
	done
	for i in "${!tunnels[@]}"; do
		if wait "${pids[$i]}"; then answered[i]=1; else answered[i]=0; fi
	done
}

# Per tunnel, RUN_DIR/IF.health holds "misses answered-since" (answered-since: the start, in ms,
# of the first round of the current run of answers; 0: missed last). Milliseconds, not seconds:
# whole seconds let the hold end up to a second early.
probe_round() {
	local now i name active best="" why="" active_ok=0
	local -a answered misses since
	now=$(date +%s%3N)
	mkdir -p "$STATE_DIR" "$RUN_DIR"
	probe_all
	for i in "${!tunnels[@]}"; do
		# No record yet (the watch has just started: a boot, a restart, a new gateway): no misses.
		# A gateway is left only after FAIL_AFTER misses of its own, at the start as at any other
		# time; one first probe lost while the first handshake is made moves no traffic.
		read -r "misses[i]" "since[i]" 2>/dev/null <"$RUN_DIR/${tunnels[$i]}.health" || { misses[i]=0 since[i]=0; }
		if [ "${answered[$i]}" = 1 ]; then
			misses[i]=0
			[ "${since[$i]}" != 0 ] || since[i]=$now
		else
			misses[i]=$((misses[i] + 1))
			since[i]=0
		fi
		echo "${misses[$i]} ${since[$i]}" >"$RUN_DIR/${tunnels[$i]}.health"
		# A link made again (the role's up re-creates the first) lost its reply route with it.
		if [ "${answered[$i]}" = 1 ] && ! ip -4 route show table "${reply_tables[$i]}" | grep -q '^default dev'; then sync_reply_routing; fi
	done
	active=$(route_dev)
	for i in "${!tunnels[@]}"; do
		if [ "${tunnels[$i]}" = "$active" ] && [ "${misses[$i]}" -lt "$FAIL_AFTER" ]; then active_ok=1; fi
	done
	for i in "${!tunnels[@]}"; do
		name=${tunnels[$i]}
		if [ "$active_ok" = 1 ]; then
			# Only a preferred gateway that has answered for FAILBACK_AFTER seconds takes over.
			[ "$name" = "$active" ] && best=$name && break
			if [ "${since[$i]}" != 0 ] && [ $((now - since[i])) -ge $((FAILBACK_AFTER * 1000)) ]; then
				best=$name why="gateway ${gateways[$i]} has answered for $(((now - since[i]) / 1000)) s"
				break
			fi
		elif [ "${answered[$i]}" = 1 ]; then
			best=$name
			break
		fi
	done
	[ "$best" = "$active" ] && return 0
	[ -n "$why" ] || why=${active:+gateway $(gateway_of "$active") missed $FAIL_AFTER probes}
	route_via "$best"
	note_switch "$best" "${why:-no gateway carried $TRAFFIC}"
}

# WireGuard retries a lost handshake only after 5 s (REKEY_TIMEOUT), and a tunnel that came up
# before its gateway knew this host (a first apply) loses its first. Before the first counted
# round, probes that do not count, for at most WARM_UP seconds, until every gateway has answered
# once: that wait must not move the traffic (and back after the hold).
WARM_UP=6
warm_up() {
	local deadline
	local -a answered
	deadline=$(($(date +%s) + WARM_UP))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		probe_all
		case " ${answered[*]} " in *" 0 "*) ;; *) return 0 ;; esac
		# A probe can fail at once (a link not up yet): no busy loop.
		sleep 0.5
	done
}

# A round starts every PROBE_INTERVAL seconds (a round's own second of probing counts towards
# it), so a gateway that stops answering is left after about FAIL_AFTER intervals.
watch() {
	local started elapsed
	mkdir -p "$STATE_DIR" "$RUN_DIR"
	echo $$ >"$PID_FILE"
	warm_up
	while :; do
		started=$(date +%s%N)
		probe_round || log "health check round failed; next round in $PROBE_INTERVAL s"
		elapsed=$((($(date +%s%N) - started) / 1000000))
		if [ "$elapsed" -lt $((PROBE_INTERVAL * 1000)) ]; then sleep "$(printf '%d.%03d' $(((PROBE_INTERVAL * 1000 - elapsed) / 1000)) $(((PROBE_INTERVAL * 1000 - elapsed) % 1000)))"; fi
	done
}

watch_running() { [ -s "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

install_watch() {
	if has_systemd; then
		cat >"/etc/systemd/system/$FAILOVER_UNIT" <<UNIT_EOF
[Unit]
Description=$ROLE: move $TRAFFIC to a gateway that answers
After=$UNIT
Requires=$UNIT

[Service]
ExecStartPre=$HERE/failover.sh up
ExecStart=$HERE/failover.sh watch
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT_EOF
		systemctl daemon-reload
		systemctl enable "$FAILOVER_UNIT" >/dev/null 2>&1
		systemctl restart "$FAILOVER_UNIT"
	else
		log "no systemd: start '$HERE/failover.sh watch' yourself (the lab does)"
	fi
}

remove() {
	local dir name
	if has_systemd && [ -e "/etc/systemd/system/$FAILOVER_UNIT" ]; then
		systemctl disable --now "$FAILOVER_UNIT" >/dev/null 2>&1 || true
		rm -f "/etc/systemd/system/$FAILOVER_UNIT"
		systemctl daemon-reload
	fi
	if watch_running; then
		kill "$(cat "$PID_FILE")" || true
		# Gone before its files are: a round in flight would write them again.
		for _ in $(seq 1 20); do watch_running || break; sleep 0.1; done
	fi
	# The traffic back on the first gateway's tunnel, as the role alone would have it.
	if ip link show dev "$WG_IF" >/dev/null 2>&1; then route_via "$WG_IF"; else route_via ""; fi
	drop_reply_routing
	for dir in "$HERE"/tunnels/*/; do
		[ -d "$dir" ] || continue
		name=$(basename "$dir")
		if [ "$(cat "$dir/interface" 2>/dev/null || true)" = "$name" ]; then delete_link "$name"; fi
	done
	rm -rf "$HERE/tunnels" "$STATE_DIR" "$RUN_DIR" "$HERE/failover.env" "$HERE/failover.nft" "$HERE/failover.sh"
}

# The role's status (site.sh's "routed into the tunnel" meaning any of the tunnels here), then:
#   carrier <gateway> via <link> since <seconds ago|install>   (or "carrier none": the kill switch holds)
#   peer <gateway> handshake=... rx=... tx=...                 (for each further gateway)
#   switch <time> <what>                                       (the last five switches)
status() {
	local i name now active since role
	now=$(date +%s)
	role=$("$ROLE_SCRIPT" status 2>&1 | grep -v '^check guest traffic routed into the tunnel ' || true)
	[ -z "$role" ] || echo "$role"
	if grep -q '^check .* FAIL$' <<<"$role"; then STATUS_BAD=1; fi
	active=$(route_dev)
	check "$TRAFFIC routed into a tunnel" test -n "$active"
	check "failover watch running" watch_running
	for name in "${tunnels[@]:1}"; do check "tunnel $name" link_exists "$name"; done
	since=$(awk '{print $2}' "$ACTIVE_FILE" 2>/dev/null || true)
	if [ -n "$active" ]; then
		echo "carrier $(gateway_of "$active") via $active since ${since:+$((now - since))}${since:-install}"
	else
		echo "carrier none"
	fi
	for i in "${!tunnels[@]}"; do
		[ "$i" = 0 ] && continue
		name=${tunnels[$i]}
		link_exists "$name" >/dev/null 2>&1 || continue
		wg show "$name" dump | tail -n +2 | while IFS=$'\t' read -r _ _ _ _ latest rx tx _; do
			if [ "$latest" = 0 ]; then latest=never; else latest=$((now - latest)); fi
			echo "peer ${gateways[$i]} handshake=$latest rx=$rx tx=$tx"
		done
	done
	tail -n 5 "$SWITCH_LOG" 2>/dev/null | sed 's/^/switch /' || true
	return "$STATUS_BAD"
}

case "${1:-}" in
install)
	up
	install_watch
	;;
up) up ;;
watch) watch ;;
check) probe_round ;;
status) status ;;
remove) remove ;;
*)
	echo "usage: $0 install|up|watch|check|status|remove" >&2
	exit 2
	;;
esac
