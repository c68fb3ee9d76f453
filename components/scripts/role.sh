# shellcheck shell=bash
# Functions shared by the host roles (gateway, site, laptop VM): key, link, forwarding, one
# nftables table, boot unit, status lines. The role script sets ROLE, ROLE_DIR, ROLE_SCRIPT,
# WG_IF, TABLE, UNIT and SYSCTL_FILE (its settings.env), then sources this file.
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

# The end of every role's remove, after its own undo: its link (by the name it was made
# under), the sysctls as they were before, and its files.
remove_role_leftovers() {
	delete_link "$(cat "$ROLE_DIR/interface" 2>/dev/null || echo "$WG_IF")"
	restore_sysctl
	rm -f "$SYSCTL_FILE"
	rm -rf "$ROLE_DIR"
	rmdir /etc/wgexit 2>/dev/null || true
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


# One line per WireGuard peer of WG_IF; names come from the "# name" line above each
# [Peer] in the given file.
peer_status() {
	local conf=$1 now key latest rx tx name age
	now=$(date +%s)
	while IFS=$'\t' read -r key _ _ _ latest rx tx _; do
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
