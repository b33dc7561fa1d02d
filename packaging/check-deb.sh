#!/usr/bin/env bash
# Checks the package packaging/deb.sh built, as an operator would meet it: lintian reports no
# error; then (root only: it really installs it) `dpkg -i`, every file where the unit and
# /etc/scriptd/scriptd.yaml expect it, the binaries stripped, the bash completion a file
# that defines `complete -p ctl`, `scriptd --check` on the packaged config, `systemd-analyze
# verify` on the unit, the daemon started as the unit starts it and answering `ctl`, and
# finally `dpkg --purge`, which must leave none of its files behind.
# Usage: packaging/check-deb.sh [PATH.deb]   (default: the one in target/deb/)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(dpkg-parsechangelog -S Version)
deb=${1:-${CARGO_TARGET_DIR:-target}/deb/scriptd_${version}_$(dpkg --print-architecture).deb}
fail() { echo "packaging/check-deb.sh: $*" >&2; exit 1; }
[ -f "$deb" ] || fail "$deb not found: build it with packaging/deb.sh"
command -v lintian >/dev/null || fail "lintian not found: apt-get install lintian"

echo "--- lintian $deb"
lintian --fail-on error --tag-display-limit 0 "$deb"

[ "$(id -u)" = 0 ] || { echo "not root: the install checks are skipped" >&2; exit 0; }
if dpkg-query -W -f '${Status}' scriptd 2>/dev/null | grep -q 'ok installed'; then
  fail "a scriptd package is already installed here; this check installs and purges its own"
fi
for d in /etc/scriptd /run/scriptd /var/lib/scriptd /var/log/scriptd; do
  [ ! -e "$d" ] || fail "$d exists: this check installs, runs and purges its own scriptd; run it where none is"
done

echo "--- dpkg -i"
dpkg -i "$deb"
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  dpkg --purge scriptd >/dev/null 2>&1 || true
  rm -rf /run/scriptd /var/lib/scriptd /var/log/scriptd
}
trap cleanup EXIT

unit=$(dpkg -L scriptd | grep -E 'systemd/system/scriptd\.service$') || fail "no unit installed"
for f in /usr/bin/scriptd /usr/bin/ctl /usr/libexec/scriptd/scriptd-shim; do
  [ -x "$f" ] || fail "$f missing or not executable"
  if readelf -S "$f" | grep -qE '\.symtab|\.debug_'; then fail "$f is not stripped"; fi
done
for f in /etc/scriptd/scriptd.yaml /usr/share/man/man8/scriptd.8.gz /usr/share/man/man1/ctl.1.gz \
  /usr/share/bash-completion/completions/ctl /usr/share/zsh/vendor-completions/_ctl \
  /usr/share/fish/vendor_completions.d/ctl.fish; do
  [ -f "$f" ] || fail "$f missing (or not a regular file)"
done
[ -d /etc/scriptd/scripts.d ] || fail "/etc/scriptd/scripts.d missing"
dpkg-query -W -f '${Conffiles}\n' scriptd | grep -q '/etc/scriptd/scriptd.yaml' \
  || fail "/etc/scriptd/scriptd.yaml is not a conffile"
bash -c 'source /usr/share/bash-completion/completions/ctl && complete -p ctl' >/dev/null \
  || fail "the bash completion does not define a completion for ctl"
# Every program the unit runs exists.
for exe in $(sed -n 's/^Exec[A-Za-z]*=[-@!+:]*\([^ ]*\).*/\1/p' "$unit"); do
  [ -x "$exe" ] || fail "$unit runs $exe, which is not installed"
done

echo "--- scriptd --check --config /etc/scriptd/scriptd.yaml"
scriptd --check --config /etc/scriptd/scriptd.yaml

echo "--- systemd-analyze verify $unit"
command -v systemd-analyze >/dev/null || fail "systemd-analyze not found: apt-get install systemd"
systemd-analyze verify "$unit"

echo "--- the daemon as the unit starts it"
# Without systemd as init here, make the directories its RuntimeDirectory=, StateDirectory=
# and LogsDirectory= would (same modes), then run the unit's ExecStart.
install -d -m 0700 /run/scriptd /var/lib/scriptd
install -d -m 0750 /var/log/scriptd
start=$(sed -n 's/^ExecStart=//p' "$unit")
$start &
daemon_pid=$!
for _ in $(seq 100); do
  ctl status >/dev/null 2>&1 && break
  kill -0 "$daemon_pid" 2>/dev/null || fail "scriptd exited at start"
  sleep 0.1
done
ctl status
ctl run example --wait || fail "ctl run example --wait failed"
grep -q 'scriptd is running as root' /var/log/scriptd/example.log \
  || fail "the example script's line is not in /var/log/scriptd/example.log"
kill "$daemon_pid"; wait "$daemon_pid" || fail "scriptd did not exit 0 on SIGTERM"
daemon_pid=

echo "--- dpkg --purge"
dpkg --purge scriptd
for f in /usr/bin/scriptd /usr/bin/ctl /usr/libexec/scriptd /etc/scriptd/scriptd.yaml "$unit"; do
  [ ! -e "$f" ] || fail "$f is still there after dpkg --purge"
done
echo "packaging/check-deb.sh: $deb is good"
