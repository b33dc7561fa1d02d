#!/usr/bin/env bash
# Builds the binaries the package ships into target/dist-bin/: `scriptd` and `scriptd-shim`
# with the `dist` profile, and `ctl` with the same profile linked statically on glibc
# targets (no dynamic loader, no shared libraries to map: it starts about 0.5 ms sooner,
# which is most of what a `ctl status` costs; ctl needs nothing from NSS, the daemon names
# users). Benchmarks and the Debian package (packaging/deb.sh) use these.
# Usage: packaging/dist.sh   (honours CARGO_TARGET_DIR, like cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
target=${CARGO_TARGET_DIR:-target}
out=$target/dist-bin
cargo build --profile dist --locked -p scriptd
mkdir -p "$out"
cp "$target/dist/scriptd" "$target/dist/scriptd-shim" "$out/"
case $host in
  *-linux-gnu)
    # --target keeps the flag off build scripts and proc macros (they must stay dynamic).
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
      cargo build --profile dist --locked -p ctl --target "$host"
    cp "$target/$host/dist/ctl" "$out/" ;;
  *)
    cargo build --profile dist --locked -p ctl
    cp "$target/dist/ctl" "$out/" ;;
esac
echo "packaging/dist.sh: $out/{scriptd,scriptd-shim,ctl}" >&2
