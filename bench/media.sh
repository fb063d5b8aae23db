#!/usr/bin/env bash
# bench/media.sh — live media delivery, side by side (SPEC §3 Media, issue 5).
#
# One run, on this machine, of one ~600 kbit/s stream (H.264 640x360 25 fps + AAC, 1 s
# GOP) to N viewers, for each N of --viewers:
#   rtmp  liveshard (--shards = cores) and nginx with Debian's libnginx-mod-rtmp, the same
#         publisher and the same `loadgen rtmp-viewers` load against each;
#   flv   liveshard alone (nginx-rtmp has no HTTP-FLV): `loadgen flv-viewers`, time to first
#         frame from the GOP cache and throughput.
# The stream is encoded once into a file (so encoding never competes with the servers) and
# published with `ffmpeg -re -stream_loop -1 -c copy`. Every (server, protocol, N) gets a
# fresh server process and publisher, and the runs of one N follow each other, so machine
# noise hits the servers alike.
#
# It prints, per run: viewers up and held, TTFF p50/p99 (first frame, first keyframe),
# delivered Mbit/s, per-viewer kbit/s, server CPU (utime+stime of the server process and
# its children from /proc over the window), server cores per delivered Gbit/s, viewers held
# per server core, loadgen's own CPU; then the ratios liveshard/nginx-rtmp and the SPEC §3
# goal check. Every loadgen JSON report (and its --html page), commands.txt, summary.txt and SETUP.md go to
# bench/runs/<date>-<host>-media/.
#
# Usage: bench/media.sh [options]
#   --viewers "N1 N2…"   viewer counts (default "500 1000 1500 2000")
#   --duration S          seconds measured per run, after all viewers are up (default 20)
#   --ramp C              viewer connections per second (default 500)
#   --procs K             loadgen processes (default 2)   --threads T  executors each (default 1)
#   --src RANGE           source addresses (default 127.0.0.2-127.0.0.60)
#   --nginx-workers W     nginx worker_processes (default 1: see bench/nginx-rtmp/nginx.conf.in
#                         for why more than one does not work with Debian's module)
#   --peers LIST          subset of "liveshard nginx" (default both)
#   --no-flv              skip the liveshard HTTP-FLV runs
#   --record S            seconds of source to encode (default 60; looped while publishing)
#   --out DIR             result directory (default bench/runs/<date>-<hostname>-media)
#   --no-build            use the binaries already built (LIVESHARD=path overrides the server's)
# Everything runs on this machine: the servers, loadgen and ffmpeg share its cores. Read the
# CPU per delivered Gbit/s (efficiency) next to viewers held (capacity on this box).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
VIEWERS="500 1000 1500 2000" DURATION=20 RAMP=500 PROCS=2 THREADS=1 SRC=127.0.0.2-127.0.0.60
NGINX_WORKERS=1 PEERS="liveshard nginx" FLV=1 RECORD=60 OUT="" BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --viewers) VIEWERS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --ramp) RAMP=$2; shift 2 ;;
    --procs) PROCS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --src) SRC=$2; shift 2 ;;
    --nginx-workers) NGINX_WORKERS=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --no-flv) FLV=0; shift ;;
    --record) RECORD=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "media.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

CORES=$(nproc)
HOST=$(hostname)
OUT=${OUT:-"$ROOT/bench/runs/$(date +%F)-$HOST-media"}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-"$ROOT/target"}
MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so
WORK=$(mktemp -d /tmp/liveshard-media.XXXXXX)
PIDS=()
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v ffmpeg >/dev/null || ! command -v nginx >/dev/null || [ ! -f "$MODULE" ]; then
  echo "== apt-get install nginx libnginx-mod-rtmp ffmpeg (missing here)"
  apt-get install -y nginx libnginx-mod-rtmp ffmpeg >/dev/null
fi
if [ "$BUILD" = 1 ]; then
  echo "== building (release)"
  (cd "$ROOT" && cargo build --release --quiet -p liveshard -p loadgen)
fi
LIVESHARD=${LIVESHARD:-"$TARGET/release/liveshard"}
LOADGEN="$TARGET/release/loadgen"

echo "== encoding ${RECORD}s of source (testsrc2 640x360 25 fps, 500k video + 64k AAC, 1 s GOP)"
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=640x360:rate=25 -f lavfi -i sine \
  -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -b:v 500k -maxrate 500k -bufsize 500k \
  -pix_fmt yuv420p -c:a aac -b:a 64k -t "$RECORD" -f flv "$WORK/src.flv"
SRC_KBPS=$(( $(stat -c %s "$WORK/src.flv") * 8 / RECORD / 1000 ))
# A viewer is held only at ≥ 90 % of it: a server that falls behind throttles the publisher
# (ffmpeg -re waits on its socket), which slows every viewer without any gap between tags.
MIN_KBPS=$(( SRC_KBPS * 90 / 100 ))
echo "   $SRC_KBPS kbit/s on average (FLV file bytes); viewers held at ≥ $MIN_KBPS kbit/s"

COMMANDS="$OUT/commands.txt"
: >"$COMMANDS"
note() {
  echo "$*" | sed "s|$TARGET/release/||g; s|$(dirname "$LIVESHARD")/||g; s|$OUT/||g; s|$WORK|\$WORK|g" \
    >>"$COMMANDS"
}

# start_liveshard LABEL: sets PID, HTTP, RTMP, PUSH (a signed push URL), PLAY_RTMP, PLAY_FLV.
start_liveshard() {
  local label=$1 data="$WORK/$1"
  local cmd=("$LIVESHARD" serve --http 127.0.0.1:0 --rtmp 127.0.0.1:0 --shards "$CORES"
    --data-dir "$data" --log-level warn)
  "${cmd[@]}" >"$WORK/$label.out" 2>"$WORK/$label.err" &
  PID=$!
  PIDS+=("$PID")
  note "${cmd[*]}"
  HTTP=""
  for _ in $(seq 1 300); do
    HTTP=$(sed -n 's/.* ready http=\([^ ]*\).*/\1/p' "$WORK/$label.out" | head -1)
    [ -n "$HTTP" ] && break
    kill -0 "$PID" 2>/dev/null || { echo "liveshard exited:"; cat "$WORK/$label.err"; exit 1; }
    sleep 0.1
  done
  [ -n "$HTTP" ] || { echo "liveshard did not get ready"; exit 1; }
  RTMP=$(sed -n 's/.* rtmp=\([^ ]*\).*/\1/p' "$WORK/$label.out" | head -1)
  PUSH=$("$LIVESHARD" sign --stream bench --host "$RTMP" --data-dir "$data")
  note "liveshard sign --stream bench --host $RTMP --data-dir \$DATA"
  PLAY_RTMP="rtmp://$RTMP/live/bench"
  PLAY_FLV="http://$HTTP/live/bench.flv"
}

# start_nginx LABEL: nginx with bench/nginx-rtmp/nginx.conf.in on a free port; sets PID, PUSH,
# PLAY_RTMP. PID is the master's: loadgen adds its workers' CPU (--server-pid takes the tree).
start_nginx() {
  local label=$1 dir="$WORK/$1" port
  mkdir -p "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local user_line=""
  [ "$(id -u)" = 0 ] && user_line="user root;  # workers write the relay sockets into $dir"
  sed -e "s|@USER_LINE@|$user_line|; s|@WORKERS@|$NGINX_WORKERS|; s|@NOFILE@|$(ulimit -Hn)|" \
      -e "s|@DIR@|$dir|g; s|@MODULE@|$MODULE|; s|@CONNECTIONS@|$(( $(ulimit -Hn) - 500 ))|" \
      -e "s|@PORT@|$port|" "$ROOT/bench/nginx-rtmp/nginx.conf.in" >"$dir/nginx.conf"
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' \
    >"$WORK/$label.out" 2>"$WORK/$label.err" &
  PID=$!
  PIDS+=("$PID")
  note "nginx -p \$DIR -c \$DIR/nginx.conf -e \$DIR/error.log -g 'daemon off;'   (worker_processes $NGINX_WORKERS)"
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { echo "nginx exited:"; cat "$WORK/$label.err" "$dir/error.log"; exit 1; }
    sleep 0.1
  done
  PUSH="rtmp://127.0.0.1:$port/live/bench"
  PLAY_RTMP="$PUSH"
}

# publish URL: the recorded source in real time, looped; sets FF.
publish() {
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$WORK/src.flv" -c copy \
    -f flv "$1" >"$WORK/ffmpeg.out" 2>"$WORK/ffmpeg.err" &
  FF=$!
  PIDS+=("$FF")
  note "ffmpeg -re -stream_loop -1 -i \$WORK/src.flv -c copy -f flv $(echo "$1" | sed 's/?.*/?txSecret=…/')"
  # Live once one RTMP viewer gets a frame (our own client, so it works for both servers).
  for _ in $(seq 1 40); do
    if "$LOADGEN" rtmp-viewers --url "$PLAY_RTMP" --viewers 1 --duration 0.5 --quiet \
         --connect-timeout 3 --json "$WORK/probe.json" >/dev/null 2>&1 &&
       python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; sys.exit(0 if r["ttff_us"]["count"]>0 else 1)' "$WORK/probe.json"; then
      sleep 1  # one more GOP in the server's cache
      return 0
    fi
    kill -0 "$FF" 2>/dev/null || { echo "ffmpeg exited:"; cat "$WORK/ffmpeg.err"; exit 1; }
    sleep 0.5
  done
  echo "the stream did not go live"; exit 1
}

stop_all() {
  kill "$FF" 2>/dev/null || true; wait "$FF" 2>/dev/null || true
  kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true
}

# viewers SCENARIO URL FILE N [--metrics-url U]
viewers() {
  local scenario=$1 url=$2 file=$3 n=$4; shift 4
  local procs=$PROCS
  local need=$(( (n + 18999) / 19000 ))
  [ "$need" -gt "$procs" ] && procs=$need
  local cmd=("$LOADGEN" "$scenario" --url "$url" --viewers "$n" --duration "$DURATION"
    --ramp "$RAMP" --procs "$procs" --threads "$THREADS" --src "$SRC" --server-pid "$PID"
    --min-kbps "$MIN_KBPS"
    "$@" --json "$OUT/$file" --html "$OUT/${file%.json}.html" --quiet)
  note "${cmd[*]}"
  echo "== $file"
  "${cmd[@]}" | sed 's/^/   /' || true
}

for n in $VIEWERS; do
  for peer in $PEERS; do
    case $peer in
      liveshard)
        start_liveshard "ls-rtmp-$n"
        publish "$PUSH"
        viewers rtmp-viewers "$PLAY_RTMP" "rtmp-liveshard-$n.json" "$n" --metrics-url "http://$HTTP/metrics"
        stop_all
        if [ "$FLV" = 1 ]; then
          start_liveshard "ls-flv-$n"
          publish "$PUSH"
          viewers flv-viewers "$PLAY_FLV" "flv-liveshard-$n.json" "$n"
          stop_all
        fi ;;
      nginx)
        start_nginx "nginx-$n"
        publish "$PUSH"
        viewers rtmp-viewers "$PLAY_RTMP" "rtmp-nginx-rtmp-$n.json" "$n"
        stop_all ;;
      *) echo "unknown peer $peer" >&2; exit 2 ;;
    esac
  done
done

python3 - "$OUT" "$CORES" "$SRC_KBPS" "$VIEWERS" <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
out, cores, src_kbps, ns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p))["results"] if os.path.exists(p) else None
def f(v, fmt):
    return format(v, fmt) if v is not None else "n/a"
print(f"media: one {src_kbps} kbit/s stream; {cores} cores shared by the server, loadgen and ffmpeg")
print(f"{'run':22} {'viewers':>7} {'up':>6} {'held':>6} {'TTFF p50':>8} {'p99':>7} {'key p99':>7} "
      f"{'Mbit/s':>7} {'kbps/v':>6} {'min':>4} {'srv cores':>9} {'cores/Gbps':>10} {'held/core':>9} {'lg cores':>8}")
rows = {}
for n in ns:
    for proto, server in [("rtmp", "liveshard"), ("rtmp", "nginx-rtmp"), ("flv", "liveshard")]:
        r = load(f"{proto}-{server}-{n}.json")
        if not r:
            continue
        rows[(proto, server, n)] = r
        t, k = r["ttff_us"], r["ttff_keyframe_us"]
        print(f"{proto + ' ' + server:22} {n:>7} {r['connections']['up']:>6} {r['viewers_held']:>6} "
              f"{t['p50']/1000:>8.1f} {t['p99']/1000:>7.1f} {k['p99']/1000:>7.1f} "
              f"{r['mbit_per_sec']:>7.1f} {r['per_viewer_kbit_s']['p50']:>6} {r['per_viewer_kbit_s']['min']:>4} "
              f"{f(r['server_cpu_cores'], '9.2f')} {f(r['server_cores_per_gbit_s'], '10.3f')} "
              f"{f(r['viewers_per_server_core'], '9.0f')} {f(r['loadgen_cpu_cores'], '8.2f')}")
print("TTFF in ms (connect start → first complete video frame / keyframe); held = up for the whole")
print(f"window, connected at its end, no gap over 1 s between tags, ≥ 90 % of the source rate;")
print("kbps/v = per-viewer kbit/s over the window, p50 and min; cores/Gbps = server CPU cores busy")
print("per delivered Gbit/s (lower is better); held/core = viewers held / server cores busy.")
print("ratios, liveshard vs nginx-rtmp (RTMP play, same publisher, same load):")
for n in ns:
    a, b = rows.get(("rtmp", "liveshard", n)), rows.get(("rtmp", "nginx-rtmp", n))
    if not (a and b):
        continue
    ca, cb = a["server_cores_per_gbit_s"], b["server_cores_per_gbit_s"]
    eff = (f"nginx-rtmp spends {cb / ca:.2f}x liveshard's CPU per delivered Gbit/s"
           if ca and cb else "CPU n/a")
    print(f"  {n:>6} viewers: {eff}; held {a['viewers_held']} vs {b['viewers_held']}; "
          f"TTFF p50 {a['ttff_us']['p50']/1000:.1f} vs {b['ttff_us']['p50']/1000:.1f} ms; "
          f"delivered {a['mbit_per_sec']:.0f} vs {b['mbit_per_sec']:.0f} Mbit/s")
flv = [(int(n), rows[("flv", "liveshard", n)]) for n in ns if ("flv", "liveshard", n) in rows]
rtmp_pairs = [(rows.get(("rtmp", "liveshard", n)), rows.get(("rtmp", "nginx-rtmp", n))) for n in ns]
rtmp_pairs = [(a, b) for a, b in rtmp_pairs if a and b and a["server_cores_per_gbit_s"] and b["server_cores_per_gbit_s"]]
print("goal check (SPEC §3 Media):")
if flv:
    n, r = max(flv, key=lambda x: x[0])
    per_core = r["viewers_per_server_core"]
    # At 600 kbit/s, 10k viewers per core is 6 Gbit/s per core: 0.167 cores per Gbit/s.
    print(f"  ≥ 10k FLV viewers per core: {f(per_core, '.0f')} viewers held per server core at {n} "
          f"viewers (extrapolated from {f(r['server_cpu_cores'], '.2f')} cores busy): "
          + ("met" if per_core and per_core >= 10000 else "not met"))
    worst = max(r2["ttff_us"]["p99"] for _, r2 in flv) / 1000
    print(f"  TTFF < 100 ms (FLV, from the GOP cache): p99 ≤ {worst:.1f} ms over all runs: "
          + ("met" if worst < 100 else "not met")
          + "; p50 " + ", ".join(f"{r2['ttff_us']['p50']/1000:.1f}" for _, r2 in flv) + " ms")
if rtmp_pairs:
    better = all(a["server_cores_per_gbit_s"] < b["server_cores_per_gbit_s"] for a, b in rtmp_pairs)
    print(f"  CPU per delivered Gbit/s below nginx-rtmp's: {'met' if better else 'not met'} "
          f"at {sum(a['server_cores_per_gbit_s'] < b['server_cores_per_gbit_s'] for a, b in rtmp_pairs)}"
          f" of {len(rtmp_pairs)} viewer counts")
PY

{
  echo "# Media run $(date +%F) on $HOST"
  echo
  echo "Produced by \`bench/media.sh\`; every number below comes from the JSON reports beside this file."
  echo
  md_machine "$CORES"
  echo "- The server, loadgen ($PROCS processes) and the publishing ffmpeg share these $CORES cores;"
  echo "  other processes on the machine were not stopped. Load average at the start: $LOAD_START,"
  echo "  at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "## Versions"
  echo
  echo "- liveshard: $(liveshard_rev), $(rustc --version)"
  echo "- nginx $(nginx -v 2>&1 | sed 's|.*nginx/||'), libnginx-mod-rtmp $(dpkg-query -W -f '${Version}' libnginx-mod-rtmp 2>/dev/null || echo '?') (Debian), worker_processes $NGINX_WORKERS"
  echo "- $(ffmpeg -version | head -1 | cut -d' ' -f1-3)"
  echo "- glommio $(crate_version "$ROOT/Cargo.lock" glommio) (loadgen)"
  echo
  echo "## Load"
  echo
  echo "One stream, encoded once: testsrc2 640x360 25 fps, libx264 ultrafast/zerolatency, 1 s GOP,"
  echo "500 kbit/s video (maxrate 500k) + 64 kbit/s AAC; $SRC_KBPS kbit/s in the FLV file. Published"
  echo "with \`ffmpeg -re -stream_loop -1 -c copy\` to a fresh server for every run."
  echo "Viewers: $VIEWERS; ramp $RAMP connections/s; ${DURATION}s measured once all are up;"
  echo "loadgen in $PROCS processes × $THREADS executors, sources $SRC."
  echo
  md_commands_and_results "$COMMANDS" "$OUT/summary.txt"
} >"$OUT/SETUP.md"
echo "wrote $OUT"
