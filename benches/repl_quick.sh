#!/usr/bin/env bash
# A quick A/B of the replicated write path, for comparing two builds back to back (the full
# comparison with the physical limits and qemu-storage-daemon is benches/repl_compare.sh).
# One urbd pair on loopback (protocol C, 256 MiB file-backed disks in a temporary folder under
# /var/tmp, `disk-flushes no` with `nf`), fio's nbd engine: 4k randwrite QD1 and QD32, with
# raw1 (fio io_uring O_DIRECT on a file of the same size) between them; two rounds.
# Run by hand, not in CI:
#
#   bash benches/repl_quick.sh BINDIR [nf] [RUNTIME_S]
#
# BINDIR holds the urbdadm (and urbd) to test, e.g. target/release. Everything it starts is
# stopped and the folder removed on exit.
set -u
bindir=$1; nf=${2:-}; rt=${3:-5}
dir=$(mktemp -d /var/tmp/qr.XXXX)
adm=$bindir/urbdadm
r=qr
cleanup() { for n in alpha beta; do URBD_RUN_DIR=$dir/run-$n timeout 20 $adm -c $dir/c.res --node $n down $r >/dev/null 2>&1; done; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
extra=""; [ "$nf" = nf ] && extra=" disk-flushes no;"
cat > $dir/c.res <<RES
resource $r {
  protocol C;
  disk { resync-rate 1000M;$extra }
  on alpha { device minor 0; disk $dir/a.img; meta-disk $dir/a.meta[0]; address 127.0.0.1:$(port); }
  on beta  { device minor 1; disk $dir/b.img;  meta-disk $dir/b.meta[0];  address 127.0.0.1:$(port); }
}
RES
for f in a b raw; do fio --name=fill --filename=$dir/$f.img --rw=write --bs=1M --iodepth=8 --ioengine=io_uring --direct=1 --size=256M --output=/dev/null; done
truncate -s 128M $dir/a.meta $dir/b.meta
a() { local n=$1; shift; URBD_RUN_DIR=$dir/run-$n $adm -c $dir/c.res --node $n "$@"; }
for n in alpha beta; do a $n create-md --force $r >/dev/null; done
for n in alpha beta; do a $n up $r; done
for _ in $(seq 300); do [ "$(a alpha cstate $r 2>/dev/null)" = Connected ] && break; sleep 0.1; done
a alpha -- --force primary $r
until a alpha proc | grep -q 'ds:UpToDate/UpToDate'; do sleep 0.5; done
uri="nbd+unix:///$r?socket=$dir/run-alpha/$r.nbd"
j() { fio --name=j "$@" --rw=randwrite --bs=4k --time_based --runtime=$rt --ramp_time=1 --lat_percentiles=1 --output-format=json --output=$dir/o.json >/dev/null 2>&1
  python3 -c "import json;d=json.load(open('$dir/o.json'))['jobs'][0]['write'];print('%8.0f iops  mean %6.1f us  p50 %6.1f us' % (d['iops'], d['lat_ns']['mean']/1000, d['lat_ns']['percentile']['50.000000']/1000))"; }
for i in 1 2; do
echo -n "urbd$nf qd1:  "; j --ioengine=nbd --uri=$uri --iodepth=1
echo -n "raw1 qd1:   "; j --ioengine=io_uring --direct=1 --filename=$dir/raw.img --size=256M --iodepth=1
echo -n "urbd$nf qd32: "; j --ioengine=nbd --uri=$uri --iodepth=32
done
