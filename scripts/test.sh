#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian machine
# (only the Rust toolchain assumed), then runs every test in the workspace.
#
# Tests start real components themselves on free loopback ports: the liveshard binary,
# redis-server, ffmpeg/ffprobe, a current static ffmpeg (imageio-ffmpeg, from PyPI), nginx
# with its RTMP module (libnginx-mod-rtmp), Chromium, and run openapi-spec-validator (Python,
# from PyPI). The JavaScript tests (the SDK, clients/sdk, and the demo page in headless
# Chromium, clients/web) run on Node with the npm packages of clients/package-lock.json;
# Chromium is Debian's (playwright-core drives it; no browser is downloaded). Nothing here
# starts a service (where Debian's nginx package starts its own on installation, the tests
# do not use it).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, as "command:package".
needs=(
  "ffmpeg:ffmpeg"
  "ffprobe:ffmpeg"
  "redis-server:redis-server"
  "redis-cli:redis-tools"
  "node:nodejs"
  "npm:npm"
  "chromium:chromium"
  "curl:curl"
  "openssl:openssl"
  "nginx:nginx"
)
# Packages that bring no command, as "file:package" (tests/migration.rs loads the module).
needs_files=(
  "/usr/lib/nginx/modules/ngx_rtmp_module.so:libnginx-mod-rtmp"
)
missing=()
for pair in "${needs[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  # nginx lives in /usr/sbin, which is not on every user's PATH.
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] \
    && [[ " ${missing[*]} " != *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done
for pair in "${needs_files[@]}"; do
  file=${pair%%:*} pkg=${pair#*:}
  if [ ! -e "$file" ] && [[ " ${missing[*]} " != *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "test.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python packages the tests use, as "module:package": tests/api_openapi.rs validates the
# OpenAPI document; tests/enhanced_rtmp.rs publishes HEVC and AV1 over Enhanced RTMP with
# the current static ffmpeg that imageio-ffmpeg ships (Debian's ffmpeg 5.1 predates it).
for pair in "openapi_spec_validator:openapi-spec-validator" "imageio_ffmpeg:imageio-ffmpeg"; do
  module=${pair%%:*} pkg=${pair#*:}
  if python3 -c "import $module" >/dev/null 2>&1; then
    continue
  fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "test.sh: installing python3-pip" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip
  fi
  echo "test.sh: installing $pkg (pip)" >&2
  # Debian marks its own Python as externally managed (PEP 668): there a user install is
  # what the test needs; in a virtualenv or pyenv the plain install works.
  python3 -m pip install --quiet "$pkg" 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages "$pkg"
done

cargo test --workspace --all-targets "$@"

# The JavaScript clients: the SDK's unit tests and its wx path, and the demo page in headless
# Chromium, against the server binary cargo just built. npm ci runs when a package of the
# lock file is missing (a fresh checkout, or one from before a package was added).
if ! node scripts/npm-check.mjs clients; then
  echo "test.sh: installing clients/ npm packages (npm ci)" >&2
  npm ci --prefix clients --no-audit --no-fund --loglevel=error
fi
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir="$PWD/$target_dir"
LIVESHARD_BIN="$target_dir/debug/liveshard" node --test clients/sdk/test/*.test.mjs clients/web/test/*.test.mjs
