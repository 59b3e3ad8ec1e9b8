#!/bin/sh
# simsd's own peak RSS (VmHWM), for `cargo xtask bench footprint`
# (xtask/src/targets/footprint.rs): idle, then restarted on a saved state of N
# visitor bindings (written by sims-proto's footprint example), which simsd
# restores and installs in the kernel (routes, nft set elements, neighbour
# entries, the peer's tunnel). Runs in a network namespace of its own on
# the host, or in a router target's guest VM.
#
# usage: footprint.sh <simsd> <config> <state file> <work dir> <bindings>
# prints: footprint-simsd idle peak_kib=<k> vmhwm_kib=<k> rss_max_kib=<k> bindings=0
#         footprint-simsd loaded peak_kib=<k> vmhwm_kib=<k> rss_max_kib=<k> bindings=<n>
#
# peak_kib is the larger of VmHWM and the largest RSS sampled (every
# 0.1 s) from smaps_rollup: 6.1 kernels count RSS per thread and fold it
# into VmHWM/VmRSS only every 64 page faults, so a process with few faults
# (simsd idle) shows 4 KiB there; smaps_rollup walks the page tables.
# Exit status 0 only if both were measured and all N bindings were restored.

set -u
simsd=$1
conf=$2
state=$3
work=$4
want=$5
IP=/usr/sbin/ip

$IP link set lo up
$IP link add br-lan type bridge || exit 1
$IP link add wan type veth peer name wan-peer || exit 1
$IP addr add 10.1.0.1/16 dev br-lan
$IP addr add 100.64.1.2/24 dev wan
for l in br-lan wan wan-peer; do $IP link set "$l" up; done
$IP route add default via 100.64.1.1 dev wan

# visitors DIR: bindings simsd reports as visitor (its status JSON).
visitors() {
	"$simsd" --state-dir "$1" status --json 2>/dev/null | grep -o '"role":"visitor"' | wc -l
}

# sample: rss_max = max(rss_max, simsd's RSS from its page tables).
sample() {
	r=$(awk '/^Rss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null)
	[ -n "$r" ] && [ "$r" -gt "$rss_max" ] && rss_max=$r
}

# measure WHAT DIR BINDINGS: start simsd on DIR, wait until it reports the
# bindings (at most 120 s: emulated MIPS restores slowly), let it settle,
# read VmHWM, stop it.
measure() {
	what=$1
	dir=$2
	n=$3
	"$simsd" -c "$conf" --state-dir "$dir" 2>"$dir/simsd.log" &
	pid=$!
	rss_max=0
	i=0
	while [ "$i" -lt 1200 ]; do
		sample
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "footprint: simsd exited at start:"
			tail -20 "$dir/simsd.log"
			return 1
		fi
		if [ -S "$dir/simsd.sock" ] && [ "$(visitors "$dir")" -ge "$n" ]; then
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	got=$(visitors "$dir")
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		sample
		sleep 0.2
	done
	hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
	kill -TERM "$pid"
	wait "$pid"
	peak=$hwm
	[ "$rss_max" -gt "$peak" ] && peak=$rss_max
	echo "footprint-simsd $what peak_kib=$peak vmhwm_kib=$hwm rss_max_kib=$rss_max bindings=$got"
	if [ "$got" -lt "$n" ]; then
		echo "footprint: simsd restored $got of $n bindings:"
		tail -20 "$dir/simsd.log"
		return 1
	fi
}

mkdir -p "$work/idle" "$work/loaded" || exit 1
cp "$state" "$work/loaded/simsd.state" || exit 1
measure idle "$work/idle" 0 || exit 1
measure loaded "$work/loaded" "$want" || exit 1
