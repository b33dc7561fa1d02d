#!/usr/bin/env bash
# COUNT `/bin/sleep` services (default 5,000) under RLIMIT_NOFILE LIMIT (default 524288,
# systemd's default hard limit; soft = hard): the time until all run, the daemon's
# descriptors (per running service), its resident memory. Raising the hard limit needs
# CAP_SYS_RESOURCE; without it the hard limit in force is used (and said).
# Usage: bench/services.sh [COUNT] [LIMIT]
# BIN_DIR=target/debug (or release) uses already built binaries instead of packaging/dist.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
count=${1:-5000}
limit=${2:-524288}
if [ -z "${BIN_DIR:-}" ]; then
    packaging/dist.sh
    BIN_DIR=$TARGET/dist-bin
fi
BIN_DIR=$(realpath "$BIN_DIR")
dir=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
{
    printf 'daemon:\n  socket: run/scriptd.sock\n  state_dir: state\n  log_dir: logs\n'
    printf '  watch: false\nscripts:\n'
    for i in $(seq 0 $((count - 1))); do
        printf '  s%d:\n    command: ["/bin/sleep", "100000.%d"]\n' "$i" "$i"
    done
} > "$dir/scriptd.yaml"

running() {
    "$BIN_DIR/ctl" --socket "$dir/run/scriptd.sock" status --output json 2>/dev/null |
        grep -Eo '"state": *"running"' | wc -l || true
}

start=$(date +%s.%N)
(
    if ! ulimit -Hn "$limit" 2>/dev/null; then
        echo "cannot raise the hard limit to $limit (no CAP_SYS_RESOURCE here):" \
            "using the hard limit $(ulimit -Hn)" >&2
    fi
    ulimit -Sn "$(ulimit -Hn)"
    exec "$BIN_DIR/scriptd" --config "$dir/scriptd.yaml" 2> "$dir/daemon.log"
) &
pid=$!
n=0
for _ in $(seq 1 1200); do
    n=$(running)
    [ "$n" -ge "$count" ] && break
    sleep 0.25
done
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
fds=$(ls "/proc/$pid/fd" | wc -l)
logs=$(ls -l "/proc/$pid/fd" | grep -c "$dir/logs/" || true)
rss=$(awk '/VmRSS/ {print $2 " " $3}' "/proc/$pid/status")
limits=$(awk '/Max open files/ {print $4 "/" $5}' "/proc/$pid/limits")
echo "services running: $n of $count (RLIMIT_NOFILE $limits) after ${elapsed}s"
echo "daemon descriptors: $fds, of which log files: $logs;" \
    "per running service, log files aside: $(echo "scale=2; ($fds - $logs) / $n" | bc)"
echo "daemon RSS: $rss"
echo "'cannot start' in the daemon log: $(grep -c 'cannot start' "$dir/daemon.log" || true)"
