#!/bin/sh
# The /dev/nbdN scenario of tests/kernel_nbd.rs, as root, on a kernel with nbd: on the host
# when it has nbd, else as the /init of a VM (busybox sh). POSIX sh only.
#
# Environment: URBDADM (the urbdadm binary; urbd sits next to it), KNBD_DIR (an empty work
# folder), KNBD_INDEX (N of /dev/nbdN, free). Prints "KNBD-STEP: ..." as it goes and ends
# with exactly one "KNBD-RESULT: PASS" or "KNBD-RESULT: FAIL <why>".
set -u

N="${KNBD_INDEX:-0}"
DEV="/dev/nbd$N"
SYS="/sys/block/nbd$N"
D="$KNBD_DIR"
SIZE_MB=64

fail() {
  echo "KNBD-RESULT: FAIL $*"
  if [ -f "$D/run/knbd.log" ]; then
    echo "--- daemon log"
    cat "$D/run/knbd.log"
  fi
  umount "$D/mnt" 2>/dev/null
  "$URBDADM" -c "$D/knbd.res" down knbd >/dev/null 2>&1
  exit 1
}
step() { echo "KNBD-STEP [up $(cut -d" " -f1 /proc/uptime)s]: $*"; }
adm() { "$URBDADM" -c "$D/knbd.res" "$@"; }
connected() { [ -e "$SYS/pid" ]; }
sectors() { cat "$SYS/size" 2>/dev/null || echo 0; }

mkdir -p "$D/mnt" "$D/run" || fail "mkdir $D"
dd if=/dev/zero of="$D/data.img" bs=1M count=0 seek=$SIZE_MB 2>/dev/null || fail "data disk"
dd if=/dev/zero of="$D/meta.img" bs=1M count=0 seek=128 2>/dev/null || fail "meta disk"
cat > "$D/knbd.res" <<EOF
resource knbd {
  protocol C;
  on alpha { device $DEV; disk "$D/data.img"; meta-disk "$D/meta.img" [0]; address 127.0.0.1:7789; }
  on beta { device /dev/nbd15; disk "$D/beta.img"; meta-disk "$D/beta.meta" [0]; address 127.0.0.1:7790; }
}
EOF
export URBD_RUN_DIR="$D/run" URBD_NODE=alpha
unset URBD_KERNEL_NBD

connected && fail "$DEV is connected before the test"

step "create-md, up (Secondary: $DEV stays detached)"
adm create-md --force knbd >/dev/null || fail "create-md"
adm up knbd || fail "up"
connected && fail "$DEV attached on a Secondary"
adm status knbd | grep -q "device:$DEV not attached: the Primary attaches it" ||
  fail "status of a Secondary: $(adm status knbd)"

step "primary --force: $DEV appears with the device's size"
adm primary --force knbd || fail "primary --force"
connected || fail "$DEV not connected after primary"
[ "$(sectors)" -eq $((SIZE_MB * 2048)) ] || fail "$DEV has $(sectors) sectors, want $((SIZE_MB * 2048))"
status="$(adm status knbd)"
echo "$status"
echo "$status" | grep -q "device:$DEV attached" || fail "status does not say attached"

step "mkfs.ext4, mount, write files"
mkfs.ext4 -q -F "$DEV" || fail "mkfs.ext4"
mount -t ext4 "$DEV" "$D/mnt" || fail "mount"
echo "urbd on $DEV" > "$D/mnt/hello" || fail "write hello"
mkdir -p "$D/mnt/opt/zimbra" || fail "mkdir"
dd if=/dev/urandom of="$D/mnt/opt/zimbra/blob" bs=64k count=64 2>/dev/null || fail "write blob"
(cd "$D/mnt" && md5sum hello opt/zimbra/blob > "$D/sums") || fail "md5sum"
sync

step "secondary while mounted is refused"
if adm secondary knbd 2>"$D/err"; then
  fail "secondary succeeded while $DEV is mounted"
fi
cat "$D/err"
grep -q "(-12) Device is held open by someone" "$D/err" || fail "wrong refusal: $(cat "$D/err")"
connected || fail "$DEV detached by a refused secondary"
adm role knbd | grep -q "^Primary/" || fail "role changed by a refused secondary"

step "umount, secondary: $DEV goes away"
umount "$D/mnt" || fail "umount"
adm secondary knbd || fail "secondary"
connected && fail "$DEV still connected after secondary"
[ "$(sectors)" -eq 0 ] || fail "$DEV still has $(sectors) sectors after secondary"
adm status knbd | grep -q "device:$DEV not attached" || fail "status after secondary: $(adm status knbd)"

step "primary again: $DEV reappears, the filesystem is intact"
adm primary knbd || fail "primary"
connected || fail "$DEV not connected after the second primary"
[ "$(sectors)" -eq $((SIZE_MB * 2048)) ] || fail "$DEV has $(sectors) sectors after the second primary"
e2fsck -fn "$DEV" || fail "e2fsck"
mount -t ext4 "$DEV" "$D/mnt" || fail "mount again"
(cd "$D/mnt" && md5sum -c "$D/sums") || fail "files differ"
umount "$D/mnt" || fail "umount again"

step "down detaches $DEV and stops the daemon"
adm down knbd || fail "down"
connected && fail "$DEV still connected after down"
[ -e "$D/run/knbd.pid" ] && fail "daemon pid file left after down"

# Waits (at most 30 s) for process $1 to exit.
wait_exit() {
  i=0
  while kill -0 "$1" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 300 ] && fail "daemon $1 does not exit"
    sleep 0.1
  done
}

step "SIGTERM to a Primary's daemon detaches $DEV"
adm up knbd || fail "up (for SIGTERM)"
adm primary knbd || fail "primary (for SIGTERM)"
connected || fail "$DEV not connected (for SIGTERM)"
pid="$(cat "$D/run/knbd.pid")"
kill -TERM "$pid"
wait_exit "$pid"
connected && fail "$DEV still connected after SIGTERM"

step "kill -9 leaves $DEV connected to nothing; the next Primary takes it over"
adm up knbd || fail "up (for kill -9)"
adm primary knbd || fail "primary (for kill -9)"
pid="$(cat "$D/run/knbd.pid")"
kill -KILL "$pid"
wait_exit "$pid"
connected || fail "$DEV not left connected by a killed daemon"
adm up knbd || fail "up after kill -9"
adm primary knbd || fail "primary after kill -9"
adm status knbd | grep -q "device:$DEV attached" || fail "not re-attached after kill -9: $(adm status knbd)"
e2fsck -fn "$DEV" >/dev/null || fail "e2fsck after kill -9"
adm down knbd || fail "down after kill -9"
connected && fail "$DEV still connected after the last down"

echo "KNBD-RESULT: PASS"
