#!/usr/bin/env bash
# Runs the same fio jobs against (a) urbd's NBD export, (b) the physical limit (fio's io_uring
# engine with O_DIRECT on a backing file of the same size on the same filesystem) and (c)
# nbdkit's file plugin, alternating targets run by run, and writes medians and ratios to
# BENCHMARKS.md (section "fio: urbd vs raw vs nbdkit"). Run by hand, not in CI:
#
#   bash benches/fio_compare.sh [--size 1G] [--runs 3] [--runtime 10] [--dir DIR]
#
# Needs: fio (nbd and io_uring engines), nbdkit, python3, a release build of urbd.
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G runs=3 runtime=10 dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 3 ;;
  esac
done
for t in fio nbdkit python3; do command -v $t >/dev/null || { echo "$t is missing" >&2; exit 20; }; done

cargo build --release --bins -q
adm="$PWD/target/release/urbdadm"
[ -n "$dir" ] || dir=$(mktemp -d /var/tmp/urbd-bench.XXXXXX)
mkdir -p "$dir"
export URBD_RUN_DIR="$dir/run"
conf="$dir/bench.res"
cleanup() {
  "$adm" -c "$conf" --node alpha down bench >/dev/null 2>&1 || true
  [ -n "${nbdkit_pid:-}" ] && kill "$nbdkit_pid" 2>/dev/null || true
  rm -f "$dir"/*.img "$dir"/*.meta
}
trap cleanup EXIT

truncate -s "$size" "$dir/alpha.img" "$dir/raw.img" "$dir/nbdkit.img"
truncate -s 128M "$dir/alpha.meta" "$dir/beta.meta"
cat > "$conf" <<RES
resource bench {
  protocol C;
  on alpha { device minor 0; disk $dir/alpha.img; meta-disk $dir/alpha.meta[0]; address 127.0.0.1:7889; }
  on beta  { device minor 1; disk $dir/beta.img;  meta-disk $dir/beta.meta[0];  address 127.0.0.1:7890; }
}
RES
# Fill the backing files so no target profits from holes.
for f in alpha raw nbdkit; do
  fio --name=fill --filename="$dir/$f.img" --rw=write --bs=1M --iodepth=8 --ioengine=io_uring \
      --direct=1 --size="$size" --output=/dev/null
done
"$adm" -c "$conf" --node alpha create-md --force bench >/dev/null
"$adm" -c "$conf" --node alpha up bench
"$adm" -c "$conf" --node alpha -- --force primary bench
urbd_uri="nbd+unix:///bench?socket=$URBD_RUN_DIR/bench.nbd"
nbdkit --exit-with-parent -f -U "$dir/nbdkit.sock" file "$dir/nbdkit.img" &
nbdkit_pid=$!
nbdkit_uri="nbd+unix:///?socket=$dir/nbdkit.sock"
for _ in $(seq 50); do [ -S "$dir/nbdkit.sock" ] && break; sleep 0.1; done

jobs=("4k-randwrite-qd32 randwrite 4k 32" "4k-randread-qd32 randread 4k 32"
      "1m-write-qd8 write 1M 8" "4k-randwrite-qd1 randwrite 4k 1")
results="$dir/results.tsv"
: > "$results"
run_fio() { # target job rw bs qd
  local target=$1 job=$2 rw=$3 bs=$4 qd=$5 engine
  case $target in
    urbd)   engine=(--ioengine=nbd --uri="$urbd_uri") ;;
    nbdkit) engine=(--ioengine=nbd --uri="$nbdkit_uri") ;;
    raw)    engine=(--ioengine=io_uring --direct=1 --filename="$dir/raw.img" --size="$size") ;;
  esac
  fio --name="$job" "${engine[@]}" --rw="$rw" --bs="$bs" --iodepth="$qd" --time_based \
      --runtime="$runtime" --ramp_time=1 --output-format=json --output="$dir/out.json"
  python3 - "$dir/out.json" "$target" "$job" >> "$results" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
side = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{side['iops']:.0f}\t{side['bw'] / 1024:.1f}")
PY
}
for r in $(seq "$runs"); do
  for spec in "${jobs[@]}"; do
    set -- $spec
    for target in urbd raw nbdkit; do
      echo "run $r/$runs: $1 on $target" >&2
      run_fio "$target" "$1" "$2" "$3" "$4"
    done
  done
done

cmd="bash benches/fio_compare.sh --size $size --runs $runs --runtime $runtime"
python3 - "$results" "$cmd" "$(uname -r)" <<'PY' > "$dir/section.md"
import statistics, sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, job, iops, mib = line.split("\t")
    rows[(job, t)].append((float(iops), float(mib)))
jobs = list(dict.fromkeys(j for j, _ in rows))
print("## fio: urbd vs raw vs nbdkit\n")
print(f"Command: `{sys.argv[2]}` (kernel {sys.argv[3]}); medians of {len(rows[(jobs[0], 'urbd')])} "
      "alternating runs; raw = fio io_uring O_DIRECT on a file of the same size; nbdkit = file plugin "
      "(page cache).\n")
print("| job | urbd IOPS | urbd MiB/s | raw IOPS | nbdkit IOPS | urbd/raw | urbd/nbdkit |")
print("|---|---|---|---|---|---|---|")
for j in jobs:
    m = {t: (statistics.median(x[0] for x in rows[(j, t)]), statistics.median(x[1] for x in rows[(j, t)])) for t in ("urbd", "raw", "nbdkit")}
    print(f"| {j} | {m['urbd'][0]:.0f} | {m['urbd'][1]:.1f} | {m['raw'][0]:.0f} | {m['nbdkit'][0]:.0f} | "
          f"{m['urbd'][0] / m['raw'][0]:.2f}x | {m['urbd'][0] / m['nbdkit'][0]:.2f}x |")
PY
cat "$dir/section.md"
python3 - BENCHMARKS.md "$dir/section.md" <<'PY'
import sys, os, re
path, section = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\nFigures measured on this project's machines; each section names the command that produced it.\n\n"
pat = re.compile(r"## fio: urbd vs raw vs nbdkit\n.*?(?=\n## |\Z)", re.S)
text = pat.sub(lambda _: section.rstrip("\n") + "\n", text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
echo "BENCHMARKS.md updated" >&2
