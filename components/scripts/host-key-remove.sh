# shellcheck shell=sh
# Removes the key host-key.sh made, once nothing else of the role is left (the role's remove
# took the rest). KEY_DIR is set in front of it.
S=""; [ "$(id -u)" = 0 ] || S="sudo -n"
if [ -d "$KEY_DIR" ] && [ ! -e "$KEY_DIR/interface" ]; then
	$S rm -f "$KEY_DIR/private.key" "$KEY_DIR/private.key.new"
	$S rmdir "$KEY_DIR" /etc/wgexit 2>/dev/null || true
fi
