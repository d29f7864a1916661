//! Split brain with real daemons on loopback (issue 7): detection at connect time (DRBD's
//! `drbd_uuid_compare`: both sides changed data since their last common current UUID), what
//! proc, `status` and `--json` show, the `split-brain` handler and its environment, every
//! after-sb policy of the net section, rr-conflict, and the seed's manual recovery (section
//! 7.2.2) after a partition made with a proxy. Every wait is bounded; [`Pair`]'s `Drop` downs
//! both nodes and kills what is left.
//!
//! The scenario of most tests: a synced pair (alpha Primary), `disconnect` on both, alpha
//! writes `a` MiB at 0, beta is promoted and writes `b` MiB at 16 MiB, then each node takes
//! the role the test wants and both `connect`.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use util::pair::*;
use util::proxy::Proxy;
use util::repl::*;

const ALPHA_AT: u64 = 0;
const BETA_AT: u64 = 16 * MIB;
const SB_UNRESOLVED: &str = "Split-Brain detected but unresolved, dropping connection!";
const PRIMARY_TARGET: &str = "I shall become SyncTarget, but I am primary!";

fn alpha_data(mib: u64) -> Vec<u8> {
    random_bytes(0xA1FA, (mib * MIB) as usize)
}

fn beta_data(mib: u64) -> Vec<u8> {
    random_bytes(0xBE7A, (mib * MIB) as usize)
}

/// A synced pair whose `net` section also has `net` and with `more` (e.g. a handlers
/// section) in the resource.
fn pair_with(net: &str, more: &str) -> Pair {
    let text = format!("net {{ connect-int 2; {net} }}\n{more}\n");
    synced_pair(&PairOpts {
        extra: [text.clone(), text],
        ..PairOpts::default()
    })
}

/// Roles at the reconnect.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Primaries {
    None,
    /// Alpha Primary, beta Secondary.
    Alpha,
    Both,
}

/// Disconnect, diverge (alpha writes `a` MiB as Primary, beta is promoted and writes `b`
/// MiB), set the roles, connect both.
fn diverge_and_connect(pair: &Pair, a: u64, b: u64, roles: Primaries) {
    let (na, nb) = (pair.alpha(), pair.beta());
    for n in [na, nb] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    wait_until(pair, "StandAlone on both", SETTLE, || {
        cstate(na) == "StandAlone" && cstate(nb) == "StandAlone"
    });
    if a > 0 {
        write_all(pair, na, vec![(ALPHA_AT, alpha_data(a))]);
    }
    nb.adm(&["primary", "loop"]).ok();
    if b > 0 {
        write_all(pair, nb, vec![(BETA_AT, beta_data(b))]);
    }
    if roles == Primaries::None {
        na.adm(&["secondary", "loop"]).ok();
    }
    if matches!(roles, Primaries::None | Primaries::Alpha) {
        nb.adm(&["secondary", "loop"]).ok();
    }
    for n in [na, nb] {
        n.adm(&["connect", "loop"]).ok();
    }
}

fn in_sync(n: &Node) -> bool {
    let l = proc_lines(n);
    l.len() == 2
        && l[0].contains("cs:Connected ")
        && l[0].contains(" ds:UpToDate/UpToDate ")
        && l[1].ends_with(" oos:0")
}

/// A policy resolved the split brain: the pair ends Connected and in sync with
/// `survivor`'s data on both disks, the victim's divergent writes gone, and only the blocks
/// either side changed resynced.
#[track_caller]
fn check_resolved(pair: &Pair, survivor: usize, a: u64, b: u64, primaries: u8) {
    wait_until(pair, "Connected and in sync on both", SETTLE, || {
        in_sync(pair.alpha()) && in_sync(pair.beta())
    });
    assert_disks_identical(pair);
    let disk = std::fs::read(&pair.alpha().data).expect("alpha's disk");
    let at = |off: u64, mib: u64| &disk[off as usize..(off + mib * MIB) as usize];
    if survivor == 0 {
        assert!(
            a == 0 || at(ALPHA_AT, a) == &alpha_data(a)[..],
            "alpha's writes kept"
        );
        assert!(
            b == 0 || at(BETA_AT, b) != &beta_data(b)[..],
            "beta's writes gone"
        );
    } else {
        assert!(
            b == 0 || at(BETA_AT, b) == &beta_data(b)[..],
            "beta's writes kept"
        );
        assert!(
            a == 0 || at(ALPHA_AT, a) != &alpha_data(a)[..],
            "alpha's writes gone"
        );
    }
    let s = &pair.nodes[survivor];
    let want = format!(
        "Split-Brain detected, {primaries} primaries, automatically solved. Sync from this node"
    );
    assert!(
        s.log().contains(&want),
        "{}: no {want:?}\n{}",
        s.name,
        logs(pair)
    );
    let kib = last_resync_kib(s).expect("a resync logged");
    let changed = (a + b) * 1024;
    assert!(
        (changed..=changed + 4096).contains(&kib),
        "resync of {kib} KiB for {changed} KiB changed\n{}",
        logs(pair)
    );
}

/// The connection was refused on `victim` with `message` (and on the other node too when
/// `both`): StandAlone, and the refusal changed nothing on its disk.
#[track_caller]
fn check_refused(pair: &Pair, victim: usize, message: &str, both: bool, a: u64, b: u64) {
    let nodes: Vec<&Node> = if both {
        pair.nodes.iter().collect()
    } else {
        vec![&pair.nodes[victim]]
    };
    wait_until(pair, &format!("{message:?} and StandAlone"), SETTLE, || {
        nodes
            .iter()
            .all(|n| n.log().contains(message) && cstate(n) == "StandAlone")
    });
    for (i, n) in pair.nodes.iter().enumerate() {
        if !both && i != victim {
            continue;
        }
        let disk = std::fs::read(&n.data).expect("disk");
        let (off, mib, data) = if i == 0 {
            (ALPHA_AT, a, alpha_data(a))
        } else {
            (BETA_AT, b, beta_data(b))
        };
        assert!(
            mib == 0 || disk[off as usize..(off + mib * MIB) as usize] == data[..],
            "{}: its own writes must still be there",
            n.name
        );
    }
}

// ----- detection, status, handler -----------------------------------------------------

/// Detection (DRBD's rule 100 of `drbd_uuid_compare` with the default policies): both
/// sides refuse with DRBD's message, both UUID sets and the changed amounts in the log;
/// proc, `status` and `status --json` say so; the `split-brain` handler runs once per node
/// with DRBD's environment; `connect --discard-my-data` is refused on the Primary and
/// changes nothing; a plain `connect` on both goes StandAlone again.
#[test]
fn split_brain_is_detected_shown_and_handled() {
    let out = tempfile::tempdir().expect("tempdir");
    let handlers = format!(
        "handlers {{ split-brain \"env | grep ^DRBD_ | sort > {}/sb-$DRBD_MINOR.env\"; }}",
        out.path().display()
    );
    let pair = pair_with("", &handlers);
    let (a, b) = (pair.alpha(), pair.beta());
    diverge_and_connect(&pair, 1, 2, Primaries::Both);
    check_refused(&pair, 0, SB_UNRESOLVED, true, 1, 2);

    // The log: both UUID sets and what each side changed.
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains("Split-Brain detected"))
        .expect("the split-brain line");
    assert!(
        line.contains("local UUIDs ")
            && line.contains("peer UUIDs ")
            && line.contains("this node 1024 KiB, beta 2048 KiB"),
        "{line}"
    );

    // proc: the two DRBD lines unchanged, then one line more.
    let lines = proc_lines(a);
    assert!(
        lines[0].contains("cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown"),
        "{lines:?}"
    );
    assert_eq!(
        lines.get(2).map(String::as_str),
        Some("\tsplit-brain: this node changed 1024 KiB, beta changed 2048 KiB; see `status`"),
        "{lines:?}"
    );

    // status: what happened and the exact commands for either victim.
    let st = a.adm(&["status", "loop"]).ok().stdout;
    for want in [
        "split-brain: both nodes changed data while disconnected",
        "alpha (this node) changed 1024 KiB, beta changed 2048 KiB",
        "To keep alpha's data (discard beta's changes):",
        "on beta: urbdadm disconnect loop; urbdadm secondary loop; urbdadm connect --discard-my-data loop",
        "on alpha: urbdadm disconnect loop; urbdadm connect loop",
        "To keep beta's data (discard alpha's changes):",
        "on alpha: urbdadm disconnect loop; urbdadm secondary loop; urbdadm connect --discard-my-data loop",
        "on beta: urbdadm disconnect loop; urbdadm connect loop",
    ] {
        assert!(st.contains(want), "status lacks {want:?}:\n{st}");
    }
    let st_b = b.adm(&["status", "loop"]).ok().stdout;
    assert!(
        st_b.contains("beta (this node) changed 2048 KiB, alpha changed 1024 KiB"),
        "{st_b}"
    );

    // --json: a split_brain field.
    let json = a.adm(&["status", "--json", "loop"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&json).expect("status --json");
    let sb = find_key(&v, "split_brain").expect("a split_brain field");
    assert_eq!(sb["peer"], "beta", "{sb}");
    assert_eq!(sb["local_changed_kib"], 1024, "{sb}");
    assert_eq!(sb["peer_changed_kib"], 2048, "{sb}");
    let json = a.adm(&["proc", "--json"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&json).expect("proc --json");
    let sb = find_key(&v, "split_brain").expect("a split_brain field in proc --json");
    assert_eq!(sb["local_changed_kib"], 1024, "{sb}");

    // The handler ran on both nodes with DRBD's environment.
    for (minor, peer) in [(0, "beta"), (1, "alpha")] {
        let path = out.path().join(format!("sb-{minor}.env"));
        wait_until(&pair, "the split-brain handler's output", SETTLE, || {
            std::fs::read_to_string(&path).is_ok_and(|s| s.contains("DRBD_RESOURCE"))
        });
        let env = std::fs::read_to_string(&path).expect("handler output");
        for want in [
            "DRBD_RESOURCE=loop".to_string(),
            format!("DRBD_MINOR={minor}"),
            format!("DRBD_PEER={peer}"),
            format!("DRBD_PEERS={peer}"),
            "DRBD_PEER_ADDRESS=127.0.0.1".to_string(),
            "DRBD_PEER_AF=ipv4".to_string(),
            "DRBD_VOLUME=0".to_string(),
            "DRBD_CONF=".to_string(),
            "DRBD_LL_DISK=".to_string(),
        ] {
            assert!(env.contains(&want), "minor {minor}: no {want} in\n{env}");
        }
    }

    // --discard-my-data on a Primary: refused, nothing changes.
    let before = (proc_lines(a)[0].clone(), a.get_gi());
    let r = a.adm(&["connect", "--discard-my-data", "loop"]).code(10);
    assert!(
        r.stderr
            .contains("--discard-my-data not allowed when primary")
            && r.stderr.contains("secondary"),
        "{}",
        r.stderr
    );
    assert_eq!((proc_lines(a)[0].clone(), a.get_gi()), before);
    assert!(
        a.adm(&["status", "loop"])
            .ok()
            .stdout
            .contains("split-brain")
    );

    // Recovery commands explain themselves: disconnect on StandAlone is a note.
    let r = a.adm(&["disconnect", "loop"]).ok();
    assert!(r.stdout.contains("already StandAlone"), "{}", r.stdout);

    // A plain connect on both: split brain again.
    let refusals = |n: &Node| n.log().matches(SB_UNRESOLVED).count();
    let (ra, rb) = (refusals(a), refusals(b));
    for n in [a, b] {
        n.adm(&["connect", "loop"]).ok();
    }
    wait_until(&pair, "a second refusal on both", SETTLE, || {
        refusals(a) > ra
            && refusals(b) > rb
            && cstate(a) == "StandAlone"
            && cstate(b) == "StandAlone"
    });
}

fn find_key<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .filter(|x| !x.is_null())
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

// ----- after-sb-0pri ---------------------------------------------------------------------

#[test]
fn after_sb_0pri_disconnect() {
    let pair = pair_with("after-sb-0pri disconnect;", "");
    diverge_and_connect(&pair, 1, 1, Primaries::None);
    check_refused(&pair, 0, SB_UNRESOLVED, true, 1, 1);
}

/// Beta was promoted after the link went (its bitmap UUID has the role bit clear): it is
/// the younger Primary and is discarded.
#[test]
fn after_sb_0pri_discard_younger_primary() {
    let pair = pair_with("after-sb-0pri discard-younger-primary;", "");
    diverge_and_connect(&pair, 1, 2, Primaries::None);
    check_resolved(&pair, 0, 1, 2, 0);
}

#[test]
fn after_sb_0pri_discard_older_primary() {
    let pair = pair_with("after-sb-0pri discard-older-primary;", "");
    diverge_and_connect(&pair, 2, 1, Primaries::None);
    check_resolved(&pair, 1, 2, 1, 0);
}

/// Alpha wrote nothing (only its UUIDs moved when it lost the peer as Primary).
#[test]
fn after_sb_0pri_discard_zero_changes() {
    let pair = pair_with("after-sb-0pri discard-zero-changes;", "");
    diverge_and_connect(&pair, 0, 1, Primaries::None);
    check_resolved(&pair, 1, 0, 1, 0);
}

/// Both changed something: discard-zero-changes cannot decide.
#[test]
fn after_sb_0pri_discard_zero_changes_with_changes_on_both_disconnects() {
    let pair = pair_with("after-sb-0pri discard-zero-changes;", "");
    diverge_and_connect(&pair, 1, 1, Primaries::None);
    check_refused(&pair, 0, SB_UNRESOLVED, true, 1, 1);
}

#[test]
fn after_sb_0pri_discard_least_changes() {
    let pair = pair_with("after-sb-0pri discard-least-changes;", "");
    diverge_and_connect(&pair, 2, 1, Primaries::None);
    check_resolved(&pair, 0, 2, 1, 0);
}

/// drbdadm's discard-node-NAME: beta's changes go, though beta changed more.
#[test]
fn after_sb_0pri_discard_node_name() {
    let pair = pair_with("after-sb-0pri discard-node-beta;", "");
    diverge_and_connect(&pair, 1, 2, Primaries::None);
    check_resolved(&pair, 0, 1, 2, 0);
}

// ----- after-sb-1pri ---------------------------------------------------------------------

#[test]
fn after_sb_1pri_disconnect() {
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-1pri disconnect;",
        "",
    );
    diverge_and_connect(&pair, 2, 1, Primaries::Alpha);
    check_refused(&pair, 0, SB_UNRESOLVED, true, 2, 1);
}

/// The 0pri verdict (beta changed less) agrees with the roles (beta is Secondary).
#[test]
fn after_sb_1pri_consensus_agrees() {
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-1pri consensus;",
        "",
    );
    diverge_and_connect(&pair, 2, 1, Primaries::Alpha);
    check_resolved(&pair, 0, 2, 1, 1);
}

/// The 0pri verdict would discard the Primary: no consensus.
#[test]
fn after_sb_1pri_consensus_disagrees() {
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-1pri consensus;",
        "",
    );
    diverge_and_connect(&pair, 1, 2, Primaries::Alpha);
    check_refused(&pair, 0, SB_UNRESOLVED, true, 1, 2);
}

#[test]
fn after_sb_1pri_violently_as0p() {
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-1pri violently-as0p;",
        "",
    );
    diverge_and_connect(&pair, 2, 1, Primaries::Alpha);
    check_resolved(&pair, 0, 2, 1, 1);
}

/// The Secondary is discarded, though it changed more.
#[test]
fn after_sb_1pri_discard_secondary() {
    let pair = pair_with("after-sb-1pri discard-secondary;", "");
    diverge_and_connect(&pair, 1, 2, Primaries::Alpha);
    check_resolved(&pair, 0, 1, 2, 1);
}

/// The 0pri verdict discards the Secondary: resolved without any handler.
#[test]
fn after_sb_1pri_call_pri_lost_after_sb_secondary_victim() {
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-1pri call-pri-lost-after-sb;",
        "",
    );
    diverge_and_connect(&pair, 2, 1, Primaries::Alpha);
    check_resolved(&pair, 0, 2, 1, 1);
}

/// The 0pri verdict discards the Primary (alpha changed less): DRBD demotes it if it can
/// and calls pri-lost-after-sb if not. urbd never demotes a serving Primary inside the
/// handshake: the handler runs, the split brain stays unresolved, nothing is discarded.
#[test]
fn after_sb_1pri_call_pri_lost_after_sb_primary_victim() {
    let out = tempfile::tempdir().expect("tempdir");
    let handlers = format!(
        "handlers {{ pri-lost-after-sb \"echo $DRBD_RESOURCE > {}/pri-lost-$DRBD_MINOR\"; }}",
        out.path().display()
    );
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-1pri call-pri-lost-after-sb;",
        &handlers,
    );
    diverge_and_connect(&pair, 1, 2, Primaries::Alpha);
    check_refused(&pair, 0, SB_UNRESOLVED, false, 1, 2);
    let path = out.path().join("pri-lost-0");
    wait_until(
        &pair,
        "the pri-lost-after-sb handler on alpha",
        SETTLE,
        || std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == "loop"),
    );
    assert!(!out.path().join("pri-lost-1").exists());
    assert_eq!(role(pair.alpha()), "Primary/Unknown");
}

// ----- after-sb-2pri ---------------------------------------------------------------------

#[test]
fn after_sb_2pri_disconnect() {
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-2pri disconnect;",
        "",
    );
    diverge_and_connect(&pair, 2, 1, Primaries::Both);
    check_refused(&pair, 0, SB_UNRESOLVED, true, 2, 1);
}

/// violently-as0p picks beta (fewer changes), a Primary: urbd never makes a serving
/// Primary SyncTarget, so beta refuses as rr-conflict disconnect does.
#[test]
fn after_sb_2pri_violently_as0p_refuses_a_primary_target() {
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-2pri violently-as0p;",
        "",
    );
    diverge_and_connect(&pair, 2, 1, Primaries::Both);
    check_refused(&pair, 1, PRIMARY_TARGET, false, 2, 1);
    assert_eq!(role(pair.beta()), "Primary/Unknown");
}

#[test]
fn after_sb_2pri_call_pri_lost_after_sb() {
    let out = tempfile::tempdir().expect("tempdir");
    let handlers = format!(
        "handlers {{ pri-lost-after-sb \"touch {}/pri-lost-$DRBD_MINOR\"; }}",
        out.path().display()
    );
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-2pri call-pri-lost-after-sb;",
        &handlers,
    );
    diverge_and_connect(&pair, 2, 1, Primaries::Both);
    check_refused(&pair, 1, SB_UNRESOLVED, false, 2, 1);
    let path = out.path().join("pri-lost-1");
    wait_until(
        &pair,
        "the pri-lost-after-sb handler on beta",
        SETTLE,
        || path.exists(),
    );
    assert!(!out.path().join("pri-lost-0").exists());
}

// ----- rr-conflict -----------------------------------------------------------------------

/// after-sb-1pri violently-as0p picks the Primary (alpha changed less) as SyncTarget:
/// rr-conflict decides. `disconnect`: refused with DRBD's message.
#[test]
fn rr_conflict_disconnect() {
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-1pri violently-as0p; rr-conflict disconnect;",
        "",
    );
    diverge_and_connect(&pair, 1, 2, Primaries::Alpha);
    check_refused(&pair, 0, PRIMARY_TARGET, false, 1, 2);
}

/// `call-pri-lost`: the pri-lost handler runs and the connection is refused.
#[test]
fn rr_conflict_call_pri_lost() {
    let out = tempfile::tempdir().expect("tempdir");
    let handlers = format!(
        "handlers {{ pri-lost \"touch {}/pri-lost-$DRBD_MINOR\"; }}",
        out.path().display()
    );
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-1pri violently-as0p; rr-conflict call-pri-lost;",
        &handlers,
    );
    diverge_and_connect(&pair, 1, 2, Primaries::Alpha);
    check_refused(&pair, 0, PRIMARY_TARGET, false, 1, 2);
    let path = out.path().join("pri-lost-0");
    wait_until(&pair, "the pri-lost handler on alpha", SETTLE, || {
        path.exists()
    });
}

/// `violently`: DRBD makes the Primary SyncTarget under its users; urbd refuses instead
/// (a serving Primary never resyncs over its own data), and nothing changes.
#[test]
fn rr_conflict_violently_is_refused_while_primary() {
    let pair = pair_with(
        "after-sb-0pri discard-least-changes; after-sb-1pri violently-as0p; rr-conflict violently;",
        "",
    );
    diverge_and_connect(&pair, 1, 2, Primaries::Alpha);
    check_refused(&pair, 0, PRIMARY_TARGET, false, 1, 2);
    assert_eq!(role(pair.alpha()), "Primary/Unknown");
}

// ----- partitions and the seed's recovery -----------------------------------------------

/// One node's view of the pair: it listens on its own address and reaches the peer
/// through a proxy (see tests/replication_fs.rs, `ProxiedPair`).
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
        "resource loop {{\n  protocol C;\n  disk {{ resync-rate 1000M; }}\n  net {{ connect-int 1; }}\n{}{}}}\n",
        on(pair.alpha(), alpha),
        on(pair.beta(), beta)
    )
}

struct Proxied {
    pair: Pair,
    to_alpha: Proxy,
    to_beta: Proxy,
}

impl Proxied {
    fn new() -> Proxied {
        let mut pair = Pair::with_metadata();
        let (pa, pb) = util::free_port_pair();
        let alpha: SocketAddr = ([127, 0, 0, 1], pa).into();
        let beta: SocketAddr = ([127, 0, 0, 1], pb).into();
        let to_alpha = Proxy::start(alpha);
        let to_beta = Proxy::start(beta);
        let dir = pair.alpha().conf.parent().expect("dir").to_path_buf();
        let texts = [
            conf_text(&pair, alpha, to_beta.addr()),
            conf_text(&pair, to_alpha.addr(), beta),
        ];
        for (n, text) in pair.nodes.iter_mut().zip(texts) {
            let path = dir.join(format!("{}.conf", n.name));
            std::fs::write(&path, text).expect("write a node's config");
            n.conf = path;
        }
        Proxied {
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

/// Seeded pseudo-random numbers (splitmix64) for the partition runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes of whole 4 KiB blocks at random places of `[base, base + 8 MiB)`.
fn random_writes(rng: &mut Rng, base: u64) -> Vec<(u64, Vec<u8>)> {
    (0..1 + rng.below(8))
        .map(|_| {
            let off = base + rng.below(2048 - 64) * 4096;
            let len = (1 + rng.below(64)) as usize * 4096;
            (off, random_bytes(rng.next(), len))
        })
        .collect()
}

/// A partition (proxies cut) with both nodes Primary and written is a split brain on
/// reconnect, in every seeded run (URBD_SB_RUNS, default 3); then the seed's recovery
/// (7.2.2) with a victim the seed picks: the survivor's data ends on both disks byte for
/// byte, the victim's divergent writes are gone, only the union of both bitmaps moved,
/// and `--discard-my-data` was one-shot (the next split brain is refused again).
#[test]
fn partition_with_two_primaries_is_split_brain_then_seed_recovery() {
    let runs: u64 = std::env::var("URBD_SB_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for run in 0..runs {
        let seed = 0x5B_0000 + run;
        eprintln!("SEED={seed:#x}");
        partition_run(seed);
    }
}

fn partition_run(seed: u64) {
    let mut rng = Rng(seed);
    let pp = Proxied::new();
    let pair = &pp.pair;
    let (a, b) = (pair.alpha(), pair.beta());
    up_and_connect(pair, rng.below(2) == 1);
    seed_initial_sync(pair);
    wait_synced(pair);

    pp.cut();
    for n in [a, b] {
        wait_until(pair, "WFConnection after the cut", SETTLE, || {
            cstate(n) == "WFConnection"
        });
    }
    // connect on a connecting resource: a one-line note, nothing changes.
    let r = a.adm(&["connect", "loop"]).ok();
    assert!(
        r.stdout.contains("already connecting") && r.stdout.contains("nothing to do"),
        "{}",
        r.stdout
    );
    b.adm(&["primary", "loop"]).ok();
    let wa = random_writes(&mut rng, 0);
    let wb = random_writes(&mut rng, 8 * MIB);
    write_all(pair, a, wa.clone());
    write_all(pair, b, wb.clone());
    // Both stay cut through at least one reconnect attempt (connect-int 1).
    std::thread::sleep(Duration::from_millis(1200));
    pp.restore();
    wait_until(
        pair,
        "split brain on both after the partition",
        SETTLE,
        || {
            a.log().contains(SB_UNRESOLVED)
                && b.log().contains(SB_UNRESOLVED)
                && cstate(a) == "StandAlone"
                && cstate(b) == "StandAlone"
        },
    );
    // What status tells a new admin.
    let st = a.adm(&["status", "loop"]).ok().stdout;
    assert!(
        st.contains("urbdadm connect --discard-my-data loop") && st.contains("To keep beta's data"),
        "seed {seed:#x}: {st}"
    );

    // The seed's recovery with a victim chosen by the seed.
    let (survivor, victim, ws, wv) = if rng.below(2) == 0 {
        (a, b, &wa, &wb)
    } else {
        (b, a, &wb, &wa)
    };
    for n in [a, b] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    victim.adm(&["secondary", "loop"]).ok();
    victim.adm(&["connect", "--discard-my-data", "loop"]).ok();
    survivor.adm(&["connect", "loop"]).ok();
    wait_until(pair, "resynced after the recovery", SETTLE, || {
        in_sync(a) && in_sync(b)
    });
    assert_eq!(
        state_line(survivor),
        "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----",
        "seed {seed:#x}"
    );
    assert_disks_identical(pair);
    let disk = std::fs::read(&victim.data).expect("victim's disk");
    // Later writes of a side may overwrite its earlier ones: compare with a replay.
    let replay = |writes: &[(u64, Vec<u8>)], len: usize| {
        let mut img = disk.clone();
        for (off, data) in writes {
            img[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        img.truncate(len);
        img
    };
    assert!(
        replay(ws, disk.len()) == disk,
        "seed {seed:#x}: the survivor's writes are on the victim"
    );
    for (off, data) in wv.iter() {
        assert!(
            disk[*off as usize..*off as usize + data.len()] != data[..],
            "seed {seed:#x}: a victim's write at {off} survived"
        );
    }
    let kib = last_resync_kib(survivor).expect("a resync");
    let bits: std::collections::BTreeSet<u64> = wa
        .iter()
        .chain(wb.iter())
        .flat_map(|(off, d)| (off / 4096)..(off + d.len() as u64).div_ceil(4096))
        .collect();
    let union_kib = bits.len() as u64 * 4;
    assert!(
        (union_kib..=union_kib + 4096).contains(&kib),
        "seed {seed:#x}: resynced {kib} KiB for a union of {union_kib} KiB"
    );
    assert!(
        !survivor
            .adm(&["status", "loop"])
            .ok()
            .stdout
            .contains("split-brain"),
        "seed {seed:#x}: the split brain is cleared"
    );

    // --discard-my-data was one-shot: the next split brain is refused again.
    let refusals = |n: &Node| n.log().matches(SB_UNRESOLVED).count();
    let (ra, rb) = (refusals(a), refusals(b));
    for n in [a, b] {
        n.adm(&["disconnect", "loop"]).ok();
    }
    write_all(pair, survivor, vec![(32 * MIB, random_bytes(seed, 4096))]);
    victim.adm(&["primary", "loop"]).ok();
    write_all(pair, victim, vec![(40 * MIB, random_bytes(seed + 1, 4096))]);
    for n in [a, b] {
        n.adm(&["connect", "loop"]).ok();
    }
    wait_until(pair, "split brain again", SETTLE, || {
        refusals(a) > ra
            && refusals(b) > rb
            && cstate(a) == "StandAlone"
            && cstate(b) == "StandAlone"
    });
}

/// `connect --discard-my-data` on a resource still looking for its peer is not lost: the
/// note says it holds for the next handshake, which then resolves the split brain.
#[test]
fn discard_my_data_while_connecting_holds_for_the_next_handshake() {
    let pair = pair_with("", "");
    let (a, b) = (pair.alpha(), pair.beta());
    diverge_and_connect(&pair, 1, 1, Primaries::Both);
    check_refused(&pair, 0, SB_UNRESOLVED, true, 1, 1);
    b.adm(&["secondary", "loop"]).ok();
    b.adm(&["connect", "loop"]).ok();
    let r = b.adm(&["connect", "--discard-my-data", "loop"]).ok();
    assert!(
        r.stdout.contains("already connecting")
            && r.stdout
                .contains("--discard-my-data applies to the next handshake"),
        "{}",
        r.stdout
    );
    a.adm(&["connect", "loop"]).ok();
    wait_until(&pair, "resynced", SETTLE, || in_sync(a) && in_sync(b));
    assert!(
        b.log()
            .contains("Split-Brain detected, manually solved. Sync from peer node")
    );
    assert_disks_identical(&pair);
    let disk = std::fs::read(&b.data).expect("beta's disk");
    assert!(disk[..MIB as usize] == alpha_data(1)[..]);
}
