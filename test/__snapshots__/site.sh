#!/bin/bash
# wgexit KVM site role. Rendered by components/kvmSite.render.ts; do not edit on the host.
#   install               install packages, make the key on this host, enable at boot, bring up
#   up                    kill switch, firewall, then the tunnel (idempotent)
#   down                  take the tunnel down; the kill switch and firewall stay
#   remove                undo everything install did
#   status                tunnel, kill switch, firewall, networks, the gateway's last handshake
#   network-up NAME       define and start the libvirt network from networks/NAME.xml
#   network-remove NAME
#   guest-up NAME         overlay disk, NoCloud seed, static lease, define, start, autostart
#   guest-remove NAME
set -euo pipefail
WG_IF='wgexit0'
MTU='1420'
ADDRESS_V4='10.66.0.2/32'
ADDRESS_V6='fd66:66:66::2/128'
ROUTE_TABLE='7700'
BRIDGES='virbr-wg virbr-lab'
POOL_NAME='wgexit'
POOL_DIR='/var/lib/libvirt/images/wgexit'
ROLE='wgexit-site'
ROLE_DIR='/etc/wgexit/site'
ROLE_SCRIPT='/etc/wgexit/site/site.sh'
TABLE='wgexit_site'
UNIT='wgexit-site.service'
SYSCTL_FILE='/etc/sysctl.d/60-wgexit-site.conf'

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

need_virsh() {
	command -v virsh >/dev/null 2>&1 || die "virsh not found: install libvirt first (Debian/Ubuntu: apt install libvirt-daemon-system qemu-system-x86)"
	virsh -q uri >/dev/null 2>&1 || die "libvirtd is not answering (virsh uri failed); start it (systemctl start libvirtd)"
}

# Guest traffic is policy-routed: one rule per guest bridge sends it to ROUTE_TABLE, whose
# default route is the tunnel. The unreachable default behind it is the kill switch: with
# the tunnel gone, guest packets are refused instead of falling through to the main table.
# The host's own traffic never matches these rules.
sync_policy_routing() {
	local f bridge have
	for f in 4 6; do
		ip "-$f" route replace unreachable default metric 4294967295 table "$ROUTE_TABLE"
		for bridge in $BRIDGES; do
			ip "-$f" rule show pref "$ROUTE_TABLE" iif "$bridge" | grep -q . ||
				ip "-$f" rule add pref "$ROUTE_TABLE" iif "$bridge" lookup "$ROUTE_TABLE"
		done
		# Bridges no longer in the settings lose their rule.
		for have in $(ip "-$f" rule show pref "$ROUTE_TABLE" | sed -n 's/.* iif \([^ ]*\) .*/\1/p'); do
			case " $BRIDGES " in *" $have "*) ;; *) ip "-$f" rule del pref "$ROUTE_TABLE" iif "$have" ;; esac
		done
	done
}

site_table() { cat "$ROLE_DIR/ruleset.nft"; }

up() {
	enable_forwarding
	# Kill switch and firewall first: if the tunnel cannot come up, guests are already sealed.
	sync_policy_routing
	apply_table site_table
	ensure_link
	ip link set dev "$WG_IF" mtu "$MTU"
	ip -4 address replace "$ADDRESS_V4" dev "$WG_IF"
	if [ -e /proc/sys/net/ipv6 ]; then ip -6 address replace "$ADDRESS_V6" dev "$WG_IF" nodad; fi
	sync_wireguard "$ROLE_DIR/peer.conf"
	ip link set dev "$WG_IF" up
	# Replies from the internet arrive on the tunnel while the main table points elsewhere:
	# strict reverse-path filtering would drop them, loose mode keeps spoof checks.
	sysctl -q -w "net.ipv4.conf.$WG_IF.rp_filter=2" >/dev/null
	ip -4 route replace default dev "$WG_IF" table "$ROUTE_TABLE"
	if [ -e /proc/sys/net/ipv6 ]; then ip -6 route replace default dev "$WG_IF" table "$ROUTE_TABLE"; fi
}

down() {
	delete_link "$WG_IF"
}

kill_switch_complete() {
	local f bridge
	for f in 4 6; do
		ip "-$f" route show table "$ROUTE_TABLE" | grep '^unreachable default' >/dev/null || return 1
		for bridge in $BRIDGES; do ip "-$f" rule show pref "$ROUTE_TABLE" iif "$bridge" | grep . >/dev/null || return 1; done
	done
}

tunnel_routed() { ip -4 route show table "$ROUTE_TABLE" | grep "^default dev $WG_IF" >/dev/null; }

networks_active() {
	local file
	for file in "$ROLE_DIR"/networks/*.xml; do
		[ -e "$file" ] || continue
		virsh -q net-info "$(basename "$file" .xml)" | grep '^Active:.*yes' >/dev/null || return 1
	done
}

status() {
	check "tunnel $WG_IF" link_exists "$WG_IF"
	check "guest traffic routed into the tunnel" tunnel_routed
	check "kill switch (rules and unreachable routes)" kill_switch_complete
	check "firewall inet $TABLE" table_exists
	check "libvirt networks active" networks_active
	if link_exists "$WG_IF" >/dev/null 2>&1; then peer_status "$ROLE_DIR/peer.conf"; fi
	return "$STATUS_BAD"
}

install() {
	install_packages wg:wireguard-tools nft:nftables qemu-img:qemu-utils genisoimage:genisoimage
	ensure_key
	mkdir -p "$ROLE_DIR/networks" "$ROLE_DIR/guests"
	install_unit "wgexit KVM site (tunnel, guest policy routing, kill switch)" "
Before=libvirtd.service virtqemud.service virtnetworkd.service libvirt-guests.service"
	start_unit
	up
	cat "$ROLE_DIR/public.key"
}

remove() {
	local dir file
	# Guests and networks this role still holds go first, so remove leaves nothing even
	# when it runs before their own delete steps.
	for dir in "$ROLE_DIR"/guests/*/; do
		if [ -e "$dir/guest.env" ]; then guest_remove "$(basename "$dir")"; fi
	done
	for file in "$ROLE_DIR"/networks/*.xml; do
		if [ -e "$file" ]; then network_remove "$(basename "$file" .xml)"; fi
	done
	remove_unit
	drop_table
	drop_policy_routing
	local previous
	previous=$(cat "$ROLE_DIR/interface" 2>/dev/null || true)
	delete_link "${previous:-$WG_IF}"
	remove_pool
	restore_sysctl
	rm -f "$SYSCTL_FILE"
	rm -rf "$ROLE_DIR"
	rmdir /etc/wgexit 2>/dev/null || true
}

# --- libvirt networks ---------------------------------------------------------------

network_up() {
	local name=$1 xml="$ROLE_DIR/networks/$1.xml"
	need_virsh
	[ -e "$xml" ] || die "no $xml"
	if virsh -q net-info "$name" >/dev/null 2>&1 && ! cmp -s "$xml" "$ROLE_DIR/networks/$name.applied"; then
		log "network $name changed: restarting it; running guests on it need a restart to reattach"
		virsh -q net-destroy "$name" >/dev/null 2>&1 || true
		virsh -q net-undefine "$name" >/dev/null
	fi
	if ! virsh -q net-info "$name" >/dev/null 2>&1; then
		virsh -q net-define "$xml" >/dev/null
	fi
	# grep reads all of virsh's output: with pipefail, grep -q could make the pipeline fail on SIGPIPE.
	if ! virsh -q net-info "$name" | grep '^Active: *yes' >/dev/null; then virsh -q net-start "$name" >/dev/null; fi
	virsh -q net-autostart "$name" >/dev/null
	cp -f "$xml" "$ROLE_DIR/networks/$name.applied"
}

network_remove() {
	local name=$1
	if command -v virsh >/dev/null 2>&1 && virsh -q net-info "$name" >/dev/null 2>&1; then
		virsh -q net-destroy "$name" >/dev/null 2>&1 || true
		virsh -q net-undefine "$name" >/dev/null
	fi
	# libvirt leaves the network's runtime directory behind, empty.
	rmdir "/run/libvirt/network/$name/ports" "/run/libvirt/network/$name" 2>/dev/null || true
	rm -f "$ROLE_DIR/networks/$name.xml" "$ROLE_DIR/networks/$name.applied"
}

# --- guests ---------------------------------------------------------------------------

ensure_pool() {
	if ! virsh -q pool-info "$POOL_NAME" >/dev/null 2>&1; then
		[ -d "$POOL_DIR" ] || touch "$ROLE_DIR/pool-dir.created"
		virsh -q pool-define-as "$POOL_NAME" dir --target "$POOL_DIR" >/dev/null
		virsh -q pool-build "$POOL_NAME" >/dev/null
	fi
	virsh -q pool-info "$POOL_NAME" | grep '^State: *running' >/dev/null || virsh -q pool-start "$POOL_NAME" >/dev/null
	virsh -q pool-autostart "$POOL_NAME" >/dev/null
}

remove_pool() {
	command -v virsh >/dev/null 2>&1 || return 0
	virsh -q pool-info "$POOL_NAME" >/dev/null 2>&1 || return 0
	if find "$POOL_DIR" -mindepth 1 -name '*.qcow2' -not -name 'base-*' | grep -q .; then
		log "pool $POOL_NAME still holds guest disks; leaving it"
		return 0
	fi
	rm -f "$POOL_DIR"/base-*
	virsh -q pool-destroy "$POOL_NAME" >/dev/null 2>&1 || true
	virsh -q pool-undefine "$POOL_NAME" >/dev/null
	if [ -e "$ROLE_DIR/pool-dir.created" ]; then rmdir "$POOL_DIR" 2>/dev/null || true; fi
}

# The base image is fetched or copied once into the pool; guests get copy-on-write overlays.
# The engine runs independent steps at once (as Pulumi does), so guests of one site take turns
# on what they share: the pool, and each base image (one downloads it, the others wait).
lock() {
	exec {LOCK_FD}>"$ROLE_DIR/$1.lock"
	flock "$LOCK_FD"
}
unlock() { exec {LOCK_FD}>&-; }

ensure_base() {
	local source=$1 base=$2
	[ -s "$base" ] && return 0
	case $source in
	http://* | https://*) curl -fsSL --retry 3 -o "$base.part" "$source" ;;
	*) [ -r "$source" ] || die "image $source not found on this host"; cp --reflink=auto "$source" "$base.part" ;;
	esac
	mv -f "$base.part" "$base"
}

image_format() {
	qemu-img info --output=json "$1" | sed -n 's/^ *"format": "\([a-z0-9]*\)".*/\1/p' | head -n 1
}

build_seed() {
	local dir=$1 seed=$2 work
	work=$(mktemp -d)
	cp "$dir/user-data" "$dir/meta-data" "$work/"
	genisoimage -quiet -output "$seed.new" -volid cidata -joliet -rock "$work/user-data" "$work/meta-data"
	rm -rf "$work"
	mv -f "$seed.new" "$seed"
}

# The guest's static DHCP lease lives in the running network and its definition.
set_lease() {
	local network=$1 mac=$2 ip=$3 name=$4
	clear_lease "$network" "$mac"
	virsh -q net-update "$network" add-last ip-dhcp-host "<host mac='$mac' name='$name' ip='$ip'/>" --live --config >/dev/null
}

clear_lease() {
	local network=$1 mac=$2
	virsh -q net-info "$network" >/dev/null 2>&1 || return 0
	if virsh -q net-dumpxml --inactive "$network" | grep "mac='$mac'" >/dev/null; then
		virsh -q net-update "$network" delete ip-dhcp-host "<host mac='$mac'/>" --live --config >/dev/null 2>&1 ||
			virsh -q net-update "$network" delete ip-dhcp-host "<host mac='$mac'/>" --config >/dev/null
	fi
}

guest_up() {
	local name=$1 dir="$ROLE_DIR/guests/$1"
	need_virsh
	[ -e "$dir/guest.env" ] || die "no $dir/guest.env"
	local IMAGE NETWORK MAC ADDRESS DISK_GB BASE
	# shellcheck source=/dev/null
	. "$dir/guest.env"
	lock pool
	ensure_pool
	unlock
	local base="$POOL_DIR/base-$BASE" disk="$POOL_DIR/$name.qcow2" seed="$POOL_DIR/$name-seed.iso"
	lock "base-$BASE"
	ensure_base "$IMAGE" "$base"
	if [ ! -e "$disk" ]; then
		qemu-img create -q -f qcow2 -F "$(image_format "$base")" -b "$base" "$disk" "${DISK_GB}G"
	fi
	unlock
	if [ ! -e "$seed" ] || ! cmp -s "$dir/user-data" "$dir/seed.user-data" || ! cmp -s "$dir/meta-data" "$dir/seed.meta-data"; then
		build_seed "$dir" "$seed"
		cp -f "$dir/user-data" "$dir/seed.user-data"
		cp -f "$dir/meta-data" "$dir/seed.meta-data"
	fi
	virsh -q pool-refresh "$POOL_NAME" >/dev/null
	set_lease "$NETWORK" "$MAC" "$ADDRESS" "$name"
	virsh -q define "$dir/domain.xml" >/dev/null
	if ! virsh -q domstate "$name" | grep '^running' >/dev/null; then
		virsh -q start "$name" >/dev/null
	elif [ -e "$dir/domain.applied" ] && ! cmp -s "$dir/domain.xml" "$dir/domain.applied"; then
		log "guest $name: new definition saved; it takes effect at the guest's next boot (virsh reboot $name)"
	fi
	cp -f "$dir/domain.xml" "$dir/domain.applied"
	virsh -q autostart "$name" >/dev/null
}

guest_remove() {
	local name=$1 dir="$ROLE_DIR/guests/$1"
	local IMAGE NETWORK MAC ADDRESS DISK_GB BASE
	[ -e "$dir/guest.env" ] || return 0
	# shellcheck source=/dev/null
	. "$dir/guest.env"
	if command -v virsh >/dev/null 2>&1; then
		if virsh -q dominfo "$name" >/dev/null 2>&1; then
			virsh -q destroy "$name" >/dev/null 2>&1 || true
			virsh -q undefine "$name" --nvram >/dev/null 2>&1 || virsh -q undefine "$name" >/dev/null
		fi
		clear_lease "$NETWORK" "$MAC"
	fi
	lock "base-$BASE"
	rm -f "$POOL_DIR/$name.qcow2" "$POOL_DIR/$name-seed.iso" "/var/log/libvirt/qemu/$name-console.log"
	rm -rf "$dir"
	# The base goes with the last guest that uses it.
	if ! grep -qs "^BASE='$BASE'\$" "$ROLE_DIR"/guests/*/guest.env; then rm -f "$POOL_DIR/base-$BASE"; fi
	unlock
	if command -v virsh >/dev/null 2>&1 && virsh -q pool-info "$POOL_NAME" >/dev/null 2>&1; then virsh -q pool-refresh "$POOL_NAME" >/dev/null; fi
}

[ "$(id -u)" = 0 ] || die "run as root"
case "${1:-}" in
install) install ;;
up) up ;;
down) down ;;
remove) remove ;;
status) status ;;
public-key) cat "$ROLE_DIR/public.key" ;;
network-up) network_up "${2:?network name}" ;;
network-remove) network_remove "${2:?network name}" ;;
guest-up) guest_up "${2:?guest name}" ;;
guest-remove) guest_remove "${2:?guest name}" ;;
*) die "usage: $0 install|up|down|remove|status|public-key|network-up NAME|network-remove NAME|guest-up NAME|guest-remove NAME" ;;
esac
