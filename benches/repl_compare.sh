#!/usr/bin/env bash
# Runs the fio jobs of benches/fio_compare.sh against a *replicated* urbd pair (protocol C, both
# nodes on this machine, both backing files on the same filesystem) and, in the same run,
# alternating target by target:
#   phys2 - the physical limit for two replicas on one disk: fio io_uring, O_DIRECT, numjobs=2,
#           one file per job, each the size of urbd's disk, same filesystem;
#   raw1  - the physical limit for one replica: the same with numjobs=1 (for reads and QD1
#           latency);
#   phys2f - the physical limit for two replicas on one disk under DRBD's write ordering
#           `flush` (the default, DESIGN.md rule 3), write jobs only (examples/epoch_flush.rs,
#           io_uring, O_DIRECT, the same two files as phys2): the Secondary's copy works in
#           epochs of QD writes (submit them, wait for all, fdatasync, wait), as DRBD's
#           receive_Barrier does, an epoch holding at most the writes in flight; the
#           Primary's copy writes the next epoch's QD writes during that fdatasync (when the
#           Secondary's writes completed, as its WRITE_ACKs release the application's next
#           writes), and the next epoch waits for both. Its figure is the Secondary's:
#           replicated writes go no faster than it takes them. (fio's --fdatasync cannot
#           stand in: at QD > 1 it issues a sync for every free slot while the write count
#           sits on a multiple, about one per four writes at QD32.)
#   qsd   - qemu-storage-daemon exporting over NBD (unix socket) a quorum (vote-threshold=2) of
#           a local file (O_DIRECT, io_uring) and an NBD client to a peer `nbdkit file` on
#           127.0.0.1 TCP: the userspace synchronous replication one would otherwise pick.
# It samples the resident size (VmRSS) of both urbd daemons (and of qsd) under load, and writes
# medians, ratios and the command to BENCHMARKS.md (section "fio: replicated urbd ...").
# Run by hand, not in CI:
#
#   bash benches/repl_compare.sh [--size 1G] [--runs 3] [--runtime 8] [--dir DIR]
#                                [--max-load 1.5] [--load-wait 300] [--profile] [--no-write]
#
# --profile adds, after the table, one more 4k randwrite QD32 run against urbd while sampling the
# CPU time of every thread of both daemons (printed, not written to BENCHMARKS.md).
# --no-write prints the section without touching BENCHMARKS.md.
# Needs: fio (nbd and io_uring engines), nbdkit, qemu-storage-daemon (Debian: qemu-system-common),
# python3, a release build of urbd. Everything it starts is stopped and every file it creates is
# removed on exit (trap), also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G runs=3 runtime=8 dir="" max_load=1.5 load_wait=300 profile=0 write=1 variant=1
argv="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --max-load) max_load=$2; shift 2 ;;
    --load-wait) load_wait=$2; shift 2 ;;
    --profile) profile=1; shift ;;
    --no-write) write=0; shift ;;
    --no-variant) variant=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 3 ;;
  esac
done
cmd="bash benches/repl_compare.sh${argv:+ $argv}"
echo "command: $cmd" >&2
for t in fio nbdkit qemu-storage-daemon python3 timeout; do
  command -v $t >/dev/null || { echo "$t is missing" >&2; exit 20; }
done

cargo build --release --bins -q
cargo build --release --example epoch_flush -q
adm="$PWD/target/release/urbdadm"
made_dir=0
if [ -z "$dir" ]; then dir=$(mktemp -d /var/tmp/urbd-replbench.XXXXXX); made_dir=1; fi
mkdir -p "$dir"
conf="$dir/bench.res"
res=rbench
pids=() pairs=()
cleanup() {
  set +e
  for r in "${pairs[@]}"; do for n in alpha beta; do
    [ -f "$conf" ] && URBD_RUN_DIR="$dir/run-$r-$n" timeout 30 "$adm" -c "$conf" --node $n down $r >/dev/null 2>&1
  done; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  # a daemon that did not go down cleanly: stop it by the pid it wrote
  for r in "${pairs[@]}"; do for n in alpha beta; do
    [ -f "$dir/run-$r-$n/$r.pid" ] && kill "$(cat "$dir/run-$r-$n/$r.pid")" 2>/dev/null
  done; done
  rm -f "$dir"/*.img "$dir"/*.meta "$dir"/phys.* "$dir"/*.sock "$dir"/*.json "$dir"/rss.* "$dir"/*.log \
        "$dir"/cpu0 "$dir"/cpu1 "$dir"/cs0 "$dir"/failures "$dir"/results.tsv "$dir"/section.md "$conf"
  rm -rf "$dir"/run-*
  if [ $made_dir = 1 ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait (bounded) for the machine to be quiet; record the load either way.
load1() { cut -d' ' -f1 /proc/loadavg; }
waited=0
while python3 -c "import sys; sys.exit(0 if float('$(load1)') >= $max_load else 1)" && [ $waited -lt "$load_wait" ]; do
  [ $waited = 0 ] && echo "load $(load1) >= $max_load, waiting up to ${load_wait}s" >&2
  sleep 10; waited=$((waited + 10))
done
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
used=" "
new_port() { local q; q=$(free_port); while [[ "$used" == *" $q "* ]]; do q=$(free_port); done; used+="$q "; echo "$q"; }

# Two urbd pairs, started the same way: $res with the defaults (disk-flushes yes: the
# Secondary flushes its disk at every epoch barrier, as DRBD 8.4 does) and, unless
# --no-variant, ${res}nf with `disk-flushes no` (a diagnostic: what the barrier flushes cost).
pairs=($res)
[ $variant = 1 ] && pairs+=(${res}nf)
{
  for r in "${pairs[@]}"; do
    extra="" m=0; [ "$r" = "$res" ] || { extra=" disk-flushes no;"; m=2; }
    cat <<RES
resource $r {
  protocol C;
  disk { resync-rate 1000M;$extra }
  on alpha { device minor $m; disk $dir/$r-alpha.img; meta-disk $dir/$r-alpha.meta[0]; address 127.0.0.1:$(new_port); }
  on beta  { device minor $((m + 1)); disk $dir/$r-beta.img;  meta-disk $dir/$r-beta.meta[0];  address 127.0.0.1:$(new_port); }
}
RES
  done
} > "$conf"
pn=$(new_port)
files=(qsd-local.img phys.0 phys.1)
for r in "${pairs[@]}"; do
  truncate -s 128M "$dir/$r-alpha.meta" "$dir/$r-beta.meta"
  files+=("$r-alpha.img" "$r-beta.img")
done
# Fill every backing file so no target profits from holes (phys.0 is also raw1's file).
for f in "${files[@]}"; do
  echo "fill $f" >&2
  fio --name=fill --filename="$dir/$f" --rw=write --bs=1M --iodepth=8 --ioengine=io_uring \
      --direct=1 --size="$size" --output=/dev/null
done
# qsd's quorum reads both children and compares them (read-pattern=quorum, the default): its
# two replicas start identical, as urbd's do after the initial sync.
cp "$dir/qsd-local.img" "$dir/qsd-peer.img"
sync

# urbd pairs: create-md, up, wait for the connection, primary --force on alpha, initial sync.
adm_node() { local n=$1 r=$2; shift 2; URBD_RUN_DIR="$dir/run-$r-$n" "$adm" -c "$conf" --node "$n" "$@"; }
urbd_pids=() sync_s=()
for r in "${pairs[@]}"; do
  for n in alpha beta; do adm_node $n $r create-md --force $r >/dev/null; done
  for n in alpha beta; do adm_node $n $r up $r; done
  for _ in $(seq 300); do [ "$(adm_node alpha $r cstate $r 2>/dev/null)" = Connected ] && break; sleep 0.1; done
  [ "$(adm_node alpha $r cstate $r)" = Connected ] || { echo "$r did not connect" >&2; adm_node alpha $r proc >&2; exit 20; }
  adm_node alpha $r -- --force primary $r
  t0=$(date +%s)
  until adm_node alpha $r proc | grep -q 'ds:UpToDate/UpToDate'; do
    [ $(( $(date +%s) - t0 )) -lt 900 ] || { echo "$r: initial sync did not finish in 900s" >&2; adm_node alpha $r proc >&2; exit 20; }
    sleep 1
  done
  sync_s+=($(( $(date +%s) - t0 )))
  echo "$r: initial sync of $size took ${sync_s[-1]}s" >&2
  for n in alpha beta; do urbd_pids+=($(cat "$dir/run-$r-$n/$r.pid")); done
done
urbd_uri() { echo "nbd+unix:///$1?socket=$dir/run-$1-alpha/$1.nbd"; }

# qemu-storage-daemon: quorum(local file, nbd client -> nbdkit on loopback TCP), NBD export.
nbdkit --exit-with-parent -f -i 127.0.0.1 -p "$pn" file "$dir/qsd-peer.img" 2>"$dir/nbdkit.log" &
pids+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$pn) 2>/dev/null && break; sleep 0.1; done
qemu-storage-daemon \
  --blockdev "{\"driver\":\"file\",\"node-name\":\"local\",\"filename\":\"$dir/qsd-local.img\",\"aio\":\"io_uring\",\"cache\":{\"direct\":true}}" \
  --blockdev "{\"driver\":\"nbd\",\"node-name\":\"peer\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$pn\"}}" \
  --blockdev '{"driver":"quorum","node-name":"q","vote-threshold":2,"children":["local","peer"]}' \
  --nbd-server "addr.type=unix,addr.path=$dir/qsd.sock" \
  --export type=nbd,id=e0,node-name=q,name=q,writable=on &
pids+=($!)
qsd_pid=$!
for _ in $(seq 100); do [ -S "$dir/qsd.sock" ] && break; sleep 0.1; done
[ -S "$dir/qsd.sock" ] || { echo "qemu-storage-daemon did not start" >&2; exit 20; }
qsd_uri="nbd+unix:///q?socket=$dir/qsd.sock"

# Max VmRSS (KiB) of the given pids, sampled every 0.2 s into $dir/rss.<pid> until killed.
sample_rss() {
  for p in "$@"; do echo 0 > "$dir/rss.$p"; done
  while :; do
    for p in "$@"; do
      v=$(awk '/^VmRSS/ {print $2}' /proc/$p/status 2>/dev/null || echo 0)
      [ "${v:-0}" -gt "$(cat "$dir/rss.$p")" ] && echo "$v" > "$dir/rss.$p"
    done
    sleep 0.2
  done
}
sample_rss "${urbd_pids[@]}" $qsd_pid &
sampler=$!
pids+=($sampler)

jobs=("4k-randwrite-qd32 randwrite 4k 32" "4k-randread-qd32 randread 4k 32"
      "1m-write-qd8 write 1M 8" "4k-randwrite-qd1 randwrite 4k 1")
targets=(urbd phys2 phys2f raw1 qsd)
[ $variant = 1 ] && targets+=(urbdnf)
results="$dir/results.tsv"
: > "$results"; : > "$dir/failures"
keep=/var/tmp/urbd-replbench-logs.$(date +%Y%m%d-%H%M%S)
run_fio() { # target job rw bs qd
  local target=$1 job=$2 rw=$3 bs=$4 qd=$5 engine
  case $target in
    urbd)  engine=(--ioengine=nbd --uri="$(urbd_uri $res)") ;;
    urbdnf) engine=(--ioengine=nbd --uri="$(urbd_uri ${res}nf)") ;;
    qsd)   engine=(--ioengine=nbd --uri="$qsd_uri") ;;
    raw1)  engine=(--ioengine=io_uring --direct=1 --filename="$dir/phys.0" --size="$size") ;;
    phys2) engine=(--ioengine=io_uring --direct=1 --directory="$dir" --filename_format='phys.$jobnum'
                   --numjobs=2 --group_reporting --size="$size") ;;
    phys2f)
      case $rw in *read*) return 0 ;; esac
      local b=$bs; case $bs in *k) b=$(( ${bs%k} * 1024 )) ;; *M) b=$(( ${bs%M} * 1048576 )) ;; esac
      timeout $((runtime + 60)) target/release/examples/epoch_flush --primary "$dir/phys.0" \
        --secondary "$dir/phys.1" --bs "$b" --qd "$qd" --seconds "$runtime" > "$dir/ef.json" || {
        echo -e "$target\t$job\trun ${run_no:-?}\t" >> "$dir/failures"; return 0; }
      python3 - "$dir/ef.json" "$job" "$b" >> "$results" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
iops, us = d["secondary_iops"], d["secondary_write_us"]
print(f"phys2f\t{sys.argv[2]}\t{iops:.1f}\t{iops * int(sys.argv[3]) / 1048576:.1f}\t{us:.1f}\t{us:.1f}")
PY
      return 0 ;;
  esac
  if ! timeout $((runtime + 120)) fio --name="$job" "${engine[@]}" --rw="$rw" --bs="$bs" --iodepth="$qd" \
      --time_based --runtime="$runtime" --ramp_time=1 --lat_percentiles=1 \
      --output-format=json --output="$dir/out.json"; then
    # Keep going (the other targets' figures stay valid), but say so in the report and keep
    # the daemons' logs and state for a look afterwards.
    local state=""
    case $target in
      urbd|urbdnf)
        local r=$res; [ $target = urbdnf ] && r=${res}nf
        state=$(adm_node alpha $r proc 2>&1 | sed -n 3p | tr -s ' ')
        for n in alpha beta; do
          kill -0 "$(cat "$dir/run-$r-$n/$r.pid")" 2>/dev/null || state+="; $n daemon is gone"
        done ;;
    esac
    echo -e "$target\t$job\trun ${run_no:-?}\t${state}" >> "$dir/failures"
    mkdir -p "$keep"
    for f in "$dir"/run-*/*.log; do [ -f "$f" ] && cp "$f" "$keep/$(basename "$(dirname "$f")").log"; done
    echo "fio failed on $target ($job); daemon logs kept in $keep" >&2
    return 0
  fi
  python3 - "$dir/out.json" "$target" "$job" >> "$results" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
side = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
lat = side["lat_ns"]
p50 = lat.get("percentile", {}).get("50.000000", 0)
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{side['iops']:.1f}\t{side['bw'] / 1024:.1f}\t{lat['mean'] / 1000:.1f}\t{p50 / 1000:.1f}")
PY
}
for run_no in $(seq "$runs"); do
  r=$run_no
  for spec in "${jobs[@]}"; do
    set -- $spec
    # rotate the order of the targets run by run, so none always runs first or last
    for i in $(seq 0 $((${#targets[@]} - 1))); do
      target=${targets[$(( (i + r - 1) % ${#targets[@]} ))]}
      echo "run $r/$runs: $1 on $target" >&2
      run_fio "$target" "$1" "$2" "$3" "$4"
    done
  done
done
kill $sampler; wait $sampler 2>/dev/null || true
rss=""
i=0
for r in "${pairs[@]}"; do for n in alpha beta; do
  rss+="$r-$n=$(cat "$dir/rss.${urbd_pids[$i]}") "; i=$((i + 1))
done; done
rss+="qsd=$(cat "$dir/rss.$qsd_pid")"
# VmHWM: the peak resident size since the daemon started, which includes the initial sync.
hwm=""
i=0
for r in "${pairs[@]}"; do for n in alpha beta; do
  hwm+="$r-$n=$(awk '/^VmHWM/ {print $2}' /proc/${urbd_pids[$i]}/status) "; i=$((i + 1))
done; done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
for r in "${pairs[@]}"; do
  adm_node alpha $r proc | grep -q 'ds:UpToDate/UpToDate' ||
    { echo "$r is no longer UpToDate/UpToDate:" >&2; adm_node alpha $r proc >&2; }
done

python3 - "$results" "$cmd" "$(uname -r)" "$size" "$rss" "$load_start" "$load_end" "${sync_s[*]}" "$res" "$dir/failures" "$hwm" \
  <<'PY' > "$dir/section.md"
import statistics, sys, collections, re
res, cmd, kernel, size, rss, load_start, load_end, sync_s, name, failures, hwm = sys.argv[1:12]
hwm = {k: int(v) / 1024 for k, v in (x.split("=") for x in hwm.split())}
failures = [l.rstrip("\n").split("\t") for l in open(failures) if l.strip()]
rss = {k: int(v) / 1024 for k, v in (x.split("=") for x in rss.split())}
rows = collections.defaultdict(list)
for line in open(res):
    t, job, *vals = line.rstrip("\n").split("\t")
    rows[(job, t)].append([float(v) for v in vals])
jobs = list(dict.fromkeys(j for j, _ in rows))
nf = any(t == "urbdnf" for _, t in rows)
med = lambda j, t, k: statistics.median(x[k] for x in rows[(j, t)]) if rows[(j, t)] else float("nan")
n = max(len(v) for v in rows.values())
m = re.fullmatch(r"(\d+)([KMGT]?)", size.upper().rstrip("IB"))
size_b = int(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")
bitmap_kib = size_b // 4096 / 8 / 1024
budget_mib = 32 + bitmap_kib / 1024
is_read = lambda j: "read" in j and "write" not in j
phys = lambda j: med(j, "raw1", 0) if is_read(j) else med(j, "phys2", 0) / 2
p = lambda x: f"{x:.0f}"
print("## fio: replicated urbd (protocol C) vs two replicas on one disk vs qemu-storage-daemon quorum\n")
print(f"Command: `{cmd}` (kernel {kernel}, 2 vCPU shared with other jobs: load average {load_start} "
      f"at the start, {load_end} at the end); medians of {n} runs, targets alternating (order rotated "
      f"run by run), fio {size} working set. urbd: both nodes on this machine, protocol C, defaults "
      f"(`disk-flushes` yes), data disks of {size} on the same filesystem (initial full sync: "
      f"{sync_s.split()[0]} s). phys2 = fio io_uring O_DIRECT numjobs=2, one file of the same size per "
      "job (the disk doing two replicas' writes); raw1 = the same with one job (one replica). qsd = "
      "qemu-storage-daemon quorum (vote-threshold=2, default read-pattern=quorum: reads both children "
      "and compares) of a local file (O_DIRECT, io_uring) and an nbd client to `nbdkit file` on "
      "127.0.0.1 TCP (whose writes land in the page cache), exported over a unix socket. All clients: "
      "fio, nbd engine for urbd and qsd." + (" urbd nf = a second urbd pair, identical but for "
      "`disk { disk-flushes no; }`, run in the same rotation as a diagnostic (not a target)." if nf else "") + "\n")
print("Which physical figure a ratio uses: every write through urbd is written twice on this one disk "
      "(alpha's file and beta's). phys2's two jobs together write twice as many blocks as each job "
      "submits, so phys2 per job (aggregate / 2) is the rate at which this disk takes writes that "
      "are each written twice, at the same disk queue depth (2 x QD) as urbd's two nodes: urbd's write "
      "IOPS are compared with phys2 per job. Reads are served by alpha's disk alone, so the read ratio "
      "uses raw1. QD1 latency is compared with raw1's (one replica), as the target asks. phys2f is the "
      "same disk and files under DRBD's write ordering `flush` (urbd's default, DESIGN.md rule 3; "
      "`examples/epoch_flush.rs`, io_uring, O_DIRECT): the Secondary's copy works in epochs of QD "
      "writes (submit, wait for all, fdatasync, wait), as DRBD's receive_Barrier does (an epoch holds "
      "at most the writes in flight), while the Primary's copy writes the next epoch's QD writes during "
      "each fdatasync (the Secondary's WRITE_ACKs, sent when its writes complete, release the "
      "application's next writes) and the next epoch waits for both; its figure is the Secondary's, "
      "whose writes bound the replicated ones (latency: QD / IOPS).\n")
hdr = "| job | urbd IOPS | urbd MiB/s | phys2 aggregate IOPS | phys2 per job IOPS | phys2f IOPS | raw1 IOPS | qsd IOPS | urbd/physical | urbd/phys2f | urbd/qsd |"
sep = "|---|---|---|---|---|---|---|---|---|---|---|"
if nf:
    hdr += " urbd nf IOPS | urbd nf/physical |"; sep += "---|---|"
print(hdr); print(sep)
for j in jobs:
    u, q = med(j, "urbd", 0), med(j, "qsd", 0)
    f = med(j, "phys2f", 0)
    fcols = ("-", "-") if is_read(j) else (p(f), f"{u / f:.2f}x")
    line = (f"| {j} | {p(u)} | {med(j, 'urbd', 1):.1f} | {p(med(j, 'phys2', 0))} | {p(med(j, 'phys2', 0) / 2)} | "
            f"{fcols[0]} | {p(med(j, 'raw1', 0))} | {p(q)} | {u / phys(j):.2f}x ({'raw1' if is_read(j) else 'phys2/job'}) | "
            f"{fcols[1]} | {u / q:.2f}x |")
    if nf:
        line += f" {p(med(j, 'urbdnf', 0))} | {med(j, 'urbdnf', 0) / phys(j):.2f}x |"
    print(line)
print()
j = "4k-randwrite-qd1"
if (j, "urbd") in rows:
    print("4k randwrite QD1 latency (fio `lat`, submission to completion, us; medians over the runs of "
          "each run's mean and median):\n")
    print("| target | mean | median | urbd/target (mean) | urbd/target (median) |")
    print("|---|---|---|---|---|")
    for t in ("urbd", "raw1", "phys2", "phys2f", "qsd") + (("urbdnf",) if nf else ()):
        print(f"| {t} | {med(j, t, 2):.1f} | {med(j, t, 3):.1f} | {med(j, 'urbd', 2) / med(j, t, 2):.2f}x | "
              f"{med(j, 'urbd', 3) / med(j, t, 3):.2f}x |")
    print()
urbd_max = max(rss[f"{name}-alpha"], rss[f"{name}-beta"])
print(f"Resident size (max VmRSS, sampled every 0.2 s over all runs): urbd alpha (Primary) "
      f"{rss[f'{name}-alpha']:.1f} MiB, urbd beta (Secondary) {rss[f'{name}-beta']:.1f} MiB"
      + (f" (nf pair: {rss[f'{name}nf-alpha']:.1f} / {rss[f'{name}nf-beta']:.1f} MiB)" if nf else "")
      + f"; budget 32 MiB + in-memory bitmap ({size}: {bitmap_kib:.0f} KiB at one bit per 4 KiB) = "
      f"{budget_mib:.2f} MiB. qemu-storage-daemon: {rss['qsd']:.1f} MiB. Peak since start "
      f"(VmHWM, includes the initial full sync at resync-rate 1000M): alpha {hwm[f'{name}-alpha']:.1f} MiB, "
      f"beta {hwm[f'{name}-beta']:.1f} MiB"
      + (f" (nf pair: {hwm[f'{name}nf-alpha']:.1f} / {hwm[f'{name}nf-beta']:.1f} MiB)" if nf else "") + ".\n")
print("Targets:")
for j, goal in (("4k-randwrite-qd32", 0.85), ("1m-write-qd8", 0.8)):
    if (j, "urbd") in rows:
        r = med(j, "urbd", 0) / phys(j)
        rf = med(j, "urbd", 0) / med(j, "phys2f", 0)
        print(f"- {j} >= {goal}x of the two-replica physical limit (phys2 per job): {r:.2f}x, "
              f"{'met' if r >= goal else 'NOT met'} (phys2f, the same disk under write ordering "
              f"`flush`, is {med(j, 'phys2f', 0) / phys(j):.2f}x of phys2 per job; urbd is {rf:.2f}x of phys2f)")
j = "4k-randwrite-qd32"
if (j, "urbd") in rows:
    r = med(j, "urbd", 0) / med(j, "qsd", 0)
    print(f"- {j} >= 2.5x qemu-storage-daemon's quorum: {r:.2f}x, {'met' if r >= 2.5 else 'NOT met'} "
          f"(phys2f is {med(j, 'phys2f', 0) / med(j, 'qsd', 0):.2f}x of qsd)")
j = "4k-randwrite-qd1"
if (j, "urbd") in rows:
    r = med(j, "urbd", 2) / med(j, "raw1", 2); r50 = med(j, "urbd", 3) / med(j, "raw1", 3)
    print(f"- {j} latency <= 1.5x raw1's: mean {r:.2f}x, median {r50:.2f}x, "
          f"{'met' if max(r, r50) <= 1.5 else 'NOT met'} (phys2f's write with its fdatasync: "
          f"{med(j, 'phys2f', 2) / med(j, 'raw1', 2):.2f}x raw1's mean)")
print(f"- resident size <= {budget_mib:.2f} MiB: max {urbd_max:.1f} MiB, {'met' if urbd_max <= budget_mib else 'NOT met'}")
if failures:
    print(f"\nFailed fio runs ({len(failures)}; the medians above are over the runs that completed):")
    for f in failures:
        what = "examples/epoch_flush failed" if f[0] == "phys2f" else "fio failed (for urbd and qsd: its NBD connection)"
        print(f"- {f[0]}, {f[1]}, {f[2]}: {what}" + (f" (then: {f[3]})" if len(f) > 3 and f[3] else ""))
PY
cat "$dir/section.md"

if [ $profile = 1 ]; then
  # One more urbd run per QD, with the CPU time and context switches of every thread of the
  # default pair's two daemons (printed only).
  snap() { for p in "${urbd_pids[0]}" "${urbd_pids[1]}"; do for t in /proc/$p/task/*; do
    echo "$p $(basename "$t") $(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")" \
         "$(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status")"; done; done; }
  snap > "$dir/cpu0"; sleep 3; snap > "$dir/cpu1"
  awk '{c[$2] = $5} END {for (k in c) s += c[k]; print s}' "$dir/cpu0" > "$dir/cs0"
  echo "profile: idle pair: $(( ($(awk '{s += $5} END {print s}' "$dir/cpu1") - $(cat "$dir/cs0")) / 3 )) context switches/s in both daemons" >&2
  for qd in 32 1; do
    echo "profile: 4k randwrite QD$qd on urbd ($res), per thread of both daemons" >&2
    snap > "$dir/cpu0"; s0=$(date +%s.%N)
    run_fio urbd profile-qd$qd randwrite 4k $qd
    s1=$(date +%s.%N); snap > "$dir/cpu1"
    python3 - "$dir/cpu0" "$dir/cpu1" "$s0" "$s1" "$(getconf CLK_TCK)" "${urbd_pids[0]}" "$(tail -1 "$results")" <<'PY' >&2
import sys
rd = lambda f: {tuple(l.split()[:2]): (l.split()[2], int(l.split()[3]), int(l.split()[4])) for l in open(f)}
a, b = rd(sys.argv[1]), rd(sys.argv[2])
wall, hz, alpha = float(sys.argv[4]) - float(sys.argv[3]), int(sys.argv[5]), sys.argv[6]
iops = float(sys.argv[7].split("\t")[2])
writes = iops * (wall - 1)  # fio's ramp second is not counted in its IOPS; close enough
print(f"  fio: {iops:.0f} IOPS, lat mean {sys.argv[7].split(chr(9))[4]} us; {wall:.1f} s wall")
cs_total = 0
for k, (comm, v, cs) in sorted(b.items()):
    d = (v - a.get(k, (comm, 0, 0))[1]) / hz
    dcs = cs - a.get(k, (comm, 0, 0))[2]
    cs_total += dcs
    if d > 0 or dcs > 0:
        print(f"  {'alpha' if k[0] == alpha else 'beta '} {comm:16} {d:6.2f} s CPU = {100 * d / wall:5.1f}%, "
              f"{dcs / writes:5.2f} context switches per write")
print(f"  both daemons: {cs_total / writes:.1f} context switches per write")
PY
  done
fi

if [ $write = 1 ]; then
  python3 - BENCHMARKS.md "$dir/section.md" <<'PY'
import sys, os, re
path, section = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\nFigures measured on this project's machines; each section names the command that produced it.\n\n"
pat = re.compile(r"## fio: replicated urbd.*?(?=\n## |\Z)", re.S)
text = pat.sub(lambda _: section.rstrip("\n") + "\n", text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
  echo "BENCHMARKS.md updated" >&2
fi
echo "command: $cmd" >&2
