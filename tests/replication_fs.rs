//! Replication end to end, with a filesystem and with faults: the seed's role swaps (7.2.1
//! and 7.3: ext4 made on astapor, mounted at /opt/zimbra, moved to braavos and back), link
//! loss under write load through an in-test TCP proxy, and kill -9 of the Secondary under
//! load. Every acknowledged write must be on both replicas in the end, and the two backing
//! files must be byte-identical.
//!
//! The kernel here has no nbd module: nbdfuse + a loop device stand in for /dev/drbd0 (see
//! tests/daemon_nbd.rs). Every wait is bounded in time; mounts, loop devices, nbdfuse and the
//! daemons are cleaned up by guards when a test fails.
//!

mod util;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use urbd::nbd::Client;
use util::nbd::{FuseLoop, MountGuard, run_ok};
use util::pair::{DATA_BYTES, Node, Pair, pid_alive, wait_gone};
use util::proxy::Proxy;
use util::{have_root, have_tool};

/// Quick reconnects and quick detection of a dead link (ping-timeout is in tenths of a
/// second: 0.5 s).
const NET: &str = "net { connect-int 1; ping-int 1; ping-timeout 5; }";

/// The writers write in this many bytes at the start of the device (the resyncs after a
/// fault then cover a part of the device, not all of it).
const WRITE_SPAN: u64 = 16 << 20;

/// A writer stops after this many writes whatever happens.
const MAX_WRITES: u64 = 200_000;

// ----- content ----------------------------------------------------------------------------

/// Deterministic bytes for `seed` (xorshift64*), so the expected image can be rebuilt.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

// ----- nodes and their state --------------------------------------------------------------

fn nbd_socket(n: &Node) -> PathBuf {
    n.run_dir.join("loop.nbd")
}

fn uri(n: &Node) -> String {
    format!("nbd+unix:///loop?socket={}", nbd_socket(n).display())
}

fn log_tail(n: &Node, lines: usize) -> String {
    let text = std::fs::read_to_string(n.run_dir.join("loop.log")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn proc_text(n: &Node) -> String {
    n.proc_body().join("\n")
}

/// A number field of the proc text (`oos:`, `ns:`, ...).
fn field(text: &str, name: &str) -> Option<u64> {
    let key = format!("{name}:");
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
        .and_then(|v| v.parse().ok())
}

fn connected_in_sync(t: &str) -> bool {
    t.contains("cs:Connected") && t.contains("ds:UpToDate/UpToDate") && field(t, "oos") == Some(0)
}

/// Polls `n`'s proc text until `pred` holds; fails with the proc text and the node's log
/// after `limit`.
#[track_caller]
fn wait_for(n: &Node, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = proc_text(n);
        if pred(&text) {
            return text;
        }
        if start.elapsed() > limit {
            panic!(
                "{}: not {what} within {limit:?}\nproc:\n{text}\nlog (tail):\n{}",
                n.name,
                log_tail(n, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[track_caller]
fn wait_in_sync(pair: &Pair, limit: Duration) {
    for n in &pair.nodes {
        wait_for(
            n,
            "Connected and UpToDate/UpToDate, oos:0",
            limit,
            connected_in_sync,
        );
    }
}

/// How the first synchronisation is started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// `up` on both, wait for cs:Connected (Secondary/Secondary, Inconsistent), then the
    /// seed's commands: the forced promotion starts the full sync from a connected state.
    ConnectedFirst,
    /// The seed's order as one node runs it (7.2.1): `up` and `primary --force` on alpha
    /// before beta is up, then `up` and `-- --discard-my-data connect` on beta: the sync
    /// starts in the handshake.
    PrimaryFirst,
}

/// The seed's first synchronisation (7.2.1): `up`, `primary --force` on alpha,
/// `-- --discard-my-data connect` on beta, until ds:UpToDate/UpToDate on both.
fn initial_sync(pair: &Pair, start: Start) {
    let (a, b) = (pair.alpha(), pair.beta());
    a.adm(&["up", "loop"]).ok();
    if start == Start::PrimaryFirst {
        a.adm(&["primary", "--force", "loop"]).ok();
    }
    b.adm(&["up", "loop"]).ok();
    if start == Start::ConnectedFirst {
        for n in [a, b] {
            wait_for(n, "Connected", Duration::from_secs(15), |t| {
                t.contains("cs:Connected ro:Secondary/Secondary")
            });
        }
        a.adm(&["primary", "--force", "loop"]).ok();
    }
    b.adm(&["--", "--discard-my-data", "connect", "loop"]).ok();
    wait_in_sync(pair, Duration::from_secs(30));
    assert_eq!(
        a.adm(&["role", "loop"]).ok().stdout.trim(),
        "Primary/Secondary"
    );
    assert_eq!(
        b.adm(&["role", "loop"]).ok().stdout.trim(),
        "Secondary/Primary"
    );
}

/// `secondary`, retried while the last NBD client (nbdfuse) is still going away.
#[track_caller]
fn demote(n: &Node) {
    let start = Instant::now();
    loop {
        let r = n.adm(&["secondary", "loop"]);
        if r.code == 0 {
            return;
        }
        let held = r.stderr.contains("held open") || r.stdout.contains("held open");
        assert!(
            held && start.elapsed() < Duration::from_secs(15),
            "{}: secondary failed (exit {})\nstdout:\n{}\nstderr:\n{}\nlog (tail):\n{}",
            n.name,
            r.code,
            r.stdout,
            r.stderr,
            log_tail(n, 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Both backing files are byte-identical (the first difference is reported).
#[track_caller]
fn assert_replicas_identical(pair: &Pair, when: &str) {
    let a = std::fs::read(&pair.alpha().data).expect("read alpha's disk");
    let b = std::fs::read(&pair.beta().data).expect("read beta's disk");
    assert_eq!(a.len(), b.len());
    if a != b {
        let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
        let blocks = a
            .chunks(4096)
            .zip(b.chunks(4096))
            .filter(|(x, y)| x != y)
            .count();
        panic!(
            "{when}: the replicas differ: first at byte {first} (4 KiB block {}), {blocks} blocks differ\nalpha proc:\n{}\nbeta proc:\n{}",
            first / 4096,
            proc_text(pair.alpha()),
            proc_text(pair.beta())
        );
    }
}

/// The node's backing file is exactly `image`.
#[track_caller]
fn assert_disk_is(n: &Node, image: &[u8], when: &str) {
    let got = std::fs::read(&n.data).expect("read a disk");
    assert_eq!(got.len(), image.len());
    if got != image {
        let first = got.iter().zip(image).position(|(x, y)| x != y).unwrap_or(0);
        let blocks = got
            .chunks(4096)
            .zip(image.chunks(4096))
            .filter(|(x, y)| x != y)
            .count();
        panic!(
            "{when}: {}'s disk misses acknowledged writes: first difference at byte {first}, {blocks} 4 KiB blocks differ",
            n.name
        );
    }
}

/// Kills both daemons (SIGKILL) when the test fails, before [`Pair`]'s `Drop` runs `down`
/// (a daemon that hangs must not hold up or abort the cleanup); also lets a writer blocked
/// on a hung daemon see end-of-file.
struct KillOnPanic<'a>(&'a Pair);

impl Drop for KillOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for n in &self.0.nodes {
            if let Some(pid) = n.pid().filter(|p| pid_alive(*p)) {
                eprintln!("{}'s log (tail):\n{}", n.name, log_tail(n, 60));
                kill9(pid);
            }
        }
    }
}

fn kill9(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// Takes both nodes down, alpha first, each `down` bounded: both must succeed (a node whose
/// peer went away first must not hang in its final flush).
fn teardown(pair: &Pair) {
    for n in pair.nodes.iter() {
        let mut cmd = util::urbdadm();
        cmd.env("URBD_RUN_DIR", &n.run_dir)
            .arg("-c")
            .arg(&n.conf)
            .args(["--node", n.name, "down", "loop"]);
        match util::run_within(&mut cmd, Duration::from_secs(15)) {
            Ok(r) if r.code == 0 => {}
            Ok(r) => panic!(
                "{}: down failed (exit {})\n{}{}\nlog (tail):\n{}",
                n.name,
                r.code,
                r.stdout,
                r.stderr,
                log_tail(n, 40)
            ),
            Err(_) => panic!("{}: down hangs\nlog (tail):\n{}", n.name, log_tail(n, 40)),
        }
    }
}

/// A Secondary whose Primary died (kill -9: no P_DISCONNECT, only end of file) goes
/// WFConnection, and its `down` then returns promptly.
#[test]
fn down_of_a_secondary_whose_primary_was_killed() {
    let pair = Pair::with_metadata();
    quick_net(&pair);
    let _reaper = KillOnPanic(&pair);
    let (a, b) = (pair.alpha(), pair.beta());
    initial_sync(&pair, Start::ConnectedFirst);
    let pid = a.pid().expect("alpha's pid");
    kill9(pid);
    wait_gone(pid);
    wait_for(b, "WFConnection", Duration::from_secs(10), |t| {
        t.contains("cs:WFConnection")
    });
    let mut cmd = util::urbdadm();
    cmd.env("URBD_RUN_DIR", &b.run_dir)
        .arg("-c")
        .arg(&b.conf)
        .args(["--node", "beta", "down", "loop"]);
    match util::run_within(&mut cmd, Duration::from_secs(15)) {
        Ok(r) => assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr),
        Err(_) => panic!(
            "beta's down hangs after alpha was killed\nlog (tail):\n{}",
            log_tail(b, 30)
        ),
    }
}

/// Adds [`NET`] to the pair's one config file (quick reconnects and ping timeouts).
fn quick_net(pair: &Pair) {
    let text = std::fs::read_to_string(&pair.alpha().conf).expect("conf");
    let text = text.replacen("protocol C;", &format!("protocol C;\n  {NET}"), 1);
    std::fs::write(&pair.alpha().conf, text).expect("conf");
}

// ----- 1. the seed's role swaps with ext4 -------------------------------------------------

fn fs_tools() -> bool {
    let tools = [
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount",
        "sync",
    ];
    tools.iter().all(|t| have_tool(t)) && have_root()
}

/// Mounts the node's export (nbdfuse + loop) at `work/mnt-TAG`, after mkfs.ext4 (`mkfs`) or
/// after a clean `e2fsck -fn`, runs `f` on the mount point, syncs, unmounts and releases the
/// loop device and nbdfuse.
fn with_fs(n: &Node, work: &Path, tag: &str, mkfs: bool, f: impl FnOnce(&Path)) {
    let block = FuseLoop::attach(&work.join(format!("fuse-{tag}")), &uri(n));
    let dev = block.dev.clone();
    if mkfs {
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F", &dev]), 120);
    } else {
        let out = run_ok(Command::new("e2fsck").args(["-f", "-n", &dev]), 120);
        assert!(out.contains("files"), "{tag}: e2fsck output: {out}");
    }
    let mnt = work.join(format!("mnt-{tag}"));
    std::fs::create_dir_all(&mnt).expect("mount point");
    run_ok(Command::new("mount").arg(&dev).arg(&mnt), 60);
    let mut m = MountGuard(Some(mnt.clone()));
    f(&mnt);
    run_ok(&mut Command::new("sync"), 60);
    m.unmount();
    drop(block);
}

/// The files of one round: (relative path, content).
fn round_files(round: u64, count: u64) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let len = ((i * 37_123 + round * 1_111) % 1_500_000 + 1) as usize;
            (
                format!("round{round}/dir{}/file{i}", i % 3),
                content(round * 1000 + i, len),
            )
        })
        .collect()
}

fn write_files(mnt: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        let p = mnt.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }
}

#[track_caller]
fn check_files(mnt: &Path, files: &[(String, Vec<u8>)], on: &str) {
    for (rel, data) in files {
        let got = std::fs::read(mnt.join(rel)).unwrap_or_else(|e| panic!("{on}: read {rel}: {e}"));
        assert!(
            got == *data,
            "{on}: {rel} differs ({} bytes, expected {})",
            got.len(),
            data.len()
        );
    }
}

/// Seed 7.2.1 and 7.3: ext4 made on alpha (astapor) and mounted at a stand-in for
/// /opt/zimbra, files written; alpha `secondary`, beta (braavos) `primary`, the files are
/// there, more written; beta `secondary`, alpha `primary` again, everything there and fsck
/// clean. After each demotion the two backing files are byte-identical.
#[test]
fn ext4_moves_between_nodes_as_in_the_seed() {
    if !fs_tools() {
        return;
    }
    let pair = Pair::with_metadata();
    let _reaper = KillOnPanic(&pair);
    let (a, b) = (pair.alpha(), pair.beta());
    initial_sync(&pair, Start::ConnectedFirst);
    let work = tempfile::tempdir().expect("tempdir");

    // Round 1 on alpha: mkfs, mount, write.
    let mut round1 = round_files(1, 24);
    with_fs(a, work.path(), "alpha1", true, |mnt| {
        write_files(mnt, &round1)
    });
    demote(a);
    wait_in_sync(&pair, Duration::from_secs(10));
    assert_replicas_identical(&pair, "after round 1 on alpha");

    // Round 2 on beta: the files are there; more, and one of round 1 rewritten.
    b.adm(&["primary", "loop"]).ok();
    assert_eq!(
        b.adm(&["role", "loop"]).ok().stdout.trim(),
        "Primary/Secondary"
    );
    let round2 = round_files(2, 12);
    let rewritten = (round1[5].0.clone(), content(77, 300_000));
    with_fs(b, work.path(), "beta2", false, |mnt| {
        check_files(mnt, &round1, "beta");
        write_files(mnt, &round2);
        write_files(mnt, std::slice::from_ref(&rewritten));
    });
    round1[5] = rewritten;
    demote(b);
    wait_in_sync(&pair, Duration::from_secs(10));
    assert_replicas_identical(&pair, "after round 2 on beta");

    // Back to alpha: everything there, fsck clean (with_fs runs e2fsck -fn first).
    a.adm(&["primary", "loop"]).ok();
    with_fs(a, work.path(), "alpha3", false, |mnt| {
        check_files(mnt, &round1, "alpha");
        check_files(mnt, &round2, "alpha");
    });
    let block = FuseLoop::attach(&work.path().join("fuse-fsck"), &uri(a));
    run_ok(Command::new("e2fsck").args(["-f", "-n", &block.dev]), 120);
    drop(block);
    demote(a);
    wait_in_sync(&pair, Duration::from_secs(10));
    assert_replicas_identical(&pair, "at the end");
    teardown(&pair);
}

/// The seed's exact order on astapor: `up` and `primary --force` before the peer is even
/// up, so the full sync is decided in the handshake (alpha SyncSource, beta WFBitMapT).
/// Then `secondary` on alpha and the two disks are identical.
#[test]
fn seed_initial_sync_with_primary_force_before_the_peer_is_up() {
    let pair = Pair::with_metadata();
    quick_net(&pair);
    let _reaper = KillOnPanic(&pair);
    initial_sync(&pair, Start::PrimaryFirst);
    demote(pair.alpha());
    wait_in_sync(&pair, Duration::from_secs(10));
    assert_replicas_identical(&pair, "after the first sync");
    teardown(&pair);
}

// ----- a bounded writer that records every acknowledged write -----------------------------

/// One acknowledged (or attempted) write: offset, length, content seed.
type Write = (u64, usize, u64);

/// Writes through the project's NBD client on a thread, 4..64 KiB at 4 KiB-aligned random
/// offsets in the first [`WRITE_SPAN`] bytes, and records every write the server
/// acknowledged, in order.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<(u64, usize, u64)>>>,
    /// The write sent and not answered yet (a crash may or may not have kept it).
    in_flight: Arc<Mutex<Option<(u64, usize, u64)>>>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(n: &Node, seed: u64) -> Writer {
        let mut client = Client::connect_unix(nbd_socket(n), "loop", true)
            .unwrap_or_else(|e| panic!("{}: NBD client: {e}", n.name));
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let error = Arc::new(Mutex::new(None));
        let in_flight = Arc::new(Mutex::new(None));
        let (st, ac, lg, er) = (stop.clone(), acked.clone(), log.clone(), error.clone());
        let fl = in_flight.clone();
        let thread = std::thread::spawn(move || {
            let mut x = seed | 1;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for i in 0..MAX_WRITES {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let blocks = 1 + next() % 16;
                let len = (blocks * 4096) as usize;
                let offset = (next() % (WRITE_SPAN / 4096 - blocks)) * 4096;
                let wseed = seed.wrapping_mul(1_000_003).wrapping_add(i);
                let data = content(wseed, len);
                *fl.lock().expect("in flight") = Some((offset, len, wseed));
                match client.write(offset, &data, false) {
                    Ok(()) => {
                        *fl.lock().expect("in flight") = None;
                        lg.lock().expect("log").push((offset, len, wseed));
                        ac.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        *er.lock().expect("error") =
                            Some(format!("write {i} at {offset} (+{len}) failed: {e}"));
                        return;
                    }
                }
            }
            if let Err(e) = client.flush() {
                *er.lock().expect("error") = Some(format!("final flush failed: {e}"));
                return;
            }
            let _ = client.disconnect();
        });
        Writer {
            stop,
            acked,
            log,
            in_flight,
            error,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until at least `more` further writes are acknowledged; fails (with `n`'s state)
    /// when the writer stops or stalls for `limit`.
    #[track_caller]
    fn progress(&self, more: u64, limit: Duration, n: &Node, what: &str) {
        let start = Instant::now();
        let from = self.acked();
        while self.acked() < from + more {
            if let Some(e) = self.error.lock().expect("error").clone() {
                panic!(
                    "{what}: the writer failed: {e}\n{} proc:\n{}\nlog (tail):\n{}",
                    n.name,
                    proc_text(n),
                    log_tail(n, 40)
                );
            }
            if start.elapsed() > limit {
                panic!(
                    "{what}: writes stalled: {} acknowledged in {limit:?} (wanted {more})\n{} proc:\n{}\nlog (tail):\n{}",
                    self.acked() - from,
                    n.name,
                    proc_text(n),
                    log_tail(n, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops, joins (bounded) and returns the acknowledged writes, failing on any error.
    #[track_caller]
    fn finish(mut self, n: &Node) -> Vec<(u64, usize, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().expect("thread");
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the writer does not stop\n{} proc:\n{}\nlog (tail):\n{}",
                n.name,
                proc_text(n),
                log_tail(n, 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t.join().expect("writer thread");
        if let Some(e) = self.error.lock().expect("error").clone() {
            panic!("the writer failed: {e}");
        }
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

impl Writer {
    /// After the server died under it: stops (bounded), and returns the acknowledged writes
    /// and the one that was in flight (the writer's error is expected).
    #[track_caller]
    fn abandon(mut self) -> (Vec<Write>, Option<Write>) {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().expect("thread");
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the writer does not notice its server died"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t.join().expect("writer thread");
        let in_flight = *self.in_flight.lock().expect("in flight");
        (
            std::mem::take(&mut *self.log.lock().expect("log")),
            in_flight,
        )
    }
}

/// `n`'s disk is `base` with every acknowledged write of `log` applied; a block the
/// unanswered write covered may hold either its old or its new content.
#[track_caller]
fn assert_disk_has_acked(
    n: &Node,
    base: &[u8],
    log: &[(u64, usize, u64)],
    in_flight: Option<(u64, usize, u64)>,
    when: &str,
) {
    let mut img = base.to_vec();
    for &(offset, len, seed) in log {
        let o = offset as usize;
        img[o..o + len].copy_from_slice(&content(seed, len));
    }
    let got = std::fs::read(&n.data).expect("read a disk");
    assert_eq!(got.len(), img.len());
    let newer = in_flight.map(|(o, l, s)| (o as usize, content(s, l)));
    for (i, (g, want)) in got.chunks(4096).zip(img.chunks(4096)).enumerate() {
        if g == want {
            continue;
        }
        let at = i * 4096;
        let covered = newer.as_ref().is_some_and(|(o, d)| {
            at >= *o && at + 4096 <= o + d.len() && g == &d[at - o..at - o + 4096]
        });
        assert!(
            covered,
            "{when}: {}'s 4 KiB block {i} misses an acknowledged write",
            n.name
        );
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // On a failed test the thread may be blocked on a hung daemon: leave it (the
        // daemons are killed next, which ends it); otherwise join.
        if let Some(t) = self.thread.take()
            && !std::thread::panicking()
        {
            let _ = t.join();
        }
    }
}

/// The device after the initial sync (zeros) and every acknowledged write, in order.
fn expected_image(log: &[(u64, usize, u64)]) -> Vec<u8> {
    let mut img = vec![0u8; DATA_BYTES as usize];
    for &(offset, len, seed) in log {
        let o = offset as usize;
        img[o..o + len].copy_from_slice(&content(seed, len));
    }
    img
}

/// The writer is done; both nodes in sync; both disks hold every acknowledged write.
#[track_caller]
fn finish_and_verify(pair: &Pair, writer: Writer) {
    let log = writer.finish(pair.alpha());
    assert!(!log.is_empty());
    wait_in_sync(pair, Duration::from_secs(30));
    let img = expected_image(&log);
    assert_disk_is(pair.alpha(), &img, "alpha");
    assert_disk_is(pair.beta(), &img, "beta");
    assert_replicas_identical(pair, "after the writes");
    teardown(pair);
}

// ----- 2. link loss under write load through a proxy --------------------------------------

/// One node's view of the pair: `alpha` and `beta` are the addresses this node's config
/// gives them.
fn conf_text(pair: &Pair, alpha: SocketAddr, beta: SocketAddr) -> String {
    let on = |n: &Node, addr: SocketAddr| {
        format!(
            "  on {} {{ device minor {}; disk \"{}\"; meta-disk \"{}\" [0]; address {addr}; }}\n",
            n.name,
            n.minor,
            n.data.display(),
            n.meta.display()
        )
    };
    format!(
        "resource loop {{\n  protocol C;\n  disk {{ resync-rate 1000M; }}\n  {NET}\n{}{}}}\n",
        on(pair.alpha(), alpha),
        on(pair.beta(), beta)
    )
}

/// Both nodes reach each other through a proxy each: the nodes get different config files
/// that agree on everything but the peer's address.
///
/// - alpha listens on 127.0.0.1:A; beta on 127.0.0.1:B (both free ports).
/// - Proxy `to_beta` listens on 127.0.0.1:PB and forwards to B; proxy `to_alpha` listens on
///   127.0.0.1:PA and forwards to A.
/// - alpha's file says `on alpha { address 127.0.0.1:A }` and `on beta { address
///   127.0.0.1:PB }`; beta's file says `on alpha { address 127.0.0.1:PA }` and `on beta {
///   address 127.0.0.1:B }`. So each node listens on its real port and dials the peer
///   through a proxy.
///
/// The daemon binds its outgoing sockets to its own configured IP and accepts connections
/// only from the peer's configured IP, not port (src/daemon/peer/link.rs, `same_host`).
/// Everything here is 127.0.0.1, and the proxy's outgoing sockets come from 127.0.0.1, so
/// both checks pass. All data and meta connections cross a proxy, in both directions,
/// whoever dials: cutting both proxies cuts the link.
struct ProxiedPair {
    pair: Pair,
    to_alpha: Proxy,
    to_beta: Proxy,
}

impl ProxiedPair {
    fn new() -> ProxiedPair {
        let mut pair = Pair::with_metadata();
        let (pa, pb) = util::free_port_pair();
        let alpha: SocketAddr = ([127, 0, 0, 1], pa).into();
        let beta: SocketAddr = ([127, 0, 0, 1], pb).into();
        let to_alpha = Proxy::start(alpha);
        let to_beta = Proxy::start(beta);
        let dir = pair.alpha().conf.parent().expect("dir").to_path_buf();
        let confs = [
            (
                dir.join("alpha.conf"),
                conf_text(&pair, alpha, to_beta.addr()),
            ),
            (
                dir.join("beta.conf"),
                conf_text(&pair, to_alpha.addr(), beta),
            ),
        ];
        for (n, (path, text)) in pair.nodes.iter_mut().zip(confs) {
            std::fs::write(&path, text).expect("write a node's config");
            n.conf = path;
        }
        ProxiedPair {
            pair,
            to_alpha,
            to_beta,
        }
    }

    fn cut(&self) {
        self.to_alpha.cut();
        self.to_beta.cut();
    }

    fn restore(&self) {
        self.to_alpha.restore();
        self.to_beta.restore();
    }
}

/// Link loss under write load: the link is cut twice (every connection shut down, new
/// ones reset) while a writer on alpha runs. The writes keep completing while the link is
/// down (alpha goes WFConnection and counts out-of-sync blocks); after the link comes back
/// the nodes reconnect on their own (connect-int 1) and resync; in the end every
/// acknowledged write is on both disks, and the disks are identical.
#[test]
fn link_loss_under_write_load_loses_no_acknowledged_write() {
    let pp = ProxiedPair::new();
    let pair = &pp.pair;
    let _reaper = KillOnPanic(pair);
    let (a, b) = (pair.alpha(), pair.beta());
    initial_sync(pair, Start::ConnectedFirst);
    assert!(pp.to_beta.forwarded() + pp.to_alpha.forwarded() >= 2);
    let writer = Writer::start(a, 0x5EED_0001);
    writer.progress(200, Duration::from_secs(15), a, "before the cut");
    for round in 1..=2 {
        pp.cut();
        for n in [a, b] {
            wait_for(
                n,
                "WFConnection after the cut",
                Duration::from_secs(10),
                |t| t.contains("cs:WFConnection"),
            );
        }
        writer.progress(100, Duration::from_secs(10), a, "while the link is cut");
        let t = wait_for(
            a,
            "counting out-of-sync blocks",
            Duration::from_secs(5),
            |t| field(t, "oos").is_some_and(|o| o > 0),
        );
        assert!(t.contains("ro:Primary/Unknown"), "round {round}: {t}");
        // Stay cut through at least one reconnect attempt (connect-int 1).
        std::thread::sleep(Duration::from_millis(1500));
        assert!(proc_text(a).contains("cs:WFConnection"));
        pp.restore();
        wait_in_sync(pair, Duration::from_secs(30));
        writer.progress(100, Duration::from_secs(10), a, "after reconnecting");
    }
    assert!(
        pp.to_alpha.refused() + pp.to_beta.refused() > 0,
        "no reconnect attempt while the link was cut"
    );
    finish_and_verify(pair, writer);
}

// ----- 3. kill -9 of the Secondary under load ---------------------------------------------

/// kill -9 of the Secondary under write load: the Primary keeps serving (writes complete,
/// cs:WFConnection, oos grows); `up` brings beta back, it resyncs, and every acknowledged
/// write is on both disks.
#[test]
fn kill_9_of_the_secondary_under_load_then_up_resyncs() {
    let pair = Pair::with_metadata();
    quick_net(&pair);
    let _reaper = KillOnPanic(&pair);
    let (a, b) = (pair.alpha(), pair.beta());
    initial_sync(&pair, Start::ConnectedFirst);
    let writer = Writer::start(a, 0x5EED_0003);
    writer.progress(200, Duration::from_secs(15), a, "before the kill");

    let pid = b.pid().expect("beta's pid");
    kill9(pid);
    wait_gone(pid);
    wait_for(
        a,
        "WFConnection after the kill",
        Duration::from_secs(10),
        |t| t.contains("cs:WFConnection"),
    );
    writer.progress(100, Duration::from_secs(10), a, "after the kill");
    let oos1 = field(&proc_text(a), "oos").unwrap_or(0);
    writer.progress(100, Duration::from_secs(10), a, "after the kill");
    let t = proc_text(a);
    let oos2 = field(&t, "oos").unwrap_or(0);
    assert!(oos1 > 0 && oos2 >= oos1, "oos {oos1} then {oos2}\n{t}");
    assert!(t.contains("ro:Primary/Unknown"), "{t}");

    b.adm(&["up", "loop"]).ok();
    wait_in_sync(&pair, Duration::from_secs(30));
    writer.progress(100, Duration::from_secs(10), a, "after beta is back");
    finish_and_verify(&pair, writer);
}

/// kill -9 of the Primary: after `up` the crashed node's activity log (applied at attach,
/// as `drbdmeta apply-al` would) makes the reconnect a resync of the extents it was writing
/// (DRBD's rule 40), not of the whole device; both disks end with every acknowledged write.
#[test]
fn kill_9_of_the_primary_resyncs_only_its_activity_log() {
    let pair = Pair::with_metadata();
    quick_net(&pair);
    let _reaper = KillOnPanic(&pair);
    let (a, b) = (pair.alpha(), pair.beta());
    initial_sync(&pair, Start::ConnectedFirst);
    let writer = Writer::start(a, 0x5EED_0004);
    writer.progress(300, Duration::from_secs(15), a, "before the kill");
    let log = writer.finish(a);
    let t = proc_text(a);
    assert!(
        field(&t, "al").unwrap_or(0) > 0,
        "AL transactions written: {t}"
    );
    let nr_before = field(&proc_text(b), "nr").unwrap_or(0);

    let pid = a.pid().expect("alpha's pid");
    kill9(pid);
    wait_gone(pid);
    wait_for(
        b,
        "WFConnection after the kill",
        Duration::from_secs(10),
        |t| t.contains("cs:WFConnection"),
    );
    a.adm(&["up", "loop"]).ok();
    wait_in_sync(&pair, Duration::from_secs(30));
    let moved_kib = field(&proc_text(b), "nr").unwrap_or(0) - nr_before;
    let span_kib = WRITE_SPAN / 1024;
    assert!(
        moved_kib > 0 && moved_kib <= span_kib + 1024,
        "the resync after the crash moved {moved_kib} KiB; the writes touched the first {span_kib} KiB (the device has {} KiB)\nalpha log:\n{}",
        DATA_BYTES / 1024,
        log_tail(a, 30)
    );
    let img = expected_image(&log);
    assert_disk_is(a, &img, "alpha");
    assert_disk_is(b, &img, "beta");
    assert_replicas_identical(&pair, "after the crash resync");
    teardown(&pair);
}

// ----- 6. kill -9 of the Primary under write load, repeated ------------------------------

/// Issue 6: the Primary is killed with -9 while a writer is running (three rounds, or
/// `URBD_SOAK_ROUNDS`, at most 1000):
/// the restarted node resyncs no more than what its activity log covers, both disks hold
/// every acknowledged write, and the replicas end identical.
#[test]
fn kill_9_of_the_primary_under_write_load_keeps_every_acknowledged_write() {
    let pair = Pair::with_metadata();
    quick_net(&pair);
    let _reaper = KillOnPanic(&pair);
    let (a, b) = (pair.alpha(), pair.beta());
    initial_sync(&pair, Start::ConnectedFirst);
    // The disks after the initial sync: zeros.
    let mut base = vec![0u8; DATA_BYTES as usize];
    // Three rounds in CI; scripts/soak-kill-primary.sh runs many more.
    let rounds: u64 = std::env::var("URBD_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .clamp(1, 1000);
    for round in 0..rounds {
        let nr_before = field(&proc_text(b), "nr").unwrap_or(0);
        let writer = Writer::start(a, 0x5EED_0100 + round);
        writer.progress(150, Duration::from_secs(20), a, "before the kill");
        let pid = a.pid().expect("alpha's pid");
        kill9(pid);
        wait_gone(pid);
        let (log, in_flight) = writer.abandon();
        assert!(!log.is_empty());
        wait_for(
            b,
            "WFConnection after the kill",
            Duration::from_secs(10),
            |t| t.contains("cs:WFConnection"),
        );
        a.adm(&["up", "loop"]).ok();
        for n in [a, b] {
            wait_for(n, "in sync again", Duration::from_secs(30), |t| {
                t.contains("cs:Connected")
                    && t.contains("ds:UpToDate/UpToDate")
                    && t.contains(" oos:0")
            });
        }
        let moved_kib = field(&proc_text(b), "nr").unwrap_or(0) - nr_before;
        // The round's replicated writes (at most the span the writer touches, twice over)
        // plus the crash resync, bounded by the activity log: here by the same span.
        assert!(
            moved_kib <= 3 * WRITE_SPAN / 1024,
            "round {round}: {moved_kib} KiB moved to beta"
        );
        assert_disk_has_acked(a, &base, &log, in_flight, "alpha after the crash resync");
        assert_disk_has_acked(b, &base, &log, in_flight, "beta after the crash resync");
        assert_replicas_identical(&pair, "after the crash resync");
        base = std::fs::read(&a.data).expect("read alpha");
        a.adm(&["primary", "loop"]).ok();
    }
    teardown(&pair);
}

// ----- 6b. soak (issue 8 point 6): link cuts and failovers under write load ---------------

/// A bound from the environment (`name`), else `default`, clamped to `1..=max`.
fn soak_bound(name: &str, default: u64, max: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

/// The soak of issue 8 point 6, bounded: while the Primary writes (every acknowledged write
/// recorded), the link is cut `URBD_SOAK_CUTS` times in all (default 3) and the Primary is
/// killed with -9 `URBD_SOAK_KILLS` times (default 2); after each kill the survivor is
/// promoted, as Pacemaker would, and must hold every acknowledged write; the killed node
/// comes back as Secondary and resyncs; the replicas are identical after every round, and
/// the writes go on through the new Primary. scripts/soak.sh runs 100 cuts and 20 kills.
#[test]
fn link_cuts_and_failovers_under_write_load_lose_no_acknowledged_write() {
    let cuts = soak_bound("URBD_SOAK_CUTS", 3, 10_000);
    let kills = soak_bound("URBD_SOAK_KILLS", 2, 1_000);
    let pp = ProxiedPair::new();
    let pair = &pp.pair;
    let _reaper = KillOnPanic(pair);
    initial_sync(pair, Start::ConnectedFirst);
    let start = Instant::now();
    let mut base = vec![0u8; DATA_BYTES as usize];
    let mut primary = 0usize;
    let mut cut_so_far = 0u64;
    for round in 0..kills {
        let (p, s) = (&pair.nodes[primary], &pair.nodes[1 - primary]);
        let writer = Writer::start(p, 0x50AC_0000 + round);
        writer.progress(100, Duration::from_secs(20), p, "before the cuts");
        // This round's share of the cuts.
        let until = cuts * (round + 1) / kills;
        while cut_so_far < until {
            cut_so_far += 1;
            pp.cut();
            wait_for(
                p,
                "WFConnection after a cut",
                Duration::from_secs(10),
                |t| t.contains("cs:WFConnection"),
            );
            writer.progress(30, Duration::from_secs(10), p, "while cut");
            pp.restore();
            wait_in_sync(pair, Duration::from_secs(60));
            writer.progress(30, Duration::from_secs(10), p, "after a cut");
        }
        // Failover: kill the Primary, promote the survivor.
        let pid = p.pid().expect("the Primary's pid");
        kill9(pid);
        wait_gone(pid);
        let (log, in_flight) = writer.abandon();
        wait_for(
            s,
            "WFConnection after the kill",
            Duration::from_secs(10),
            |t| t.contains("cs:WFConnection"),
        );
        s.adm(&["primary", "loop"]).ok();
        assert_disk_has_acked(s, &base, &log, in_flight, "the promoted survivor");
        p.adm(&["up", "loop"]).ok();
        wait_in_sync(pair, Duration::from_secs(60));
        assert!(
            proc_text(p).contains("ro:Secondary/Primary"),
            "round {round}: {}",
            proc_text(p)
        );
        assert_disk_has_acked(p, &base, &log, in_flight, "the restarted node");
        assert_replicas_identical(pair, "after a failover");
        base = std::fs::read(&s.data).expect("read the new Primary's disk");
        primary = 1 - primary;
    }
    eprintln!(
        "soak: {cut_so_far} link cuts and {kills} failovers under write load in {:?}",
        start.elapsed()
    );
    teardown(pair);
}

// ----- 7. crash matrix (issue 8): both nodes, during the initial sync, during `down` ------

/// Sets the pair's `resync-rate` (one config file for both nodes).
fn set_resync_rate(pair: &Pair, rate: &str) {
    let text = std::fs::read_to_string(&pair.alpha().conf).expect("conf");
    let text = text.replace("resync-rate 1000M;", &format!("resync-rate {rate};"));
    std::fs::write(&pair.alpha().conf, text).expect("conf");
}

/// Out-of-sync KiB of a node (proc's `oos:`).
fn oos(n: &Node) -> u64 {
    field(&proc_text(n), "oos").unwrap_or(0)
}

/// Both nodes killed with -9 while the Primary writes (the Secondary first, so the Primary
/// also writes alone for a moment), both restarted: the crashed Primary resyncs its activity
/// log to the peer, and both hold every acknowledged write.
#[test]
fn kill_9_of_both_nodes_under_write_load_then_both_up() {
    let pair = Pair::with_metadata();
    quick_net(&pair);
    let _reaper = KillOnPanic(&pair);
    let (a, b) = (pair.alpha(), pair.beta());
    initial_sync(&pair, Start::ConnectedFirst);
    let base = vec![0u8; DATA_BYTES as usize];
    let writer = Writer::start(a, 0x5EED_0200);
    writer.progress(150, Duration::from_secs(20), a, "before the kills");
    let (pa, pb) = (a.pid().expect("alpha's pid"), b.pid().expect("beta's pid"));
    kill9(pb);
    std::thread::sleep(Duration::from_millis(30));
    kill9(pa);
    wait_gone(pa);
    wait_gone(pb);
    let (log, in_flight) = writer.abandon();
    assert!(!log.is_empty());
    a.adm(&["up", "loop"]).ok();
    b.adm(&["up", "loop"]).ok();
    wait_in_sync(&pair, Duration::from_secs(30));
    assert_disk_has_acked(a, &base, &log, in_flight, "alpha after both crashed");
    assert_disk_has_acked(b, &base, &log, in_flight, "beta after both crashed");
    assert_replicas_identical(&pair, "after both crashed");
    a.adm(&["primary", "loop"]).ok();
    teardown(&pair);
}

/// The initial sync (at 8 MiB/s, about 8 s) is cut by a kill -9 of the SyncTarget, then of
/// the SyncSource in a second full sync (`invalidate`): each restart resumes and finishes
/// it, and the replicas end identical.
#[test]
fn kill_9_during_a_resync_on_either_side_resumes_it() {
    let pair = Pair::with_metadata();
    quick_net(&pair);
    set_resync_rate(&pair, "8M");
    let _reaper = KillOnPanic(&pair);
    let (a, b) = (pair.alpha(), pair.beta());
    a.adm(&["up", "loop"]).ok();
    b.adm(&["up", "loop"]).ok();
    for n in [a, b] {
        wait_for(n, "Connected", Duration::from_secs(15), |t| {
            t.contains("cs:Connected ro:Secondary/Secondary")
        });
    }
    a.adm(&["primary", "--force", "loop"]).ok();
    let total = DATA_BYTES / 1024;
    wait_for(b, "a quarter synced", Duration::from_secs(30), |t| {
        t.contains("cs:SyncTarget") && field(t, "oos").is_some_and(|o| o > 0 && o < total * 3 / 4)
    });
    let pid = b.pid().expect("beta's pid");
    kill9(pid);
    wait_gone(pid);
    b.adm(&["up", "loop"]).ok();
    wait_in_sync(&pair, Duration::from_secs(60));
    assert_replicas_identical(&pair, "after the SyncTarget's crash");

    // Alpha (SyncSource) writes, beta resyncs everything from it, alpha dies half-way.
    write_some(a, 0x5EED_0300);
    b.adm(&["invalidate", "loop"]).ok();
    wait_for(a, "a quarter resynced", Duration::from_secs(30), |t| {
        t.contains("cs:SyncSource") && field(t, "oos").is_some_and(|o| o > 0 && o < total * 3 / 4)
    });
    let left = oos(a);
    let pid = a.pid().expect("alpha's pid");
    kill9(pid);
    wait_gone(pid);
    wait_for(b, "WFConnection", Duration::from_secs(10), |t| {
        t.contains("cs:WFConnection")
    });
    a.adm(&["up", "loop"]).ok();
    wait_in_sync(&pair, Duration::from_secs(60));
    assert!(left > 0);
    assert_replicas_identical(&pair, "after the SyncSource's crash");
    teardown(&pair);
}

/// Writes 2 MiB of known data through `n`'s NBD socket and flushes.
fn write_some(n: &Node, seed: u64) {
    let mut c = Client::connect_unix(nbd_socket(n), "loop", true).expect("NBD client");
    for i in 0..32u64 {
        c.write(i * 512 * 1024, &content(seed + i, 64 * 1024), false)
            .expect("write");
    }
    c.flush().expect("flush");
    c.disconnect().expect("disconnect");
}

/// `down` of the Primary cut short by a kill -9: the next `up` finds metadata that
/// attaches, the pair reconnects and resyncs, and every acknowledged write is there.
#[test]
fn kill_9_during_down_then_up() {
    let pair = Pair::with_metadata();
    quick_net(&pair);
    let _reaper = KillOnPanic(&pair);
    let (a, b) = (pair.alpha(), pair.beta());
    initial_sync(&pair, Start::ConnectedFirst);
    let base = vec![0u8; DATA_BYTES as usize];
    let writer = Writer::start(a, 0x5EED_0400);
    writer.progress(150, Duration::from_secs(20), a, "before down");
    let log = writer.finish(a);
    let pid = a.pid().expect("alpha's pid");
    let (run_dir, conf) = (a.run_dir.clone(), a.conf.clone());
    let down = std::thread::spawn(move || {
        let mut cmd = util::urbdadm();
        cmd.env("URBD_RUN_DIR", &run_dir)
            .arg("-c")
            .arg(&conf)
            .args(["--node", "alpha", "down", "loop"]);
        let _ = util::run_within(&mut cmd, Duration::from_secs(20));
    });
    std::thread::sleep(Duration::from_millis(15));
    kill9(pid);
    wait_gone(pid);
    down.join().expect("down thread");
    a.adm(&["up", "loop"]).ok();
    wait_in_sync(&pair, Duration::from_secs(30));
    assert_disk_has_acked(a, &base, &log, None, "alpha after the cut down");
    assert_disk_has_acked(b, &base, &log, None, "beta after the cut down");
    assert_replicas_identical(&pair, "after the cut down");
    teardown(&pair);
}
