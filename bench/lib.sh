# bench/lib.sh — pieces of SETUP.md that every benchmark script writes the same way.
# Sourced by bench/fanout.sh, bench/media.sh and bench/cluster.sh; expects ROOT (the
# repository root).

# md_machine CORES: the "## Machine" list without its last, script-specific line.
md_machine() {
  echo "## Machine"
  echo
  echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $1 cores (nproc)"
  echo "- Kernel: $(uname -r)"
  echo "- Memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "- Limits: nofile $(ulimit -Hn) (hard), memlock $(ulimit -l) KiB"
}

# liveshard_rev: the commit the server was built from, flagged when the tree differs.
liveshard_rev() {
  echo "${LIVESHARD_REV:-$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- src shards Cargo.toml Cargo.lock || echo ' + uncommitted changes')}"
}

# crate_version LOCKFILE NAME: a crate's version from a Cargo.lock.
crate_version() {
  awk -v n="name = \"$2\"" '$0 == n {getline; print $3}' "$1" | tr -d '"'
}

# md_commands_and_results COMMANDS_FILE SUMMARY_FILE
md_commands_and_results() {
  echo "## Commands"
  echo
  echo '```'
  cat "$1"
  echo '```'
  echo
  echo "## Results"
  echo
  echo '```'
  cat "$2"
  echo '```'
}
