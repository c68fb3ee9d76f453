# shellcheck shell=bash
# Sourced by laptop.sh on Linux.
# --- platform driver: Linux (ip route, nftables, resolv.conf or resolvectl) ---
physical_gateway() {
	# The default route stays in place under 0/1 and 128/1, so it still names the uplink.
	ip -4 route show default | awk '{for (i = 1; i < NF; i++) {if ($i == "via") g = $(i + 1); if ($i == "dev") d = $(i + 1)}; if (g != "") {print g, d; exit}}'
}

resolve_v4() {
	case $1 in
	*[!0-9.]*) getent ahostsv4 "$1" | awk '{print $1; exit}' ;;
	*) echo "$1" ;;
	esac
}

route_set() {
	local family=$1 prefix=$2 via=$3 dev=${4:-}
	if [ -n "$dev" ]; then ip "-$family" route replace "$prefix" via "$via" dev "$dev"; else ip "-$family" route replace "$prefix" via "$via"; fi
}

route_unset() {
	ip "-$1" route del "$2" 2>/dev/null || true
}

route_present() {
	ip "-$1" route show "$2" | grep -q .
}

# While the network changes, the VM's WireGuard flows may be routed elsewhere (back to the VM);
# let through, such a packet would pin its flow to a connection-tracking entry without NAT,
# which keepalives keep alive forever. So they leave by the uplink or not at all, and, after
# NAT, never with the VM's own address. $2: the flows, "address:port" per line.
firewall_on() {
	local phys=$1 flow flows=""
	for flow in $2; do flows="${flows:+$flows, }${flow%:*} . ${flow##*:}"; done
	{
		echo "table inet $LAPTOP_TABLE {}"
		echo "delete table inet $LAPTOP_TABLE"
		cat <<NFT_EOF
table inet $LAPTOP_TABLE {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "$phys" udp sport 67 udp dport 68 accept comment "DHCP"
		iifname "$phys" ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept comment "DHCPv6"
		iifname "$phys" counter drop comment "nothing arrives on the physical uplink"
	}
	chain output {
		type filter hook output priority filter; policy accept;
		oifname "$phys" udp sport 68 udp dport 67 accept comment "DHCP"
		oifname "$phys" udp sport 546 udp dport 547 accept comment "DHCPv6"
		oifname "$phys" ip daddr . udp dport { $flows } accept comment "the VM's WireGuard flows, when the VM software NATs in user space"
		oifname "$phys" counter drop comment "kill switch: nothing of the laptop's own leaves the uplink"
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr $VM_V4 ip daddr . udp dport { $flows } oifname != "$phys" counter drop comment "the VM's WireGuard flows leave by the uplink or not at all"
		oifname "$phys" ip saddr $VM_V4 ip daddr . udp dport { $flows } accept comment "the VM's WireGuard flows"
		iifname "$phys" ip saddr . udp sport { $flows } ct state established accept comment "their replies"
		oifname "$phys" counter drop comment "kill switch: only the WireGuard flows leave the uplink"
		iifname "$phys" counter drop
	}
	chain postrouting {
		type filter hook postrouting priority srcnat + 1; policy accept;
		oifname "$phys" ip saddr $VM_V4 counter drop comment "after NAT: the VM's own address never leaves the uplink"
	}
}
NFT_EOF
	} >"$STATE_DIR/firewall.nft"
	nft -f "$STATE_DIR/firewall.nft"
}

firewall_off() {
	if nft list table inet "$LAPTOP_TABLE" >/dev/null 2>&1; then nft delete table inet "$LAPTOP_TABLE"; fi
}

firewall_present() {
	nft list table inet "$LAPTOP_TABLE" >/dev/null 2>&1
}

# With systemd-resolved, DNS is set on the link to the VM; otherwise resolv.conf is replaced
# (the original, file or symlink, is kept and put back).
vm_link() {
	ip -4 route get "$VM_V4" | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'
}

uses_resolved() {
	command -v resolvectl >/dev/null 2>&1 && resolvectl status >/dev/null 2>&1
}

OUR_RESOLV_CONF="# wgexit: through the tunnel"

# What the network itself gives is saved before ours replaces it, and saved again whenever the
# network has written its own since (a new DHCP lease after roaming), so 'down' gives back the
# current network's resolvers, not those of the network where the laptop was first set up.
dns_save() {
	uses_resolved && return 0
	if [ -L /etc/resolv.conf ] || [ "$(head -n 1 /etc/resolv.conf 2>/dev/null)" != "$OUR_RESOLV_CONF" ]; then
		rm -f "$STATE_DIR/resolv.conf.saved"
		cp -a /etc/resolv.conf "$STATE_DIR/resolv.conf.saved"
	fi
}

dns_set() {
	if uses_resolved; then
		resolvectl dns "$(vm_link)" "$RESOLVER"
		resolvectl domain "$(vm_link)" "~."
	else
		rm -f /etc/resolv.conf
		printf '%s\nnameserver %s\n' "$OUR_RESOLV_CONF" "$RESOLVER" >/etc/resolv.conf
	fi
}

dns_restore() {
	if uses_resolved; then
		resolvectl revert "$(vm_link)" 2>/dev/null || true
	elif [ -e "$STATE_DIR/resolv.conf.saved" ] || [ -L "$STATE_DIR/resolv.conf.saved" ]; then
		rm -f /etc/resolv.conf
		mv -f "$STATE_DIR/resolv.conf.saved" /etc/resolv.conf
	fi
}

dns_present() {
	if uses_resolved; then resolvectl dns "$(vm_link)" | grep -qF "$RESOLVER"; else grep -qx "nameserver $RESOLVER" /etc/resolv.conf; fi
}

# A WireGuard flow of the VM (address, port) starts afresh after the uplink changed (conntrack,
# where installed; the firewall already keeps a stale entry from forming in the gap).
forget_flow() {
	if command -v conntrack >/dev/null 2>&1; then
		conntrack -D -p udp -s "$VM_V4" -d "$1" --dport "$2" >/dev/null 2>&1 || true
	fi
}

ping_once() { ping -c 1 -W 2 "$1"; }

# NetworkManager runs dispatcher scripts when the network changes (Wi-Fi roaming).
watch_on() {
	if [ -d /etc/NetworkManager/dispatcher.d ]; then
		printf '#!/bin/sh\n# wgexit: keep the endpoint route on the current uplink\nexec %s reroute\n' "$ROLE_SCRIPT" >/etc/NetworkManager/dispatcher.d/90-wgexit-laptop
		chmod 755 /etc/NetworkManager/dispatcher.d/90-wgexit-laptop
	fi
}

watch_off() {
	rm -f /etc/NetworkManager/dispatcher.d/90-wgexit-laptop
}

