#!/bin/sh
# The VM suite, run by tests/vm/init inside the guest (`cargo xtask test vm`):
# a kernel ipip sanity check, the testbed self-test, then the scenario suite
# once per backend in $SIMS_VM_BACKENDS (kernel: every agent on kernel ipip;
# mixed: ma-a kernel ipip, the others the userspace backend). After each
# run, the testbed's report ($SIMS_TESTBED_REPORT) must show that the
# backends and tunnel devices were the ones asked for; finally s1 once with
# `backend auto`, which must choose kernel ipip. Exit status 0 = pass.
#
# /mnt/host (9p, read-only) holds bin/ (daemons, sims-traffic, test
# binaries), this script, vm.env and args (libtest arguments, one a line).

set -u
. /mnt/host/vm.env
export SIMS_BIN_DIR RUST_BACKTRACE=1
IP=/usr/sbin/ip

now() { cut -d' ' -f1 /proc/uptime; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

# The test binaries know sims-traffic by its path on the host (cargo's
# CARGO_BIN_EXE_*): make those paths exist here too.
for l in $SIMS_VM_LINKS; do
	host="${l%%=*}"
	guest="${l#*=}"
	mkdir -p "$(dirname "$host")"
	ln -sf "$guest" "$host"
done

set --
if [ -f /mnt/host/args ]; then
	while IFS= read -r a; do
		set -- "$@" "$a"
	done </mnt/host/args
fi
filtered=$#

echo "==> vm: kernel ipip sanity check"
$IP netns add sims-vm-check || exit 1
out=$($IP -n sims-vm-check link add sims-check type ipip local 192.0.2.1 remote 192.0.2.2 ttl 64 2>&1 &&
	$IP -n sims-vm-check -d -o link show sims-check 2>&1)
if ! echo "$out" | grep -q 'link/ipip 192.0.2.1 peer 192.0.2.2'; then
	echo "==> vm: kernel ipip does not work in this guest: $out"
	$IP netns del sims-vm-check
	exit 1
fi
$IP netns del sims-vm-check

rc=0
if [ "${SIMS_VM_SELFTEST:-1}" = 1 ]; then
	echo "==> vm: testbed self-test"
	t0=$(now)
	if /mnt/host/bin/testbed --test-threads=1; then
		echo "==> vm: testbed self-test passed in $(secs "$t0" "$(now)") s"
	else
		echo "==> vm: testbed self-test FAILED"
		rc=1
	fi
fi

# check_report BACKEND FILE: every agent ran the backend the testbed asked
# for, every tunnel device seen was of that backend's kind, and (unfiltered
# runs) tunnels of the expected kinds were seen at all.
check_report() {
	be=$1
	f=$2
	if [ ! -s "$f" ]; then
		echo "==> vm: report $f is empty: no agent ran"
		return 1
	fi
	awk -v be="$be" -v strict="$3" '
	function want_backend(agent) {
		if (be == "mixed") return agent == "ma-a" ? "kernel" : "userspace"
		# This kernel has ipip: auto must choose it.
		if (be == "auto") return "kernel"
		return be
	}
	function kind_of(b) { return b == "kernel" ? "ipip" : "tun" }
	{
		agent = ""; backend = ""; kind = ""
		for (i = 1; i <= NF; i++) {
			split($i, kv, "=")
			if (kv[1] == "agent") agent = kv[2]
			if (kv[1] == "backend") backend = kv[2]
			if (kv[1] == "kind") kind = kv[2]
		}
		if (agent == "") next
		w = want_backend(agent)
		if (backend != "") {
			n_agents++
			if (backend != w) { print "==> vm: " $0 ": expected backend=" w; bad++ }
		}
		if (kind != "") {
			seen[kind]++
			if (kind != kind_of(w)) { print "==> vm: " $0 ": expected kind=" kind_of(w); bad++ }
		}
	}
	END {
		printf "==> vm: report %s: %d agent starts, tunnels seen: ipip %d, tun %d\n", be, n_agents, seen["ipip"], seen["tun"]
		if (strict == 1) {
			if (seen["ipip"] == 0) { print "==> vm: no ipip tunnel was seen"; bad++ }
			if (be == "mixed" && seen["tun"] == 0) { print "==> vm: no userspace tunnel was seen"; bad++ }
		}
		exit bad > 0
	}' "$f"
}

for be in $SIMS_VM_BACKENDS; do
	report=/tmp/sims-report-$be
	rm -f "$report"
	echo "==> vm: scenario suite with SIMS_TESTBED_BACKEND=$be"
	t0=$(now)
	# mixed checks kernel ipip against the userspace backend across
	# agents: the scenarios with tunnels between them are enough (the
	# others exercise nothing backend-specific, and ran with kernel).
	if [ "$be" = mixed ] && [ "$filtered" = 0 ]; then
		set -- s1_ s3_ s4_ s5_ s7_ s9_
	fi
	if SIMS_TESTBED_BACKEND=$be SIMS_TESTBED_REPORT=$report \
		/mnt/host/bin/scenarios --test-threads=1 "$@"; then
		verdict=passed
	else
		verdict=FAILED
		rc=1
	fi
	[ "$filtered" = 0 ] && set --
	strict=1
	[ "$filtered" -gt 0 ] && strict=0
	if ! check_report "$be" "$report" "$strict"; then
		verdict="$verdict (report check FAILED)"
		rc=1
	fi
	echo "==> vm: scenarios with backend $be $verdict in $(secs "$t0" "$(now)") s"
done

# `option backend 'auto'` must choose kernel ipip on a kernel that has it.
if [ "${SIMS_VM_AUTO_CHECK:-1}" = 1 ] && [ "$filtered" -eq 0 ]; then
	echo "==> vm: backend auto (s1): must choose kernel ipip here"
	report=/tmp/sims-report-auto
	rm -f "$report"
	if SIMS_TESTBED_BACKEND=auto SIMS_TESTBED_REPORT=$report \
		/mnt/host/bin/scenarios --test-threads=1 s1_ &&
		check_report auto "$report" 1; then
		echo "==> vm: backend auto chose kernel ipip"
	else
		echo "==> vm: backend auto FAILED"
		rc=1
	fi
fi
exit $rc
