# shellcheck shell=sh
# The first step on a site or laptop VM: make the host's WireGuard key (once) and print its
# public half. It runs before the host knows its tunnel address, so a split-layout stack can
# publish the key for its gateway stack before it joins. KEY_DIR is set in front of it.
set -eu
S=""; [ "$(id -u)" = 0 ] || S="sudo -n"
if ! command -v wg >/dev/null 2>&1; then
	$S env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
	$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wireguard-tools >&2
fi
$S mkdir -p "$KEY_DIR"
# shellcheck disable=SC2016 # expanded by the inner shell, which gets KEY_DIR from env
$S env KEY_DIR="$KEY_DIR" sh -c 'umask 077; if [ ! -s "$KEY_DIR/private.key" ]; then wg genkey >"$KEY_DIR/private.key.new" && mv -f "$KEY_DIR/private.key.new" "$KEY_DIR/private.key"; fi'
# shellcheck disable=SC2016
$S env KEY_DIR="$KEY_DIR" sh -c 'wg pubkey <"$KEY_DIR/private.key"'
