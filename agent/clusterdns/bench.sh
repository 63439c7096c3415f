#!/usr/bin/env bash
# Measures clusterdns against dnsmasq with dnsperf, in one run on loopback.
#
# Both servers answer the same SERVICES names (A records of
# svc-<i>.bench.svc.cluster.local): clusterdns through cmd/dnsbench, dnsmasq
# from a hosts file of the same names. For each, dnsperf runs twice:
#   1. DURATION seconds as fast as it can (DNSPERF_OPTS): queries/s, and the
#      server's CPU time per query (from /proc), fairer than queries/s alone on
#      a small machine where dnsperf competes with the server for cores;
#   2. LATENCY_DURATION seconds at the same fixed rate for both (half the lower
#      of the two rates from 1): p50 and p99 latency, not inflated by queueing.
# Then it prints the ratio of the rates. Needs dnsperf and dnsmasq (installed
# with apt-get when missing) and go. Every process it starts is stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10}
LATENCY_DURATION=${LATENCY_DURATION:-5}
SERVICES=${SERVICES:-1000}
# 8 sockets with 200 queries in flight kept dnsperf busiest on 2 cores.
DNSPERF_OPTS=${DNSPERF_OPTS:--c 8 -q 200}

cd "$(dirname "$0")"

if ! command -v dnsperf >/dev/null || ! command -v dnsmasq >/dev/null; then
	echo "installing dnsperf and dnsmasq" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf dnsmasq >/dev/null
fi

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/dnsbench" ./cmd/dnsbench

"$work/dnsbench" -services "$SERVICES" -queries "$work/queries" -hosts "$work/hosts" \
	-ready "$work/ready" 2>"$work/dnsbench.log" &
ours_pid=$!
pids+=("$ours_pid")

dm_port=$("$work/dnsbench" -free-port)
dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --addn-hosts="$work/hosts" \
	--port="$dm_port" --listen-address=127.0.0.1 --bind-interfaces --keep-in-foreground \
	--pid-file= --log-facility=- 2>"$work/dnsmasq.log" &
dm_pid=$!
pids+=("$dm_pid")

# answers PORT: whether a server on 127.0.0.1:PORT answers the first name.
answers() {
	[[ -s "$work/queries" ]] || return 1
	head -n 1 "$work/queries" >"$work/one"
	dnsperf -s 127.0.0.1 -p "$1" -d "$work/one" -n 1 -t 1 2>/dev/null |
		grep -q 'Queries completed: *1 '
}

# wait_ready NAME PID PORTFILE_OR_PORT: polls until the server answers, for 20 s.
wait_ready() {
	local name=$1 pid=$2 port=$3
	for _ in $(seq 200); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$name exited; its log:" >&2
			cat "$work/$name.log" >&2
			exit 1
		fi
		if [[ -z "$port" && -s "$work/ready" ]]; then
			port=$(cut -d: -f2 "$work/ready")
		fi
		if [[ -n "$port" ]] && answers "$port"; then
			echo "$port"
			return
		fi
		sleep 0.1
	done
	echo "$name does not answer after 20 s; its log:" >&2
	cat "$work/$name.log" >&2
	exit 1
}

ours_port=$(wait_ready dnsbench "$ours_pid" "")
wait_ready dnsmasq "$dm_pid" "$dm_port" >/dev/null

# cpu_ticks PID: user+system clock ticks of a process so far.
cpu_ticks() {
	awk '{print $14 + $15}' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)

# throughput NAME PORT PID: prints "qps lost cpu_us_per_query".
throughput() {
	local name=$1 port=$2 pid=$3 before after out
	before=$(cpu_ticks "$pid")
	# shellcheck disable=SC2086 # DNSPERF_OPTS is a list of options
	out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$DURATION" $DNSPERF_OPTS 2>&1)
	after=$(cpu_ticks "$pid")
	echo "$out" >"$work/$name.throughput"
	echo "$out" | awk -v ticks="$((after - before))" -v hz="$hz" '
		/Queries completed:/ { done = $3 }
		/Queries lost:/      { lost = $3 }
		/Queries per second:/ { qps = $4 }
		END { printf "%.0f %s %.2f\n", qps, lost, done ? ticks / hz / done * 1e6 : 0 }'
}

# latency NAME PORT RATE: prints "p50_us p99_us" at RATE queries/s.
latency() {
	local name=$1 port=$2 rate=$3
	dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$LATENCY_DURATION" -Q "$rate" -v 2>/dev/null |
		awk '/^> / { print $NF }' | sort -g >"$work/$name.latencies"
	awk '{ a[NR] = $1 } END {
		if (NR == 0) { print "- -"; exit }
		p50 = int(NR * 0.50); if (p50 < 1) p50 = 1
		p99 = int(NR * 0.99); if (p99 < 1) p99 = 1
		printf "%.0f %.0f\n", a[p50] * 1e6, a[p99] * 1e6 }' "$work/$name.latencies"
}

echo "dnsperf ${DNSPERF_OPTS}, ${DURATION} s each, ${SERVICES} names, $(nproc) CPUs" >&2
read -r ours_qps ours_lost ours_cpu < <(throughput clusterdns "$ours_port" "$ours_pid")
read -r dm_qps dm_lost dm_cpu < <(throughput dnsmasq "$dm_port" "$dm_pid")
rate=$(awk -v a="$ours_qps" -v b="$dm_qps" 'BEGIN { m = a < b ? a : b; printf "%d", m / 2 }')
read -r ours_p50 ours_p99 < <(latency clusterdns "$ours_port" "$rate")
read -r dm_p50 dm_p99 < <(latency dnsmasq "$dm_port" "$rate")

printf '%-11s %12s %8s %14s %18s %18s\n' server queries/s lost "CPU us/query" "p50 us @${rate}/s" "p99 us @${rate}/s"
printf '%-11s %12s %8s %14s %18s %18s\n' clusterdns "$ours_qps" "$ours_lost" "$ours_cpu" "$ours_p50" "$ours_p99"
printf '%-11s %12s %8s %14s %18s %18s\n' dnsmasq "$dm_qps" "$dm_lost" "$dm_cpu" "$dm_p50" "$dm_p99"
awk -v a="$ours_qps" -v b="$dm_qps" -v ca="$ours_cpu" -v cb="$dm_cpu" 'BEGIN {
	printf "ratio clusterdns/dnsmasq: %.2f x the queries/s, %.2f x the CPU per query\n", a / b, ca / cb }'
