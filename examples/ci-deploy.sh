#!/usr/bin/env bash
# Deploy one config file to a running scriptd the way a CI job would:
#
#   1. preview  the candidate: `ctl reload --dry-run --file TARGET=CANDIDATE` (writes nothing)
#   2. apply    exactly what was previewed: `ctl reload --file TARGET=CANDIDATE --plan ID
#               --wait` (the file is written into place and applied in one call, only if
#               nothing moved since the preview; the answer comes once every script the
#               apply started or restarted is ready, within the daemon's `reload.verify`)
#   3. check    that every script stays up for a while: `ctl status --check`
#   4. roll back to the version that ran before if the apply was not verified or the check
#               fails: `ctl rollback V` (which also writes that version's files back to disk)
#
# Usage: ci-deploy.sh TARGET CANDIDATE
#   TARGET     the config file to replace or add, relative to the main config file's
#              directory: `scriptd.yaml`, `scripts.d/web.yaml`
#   CANDIDATE  its new content: a path, or - for stdin
#
# Environment:
#   CTL        the ctl binary (default: ctl from PATH)
#   SCRIPTD_SOCKET / SCRIPTD_CONFIG   how ctl finds the daemon (see `ctl --help`)
#   SETTLE     seconds every script must stay up after the apply (default: 10)
#
# Exit codes: 0 deployed (or already running); 3 refused before anything changed (invalid,
# rejected, or the plan went stale: someone else changed the config meanwhile), or the apply
# failed or was not verified and the daemon put everything back itself (`reload.on_failure:
# rollback`); 6 applied, but a script did not become ready or did not stay up: rolled back;
# anything else: ctl's own code (1: daemon unreachable).
#
# Needs bash, ctl and python3 (to read ctl's JSON output).
set -euo pipefail

ctl=${CTL:-ctl}
settle=${SETTLE:-10}
if (($# != 2)); then
  echo "usage: $0 TARGET CANDIDATE" >&2
  exit 2
fi
target=$1
candidate=$2

say() { echo "ci-deploy: $*" >&2; }

# One field of a JSON document on stdin (empty when absent or null).
field() {
  python3 -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"
}

# stdin can be read once: keep the candidate in a file so the preview and the apply send the
# same bytes.
if [[ $candidate == - ]]; then
  copy=$(mktemp)
  trap 'rm -f "$copy"' EXIT
  cat >"$copy"
  candidate=$copy
fi

# 1. Preview. Exit 3: the candidate is invalid or would be rejected; nothing was changed.
code=0
preview=$("$ctl" --output json reload --dry-run --file "$target=$candidate") || code=$?
if ((code != 0)); then
  say "the candidate is refused (ctl exit $code); nothing was changed"
  [[ -n $preview ]] && printf '%s\n' "$preview" >&2
  exit "$code"
fi
plan=$(field plan_id <<<"$preview")
previous=$(field version <<<"$preview")
if [[ $(field result <<<"$preview") == unchanged ]]; then
  say "the candidate is already running as version $previous; nothing to do"
  exit 0
fi
say "plan $plan against version $previous"

# 2. Apply exactly the previewed plan and wait for its verification. Exit 3: the plan went
# stale (the config moved since the preview: nothing was written), applying failed, or the
# version was not verified and the daemon rolled it back itself: the previous version and
# files are back. Exit 6: applied but not verified (a script it started is not ready:
# crash-looping, exited, probe failing), kept by the daemon: this script rolls back.
code=0
applied=$("$ctl" --output json reload --file "$target=$candidate" --plan "$plan" --wait) || code=$?
version=$(field version <<<"$applied")
if ((code == 6)); then
  say "version $version was not verified: $(field message <<<"$applied")"
  say "rolling back to version $previous"
  "$ctl" rollback "$previous" >&2
  say "rolled back: version $previous's config runs again"
  exit 6
elif ((code != 0)); then
  say "not applied or rolled back by the daemon (ctl exit $code): $(field message <<<"$applied")"
  exit "$code"
fi
say "version $version is running and verified; checking that every script stays up for ${settle}s"

# 3. Check: every enabled script up (running, waiting, or idle after success) at each look,
# five looks a second for SETTLE seconds. A service that crashes at start shows `backing-off`
# or `failed`.
healthy=true
for ((look = 0; look < settle * 5; look++)); do
  if ! "$ctl" status --check >&2; then
    healthy=false
    break
  fi
  sleep 0.2
done
if $healthy; then
  say "deployed: version $version"
  exit 0
fi

# 4. Roll back to the version that ran before; its files are written back to disk.
say "a script is not up after the deploy; rolling back to version $previous"
"$ctl" rollback "$previous" >&2
say "rolled back: version $previous's config runs again"
exit 6
