//! Outdate and fencing with real daemons on loopback (issue 7 point 4): `outdate` online
//! and offline (the offline form checked against `drbdmeta outdate`, byte for byte), the
//! `fence-peer` handler with DRBD's environment and exit codes, promotion of a
//! disconnected node under `fencing`, and `resource-and-stonith` freezing I/O until the
//! handler answers (or `resume-io`).
//!
//! The handler is a script in the test's folder: it records its environment and how often
//! it ran, waits (bounded, 60 s) while a `hold` file exists, and exits with the code in the
//! `code` file.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use util::have_tool;
use util::pair::*;
use util::repl::*;

const HANDLER: &str = r#"#!/bin/sh
dir="$(dirname "$0")"
env | grep '^DRBD_' | sort > "$dir/fence-$DRBD_MINOR.env"
echo ran >> "$dir/fence-$DRBD_MINOR.runs"
n=0
while [ -e "$dir/hold" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
exit "$(cat "$dir/code")"
"#;

/// The handler's folder, with its script; `code` is its exit code to start with.
struct Fence {
    dir: tempfile::TempDir,
}

impl Fence {
    fn new(code: i32) -> Fence {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("fence.sh"), HANDLER).expect("write handler");
        let f = Fence { dir };
        f.set_code(code);
        f
    }

    fn set_code(&self, code: i32) {
        fs::write(self.dir.path().join("code"), code.to_string()).expect("write code");
    }

    fn hold(&self, on: bool) {
        let p = self.dir.path().join("hold");
        if on {
            fs::write(&p, b"").expect("hold");
        } else {
            let _ = fs::remove_file(&p);
        }
    }

    fn runs(&self, minor: u32) -> usize {
        fs::read_to_string(self.dir.path().join(format!("fence-{minor}.runs")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn env(&self, minor: u32) -> String {
        fs::read_to_string(self.dir.path().join(format!("fence-{minor}.env"))).unwrap_or_default()
    }

    fn handlers(&self) -> String {
        format!(
            "handlers {{ fence-peer \"/bin/sh {}\"; }}\n",
            self.dir.path().join("fence.sh").display()
        )
    }
}

/// A synced pair (alpha Primary) with `fencing` and the handler.
fn fenced_pair(fencing: &str, fence: &Fence) -> Pair {
    let text = format!("net {{ connect-int 2; }}\n{}", fence.handlers());
    synced_pair(&PairOpts {
        disk: format!("fencing {fencing};"),
        extra: [text.clone(), text],
        ..PairOpts::default()
    })
}

fn dstate(n: &Node) -> String {
    n.adm(&["dstate", "loop"]).ok().stdout.trim().to_string()
}

/// A write of 1 MiB at `at` through a fresh NBD client, answered on the channel.
fn write_in_background(n: &Node, at: u64) -> mpsc::Receiver<Result<(), String>> {
    let (tx, rx) = mpsc::channel();
    let sock = nbd_socket(n);
    std::thread::spawn(move || {
        let _ = tx.send(writes_to(
            sock,
            vec![(at, random_bytes(at, MIB as usize))],
            false,
            Duration::from_secs(55),
        ));
    });
    rx
}

/// A read of 4 KiB at 0 through a fresh NBD client, answered on the channel.
fn read_in_background(n: &Node) -> mpsc::Receiver<Result<Vec<u8>, String>> {
    let (tx, rx) = mpsc::channel();
    let sock = nbd_socket(n);
    std::thread::spawn(move || {
        let res = (|| {
            let mut c =
                urbd::nbd::Client::connect_unix(sock, "loop", true).map_err(|e| e.to_string())?;
            let data = c.read(0, 4096).map_err(|e| e.to_string())?;
            c.disconnect().map_err(|e| e.to_string())?;
            Ok(data)
        })();
        let _ = tx.send(res);
    });
    rx
}

/// `drbdmeta --force - v08 FILE 0 outdate` (the pair's meta files are `[0]`-indexed).
fn drbdmeta_outdate(meta: &Path) -> std::process::Output {
    std::process::Command::new("drbdmeta")
        .args(["--force", "-", "v08"])
        .arg(meta)
        .args(["0", "outdate"])
        .output()
        .expect("run drbdmeta")
}

/// get-gi's seven flag columns: consistent, was-up-to-date, primary, connected, full
/// sync, peer-out-dated, crashed primary.
fn gi_flags(n: &Node) -> Vec<u8> {
    n.get_gi()
        .trim()
        .split(':')
        .skip(4)
        .map(|f| f.parse().expect("a flag"))
        .collect()
}

fn copy_of(path: &Path, name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    fs::copy(path, &to).expect("copy");
    to
}

// ----- outdate ---------------------------------------------------------------------------

/// `outdate` on a running resource: StandAlone Secondary -> Outdated (not promotable
/// without --force, UpToDate again after the next resync); Connected -> refused (-6),
/// nothing changes; a disconnected Primary -> refused (-2).
#[test]
fn outdate_online() {
    let pair = synced_pair(&quick());
    let (a, b) = (pair.alpha(), pair.beta());

    let r = b.adm(&["outdate", "loop"]);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(
        r.stderr
            .contains("1: State change failed: (-6) Refusing to be Outdated while Connected"),
        "{r:?}"
    );
    assert_eq!(dstate(b), "UpToDate/UpToDate");

    for n in [a, b] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    let r = a.adm(&["outdate", "loop"]);
    assert_eq!(r.code, 17, "{r:?}");
    assert!(
        r.stderr.contains("(-2) Need access to UpToDate data"),
        "{r:?}"
    );
    assert_eq!(dstate(a), "UpToDate/DUnknown");

    b.adm(&["outdate", "loop"]).ok();
    assert_eq!(dstate(b), "Outdated/DUnknown");
    assert!(
        state_line(b).contains("ds:Outdated/DUnknown"),
        "{}",
        state_line(b)
    );
    // Twice: nothing to do, success.
    b.adm(&["outdate", "loop"]).ok();
    let r = b.adm(&["primary", "loop"]);
    assert_eq!(r.code, 17, "{r:?}");
    assert!(
        r.stderr.contains("(-2) Need access to UpToDate data"),
        "{r:?}"
    );
    assert_eq!(role(b), "Secondary/Unknown");

    // Back in touch with the Primary: resynced, UpToDate.
    for n in [a, b] {
        n.adm(&["connect", "loop"]).ok();
    }
    wait_synced(&pair);
    assert_eq!(dstate(b), "UpToDate/UpToDate");
}

/// `outdate` on a resource that is down changes the metadata in place exactly as
/// `drbdmeta outdate` does; an Inconsistent disk is refused with exit code 5 by both and
/// nothing is written.
#[test]
fn outdate_offline_is_drbdmetas() {
    if !have_tool("drbdmeta") {
        return;
    }
    let pair = synced_pair(&quick());
    let b = pair.beta();
    b.adm(&["down", "loop"]).ok();
    let scratch = tempfile::tempdir().expect("tempdir");
    let theirs = copy_of(&b.meta, "drbdmeta.meta", scratch.path());
    let out = drbdmeta_outdate(&theirs);
    assert!(out.status.success(), "drbdmeta outdate: {out:?}");
    b.adm(&["outdate", "loop"]).ok();
    assert_eq!(
        fs::read(&b.meta).expect("read"),
        fs::read(&theirs).expect("read"),
        "urbdadm outdate and drbdmeta outdate wrote different bytes"
    );
    // Consistent, no longer was-up-to-date.
    assert_eq!(
        &gi_flags(b)[..2],
        &[1, 0],
        "get-gi after outdate: {}",
        b.get_gi()
    );
    // Up again: Outdated, and the next connect resyncs it. alpha stays disconnected
    // until the state was seen (else the resync may already have begun).
    pair.alpha().adm(&["disconnect", "loop"]).ok();
    b.adm(&["up", "loop"]).ok();
    assert_eq!(dstate(b).split('/').next(), Some("Outdated"));
    pair.alpha().adm(&["connect", "loop"]).ok();
    wait_synced(&pair);

    // Inconsistent (fresh metadata): refused by both with 5, the file unchanged.
    let fresh = Pair::with_metadata_opts(&quick());
    let n = fresh.alpha();
    let before = fs::read(&n.meta).expect("read");
    let theirs = copy_of(&n.meta, "fresh.meta", scratch.path());
    let out = drbdmeta_outdate(&theirs);
    assert_eq!(
        out.status.code(),
        Some(5),
        "drbdmeta on an inconsistent disk: {out:?}"
    );
    let r = n.adm(&["outdate", "loop"]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stderr.contains("Device is inconsistent."), "{r:?}");
    assert_eq!(fs::read(&n.meta).expect("read"), before, "nothing written");
}

// ----- fencing resource-only -------------------------------------------------------------

/// A Primary that loses its peer runs fence-peer with DRBD's environment; "4" (peer
/// fenced) leaves it UpToDate/Outdated; I/O never stops. A disconnected Secondary asks
/// the handler before it is promoted: "1" refuses (-7), "6" (peer is Primary) outdates it,
/// "4" lets it through.
#[test]
fn resource_only_fences_and_guards_promotion() {
    let fence = Fence::new(4);
    let pair = fenced_pair("resource-only", &fence);
    let (a, b) = (pair.alpha(), pair.beta());
    kill9(b);
    wait_until(&pair, "the fence-peer verdict on alpha", SETTLE, || {
        a.log()
            .contains("fence-peer helper returned 4 (peer was fenced)")
    });
    assert!(
        state_line(a).contains("ds:UpToDate/Outdated C r-----"),
        "{}",
        state_line(a)
    );
    assert_eq!(fence.runs(0), 1);
    let env = fence.env(0);
    for want in [
        "DRBD_RESOURCE=loop",
        "DRBD_MINOR=0",
        "DRBD_PEER=beta",
        "DRBD_PEER_ADDRESS=127.0.0.1",
        "DRBD_PEER_AF=ipv4",
    ] {
        assert!(env.lines().any(|l| l == want), "no {want} in\n{env}");
    }
    // Not frozen.
    write_all(&pair, a, vec![(0, random_bytes(1, MIB as usize))]);
    // The peer marked Outdated is in alpha's flags (get-gi's peer-out-dated column).
    assert_eq!(gi_flags(a)[5], 1, "get-gi {}", a.get_gi());

    // Beta comes back, resyncs; then both disconnect (alpha's handler runs again).
    b.adm(&["up", "loop"]).ok();
    wait_synced(&pair);
    fence.set_code(1);
    for n in [a, b] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    wait_until(&pair, "alpha's second verdict", SETTLE, || {
        a.log().contains("fence-peer helper broken, returned 1")
    });
    // Beta (UpToDate, StandAlone) may not become Primary while the peer is not outdated.
    let r = b.adm(&["primary", "loop"]);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(
        r.stderr
            .contains("(-7) Refusing to be Primary while peer is not outdated"),
        "{r:?}"
    );
    assert_eq!(fence.runs(1), 1);
    assert_eq!(role(b), "Secondary/Unknown");
    assert_eq!(dstate(b), "UpToDate/DUnknown");
    // "The peer is Primary": beta outdates itself.
    fence.set_code(6);
    let r = b.adm(&["primary", "loop"]);
    assert_eq!(r.code, 17, "{r:?}");
    assert!(b.log().contains("Peer is primary, outdating myself."));
    assert_eq!(dstate(b), "Outdated/DUnknown");
    // Outdated: not promoted without --force (no handler call needed to refuse).
    fence.set_code(4);
    let r = b.adm(&["primary", "loop"]);
    assert_eq!(r.code, 17, "{r:?}");
    assert_eq!(fence.runs(1), 2);
    // With --force it is (the handler is asked first and fences the peer).
    b.adm(&["primary", "--force", "loop"]).ok();
    assert_eq!(role(b), "Primary/Unknown");
    assert_eq!(dstate(b), "UpToDate/Outdated");
    assert_eq!(fence.runs(1), 3);
}

/// A StandAlone UpToDate Secondary promoted after the handler said "peer fenced".
#[test]
fn resource_only_promotes_after_the_peer_is_fenced() {
    let fence = Fence::new(4);
    let pair = fenced_pair("resource-only", &fence);
    let (a, b) = (pair.alpha(), pair.beta());
    a.adm(&["secondary", "loop"]).ok();
    for n in [a, b] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    // Nobody was Primary when the link went: no handler yet.
    assert_eq!(fence.runs(0) + fence.runs(1), 0);
    b.adm(&["primary", "loop"]).ok();
    assert_eq!(fence.runs(1), 1);
    assert!(
        b.log()
            .contains("fence-peer helper returned 4 (peer was fenced)")
    );
    assert_eq!(role(b), "Primary/Unknown");
    assert_eq!(dstate(b), "UpToDate/Outdated");
    write_all(&pair, b, vec![(0, random_bytes(2, MIB as usize))]);
}

// ----- resource-and-stonith --------------------------------------------------------------

/// Under resource-and-stonith the Primary freezes reads and writes when it loses its peer
/// and resumes when the handler says the peer is stonithed; a broken handler leaves I/O
/// frozen until `resume-io`.
#[test]
fn stonith_freezes_io_until_the_handler_answers() {
    let fence = Fence::new(7);
    let pair = fenced_pair("resource-and-stonith", &fence);
    let (a, b) = (pair.alpha(), pair.beta());
    fence.hold(true);
    kill9(b);
    wait_until(&pair, "alpha frozen (proc's s flag)", SETTLE, || {
        state_line(a).ends_with(" s-----")
    });
    let write = write_in_background(a, 8 * MIB);
    let read = read_in_background(a);
    // Held while the handler has not answered (it waits for the `hold` file).
    assert!(
        write.recv_timeout(Duration::from_secs(1)).is_err(),
        "a write completed while I/O was frozen\n{}",
        logs(&pair)
    );
    assert!(
        read.recv_timeout(Duration::from_millis(200)).is_err(),
        "a read completed while I/O was frozen"
    );
    fence.hold(false);
    write
        .recv_timeout(WRITES_LIMIT)
        .expect("the write answered after the verdict")
        .expect("the write succeeded");
    read.recv_timeout(WRITES_LIMIT)
        .expect("the read answered after the verdict")
        .expect("the read succeeded");
    assert!(
        a.log()
            .contains("fence-peer helper returned 7 (peer was stonithed); I/O resumed")
    );
    assert!(
        state_line(a).contains("ds:UpToDate/Outdated C r-----"),
        "{}",
        state_line(a)
    );
    // The frozen write is on alpha's disk.
    let disk = fs::read(&a.data).expect("read disk");
    assert_eq!(
        &disk[(8 * MIB) as usize..(9 * MIB) as usize],
        &random_bytes(8 * MIB, MIB as usize)[..]
    );

    // Beta back and synced; a broken handler this time: frozen until `resume-io`.
    b.adm(&["up", "loop"]).ok();
    wait_synced(&pair);
    fence.set_code(1);
    kill9(b);
    wait_until(&pair, "the broken verdict", SETTLE, || {
        a.log().contains("fence-peer helper broken, returned 1")
    });
    let write = write_in_background(a, 12 * MIB);
    assert!(
        write.recv_timeout(Duration::from_secs(1)).is_err(),
        "a write completed while I/O was frozen"
    );
    assert!(state_line(a).ends_with(" s-----"), "{}", state_line(a));
    a.adm(&["resume-io", "loop"]).ok();
    write
        .recv_timeout(WRITES_LIMIT)
        .expect("the write answered after resume-io")
        .expect("the write succeeded");
    assert!(state_line(a).ends_with(" r-----"), "{}", state_line(a));
    // resume-io with nothing frozen: nothing to do.
    a.adm(&["resume-io", "loop"]).ok();
}
