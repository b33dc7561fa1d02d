#!/usr/bin/env bash
# Fan-out `ctl status` over 1, 10 and 50 daemons and a rolling reload over 10, on one
# machine: wall time of each ctl command, median of RUNS runs. Twice: contexts on the Unix
# sockets (ctl's fan-out and the daemons' answers), then on the daemons' TCP listeners with
# mutual TLS (the same plus a TCP connection and a TLS handshake per host; certificates made
# here with openssl). Prints Markdown tables for BENCHMARKS.md.
#
# Usage: bench/fleet.sh [BIN_DIR]
#   BIN_DIR   default target/dist-bin (the shipped binaries; built by packaging/dist.sh when
#             missing). Never the debug binaries: they are several times slower.
#   RUNS=N    runs per figure (default 11)
#   HOSTS="1 10 50"  fan-out sizes;  ROLL=10  hosts in the rolling reload
# Honours CARGO_TARGET_DIR. Needs openssl (Debian: openssl).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
bin=${1:-$TARGET/dist-bin}
RUNS=${RUNS:-11}
HOSTS=${HOSTS:-1 10 50}
ROLL=${ROLL:-10}
if [[ ! -x $bin/scriptd && $bin == "$TARGET/dist-bin" ]]; then packaging/dist.sh; fi
[[ -x $bin/scriptd && -x $bin/ctl ]] || { echo "no scriptd and ctl in $bin" >&2; exit 2; }
command -v openssl >/dev/null || { echo "bench/fleet.sh needs openssl (apt-get install openssl)" >&2; exit 2; }
bin=$(cd "$bin" && pwd)
max=0; for n in $HOSTS "$ROLL"; do ((n > max)) && max=$n; done
work=$(mktemp -d /tmp/scriptd-fleet-bench.XXXXXX)
export XDG_CONFIG_HOME=$work/cfg
unset SCRIPTD_SOCKET SCRIPTD_CONFIG SCRIPTD_CONTEXT SCRIPTD_HOST_TIMEOUT
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A CA, one server certificate for 127.0.0.1 (every daemon's), one client certificate.
pki=$work/pki; mkdir -p "$pki"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=bench-ca -keyout "$pki/ca.key" -out "$pki/ca.pem"
issue() { # NAME CN EXTENSIONS
    ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
        -keyout "$pki/$1.key" -out "$pki/$1.csr"
    ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 1 -out "$pki/$1.pem" -extfile <(printf '%s\n' "$3")
    chmod 600 "$pki/$1.key"
}
issue server scriptd $'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth'
issue client bench 'extendedKeyUsage=clientAuth'

# Loopback ports nobody listens on, one per daemon.
mapfile -t ports < <(python3 -c "
import socket
socks = [socket.socket() for _ in range($max)]
for s in socks: s.bind(('127.0.0.1', 0))
print('\n'.join(str(s.getsockname()[1]) for s in socks))")

config() { # DIR PORT EXTRA_SCRIPTS
    cat > "$1/scriptd.yaml" <<EOF
daemon:
  socket: run/s.sock
  state_dir: state
  log_dir: logs
  watch: false
  listen:
    tcp: 127.0.0.1:$2
    tls: { cert: $pki/server.pem, key: $pki/server.key, client_ca: $pki/ca.pem }
  access:
    - { cert: bench, role: operate }
scripts:
  base:
    command: ["/bin/sleep", "100000"]
$3
EOF
}
dir() { printf '%s/h-%04d' "$work" "$1"; }
# Daemons 1..N (adds the missing ones), each a Unix context u-NNNN and a TLS one t-NNNN.
start() {
    local i
    for ((i = ${#pids[@]} + 1; i <= $1; i++)); do
        local d; d=$(dir "$i"); mkdir -p "$d"; config "$d" "${ports[i - 1]}" ""
        "$bin/scriptd" --config "$d/scriptd.yaml" 2>"$d/log" & pids+=($!)
        local n; n=$(printf '%04d' "$i")
        "$bin/ctl" context add "u-$n" --endpoint "unix://$d/run/s.sock" >/dev/null
        "$bin/ctl" context add "t-$n" --endpoint "https://127.0.0.1:${ports[i - 1]}" \
            --ca "$pki/ca.pem" --cert "$pki/client.pem" --key "$pki/client.key" >/dev/null
    done
    for ((i = 1; i <= $1; i++)); do
        until "$bin/ctl" --context "t-$(printf '%04d' "$i")" status >/dev/null 2>&1; do
            kill -0 "${pids[i - 1]}" 2>/dev/null || { cat "$(dir "$i")/log" >&2; exit 1; }
            sleep 0.05
        done
    done
}
ms() { # wall time of a command, in microseconds
    local t0 t1; t0=$(date +%s%N)
    "$@" >/dev/null || echo "bench/fleet.sh: failed ($?): $*" >&2
    t1=$(date +%s%N); echo $(((t1 - t0) / 1000))
}
# Microseconds in, milliseconds with one decimal out.
msec() { awk '{printf "%.1f", $1 / 1000}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() { local k; for ((k = 0; k < RUNS; k++)); do ms "$@"; done | median | msec; }
# The first K contexts of kind P (u or t) as a --context list.
first() { local i out=""; for ((i = 1; i <= $2; i++)); do out+="${out:+,}$1-$(printf '%04d' "$i")"; done; echo "$out"; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "binaries: $bin"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  runs per figure: $RUNS (median)"
echo
echo "| what | daemons | Unix sockets | TCP + mutual TLS |"
echo "| --- | --- | --- | --- |"
for n in $HOSTS; do
    start "$n"
    u=$(timed "$bin/ctl" --context "$(first u "$n")" status --output json)
    t=$(timed "$bin/ctl" --context "$(first t "$n")" status --output json)
    echo "| fan-out \`status --output json\` | $n | $u ms | $t ms |"
done
# Rolling: the first ROLL hosts get a new script on disk, then are rolled one at a time;
# each run adds another script, so every host has a change each time.
start "$ROLL"
declare -A roll
for kind in u t; do
    times=()
    for ((run = 1; run <= RUNS; run++)); do
        for ((i = 1; i <= ROLL; i++)); do
            config "$(dir "$i")" "${ports[i - 1]}" "  $kind$run:
    command: [\"/bin/sleep\", \"100000\"]"
        done
        times+=("$(ms "$bin/ctl" --context "$(first "$kind" "$ROLL")" reload --rolling)")
    done
    roll[$kind]=$(printf '%s\n' "${times[@]}" | median | msec)
done
echo "| rolling \`reload\` (one host at a time) | $ROLL | ${roll[u]} ms | ${roll[t]} ms |"
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
