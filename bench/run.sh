#!/usr/bin/env bash
# Builds the shipped binaries (packaging/dist.sh: the `dist` profile, ctl linked statically)
# and the benchmark driver, and runs its benchmarks; prints a Markdown table.
# Usage: bench/run.sh [status|reload|rss|scrape|etcd]... (default: the first three; etcd needs
# Debian's etcd-server)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
packaging/dist.sh
cargo build --profile dist --locked -p scriptd-bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
"$TARGET/dist/scriptd-bench" "$TARGET/dist-bin" "$@"
