#!/usr/bin/env bash
# bench/cluster.sh — danmaku fan-out across three liveshard nodes over one Redis (issue 11).
#
# One Redis (a fresh redis-server on a free port, no persistence) and three liveshard nodes
# (A, B, C; --shards 1 each, the same auth.jwt_secret, --redis to that server). loadgen
# spreads the viewers of every room over the three nodes round robin and puts every
# publisher on node A, so a post reaches a third of its viewers on the node it was posted
# on ("local") and two thirds through Redis on the other nodes ("cross-node"). For each
# merge window and load it prints delivered/s, local and cross-node p50/p99, and what Redis
# did: commands per delivered message (INFO commandstats before and after the step, all
# commands, the script's own INFO calls taken out) and script calls (EVALSHA + EVAL) per
# post. The goal (issue 11): cross-node p99 within local p99 + 5 ms, and Redis commands per
# delivered message far below 1 with the merge window.
#
# Every loadgen JSON report (and its --html page), the per-step Redis and CPU figures, the
# summary and SETUP.md go to bench/runs/<date>-<host>-cluster/.
#
# Usage: bench/cluster.sh [options]
#   --loads LIST     loads, each VIEWERSxRATE (msgs/s in all) (default "300x50 1500x100 600x400")
#   --windows LIST   merge windows in ms; fresh nodes for each (default "50 0")
#   --rooms R        (default 4)                        --publishers P  (default 4)
#   --duration S     seconds per step (default 10)      --payload B     text bytes (default 64)
#   --procs K        loadgen processes (default 1)      --threads T     executors each (default 1)
#   --src RANGE      source addresses (default 127.0.0.2-127.0.0.60)
#   --pin            with 5 or more CPUs: node A, B, C and Redis on CPUs 0, 1, 2, 3 and loadgen
#                    on the rest; with fewer: the nodes and Redis share CPUs 0..N-2 and
#                    loadgen has the last CPU to itself (taskset)
#   --out DIR        result directory (default bench/runs/<date>-<hostname>-cluster)
#   --no-build       use the binaries already built (LIVESHARD=path overrides the server's)
# Needs redis-server and redis-cli (7.0 or later: sharded pub/sub) and curl.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
LOADS="300x50 1500x100 600x400" WINDOWS="50 0" ROOMS=4 PUBLISHERS=4 DURATION=10 PAYLOAD=64 PROCS=1
THREADS=1 SRC=127.0.0.2-127.0.0.60 PIN=0 OUT="" BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --loads) LOADS=$2; shift 2 ;;
    --windows) WINDOWS=$2; shift 2 ;;
    --rooms) ROOMS=$2; shift 2 ;;
    --publishers) PUBLISHERS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --payload) PAYLOAD=$2; shift 2 ;;
    --procs) PROCS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --src) SRC=$2; shift 2 ;;
    --pin) PIN=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in redis-server redis-cli curl taskset; do
  command -v "$tool" >/dev/null || { echo "cluster.sh: $tool not found" >&2; exit 2; }
done

CORES=$(nproc)
HOST=$(hostname)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# CPU lists per process (empty: not pinned).
CPU_A="" CPU_B="" CPU_C="" CPU_REDIS="" CPU_LOAD=""
if [ "$PIN" = 1 ]; then
  if [ "$CORES" -lt 2 ]; then echo "cluster.sh: --pin needs 2 CPUs or more" >&2; exit 2; fi
  if [ "$CORES" -ge 5 ]; then
    CPU_A=0 CPU_B=1 CPU_C=2 CPU_REDIS=3 CPU_LOAD="4-$((CORES - 1))"
  else
    CPU_A=0
    [ "$CORES" -gt 2 ] && CPU_A="0-$((CORES - 2))"
    CPU_B=$CPU_A CPU_C=$CPU_A CPU_REDIS=$CPU_A CPU_LOAD=$((CORES - 1))
  fi
fi
# on CPUS: the command prefix that pins to CPUS (nothing when CPUS is empty).
on() { [ -n "$1" ] && printf 'taskset\n-c\n%s\n' "$1"; true; }
mapfile -t LOAD_RUN < <(on "$CPU_LOAD")

OUT=${OUT:-"$ROOT/bench/runs/$(date +%F)-$HOST-cluster"}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-"$ROOT/target"}
SECRET="bench-cluster-secret-$(date +%s)-0123456789"
WORK=$(mktemp -d /tmp/liveshard-cluster.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$BUILD" = 1 ]; then
  echo "== building (release)"
  (cd "$ROOT" && cargo build --release --quiet -p liveshard -p loadgen)
fi
LIVESHARD=${LIVESHARD:-"$TARGET/release/liveshard"}
LOADGEN="$TARGET/release/loadgen"

# Redis: a free port, nothing written to disk.
REDIS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mapfile -t pre < <(on "$CPU_REDIS")
"${pre[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 1 100); do
  [ "$(rcli ping 2>/dev/null)" = PONG ] && break
  kill -0 "$REDIS_PID" 2>/dev/null || { echo "redis-server exited:"; cat "$WORK/redis.log"; exit 1; }
  sleep 0.1
done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
echo "== redis-server on 127.0.0.1:$REDIS_PORT ($(redis-server --version | cut -d' ' -f3))"

# redis_stats [FILE]: "calls evals cpu_s": calls of every command so far, EVALSHA + EVAL
# calls, Redis's CPU seconds (user + sys); the INFO text goes to FILE too. One INFO call.
redis_stats() {
  rcli INFO all | tr -d '\r' | tee "${1:-/dev/null}" | awk -F'[:,=]' '
    /^cmdstat_/ { calls += $3; if ($1 == "cmdstat_evalsha" || $1 == "cmdstat_eval") evals += $3 }
    /^used_cpu_(sys|user):/ { cpu += $2 }
    END { printf "%d %d %.3f\n", calls, evals, cpu }'
}
# How many calls one reading adds as Redis counts them (INFO, and whatever redis-cli sends
# on connecting), measured while nothing else talks to Redis.
s1=$(redis_stats); s2=$(redis_stats)
OWN_CALLS=$(( ${s2%% *} - ${s1%% *} ))

# start_node NAME CPUS WINDOW: starts a node, waits for its "ready http=ADDR" line; sets ADDR
# and PID.
start_node() {
  local name=$1 cpus=$2 w=$3
  mapfile -t pre < <(on "$cpus")
  "${pre[@]}" "$LIVESHARD" serve --http 127.0.0.1:0 --rtmp 127.0.0.1:0 --shards 1 \
    --redis "$REDIS_URL" --data-dir "$WORK/data-$name-w$w" --log-level warn \
    --set "auth.jwt_secret=$SECRET" --set "danmaku.merge_window_ms=$w" \
    --set danmaku.rate_per_sec=1000000 --set danmaku.rate_burst=1000000 \
    >"$WORK/$name.out" 2>"$WORK/$name.err" &
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
stop_node() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# cpu_s PID...: utime + stime of these processes, in seconds.
cpu_s() {
  local tck
  tck=$(getconf CLK_TCK)
  for p in "$@"; do sed 's/.*) //' "/proc/$p/stat"; done |
    awk -v t="$tck" '{ s += $12 + $13 } END { printf "%.3f\n", s / t }'
}
# dropped ADDR...: liveshard_ws_messages_dropped_total summed over these nodes.
dropped() {
  for a in "$@"; do curl -s "http://$a/metrics"; done |
    awk '$1 ~ /^liveshard_ws_messages_dropped_total($|\{)/ { s += $2 } END { printf "%d\n", s }'
}

COMMANDS="$OUT/commands.txt"
{
  echo "${CPU_REDIS:+taskset -c $CPU_REDIS }redis-server --port PORT --bind 127.0.0.1 --save \"\" --appendonly no"
} >"$COMMANDS"
for w in $WINDOWS; do
  rcli FLUSHALL >/dev/null
  start_node A "$CPU_A" "$w"; ADDR_A=$ADDR PID_A=$PID
  start_node B "$CPU_B" "$w"; ADDR_B=$ADDR PID_B=$PID
  start_node C "$CPU_C" "$w"; ADDR_C=$ADDR PID_C=$PID
  for n in A B C; do
    cpus_var=CPU_$n
    echo "${!cpus_var:+taskset -c ${!cpus_var} }liveshard serve --shards 1 --redis redis://127.0.0.1:PORT --set auth.jwt_secret=\$SECRET --set danmaku.merge_window_ms=$w --set danmaku.rate_per_sec=1000000 --set danmaku.rate_burst=1000000   # node $n" >>"$COMMANDS"
  done
  echo "== window $w ms: nodes A=$ADDR_A B=$ADDR_B C=$ADDR_C"
  for load in $LOADS; do
    label="w$w-$load"
    cmd=("$LOADGEN" ws-fanout --url "ws://$ADDR_A/ws,ws://$ADDR_B/ws,ws://$ADDR_C/ws"
      --rooms "$ROOMS" --viewers "${load%x*}" --publishers "$PUBLISHERS" --rate "${load#*x}"
      --duration "$DURATION" --payload "$PAYLOAD" --procs "$PROCS" --threads "$THREADS"
      --src "$SRC" --token-secret "$SECRET" --server-pid "$PID_A"
      --json "$OUT/cluster-$label.json" --html "$OUT/cluster-$label.html" --quiet)
    echo "${LOAD_RUN[*]} ${cmd[*]}" | sed "s|^ ||; s|$TARGET/release/||; s|$OUT/||g; s|$SECRET|\$SECRET|" >>"$COMMANDS"
    echo "== step $label"
    d0=$(dropped "$ADDR_A" "$ADDR_B" "$ADDR_C")
    n0=$(cpu_s "$PID_A" "$PID_B" "$PID_C")
    r0=$(redis_stats "$WORK/info-before")
    "${LOAD_RUN[@]}" "${cmd[@]}" | sed 's/^/   /'
    r1=$(redis_stats "$WORK/info-after")
    n1=$(cpu_s "$PID_A" "$PID_B" "$PID_C")
    d1=$(dropped "$ADDR_A" "$ADDR_B" "$ADDR_C")
    # calls evals redis_cpu_s nodes_cpu_s dropped, over the whole step (connects included).
    echo "$r0 $r1 $n0 $n1 $d0 $d1 $OWN_CALLS" | awk '{
        printf "redis_calls=%d\nredis_evals=%d\nredis_cpu_s=%.3f\nnodes_cpu_s=%.3f\ndropped=%d\n",
          $4 - $1 - $11, $5 - $2, $6 - $3, $8 - $7, $10 - $9 }' >"$OUT/cluster-$label.redis"
    # The machine's 1-minute load average as the step ends: other work competing for the CPUs.
    echo "loadavg=$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/cluster-$label.redis"
    # Calls per command over the step, most first (INFO itself included).
    awk -F'[:,=]' '/^cmdstat_/ { if (FNR == NR) b[$1] = $3; else if ($3 - b[$1] > 0)
        printf "%-24s %d\n", substr($1, 9), $3 - b[$1] }' "$WORK/info-before" "$WORK/info-after" |
      sort -k2 -nr >"$OUT/cluster-$label.commandstats"
    sed 's/^/   /; s/=/ /' "$OUT/cluster-$label.redis" | tr '\n' ' '; echo
    echo "   by command: $(awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}' "$OUT/cluster-$label.commandstats")"
  done
  stop_node "$PID_A"; stop_node "$PID_B"; stop_node "$PID_C"
done

# Summary table and the goal check.
python3 - "$OUT" "$CORES" "$PIN" "$LOADS" "$WINDOWS" "$CPU_A" "$CPU_B" "$CPU_C" "$CPU_REDIS" "$CPU_LOAD" <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
out, cores, pin = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
loads, windows = sys.argv[4].split(), sys.argv[5].split()
cpu_a, cpu_b, cpu_c, cpu_r, cpu_l = sys.argv[6:11]
if pin:
    print(f"three nodes (1 shard each) and Redis, pinned: A on CPU {cpu_a}, B on {cpu_b}, "
          f"C on {cpu_c}, Redis on {cpu_r}; loadgen on {cpu_l} (of {cores})")
else:
    print(f"three nodes (1 shard each), Redis and loadgen share {cores} cores, unpinned")
print("viewers spread over A, B, C in every room; publishers on A. local = A's viewers, "
      "cross = the worse of B's and C's")
head = (f"{'window':>6} {'load':>9} {'sent/s':>7} {'deliv/s':>8} {'got/exp':>7} "
        f"{'loc p50':>7} {'loc p99':>7} {'x p50':>7} {'x p99':>7} {'p99 +':>6} "
        f"{'redis cmds':>10} {'cmd/deliv':>9} {'evals':>6} {'eval/post':>9} "
        f"{'redis cpu':>9} {'nodes cpu':>9} {'dropped':>7} {'load':>5}  goal")
print()
print(head)
ms = lambda us: us / 1000
for w in windows:
    for ld in loads:
        label = f"w{w}-{ld}"
        p = os.path.join(out, f"cluster-{label}.json")
        if not os.path.exists(p):
            continue
        x = json.load(open(p))["results"]
        red = dict(l.strip().split("=") for l in open(os.path.join(out, f"cluster-{label}.redis")))
        per = x.get("per_url", [])
        local = [u for u in per if u["role"] == "local"]
        cross = [u for u in per if u["role"] != "local"]
        if not local or not cross:
            print(f"{w:>6} {ld:>9} no per-URL figures")
            continue
        lo = local[0]["latency_us"]
        xp50 = max(u["latency_us"]["p50"] for u in cross)
        xp99 = max(u["latency_us"]["p99"] for u in cross)
        extra = ms(xp99 - lo["p99"])
        calls, evals = int(red["redis_calls"]), int(red["redis_evals"])
        deliv, sent = x["deliveries"], x["sent"]
        cpd = calls / deliv if deliv else float("nan")
        epp = evals / sent if sent else float("nan")
        goal = ("p99 met" if extra <= 5.0 else "p99 NOT met") + ", " + \
            ("cmds met" if cpd < 0.1 else "cmds NOT met")
        print(f"{w + ' ms':>6} {ld:>9} {x['sent_per_sec']:>7.0f} {x['deliveries_per_sec']:>8.0f} "
              f"{x['delivery_ratio']:>7.3f} {ms(lo['p50']):>7.2f} {ms(lo['p99']):>7.2f} "
              f"{ms(xp50):>7.2f} {ms(xp99):>7.2f} {extra:>6.2f} {calls:>10} {cpd:>9.4f} "
              f"{evals:>6} {epp:>9.3f} {float(red['redis_cpu_s']):>8.2f}s "
              f"{float(red['nodes_cpu_s']):>8.2f}s {int(red['dropped']):>7} {red.get('loadavg', '?'):>5}  {goal}")
print()
print("""latencies in ms; p99 + = cross-node p99 - local p99 (goal: at most 5 ms);
redis cmds = every command Redis ran during the step, as INFO commandstats counts them: the
commands a script runs (INCRBY, XADD, SPUBLISH) count besides its EVALSHA; connects,
subscriptions and the nodes' heartbeats included; this script's INFO calls taken out; per
command in cluster-*.commandstats. cmd/deliv = that per delivered message; evals = EVALSHA
+ EVAL calls (the room batches' script, one per room and merge window with posts, and the
nodes' other scripts: online counts); eval/post = per message posted; redis cpu and nodes
cpu = CPU seconds over the whole step (the three nodes together); dropped =
liveshard_ws_messages_dropped_total over the three nodes; load = the machine's 1-minute
load average as the step ended (above the core count: other work competed for them).
goal: p99 met = cross-node p99 at most local p99 + 5 ms; cmds met = fewer than 0.1 Redis
commands per delivered message (one per ten deliveries: an order of magnitude below 1).""")
PY

# SETUP.md: what this was measured on and with.
{
  echo "# Cluster fan-out run $(date +%F) on $HOST"
  echo
  echo "Produced by \`bench/cluster.sh\`; every number below comes from the JSON reports and"
  echo "\`.redis\` files beside this file."
  echo
  md_machine "$CORES"
  if [ "$PIN" = 1 ]; then
    echo "- pinned (taskset): node A on CPU $CPU_A, B on $CPU_B, C on $CPU_C, Redis on $CPU_REDIS,"
    echo "  loadgen on $CPU_LOAD; other processes on the machine were not stopped."
  else
    echo "- the nodes, Redis and loadgen share these $CORES cores, unpinned; other processes on"
    echo "  the machine were not stopped."
  fi
  echo "- Load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "## Versions"
  echo
  echo "- liveshard: $(liveshard_rev), $(rustc --version)"
  echo "- $(redis-server --version)"
  echo "- glommio $(crate_version "$ROOT/Cargo.lock" glommio) (loadgen)"
  echo
  echo "## Load"
  echo
  echo "Loads (viewers x msgs/s in all): $LOADS; merge windows: $WINDOWS ms (fresh nodes and an"
  echo "empty Redis for each window); over $ROOMS rooms, $PUBLISHERS publishers (all on node A),"
  echo "${DURATION}s each, $PAYLOAD-byte texts; loadgen in $PROCS processes × $THREADS executors,"
  echo "sources $SRC."
  echo
  md_commands_and_results "$COMMANDS" "$OUT/summary.txt"
} >"$OUT/SETUP.md"
echo "wrote $OUT"
