#!/usr/bin/env bash
# Regenerates the shell completions and man pages from the binaries' own definitions.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -p ctl -p scriptd
target=${CARGO_TARGET_DIR:-target}
ctl=$target/debug/ctl
# Registration scripts: they call `ctl` back at each TAB (packaging/../cli/src/completion.rs).
"$ctl" completions bash > packaging/completions/ctl.bash
"$ctl" completions zsh > packaging/completions/_ctl
"$ctl" completions fish > packaging/completions/ctl.fish
# ctl.1 and a page per subcommand (ctl.1 names them); stale ones go.
rm -f packaging/man/ctl.1 packaging/man/ctl-*.1
"$ctl" man --dir packaging/man
"$target/debug/scriptd" --man > packaging/man/scriptd.8
echo "regenerated packaging/completions and packaging/man"
