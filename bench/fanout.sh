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
#   --loads LIST     several loads in one run, each VIEWERSxRATE (e.g. "1000x200 4000x50");
#                    overrides --viewers/--rate
#   --duration S     seconds per run (default 10)       --payload B     text bytes (default 64)
#   --procs K        loadgen processes (default 2)      --threads T     executors each (default 1)
#   --src RANGE      source addresses (default 127.0.0.2-127.0.0.60)
#   --shards N       liveshard shards and tokio-broadcast threads (default: cores)
#   --pin            servers on CPUs 0..N-1 (N = --shards), loadgen on the other CPUs (taskset),
#                    so the server's CPU time is its own and the load cannot steal it
#   --windows LIST   liveshard merge windows in ms (default "0 50")
#   --sweep LIST     extra liveshard window-0 runs of the first load at these rates (msgs/s),
#                    the saturation sweep: delivered/s, p99, drops and the share shed per step
#   --idle-conns N   ws-idle connections (default 10000; 0 = skip), and liveshard's base RSS
#                    with 1 and 2 shards (what a shard costs before any client)
#   --peers LIST     subset of "liveshard node tokio" (default all)
#   --profile        perf record liveshard during an extra window-0 run (first load)
#   --out DIR        result directory (default bench/runs/<date>-<hostname>)
#   --no-build       use the binaries already built (LIVESHARD=path overrides the server's)
# Everything runs on this machine: without --pin, loadgen and the servers share its cores,
# so keep the load modest on small machines and read CPU per delivery rather than raw
# throughput.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
# The servers and loadgen may hold as many descriptors as the hard limit allows (a login
# shell's soft limit is often 1,024, far below an idle run's connections).
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
VIEWERS=4000 ROOMS=4 PUBLISHERS=4 RATE=100 DURATION=10 PAYLOAD=64 PROCS=2 THREADS=1
SRC=127.0.0.2-127.0.0.60 IDLE_CONNS=10000 PEERS="liveshard node tokio" PROFILE=0 OUT="" BUILD=1
LOADS="" SHARDS="" PIN=0 WINDOWS="0 50" SWEEP=""
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
    --loads) LOADS=$2; shift 2 ;;
    --shards) SHARDS=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    --windows) WINDOWS=$2; shift 2 ;;
    --sweep) SWEEP=$2; shift 2 ;;
    --profile) PROFILE=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fanout.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

CORES=$(nproc)
HOST=$(hostname)
SHARDS=${SHARDS:-$CORES}
LOADS=${LOADS:-"${VIEWERS}x${RATE}"}
# With --pin: SERVER_RUN and LOAD_RUN prefix the commands with their CPU sets.
SERVER_RUN=() LOAD_RUN=()
if [ "$PIN" = 1 ]; then
  if [ "$SHARDS" -ge "$CORES" ]; then
    echo "fanout.sh: --pin needs --shards below the $CORES cores (the load needs one)" >&2; exit 2
  fi
  SERVER_RUN=(taskset -c "0-$((SHARDS - 1))")
  LOAD_RUN=(taskset -c "$SHARDS-$((CORES - 1))")
  LOAD_CPUS="$SHARDS-$((CORES - 1))"
else
  LOAD_CPUS="0-$((CORES - 1))"
fi
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
  "${SERVER_RUN[@]}" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
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
    --shards "$SHARDS" --data-dir "$WORK/data-$1-$RANDOM" --log-level warn \
    --set "auth.jwt_secret=$SECRET" --set "danmaku.merge_window_ms=$1" \
    --set danmaku.rate_per_sec=1000000 --set danmaku.rate_burst=1000000
}

COMMANDS="$OUT/commands.txt"
: >"$COMMANDS"
fanout() { # label metrics_url viewers rate
  local label=$1 metrics=$2 viewers=$3 rate=$4
  local cmd=("$LOADGEN" ws-fanout --url "ws://$ADDR/ws" --rooms "$ROOMS" --viewers "$viewers"
    --publishers "$PUBLISHERS" --rate "$rate" --duration "$DURATION" --payload "$PAYLOAD"
    --procs "$PROCS" --threads "$THREADS" --src "$SRC" --token-secret "$SECRET"
    --metrics-url "$metrics" --server-pid "$PID" --json "$OUT/fanout-$label.json"
    --html "$OUT/fanout-$label.html" --quiet)
  echo "${LOAD_RUN[*]} ${cmd[*]}" | sed "s|^ ||; s|$TARGET/release/||; s|$OUT/||g; s|$SECRET|\$SECRET|" >>"$COMMANDS"
  echo "== fanout: $label"
  local before after
  before=$(cpu_ticks "$LOAD_CPUS")
  "${LOAD_RUN[@]}" "${cmd[@]}" | sed 's/^/   /'
  after=$(cpu_ticks "$LOAD_CPUS")
  # The load's CPUs' busy share over the whole run (connect, publish, drain): near 100 %
  # means the client, not the server, set the pace.
  echo "$before $after" | awk '{b = $3 - $1; t = $4 - $2; printf "%.0f\n", (t > 0 ? 100 * b / t : 0)}' \
    >"$OUT/fanout-$label.client-busy"
  echo "   load CPUs ($LOAD_CPUS) busy $(cat "$OUT/fanout-$label.client-busy") % over the run"
}
# cpu_ticks LIST: "busy total" jiffies of the CPUs in LIST (e.g. "1" or "1-3"), from /proc/stat.
cpu_ticks() {
  local first=${1%-*} last=${1#*-}
  awk -v f="$first" -v l="$last" '$1 ~ /^cpu[0-9]+$/ {
      n = substr($1, 4) + 0
      if (n < f || n > l) next
      t = 0; for (i = 2; i <= NF; i++) t += $i
      idle = $5 + $6; busy += t - idle; total += t
    } END { print busy, total }' /proc/stat
}
idle() { # label
  [ "$IDLE_CONNS" -gt 0 ] || return 0
  local procs=$(( (IDLE_CONNS + 18999) / 19000 ))
  local cmd=("$LOADGEN" ws-idle --url "ws://$ADDR/ws" --conns "$IDLE_CONNS" --rooms "$ROOMS"
    --procs "$procs" --src "$SRC" --server-pid "$PID" --hold 2 --settle 3
    --json "$OUT/idle-$1.json" --html "$OUT/idle-$1.html" --quiet)
  echo "${LOAD_RUN[*]} ${cmd[*]}" | sed "s|^ ||; s|$TARGET/release/||; s|$OUT/||g" >>"$COMMANDS"
  echo "== idle: $1"
  "${LOAD_RUN[@]}" "${cmd[@]}" | sed 's/^/   /'
}

# base_rss SHARDS: the RSS (KiB) of a fresh liveshard with that many shards and no client,
# 2 s after it is ready. Two of them give what one more shard costs.
base_rss() {
  local saved=$SHARDS
  SHARDS=$1
  start_liveshard 50
  SHARDS=$saved
  sleep 2
  awk '/^VmRSS/ {print $2}' "/proc/$PID/status"
  stop
}

# Idle memory is measured on a fresh server process of its own, so memory freed by the
# fan-out run cannot be reused by the idle connections and hide their cost.
FIRST=${LOADS%% *}
for peer in $PEERS; do
  case $peer in
    liveshard)
      for load in $LOADS; do
        for w in $WINDOWS; do
          start_liveshard "$w"
          echo "${SERVER_RUN[*]} liveshard serve --shards $SHARDS --set danmaku.merge_window_ms=$w --set danmaku.rate_per_sec=1000000 --set danmaku.rate_burst=1000000" | sed 's/^ //' >>"$COMMANDS"
          fanout "liveshard-w$w-$load" "http://$ADDR/metrics" "${load%x*}" "${load#*x}"
          stop
        done
      done
      for rate in $SWEEP; do
        start_liveshard 0
        echo "${SERVER_RUN[*]} liveshard serve --shards $SHARDS --set danmaku.merge_window_ms=0 (sweep)" | sed 's/^ //' >>"$COMMANDS"
        fanout "sweep-liveshard-w0-${FIRST%x*}x$rate" "http://$ADDR/metrics" "${FIRST%x*}" "$rate"
        stop
      done
      if [ "$IDLE_CONNS" -gt 0 ]; then
        start_liveshard 50; idle liveshard; stop
        echo "$(base_rss 1) $(base_rss 2)" >"$OUT/base-rss.txt"
      fi ;;
    node)
      for load in $LOADS idle; do
        [ "$load" = idle ] && [ "$IDLE_CONNS" -eq 0 ] && continue
        start node-ws node "$ROOT/bench/node-ws/server.js" --addr 127.0.0.1:0
        echo "${SERVER_RUN[*]} node bench/node-ws/server.js" | sed 's/^ //' >>"$COMMANDS"
        if [ "$load" = idle ]; then idle node-ws; else fanout "node-ws-$load" none "${load%x*}" "${load#*x}"; fi
        stop
      done ;;
    tokio)
      for load in $LOADS idle; do
        [ "$load" = idle ] && [ "$IDLE_CONNS" -eq 0 ] && continue
        start tokio-broadcast "$TOKIO" --addr 127.0.0.1:0 --threads "$SHARDS"
        echo "${SERVER_RUN[*]} tokio-broadcast --threads $SHARDS" | sed 's/^ //' >>"$COMMANDS"
        if [ "$load" = idle ]; then idle tokio-broadcast; else fanout "tokio-broadcast-$load" none "${load%x*}" "${load#*x}"; fi
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
  fanout "liveshard-w0-$FIRST-profiled" "http://$ADDR/metrics" "${FIRST%x*}" "${FIRST#*x}" >/dev/null
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
python3 - "$OUT" "$CORES" "$SHARDS" "$PIN" "$LOADS" "$WINDOWS" "$SWEEP" <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
out, cores, shards, pin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
loads, windows, sweep = sys.argv[5].split(), sys.argv[6].split(), sys.argv[7].split()
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
head = (f"{'server':30} {'deliv/s':>10} {'got/exp':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu cores':>9} {'deliv/cpu-s':>12} {'dropped':>8} {'load busy':>9}")
def busy(label):
    p = os.path.join(out, f"fanout-{label}.client-busy")
    return (open(p).read().strip() + " %") if os.path.exists(p) else "n/a"
def shed(x):
    # The share of posted items the server shed past saturation (liveshard_ws_shed_total).
    n, sent = x.get("server_shed"), x.get("sent")
    return f"{100 * n / sent:.0f} %" if n is not None and sent else "n/a"
def row(label, x):
    cpu = x.get("server_cpu_cores")
    per = x.get("deliveries_per_server_cpu_s")
    print(f"{label:30} {x['deliveries_per_sec']:>10.0f} {x['delivery_ratio']:>7.3f} "
          f"{x['latency_us']['p50']/1000:>8.2f} {x['latency_us']['p99']/1000:>8.2f} "
          f"{(cpu if cpu is not None else float('nan')):>9.2f} {(per if per else float('nan')):>12.0f} "
          f"{str(x.get('server_dropped')):>8} {busy(label):>9}")
if pin:
    print(f"fan-out: servers pinned to CPUs 0-{shards-1} ({shards} shards/threads), loadgen on the other {cores-shards} of {cores}")
else:
    print(f"fan-out: {cores} cores shared by loadgen and the server ({shards} shards/threads)")
for ld in loads:
    v, r = ld.split("x")
    print(f"\nload {ld}: {v} viewers, {r} msgs/s in all")
    print(head)
    rows = {}
    labels = [f"liveshard-w{w}-{ld}" for w in windows] + [f"node-ws-{ld}", f"tokio-broadcast-{ld}"]
    for label in labels:
        r = load(f"fanout-{label}.json")
        if r:
            rows[label] = r["results"]
            row(label, r["results"])
    for w in windows:
        ls = f"liveshard-w{w}-{ld}"
        if ls not in rows: continue
        for peer in [f"node-ws-{ld}", f"tokio-broadcast-{ld}"]:
            if peer not in rows: continue
            a, b = rows[ls], rows[peer]
            d = a["deliveries_per_sec"] / max(b["deliveries_per_sec"], 1e-9)
            pa, pb = a.get("deliveries_per_server_cpu_s"), b.get("deliveries_per_server_cpu_s")
            c = f"{pa/pb:.2f}x" if pa and pb else "n/a"
            print(f"  {ls}/{peer.rsplit('-', 1)[0]}: deliveries/s {d:.2f}x, per server CPU-second {c}")
if sweep:
    v = loads[0].split("x")[0]
    print(f"\nsaturation sweep, liveshard window 0, {v} viewers in one run each:")
    print(f"{'offered msgs/s':>14} {'offered deliv/s':>15} " + head[31:] + f" {'shed':>6}")
    for rate in sweep:
        r = load(f"fanout-sweep-liveshard-w0-{v}x{rate}.json")
        if not r: continue
        x = r["results"]
        cpu = x.get("server_cpu_cores")
        per = x.get("deliveries_per_server_cpu_s")
        print(f"{rate:>14} {float(rate)*int(v):>15.0f} {x['deliveries_per_sec']:>10.0f} {x['delivery_ratio']:>7.3f} "
              f"{x['latency_us']['p50']/1000:>8.2f} {x['latency_us']['p99']/1000:>8.2f} "
              f"{(cpu if cpu is not None else float('nan')):>9.2f} {(per if per else float('nan')):>12.0f} "
              f"{str(x.get('server_dropped')):>8} {busy(f'sweep-liveshard-w0-{v}x{rate}'):>9} "
              f"{shed(x):>6}")
base = os.path.join(out, "base-rss.txt")
if os.path.exists(base):
    one, two = (int(x) for x in open(base).read().split())
    print(f"\nliveshard base RSS (fresh, no clients): 1 shard {one} KiB, 2 shards {two} KiB: "
          f"{two - one} KiB per added shard")
idle = [(l, load(f"idle-{l}.json")) for l in ["liveshard", "node-ws", "tokio-broadcast"]]
idle = [(l, r) for l, r in idle if r]
if idle:
    print("\nidle connections (server RSS growth / connections up):")
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
  if [ "$PIN" = 1 ]; then
    echo "- servers pinned to CPUs 0-$((SHARDS - 1)) ($SHARDS shards/threads), loadgen to CPUs"
    echo "  $SHARDS-$((CORES - 1)) (taskset); other processes on the machine were not stopped."
  else
    echo "- loadgen and the server under test share these $CORES cores; other processes on the"
    echo "  machine were not stopped."
  fi
  echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
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
  echo "Loads (viewers x msgs/s in all): $LOADS; over $ROOMS rooms, $PUBLISHERS publishers, ${DURATION}s"
  echo "each, $PAYLOAD-byte texts; loadgen in $PROCS processes × $THREADS executors, sources $SRC."
  if [ -n "$SWEEP" ]; then
    echo "Saturation sweep (liveshard, window 0, the first load's viewers): $SWEEP msgs/s."
  fi
  echo "Idle: $IDLE_CONNS connections over $ROOMS rooms."
  echo
  md_commands_and_results "$COMMANDS" "$OUT/summary.txt"
} >"$OUT/SETUP.md"
echo "wrote $OUT"
