#!/usr/bin/env bash
# bench/media.sh — live media delivery, side by side (SPEC §3 Media, issue 5).
#
# One run, on this machine, of one ~600 kbit/s stream (H.264 640x360 25 fps + AAC, 1 s
# GOP) to N viewers, for each N of --viewers:
#   rtmp  liveshard (--shards = cores) and nginx with Debian's libnginx-mod-rtmp, the same
#         publisher and the same `loadgen rtmp-viewers` load against each;
#   flv   liveshard alone (nginx-rtmp has no HTTP-FLV): `loadgen flv-viewers`, time to first
#         frame from the GOP cache and throughput;
#   hls   liveshard's HLS with `loadgen hls-viewers`, one poller per viewer on a keep-alive
#         connection: MPEG-TS segments (media.hls_fmp4=false) vs fMP4 (=true), delivered
#         Mbit/s, server CPU and cores per delivered Gbit/s side by side; and Low-Latency HLS
#         (media.hls_low_latency=true, media.hls_part_ms=333) with `--ll` pollers: ingest →
#         received latency per part, blocking reload hold time, CPU;
#   recording  the same publish to liveshard without and with recording (media.record=all),
#         `loadgen flv-viewers` as the load: the server CPU it adds, and the loop lag of the
#         publisher's shard (liveshard_loop_lag_seconds, sampled twice a second).
# The stream is encoded once into a file (so encoding never competes with the servers) and
# published with `ffmpeg -re -stream_loop -1 -c copy`. Every (server, protocol, N) gets a
# fresh server process and publisher, and the runs of one N follow each other, so machine
# noise hits the servers alike.
#
# It prints, per run: viewers up and held, TTFF p50/p99 (first frame, first keyframe),
# delivered Mbit/s, per-viewer kbit/s, server CPU (utime+stime of the server process and
# its children from /proc over the window), server cores per delivered Gbit/s, viewers held
# per server core, loadgen's own CPU; then the ratios liveshard/nginx-rtmp and the SPEC §3
# goal check; then the HLS and recording tables. Every loadgen JSON report (and its --html
# page), the loop-lag samples, commands.txt, summary.txt and SETUP.md go to
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
#   --only PARTS          subset of "rtmp flv hls recording" (default all four), e.g.
#                         `--only hls --hls ll` for the LL-HLS latency runs alone
#   --peers LIST          subset of "liveshard nginx" for the RTMP runs (default both)
#   --no-flv              skip the liveshard HTTP-FLV runs (the same as leaving flv out of --only)
#   --hls MODES           subset of "ts fmp4 ll" (default all three)
#   --hls-viewers "N…"    viewer counts of the HLS runs (default: --viewers)
#   --rec-viewers "N…"    viewer counts of the recording runs (default: --viewers)
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
ONLY="rtmp flv hls recording" HLS_MODES="ts fmp4 ll" HLS_VIEWERS="" REC_VIEWERS=""
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
    --only) ONLY=$2; shift 2 ;;
    --hls) HLS_MODES=$2; shift 2 ;;
    --hls-viewers) HLS_VIEWERS=$2; shift 2 ;;
    --rec-viewers) REC_VIEWERS=$2; shift 2 ;;
    --record) RECORD=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "media.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

HLS_VIEWERS=${HLS_VIEWERS:-$VIEWERS}
REC_VIEWERS=${REC_VIEWERS:-$VIEWERS}
for part in $ONLY; do
  case $part in rtmp|flv|hls|recording) ;; *) echo "media.sh: --only: unknown part $part" >&2; exit 2 ;; esac
done
for mode in $HLS_MODES; do
  case $mode in ts|fmp4|ll) ;; *) echo "media.sh: --hls: unknown mode $mode" >&2; exit 2 ;; esac
done
# wants PART: whether this run includes PART.
wants() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
wants flv || FLV=0
wants rtmp || PEERS=""

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

# start_liveshard LABEL [--set KEY=VALUE…]: sets PID, HTTP, RTMP, PUSH (a signed push URL),
# PLAY_RTMP, PLAY_FLV, PLAY_HLS.
start_liveshard() {
  local label=$1 data="$WORK/$1"; shift
  local cmd=("$LIVESHARD" serve --http 127.0.0.1:0 --rtmp 127.0.0.1:0 --shards "$CORES"
    --data-dir "$data" --log-level warn "$@")
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
  PLAY_HLS="http://$HTTP/live/bench.m3u8"
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

# viewers SCENARIO URL FILE N [--metrics-url U] [--ll]. MIN=K sets --min-kbps (default
# MIN_KBPS; HLS viewers get 0: segments arrive in bursts, so a window's edges cut the rate).
viewers() {
  local scenario=$1 url=$2 file=$3 n=$4; shift 4
  local procs=$PROCS
  local need=$(( (n + 18999) / 19000 ))
  [ "$need" -gt "$procs" ] && procs=$need
  local cmd=("$LOADGEN" "$scenario" --url "$url" --viewers "$n" --duration "$DURATION"
    --ramp "$RAMP" --procs "$procs" --threads "$THREADS" --src "$SRC" --server-pid "$PID"
    --min-kbps "${MIN:-$MIN_KBPS}"
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

# lag_sampler FILE: liveshard_loop_lag_seconds of every shard, twice a second, as
# "UNIX_MS SHARD SECONDS" lines, until killed; sets SAMPLER.
lag_sampler() {
  local file=$1
  (
    while :; do
      curl -s --max-time 1 "http://$HTTP/metrics" |
        awk -v t="$(date +%s%3N)" -F'[{}"= ]+' '/^liveshard_loop_lag_seconds\{/ { print t, $3, $4 }'
      sleep 0.5
    done
  ) >"$file" 2>/dev/null &
  SAMPLER=$!
  PIDS+=("$SAMPLER")
  note "curl -s http://$HTTP/metrics   (every 0.5 s while loadgen runs: liveshard_loop_lag_seconds)"
}

# publisher_shard: the shard the stream's publisher is on (liveshard_media_streams_live).
publisher_shard() {
  curl -s --max-time 2 "http://$HTTP/metrics" |
    awk -F'[{}"= ]+' '/^liveshard_media_streams_live\{/ && $4 > 0 { print $3; exit }'
}

# metric NAME: one unlabelled sample of liveshard's /metrics.
metric() {
  curl -s --max-time 2 "http://$HTTP/metrics" | awk -v n="$1" '$1 == n { print $2; exit }'
}

if wants hls; then
  for n in $HLS_VIEWERS; do
    for mode in $HLS_MODES; do
      case $mode in
        ts) start_liveshard "ls-hls-ts-$n" --set media.hls_fmp4=false ;;
        fmp4) start_liveshard "ls-hls-fmp4-$n" --set media.hls_fmp4=true ;;
        ll) start_liveshard "ls-hls-ll-$n" --set media.hls_low_latency=true --set media.hls_part_ms=333 ;;
      esac
      publish "$PUSH"
      if [ "$mode" = ll ]; then
        MIN=0 viewers hls-viewers "$PLAY_HLS" "hls-$mode-$n.json" "$n" --ll
      else
        MIN=0 viewers hls-viewers "$PLAY_HLS" "hls-$mode-$n.json" "$n"
      fi
      stop_all
    done
  done
fi

if wants recording; then
  for n in $REC_VIEWERS; do
    for rec in off on; do
      if [ "$rec" = on ]; then
        start_liveshard "ls-rec-$rec-$n" --set media.record=all
      else
        start_liveshard "ls-rec-$rec-$n"
      fi
      publish "$PUSH"
      echo "shard=$(publisher_shard)" >"$OUT/rec-$rec-$n.lag.txt"
      lag_sampler "$WORK/lag.txt"
      viewers flv-viewers "$PLAY_FLV" "rec-$rec-$n.json" "$n"
      kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true
      {
        cat "$WORK/lag.txt"
        echo "record_bytes_total=$(metric liveshard_record_bytes_total)"
        echo "record_frames_dropped_total=$(metric liveshard_record_frames_dropped_total)"
      } >>"$OUT/rec-$rec-$n.lag.txt"
      stop_all
    done
  done
fi

python3 - "$OUT" "$CORES" "$SRC_KBPS" "$VIEWERS" "$HLS_VIEWERS" "$REC_VIEWERS" "$DURATION" <<'PY' | tee "$OUT/summary.txt"
import json, os, sys
out, cores, src_kbps, ns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
hls_ns, rec_ns, duration = sys.argv[5].split(), sys.argv[6].split(), float(sys.argv[7])
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p))["results"] if os.path.exists(p) else None
def f(v, fmt):
    return format(v, fmt) if v is not None else "n/a"
print(f"media: one {src_kbps} kbit/s stream; {cores} cores shared by the server, loadgen and ffmpeg")
rows = {}
for n in ns:
    for proto, server in [("rtmp", "liveshard"), ("rtmp", "nginx-rtmp"), ("flv", "liveshard")]:
        r = load(f"{proto}-{server}-{n}.json")
        if r:
            rows[(proto, server, n)] = r
if rows:
    print(f"{'run':22} {'viewers':>7} {'up':>6} {'held':>6} {'TTFF p50':>8} {'p99':>7} {'key p99':>7} "
          f"{'Mbit/s':>7} {'kbps/v':>6} {'min':>4} {'srv cores':>9} {'cores/Gbps':>10} {'held/core':>9} {'lg cores':>8}")
for (proto, server, n), r in rows.items():
    t, k = r["ttff_us"], r["ttff_keyframe_us"]
    print(f"{proto + ' ' + server:22} {n:>7} {r['connections']['up']:>6} {r['viewers_held']:>6} "
          f"{t['p50']/1000:>8.1f} {t['p99']/1000:>7.1f} {k['p99']/1000:>7.1f} "
          f"{r['mbit_per_sec']:>7.1f} {r['per_viewer_kbit_s']['p50']:>6} {r['per_viewer_kbit_s']['min']:>4} "
          f"{f(r['server_cpu_cores'], '9.2f')} {f(r['server_cores_per_gbit_s'], '10.3f')} "
          f"{f(r['viewers_per_server_core'], '9.0f')} {f(r['loadgen_cpu_cores'], '8.2f')}")
if rows:
    print("TTFF in ms (connect start → first complete video frame / keyframe); held = up for the whole")
    print(f"window, connected at its end, no gap over 1 s between tags, ≥ 90 % of the source rate;")
    print("kbps/v = per-viewer kbit/s over the window, p50 and min; cores/Gbps = server CPU cores busy")
    print("per delivered Gbit/s (lower is better); held/core = viewers held / server cores busy.")
if any(p == "rtmp" and s == "nginx-rtmp" for p, s, _ in rows):
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
if flv or rtmp_pairs:
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

def ms(us):
    return f"{us / 1000:.1f}"
hls = {(m, n): load(f"hls-{m}-{n}.json") for n in hls_ns for m in ("ts", "fmp4", "ll")}
hls = {k: r for k, r in hls.items() if r}
if hls:
    print()
    print("HLS (loadgen hls-viewers: one poller per viewer on a keep-alive connection; ts and fmp4")
    print("poll the playlist and fetch whole segments, ll does blocking reloads and fetches parts):")
    print(f"{'run':10} {'viewers':>7} {'up':>6} {'held':>6} {'Mbit/s':>7} {'srv cores':>9} {'cores/Gbps':>10} "
          f"{'lat p50':>8} {'p99':>8} {'max':>8} {'hold p50':>8} {'p99':>7} {'errors':>6} {'lg cores':>8}")
    for (m, n), r in hls.items():
        h = r["hls"]
        l, hold = h["ingest_to_received_us"], h["blocking_reload_hold_us"]
        held_cols = (f"{ms(hold['p50']):>8} {ms(hold['p99']):>7}" if m == "ll" else f"{'-':>8} {'-':>7}")
        print(f"{'hls ' + m:10} {n:>7} {r['connections']['up']:>6} {r['viewers_held']:>6} "
              f"{r['mbit_per_sec']:>7.1f} {f(r['server_cpu_cores'], '9.3f')} "
              f"{f(r['server_cores_per_gbit_s'], '10.3f')} {ms(l['p50']):>8} {ms(l['p99']):>8} "
              f"{ms(l['max']):>8} {held_cols} {sum(h['errors'].values()):>6} "
              f"{f(r['loadgen_cpu_cores'], '8.2f')}")
    print("lat = ingest → received in ms: from when the last frame of a segment (ts, fmp4) or part (ll)")
    print("was ingested (its playlist's PROGRAM-DATE-TIME plus durations) to its last byte received by")
    print("the poller; not glass-to-glass (no player buffer, no decode). hold = blocking reload, request")
    print("sent → answer received, ms. held = up for the whole window, no 3 × target duration without")
    print("new media. Mbit/s counts playlists too (socket bytes).")
    if any(r["hls"]["ingest_to_received_us"]["below_zero"] for r in hls.values()):
        print("Below 0: received before the time the playlist gives. A segment's PROGRAM-DATE-TIME is")
        print("the stream's epoch plus its stream time, the epoch fixed by the stream's first frame; a")
        print("first frame that came late (the publisher's connect) puts every date-time after the real")
        print("ingest by that much. The offset is one constant per run, so spreads (p99 − p50) hold.")
    for n in hls_ns:
        a, b = hls.get(("ts", n)), hls.get(("fmp4", n))
        if a and b and a["server_cores_per_gbit_s"] and b["server_cores_per_gbit_s"]:
            print(f"  {n:>6} viewers, TS vs fMP4: {a['server_cores_per_gbit_s']:.3f} vs "
                  f"{b['server_cores_per_gbit_s']:.3f} server cores per delivered Gbit/s "
                  f"(fMP4/TS {b['server_cores_per_gbit_s'] / a['server_cores_per_gbit_s']:.2f}); "
                  f"{a['mbit_per_sec']:.1f} vs {b['mbit_per_sec']:.1f} Mbit/s delivered")
        ll = hls.get(("ll", n))
        if ll:
            h = ll["hls"]
            print(f"  {n:>6} viewers, LL-HLS: ingest → received p50 {ms(h['ingest_to_received_us']['p50'])} "
                  f"p99 {ms(h['ingest_to_received_us']['p99'])} ms over {h['ingest_to_received_us']['count']} "
                  f"parts; {h['blocking_reloads']} blocking reloads held p50 "
                  f"{ms(h['blocking_reload_hold_us']['p50'])} ms (mean {h['blocking_reload_hold_us']['mean']/1000:.1f}); "
                  f"{h['hinted_parts']} hinted parts, {h['hint_404']} hint 404s, {h['status_503']} 503s")

def lag(name):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        return None
    shard, samples, facts = None, [], {}
    for line in open(p):
        line = line.strip()
        if line.startswith("shard="):
            shard = line[6:]
        elif "=" in line:
            k, v = line.split("=", 1)
            facts[k] = v
        elif line:
            t, sh, v = line.split()
            if sh == shard:
                samples.append(float(v) * 1000)
    samples.sort()
    q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))] if samples else None
    return {"shard": shard, "n": len(samples), "p50": q(0.5), "p99": q(0.99),
            "max": samples[-1] if samples else None, **facts}
rec = {}
for n in rec_ns:
    for mode in ("off", "on"):
        r = load(f"rec-{mode}-{n}.json")
        if r:
            rec[(mode, n)] = (r, lag(f"rec-{mode}-{n}.lag.txt") or {})
if rec:
    print()
    print("recording (media.record=all) vs none, the same publish, loadgen flv-viewers as the load:")
    print(f"{'run':10} {'viewers':>7} {'held':>6} {'Mbit/s':>7} {'srv cores':>9} {'cores/Gbps':>10} "
          f"{'shard':>5} {'lag p50':>7} {'p99':>6} {'max':>6} {'samples':>7} {'rec MB':>7} {'dropped':>7}")
    for (mode, n), (r, g) in rec.items():
        rb = g.get("record_bytes_total") or ""
        print(f"{'rec ' + mode:10} {n:>7} {r['viewers_held']:>6} {r['mbit_per_sec']:>7.1f} "
              f"{f(r['server_cpu_cores'], '9.3f')} {f(r['server_cores_per_gbit_s'], '10.3f')} "
              f"{g.get('shard') or '?':>5} {f(g.get('p50'), '7.1f')} {f(g.get('p99'), '6.1f')} "
              f"{f(g.get('max'), '6.1f')} {g.get('n', 0):>7} "
              f"{(f'{int(rb) / 1e6:.1f}' if rb.isdigit() else 'n/a'):>7} "
              f"{g.get('record_frames_dropped_total') or 'n/a':>7}")
    print("lag = liveshard_loop_lag_seconds of the publisher's shard (how late its 100 ms tick ran),")
    print("ms, sampled twice a second over the run; rec MB = liveshard_record_bytes_total at the end.")
    for n in rec_ns:
        a, b = rec.get(("off", n)), rec.get(("on", n))
        if a and b and a[0]["server_cpu_cores"] is not None and b[0]["server_cpu_cores"] is not None:
            d = b[0]["server_cpu_cores"] - a[0]["server_cpu_cores"]
            lag_d = (f"; publisher's shard lag p50 {f(a[1].get('p50'), '.1f')} → {f(b[1].get('p50'), '.1f')} ms, "
                     f"max {f(a[1].get('max'), '.1f')} → {f(b[1].get('max'), '.1f')} ms")
            print(f"  {n:>6} viewers: recording adds {d:+.3f} server cores "
                  f"({a[0]['server_cpu_cores']:.3f} → {b[0]['server_cpu_cores']:.3f}){lag_d}")
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
  echo "Parts: $ONLY. Viewers: $VIEWERS (HLS: $HLS_VIEWERS; recording: $REC_VIEWERS); ramp $RAMP"
  echo "connections/s; ${DURATION}s measured once all are up; loadgen in $PROCS processes ×"
  echo "$THREADS executors, sources $SRC."
  if wants hls; then
    echo
    echo "HLS modes: $HLS_MODES. ts: \`--set media.hls_fmp4=false\`; fmp4: \`--set media.hls_fmp4=true\`;"
    echo "ll: \`--set media.hls_low_latency=true --set media.hls_part_ms=333\` and \`loadgen hls-viewers --ll\`"
    echo "(blocking reloads, every part, the preload-hinted part too). Segments are"
    echo "media.hls_segment_secs (default 2 s) long, cut at the first keyframe after (1 s GOP)."
  fi
  if wants recording; then
    echo
    echo "Recording: the same server without and with \`--set media.record=all\` (FLV files in the"
    echo "run's data directory under /tmp, on $(df -P /tmp | awk 'NR == 2 { print $1 }')), \`loadgen flv-viewers\` as the"
    echo "load; liveshard_loop_lag_seconds of the publisher's shard sampled twice a second (rec-*.lag.txt)."
  fi
  echo
  md_commands_and_results "$COMMANDS" "$OUT/summary.txt"
} >"$OUT/SETUP.md"
echo "wrote $OUT"
