//! The resync engine with two real daemons on loopback: online verify finds blocks that
//! differ and the next disconnect/connect repairs them; `invalidate` with `csums-alg`
//! moves (almost) no data between identical disks; `pause-sync`/`resume-sync`; and the
//! refusals of verify, invalidate, invalidate-remote, pause-sync and resume-sync, each
//! changing nothing. Every wait is bounded; [`Pair`]'s `Drop` downs both nodes.

mod util;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use util::pair::*;
use util::repl::*;

fn opts(net: &str, rate: &str) -> PairOpts {
    let net = format!("net {{ connect-int 2; {net} }}");
    PairOpts {
        resync_rate: rate.into(),
        extra: [net.clone(), net],
        ..PairOpts::default()
    }
}

/// Flips one byte in each of these 4 KiB blocks of `n`'s data file, behind the daemon's
/// back (what a bad disk or a stray writer does).
fn corrupt(n: &Node, blocks: &[u64]) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&n.data)
        .expect("open the data file");
    for &b in blocks {
        let at = b * 4096 + 123;
        let mut byte = [0u8; 1];
        f.seek(SeekFrom::Start(at)).expect("seek");
        std::io::Read::read_exact(&mut f, &mut byte).expect("read");
        byte[0] ^= 0x5A;
        f.seek(SeekFrom::Start(at)).expect("seek");
        f.write_all(&byte).expect("write");
    }
    f.sync_all().expect("sync");
}

/// `urbdadm CMD loop` on `n`, expected to be refused with `exit` and `text`; the state line
/// and the generation identifiers are the same afterwards.
#[track_caller]
fn refused(n: &Node, cmd: &str, exit: i32, text: &str) {
    let (before, gi) = (state_line(n), n.get_gi());
    let out = n.adm(&[cmd, "loop"]).code(exit);
    assert!(
        out.stderr.contains(text),
        "{cmd} on {}: stderr {:?}",
        n.name,
        out.stderr
    );
    assert_eq!(state_line(n), before, "{cmd} refused but the state changed");
    assert_eq!(n.get_gi(), gi, "{cmd} refused but the UUIDs changed");
}

#[test]
fn verify_finds_corrupted_blocks_and_a_reconnect_repairs_them() {
    let pair = synced_pair(&opts("verify-alg crc32c;", "1000M"));
    let (a, b) = (pair.alpha(), pair.beta());
    write_all(
        &pair,
        a,
        vec![
            (0, random_bytes(1, 8 * MIB as usize)),
            (40 * MIB, random_bytes(2, MIB as usize)),
        ],
    );
    assert_disks_identical(&pair);
    corrupt(b, &[3, 700, 701, 10_000]);

    a.adm(&["verify", "loop"]).ok();
    wait_until(&pair, "the verify to finish on both", SETTLE, || {
        a.log().contains("Online verify found") && b.log().contains("Online verify found")
    });
    wait_until(&pair, "Connected again", SETTLE, || {
        cstate(a) == "Connected" && cstate(b) == "Connected"
    });
    assert!(
        a.log()
            .contains("Online verify found 4 4k block out of sync!"),
        "{}",
        logs(&pair)
    );
    // The target marks the span of each request's differences (700-701 is one span).
    assert!(
        b.log()
            .contains("Online verify found 4 4k block out of sync!"),
        "{}",
        logs(&pair)
    );
    assert_eq!(
        counter(a, "oos"),
        16,
        "4 blocks of 4 KiB out of sync on alpha"
    );
    assert_eq!(counter(b, "oos"), 16);

    // DRBD's advice: disconnect and connect. The Primary takes a new current UUID when it
    // loses the peer, so the reconnect is a bitmap resync of exactly the marked blocks.
    a.adm(&["disconnect", "loop"]).ok();
    wait_until(&pair, "StandAlone", SETTLE, || cstate(a) == "StandAlone");
    a.adm(&["connect", "loop"]).ok();
    wait_synced(&pair);
    assert_eq!(last_resync_kib(a), Some(16), "{}", logs(&pair));
    assert_disks_identical(&pair);
}

#[test]
fn invalidate_with_csums_moves_almost_nothing_between_identical_disks() {
    let pair = synced_pair(&opts("csums-alg crc32c;", "1000M"));
    let (a, b) = (pair.alpha(), pair.beta());
    write_all(&pair, a, vec![(MIB, random_bytes(3, 4 * MIB as usize))]);
    assert_disks_identical(&pair);
    let sent_before = counter(a, "ns");
    corrupt(b, &[20]);

    b.adm(&["invalidate", "loop"]).ok();
    wait_until(&pair, "the resync to start", SETTLE, || {
        b.log().contains("invalidate: full sync as SyncTarget")
    });
    wait_synced(&pair);
    assert_disks_identical(&pair);
    // 64 MiB compared; one 128 KiB request differed (the corrupted block's).
    let sent = counter(a, "ns") - sent_before;
    let disk_kib = DATA_BYTES / 1024;
    assert!(
        sent <= disk_kib / 100,
        "{sent} KiB of data sent for a {disk_kib} KiB disk (more than 1%)\n{}",
        logs(&pair)
    );
    assert!(sent >= 128, "the differing request was sent ({sent} KiB)");
    assert!(
        b.log().contains("% had equal checksums, eliminated: "),
        "{}",
        logs(&pair)
    );
}

#[test]
fn pause_sync_holds_the_resync_and_resume_sync_finishes_it() {
    let pair = synced_pair(&opts("", "1000M"));
    let (a, b) = (pair.alpha(), pair.beta());
    a.adm(&["disconnect", "loop"]).ok();
    wait_until(&pair, "StandAlone", SETTLE, || cstate(a) == "StandAlone");
    write_all(&pair, a, vec![(0, random_bytes(5, 24 * MIB as usize))]);
    // Paused before it starts: the resync after the reconnect waits.
    a.adm(&["pause-sync", "loop"]).ok();
    a.adm(&["connect", "loop"]).ok();
    wait_until(&pair, "PausedSyncS / PausedSyncT", SETTLE, || {
        cstate(a) == "PausedSyncS" && cstate(b) == "PausedSyncT"
    });
    // proc's flags: `u` where pause-sync was run, `p` on its peer.
    assert!(state_line(a).ends_with(" r--u--"), "{}", state_line(a));
    assert!(state_line(b).ends_with(" r-p---"), "{}", state_line(b));
    let held = counter(a, "oos");
    assert!(held > 0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(counter(a, "oos"), held, "nothing moved while paused");
    // A second pause is refused (Sync-pause flag is already set), a resume on the node
    // that did not pause is refused too.
    refused(a, "pause-sync", 10, "(134) Sync-pause flag is already set");
    refused(
        b,
        "resume-sync",
        10,
        "(135) Sync-pause flag is already cleared",
    );
    a.adm(&["resume-sync", "loop"]).ok();
    wait_synced(&pair);
    assert_disks_identical(&pair);
}

#[test]
fn refusals_change_nothing() {
    // No verify-alg configured.
    let pair = synced_pair(&opts("", "1000M"));
    let (a, b) = (pair.alpha(), pair.beta());
    refused(
        a,
        "verify",
        11,
        "(-14) Need a verify algorithm to start online verify",
    );
    // invalidate on the Primary, invalidate-remote towards it.
    refused(a, "invalidate", 11, "this node is Primary");
    refused(b, "invalidate-remote", 11, "the peer is Primary");
    // Not connected.
    b.adm(&["disconnect", "loop"]).ok();
    wait_until(&pair, "StandAlone", SETTLE, || cstate(b) == "StandAlone");
    refused(
        b,
        "invalidate",
        11,
        "(-15) Need a connection to start verify or resync",
    );
    refused(
        a,
        "invalidate-remote",
        11,
        "(-15) Need a connection to start verify or resync",
    );
    refused(
        b,
        "resume-sync",
        10,
        "(135) Sync-pause flag is already cleared",
    );
    b.adm(&["connect", "loop"]).ok();
    wait_synced(&pair);
    assert_disks_identical(&pair);
}

#[test]
fn verify_and_invalidate_while_a_resync_runs_are_refused() {
    let pair = synced_pair(&opts("verify-alg crc32c;", "1000M"));
    let (a, b) = (pair.alpha(), pair.beta());
    // A resync held by pause-sync stays in progress for as long as the test needs.
    a.adm(&["pause-sync", "loop"]).ok();
    b.adm(&["invalidate", "loop"]).ok();
    wait_until(&pair, "PausedSyncS", SETTLE, || cstate(a) == "PausedSyncS");
    refused(
        a,
        "verify",
        11,
        "(-8) Can not start OV/resync since it is already active",
    );
    refused(
        b,
        "invalidate",
        11,
        "(-8) Can not start OV/resync since it is already active",
    );
    a.adm(&["resume-sync", "loop"]).ok();
    wait_synced(&pair);
    assert_disks_identical(&pair);
}

#[test]
fn a_resync_cut_by_a_disconnect_resumes_from_the_bitmap() {
    // 16 MiB/s: the initial sync takes about 4 s, the resync of 32 MiB about 2 s.
    let pair = synced_pair(&opts("", "16M"));
    let (a, b) = (pair.alpha(), pair.beta());
    a.adm(&["disconnect", "loop"]).ok();
    wait_until(&pair, "StandAlone", SETTLE, || cstate(a) == "StandAlone");
    write_all(&pair, a, vec![(0, random_bytes(6, 32 * MIB as usize))]);
    let total_kib = counter(a, "oos");
    assert_eq!(total_kib, 32 * 1024);
    a.adm(&["connect", "loop"]).ok();
    // Cut it once some, not all, has moved.
    wait_until(&pair, "part of the resync done", SETTLE, || {
        let left = counter(b, "oos");
        cstate(b) == "SyncTarget" && left > 0 && left < total_kib * 3 / 4
    });
    b.adm(&["disconnect", "loop"]).ok();
    wait_until(&pair, "StandAlone", SETTLE, || cstate(b) == "StandAlone");
    let left = counter(b, "oos");
    b.adm(&["connect", "loop"]).ok();
    wait_synced(&pair);
    let resumed = last_resync_kib(a).expect("a second resync");
    assert!(
        resumed < total_kib && resumed >= left.saturating_sub(8 * 1024),
        "the second resync moved {resumed} KiB of {total_kib} KiB ({left} KiB were left)\n{}",
        logs(&pair)
    );
    assert_disks_identical(&pair);
}

/// Both data files equal, compared 4 MiB at a time (1 GiB disks).
#[track_caller]
fn assert_big_disks_identical(pair: &Pair) {
    use std::io::Read;
    let mut fa = fs::File::open(&pair.alpha().data).expect("open alpha's disk");
    let mut fb = fs::File::open(&pair.beta().data).expect("open beta's disk");
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    let mut at = 0u64;
    loop {
        let n = fa.read(&mut ba).expect("read alpha");
        fb.read_exact(&mut bb[..n]).expect("read beta");
        if n == 0 {
            break;
        }
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "data disks differ at byte {}\n{}",
                at + i as u64,
                logs(pair)
            );
        }
        at += n as u64;
    }
}

#[test]
fn one_percent_of_a_gibibyte_moves_one_percent_and_csums_invalidate_moves_under_one_percent() {
    const GIB: u64 = 1 << 30;
    let pair = synced_pair(&PairOpts {
        data_bytes: GIB,
        ..opts("csums-alg crc32c;", "1000M")
    });
    let (a, b) = (pair.alpha(), pair.beta());
    // 1% of the disk, spread: 64 KiB every 6.4 MiB (160 writes of 64 KiB = 10 MiB).
    a.adm(&["disconnect", "loop"]).ok();
    wait_until(&pair, "StandAlone", SETTLE, || cstate(a) == "StandAlone");
    let writes: Vec<(u64, Vec<u8>)> = (0..160u64)
        .map(|i| ((i * (GIB / 160)) & !0xFFFF, random_bytes(100 + i, 64 << 10)))
        .collect();
    write_all(&pair, a, writes);
    let dirty_kib = counter(a, "oos");
    assert_eq!(dirty_kib, 160 * 64);
    let nr_before = counter(b, "nr");
    a.adm(&["connect", "loop"]).ok();
    wait_synced(&pair);
    let moved = counter(b, "nr") - nr_before;
    // Requests are runs of up to 32 dirty blocks: exactly the dirty 10 MiB move.
    assert!(
        moved >= dirty_kib && moved <= dirty_kib + dirty_kib / 10,
        "{moved} KiB moved for {dirty_kib} KiB written while disconnected"
    );
    assert_big_disks_identical(&pair);

    // Identical disks, invalidate with csums-alg: under 1% of the disk on the wire.
    let sent_before = counter(a, "ns");
    b.adm(&["invalidate", "loop"]).ok();
    wait_until(&pair, "the resync to start", SETTLE, || {
        b.log().contains("invalidate: full sync as SyncTarget")
    });
    wait_until(
        &pair,
        "the full csums resync",
        Duration::from_secs(300),
        || {
            let (pa, pb) = (proc_lines(a), proc_lines(b));
            pa.len() == 2
                && pb.len() == 2
                && pa[0].contains("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate")
                && pb[0].contains("cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate")
        },
    );
    let sent = counter(a, "ns") - sent_before;
    assert!(
        sent <= GIB / 1024 / 100,
        "{sent} KiB of data on the wire for an invalidate of identical 1 GiB disks"
    );
    assert!(
        b.log().contains("100 % had equal checksums"),
        "{}",
        logs(&pair)
    );
    assert_big_disks_identical(&pair);
}

/// Writes while disconnected change the out-of-sync count with every write; the event loop
/// must not fall behind them (it did: one status file fsync per write) so that `down`
/// still answers at once.
#[test]
fn down_answers_promptly_after_many_writes_while_standalone() {
    let pair = Pair::with_metadata_opts(&opts("", "1000M"));
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["disconnect", "loop"]).ok();
    a.adm(&["primary", "--force", "loop"]).ok();
    let writes: Vec<(u64, Vec<u8>)> = (0..3000u64)
        .map(|i| ((i * 7919 % 16_000) * 4096, random_bytes(i, 4096)))
        .collect();
    write_all(&pair, a, writes);
    let start = std::time::Instant::now();
    a.adm(&["down", "loop"]).ok();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "down took {:?} after 3000 writes",
        start.elapsed()
    );
}
