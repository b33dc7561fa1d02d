#!/usr/bin/env bash
# Fan-out `ctl status` over 1, 10 and 50 daemons (contexts on Unix sockets) and a rolling
# reload over 10: wall time, median of 5 runs. Prints a Markdown table.
# Usage: bench/fleet.sh [BIN_DIR]   (default target/dist-bin, built by packaging/dist.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
bin=${1:-$TARGET/dist-bin}
if [[ ! -x $bin/scriptd ]]; then packaging/dist.sh; fi
bin=$(cd "$bin" && pwd)
work=$(mktemp -d /tmp/scriptd-fleet-bench.XXXXXX)
export XDG_CONFIG_HOME=$work/cfg
unset SCRIPTD_SOCKET SCRIPTD_CONFIG SCRIPTD_CONTEXT
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

config() { # DIR EXTRA
    printf 'daemon:\n  socket: run/s.sock\n  state_dir: state\n  log_dir: logs\n  watch: false\nscripts:\n  base:\n    command: ["/bin/sleep", "100000"]\n%s' "$2" > "$1/scriptd.yaml"
}
start() { # N: daemons h-0001.. (adds the missing ones)
    local i
    for ((i = ${#pids[@]} + 1; i <= $1; i++)); do
        local d; d=$work/$(printf 'h-%04d' "$i"); mkdir -p "$d"; config "$d" ""
        "$bin/scriptd" --config "$d/scriptd.yaml" 2>"$d/log" & pids+=($!)
        "$bin/ctl" context add "$(basename "$d")" --endpoint "unix://$d/run/s.sock" >/dev/null
    done
    for ((i = 1; i <= $1; i++)); do
        local s; s=$work/$(printf 'h-%04d' "$i")/run/s.sock
        until [[ -S $s ]]; do sleep 0.05; done
    done
}
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start; binaries: $bin"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| what | daemons | wall time (median of 5) |"
echo "| --- | --- | --- |"
for n in 1 10 50; do
    start "$n"
    t=$(for _ in 1 2 3 4 5; do ms "$bin/ctl" --context "h-*" status --output json; done | median)
    echo "| fan-out \`status\` | $n | $t ms |"
done
# Rolling: the first 10 hosts get a new script on disk, then are rolled one at a time.
times=()
for run in 1 2 3 4 5; do
    for ((i = 1; i <= 10; i++)); do config "$work/$(printf 'h-%04d' "$i")" "  r$run:
    command: [\"/bin/sleep\", \"100000\"]
"; done
    times+=("$(ms "$bin/ctl" --context "h-000*,h-0010" reload --rolling)")
done
echo "| rolling \`reload\` (one host at a time) | 10 | $(printf '%s\n' "${times[@]}" | median) ms |"
