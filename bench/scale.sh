#!/usr/bin/env bash
# Issue 16's scale benchmark: 1,000 / 5,000 / 10,000 scripts (periodic, then services) on
# one daemon each — start → answering, RSS settled and after SAVES saves, `ctl status`
# table / JSON / NAME next to `/bin/true`, save → changed script running, daemon CPU per
# save — then 1,000 `Logs` followers of one busy script and 100 `Events` followers during
# 100 saves. Prints the Markdown tables BENCHMARKS.md carries (progress on stderr).
# Usage: bench/scale.sh [--quick] [--scripts 1000,5000,10000] [--kinds periodic,services]
#                       [--saves 1000] [--timed 100] [--followers 1000] [--lines 1000]
#                       [--files 1,100]
#   --quick: 1,000 scripts, 100 saves (all timed), 20 `ctl` rounds, 100 log followers.
#   --files: a row per number of files the scripts are spread over (1: one file; N: a main
#   file including N files, a save rewriting the one that holds the changed service).
# BIN_DIR=target/release (say) uses already built binaries instead of packaging/dist.sh.
# 10,000 services need ~30,000 descriptors: the hard RLIMIT_NOFILE is raised to 524288
# when allowed (CAP_SYS_RESOURCE), else the hard limit in force is used (and said); a
# services row that cannot fit under it is printed as not run, with what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
while [ $# -gt 0 ]; do
    case $1 in
        --quick)
            export SCALE_SCRIPTS=1000 SCALE_SAVES=100 SCALE_TIMED=100 SCALE_RUNS=20 \
                SCALE_FOLLOWERS=100 ;;
        --scripts) export SCALE_SCRIPTS=$2; shift ;;
        --kinds) export SCALE_KINDS=$2; shift ;;
        --files) export SCALE_FILES=$2; shift ;;
        --saves) export SCALE_SAVES=$2; shift ;;
        --timed) export SCALE_TIMED=$2; shift ;;
        --followers) export SCALE_FOLLOWERS=$2; shift ;;
        --lines) export SCALE_LINES=$2; shift ;;
        *) echo "bench/scale.sh: unknown argument $1 (see the usage at the top)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${BIN_DIR:-}" ]; then
    packaging/dist.sh
    BIN_DIR=$TARGET/dist-bin
fi
cargo build --profile dist --locked -p scriptd-bench
if ! ulimit -Hn 524288 2>/dev/null; then
    echo "bench/scale.sh: cannot raise the hard descriptor limit (no CAP_SYS_RESOURCE):" \
        "using $(ulimit -Hn)" >&2
fi
ulimit -Sn "$(ulimit -Hn)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  RLIMIT_NOFILE $(ulimit -Sn)"
echo
start=$(date +%s)
"$TARGET/dist/scriptd-bench" "$BIN_DIR" scale
echo
echo "($(( $(date +%s) - start )) s)"
