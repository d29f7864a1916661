//! Local disk I/O errors with real daemons on loopback (issue 8 point 3): `on-io-error`
//! `detach` (the default: a Primary whose disk fails detaches it and goes on serving,
//! reads and writes, through its UpToDate peer as Diskless), `pass_on` (the disk stays,
//! Inconsistent; failed reads are served by the peer), `call-local-io-error` (detach and
//! the `local-io-error` handler with DRBD's environment), and a read error on the
//! SyncSource during a resync (the resync fails cleanly: the target stays Inconsistent).
//!
//! Faults come from urbd's fault-injecting backend: the daemons run with
//! `URBD_FAULT_INJECTION=1` and `urbdadm inject-fault` tells them which sectors of the data
//! disk fail (or that it is dead).

mod util;

use std::fs;

use util::pair::*;
use util::repl::*;

const FAULTS: [(&str, &str); 1] = [("URBD_FAULT_INJECTION", "1")];

/// `up` on both with fault injection on, `wait-connect`, the seed's initial sync; alpha
/// ends Primary, both UpToDate.
fn faulty_synced_pair(opts: &PairOpts) -> Pair {
    let pair = Pair::with_metadata_opts(opts);
    for n in [pair.alpha(), pair.beta()] {
        n.adm_env(&FAULTS, &["up", "loop"]).ok();
    }
    for n in [pair.alpha(), pair.beta()] {
        n.adm(&["wait-connect", "loop"]).ok();
    }
    seed_initial_sync(&pair);
    wait_synced(&pair);
    pair
}

fn inject(n: &Node, args: &[&str]) {
    let mut a = vec!["inject-fault", "loop"];
    a.extend_from_slice(args);
    n.adm(&a).ok();
}

fn dstate(n: &Node) -> String {
    n.adm(&["dstate", "loop"]).ok().stdout.trim().to_string()
}

/// Reads `len` bytes at `at` through a fresh NBD client on `n`.
fn read_nbd(n: &Node, at: u64, len: usize) -> Result<Vec<u8>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = nbd_socket(n);
    std::thread::spawn(move || {
        let res = (|| {
            let mut c =
                urbd::nbd::Client::connect_unix(sock, "loop", true).map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(len);
            while out.len() < len {
                let n = (len - out.len()).min(MIB as usize);
                let data = c
                    .read(at + out.len() as u64, n as u32)
                    .map_err(|e| e.to_string())?;
                out.extend_from_slice(&data);
            }
            c.disconnect().map_err(|e| e.to_string())?;
            Ok(out)
        })();
        let _ = tx.send(res);
    });
    rx.recv_timeout(WRITES_LIMIT)
        .unwrap_or_else(|_| Err(format!("NBD read not answered within {WRITES_LIMIT:?}")))
}

fn file_range(path: &std::path::Path, at: u64, len: usize) -> Vec<u8> {
    let all = fs::read(path).expect("read data file");
    all[at as usize..at as usize + len].to_vec()
}

#[test]
fn detach_keeps_the_primary_serving_through_the_peer_until_the_disk_is_replaced() {
    let pair = faulty_synced_pair(&PairOpts::default());
    let (a, b) = (pair.alpha(), pair.beta());
    let first = random_bytes(1, MIB as usize);
    write_all(&pair, a, vec![(0, first.clone())]);
    // The disk dies: the next write fails locally, alpha detaches, the write succeeds
    // because beta has it (protocol C), and everything after goes through beta.
    inject(a, &["--dead"]);
    let second = random_bytes(2, 2 * MIB as usize);
    write_all(&pair, a, vec![(MIB, second.clone())]);
    wait_until(&pair, "alpha Diskless/UpToDate", SETTLE, || {
        dstate(a) == "Diskless/UpToDate"
    });
    let line = state_line(a);
    assert!(
        line.starts_with("cs:Connected ro:Primary/Secondary ds:Diskless/UpToDate C r-----"),
        "{line}"
    );
    assert!(
        state_line(b).starts_with("cs:Connected ro:Secondary/Primary ds:UpToDate/Diskless "),
        "{}",
        state_line(b)
    );
    let log = a.log();
    assert!(
        log.contains("Local IO failed in a write. Detaching..."),
        "{log}"
    );
    // Reads (the old data and the new) come from beta.
    let got = read_nbd(a, 0, 3 * MIB as usize).unwrap_or_else(|e| panic!("{e}\n{}", logs(&pair)));
    assert!(
        got[..MIB as usize] == first[..],
        "first MiB read through the peer"
    );
    assert!(got[MIB as usize..] == second[..], "written while Diskless");
    assert!(
        file_range(&b.data, MIB, 2 * MIB as usize) == second,
        "beta has it"
    );
    // The link drops and comes back: a Diskless node reconnects without a resync
    // decision (nothing to compare) and goes on serving.
    a.adm(&["disconnect", "loop"]).ok();
    assert!(
        read_nbd(a, 0, 4096).is_err(),
        "no data in reach while disconnected"
    );
    a.adm(&["connect", "loop"]).ok();
    wait_until(
        &pair,
        "alpha Connected again, Diskless/UpToDate",
        SETTLE,
        || state_line(a).starts_with("cs:Connected ro:Primary/Secondary ds:Diskless/UpToDate"),
    );
    let got = read_nbd(a, 0, MIB as usize).unwrap_or_else(|e| panic!("{e}\n{}", logs(&pair)));
    assert!(got == first, "read through the peer after the reconnect");
    // More writes while Diskless, then the operator's way back: move the Primary role,
    // replace the disk and attach it (refused while Primary), resync.
    let third = random_bytes(3, MIB as usize);
    write_all(&pair, a, vec![(4 * MIB, third.clone())]);
    let refused = a.adm(&["attach", "loop"]);
    assert_ne!(refused.code, 0, "attach under a Diskless Primary");
    assert!(
        refused.stderr.contains("move the Primary role"),
        "{}",
        refused.stderr
    );
    a.adm(&["secondary", "loop"]).ok();
    b.adm(&["primary", "loop"]).ok();
    // The disk is replaced (here: the fault goes) and attached on the running node.
    inject(a, &[]);
    a.adm(&["attach", "loop"]).ok();
    wait_until(&pair, "alpha resynced from beta", SETTLE * 2, || {
        let (la, lb) = (proc_lines(a), proc_lines(b));
        la.len() == 2
            && lb.len() == 2
            && la[0].contains("cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate")
            && lb[0].contains("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate")
            && la[1].ends_with(" oos:0")
            && lb[1].ends_with(" oos:0")
    });
    assert_disks_identical(&pair);
    assert!(file_range(&a.data, 4 * MIB, MIB as usize) == third);
}

#[test]
fn pass_on_keeps_the_disk_and_serves_failed_reads_from_the_peer() {
    let pair = faulty_synced_pair(&PairOpts {
        disk: "on-io-error pass_on;".into(),
        ..PairOpts::default()
    });
    let (a, b) = (pair.alpha(), pair.beta());
    let data = random_bytes(5, MIB as usize);
    write_all(&pair, a, vec![(0, data.clone())]);
    // Sectors 16..24 (the third 4 KiB block) cannot be read or written any more.
    inject(a, &["--read-error", "16+8", "--write-error", "16+8"]);
    let got = read_nbd(a, 0, MIB as usize).unwrap_or_else(|e| panic!("{e}\n{}", logs(&pair)));
    assert!(got == data, "the failed read came from the peer");
    wait_until(&pair, "alpha Inconsistent/UpToDate", SETTLE, || {
        dstate(a) == "Inconsistent/UpToDate"
    });
    // A write there still succeeds (beta has it); alpha's copy misses it.
    let patch = random_bytes(6, 4096);
    write_all(&pair, a, vec![(8192, patch.clone())]);
    let got = read_nbd(a, 8192, 4096).unwrap_or_else(|e| panic!("{e}\n{}", logs(&pair)));
    assert!(got == patch);
    assert!(file_range(&b.data, 8192, 4096) == patch);
    assert!(a.log().contains("on-io-error pass_on"), "{}", logs(&pair));
    assert_eq!(role(a), "Primary/Secondary");
}

#[test]
fn call_local_io_error_runs_the_handler_and_detaches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("local-io-error.env");
    let handlers = format!(
        "handlers {{ local-io-error \"env | grep ^DRBD_ | sort > {}\"; }}\n",
        out.display()
    );
    let pair = faulty_synced_pair(&PairOpts {
        disk: "on-io-error call-local-io-error;".into(),
        extra: [handlers.clone(), handlers],
        ..PairOpts::default()
    });
    let (a, _) = (pair.alpha(), pair.beta());
    inject(a, &["--write-error", "0+8"]);
    write_all(&pair, a, vec![(0, random_bytes(7, 4096))]);
    wait_until(&pair, "the local-io-error handler", SETTLE, || {
        fs::read_to_string(&out).is_ok_and(|s| s.contains("DRBD_RESOURCE=loop"))
    });
    let env = fs::read_to_string(&out).expect("handler output");
    assert!(
        env.contains("DRBD_MINOR=") && env.contains("DRBD_PEER="),
        "{env}"
    );
    wait_until(&pair, "alpha Diskless/UpToDate", SETTLE, || {
        dstate(a) == "Diskless/UpToDate"
    });
    let got = read_nbd(a, 0, 4096).unwrap_or_else(|e| panic!("{e}\n{}", logs(&pair)));
    assert!(got == random_bytes(7, 4096));
    // The other way back: the role moves, the node goes down and comes up with its disk.
    a.adm(&["secondary", "loop"]).ok();
    pair.beta().adm(&["primary", "loop"]).ok();
    a.adm(&["down", "loop"]).ok();
    a.adm(&["up", "loop"]).ok();
    wait_until(
        &pair,
        "alpha resynced after down and up",
        SETTLE * 2,
        || {
            let la = proc_lines(a);
            la.len() == 2
                && la[0].contains("cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate")
                && la[1].ends_with(" oos:0")
        },
    );
    assert_disks_identical(&pair);
}

#[test]
fn a_read_error_on_the_sync_source_fails_the_resync_cleanly() {
    let pair = faulty_synced_pair(&PairOpts::default());
    let (a, b) = (pair.alpha(), pair.beta());
    b.adm(&["disconnect", "loop"]).ok();
    write_all(&pair, a, vec![(0, random_bytes(8, 2 * MIB as usize))]);
    // The blocks to resync cannot be read on the SyncSource.
    inject(a, &["--read-error", "0+4096"]);
    b.adm(&["connect", "loop"]).ok();
    wait_until(
        &pair,
        "the resync to end with beta Inconsistent",
        SETTLE * 2,
        || {
            let lb = proc_lines(b);
            !lb.is_empty() && lb[0].contains("cs:Connected") && lb[0].contains("ds:Inconsistent/")
        },
    );
    let log = b.log();
    let done = log
        .lines()
        .rfind(|l| l.contains("Resync done (SyncTarget)"))
        .unwrap_or_else(|| panic!("no resync end\n{}", logs(&pair)));
    assert!(done.ends_with("failed=512"), "{done}\n{}", logs(&pair));
    // The source detached its failing disk; nobody has good data the Primary can reach,
    // so it refuses I/O rather than serve stale blocks.
    wait_until(&pair, "alpha Diskless", SETTLE, || {
        dstate(a).starts_with("Diskless/")
    });
    assert!(
        read_nbd(a, 0, 4096).is_err(),
        "alpha has no UpToDate data to serve"
    );
    assert_eq!(role(b), "Secondary/Primary");
}

#[test]
fn inject_fault_is_refused_without_fault_injection() {
    let pair = Pair::with_metadata_opts(&PairOpts::default());
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    let r = a.adm(&["inject-fault", "loop", "--dead"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("URBD_FAULT_INJECTION=1"), "{}", r.stderr);
    a.adm(&["down", "loop"]).ok();
}
