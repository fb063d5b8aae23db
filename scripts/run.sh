#!/usr/bin/env bash
# Runs the server with embedded defaults (no Redis), in release mode. Extra arguments go
# to `liveshard serve`, e.g. scripts/run.sh --shards 2 --http 0.0.0.0:8080
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -- serve "$@"
