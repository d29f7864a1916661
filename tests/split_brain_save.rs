//! "Nothing is lost" on split-brain recovery (issue 7, point 5a), with real daemons on
//! loopback: the victim of a resolved split brain (by an after-sb policy, or by the seed's
//! `connect --discard-my-data`) saves its own divergent blocks, with their offsets, before
//! the resync overwrites them; `urbdadm split-brain-saves` lists the save and `urbdadm
//! restore-split-brain-save` writes it back; a damaged save writes nothing; a save over
//! the limit refuses the resync and leaves the victim's data in place. Every wait is
//! bounded; [`Pair`]'s `Drop` downs both nodes and kills what is left.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use util::pair::*;
use util::repl::*;

use urbd::sbsave::format::SaveReader;

const ALPHA_AT: u64 = 0;
const BETA_AT: u64 = 16 * MIB;

fn alpha_data(mib: u64) -> Vec<u8> {
    random_bytes(0xA1FA, (mib * MIB) as usize)
}

/// Beta's divergent writes: `mib` MiB at 16 MiB and 12 KiB at 30 MiB + 8 KiB.
fn beta_writes(mib: u64) -> Vec<(u64, Vec<u8>)> {
    vec![
        (BETA_AT, random_bytes(0xBE7A, (mib * MIB) as usize)),
        (30 * MIB + 8192, random_bytes(0xBE7B, 12288)),
    ]
}

fn pair_with(net: &str) -> Pair {
    let text = format!("net {{ connect-int 2; {net} }}\n");
    synced_pair(&PairOpts {
        extra: [text.clone(), text],
        ..PairOpts::default()
    })
}

/// Disconnect both; alpha (Primary) writes 1 MiB at 0; beta is promoted and writes
/// [`beta_writes`]; both Secondary when `secondaries`, else both stay Primary.
fn diverge(pair: &Pair, beta_mib: u64, secondaries: bool) {
    let (a, b) = (pair.alpha(), pair.beta());
    for n in [a, b] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    wait_until(pair, "StandAlone on both", SETTLE, || {
        cstate(a) == "StandAlone" && cstate(b) == "StandAlone"
    });
    write_all(pair, a, vec![(ALPHA_AT, alpha_data(1))]);
    b.adm(&["primary", "loop"]).ok();
    write_all(pair, b, beta_writes(beta_mib));
    if secondaries {
        for n in [a, b] {
            n.adm(&["secondary", "loop"]).ok();
        }
    }
}

fn in_sync(n: &Node) -> bool {
    let l = proc_lines(n);
    l.len() == 2
        && l[0].contains("cs:Connected ")
        && l[0].contains(" ds:UpToDate/UpToDate ")
        && l[1].ends_with(" oos:0")
}

/// The save files in a node's state directory for resource `loop`.
fn saves(n: &Node) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(n.state_dir().join("loop"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Reads a save with the library's reader: every block it holds, by 4 KiB block number.
fn save_blocks(path: &Path) -> (urbd::sbsave::Header, BTreeMap<u64, Vec<u8>>) {
    let f = std::fs::File::open(path).expect("open the save");
    let mut r = SaveReader::new(std::io::BufReader::new(f)).expect("a valid header");
    let mut out = BTreeMap::new();
    let mut buf = Vec::new();
    while let Some(rec) = r.next_record(&mut buf).expect("a valid record") {
        for (i, chunk) in buf.chunks(4096).enumerate() {
            out.insert(rec.offset / 4096 + i as u64, chunk.to_vec());
        }
    }
    (r.header().clone(), out)
}

/// The 4 KiB blocks `writes` leave (whole-block writes, later ones win).
fn blocks_of(writes: &[(u64, Vec<u8>)]) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (off, data) in writes {
        assert_eq!(off % 4096, 0);
        for (i, chunk) in data.chunks(4096).enumerate() {
            out.insert(off / 4096 + i as u64, chunk.to_vec());
        }
    }
    out
}

/// After a resolution with beta as the victim: exactly one save on beta holding exactly
/// beta's divergent writes (none of alpha's blocks), none on alpha, the log says where,
/// `split-brain-saves` lists it, and restoring it onto a copy of beta's (resynced) disk
/// brings beta's writes back and changes nothing else.
#[track_caller]
fn check_saved_and_restorable(pair: &Pair, beta_mib: u64, reason: &str) -> PathBuf {
    let (a, b) = (pair.alpha(), pair.beta());
    assert!(saves(a).is_empty(), "the survivor saved: {:?}", saves(a));
    let files = saves(b);
    assert_eq!(files.len(), 1, "{files:?}\n{}", logs(pair));
    let file = &files[0];
    let (h, blocks) = save_blocks(file);
    let want = blocks_of(&beta_writes(beta_mib));
    assert_eq!(
        blocks.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the save holds exactly beta's divergent blocks"
    );
    assert!(blocks == want, "the saved data is beta's writes");
    assert_eq!(
        (h.resource.as_str(), h.node.as_str(), h.peer.as_str()),
        ("loop", "beta", "alpha")
    );
    assert!(h.reason.contains(reason), "{}", h.reason);
    assert_eq!(h.device_bytes, DATA_BYTES);

    let n = want.len();
    let kib = n * 4;
    let log = b.log();
    assert!(
        log.contains(&format!(
            "Split-brain save: {n} blocks ({kib} KiB) of this node's discarded changes saved to {}",
            file.display()
        )),
        "{log}"
    );
    // The resync came after the save.
    let saved_at = log.find("Split-brain save: ").expect("the save line");
    let resync_at = log.rfind("Began resync as SyncTarget").expect("the resync");
    assert!(saved_at < resync_at, "the resync began before the save");

    let list = b.adm(&["split-brain-saves", "loop"]).ok().stdout;
    assert!(
        list.contains(&file.display().to_string())
            && list.contains("peer:alpha")
            && list.contains(&format!("blocks:{n}"))
            && list.contains(&format!("{kib} KiB"))
            && !list.contains("INCOMPLETE"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&b.adm(&["split-brain-saves", "--json"]).ok().stdout).expect("json");
    assert_eq!(json[0]["blocks"], n as u64, "{json}");
    assert_eq!(json[0]["complete"], true, "{json}");
    let none = a.adm(&["split-brain-saves", "loop"]).ok().stdout;
    assert!(none.contains("No split-brain saves"), "{none}");

    // Restore onto a copy of beta's disk, which the resync gave alpha's data.
    let copy = pair._dir.path().join("beta-copy.img");
    std::fs::copy(&b.data, &copy).expect("copy beta's disk");
    let before = std::fs::read(&copy).expect("read");
    for blk in want.keys() {
        let at = (*blk * 4096) as usize;
        assert!(
            before[at..at + 4096] != want[blk][..],
            "block {blk}: beta's write survived the resync"
        );
    }
    let r = b
        .adm(&[
            "restore-split-brain-save",
            &file.display().to_string(),
            "--to",
            &copy.display().to_string(),
        ])
        .ok();
    assert!(
        r.stdout
            .contains(&format!("({n} blocks, {kib} KiB) saved by beta")),
        "{}",
        r.stdout
    );
    let mut expect = before;
    for (blk, data) in &want {
        let at = (*blk * 4096) as usize;
        expect[at..at + 4096].copy_from_slice(data);
    }
    assert!(
        std::fs::read(&copy).expect("read") == expect,
        "the restore wrote beta's blocks back and nothing else"
    );
    file.clone()
}

/// A damaged save (a flipped byte, a truncation) is refused with the file and the byte
/// offset named, and writes nothing; so is a restore onto the backing disk of a resource
/// that is up (without --force).
fn check_refusals(pair: &Pair, file: &Path) {
    let b = pair.beta();
    let dir = pair._dir.path();
    let good = std::fs::read(file).expect("read the save");
    let target = dir.join("target.img");
    let original = random_bytes(7, 40 * MIB as usize);
    for (what, bad) in [
        ("flipped", {
            let mut v = good.clone();
            let i = v.len() / 2;
            v[i] ^= 0x10;
            v
        }),
        ("truncated", good[..good.len() - 4097].to_vec()),
    ] {
        let damaged = dir.join(format!("{what}.blocks"));
        std::fs::write(&damaged, &bad).expect("write the damaged copy");
        std::fs::write(&target, &original).expect("target");
        let r = b
            .adm(&[
                "restore-split-brain-save",
                &damaged.display().to_string(),
                "--to",
                &target.display().to_string(),
            ])
            .code(20);
        assert!(
            r.stderr.contains(&damaged.display().to_string())
                && r.stderr.contains("at byte offset")
                && r.stderr.contains("nothing was written"),
            "{what}: {}",
            r.stderr
        );
        assert!(
            std::fs::read(&target).expect("read") == original,
            "{what}: the target changed"
        );
    }
    // The listing flags a damaged save in the state directory.
    let in_state = b
        .state_dir()
        .join("loop/split-brain-19700101T000000Z-v0.blocks");
    std::fs::write(&in_state, &good[..good.len() - 10]).expect("write");
    let list = b.adm(&["split-brain-saves", "loop"]).ok().stdout;
    assert!(list.contains("INCOMPLETE"), "{list}");
    std::fs::remove_file(&in_state).expect("remove");

    // Beta is up: its backing disk is refused.
    let disk_before = std::fs::read(&b.data).expect("read");
    let r = b
        .adm(&[
            "restore-split-brain-save",
            &file.display().to_string(),
            "--to",
            &b.data.display().to_string(),
        ])
        .code(20);
    assert!(
        r.stderr.contains("the backing disk of loop/0") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    assert!(std::fs::read(&b.data).expect("read") == disk_before);
}

/// after-sb-0pri discard-younger-primary: beta (promoted after the split) is the victim.
#[test]
fn policy_resolution_saves_the_victims_blocks() {
    let pair = pair_with("after-sb-0pri discard-younger-primary;");
    let (a, b) = (pair.alpha(), pair.beta());
    diverge(&pair, 2, true);
    for n in [a, b] {
        n.adm(&["connect", "loop"]).ok();
    }
    wait_until(&pair, "Connected and in sync on both", SETTLE, || {
        in_sync(a) && in_sync(b)
    });
    assert_disks_identical(&pair);
    let file = check_saved_and_restorable(&pair, 2, "after-sb-0pri");
    check_refusals(&pair, &file);
}

/// The seed's manual recovery (7.2.2): split brain with both Primary, then on the victim
/// `secondary` + `connect --discard-my-data`, on the survivor `connect`.
#[test]
fn discard_my_data_saves_the_victims_blocks() {
    let pair = pair_with("");
    let (a, b) = (pair.alpha(), pair.beta());
    diverge(&pair, 1, false);
    for n in [a, b] {
        n.adm(&["connect", "loop"]).ok();
    }
    wait_until(&pair, "split brain, StandAlone on both", SETTLE, || {
        b.log().contains("Split-Brain detected but unresolved")
            && cstate(a) == "StandAlone"
            && cstate(b) == "StandAlone"
    });
    assert!(
        saves(b).is_empty(),
        "an unresolved split brain saves nothing"
    );
    for n in [a, b] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    b.adm(&["secondary", "loop"]).ok();
    b.adm(&["connect", "--discard-my-data", "loop"]).ok();
    a.adm(&["connect", "loop"]).ok();
    wait_until(&pair, "resynced after the recovery", SETTLE, || {
        in_sync(a) && in_sync(b)
    });
    assert_disks_identical(&pair);
    check_saved_and_restorable(&pair, 1, "--discard-my-data");
}

/// A victim whose changes exceed the save limit refuses the resync: StandAlone, its own
/// writes still on its disk, no save file, and the log says why and what to do.
#[test]
fn a_save_over_the_limit_refuses_the_resync() {
    let pair = pair_with("after-sb-0pri discard-younger-primary;");
    let (a, b) = (pair.alpha(), pair.beta());
    // Beta's daemon again, with a limit of 1 MiB.
    b.adm(&["down", "loop"]).ok();
    b.adm_env(&[("URBD_SPLIT_BRAIN_SAVE_MAX", "1M")], &["up", "loop"])
        .ok();
    wait_until(&pair, "connected again", SETTLE, || {
        in_sync(a) && in_sync(b)
    });
    diverge(&pair, 2, true);
    for n in [a, b] {
        n.adm(&["connect", "loop"]).ok();
    }
    wait_until(&pair, "the save refused, beta StandAlone", SETTLE, || {
        b.log().contains("Split-brain save FAILED") && cstate(b) == "StandAlone"
    });
    let log = b.log();
    assert!(
        log.contains("exceed the split-brain save limit (1024 KiB, URBD_SPLIT_BRAIN_SAVE_MAX)")
            && log.contains("nothing was overwritten"),
        "{log}"
    );
    let after = &log[log.rfind("Split-Brain detected").expect("the resolution")..];
    assert!(!after.contains("Began resync"), "{log}");
    assert!(saves(b).is_empty(), "{:?}", saves(b));
    // Some time for anything wrongly started to land, then beta's writes are intact.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let disk = std::fs::read(&b.data).expect("beta's disk");
    for (off, data) in beta_writes(2) {
        assert!(
            disk[off as usize..off as usize + data.len()] == data[..],
            "beta's write at {off} was overwritten"
        );
    }
}
