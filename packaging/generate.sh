#!/usr/bin/env bash
# Regenerates the shell completions and man pages from the binaries' own definitions.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -p ctl -p scriptd
ctl=target/debug/ctl
"$ctl" completions bash > packaging/completions/ctl.bash
"$ctl" completions zsh > packaging/completions/_ctl
"$ctl" completions fish > packaging/completions/ctl.fish
"$ctl" man > packaging/man/ctl.1
target/debug/scriptd --man > packaging/man/scriptd.8
echo "regenerated packaging/completions and packaging/man"
