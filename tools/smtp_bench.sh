#!/usr/bin/env bash
# Sustained SMTP intake of the ccu server (issue 6): COUNT messages of SIZE
# bytes over CONCURRENCY connections, each one stored raw (SQLite, WAL,
# synchronous=FULL), parsed, turned into a conversation of the URP queue,
# and acknowledged into the outbox before the 250; the clock stops when the
# router has taken in every conversation (/metrics). Runs RUNS times on a
# fresh database and prints every rate and the median, in messages/s.
#
#   tools/smtp_bench.sh                         # COUNT=2000 RUNS=5 SIZE=51200 CONCURRENCY=8
#   PROFILE=debug COUNT=500 tools/smtp_bench.sh
#   RELAY=up tools/smtp_bench.sh                # the outbox delivers to an aiosmtpd sink meanwhile
#
# By default the relay is a closed port: acknowledgements wait in the
# outbox, as they would with the relay down. With RELAY=up a real SMTP
# server (python3-aiosmtpd, discarding) takes them while the intake runs,
# so the outbox worker's two commits per mail compete for the database.
#
# The load client is tools/smtp_bench.py (Python standard library only);
# postfix's smtp-source would do the same job but needs the whole postfix
# package installed.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${COUNT:-2000}
RUNS=${RUNS:-5}
SIZE=${SIZE:-51200}
CONCURRENCY=${CONCURRENCY:-8}
PROFILE=${PROFILE:-release}
RELAY=${RELAY:-down}
# The URP queue open around the clock, so the figure does not depend on the
# hour: after hours the router also records a "queue closed" notice per
# conversation (one more commit each). SCHEDULE=contact_center measures that.
SCHEDULE=${SCHEDULE:-h24}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ "$PROFILE" = release ]; then
  cargo build --quiet --release -p ccu --bin ccu
else
  cargo build --quiet -p ccu --bin ccu
fi
bin="$CARGO_TARGET_DIR/$PROFILE/ccu"

rates=()
for run in $(seq "$RUNS"); do
  scratch=$(mktemp -d)
  log="$scratch/log"
  relay_port=9
  relay_pid=""
  if [ "$RELAY" = up ]; then
    relay_port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    /usr/bin/python3 -m aiosmtpd -n -c aiosmtpd.handlers.Sink -l "127.0.0.1:$relay_port" &
    relay_pid=$!
    sleep 1
  fi
  CCU_HTTP_ADDR=127.0.0.1:0 CCU_SMTP_ADDR=127.0.0.1:0 CCU_SIP_ADDR=127.0.0.1:0 CCU_DATA_DIR="$scratch" \
    CCU_DATABASE_URL="sqlite://$scratch/ccu.db" CCU_LOG_FORMAT=json RUST_LOG=warn,ccu::app=info \
    CCU_EMAIL__PER_SENDER_PER_HOUR=1000000 CCU_EMAIL__RELAY__PORT=$relay_port \
    CCU_QUEUES__URP__SCHEDULE=$SCHEDULE CCU_QUEUES__URP__HOLIDAYS=false \
    "$bin" --config config/default.toml >"$log" 2>&1 &
  server=$!
  trap 'kill $server $relay_pid 2>/dev/null || true' EXIT
  port=""
  for _ in $(seq 200); do
    port=$(grep -o '"smtp_addr":"[^"]*"' "$log" | head -1 | sed 's/.*:\([0-9]*\)"$/\1/') || true
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "server did not start:" >&2; cat "$log" >&2; exit 1; }
  http=$(grep -o '"http_addr":"[^"]*"' "$log" | head -1 | sed 's/.*:"\(.*\)"$/\1/')
  # The clock stops when the router has every conversation, not at the last 250.
  rate=$(/usr/bin/python3 tools/smtp_bench.py --port "$port" --count "$COUNT" \
         --concurrency "$CONCURRENCY" --size "$SIZE" --metrics "http://$http/metrics")
  stored=$(/usr/bin/python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('select count(*) from mail_inbound where conversation_id is not null').fetchone()[0])" "$scratch/ccu.db")
  sent=$(/usr/bin/python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"select count(*) from mail_outbox where state = 'sent'\").fetchone()[0])" "$scratch/ccu.db")
  kill "$server"; wait "$server" 2>/dev/null || true
  [ -n "$relay_pid" ] && { kill "$relay_pid"; wait "$relay_pid" 2>/dev/null || true; }
  rm -rf "$scratch"
  [ "$stored" -ge "$COUNT" ] || { echo "only $stored of $COUNT messages became conversations" >&2; exit 1; }
  echo "run $run: $rate messages/s ($COUNT x $SIZE bytes, $CONCURRENCY connections; relay $RELAY, URP schedule $SCHEDULE, $sent acknowledgements sent meanwhile; load $(cut -d' ' -f1-3 /proc/loadavg))"
  rates+=("$rate")
done
printf '%s\n' "${rates[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "median: %s messages/s\n", a[int((NR + 1) / 2)] }'
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
