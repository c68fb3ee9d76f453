#!/bin/bash
# The set-up behind ./demo and ./run-tests, for a Debian or Ubuntu machine. It installs only
# what is missing, one line per item saying what and why, and says so when nothing was:
#   - Debian packages, by group (dpkg-query decides what is missing);
#   - the lab's QEMU guest kernel, unpacked (not installed) by lab/fetch-guest-kernel.sh;
#   - Node 22 from the npm registry into /opt/node22, when the node on PATH is older
#     (/opt/node22/bin then goes first on PATH);
#   - the project's node_modules (npm ci), when missing or older than package-lock.json.
# It needs root; without it, it prints the command to run instead and exits 2.
#
# ./demo and ./run-tests source this file and call wgexit_setup, so the PATH it sets stays
# theirs. Run on its own: sudo ops/setup.sh
# WGEXIT_NODE_PREFIX (default /opt/node22) and WGEXIT_LAB_KERNEL_DIR (default
# /var/cache/wgexit-lab/kernel, as the lab reads it) move what it installs.

# name|why|packages: what the lab and the tests run, as today's CI installs it.
wgexit_package_groups() {
	cat <<'EOF'
lab world|network namespaces as hosts, each with its own sshd, WireGuard, nftables and iptables, DHCP|iproute2 iptables nftables wireguard-tools wireguard-go openssh-server openssh-client dnsmasq-base
lab probes|the checks' HTTP, DNS and ping probes, packet captures, the lab's echo server, iperf3 and perf for the benchmark|curl ca-certificates iputils-ping tcpdump python3 iperf3 linux-perf
KVM site|a real libvirtd (virsh) and a QEMU guest under software emulation, its disks, NoCloud seed and busybox initramfs|libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils genisoimage busybox-static kmod xz-utils
real-tool checks|the tests run the real tools on what the program renders: shellcheck, cloud-init's schema, virt-xml-validate (xmllint), QR decoding|shellcheck cloud-init libxml2-utils zbar-tools
EOF
}

wgexit_say() { printf '[setup] %s\n' "$*" >&2; }

wgexit_join() {
	local out="" x
	for x in "$@"; do out+="${out:+, }$x"; done
	echo "$out"
}

# The packages among the arguments that dpkg does not have installed.
wgexit_missing_packages() {
	local p missing=()
	for p in "$@"; do
		[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
	done
	echo "${missing[*]}"
}

# The major version of a node binary, 0 when there is none.
wgexit_node_major() {
	local v
	v=$("$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || v=0
	echo "${v:-0}"
}

wgexit_kernel_unpacked() {
	compgen -G "${WGEXIT_LAB_KERNEL_DIR:-/var/cache/wgexit-lab/kernel}/lib/modules/*/modules.dep" >/dev/null
}

# What the lab falls back to when the unpacked kernel is missing (lab/guests.ts).
wgexit_boot_kernel() {
	local k
	for k in /boot/vmlinuz-*; do
		[ -e "/lib/modules/${k#/boot/vmlinuz-}/modules.dep" ] && return 0
	done
	return 1
}

# wgexit_setup <the command as the user typed it> [its arguments]
wgexit_setup() {
	local command_line installed=() have=() apt_updated="" name why pkgs missing
	command_line=$(printf '%q ' "$@")
	command_line=${command_line% }
	if [ "$(uname -s)" != Linux ]; then
		wgexit_say "the lab and the tests need Linux (network namespaces); this is $(uname -s). To deploy for real, see Quickstart in README.md (pulumi up)."
		return 2
	fi
	if [ "$(id -u)" -ne 0 ]; then
		wgexit_say "needs root: run \`sudo $command_line\` (it installs Debian packages, and the lab builds network namespaces)"
		return 2
	fi
	if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
		wgexit_say "needs Debian or Ubuntu (apt-get and dpkg-query); on another system install the packages listed in ops/setup.sh by hand"
		return 1
	fi
	cd "$(dirname "${BASH_SOURCE[0]}")/.." || return 1
	export DEBIAN_FRONTEND=noninteractive
	# Root's tools (ip, nft, sshd, depmod) live in the sbin directories, which a root shell from
	# plain `su` leaves off PATH.
	case ":$PATH:" in
	*:/usr/sbin:*) ;;
	*) export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;;
	esac

	local node_prefix=${WGEXIT_NODE_PREFIX:-/opt/node22} system_major prefix_major
	system_major=$(wgexit_node_major node)
	prefix_major=$(wgexit_node_major "$node_prefix/bin/node")

	# 1. Debian packages, by group.
	local groups to_install=()
	groups=$(wgexit_package_groups)
	if [ "$system_major" -lt 22 ] && [ "$prefix_major" -lt 22 ] && ! command -v npm >/dev/null; then
		groups+=$'\n'"Node.js from Debian|only its npm, to fetch Node 22 from the npm registry|nodejs npm"
	fi
	while IFS='|' read -r name why pkgs; do
		# shellcheck disable=SC2086 # pkgs is a list of package names
		missing=$(wgexit_missing_packages $pkgs)
		if [ -n "$missing" ]; then
			wgexit_say "installing $name packages ($why): $missing"
			# shellcheck disable=SC2206 # package names, split on spaces
			to_install+=($missing)
		fi
	done <<<"$groups"
	if [ ${#to_install[@]} -gt 0 ]; then
		(
			# Installing packages must not start their services (libvirtd, sshd, dnsmasq) on this
			# machine: a policy-rc.d says no while apt runs, and goes if this run made it.
			if [ ! -e /usr/sbin/policy-rc.d ]; then
				printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
				chmod 755 /usr/sbin/policy-rc.d
				trap 'rm -f /usr/sbin/policy-rc.d' EXIT
				trap 'exit 130' INT TERM
			fi
			apt-get update -qq && apt-get install -y -qq --no-install-recommends "${to_install[@]}"
		) >&2 || return 1
		apt_updated=yes
		installed+=("Debian packages (${to_install[*]})")
	else
		have+=("Debian packages")
	fi

	# 2. The QEMU guest's kernel, unpacked once.
	if wgexit_kernel_unpacked; then
		have+=("guest kernel")
	else
		wgexit_say "unpacking a stock Debian cloud kernel for the lab's QEMU guest (lab/fetch-guest-kernel.sh; nothing under /boot changes)"
		[ -n "$apt_updated" ] || apt-get update -qq >&2 || return 1
		if lab/fetch-guest-kernel.sh >&2; then
			installed+=("guest kernel")
		elif wgexit_boot_kernel; then
			wgexit_say "could not unpack a Debian cloud kernel (above): the lab's QEMU guest will boot this machine's kernel from /boot"
		else
			wgexit_say "could not unpack the guest kernel (above), and /boot has none with modules"
			return 1
		fi
	fi

	# 3. Node 22 or newer.
	if [ "$system_major" -ge 22 ]; then
		have+=("Node $(node --version)")
	else
		if [ "$prefix_major" -lt 22 ]; then
			wgexit_say "installing Node 22 from the npm registry into $node_prefix (this machine's node is $(node --version 2>/dev/null || echo missing); the project needs 22 or newer)"
			npm install -g --no-audit --no-fund --prefix "$node_prefix" node@22 >&2 || return 1
			installed+=("Node 22 in $node_prefix")
		else
			have+=("Node $("$node_prefix/bin/node" --version) in $node_prefix (this machine's is $(node --version 2>/dev/null || echo missing))")
		fi
		export PATH="$node_prefix/bin:$PATH"
	fi

	# 4. The project's packages.
	if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
		wgexit_say "installing the project's packages (npm ci: node_modules is missing or older than package-lock.json)"
		npm ci --no-audit --no-fund >&2 || return 1
		installed+=("node_modules")
	else
		have+=("node_modules")
	fi

	if [ ${#installed[@]} -eq 0 ]; then
		wgexit_say "nothing to install: $(wgexit_join "${have[@]}") already in place"
	elif [ ${#have[@]} -eq 0 ]; then
		wgexit_say "installed: $(wgexit_join "${installed[@]}")"
	else
		wgexit_say "installed: $(wgexit_join "${installed[@]}"); already in place: $(wgexit_join "${have[@]}")"
	fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	wgexit_setup "$0" "$@"
fi
