#!/bin/sh
# Runs in the guest (tests/vm/init, for `cargo xtask bench vm-delay` and
# `cargo xtask bench dataplane`): each line of /mnt/host/cmds in turn,
# typically `/mnt/host/bin/xtask guest bench-...` (the harness itself, run
# inside the guest with the binaries in /mnt/host/bin). Stops at the first
# failure; exit status 0 = pass.

set -u
. /mnt/host/vm.env
export SIMS_TESTBED_BACKEND RUST_BACKTRACE=1
[ -n "${SIMS_TESTBED_VERBOSE:-}" ] && export SIMS_TESTBED_VERBOSE
n=0
while IFS= read -r cmd; do
	case "$cmd" in '' | '#'*) continue ;; esac
	n=$((n + 1))
	echo "==> vm: bench step $n: $cmd"
	if ! sh -c "$cmd" </dev/null; then
		echo "==> vm: bench step $n FAILED"
		exit 1
	fi
done </mnt/host/cmds
exit 0
