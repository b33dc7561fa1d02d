#!/usr/bin/env bash
# Builds scriptd with the `dist` profile (release + fat LTO, one codegen unit, stripped) and runs its benchmarks; prints a Markdown table.
# Usage: bench/run.sh [status|reload|rss]...
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile dist --locked -p scriptd -p ctl -p scriptd-bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
target/dist/scriptd-bench target/dist "$@"
