#!/usr/bin/env bash
# The voice benchmarks of issue 5 with sipp (Debian package sip-tester),
# each run RUNS times (benches/call_load.rs says what each measures):
#   1. IVR calls at RATE/s for SECONDS, answered and hung up after 1 s;
#   2. a surge at twice SUSTAINABLE/s with voice.max_calls_per_second =
#      SUSTAINABLE, then SUSTAINABLE/s again;
#   3. BRIDGED concurrent calls bridged to operators' phones, 20 ms PCMU
#      both ways, measured over SECONDS once all are up.
#
#   tools/call-bench.sh                 # RATE=300 SUSTAINABLE=1000 BRIDGED=500 RUNS=3
#   RUNS=1 BRIDGED=100 tools/call-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sipp >/dev/null || { echo "sipp not found: apt-get install -y sip-tester" >&2; exit 1; }
RATE=${RATE:-300}
SUSTAINABLE=${SUSTAINABLE:-1000}
BRIDGED=${BRIDGED:-500}
SECONDS_EACH=${SECONDS_EACH:-30}
RUNS=${RUNS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --quiet --release
bench=$(cargo bench --bench call_load --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "call_load" and m.get("executable"):
        print(m["executable"])' | tail -1)
server="$CARGO_TARGET_DIR/release/ccu"
status=0
for run in $(seq "$RUNS"); do
  echo "== run $run of $RUNS"
  "$bench" --server "$server" --mode ivr --rate "$RATE" --seconds "$SECONDS_EACH" || status=1
  "$bench" --server "$server" --mode overload --rate "$SUSTAINABLE" --seconds 20 || status=1
  "$bench" --server "$server" --mode bridge --calls "$BRIDGED" --talk-seconds 90 --seconds "$SECONDS_EACH" || status=1
done
exit $status
