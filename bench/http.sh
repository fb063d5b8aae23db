#!/usr/bin/env bash
# HTTP front throughput: wrk against liveshard's /healthz with --shards 1 and 2, side by side
# with nginx serving a static file of the same bytes and Content-Type on the same machine,
# with as many nginx workers as liveshard shards. Prints requests/s and the ratio.
#
#   bench/http.sh [DURATION_SECS] [CONNECTIONS]     (needs: wrk, nginx — Debian packages)
#
# wrk runs on the same machine, so on a small box it competes with the server for CPU;
# both servers face the same load generator, which is what makes the ratio meaningful.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
conns=${2:-64}
wrk_threads=${WRK_THREADS:-1}
for c in wrk nginx; do
  command -v $c >/dev/null || { echo "bench/http.sh needs $c: apt-get install -y $c" >&2; exit 1; }
done
cargo build --release -q
bin=target/release/liveshard
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

rps() { # url -> requests/sec from wrk
  wrk -t"$wrk_threads" -c"$conns" -d"${dur}s" --latency "$1" > "$work/wrk.txt"
  local r p99
  r=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
  echo "$r $p99"
}

declare -A result
for shards in 1 2; do
  port=$(free_port)
  "$bin" serve --http "127.0.0.1:$port" --shards "$shards" --data-dir "$work/data" --log-level warn > "$work/ls.out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "liveshard ready" "$work/ls.out" && break; sleep 0.1; done
  body_file="$work/healthz.json"
  curl -s "http://127.0.0.1:$port/healthz" > "$body_file"
  read -r r p <<<"$(rps "http://127.0.0.1:$port/healthz")"
  result[liveshard,$shards]="$r $p"
  kill -TERM $pid; wait $pid || true

  port=$(free_port)
  mkdir -p "$work/nginx/logs" "$work/www"
  cp "$body_file" "$work/www/healthz"
  cat > "$work/nginx/nginx.conf" <<CONF
worker_processes $shards;
worker_cpu_affinity auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$port reuseport;
    location = /healthz { default_type application/json; root $work/www; }
  }
}
CONF
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
  npid=$!
  sleep 0.5
  read -r r p <<<"$(rps "http://127.0.0.1:$port/healthz")"
  result[nginx,$shards]="$r $p"
  kill -QUIT $npid; wait $npid || true
done

printf '%-8s %-10s %14s %10s\n' cores server "requests/s" p99
for shards in 1 2; do
  for s in liveshard nginx; do
    read -r r p <<<"${result[$s,$shards]}"
    printf '%-8s %-10s %14s %10s\n' "$shards" "$s" "$r" "$p"
  done
  read -r a _ <<<"${result[liveshard,$shards]}"
  read -r b _ <<<"${result[nginx,$shards]}"
  printf '%-8s ratio liveshard/nginx: %s\n' "$shards" "$(python3 -c "print(f'{$a/$b:.2f}')")"
done
echo "body: $(wc -c < "$work/healthz.json") bytes; wrk -t$wrk_threads -c$conns -d${dur}s; $(nproc) cores"
