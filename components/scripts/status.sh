# shellcheck shell=bash
# The status lines every role prints for `npm run status` (ops/status.ts reads them):
#   check <what> ok|FAIL
#   peer <name> handshake=<seconds ago|never> rx=<bytes> tx=<bytes>   (roles with a tunnel)
# Bash 3.2 compatible: the macOS laptop script sources it too.
# --- status: lines the status command reads ------------------------------------------
# shellcheck disable=SC2034 # read by the role script's status
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
