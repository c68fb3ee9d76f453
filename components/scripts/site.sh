#!/bin/bash
# shellcheck source-path=SCRIPTDIR disable=SC2153 # the settings come from settings.env
# wgexit KVM site role. Delivered with role.sh, status.sh, policy-routing.sh and its settings.env;
# do not edit on the host.
#   install               install packages, make the key on this host, enable at boot, bring up
#   up                    kill switch, firewall, then the tunnel (idempotent)
#   down                  take the tunnel down; the kill switch and firewall stay
#   seal                  the kill switch and firewall alone (libvirt runs this before it starts)
#   remove                undo everything install did
#   status                tunnel, kill switch, firewall, networks, the gateway's last handshake
#   network-up NAME       define and start the libvirt network from networks/NAME.xml
#   network-remove NAME
#   guest-up NAME         overlay disk, NoCloud seed, static lease, define, start, autostart
#   guest-remove NAME
set -euo pipefail
# Its settings come from settings.env beside it: WG_IF, MTU, ADDRESS_V4, ADDRESS_V6, ROUTE_TABLE,
#  BRIDGES, POOL_NAME, POOL_DIR, ROLE, ROLE_DIR, ROLE_SCRIPT, TABLE, UNIT, SYSCTL_FILE.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=/dev/null
. "$HERE/settings.env"

# shellcheck source=status.sh
. "$HERE/status.sh"
# shellcheck source=role.sh
. "$HERE/role.sh"

# shellcheck source=policy-routing.sh
. "$HERE/policy-routing.sh"

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
	forget_previous_table
}

site_table() { cat "$ROLE_DIR/ruleset.nft"; }

# The kill switch and the firewall: all that guests need to be sealed, with or without a tunnel.
seal() {
	sync_policy_routing
	apply_table site_table
}

# After a reboot libvirt may start networks and guests before the site's unit has run (socket
# activation, a unit that failed). The libvirt daemons that start networks run seal first; if
# it fails, they do not start: the guests stay off rather than reach the uplink.
LIBVIRT_UNITS="libvirtd.service virtnetworkd.service"
boot_seal_file() { echo "/etc/systemd/system/$1.d/50-$ROLE.conf"; }

install_boot_seal() {
	local unit file
	[ -d /etc/systemd/system ] || return 0
	for unit in $LIBVIRT_UNITS; do
		file=$(boot_seal_file "$unit")
		mkdir -p "${file%/*}"
		cat >"$file" <<SEAL_EOF
# $ROLE: the guests' kill switch is in the kernel before libvirt starts a network or a guest.
[Service]
ExecStartPre=$ROLE_SCRIPT seal
SEAL_EOF
	done
	if has_systemd; then systemctl daemon-reload; fi
}

remove_boot_seal() {
	local unit file
	for unit in $LIBVIRT_UNITS; do
		file=$(boot_seal_file "$unit")
		rm -f "$file"
		rmdir "${file%/*}" 2>/dev/null || true
	done
	if has_systemd; then systemctl daemon-reload; fi
}

boot_seal_installed() {
	local unit
	[ -d /etc/systemd/system ] || return 0
	for unit in $LIBVIRT_UNITS; do grep -qx "ExecStartPre=$ROLE_SCRIPT seal" "$(boot_seal_file "$unit")" || return 1; done
}

up() {
	enable_forwarding
	# Kill switch and firewall first: if the tunnel cannot come up, guests are already sealed.
	seal
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
	check "kill switch loaded before libvirt at boot" boot_seal_installed
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
	install_boot_seal
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
	remove_boot_seal
	remove_unit
	drop_table
	drop_previous_table
	drop_policy_routing
	remove_pool
	remove_role_leftovers
}

# --- libvirt networks ---------------------------------------------------------------

network_up() {
	local name=$1 xml="$ROLE_DIR/networks/$1.xml"
	need_virsh
	[ -e "$xml" ] || die "no $xml"
	# A network of that name that this site never applied is someone else's (libvirt's own
	# "default", another tool's): refuse, and take back the file this step just delivered.
	if virsh -q net-info "$name" >/dev/null 2>&1 && [ ! -e "$ROLE_DIR/networks/$name.applied" ]; then
		rm -f "$xml"
		die "refused before any change: a libvirt network named $name already exists and was not made by this site; give the network another name"
	fi
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

# The pool is this site's when it made it (pool.created). Sites installed before that marker
# existed had guests in it; such a pool, on this site's poolDir, is taken as its own.
pool_is_ours() {
	[ -e "$ROLE_DIR/pool.created" ] && return 0
	virsh -q pool-dumpxml "$POOL_NAME" | grep -F "<path>$POOL_DIR</path>" >/dev/null || return 1
	find "$ROLE_DIR/guests" -name domain.applied | grep . >/dev/null || return 1
	touch "$ROLE_DIR/pool.created"
}

ensure_pool() {
	if ! virsh -q pool-info "$POOL_NAME" >/dev/null 2>&1; then
		[ -d "$POOL_DIR" ] || touch "$ROLE_DIR/pool-dir.created"
		virsh -q pool-define-as "$POOL_NAME" dir --target "$POOL_DIR" >/dev/null
		touch "$ROLE_DIR/pool.created"
		virsh -q pool-build "$POOL_NAME" >/dev/null
	elif ! pool_is_ours; then
		die "refused: a libvirt storage pool named $POOL_NAME already exists and was not made by this site; remove or rename it (virsh pool-dumpxml $POOL_NAME shows what it is)"
	fi
	virsh -q pool-info "$POOL_NAME" | grep '^State: *running' >/dev/null || virsh -q pool-start "$POOL_NAME" >/dev/null
	virsh -q pool-autostart "$POOL_NAME" >/dev/null
}

remove_pool() {
	command -v virsh >/dev/null 2>&1 || return 0
	virsh -q pool-info "$POOL_NAME" >/dev/null 2>&1 || return 0
	pool_is_ours || return 0
	if find "$POOL_DIR" -mindepth 1 -name '*.qcow2' -not -name 'base-*' | grep -q .; then
		log "pool $POOL_NAME still holds guest disks; leaving it"
		return 0
	fi
	rm -f "$POOL_DIR"/base-*
	virsh -q pool-destroy "$POOL_NAME" >/dev/null 2>&1 || true
	virsh -q pool-undefine "$POOL_NAME" >/dev/null
	if [ -e "$ROLE_DIR/pool-dir.created" ]; then rmdir "$POOL_DIR" 2>/dev/null || true; fi
	rm -f "$ROLE_DIR/pool.created" "$ROLE_DIR/pool-dir.created"
}

# The base image is fetched or copied once into the pool; guests get copy-on-write overlays.
# The engine runs independent steps at once (as Pulumi does), so guests of one site take turns
# on what they share: the pool, and each base image (one downloads it, the others wait).
lock() {
	exec {LOCK_FD}>"$ROLE_DIR/$1.lock"
	flock "$LOCK_FD"
}
unlock() {
	if [ -n "${LOCK_FD:-}" ]; then exec {LOCK_FD}>&-; fi
	LOCK_FD=""
}

# The base enters the pool only whole and, when the config gives its SHA-256, only when it matches.
ensure_base() {
	local source=$1 sha256=$2 base=$3 got
	[ -s "$base" ] && return 0
	case $source in
	http://* | https://*) curl -fsSL --retry 3 -o "$base.part" "$source" ;;
	*) [ -r "$source" ] || die "image $source not found on this host"; cp --reflink=auto "$source" "$base.part" ;;
	esac
	if [ -n "$sha256" ]; then
		got=$(sha256sum "$base.part" | cut -d' ' -f1)
		if [ "$got" != "$sha256" ]; then
			rm -f "$base.part"
			die "image $source has SHA-256 $got, not the $sha256 the config gives (imageSha256); nothing was added to the pool"
		fi
	fi
	mv -f "$base.part" "$base"
}

# -U: a running guest holds its overlay locked; reading its header is safe.
image_info() { qemu-img info -U --output=json "$1"; }
image_format() { image_info "$1" | sed -n 's/^ *"format": "\([a-z0-9]*\)".*/\1/p' | head -n 1; }
backing_file() { image_info "$1" | sed -n 's/^ *"backing-filename": "\(.*\)",*$/\1/p' | head -n 1; }

# A base goes when no overlay in the pool is backed by it any more. Asking the overlays (not
# the guests' settings) also frees bases named the way an earlier version named them.
remove_unused_bases() {
	local base disk used
	for base in "$POOL_DIR"/base-*; do
		case $base in *.part | *"base-*") continue ;; esac
		lock "$(basename "$base")"
		used=""
		for disk in "$POOL_DIR"/*.qcow2; do
			case $(basename "$disk") in base-*) continue ;; esac
			if [ -e "$disk" ] && [ "$(backing_file "$disk")" = "$base" ]; then used=1 && break; fi
		done
		if [ -z "$used" ]; then rm -f "$base"; fi
		unlock
	done
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

undo_new_guest() {
	local code=$?
	[ "$code" = 0 ] && return 0
	unlock
	guest_remove "$1"
	log "guest $1: its step failed, so what it had made is removed"
	exit "$code"
}

guest_up() {
	local name=$1 dir="$ROLE_DIR/guests/$1"
	need_virsh
	[ -e "$dir/guest.env" ] || die "no $dir/guest.env"
	local IMAGE IMAGE_SHA256 NETWORK MAC ADDRESS DISK_GB BASE
	# shellcheck source=/dev/null
	. "$dir/guest.env"
	local base="$POOL_DIR/base-$BASE" disk="$POOL_DIR/$name.qcow2" seed="$POOL_DIR/$name-seed.iso"
	# A new guest whose step fails leaves nothing behind (its delete step never runs: it was
	# never created); an existing one keeps what it had. A new guest never adopts a disk.
	if ! virsh -q dominfo "$name" >/dev/null 2>&1; then
		if [ -e "$disk" ]; then
			rm -rf "$dir"
			die "refused: $disk already exists and belongs to no guest of this site; move it away or name the guest differently"
		fi
		# shellcheck disable=SC2064 # the name is expanded now, on purpose
		trap "undo_new_guest $name" EXIT
	fi
	lock pool
	ensure_pool
	unlock
	# A guest that has its disk keeps it, whatever base it was made from.
	if [ ! -e "$disk" ]; then
		lock "base-$BASE"
		ensure_base "$IMAGE" "$IMAGE_SHA256" "$base"
		qemu-img create -q -f qcow2 -F "$(image_format "$base")" -b "$base" "$disk" "${DISK_GB}G"
		unlock
	fi
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
	trap - EXIT
}

guest_remove() {
	local name=$1 dir="$ROLE_DIR/guests/$1"
	local IMAGE IMAGE_SHA256 NETWORK MAC ADDRESS DISK_GB BASE
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
	rm -f "$POOL_DIR/$name.qcow2" "$POOL_DIR/$name-seed.iso" "/var/log/libvirt/qemu/$name-console.log"
	rm -rf "$dir"
	remove_unused_bases
	if command -v virsh >/dev/null 2>&1 && virsh -q pool-info "$POOL_NAME" >/dev/null 2>&1; then virsh -q pool-refresh "$POOL_NAME" >/dev/null; fi
}

[ "$(id -u)" = 0 ] || die "run as root"
case "${1:-}" in
install) install ;;
up) up ;;
seal) seal ;;
down) down ;;
remove) remove ;;
status) status ;;
public-key) cat "$ROLE_DIR/public.key" ;;
network-up) network_up "${2:?network name}" ;;
network-remove) network_remove "${2:?network name}" ;;
guest-up) guest_up "${2:?guest name}" ;;
guest-remove) guest_remove "${2:?guest name}" ;;
*) die "usage: $0 install|up|seal|down|remove|status|public-key|network-up NAME|network-remove NAME|guest-up NAME|guest-remove NAME" ;;
esac
