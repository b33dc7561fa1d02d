#!/usr/bin/env bash
# Builds the Debian package into target/deb/: scriptd_VERSION_ARCH.deb (with its
# .buildinfo and .changes). Needs debhelper and dpkg-dev (`apt-get install debhelper`).
# The Rust toolchain is the one on PATH (rustup's, usually), so the build dependencies on
# Debian's cargo/rustc are not checked (-d). Honours CARGO_TARGET_DIR.
# Usage: packaging/deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in dpkg-buildpackage dh; do
  command -v "$tool" >/dev/null || {
    echo "packaging/deb.sh: $tool not found: apt-get install debhelper dpkg-dev" >&2
    exit 1
  }
done
cargo_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
deb_version=$(dpkg-parsechangelog -S Version)
if [ "$cargo_version" != "$deb_version" ]; then
  echo "packaging/deb.sh: Cargo.toml says $cargo_version but packaging/debian/changelog says" \
    "$deb_version: add a changelog entry (dch -v $cargo_version)" >&2
  exit 1
fi
arch=$(dpkg --print-architecture)
dpkg-buildpackage -b -us -uc -d
out=${CARGO_TARGET_DIR:-target}/deb
mkdir -p "$out"
# dpkg-buildpackage writes next to the source tree, as Debian tools do; collect it here.
for f in ../scriptd_"${deb_version}_${arch}".{deb,buildinfo,changes} \
  ../scriptd-dbgsym_"${deb_version}_${arch}".deb; do
  [ -e "$f" ] && mv -f "$f" "$out/"
done
echo "packaging/deb.sh: $out/scriptd_${deb_version}_${arch}.deb" >&2
