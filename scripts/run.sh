#!/usr/bin/env bash
# Runs the server locally with dev defaults, in release mode: embedded storage (no Redis),
# the dev login on (POST /api/v1/auth/dev), and the demo page at /demo/ (its player
# libraries installed from npm into clients/node_modules the first time). Once the server is
# ready it creates a room and prints the ffmpeg command that publishes a test pattern to it
# and the demo page's URL. Extra arguments go to `liveshard serve`, e.g.
#   scripts/run.sh --shards 2 --http 0.0.0.0:8080
# Plain `cargo run --release -- serve` runs the server without any of this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "run.sh: the demo page needs node and npm (apt-get install nodejs npm); serving without it" >&2
elif ! node scripts/npm-check.mjs clients; then
  echo "run.sh: installing the demo page's packages (npm ci --prefix clients)" >&2
  npm ci --prefix clients --no-audit --no-fund --loglevel=error
fi

# Called with the server's ready line: a room to play with, and where to look.
announce() {
  local addr=${1#*http=}
  addr=${addr%% *}
  case $addr in 0.0.0.0:*) addr="127.0.0.1:${addr#*:}" ;; \[::\]:*) addr="[::1]:${addr##*:}" ;; esac
  command -v node >/dev/null 2>&1 || { echo "demo: http://$addr/demo/?room=ROOM_ID"; return; }
  node --input-type=module - "$addr" <<'JS' || echo "demo: http://$addr/demo/?room=ROOM_ID"
const base = `http://${process.argv[2]}/api/v1`;
const call = async (path, token, body) => {
  const res = await fetch(base + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (json.code !== 0) throw new Error(`${path}: ${json.message}`);
  return json.data;
};
const { token } = await call('/auth/dev', null, { uid: 'demo-host', nick: 'Demo host' });
const room = await call('/rooms', token, { title: 'Demo room' });
console.log(`
publish a test pattern:
  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=25 -re -f lavfi -i sine=frequency=440 \\
    -c:v libx264 -preset veryfast -g 50 -pix_fmt yuv420p -c:a aac -f flv '${room.push.url}'
demo page (HTTP-FLV, or add &player=hls):
  http://${process.argv[2]}/demo/?room=${room.id}
`);
JS
}

cargo run --release -- serve --set auth.dev_login=true "$@" | while IFS= read -r line; do
  printf '%s\n' "$line"
  case $line in "liveshard ready "*) announce "$line" ;; esac
done
