#!/usr/bin/env bash
# Log capture and follow benchmark (not a test).
#
#  1. Throughput: a Python script writes 1,000,000 lines of ~50 bytes as fast as it can.
#     Ceiling: the same program redirected straight to a file. Through scriptd: the program
#     run by the daemon, its lines captured into the script's log file (with the default
#     rotation settings); the time is from the run's start marker to its end marker in the
#     log file (the end marker is written after every line of the run is in the file).
#     Both are measured RUNS times, alternating, in the same invocation; medians reported.
#     The daemon's CPU time (utime + stime from /proc/PID/stat) over each run through it
#     is the capture's cost per 1,000,000 lines.
#  2. Follow delay: a script prints 1,000 lines/s, each carrying the time it was written;
#     a reader of `ctl logs -f --raw` stamps each line on arrival. Median and p99.
#
# Usage: bench/logs.sh [RUNS]   (default 5). Needs bash, python3, cargo.
# BIN_DIR=DIR (holding scriptd, scriptd-shim, ctl) uses those binaries instead of building
# them with packaging/dist.sh.
set -euo pipefail

RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "${BIN_DIR:-}" ]; then
    packaging/dist.sh
    BIN_DIR=$TARGET/dist-bin
fi

DIR=$(mktemp -d /tmp/scriptd-bench.XXXXXX)
# Private copies: a rebuild during the run must not swap the binary under the daemon (its
# shim re-executes the daemon's own binary).
cp "$BIN_DIR/scriptd" "$BIN_DIR/scriptd-shim" "$BIN_DIR/ctl" "$DIR/"
SCRIPTD="$DIR/scriptd"
CTL="$DIR/ctl"
DAEMON_PID=
cleanup() {
    if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT

cat > "$DIR/writer.py" <<'EOF'
import sys
pad = "x" * 40
w = sys.stdout.write
for i in range(1000000):
    w(f"{i:09d} {pad}\n")
EOF

cat > "$DIR/ticker.py" <<'EOF'
import sys, time
# 1,000 lines/s on an absolute schedule; each line carries its write time (ns).
n = int(sys.argv[1])
start = time.monotonic()
for i in range(n):
    target = start + i / 1000.0
    d = target - time.monotonic()
    if d > 0:
        time.sleep(d)
    sys.stdout.write(f"{time.time_ns()} {i}\n")
    sys.stdout.flush()
EOF

cat > "$DIR/reader.py" <<'EOF'
import subprocess, sys, time
# Reads `ctl logs -f` until `n` lines arrived; prints the delays (ms), one per line.
ctl, sock, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = subprocess.Popen([ctl, "--socket", sock, "logs", "tick", "-f", "-n", "0", "--raw"],
                     stdout=subprocess.PIPE, bufsize=0)
out = p.stdout
buf = b""
got = 0
delays = []
ready = open(sys.argv[4], "w"); ready.write("ready\n"); ready.close()
while got < n:
    chunk = out.read1(65536) if hasattr(out, "read1") else out.read(65536)
    if not chunk:
        break
    now = time.time_ns()
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for l in lines:
        sent = int(l.split(b" ")[0])
        delays.append((now - sent) / 1e6)
        got += 1
p.kill()
for d in delays:
    print(f"{d:.3f}")
EOF

cat > "$DIR/scriptd.yaml" <<EOF
daemon:
  socket: run/scriptd.sock
  state_dir: state
  log_dir: logs
scripts:
  bench:
    command: ["python3", "$DIR/writer.py"]
    enabled: false
    log: { max_bytes: 4GiB, keep: 1 }   # the whole benchmark in one file
  tick:
    command: ["python3", "-u", "$DIR/ticker.py", "6000"]
    enabled: false
EOF
chmod 644 "$DIR/scriptd.yaml"

# The writer writes with Python's default buffering (8 KiB writes), whatever the caller's
# environment says: PYTHONUNBUFFERED=1 makes it one write(2) per line, a different benchmark
# (the daemon then wakes for nearly every line). The daemon passes its environment on.
unset PYTHONUNBUFFERED
"$SCRIPTD" --config "$DIR/scriptd.yaml" > "$DIR/daemon.log" 2>&1 &
DAEMON_PID=$!
C=("$CTL" --socket "$DIR/run/scriptd.sock")
for _ in $(seq 100); do "${C[@]}" status > /dev/null 2>&1 && break; sleep 0.05; done

ms_since_epoch() { python3 -c 'import time; print(time.time_ns() // 1000000)'; }
# The daemon's CPU time so far (ms): utime + stime, fields 14 and 15 of /proc/PID/stat.
daemon_cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1000 / hz }' "/proc/$DAEMON_PID/stat"; }

# "MS LINES" of run RUN of `bench`: time between its start and end markers in the log file,
# and the records between them (sequence numbers are gapless: end seq - start seq - 1).
run_ms() {
    python3 - "$(grep -h " sys run $1 started" "$DIR"/logs/bench.log*)" "$(grep -h " sys run $1 ended" "$DIR"/logs/bench.log*)" <<'EOF'
import sys, datetime
def parse(line):
    t, seq = line.split(" ")[:2]
    dt = datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp() * 1000, int(seq)
(t0, s0), (t1, s1) = parse(sys.argv[1]), parse(sys.argv[2])
print(int(round(t1 - t0)), s1 - s0 - 1)
EOF
}

ceil_ms=()
null_ms=()
daemon_ms=()
cpu_ms=()
for r in $(seq 1 "$RUNS"); do
    # Each measurement starts with no dirty pages from the one before.
    sync
    t0=$(ms_since_epoch)
    python3 "$DIR/writer.py" > "$DIR/ceiling.out"
    t1=$(ms_since_epoch)
    ceil_ms+=($((t1 - t0)))
    rm -f "$DIR/ceiling.out"
    sync
    t0=$(ms_since_epoch)
    python3 "$DIR/writer.py" > /dev/null
    t1=$(ms_since_epoch)
    null_ms+=($((t1 - t0)))
    sync

    # `run --wait` is one call that returns at the run's end: nothing else asks the daemon
    # for anything meanwhile (polling `ctl logs` for the end marker used to: a backlog
    # filtered to the system stream reads the big log file back, which cost more CPU than
    # the capture).
    c0=$(daemon_cpu_ms)
    "${C[@]}" run --wait --timeout 300s bench > /dev/null
    cpu_ms+=($(( $(daemon_cpu_ms) - c0 )))
    for _ in $(seq 600); do
        "${C[@]}" logs bench --stream system -n 1 --output json 2>/dev/null | grep -q "run $r ended" && break
        sleep 0.05
    done
    read -r ms lines < <(run_ms "$r")
    if [ "$lines" != 1000000 ]; then echo "run $r: $lines lines in the log, expected 1000000" >&2; exit 1; fi
    daemon_ms+=("$ms")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
C_MS=$(median "${ceil_ms[@]}")
N_MS=$(median "${null_ms[@]}")
D_MS=$(median "${daemon_ms[@]}")
CPU_MS=$(median "${cpu_ms[@]}")

# Follow delay: reader attached first, then the ticker runs 6 s; the first 1,000 lines
# (start-up) are dropped, 5,000 measured.
rm -f "$DIR/ready"
python3 "$DIR/reader.py" "$CTL" "$DIR/run/scriptd.sock" 6000 "$DIR/ready" > "$DIR/delays" &
READER=$!
for _ in $(seq 100); do [ -e "$DIR/ready" ] && break; sleep 0.05; done
sleep 0.3
"${C[@]}" run tick > /dev/null
wait "$READER"
read -r DELAY_N DELAY_MED DELAY_P99 < <(tail -n +1001 "$DIR/delays" | sort -n | awk '{a[NR]=$1} END {printf "%d %.3f %.3f\n", NR, a[int(NR*0.5)], a[int(NR*0.99)]}')

echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%dT%H:%MZ)"
echo "throughput runs (ms): ceiling ${ceil_ms[*]} | /dev/null ${null_ms[*]} | through scriptd ${daemon_ms[*]}"
echo "daemon CPU per run (ms): ${cpu_ms[*]}"
echo
printf '| %-52s | %14s |\n' "metric" "value"
printf '|%s|%s|\n' "------------------------------------------------------" "----------------"
printf '| %-52s | %14s |\n' "ceiling: writer > file (1M lines, median ms)" "$C_MS"
printf '| %-52s | %14s |\n' "through scriptd to the log file (median ms)" "$D_MS"
printf '| %-52s | %14s |\n' "ceiling lines/s" "$(awk -v m="$C_MS" 'BEGIN {printf "%.0f", 1e6 / m * 1000}')"
printf '| %-52s | %14s |\n' "through scriptd lines/s" "$(awk -v m="$D_MS" 'BEGIN {printf "%.0f", 1e6 / m * 1000}')"
printf '| %-52s | %14s |\n' "ratio to the ceiling (target >= 0.95)" "$(awk -v c="$C_MS" -v d="$D_MS" 'BEGIN {printf "%.2f", c / d}')"
printf '| %-52s | %14s |\n' "daemon CPU per 1M lines (median ms, target <= 150)" "$CPU_MS"
printf '| %-52s | %14s |\n' "stricter: writer > /dev/null (median ms)" "$N_MS"
printf '| %-52s | %14s |\n' "ratio to writer > /dev/null" "$(awk -v c="$N_MS" -v d="$D_MS" 'BEGIN {printf "%.2f", c / d}')"
printf '| %-52s | %14s |\n' "follow delay median at 1,000 lines/s (ms, n=$DELAY_N)" "$DELAY_MED"
printf '| %-52s | %14s |\n' "follow delay p99 at 1,000 lines/s (ms, target <= 5)" "$DELAY_P99"
