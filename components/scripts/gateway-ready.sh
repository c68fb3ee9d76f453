# shellcheck shell=sh
# The step after a new cloud instance boots: waits (bounded by TIMEOUT seconds) until
# cloud-init has installed the gateway (READY_FILE), then prints its public key (KEY_FILE).
# READY_FILE, KEY_FILE and TIMEOUT are set in front of it.
set -eu
i=0
while [ ! -e "$READY_FILE" ]; do
	if command -v cloud-init >/dev/null 2>&1 && cloud-init status 2>/dev/null | grep -q 'status: error'; then
		echo "cloud-init failed; see /var/log/cloud-init-output.log" >&2
		exit 1
	fi
	i=$((i + 2))
	[ "$i" -lt "$TIMEOUT" ] || {
		echo "gateway not ready after ${TIMEOUT}s" >&2
		exit 1
	}
	sleep 2
done
cat "$KEY_FILE"
