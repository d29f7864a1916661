//! Replication between two real daemons on loopback: the seed's initial sync (section 7.2.1:
//! `up`, `primary --force`, `--discard-my-data connect`, watch /proc/drbd), writes mirrored
//! with protocols A, B and C, disconnect/connect with a bitmap-based resync, loss of the peer
//! (kill -9) and its return, and the refusals (two primaries, a wrong shared secret, a
//! protocol mismatch). Every wait is bounded; [`Pair`]'s `Drop` downs both nodes and kills
//! what is left, also when a test fails.

mod util;

use std::fs;
use std::time::{Duration, Instant};

use util::have_tool;
use util::pair::*;
use util::repl::*;

/// Checks a `\t[===>....] sync'ed: 12.3% (left/total)K` line; returns (left, total).
fn check_progress_line(line: &str) -> (u64, u64) {
    let fail = format!("not a DRBD 8.4 progress line: {line:?}");
    let rest = line.strip_prefix("\t[").expect(&fail);
    let (bar, rest) = rest.split_once("] ").expect(&fail);
    assert_eq!(bar.len(), 20, "bar width in {line:?}");
    let arrows = bar.matches('>').count();
    assert_eq!(arrows, 1, "one '>' in {line:?}");
    let x = bar.find('>').unwrap();
    assert!(
        bar[..x].chars().all(|c| c == '=') && bar[x + 1..].chars().all(|c| c == '.'),
        "bar shape in {line:?}"
    );
    let rest = rest.strip_prefix("sync'ed:").expect(&fail);
    let (pct, rest) = rest.split_once("% (").expect(&fail);
    // "%3u.%u": right-aligned integer part, one decimal.
    let pct = pct.trim_start();
    let (int, dec) = pct.split_once('.').expect(&fail);
    assert!(
        !int.is_empty() && int.len() <= 3 && int.bytes().all(|b| b.is_ascii_digit()),
        "{line:?}"
    );
    assert!(
        dec.len() == 1 && dec.bytes().all(|b| b.is_ascii_digit()),
        "{line:?}"
    );
    let (counts, unit) = rest.split_once(')').expect(&fail);
    assert_eq!(unit, "K", "unit of {line:?} (K below 4 GiB)");
    let (left, total) = counts.split_once('/').expect(&fail);
    let left: u64 = left.parse().expect(&fail);
    let total: u64 = total.parse().expect(&fail);
    assert!(left <= total, "{line:?}");
    (left, total)
}

/// `\tfinish: H:MM:SS speed: N (N) K/sec` with thousands commas, plus ` want: R` on a
/// SyncTarget.
fn check_finish_line(line: &str, target: bool) {
    let fail = format!("not a DRBD 8.4 finish line (target={target}): {line:?}");
    let rest = line.strip_prefix("\tfinish: ").expect(&fail);
    let (hms, rest) = rest.split_once(" speed: ").expect(&fail);
    let parts: Vec<&str> = hms.split(':').collect();
    assert_eq!(parts.len(), 3, "{line:?}");
    assert!(
        !parts[0].is_empty() && parts[0].bytes().all(|b| b.is_ascii_digit()),
        "{line:?}"
    );
    assert!(
        parts[1..]
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit())),
        "{line:?}"
    );
    let is_num = |s: &str| {
        let groups: Vec<&str> = s.split(',').collect();
        !groups[0].is_empty()
            && groups[0].len() <= 3
            && groups[1..].iter().all(|g| g.len() == 3)
            && s.bytes().all(|b| b.is_ascii_digit() || b == b',')
    };
    let (now, rest) = rest.split_once(" (").expect(&fail);
    assert!(is_num(now), "{line:?}");
    let (avg, rest) = rest.split_once(')').expect(&fail);
    assert!(is_num(avg), "{line:?}");
    let rest = if target {
        let r = rest.strip_prefix(" want: ").expect(&fail);
        let (want, r) = r.split_once(' ').expect(&fail);
        assert!(is_num(want), "{line:?}");
        format!(" {r}")
    } else {
        rest.to_string()
    };
    assert_eq!(rest, " K/sec", "{line:?}");
}

#[test]
fn seed_initial_sync_alpha_up_first() {
    // 20 MiB/s on 64 MiB: about three seconds of SyncSource/SyncTarget to look at.
    let pair = Pair::with_metadata_opts(&opts_rate("20M"));
    up_and_connect(&pair, false);
    seed_initial_sync(&pair);

    // Watch /proc/drbd on both nodes until the sync is over.
    let (a, b) = (pair.alpha(), pair.beta());
    let mut seen_source = 0;
    let mut seen_target = 0;
    let mut last_left = u64::MAX;
    let start = Instant::now();
    loop {
        let la = proc_lines(a);
        if la[0].contains("cs:SyncSource") {
            assert!(
                la[0].contains(" ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----"),
                "{la:?}"
            );
            assert_eq!(la.len(), 4, "state, counters, progress, finish: {la:?}");
            let (left, total) = check_progress_line(&la[2]);
            assert_eq!(total, a.data_bytes() / 1024, "{la:?}");
            assert!(left <= last_left, "left grows: {last_left} then {la:?}");
            last_left = left;
            check_finish_line(&la[3], false);
            seen_source += 1;
        } else if la[0].contains(SYNCED_ALPHA) && la.len() == 2 {
            break;
        } else {
            assert!(
                la[0].contains("cs:Connected ro:Primary/Secondary"),
                "unexpected state during the initial sync: {la:?}"
            );
        }
        let lb = proc_lines(b);
        if lb[0].contains("cs:SyncTarget") {
            assert!(
                lb[0].contains(" ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----"),
                "{lb:?}"
            );
            assert_eq!(lb.len(), 4, "state, counters, progress, finish: {lb:?}");
            check_progress_line(&lb[2]);
            check_finish_line(&lb[3], true);
            seen_target += 1;
        }
        assert!(
            start.elapsed() < SETTLE,
            "initial sync not done after {SETTLE:?}: {la:?}\n{}",
            logs(&pair)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen_source > 0,
        "never saw alpha as SyncSource at 20M on 64 MiB"
    );
    assert!(seen_target > 0, "never saw beta as SyncTarget");
    wait_synced(&pair);
    check_synced(&pair);
    // A full sync: every KiB sent once (requests may not be counted twice).
    assert_eq!(
        counter(a, "ns"),
        a.data_bytes() / 1024,
        "{:?}",
        proc_lines(a)
    );
}

#[test]
fn seed_initial_sync_beta_up_first() {
    let pair = Pair::with_metadata();
    up_and_connect(&pair, true);
    seed_initial_sync(&pair);
    wait_synced(&pair);
    check_synced(&pair);
}

#[test]
fn writes_replicate_protocol_c() {
    let pair = synced_pair(&quick());
    let (a, b) = (pair.alpha(), pair.beta());
    // Scattered writes of different sizes (4 KiB-aligned; unaligned ones have their own
    // test), then one with FUA.
    let writes: Vec<(u64, usize)> = vec![
        (0, 4096),
        (3 * MIB + 4096, 12288),
        (17 * MIB, 2 * MIB as usize),
        (40 * MIB - 4096, 8192),
        (a.data_bytes() - 64 * 1024, 64 * 1024),
    ];
    write_all(
        &pair,
        a,
        writes
            .iter()
            .enumerate()
            .map(|(i, &(off, len))| (off, random_bytes(i as u64 + 1, len)))
            .collect(),
    );
    writes_to(
        nbd_socket(a),
        vec![(5 * MIB, random_bytes(99, 4096))],
        true,
        WRITES_LIMIT,
    )
    .unwrap_or_else(|e| panic!("FUA write: {e}\n{}", logs(&pair)));
    // Protocol C: every answered write is on both disks.
    assert_disks_identical(&pair);
    // Overwrite a region twice; the last write wins on both.
    write_all(
        &pair,
        a,
        vec![
            (17 * MIB, random_bytes(7, MIB as usize)),
            (17 * MIB + 4096, random_bytes(8, 8192)),
        ],
    );
    assert_disks_identical(&pair);
    let beta_disk = fs::read(&b.data).unwrap();
    assert_eq!(
        &beta_disk[(17 * MIB + 4096) as usize..(17 * MIB + 4096 + 8192) as usize],
        &random_bytes(8, 8192)[..]
    );

    // A bulk copy with a real client (several connections when it uses multi-conn).
    if have_tool("nbdcopy") {
        let src = pair._dir.path().join("src.bin");
        fs::write(&src, random_bytes(1234, (16 * MIB) as usize)).unwrap();
        let out = std::process::Command::new("nbdcopy")
            .arg(&src)
            .arg(nbd_uri(a))
            .output()
            .expect("run nbdcopy");
        assert!(
            out.status.success(),
            "nbdcopy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_disks_identical(&pair);
        let beta_disk = fs::read(&b.data).unwrap();
        assert_eq!(
            &beta_disk[..(16 * MIB) as usize],
            &fs::read(&src).unwrap()[..]
        );
    }
    assert!(state_line(a).starts_with(SYNCED_ALPHA), "{}", state_line(a));
    assert_eq!(counter(a, "oos"), 0);
    assert_eq!(counter(b, "oos"), 0);
}

/// The seed's split-brain recovery order (section 7.2.2): `disconnect` on both nodes, then
/// `connect` on both.
#[test]
fn disconnect_both_write_connect_resyncs_only_the_bitmap() {
    disconnect_write_connect(Reconnect::Both);
}

/// `disconnect` on the Primary only: the Secondary loses its peer and waits in
/// WFConnection; `connect` on the Primary reconnects them.
#[test]
fn disconnect_primary_write_connect_resyncs_only_the_bitmap() {
    disconnect_write_connect(Reconnect::PrimaryOnly);
}

/// `disconnect` on both, then `down`/`up` on the Secondary (a fresh session, which connects
/// at `up`) and `connect` on the Primary: the same bitmap-based resync, by a path that
/// avoids the reconnect bug of the two tests above.
#[test]
fn disconnect_write_restart_secondary_resyncs_only_the_bitmap() {
    disconnect_write_connect(Reconnect::RestartSecondary);
}

#[derive(Clone, Copy, PartialEq)]
enum Reconnect {
    Both,
    PrimaryOnly,
    RestartSecondary,
}

fn disconnect_write_connect(how: Reconnect) {
    let both = how != Reconnect::PrimaryOnly;
    let pair = synced_pair(&quick());
    let (a, b) = (pair.alpha(), pair.beta());
    let nodes: &[&Node] = if both { &[a, b] } else { &[a] };
    for n in nodes {
        n.adm(&["disconnect", "loop"]).ok();
    }
    let beta_cs = if both { "StandAlone" } else { "WFConnection" };
    wait_until(&pair, "the disconnect", SETTLE, || {
        cstate(a) == "StandAlone" && cstate(b) == beta_cs
    });
    // (What `role`/`dstate`/proc show of the peer now: `peer_is_unknown_once_disconnected`.)
    // `disconnect` again: already done.
    let again = a.adm(&["disconnect", "loop"]).ok();
    assert!(
        again.stdout.contains("already StandAlone"),
        "{}",
        again.stdout
    );

    // 1 MiB written while disconnected is out of sync on alpha.
    write_all(&pair, a, vec![(24 * MIB, random_bytes(3, MIB as usize))]);
    assert_eq!(counter(a, "oos"), 1024, "{:?}", proc_lines(a));
    let beta_disk = fs::read(&b.data).unwrap();
    assert_ne!(
        &beta_disk[(24 * MIB) as usize..(25 * MIB) as usize],
        &random_bytes(3, MIB as usize)[..],
        "a disconnected peer got the write"
    );

    let (ns0, nr0) = (counter(a, "ns"), counter(b, "nr"));
    if how == Reconnect::RestartSecondary {
        b.adm(&["down", "loop"]).ok();
        b.adm(&["up", "loop"]).ok();
        a.adm(&["connect", "loop"]).ok();
    } else {
        for n in nodes.iter().rev() {
            n.adm(&["connect", "loop"]).ok();
        }
    }
    wait_synced(&pair);
    // A restarted daemon counts from 0 again.
    let since = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
    let (ns, nr) = (since(counter(a, "ns"), ns0), since(counter(b, "nr"), nr0));
    assert!(
        (1024..2048).contains(&ns),
        "alpha sent {ns} KiB for a 1 MiB bitmap resync\n{}",
        logs(&pair)
    );
    assert!(
        (1024..2048).contains(&nr),
        "beta received {nr} KiB for a 1 MiB bitmap resync"
    );
    assert_eq!(
        last_resync_kib(a),
        Some(1024),
        "the resync after reconnect:\n{}",
        logs(&pair)
    );
    check_synced_after_reconnect(&pair);
    // The writes keep replicating after the reconnect.
    write_all(&pair, a, vec![(30 * MIB, random_bytes(4, MIB as usize))]);
    assert_disks_identical(&pair);
}

/// Connected, UpToDate on both, identical disks, equal UUIDs.
fn check_synced_after_reconnect(pair: &Pair) {
    let (a, b) = (pair.alpha(), pair.beta());
    assert_eq!(role(a), "Primary/Secondary");
    assert_eq!(role(b), "Secondary/Primary");
    assert_disks_identical(pair);
    assert_eq!(
        gi_uuids(a),
        gi_uuids(b),
        "get-gi: alpha {} beta {}",
        a.get_gi(),
        b.get_gi()
    );
}

/// After beta died: alpha goes WFConnection with an Unknown peer, keeps serving writes, which
/// are out of sync; `up` on beta brings it back, and a bitmap-based resync makes the disks
/// identical again.
fn alpha_survives_and_beta_comes_back(pair: &Pair) {
    let (a, b) = (pair.alpha(), pair.beta());
    wait_until(pair, "alpha in WFConnection", SETTLE, || {
        cstate(a) == "WFConnection"
    });
    // (The peer's role and disk shown now: `peer_is_unknown_once_disconnected`.)
    let oos0 = counter(a, "oos");
    writes_within(
        a,
        vec![(50 * MIB, random_bytes(5, 2 * MIB as usize))],
        WRITES_LIMIT,
    )
    .unwrap_or_else(|e| panic!("alpha without its peer: {e}\n{}", logs(pair)));
    let oos = counter(a, "oos");
    assert!(
        oos >= oos0 + 2048,
        "oos {oos0} -> {oos} after 2 MiB written without the peer"
    );

    // Beta comes back through `up`; the two reconnect by themselves and resync.
    b.adm(&["up", "loop"]).ok();
    wait_synced(pair);
    check_synced_after_reconnect(pair);
    let kib = last_resync_kib(a).expect("a resync logged");
    // At most what was written without the peer: the writers' 32 MiB span plus the 2 MiB at
    // 50 MiB; never the whole 64 MiB device.
    assert!(
        (2048..=34 * 1024).contains(&kib),
        "resync of {kib} KiB after the peer came back (not a full one):\n{}",
        logs(pair)
    );
    // Writes replicate again.
    writes_within(
        a,
        vec![(60 * MIB, random_bytes(6, MIB as usize))],
        WRITES_LIMIT,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(pair)));
    assert_disks_identical(pair);
}

#[test]
fn peer_killed_while_idle_then_back() {
    let pair = synced_pair(&quick());
    writes_within(
        pair.alpha(),
        vec![(0, random_bytes(1, MIB as usize))],
        WRITES_LIMIT,
    )
    .unwrap();
    kill9(pair.beta());
    alpha_survives_and_beta_comes_back(&pair);
}

#[test]
fn peer_killed_during_writes_then_back() {
    let pair = synced_pair(&quick());
    let a = pair.alpha();
    // A writer on alpha (48 MiB in 1 MiB requests); beta dies under it.
    let writes = (0..48u64)
        .map(|i| ((i % 32) * MIB, random_bytes(100 + i, MIB as usize)))
        .collect();
    let sock = nbd_socket(a);
    let writer = std::thread::spawn(move || writes_to(sock, writes, false, WRITES_LIMIT));
    wait_until(&pair, "some replicated writes", SETTLE, || {
        counter(a, "dw") >= 4 * 1024
    });
    kill9(pair.beta());
    writer
        .join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("writes when the peer died: {e}\n{}", logs(&pair)));
    alpha_survives_and_beta_comes_back(&pair);
}

#[test]
fn refuses_a_second_primary() {
    let pair = synced_pair(&quick());
    let b = pair.beta();
    let gi = b.get_gi();
    let out = b.adm(&["primary", "loop"]).code(11);
    assert!(
        out.stderr
            .contains("State change failed: (-1) Multiple primaries not allowed by config"),
        "stderr: {}",
        out.stderr
    );
    // Forcing does not help either.
    let out = b.adm(&["primary", "--force", "loop"]).code(11);
    assert!(
        out.stderr.contains("(-1) Multiple primaries"),
        "{}",
        out.stderr
    );
    // Nothing changed.
    assert_eq!(role(b), "Secondary/Primary");
    assert_eq!(b.get_gi(), gi);
    assert_eq!(
        state_line(b),
        "cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----"
    );
}

#[test]
fn wrong_shared_secret_never_connects() {
    let opts = PairOpts {
        extra: [
            "  net { cram-hmac-alg sha256; shared-secret \"alpha-secret\"; }\n".into(),
            "  net { cram-hmac-alg sha256; shared-secret \"beta-secret\"; }\n".into(),
        ],
        ..PairOpts::default()
    };
    let pair = Pair::with_metadata_opts(&opts);
    assert_never_connects(&pair, "Authentication of peer");
    let both = format!("{}{}", pair.alpha().log(), pair.beta().log());
    assert!(both.contains("failed"), "{}", logs(&pair));
    assert!(!both.contains("Peer authenticated"), "{}", logs(&pair));
}

#[test]
fn protocol_mismatch_never_connects() {
    let opts = PairOpts {
        protocol: ['A', 'C'],
        ..PairOpts::default()
    };
    let pair = Pair::with_metadata_opts(&opts);
    assert_never_connects(&pair, "incompatible protocol");
}

/// The initial sync, then writes, with protocol `p` (A and B answer before the peer wrote,
/// so the disks converge rather than being equal at once).
fn replicate_with_protocol(p: char, extra: &str) -> Pair {
    let opts = PairOpts {
        protocol: [p, p],
        ..PairOpts::default()
    }
    .both(extra);
    let pair = synced_pair(&opts);
    let (a, b) = (pair.alpha(), pair.beta());
    assert!(
        state_line(a).starts_with(&format!("{SYNCED_ALPHA} {p} r-----")),
        "{}",
        state_line(a)
    );
    assert!(
        state_line(b).starts_with(&format!("{SYNCED_BETA} {p} r-----")),
        "{}",
        state_line(b)
    );
    wait_disks_identical(&pair);
    // 300 KiB writes at scattered 4 KiB-aligned offsets, then overlapping rewrites, in order.
    let mut writes: Vec<(u64, Vec<u8>)> = (0..12u64)
        .map(|i| {
            (
                (i * 5 % 60) * MIB + 4096 * i,
                random_bytes(200 + i, 300 * 1024),
            )
        })
        .collect();
    writes.push((10 * MIB, random_bytes(300, 2 * MIB as usize)));
    writes.push((10 * MIB + 8192, random_bytes(301, 4096)));
    write_all(&pair, a, writes);
    wait_disks_identical(&pair);
    wait_until(&pair, "nothing pending", SETTLE, || {
        let l = proc_lines(a);
        l[1].contains(" pe:0 ua:0 ap:0 ")
    });
    let beta_disk = fs::read(&b.data).unwrap();
    assert_eq!(
        &beta_disk[(10 * MIB + 8192) as usize..(10 * MIB + 12288) as usize],
        &random_bytes(301, 4096)[..]
    );
    assert_eq!(counter(a, "oos"), 0);
    assert_eq!(counter(b, "oos"), 0);
    pair
}

#[test]
fn protocol_a_replicates() {
    replicate_with_protocol('A', "");
}

#[test]
fn protocol_b_replicates_with_authentication() {
    let pair = replicate_with_protocol(
        'B',
        "  net { cram-hmac-alg sha256; shared-secret \"same-on-both\"; }\n",
    );
    assert!(
        pair.alpha().log().contains("Peer authenticated"),
        "{}",
        logs(&pair)
    );
}

/// DRBD forgets the peer's role and disk when the connection goes: `ro:Primary/Unknown
/// ds:UpToDate/DUnknown` after `disconnect` (StandAlone) and after the peer died
/// (WFConnection).
#[test]
fn peer_is_unknown_once_disconnected() {
    let pair = synced_pair(&quick());
    let (a, b) = (pair.alpha(), pair.beta());
    b.adm(&["disconnect", "loop"]).ok();
    wait_until(&pair, "beta StandAlone", SETTLE, || {
        cstate(b) == "StandAlone"
    });
    assert_eq!(
        state_line(b),
        "cs:StandAlone ro:Secondary/Unknown ds:UpToDate/DUnknown C r-----"
    );
    assert_eq!(role(b), "Secondary/Unknown");
    assert_eq!(
        b.adm(&["dstate", "loop"]).ok().stdout.trim(),
        "UpToDate/DUnknown"
    );
    // Alpha lost its peer without being told to: it waits for it again.
    wait_until(&pair, "alpha WFConnection", SETTLE, || {
        cstate(a) == "WFConnection"
    });
    assert_eq!(
        state_line(a),
        "cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown C r-----"
    );
    assert_eq!(role(a), "Primary/Unknown");
}

/// NBD allows any byte range (the export advertises a minimum block size of 1, and the
/// Primary does read-modify-write locally), but the peer speaks 512-byte sectors: an
/// unaligned write must reach the peer as the whole sectors it changes.
#[test]
fn unaligned_writes_replicate() {
    let pair = synced_pair(&quick());
    let a = pair.alpha();
    let writes = vec![
        // Sector-aligned offset, length not a sector multiple.
        (3 * MIB + 512, random_bytes(11, 9000)),
        // 512-aligned, not 4 KiB-aligned.
        (5 * MIB + 1536, random_bytes(12, 1024)),
        // Unaligned offset, 4 KiB long.
        (7 * MIB + 100, random_bytes(13, 4096)),
        // A single byte.
        (9 * MIB + 4095, vec![0xA5]),
    ];
    writes_within(a, writes, WRITES_LIMIT)
        .unwrap_or_else(|e| panic!("unaligned writes: {e}\n{}", logs(&pair)));
    assert_eq!(cstate(a), "Connected", "{}", logs(&pair));
    assert_disks_identical(&pair);
}

/// `down` on the Primary, then on the Secondary (which has just lost its peer): each is
/// prompt, as drbdadm's is.
#[test]
fn down_primary_then_secondary_is_prompt() {
    let pair = synced_pair(&quick());
    for n in [pair.alpha(), pair.beta()] {
        let mut cmd = util::urbdadm();
        cmd.env("URBD_RUN_DIR", &n.run_dir)
            .arg("-c")
            .arg(&n.conf)
            .args(["--node", n.name, "down", "loop"]);
        let started = Instant::now();
        util::run_within(&mut cmd, Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{}: `down` hangs\n{}", n.name, logs(&pair)))
            .ok();
        assert!(
            n.pid().is_none_or(|p| !pid_alive(p)),
            "{}: daemon still alive after down",
            n.name
        );
        eprintln!("{}: down in {:?}", n.name, started.elapsed());
    }
}

/// Split brain (issue 5: detect, log both UUID sets, StandAlone) and the seed's manual
/// recovery (7.2.2): both nodes write while disconnected as Primary; the reconnect is
/// refused on both sides with DRBD's message and both UUID sets; then on both `disconnect`,
/// on the victim (beta) `secondary` and `connect --discard-my-data`, on the survivor
/// `connect`: beta becomes SyncTarget and ends with alpha's data.
#[test]
fn split_brain_is_detected_then_recovered_with_discard_my_data() {
    let pair = synced_pair(&quick());
    let (a, b) = (pair.alpha(), pair.beta());
    for n in [a, b] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    wait_until(&pair, "StandAlone on both", SETTLE, || {
        cstate(a) == "StandAlone" && cstate(b) == "StandAlone"
    });
    // Both sides change data: alpha stays Primary, beta is promoted.
    write_all(&pair, a, vec![(0, random_bytes(21, MIB as usize))]);
    b.adm(&["primary", "loop"]).ok();
    write_all(&pair, b, vec![(8 * MIB, random_bytes(22, MIB as usize))]);
    for n in [a, b] {
        n.adm(&["connect", "loop"]).ok();
    }
    wait_until(&pair, "split brain refused on both", SETTLE, || {
        let la = a.log();
        let lb = b.log();
        la.contains("Split-Brain detected but unresolved, dropping connection!")
            && lb.contains("Split-Brain detected but unresolved, dropping connection!")
            && cstate(a) == "StandAlone"
            && cstate(b) == "StandAlone"
    });
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains("Split-Brain detected"))
        .expect("the split-brain line");
    assert!(
        line.contains("local UUIDs ") && line.contains("peer UUIDs "),
        "both UUID sets are logged: {line}"
    );

    // The seed's recovery: beta is the victim.
    for n in [a, b] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    b.adm(&["secondary", "loop"]).ok();
    b.adm(&["connect", "--discard-my-data", "loop"]).ok();
    a.adm(&["connect", "loop"]).ok();
    wait_synced(&pair);
    assert_disks_identical(&pair);
    // alpha's change survived; beta's was thrown away (its MiB at 8 MiB is alpha's again).
    let data = std::fs::read(&b.data).expect("beta's disk");
    assert!(data[..MIB as usize] == random_bytes(21, MIB as usize)[..]);
    assert!(data[8 * MIB as usize..9 * MIB as usize] != random_bytes(22, MIB as usize)[..]);
    // Only what either side changed moved (the union of both bitmaps: 1 MiB each), not the
    // whole device.
    let kib = last_resync_kib(a).expect("a resync logged");
    assert!(
        (2048..=4096).contains(&kib),
        "resync of {kib} KiB:\n{}",
        logs(&pair)
    );
}

/// NBD allows requests of up to 32 MiB; a DATA packet carries 1 MiB at most (DRBD's
/// DRBD_MAX_BIO_SIZE). A larger write is replicated in parts and answered once.
/// (Before: the session thread panicked on the oversize packet and every request hung.)
#[test]
fn a_write_larger_than_one_data_packet_replicates() {
    let pair = synced_pair(&PairOpts::default());
    let a = pair.alpha();
    let data = random_bytes(41, 5 * MIB as usize + 4096);
    let mut c = urbd::nbd::Client::connect_unix(nbd_socket(a), "loop", true)
        .unwrap_or_else(|e| panic!("connect: {e}"));
    c.write(MIB, &data, true)
        .unwrap_or_else(|e| panic!("5 MiB write: {e}\n{}", logs(&pair)));
    let back = c
        .read(MIB, data.len() as u32)
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert!(back == data, "read back");
    c.disconnect().unwrap_or_else(|e| panic!("disconnect: {e}"));
    wait_disks_identical(&pair);
    assert!(state_line(a).starts_with(SYNCED_ALPHA), "{}", state_line(a));
}
