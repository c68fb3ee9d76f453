#!/bin/bash
# wgexit gateway role. Rendered by components/cloudGateway.render.ts; do not edit on the host.
#   install  install packages, make the key on this host, enable at boot, bring up
#   up       bring the tunnel, routes and firewall in line with the files (idempotent)
#   down     take the tunnel and firewall down, keep the files
#   remove   undo everything install did
#   status   tunnel, firewall, routes and each peer's last handshake; non-zero when something is off
set -euo pipefail
WG_IF='wg0'
LISTEN_PORT='51820'
MTU='1420'
ADDRESS_V4='10.66.0.1/24'
ADDRESS_V6='fd66:66:66::1/64'
ROLE='wgexit-gateway'
ROLE_DIR='/etc/wgexit/gateway'
ROLE_SCRIPT='/etc/wgexit/gateway/gateway.sh'
TABLE='wgexit_gateway'
ROUTE_PROTO='77'
UNIT='wgexit-gateway.service'
SYSCTL_FILE='/etc/sysctl.d/60-wgexit-gateway.conf'
LEGACY_TAG='wgexit-gateway'

log() { printf '%s: %s\n' "$ROLE" "$*" >&2; }
die() { log "$*"; exit 1; }
has_systemd() { [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

# Arguments are "command:package" pairs; packages whose command is missing are installed.
install_packages() {
	local pair missing=()
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		log "installing ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get update -q
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	fi
}

ensure_key() {
	if [ ! -s "$ROLE_DIR/private.key" ]; then
		(umask 077 && wg genkey >"$ROLE_DIR/private.key.new")
		mv -f "$ROLE_DIR/private.key.new" "$ROLE_DIR/private.key"
	fi
	chmod 600 "$ROLE_DIR/private.key"
	wg pubkey <"$ROLE_DIR/private.key" >"$ROLE_DIR/public.key"
	chmod 644 "$ROLE_DIR/public.key"
}

# The interface whose default route leads to the internet.
uplink() {
	ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'
}

# Forwarding on. IPv6 forwarding makes the kernel ignore router advertisements, so an
# uplink that relies on them (accept_ra=1) keeps them with accept_ra=2; hosts whose network
# daemon handles RAs itself (accept_ra=0) are left alone. Prior values are saved once and
# restored by remove.
enable_forwarding() {
	local up key i
	local -a keys=(net.ipv4.ip_forward) wanted=(1)
	if [ -e /proc/sys/net/ipv6 ]; then
		keys+=(net.ipv6.conf.all.forwarding)
		wanted+=(1)
		up=$(uplink)
		if [ -n "$up" ] && [ "$(cat "/proc/sys/net/ipv6/conf/$up/accept_ra" 2>/dev/null)" = 1 ]; then
			keys+=("net.ipv6.conf.$up.accept_ra")
			wanted+=(2)
		fi
	fi
	if [ ! -e "$ROLE_DIR/sysctl.saved" ]; then
		for key in "${keys[@]}"; do printf '%s = %s\n' "$key" "$(sysctl -n "$key")"; done >"$ROLE_DIR/sysctl.saved.new"
		mv -f "$ROLE_DIR/sysctl.saved.new" "$ROLE_DIR/sysctl.saved"
	fi
	{
		echo "# $ROLE: route tunnel traffic"
		for i in "${!keys[@]}"; do echo "${keys[$i]} = ${wanted[$i]}"; done
	} >"$SYSCTL_FILE"
	sysctl -q -p "$SYSCTL_FILE" >/dev/null
}

restore_sysctl() {
	local key _eq value
	[ -e "$ROLE_DIR/sysctl.saved" ] || return 0
	while read -r key _eq value; do
		if [ -e "/proc/sys/${key//.//}" ]; then sysctl -q -w "$key=$value" >/dev/null; fi
	done <"$ROLE_DIR/sysctl.saved"
}

ensure_link() {
	local previous
	previous=$(cat "$ROLE_DIR/interface" 2>/dev/null || true)
	if [ -n "$previous" ] && [ "$previous" != "$WG_IF" ]; then delete_link "$previous"; fi
	echo "$WG_IF" >"$ROLE_DIR/interface"
	ip link show dev "$WG_IF" >/dev/null 2>&1 && return 0
	if ! ip link add dev "$WG_IF" type wireguard 2>/dev/null; then
		command -v wireguard-go >/dev/null 2>&1 || die "no WireGuard kernel module and no wireguard-go"
		log "no WireGuard kernel module; using wireguard-go"
		WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go "$WG_IF"
	fi
}

delete_link() {
	local name=$1 i
	ip link delete dev "$name" 2>/dev/null || true
	# wireguard-go exits a moment after its link goes; wait so the name can be reused.
	for i in $(seq 1 50); do
		[ -e "/var/run/wireguard/$name.sock" ] || return 0
		[ "$i" = 50 ] || sleep 0.1
	done
	log "wireguard-go for $name did not exit"
}

# Feeds the private key and the [Peer] sections in PEERS_FILE to the interface through a
# pipe; the key is never written anywhere else. Extra [Interface] lines come as arguments.
sync_wireguard() {
	local peers_file=$1 line
	shift
	touch "$peers_file"
	{
		printf '[Interface]\nPrivateKey = %s\n' "$(cat "$ROLE_DIR/private.key")"
		for line in "$@"; do printf '%s\n' "$line"; done
		echo
		cat "$peers_file"
	} | wg syncconf "$WG_IF" /dev/stdin
}

# Replaces the role's table in one nft transaction, only when its content changed.
# The arguments are a command that prints the table and its elements.
apply_table() {
	local next="$ROLE_DIR/applied.nft.new"
	{
		echo "table inet $TABLE {}"
		echo "delete table inet $TABLE"
		"$@"
	} >"$next"
	if nft list table inet "$TABLE" >/dev/null 2>&1 && cmp -s "$next" "$ROLE_DIR/applied.nft"; then
		rm -f "$next"
		return 0
	fi
	nft -f "$next"
	mv -f "$next" "$ROLE_DIR/applied.nft"
}

drop_table() {
	if nft list table inet "$TABLE" >/dev/null 2>&1; then nft delete table inet "$TABLE"; fi
	rm -f "$ROLE_DIR/applied.nft"
}

# --- status: lines the status command reads ------------------------------------------
STATUS_BAD=0

# check WHAT COMMAND...: runs COMMAND quietly and reports whether it succeeded.
check() {
	local what=$1
	shift
	if "$@" >/dev/null 2>&1; then
		echo "check $what ok"
	else
		echo "check $what FAIL"
		STATUS_BAD=1
	fi
}

# One line per WireGuard peer of WG_IF; names come from the "# name" line above each
# [Peer] in the given file.
peer_status() {
	local conf=$1 now key latest rx tx name age
	now=$(date +%s)
	while IFS=$'	' read -r key _ _ _ latest rx tx _; do
		name=$(awk -v k="$key" '/^# / {n = $2} $1 == "PublicKey" && $3 == k {print n; exit}' "$conf")
		if [ "$latest" = 0 ]; then age=never; else age=$((now - latest)); fi
		echo "peer ${name:-$key} handshake=$age rx=$rx tx=$tx"
	done < <(wg show "$WG_IF" dump | tail -n +2)
}

link_exists() { ip link show dev "$1"; }
table_exists() { nft list table inet "$TABLE"; }

# Without systemd (the lab, some containers) the caller runs "up" itself.
install_unit() {
	local description=$1 after=${2:-}
	has_systemd || return 0
	cat >"/etc/systemd/system/$UNIT" <<UNIT_EOF
[Unit]
Description=$description
Wants=network-online.target
After=network-online.target nftables.service netfilter-persistent.service$after

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$ROLE_SCRIPT up
ExecStop=$ROLE_SCRIPT down

[Install]
WantedBy=multi-user.target
UNIT_EOF
	systemctl daemon-reload
	systemctl enable "$UNIT" >/dev/null 2>&1
}

start_unit() {
	if has_systemd; then
		systemctl is-active --quiet "$UNIT" || systemctl start "$UNIT"
	fi
}

remove_unit() {
	if has_systemd && [ -e "/etc/systemd/system/$UNIT" ]; then
		systemctl disable --now "$UNIT" >/dev/null 2>&1 || true
		rm -f "/etc/systemd/system/$UNIT"
		systemctl daemon-reload
	fi
}

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

install() {
	install_packages wg:wireguard-tools nft:nftables
	ensure_key
	install_unit "wgexit gateway (WireGuard exit, NAT and firewall)"
	start_unit
	# Without systemd (or when already active) converge directly; up is idempotent.
	up
	touch "$ROLE_DIR/ready"
	cat "$ROLE_DIR/public.key"
}

remove() {
	remove_unit
	down
	local previous
	previous=$(cat "$ROLE_DIR/interface" 2>/dev/null || true)
	if [ -n "$previous" ]; then delete_link "$previous"; fi
	restore_sysctl
	rm -f "$SYSCTL_FILE"
	rm -rf "$ROLE_DIR"
	rmdir /etc/wgexit 2>/dev/null || true
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
