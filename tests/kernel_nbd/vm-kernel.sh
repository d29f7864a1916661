#!/usr/bin/env bash
# Fetches a Debian kernel that has nbd.ko (linux-image-*-amd64, the one the
# linux-image-amd64 metapackage points at) and extracts it into a cache folder, for the VM
# run of tests/kernel_nbd.rs. Nothing is installed on the host. Idempotent: a kernel
# already extracted is reused.
#
# Usage: tests/kernel_nbd/vm-kernel.sh [CACHE_DIR]   (default: target/vm-cache)
# Prints the extracted tree's path (with boot/vmlinuz-* and lib/modules/*) on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${1:-target/vm-cache}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"

# A kernel extracted earlier is good enough: the test needs nbd, not the newest kernel.
for tree in "$cache"/linux-image-*/; do
  if [ -f "$tree/.complete" ]; then
    echo "${tree%/}"
    exit 0
  fi
done

resolve() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1
}
pkg="$(resolve)"
if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
  # A fresh image may have no package lists yet.
  apt-get update -q >&2 || true
  pkg="$(resolve)"
fi
if [ -z "$pkg" ]; then
  echo "vm-kernel.sh: cannot resolve linux-image-amd64 (run apt-get update?)" >&2
  exit 1
fi
tmp="$(mktemp -d "$cache/.download.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# apt-get download runs as _apt when it can; let it write into the temporary folder.
chmod 0777 "$tmp"
(cd "$tmp" && apt-get download -q "$pkg" >&2)
deb="$(ls "$tmp"/*.deb)"
dpkg-deb -x "$deb" "$tmp/tree"
if ! ls "$tmp"/tree/boot/vmlinuz-* >/dev/null 2>&1 || \
   [ -z "$(find "$tmp/tree/lib/modules" -name 'nbd.ko*' -print -quit)" ]; then
  echo "vm-kernel.sh: $pkg has no vmlinuz or no nbd.ko" >&2
  exit 1
fi
# Keep the kernel, its config and the modules; drop the rest of the package.
rm -rf "$tmp/tree/usr"
touch "$tmp/tree/.complete"
rm -rf "${cache:?}/$pkg"
mv "$tmp/tree" "$cache/$pkg"
echo "$cache/$pkg"
