#!/usr/bin/env bash
# SIP endpoint throughput with sipp (Debian package sip-tester): OPTIONS
# (one transaction per call) and authenticated REGISTER (two transactions:
# 401 challenge, then 200), over UDP from one address, rate limit off.
# Runs each scenario RUNS times and prints the median rate in calls/s.
#
#   tools/sip-bench.sh            # defaults: CALLS=20000 RUNS=5
#   CALLS=50000 RUNS=3 tools/sip-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sipp >/dev/null || { echo "sipp not found: apt-get install -y sip-tester" >&2; exit 1; }

CALLS=${CALLS:-20000}
RUNS=${RUNS:-5}
PORT=${PORT:-15060}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --quiet --release -p ccu-channels --example sip_endpoint

log=$(mktemp)
scratch=$(mktemp -d)
CCU_SIP_ADDR=127.0.0.1:$PORT CCU_SIP_RATE_LIMIT=off CCU_SIP_MAX_TRANSACTIONS=2000000 \
  "$CARGO_TARGET_DIR/release/examples/sip_endpoint" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$log" "$scratch"' EXIT
for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
grep -q listening "$log" || { echo "endpoint did not start:" >&2; cat "$log" >&2; exit 1; }

# One run: prints calls/s, fails if any call failed.
run() {
  local scenario=$1; shift
  local start end
  start=$(date +%s.%N)
  if ! (cd "$scratch" && sipp -sf "$OLDPWD/tests/sipp/$scenario" -t u1 -i 127.0.0.1 -nostdin \
        -m "$CALLS" -r 100000 -l 200 -timeout 300s -timeout_error "$@" \
        "127.0.0.1:$PORT" >/dev/null 2>&1); then
    echo "sipp reported failed calls for $scenario" >&2
    return 1
  fi
  end=$(date +%s.%N)
  awk -v n="$CALLS" -v s="$start" -v e="$end" 'BEGIN { printf "%.1f\n", n / (e - s) }'
}

median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f", m}'; }

bench() {
  local name=$1; shift
  local rates=()
  for _ in $(seq "$RUNS"); do rates+=("$(run "$@")"); done
  printf '%-10s median %s calls/s over %s runs of %s calls (runs: %s)\n' "$name" \
    "$(printf '%s\n' "${rates[@]}" | median)" "$RUNS" "$CALLS" \
    "$(printf '%.0f ' "${rates[@]}")"
}

rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$server/status"; }
echo "machine: $(nproc) cpu, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); sipp $(sipp -v 2>&1 | grep -om1 'v[0-9.]*')"
bench OPTIONS options.xml
bench REGISTER register_auth.xml -s 1001 -au 1001 -ap secret
echo "endpoint RSS after the runs (transactions linger 32 s, Timer J): $(rss)"
