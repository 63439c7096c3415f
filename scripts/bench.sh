#!/usr/bin/env bash
# make bench: time from `terraform apply` to every pod answering HTTP, for 1, 10
# and 50 replicas of the demo app (real terraform, provider and agent), against
# the same number of containers started with `ctr run --cni` on this machine in
# the same run; agent and containerd RSS idle and with 50 pods. It measures and
# asserts nothing. The benchmarks are in acceptance/bench_test.go.
#
#   BENCH_TIMES=10  iterations per size (median reported)
#   BENCH_COUNT=1   repetitions of every benchmark (median of the medians)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: must run as root: it starts agents and containerd and makes network namespaces, bridges and iptables rules (sudo make bench)" >&2
  exit 1
fi
for bin in terraform ctr containerd runc docker-registry go; do
  command -v "$bin" >/dev/null || { echo "bench: $bin is not on PATH (make deps)" >&2; exit 1; }
done

TIMES=${BENCH_TIMES:-10}
COUNT=${BENCH_COUNT:-1}
OUT=.flotilla/bench.txt
mkdir -p .flotilla
export TF_ACC=1 CHECKPOINT_DISABLE=1
TF_ACC_TERRAFORM_PATH="$(command -v terraform)"
export TF_ACC_TERRAFORM_PATH

start=$(date +%s)
set +e
go test ./acceptance -run '^$' -bench . -benchtime "${TIMES}x" -count "$COUNT" -timeout 60m 2>&1 | tee "$OUT"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "bench: go test failed (exit $rc); output in $OUT" >&2
  exit "$rc"
fi
elapsed=$(($(date +%s) - start))

awk -v elapsed="$elapsed" -v times="$TIMES" -v count="$COUNT" '
function med(list,   a, k, i, j, t) {
  k = split(list, a, " ")
  for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
  if (k == 0) return ""
  return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
function size(name, key) { return match(name, key "=[0-9]+") ? substr(name, RSTART + length(key) + 1, RLENGTH - length(key) - 1) : "" }
/^Benchmark/ {
  for (i = 3; i < NF; i++) {
    v = $i; u = $(i + 1)
    if (u == "s/apply-to-ready") { n = size($1, "replicas"); ready[n] = ready[n] " " v; sizes[n] = 1 }
    else if (u == "s/apply-exit") { n = size($1, "replicas"); done[n] = done[n] " " v }
    else if (u == "s/run-to-ready") { n = size($1, "containers"); ctr[n] = ctr[n] " " v; sizes[n] = 1 }
    else if (u ~ /^MB-/) mem[u] = mem[u] " " v
  }
}
/LEAKED:/ { sub(/^[ \t]*/, ""); leaks = leaks "\n  " $0 }
END {
  k = 0
  for (n in sizes) ns[++k] = n + 0
  for (i = 2; i <= k; i++) { t = ns[i]; for (j = i - 1; j >= 1 && ns[j] > t; j--) ns[j + 1] = ns[j]; ns[j + 1] = t }
  printf "\nFlotilla vs containerd, medians of %d iteration(s) x %d run(s); goal: ratio <= 1.3\n", times, count
  printf "  Flotilla: `terraform apply` start until every pod answers HTTP on its IP (apply exit: until terraform returned)\n"
  printf "  ctr:      first `ctr run -d --cni` (8 at a time) until every container answers HTTP on its IP\n\n"
  printf "%8s  %11s  %12s  %8s  %7s  %12s\n", "replicas", "Flotilla s", "apply exit s", "ctr s", "ratio", "ratio (exit)"
  for (i = 1; i <= k; i++) {
    n = ns[i]; f = med(ready[n]); e = med(done[n]); c = med(ctr[n])
    r = (f != "" && c > 0) ? sprintf("%.2f", f / c) : "-"
    re = (e != "" && c > 0) ? sprintf("%.2f", e / c) : "-"
    printf "%8d  %11s  %12s  %8s  %7s  %12s\n", n, f == "" ? "-" : sprintf("%.3f", f), e == "" ? "-" : sprintf("%.3f", e), c == "" ? "-" : sprintf("%.3f", c), r, re
  }
  if ("MB-agent-idle" in mem) {
    printf "\nRSS (MiB): agent idle %.1f, with 50 pods %.1f; containerd idle %.1f, with 50 pods %.1f; 50 runc shims %.1f in all\n",
      med(mem["MB-agent-idle"]), med(mem["MB-agent-50pods"]), med(mem["MB-containerd-idle"]), med(mem["MB-containerd-50pods"]), med(mem["MB-shims-50pods"])
  }
  if (leaks != "") printf "\nWARNING: an agent left masquerade chains behind (an agent bug; the bench removed them):%s\n", leaks
  printf "\nbench took %d s; raw output in '"$OUT"'\n", elapsed
}' "$OUT"
