#!/usr/bin/env bash
# bench/fanout.sh — the danmaku fan-out benchmark, side by side (SPEC §3, issue 4).
#
# One run drives the same loadgen load against:
#   liveshard        (--shards = cores), with merge window 0 (one frame per item: the fair
#                    comparison) and with the default 50 ms;
#   node-ws          bench/node-ws/server.js (npm `ws`), one process;
#   tokio-broadcast  bench/tokio-broadcast (tokio + tokio-tungstenite, broadcast channel per
#                    room, one task per connection, multi-threaded runtime);
# then measures idle memory per connection (loadgen ws-idle) on each, and optionally
# profiles liveshard under the window-0 load with perf.
#
# It prints deliveries/s, p99, server CPU (utime+stime from /proc over the publishing window)
# and deliveries per server CPU-second for each, with the ratios liveshard/peer, and writes
# every loadgen JSON report (and its --html page), the summary and SETUP.md to
# bench/runs/<date>-<host>/.
#
# Usage: bench/fanout.sh [options]
#   --viewers N      viewers in all (default 4000)      --rooms R       (default 4)
#   --publishers P   (default 4)                        --rate X        msgs/s in all (default 100)
#   --duration S     seconds per run (default 10)       --payload B     text bytes (default 64)
#   --procs K        loadgen processes (default 2)      --threads T     executors each (default 1)
#   --src RANGE      source addresses (default 127.0.0.2-127.0.0.60)
#   --idle-conns N   ws-idle connections (default 10000; 0 = skip)
#   --peers LIST     subset of "liveshard node tokio" (default all)
#   --profile        perf record liveshard during an extra window-0 run
#   --out DIR        result directory (default bench/runs/<date>-<hostname>)
#   --no-build       use the binaries already built (LIVESHARD=path overrides the server's)
# Everything runs on this machine: loadgen and the servers share its cores, so keep the load
# modest on small machines and read CPU per delivery rather than raw throughput.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
VIEWERS=4000 ROOMS=4 PUBLISHERS=4 RATE=100 DURATION=10 PAYLOAD=64 PROCS=2 THREADS=1
SRC=127.0.0.2-127.0.0.60 IDLE_CONNS=10000 PEERS="liveshard node tokio" PROFILE=0 OUT="" BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --viewers) VIEWERS=$2; shift 2 ;;
    --rooms) ROOMS=$2; shift 2 ;;
    --publishers) PUBLISHERS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --payload) PAYLOAD=$2; shift 2 ;;
    --procs) PROCS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --src) SRC=$2; shift 2 ;;
    --idle-conns) IDLE_CONNS=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --profile) PROFILE=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fanout.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

CORES=$(nproc)
HOST=$(hostname)
OUT=${OUT:-"$ROOT/bench/runs/$(date +%F)-$HOST"}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-"$ROOT/target"}
SECRET="bench-fanout-secret-$(date +%s)-0123456789"
WORK=$(mktemp -d /tmp/liveshard-fanout.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$BUILD" = 1 ]; then
  echo "== building (release)"
  (cd "$ROOT" && cargo build --release --quiet -p liveshard -p loadgen)
  (cd "$ROOT/bench/tokio-broadcast" && cargo build --release --quiet --target-dir "$TARGET")
fi
if [ ! -d "$ROOT/bench/node-ws/node_modules/ws" ]; then
  echo "== npm install (bench/node-ws)"
  (cd "$ROOT/bench/node-ws" && npm install --no-audit --no-fund --silent)
fi
LIVESHARD=${LIVESHARD:-"$TARGET/release/liveshard"}
LOADGEN="$TARGET/release/loadgen"
TOKIO="$TARGET/release/tokio-broadcast"

# start NAME CMD... : starts a server, waits for its "ready http=ADDR" line; sets ADDR and PID.
start() {
  local name=$1; shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 1 300); do
    ADDR=$(sed -n 's/.* ready http=\([^ ]*\).*/\1/p' "$WORK/$name.out" | head -1)
    [ -n "$ADDR" ] && return 0
    kill -0 "$PID" 2>/dev/null || { echo "$name exited:"; cat "$WORK/$name.err"; exit 1; }
    sleep 0.1
  done
  echo "$name did not get ready"; exit 1
}
stop() { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }

start_liveshard() { # window_ms
  start "liveshard-w$1" "$LIVESHARD" serve --http 127.0.0.1:0 --rtmp 127.0.0.1:0 \
    --shards "$CORES" --data-dir "$WORK/data-$1-$RANDOM" --log-level warn \
    --set "auth.jwt_secret=$SECRET" --set "danmaku.merge_window_ms=$1" \
    --set danmaku.rate_per_sec=1000000 --set danmaku.rate_burst=1000000
}

COMMANDS="$OUT/commands.txt"
: >"$COMMANDS"
fanout() { # label metrics_url
  local label=$1 metrics=$2
  local cmd=("$LOADGEN" ws-fanout --url "ws://$ADDR/ws" --rooms "$ROOMS" --viewers "$VIEWERS"
    --publishers "$PUBLISHERS" --rate "$RATE" --duration "$DURATION" --payload "$PAYLOAD"
    --procs "$PROCS" --threads "$THREADS" --src "$SRC" --token-secret "$SECRET"
    --metrics-url "$metrics" --server-pid "$PID" --json "$OUT/fanout-$label.json"
    --html "$OUT/fanout-$label.html" --quiet)
  echo "${cmd[*]}" | sed "s|$TARGET/release/||; s|$OUT/||g; s|$SECRET|\$SECRET|" >>"$COMMANDS"
  echo "== fanout: $label"
  "${cmd[@]}" | sed 's/^/   /'
}
idle() { # label
  [ "$IDLE_CONNS" -gt 0 ] || return 0
  local procs=$(( (IDLE_CONNS + 18999) / 19000 ))
  local cmd=("$LOADGEN" ws-idle --url "ws://$ADDR/ws" --conns "$IDLE_CONNS" --rooms "$ROOMS"
    --procs "$procs" --src "$SRC" --server-pid "$PID" --hold 2 --settle 3
    --json "$OUT/idle-$1.json" --html "$OUT/idle-$1.html" --quiet)
  echo "${cmd[*]}" | sed "s|$TARGET/release/||; s|$OUT/||g" >>"$COMMANDS"
  echo "== idle: $1"
  "${cmd[@]}" | sed 's/^/   /'
}

# Idle memory is measured on a fresh server process of its own, so memory freed by the
# fan-out run cannot be reused by the idle connections and hide their cost.
for peer in $PEERS; do
  case $peer in
    liveshard)
      for w in 0 50; do
        start_liveshard "$w"
        echo "liveshard serve --shards $CORES --set danmaku.merge_window_ms=$w --set danmaku.rate_per_sec=1000000 --set danmaku.rate_burst=1000000" >>"$COMMANDS"
        fanout "liveshard-w$w" "http://$ADDR/metrics"
        stop
      done
      if [ "$IDLE_CONNS" -gt 0 ]; then start_liveshard 50; idle liveshard; stop; fi ;;
    node)
      for phase in fanout idle; do
        [ "$phase" = idle ] && [ "$IDLE_CONNS" -eq 0 ] && continue
        start node-ws node "$ROOT/bench/node-ws/server.js" --addr 127.0.0.1:0
        echo "node bench/node-ws/server.js" >>"$COMMANDS"
        if [ "$phase" = fanout ]; then fanout node-ws none; else idle node-ws; fi
        stop
      done ;;
    tokio)
      for phase in fanout idle; do
        [ "$phase" = idle ] && [ "$IDLE_CONNS" -eq 0 ] && continue
        start tokio-broadcast "$TOKIO" --addr 127.0.0.1:0 --threads "$CORES"
        echo "tokio-broadcast --threads $CORES" >>"$COMMANDS"
        if [ "$phase" = fanout ]; then fanout tokio-broadcast none; else idle tokio-broadcast; fi
        stop
        grep -h lagged "$WORK/tokio-broadcast.err" || true
      done ;;
    *) echo "unknown peer $peer" >&2; exit 2 ;;
  esac
done

if [ "$PROFILE" = 1 ]; then
  start_liveshard 0
  echo "== profile: perf record -g on liveshard (window 0)"
  perf record -g -F 999 -p "$PID" -o "$WORK/perf.data" -- sleep $((DURATION + 6)) 2>"$WORK/perf.err" &
  PERF=$!
  sleep 0.5
  fanout liveshard-w0-profiled "http://$ADDR/metrics" >/dev/null
  wait "$PERF" || true
  stop
  # Reports go through files (not `| head`): pipefail would turn perf's SIGPIPE into an exit.
  perf report -i "$WORK/perf.data" --no-children --percent-limit 0.7 --stdio \
    >"$WORK/perf-report.txt" 2>/dev/null || true
  grep -v '^$' "$WORK/perf-report.txt" | sed -n '1,400p' >"$OUT/perf-liveshard-w0.txt" || true
  perf report -i "$WORK/perf.data" --no-children --sort dso,sym --stdio -g none \
    --percent-limit 0.3 >"$WORK/perf-flat.txt" 2>/dev/null || true
  grep -v '^$' "$WORK/perf-flat.txt" | sed -n '1,120p' >"$OUT/perf-liveshard-w0-flat.txt" || true
  echo "   wrote perf-liveshard-w0.txt (call graphs), perf-liveshard-w0-flat.txt (self time)"
fi

# Summary table and ratios.
python3 - "$OUT" "$CORES" <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
out, cores = sys.argv[1], int(sys.argv[2])
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
rows = []
for label in ["liveshard-w0", "liveshard-w50", "node-ws", "tokio-broadcast"]:
    r = load(f"fanout-{label}.json")
    if not r: continue
    x = r["results"]
    rows.append((label, x))
print(f"fan-out: {cores} cores shared by loadgen and the server")
print(f"{'server':18} {'deliv/s':>10} {'got/exp':>7} {'p50 ms':>8} {'p99 ms':>8} {'cpu cores':>9} {'deliv/cpu-s':>12} {'dropped':>8}")
for label, x in rows:
    cpu = x.get("server_cpu_cores")
    per = x.get("deliveries_per_server_cpu_s")
    print(f"{label:18} {x['deliveries_per_sec']:>10.0f} {x['delivery_ratio']:>7.3f} "
          f"{x['latency_us']['p50']/1000:>8.2f} {x['latency_us']['p99']/1000:>8.2f} "
          f"{(cpu if cpu is not None else float('nan')):>9.2f} {(per if per else float('nan')):>12.0f} "
          f"{str(x.get('server_dropped')):>8}")
base = dict(rows)
for ls in ["liveshard-w0", "liveshard-w50"]:
    if ls not in base: continue
    for peer in ["node-ws", "tokio-broadcast"]:
        if peer not in base: continue
        a, b = base[ls], base[peer]
        d = a["deliveries_per_sec"] / max(b["deliveries_per_sec"], 1e-9)
        pa, pb = a.get("deliveries_per_server_cpu_s"), b.get("deliveries_per_server_cpu_s")
        c = f"{pa/pb:.2f}x" if pa and pb else "n/a"
        print(f"{ls}/{peer}: deliveries/s {d:.2f}x, deliveries per server CPU-second {c}")
idle = [(l, load(f"idle-{l}.json")) for l in ["liveshard", "node-ws", "tokio-broadcast"]]
idle = [(l, r) for l, r in idle if r]
if idle:
    print("idle connections (server RSS growth / connections up):")
    for l, r in idle:
        x = r["results"]
        b = x.get("bytes_per_conn")
        print(f"  {l:16} {x['connections']['up']:>6} up  "
              + (f"{b:8.0f} bytes ({b/1024:.2f} KiB) per connection" if b is not None else "n/a"))
PY

# SETUP.md: what this was measured on and with.
{
  echo "# Fan-out run $(date +%F) on $HOST"
  echo
  echo "Produced by \`bench/fanout.sh\`; every number below comes from the JSON reports beside this file."
  echo
  md_machine "$CORES"
  echo "- loadgen and the server under test share these $CORES cores; other processes on the"
  echo "  machine were not stopped. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "## Versions"
  echo
  echo "- liveshard: $(liveshard_rev), $(rustc --version)"
  echo "- node $(node --version), ws $(node -e "console.log(require('$ROOT/bench/node-ws/node_modules/ws/package.json').version)")"
  echo "- tokio $(crate_version "$ROOT/bench/tokio-broadcast/Cargo.lock" tokio), tokio-tungstenite $(crate_version "$ROOT/bench/tokio-broadcast/Cargo.lock" tokio-tungstenite)"
  echo "- glommio $(crate_version "$ROOT/Cargo.lock" glommio) (loadgen)"
  echo
  echo "## Load"
  echo
  echo "$VIEWERS viewers over $ROOMS rooms, $PUBLISHERS publishers posting $RATE msgs/s in all for ${DURATION}s,"
  echo "$PAYLOAD-byte texts; loadgen in $PROCS processes × $THREADS executors, sources $SRC."
  echo "Idle: $IDLE_CONNS connections over $ROOMS rooms."
  echo
  md_commands_and_results "$COMMANDS" "$OUT/summary.txt"
} >"$OUT/SETUP.md"
echo "wrote $OUT"
