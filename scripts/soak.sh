#!/usr/bin/env bash
# Soak outside CI (issue 8 point 6): while the Primary writes through NBD (every
# acknowledged write recorded), the replication link is cut CUTS times (default 100) and
# the Primary is killed with -9 KILLS times (default 20); after each kill the survivor is
# promoted, as Pacemaker would, and must hold every acknowledged write; the killed node
# comes back as Secondary and resyncs; the replicas must be identical after every round.
# Bounded: each wait in the test has its own limit. Run as root (like .ci/run):
#
#   bash scripts/soak.sh [CUTS] [KILLS]
#
# It runs the CI test `link_cuts_and_failovers_under_write_load_lose_no_acknowledged_write`
# (3 cuts, 2 kills in CI) with URBD_SOAK_CUTS / URBD_SOAK_KILLS; the test cleans up its
# daemons, proxies and files, also on failure. docs/RELIABILITY.md has the last figures.
set -euo pipefail
cuts=${1:-100}
kills=${2:-20}
cd "$(dirname "$0")/.."
cargo build --release --bins -q
start=$(date +%s)
URBD_SOAK_CUTS=$cuts URBD_SOAK_KILLS=$kills cargo nextest run --release --test replication_fs \
  link_cuts_and_failovers_under_write_load_lose_no_acknowledged_write --no-capture
echo "soak: $cuts link cuts and $kills failovers passed in $(( $(date +%s) - start )) s"
