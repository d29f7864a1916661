#!/usr/bin/env bash
# Soak outside CI: the Primary of a replicated pair is killed with -9 under write load,
# restarted, resynced (bounded by its activity log) and checked, ROUNDS times in a row
# (default 100; each round takes a few seconds). Every acknowledged write must be on both
# disks after each crash resync, and the replicas identical. Run as root (like .ci/run):
#
#   bash scripts/soak-kill-primary.sh [ROUNDS]
#
# It runs the CI test `kill_9_of_the_primary_under_write_load_keeps_every_acknowledged_write`
# with URBD_SOAK_ROUNDS set; the test cleans up its daemons and files, also on failure.
set -euo pipefail
rounds=${1:-100}
cd "$(dirname "$0")/.."
cargo build --release --bins -q
start=$(date +%s)
URBD_SOAK_ROUNDS=$rounds cargo nextest run --release --test replication_fs \
  kill_9_of_the_primary_under_write_load_keeps_every_acknowledged_write --no-capture
echo "soak: $rounds kill -9 rounds passed in $(( $(date +%s) - start )) s"
