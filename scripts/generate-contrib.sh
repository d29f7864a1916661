#!/usr/bin/env bash
# Rewrites the generated files under contrib/ (shell completions, man pages) from the
# command definitions; tests/ops.rs fails while they are stale. The systemd unit
# (contrib/systemd/urbd@.service) is written by hand and only read by `urbdadm generate
# systemd`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin urbdadm
adm="${CARGO_TARGET_DIR:-target}/debug/urbdadm"
for shell in bash zsh fish; do
  "$adm" generate completions "$shell" --dir contrib/completions
done
rm -f contrib/man/*.8
"$adm" generate man contrib/man
