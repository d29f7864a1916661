//! Helpers of the two-node tests (tests/replication.rs, tests/resync.rs): a synced pair,
//! proc parsing, bounded waits with both logs on failure, NBD writes with a time limit.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use urbd::nbd::Client;

use super::pair::*;

/// How long a resync or a (re)connection may take before the test fails.
pub const SETTLE: Duration = Duration::from_secs(30);

pub const MIB: u64 = 1 << 20;

/// Default options but a short `connect-int`, so that reconnects after a fault take seconds
/// (DRBD's default, 10 s, would make the waits below depend on the machine's load).
pub fn quick() -> PairOpts {
    let net = "net { connect-int 2; }".to_string();
    PairOpts {
        extra: [net.clone(), net],
        ..PairOpts::default()
    }
}

pub fn nbd_socket(n: &Node) -> PathBuf {
    n.run_dir.join("loop.nbd")
}

pub fn nbd_uri(n: &Node) -> String {
    format!("nbd+unix:///loop?socket={}", nbd_socket(n).display())
}

/// Deterministic pseudo-random bytes (xorshift64*), different for each seed.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The last lines of both nodes' logs, for failure messages.
pub fn logs(pair: &Pair) -> String {
    let mut s = String::new();
    for n in &pair.nodes {
        let log = n.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(40);
        s.push_str(&format!(
            "--- {} loop.log (last {} lines) ---\n{}\n",
            n.name,
            lines.len() - from,
            lines[from..].join("\n")
        ));
    }
    s
}

/// The two lines of a minor in `proc` (the state line and the counters line) plus any
/// sync progress lines, without the headers and blank lines.
pub fn proc_lines(n: &Node) -> Vec<String> {
    n.proc_body()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// The state line without the minor number, e.g. `cs:Connected ro:Primary/Secondary ...`.
pub fn state_line(n: &Node) -> String {
    let lines = proc_lines(n);
    let first = lines.first().expect("a state line");
    first
        .split_once(": ")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| first.clone())
}

/// A counter (`ns`, `nr`, `dw`, `oos`, ...) of the counters line.
pub fn counter(n: &Node, name: &str) -> u64 {
    let lines = proc_lines(n);
    let prefix = format!("{name}:");
    lines
        .get(1)
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(prefix.as_str()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in {lines:?}"))
}

pub fn cstate(n: &Node) -> String {
    n.adm(&["cstate", "loop"]).ok().stdout.trim().to_string()
}

pub fn role(n: &Node) -> String {
    n.adm(&["role", "loop"]).ok().stdout.trim().to_string()
}

/// Polls `cond` every 50 ms until it holds or `limit` passes (then fails with `what` and the
/// logs).
#[track_caller]
pub fn wait_until(pair: &Pair, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            let procs: Vec<String> = pair
                .nodes
                .iter()
                .map(|n| format!("{}: {:?}", n.name, proc_lines(n)))
                .collect();
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}\n{}",
                procs.join("\n"),
                logs(pair)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const SYNCED_ALPHA: &str = "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate";

pub const SYNCED_BETA: &str = "cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate";

/// Waits until alpha is Primary and both are Connected UpToDate/UpToDate with no sync lines.
/// The limit grows with the disk (a full sync of 1 GiB on a loaded 2-core machine has run
/// at 15 MiB/s): [`SETTLE`] plus a second per 8 MiB.
#[track_caller]
pub fn wait_synced(pair: &Pair) {
    let limit = SETTLE + Duration::from_secs(pair.alpha().data_bytes() / (8 * MIB));
    wait_until(pair, "Connected UpToDate/UpToDate on both", limit, || {
        let (a, b) = (proc_lines(pair.alpha()), proc_lines(pair.beta()));
        a.len() == 2
            && b.len() == 2
            && a[0].contains(SYNCED_ALPHA)
            && b[0].contains(SYNCED_BETA)
            && a[1].ends_with(" oos:0")
            && b[1].ends_with(" oos:0")
    });
}

/// Both data disks, byte for byte (the meta-data is in separate files).
#[track_caller]
pub fn assert_disks_identical(pair: &Pair) {
    let (a, b) = (pair.alpha(), pair.beta());
    let da = fs::read(&a.data).expect("read alpha's disk");
    let db = fs::read(&b.data).expect("read beta's disk");
    assert_eq!(da.len(), db.len(), "disk sizes");
    if let Some(i) = da.iter().zip(&db).position(|(x, y)| x != y) {
        let blocks = da
            .chunks(4096)
            .zip(db.chunks(4096))
            .filter(|(x, y)| x != y)
            .count();
        panic!(
            "data disks differ: first at byte {i} (4 KiB block {}), {blocks} blocks differ\n{}",
            i / 4096,
            logs(pair)
        );
    }
}

/// Polls until both data disks are identical (protocols A and B acknowledge before the peer
/// wrote), then asserts it with a report.
#[track_caller]
pub fn wait_disks_identical(pair: &Pair) {
    let start = Instant::now();
    while start.elapsed() < SETTLE {
        let da = fs::read(&pair.alpha().data).expect("read alpha's disk");
        let db = fs::read(&pair.beta().data).expect("read beta's disk");
        if da == db {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_disks_identical(pair);
}

/// The four UUIDs of get-gi with the role bit (bit 0 of the current UUID) cleared.
pub fn gi_uuids(n: &Node) -> Vec<u64> {
    let gi = n.get_gi();
    gi_fields(&gi)[..4]
        .iter()
        .map(|f| u64::from_str_radix(f, 16).unwrap_or_else(|e| panic!("get-gi {gi:?}: {e}")) & !1)
        .collect()
}

pub fn opts_rate(rate: &str) -> PairOpts {
    PairOpts {
        resync_rate: rate.into(),
        ..PairOpts::default()
    }
}

/// `up` on both (in the given order), `wait-connect` on both: Connected, both Secondary and
/// Inconsistent (fresh metadata).
pub fn up_and_connect(pair: &Pair, beta_first: bool) {
    let order = if beta_first {
        [pair.beta(), pair.alpha()]
    } else {
        [pair.alpha(), pair.beta()]
    };
    for n in order {
        n.adm(&["up", "loop"]).ok();
    }
    for n in order {
        n.adm(&["wait-connect", "loop"]).ok();
    }
    for n in order {
        let line = state_line(n);
        assert!(
            line.starts_with("cs:Connected ro:Secondary/Secondary ds:Inconsistent/Inconsistent ")
                && line.ends_with(" r-----"),
            "{}: {line}",
            n.name
        );
    }
}

/// The seed's first synchronisation: `primary --force` on alpha, then `--discard-my-data
/// connect` on beta (already connected: a note, exit 0), and the full sync it starts.
pub fn seed_initial_sync(pair: &Pair) {
    pair.alpha().adm(&["primary", "--force", "loop"]).ok();
    let out = pair
        .beta()
        .adm(&["--", "--discard-my-data", "connect", "loop"])
        .ok();
    assert!(
        out.stdout.contains("already connected") && out.stdout.contains("nothing to do"),
        "connect on a connected resource: stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
}

/// Checks what a finished initial sync must leave: the exact proc lines, roles, identical
/// disks, equal UUIDs.
pub fn check_synced(pair: &Pair) {
    let (a, b) = (pair.alpha(), pair.beta());
    assert_eq!(
        state_line(a),
        "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----"
    );
    assert_eq!(
        state_line(b),
        "cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----"
    );
    assert_eq!(role(a), "Primary/Secondary");
    assert_eq!(role(b), "Secondary/Primary");
    assert_eq!(cstate(a), "Connected");
    assert_eq!(
        a.adm(&["dstate", "loop"]).ok().stdout.trim(),
        "UpToDate/UpToDate"
    );
    assert_disks_identical(pair);
    assert_eq!(
        gi_uuids(a),
        gi_uuids(b),
        "get-gi UUIDs (role bit ignored): alpha {} beta {}",
        a.get_gi(),
        b.get_gi()
    );
    // The current UUID is not the "just created" one any more.
    assert_ne!(gi_uuids(a)[0], 4, "{}", a.get_gi());
}

/// A Connected, synced pair with alpha Primary (resync-rate from `opts`).
pub fn synced_pair(opts: &PairOpts) -> Pair {
    let pair = Pair::with_metadata_opts(opts);
    up_and_connect(&pair, false);
    seed_initial_sync(&pair);
    wait_synced(&pair);
    pair
}

/// The size of the last resync the node's log announced ("Began resync as SyncSource (will
/// sync N KB [...]").
pub fn last_resync_kib(n: &Node) -> Option<u64> {
    n.log()
        .lines()
        .filter_map(|l| l.split_once("(will sync ").map(|(_, r)| r))
        .filter_map(|r| r.split_once(" KB").and_then(|(k, _)| k.parse().ok()))
        .next_back()
}

/// How long writes through alpha's NBD socket may take when the peer is gone (the NBD
/// client's own read timeout is 60 s; a hang must fail the test sooner).
pub const WRITES_LIMIT: Duration = Duration::from_secs(20);

/// Runs `writes` (offset, data) through a fresh client on `n`'s NBD socket, then a flush, in
/// a thread; `Err` with what failed, or when they are not all answered within `limit`.
pub fn writes_within(n: &Node, writes: Vec<(u64, Vec<u8>)>, limit: Duration) -> Result<(), String> {
    writes_to(nbd_socket(n), writes, false, limit)
}

/// [`writes_within`] that fails the test (with both logs) on an error or a hang.
#[track_caller]
pub fn write_all(pair: &Pair, n: &Node, writes: Vec<(u64, Vec<u8>)>) {
    writes_within(n, writes, WRITES_LIMIT)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", n.name, logs(pair)));
}

/// [`writes_within`] on an NBD socket.
pub fn writes_to(
    sock: PathBuf,
    writes: Vec<(u64, Vec<u8>)>,
    fua: bool,
    limit: Duration,
) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let res = (|| {
            let mut c = Client::connect_unix(sock, "loop", true).map_err(|e| e.to_string())?;
            for (i, (off, data)) in writes.iter().enumerate() {
                for (j, chunk) in data.chunks(MIB as usize).enumerate() {
                    let at = off + j as u64 * MIB;
                    c.write(at, chunk, fua)
                        .map_err(|e| format!("write {i} at {at}: {e}"))?;
                }
            }
            c.flush().map_err(|e| format!("flush: {e}"))?;
            c.disconnect().map_err(|e| format!("disconnect: {e}"))
        })();
        let _ = tx.send(res);
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| Err(format!("NBD writes not answered within {limit:?}")))
}

pub fn kill9(n: &Node) {
    let pid = n.pid().expect("a pid");
    let p = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::kill_process(p, rustix::process::Signal::KILL).expect("kill -9");
    wait_gone(pid);
}

/// A pair whose nodes must not connect: both up, alpha Primary and written to; beta's disk
/// must stay untouched.
#[track_caller]
pub fn assert_never_connects(pair: &Pair, log_says: &str) {
    let (a, b) = (pair.alpha(), pair.beta());
    a.adm(&["up", "loop"]).ok();
    b.adm(&["up", "loop"]).ok();
    wait_until(pair, &format!("a log line {log_says:?}"), SETTLE, || {
        a.log().contains(log_says) || b.log().contains(log_says)
    });
    a.adm(&["primary", "--force", "loop"]).ok();
    write_all(pair, a, vec![(0, random_bytes(9, 2 * MIB as usize))]);
    // Give a (wrong) retry time to happen.
    std::thread::sleep(Duration::from_millis(2500));
    for n in [a, b] {
        let cs = cstate(n);
        assert!(
            cs == "StandAlone" || cs == "WFConnection",
            "{} is {cs}\n{}",
            n.name,
            logs(pair)
        );
        assert!(
            !n.log().contains("conn( WFReportParams -> Connected )"),
            "{}",
            logs(pair)
        );
    }
    assert_eq!(
        b.adm(&["dstate", "loop"]).ok().stdout.trim(),
        "Inconsistent/DUnknown"
    );
    let beta_disk = std::fs::read(&b.data).expect("beta's disk");
    assert!(
        beta_disk.iter().all(|&x| x == 0),
        "something was written on beta\n{}",
        logs(pair)
    );
}
