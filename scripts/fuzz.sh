#!/usr/bin/env bash
# Runs one cargo-fuzz target for a while: scripts/fuzz.sh TARGET [SECONDS]
# Targets: ls fuzz/fuzz_targets. Seeds in fuzz/seeds/TARGET are copied into the corpus.
#
# Memory limits are part of the check: -malloc_limit_mb=64 fails any single allocation
# over 64 MiB, so a parser that allocates what a peer *declared* (a Content-Length, an RTMP
# message length, an AMF array count) is reported as a crash even when the input is small;
# -rss_limit_mb=512 catches slow growth. FUZZ_JOBS=N runs N workers (default 1).
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain build it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
secs=${2:-300}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p "fuzz/corpus/$target"
if [ -d "fuzz/seeds/$target" ]; then cp -n fuzz/seeds/"$target"/* "fuzz/corpus/$target/" 2>/dev/null || true; fi
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- \
  -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=64 -max_len=65536 \
  -print_final_stats=1
