#!/usr/bin/env bash
# scriptd vs supervisord on identical workloads, in one run, reported as ratios
# (BENCHMARKS.md, "scriptd vs supervisord").
#
# Builds scriptd in release mode (the `dist` profile the package ships: fat LTO, size-optimised
# but for the log path), installs supervisor from PyPI into bench/.venv when it is
# missing, then runs bench/compare.py: each scenario for both supervisors, alternating A B A B
# over several rounds, in a temp dir (Unix sockets and files only). Prints a Markdown report.
#
# Usage: bench/compare.sh [--rounds N] [--only 1,2,3,4,5,6] [--markdown FILE] [--json FILE]
#                         [--profile release|dist] [--keep]
#   --rounds N   rounds per scenario (default: 5 for scenarios 1-3, 3 for 4-6)
#   --profile P  cargo profile to build and measure (default: dist)
#   --keep       leave the work directory (configs, logs) behind for inspection
# BIN_DIR=DIR (holding scriptd, scriptd-shim, ctl) measures those binaries, building nothing.
#
# Every process it starts is stopped by pid at the end, also on Ctrl-C or SIGTERM: the driver
# stops what it started; this script then stops, by pid, anything still running whose command
# line names the work directory (every daemon, CLI and script of the run does).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}

keep=0
profile=dist
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --profile) profile=$2; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done

if [ -n "${BIN_DIR:-}" ]; then
  bins=$BIN_DIR # already built (scriptd, scriptd-shim, ctl): nothing is built
elif [ "$profile" = dist ]; then
  packaging/dist.sh # what the package ships: target/dist-bin
  bins=$TARGET/dist-bin
else
  cargo build --profile "$profile" --locked -p scriptd -p ctl
  bins=$TARGET/$profile
fi

venv=bench/.venv
if [ ! -x "$venv/bin/supervisord" ] || ! "$venv/bin/python" -c 'import supervisor' 2>/dev/null; then
  echo "installing supervisor into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check supervisor
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/scriptd-cmp.XXXXXX")
driver=

# Stop, by pid, every process still alive whose command line names the work directory.
sweep() {
  local pass pid cmd found
  for pass in TERM TERM KILL; do
    found=0
    for d in /proc/[0-9]*; do
      pid=${d#/proc/}
      [ "$pid" = $$ ] && continue
      cmd=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline") || continue
      case $cmd in
        *"$work"*) kill -"$pass" "$pid" 2>/dev/null && found=1 ;;
      esac
    done
    [ $found = 0 ] && return 0
    sleep 1
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    wait "$driver" 2>/dev/null || true
  fi
  sweep
  if [ $keep = 1 ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# In the background so that a signal to this script is handled at once (the trap stops the
# driver, which stops everything it started).
python3 bench/compare.py --root . --bin "$bins" --profile "$profile" --venv "$venv" --work "$work" "${args[@]}" &
driver=$!
wait "$driver"
echo "bench/compare.sh: ${SECONDS} s in all (build, venv, benchmark)" >&2
