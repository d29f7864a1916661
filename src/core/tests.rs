//! Table-driven tests of the role and disk-state rules (DRBD 8.4 `drbd_set_role`,
//! `is_valid_state`, `drbd_adm_attach`, `after_state_ch`, `drbd_uuid_new_current`).

use crate::meta::{MdFlags, UUID_JUST_CREATED, Uuids};

use super::*;

const RANDOM: u64 = 0xDEAD_BEEF_0000_1234;

fn config(fencing: Fencing) -> VolumeConfig {
    VolumeConfig {
        volume: 0,
        minor: 0,
        fencing,
    }
}

fn attach_info(uuids: Uuids, flags: u32) -> AttachInfo {
    AttachInfo {
        uuids,
        flags: MdFlags(flags),
        la_size_sect: 0,
        capacity_sect: 2048,
        oos_bits: 0,
    }
}

fn fresh() -> AttachInfo {
    attach_info(
        Uuids {
            current: UUID_JUST_CREATED,
            ..Uuids::default()
        },
        MdFlags::AL_CLEAN,
    )
}

fn drain(v: &mut Volume) -> Vec<Action> {
    std::iter::from_fn(|| v.poll_action()).collect()
}

fn attached(info: AttachInfo, fencing: Fencing) -> Volume {
    let mut v = Volume::new(config(fencing));
    assert_eq!(v.handle_attach(info), Ok(Outcome::Changed));
    drain(&mut v);
    v
}

const C: u32 = MdFlags::CONSISTENT;
const W: u32 = MdFlags::WAS_UP_TO_DATE;
const P: u32 = MdFlags::PRIMARY_IND;
const O: u32 = MdFlags::PEER_OUT_DATED;
const X: u32 = MdFlags::CRASHED_PRIMARY;

/// Attach: flags on disk -> disk state (drbd_adm_attach), with and without fencing.
#[test]
fn attach_disk_state_from_flags() {
    use DiskState::*;
    let table: &[(u32, Fencing, DiskState, DiskState, u32)] = &[
        // on-disk flags, fencing, disk, pdsk, flags after attach
        (
            MdFlags::AL_CLEAN,
            Fencing::DontCare,
            Inconsistent,
            DUnknown,
            0,
        ),
        (
            C | MdFlags::AL_CLEAN,
            Fencing::DontCare,
            Outdated,
            DUnknown,
            C,
        ),
        (C | W, Fencing::DontCare, UpToDate, DUnknown, C | W),
        (C | W, Fencing::ResourceOnly, Consistent, DUnknown, C | W),
        (
            C | W | O,
            Fencing::ResourceOnly,
            UpToDate,
            Outdated,
            C | W | O,
        ),
        // Was Primary when it went away: crashed Primary, PRIMARY_IND dropped.
        (C | W | P, Fencing::DontCare, UpToDate, DUnknown, C | W | X),
        // Unknown bits are kept.
        (
            C | W | MdFlags::AL_DISABLED,
            Fencing::DontCare,
            UpToDate,
            DUnknown,
            C | W | MdFlags::AL_DISABLED,
        ),
    ];
    for &(on_disk, fencing, disk, pdsk, after) in table {
        let mut v = Volume::new(config(fencing));
        v.handle_attach(attach_info(
            Uuids {
                current: 0x10,
                ..Uuids::default()
            },
            on_disk,
        ))
        .unwrap();
        let s = v.state();
        assert_eq!(
            (s.disk, s.pdsk),
            (disk, pdsk),
            "flags {on_disk:#x} {fencing:?}"
        );
        assert_eq!(v.md_flags(), Some(MdFlags(after)), "flags {on_disk:#x}");
        let actions = drain(&mut v);
        assert!(matches!(
            actions.first(),
            Some(Action::PersistSuperblock {
                update: MdUpdate { clean: false, .. },
                ..
            })
        ));
        assert!(matches!(
            actions.last(),
            Some(Action::SetServing {
                reason: Some(_),
                ..
            })
        ));
    }
}

/// A crashed Primary keeps its flag until both disks are UpToDate, then drops it and says
/// so in the superblock (DRBD's `after_state_ch` clears `CRASHED_PRIMARY` there).
#[test]
fn the_crashed_primary_flag_goes_once_both_disks_are_up_to_date() {
    let (c, w, p, x) = (
        MdFlags::CONSISTENT,
        MdFlags::WAS_UP_TO_DATE,
        MdFlags::PRIMARY_IND,
        MdFlags::CRASHED_PRIMARY,
    );
    let mut v = Volume::new(config(Fencing::DontCare));
    v.handle_attach(attach_info(
        Uuids {
            current: 0x10,
            ..Uuids::default()
        },
        c | w | p,
    ))
    .unwrap();
    assert!(v.crashed_primary());
    drain(&mut v);
    // Connected, the peer still resyncing: the flag stays.
    v.handle_peer(
        ConnState::SyncSource,
        Role::Secondary,
        DiskState::Inconsistent,
        RANDOM,
    );
    drain(&mut v);
    assert!(v.crashed_primary());
    assert_eq!(v.md_flags().map(|f| f.0 & x), Some(x));
    // Both UpToDate: gone, and the superblock written without it.
    v.handle_peer(
        ConnState::Connected,
        Role::Secondary,
        DiskState::UpToDate,
        RANDOM,
    );
    assert!(!v.crashed_primary());
    assert_eq!(v.md_flags().map(|f| f.0 & x), Some(0));
    let persisted = drain(&mut v)
        .into_iter()
        .any(|a| matches!(a, Action::PersistSuperblock { update, .. } if update.flags.0 & x == 0));
    assert!(persisted, "the superblock is written without the flag");
}

/// Size settled at attach (drbd_new_dev_size without a peer).
#[test]
fn attach_size() {
    for (la, cap, want) in [(0, 2048, 2048), (1024, 2048, 1024), (4096, 2048, 2048)] {
        let mut info = fresh();
        info.la_size_sect = la;
        info.capacity_sect = cap;
        let v = attached(info, Fencing::DontCare);
        assert_eq!(v.size_sect(), want);
    }
}

/// Which promotions are refused, with which DRBD error, and what a successful one does
/// to disk state, flags and UUIDs.
#[test]
fn promotion_rules() {
    use DiskState::*;
    struct Case {
        flags: u32,
        fencing: Fencing,
        force: bool,
        result: Result<DiskState, Refusal>,
    }
    let cases = [
        // Fresh disk (create-md): Inconsistent.
        Case {
            flags: MdFlags::AL_CLEAN,
            fencing: Fencing::DontCare,
            force: false,
            result: Err(Refusal::NoUpToDateDisk),
        },
        Case {
            flags: MdFlags::AL_CLEAN,
            fencing: Fencing::DontCare,
            force: true,
            result: Ok(UpToDate),
        },
        // Outdated.
        Case {
            flags: C,
            fencing: Fencing::DontCare,
            force: false,
            result: Err(Refusal::NoUpToDateDisk),
        },
        Case {
            flags: C,
            fencing: Fencing::DontCare,
            force: true,
            result: Ok(UpToDate),
        },
        // UpToDate.
        Case {
            flags: C | W,
            fencing: Fencing::DontCare,
            force: false,
            result: Ok(UpToDate),
        },
        // Consistent with fencing, the fence-peer handler broken: the peer is not outdated.
        Case {
            flags: C | W,
            fencing: Fencing::ResourceOnly,
            force: false,
            result: Err(Refusal::NoUpToDateDisk),
        },
        Case {
            flags: C | W,
            fencing: Fencing::ResourceOnly,
            force: true,
            result: Ok(UpToDate),
        },
        // Fencing, peer known outdated: fine.
        Case {
            flags: C | W | O,
            fencing: Fencing::ResourceOnly,
            force: false,
            result: Ok(UpToDate),
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let mut v = attached(
            attach_info(
                Uuids {
                    current: 0x1000,
                    ..Uuids::default()
                },
                c.flags,
            ),
            c.fencing,
        );
        let before = (v.state(), v.uuids(), v.md_flags());
        let mut got = v.handle_admin(AdminCmd::Primary { force: c.force }, RANDOM);
        if got == Ok(Outcome::NeedFence) {
            // No fence-peer handler: drbdadm's exit code 0, "broken".
            assert_eq!(c.fencing, Fencing::ResourceOnly, "case {i}");
            assert!(
                v.poll_action().is_none(),
                "case {i}: NeedFence queued an action"
            );
            assert_eq!(
                v.handle_fence_result(None, FenceVerdict::Broken(0)),
                FenceOutcome::Broken
            );
            got = v.handle_admin(AdminCmd::Primary { force: c.force }, RANDOM);
        }
        match c.result {
            Err(e) => {
                assert_eq!(got, Err(e), "case {i}");
                assert_eq!(
                    (v.state(), v.uuids(), v.md_flags()),
                    before,
                    "case {i}: refusal changed state"
                );
                assert!(
                    v.poll_action().is_none(),
                    "case {i}: refusal queued an action"
                );
            }
            Ok(disk) => {
                assert_eq!(got, Ok(Outcome::Changed), "case {i}");
                assert_eq!(v.state().role, Role::Primary);
                assert_eq!(v.state().disk, disk, "case {i}");
                let f = v.md_flags().unwrap();
                assert!(f.contains(C | W | P), "case {i}: flags {f:?}");
                assert!(!f.is_al_clean());
                let u = v.uuids().unwrap();
                // No peer: new current UUID, old one (role bit clear) to the bitmap slot.
                assert_eq!(u.current, RANDOM | 1, "case {i}");
                assert_eq!(u.bitmap, 0x1000, "case {i}");
                assert_eq!(v.serving(), None);
                let actions = drain(&mut v);
                assert!(matches!(actions[0], Action::PersistSuperblock { .. }));
                assert!(matches!(
                    actions[1],
                    Action::SetServing { reason: None, .. }
                ));
            }
        }
    }
}

/// `primary --force` on a fresh disk: the exact outcome (flags 0x13, bitmap UUID 4).
#[test]
fn force_primary_on_fresh_disk() {
    let mut v = attached(fresh(), Fencing::DontCare);
    v.handle_admin(AdminCmd::Primary { force: true }, 0x1234_5678_9ABC_DEF0)
        .unwrap();
    assert_eq!(
        v.uuids(),
        Some(Uuids {
            current: 0x1234_5678_9ABC_DEF1,
            bitmap: UUID_JUST_CREATED,
            history: [0, 0],
        })
    );
    assert_eq!(v.md_flags(), Some(MdFlags(0x13)));
}

/// A bitmap UUID already set is kept on an unforced promotion without a peer (only `--force`
/// replaces it, as drbd_set_role calls drbd_uuid_new_current only then), but a new data
/// generation starts all the same: the current UUID goes to the history (a deviation from
/// DRBD 8.4, which writes on under the old current UUID; the peer may have moved on from it
/// unseen, and the next handshake would resolve the split brain silently; found by the
/// simulation, seed 0x892185c1704cac8d).
#[test]
fn bitmap_uuid_kept_when_set() {
    let uuids = Uuids {
        current: 0x2000,
        bitmap: 0x3000,
        history: [0x4000, 0],
    };
    let mut v = attached(attach_info(uuids, C | W), Fencing::DontCare);
    v.handle_admin(AdminCmd::Primary { force: false }, RANDOM)
        .unwrap();
    assert_eq!(
        v.uuids().unwrap(),
        Uuids {
            current: RANDOM | 1,
            bitmap: 0x3000,
            history: [0x2000, 0x4000],
        }
    );
    v.handle_admin(AdminCmd::Secondary, RANDOM).unwrap();
    // --force on an UpToDate disk forces nothing (drbd_set_role sets `forced` only when
    // the force was needed), so the bitmap UUID is kept here too.
    v.handle_admin(AdminCmd::Primary { force: true }, RANDOM)
        .unwrap();
    assert_eq!(
        v.uuids().unwrap(),
        Uuids {
            current: RANDOM | 1,
            bitmap: 0x3000,
            history: [RANDOM, 0x2000],
        }
    );
    // An Outdated disk with a bitmap UUID, forced: the bitmap slot is overwritten.
    let mut v = attached(attach_info(uuids, C), Fencing::DontCare);
    v.handle_admin(AdminCmd::Primary { force: true }, RANDOM)
        .unwrap();
    assert_eq!(v.uuids().unwrap().bitmap, 0x2000);
    assert_eq!(v.uuids().unwrap().current, RANDOM | 1);
}

/// Deviation from DRBD 8.4 (`after_state_ch` starts a new generation only when the bitmap
/// UUID is 0), found by the simulation (0x4a34847b14e8b82a): a SyncSource Primary whose
/// target finished the resync first (it said UpToDate, and has this node's current UUID)
/// must not write on under that UUID, or a promotion of the target later (its bitmap UUID
/// := that UUID) makes this node a plain SyncTarget by rule 50 and its writes vanish. With
/// a new generation the bitmap UUIDs match: split brain by rule 90; unpromoted, the target
/// gets a bitmap resync (rule 70). A target lost while still Inconsistent changes nothing.
#[test]
fn new_generation_when_a_finished_target_is_lost_with_a_bitmap_uuid() {
    let source = Uuids {
        current: 0x2000,
        bitmap: 0x3000,
        history: [0x4000, 0],
    };
    let connected_primary = || {
        let mut v = attached(attach_info(source, C | W | O), Fencing::DontCare);
        v.handle_peer(
            ConnState::Connected,
            Role::Secondary,
            DiskState::UpToDate,
            RANDOM,
        );
        v.handle_admin(AdminCmd::Primary { force: false }, RANDOM)
            .unwrap();
        v
    };
    let syncing_primary = |pdsk: DiskState| {
        let mut v = connected_primary();
        v.handle_peer(ConnState::SyncSource, Role::Secondary, pdsk, RANDOM);
        assert_eq!(
            v.uuids().unwrap().current,
            0x2001,
            "connected: no new generation"
        );
        v.handle_peer(
            ConnState::NetworkFailure,
            Role::Unknown,
            DiskState::DUnknown,
            0x7000,
        );
        v
    };
    // Lost before the resync ran (the bitmap exchange, the target still UpToDate from the
    // handshake): DRBD 8.4's rule, nothing moves.
    let mut v = connected_primary();
    lose_peer(&mut v);
    assert_eq!(v.uuids().unwrap().current, 0x2001);
    // Lost while the target was Inconsistent: DRBD 8.4's rule, nothing moves.
    let v = syncing_primary(DiskState::Inconsistent);
    assert_eq!(
        v.uuids().unwrap(),
        Uuids {
            current: 0x2001,
            ..source
        }
    );
    // Lost while Inconsistent as far as this side knows, but with every out-of-sync block
    // answered (`handle_sync_source_tail`): the target may have finished unseen (found by
    // the simulation, 0x52cc07d586c518ab), so a new generation too.
    let mut v = attached(attach_info(source, C | W | O), Fencing::DontCare);
    v.handle_peer(
        ConnState::Connected,
        Role::Secondary,
        DiskState::UpToDate,
        RANDOM,
    );
    v.handle_admin(AdminCmd::Primary { force: false }, RANDOM)
        .unwrap();
    v.handle_peer(
        ConnState::SyncSource,
        Role::Secondary,
        DiskState::Inconsistent,
        RANDOM,
    );
    v.handle_sync_source_tail();
    v.handle_peer(
        ConnState::NetworkFailure,
        Role::Unknown,
        DiskState::DUnknown,
        0x7000,
    );
    assert_eq!(v.state().pdsk, DiskState::DUnknown);
    assert_eq!(
        v.uuids().unwrap(),
        Uuids {
            current: 0x7001,
            bitmap: 0x2001,
            history: [0x3000, 0x4000],
        }
    );
    // Lost after the target said UpToDate: a new generation.
    let v = syncing_primary(DiskState::UpToDate);
    assert_eq!(
        v.uuids().unwrap(),
        Uuids {
            current: 0x7001,
            bitmap: 0x2001,
            history: [0x3000, 0x4000],
        }
    );
    // The target (source's UUIDs, bitmap UUID into the history), unpromoted: bitmap resync.
    let finished = Uuids {
        current: 0x2000,
        bitmap: 0,
        history: [0x3000, 0x4000],
    };
    let t = attached(attach_info(finished, C | W), Fencing::DontCare);
    let d = decision_between(&v, &t, true);
    assert_eq!(
        (d.comparison.rule, d.outcome),
        (70, Handshake::SyncSource { full: false })
    );
    // Promoted while disconnected: split brain, not a resync.
    let mut t = attached(attach_info(finished, C | W), Fencing::DontCare);
    t.handle_admin(AdminCmd::Primary { force: false }, 0x9000)
        .unwrap();
    let d = decision_between(&v, &t, true);
    assert_eq!(d.comparison.rule, 90, "{d:?}");
    assert!(matches!(d.outcome, Handshake::Refuse(_)), "{d:?}");
}

/// `sanitize_state`'s implications of the connection state on the disk: from the bitmap
/// exchange to the start of a resync a target is at best Outdated, durably (a target that
/// loses its source there, crashed or not, must not be promoted without `--force`; found by
/// the simulation, 0x66abc1ae82aae915); Consistent and Outdated vanish when Connected.
#[test]
fn a_target_is_outdated_until_its_resync_starts() {
    let uuids = Uuids {
        current: 0x2000,
        bitmap: 0,
        history: [0, 0],
    };
    let mut v = attached(attach_info(uuids, C | W), Fencing::DontCare);
    assert_eq!(v.state().disk, DiskState::UpToDate);
    v.handle_peer(ConnState::WFBitMapT, Role::Primary, DiskState::UpToDate, 0);
    assert_eq!(v.state().disk, DiskState::Outdated);
    let flags = drain(&mut v)
        .into_iter()
        .rev()
        .find_map(|a| match a {
            Action::PersistSuperblock { update, .. } => Some(update.flags),
            _ => None,
        })
        .expect("the Outdated disk is recorded");
    assert!(flags.contains(MdFlags::CONSISTENT) && !flags.contains(MdFlags::WAS_UP_TO_DATE));
    // The source is lost before the SYNC_UUID: still Outdated, not promotable.
    v.handle_peer(
        ConnState::NetworkFailure,
        Role::Unknown,
        DiskState::DUnknown,
        0,
    );
    assert_eq!(v.state().disk, DiskState::Outdated);
    assert!(
        v.handle_admin(AdminCmd::Primary { force: false }, RANDOM)
            .is_err()
    );
    // The next handshake finds nothing to sync: Connected, UpToDate again.
    v.handle_peer(
        ConnState::Connected,
        Role::Secondary,
        DiskState::UpToDate,
        0,
    );
    assert_eq!(v.state().disk, DiskState::UpToDate);
}

/// A replicated write that failed on this disk (`__drbd_chk_io_error`, pass_on's state
/// change): a disk better than Inconsistent becomes Inconsistent and says so in the
/// metadata; an Inconsistent or Diskless one stays as it is.
#[test]
fn failed_peer_write_makes_the_disk_inconsistent() {
    for (flags, before) in [
        (C | W | O, DiskState::UpToDate),
        (C | W, DiskState::Consistent),
        (C, DiskState::Outdated),
        (0, DiskState::Inconsistent),
    ] {
        let mut v = attached(attach_info(uuids_0x1000(), flags), Fencing::ResourceOnly);
        v.set_on_io_error(crate::core::OnIoError::PassOn);
        assert_eq!(v.state().disk, before);
        v.handle_local_io_error();
        assert_eq!(v.state().disk, DiskState::Inconsistent);
        let actions = drain(&mut v);
        assert_eq!(
            actions.is_empty(),
            before == DiskState::Inconsistent,
            "{actions:?}"
        );
        assert!(!v.md_flags().unwrap().is_consistent());
    }
    let mut v = Volume::new(config(Fencing::DontCare));
    v.set_on_io_error(crate::core::OnIoError::PassOn);
    v.handle_local_io_error();
    assert_eq!(v.state().disk, DiskState::Diskless);
    assert!(drain(&mut v).is_empty());
}

#[test]
fn diskless_cannot_be_promoted_even_forced() {
    let mut v = Volume::new(config(Fencing::DontCare));
    for force in [false, true] {
        assert_eq!(
            v.handle_admin(AdminCmd::Primary { force }, RANDOM),
            Err(Refusal::NoUpToDateDisk)
        );
    }
}

#[test]
fn demotion_rules() {
    let mut v = attached(fresh(), Fencing::DontCare);
    // Already Secondary: nothing to do, nothing written.
    assert_eq!(
        v.handle_admin(AdminCmd::Secondary, RANDOM),
        Ok(Outcome::NothingToDo)
    );
    assert!(v.poll_action().is_none());
    v.handle_admin(AdminCmd::Primary { force: true }, RANDOM)
        .unwrap();
    drain(&mut v);
    // Held open: refused (-12), nothing changes.
    v.handle_open_count(1);
    assert_eq!(
        v.handle_admin(AdminCmd::Secondary, RANDOM),
        Err(Refusal::DeviceInUse)
    );
    assert_eq!(
        v.handle_admin(AdminCmd::Down, RANDOM),
        Err(Refusal::DeviceInUse)
    );
    assert!(v.poll_action().is_none());
    assert_eq!(v.state().role, Role::Primary);
    v.handle_open_count(0);
    assert_eq!(
        v.handle_admin(AdminCmd::Secondary, RANDOM),
        Ok(Outcome::Changed)
    );
    assert_eq!(v.md_flags(), Some(MdFlags(C | W)));
    assert_eq!(v.uuids().unwrap().current, RANDOM & !1);
    assert!(v.serving().is_some());
}

#[test]
fn detach_rules() {
    // A StandAlone Primary cannot detach: it would lose its UpToDate data (-2).
    let mut v = attached(fresh(), Fencing::DontCare);
    v.handle_admin(AdminCmd::Primary { force: true }, RANDOM)
        .unwrap();
    drain(&mut v);
    assert_eq!(
        v.handle_admin(AdminCmd::Detach, RANDOM),
        Err(Refusal::NoUpToDateDisk)
    );
    assert!(v.poll_action().is_none());
    // Down demotes first, then detaches, writing a clean superblock before closing.
    assert_eq!(v.handle_admin(AdminCmd::Down, RANDOM), Ok(Outcome::Changed));
    let actions = drain(&mut v);
    let clean: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::PersistSuperblock { update, .. } => Some(update.clean),
            _ => None,
        })
        .collect();
    assert_eq!(clean, [false, true]);
    let last_write = actions
        .iter()
        .rposition(|a| matches!(a, Action::PersistSuperblock { .. }))
        .unwrap();
    let close = actions
        .iter()
        .position(|a| matches!(a, Action::CloseDisk { .. }))
        .unwrap();
    assert!(last_write < close);
    assert_eq!(v.state().disk, DiskState::Diskless);
    // Detach again: nothing to do. Attach twice: refused.
    assert_eq!(
        v.handle_admin(AdminCmd::Detach, RANDOM),
        Ok(Outcome::NothingToDo)
    );
    v.handle_attach(fresh()).unwrap();
    assert_eq!(v.handle_attach(fresh()), Err(Refusal::DiskConfigured));
}

#[test]
fn md_io_error_drops_the_disk() {
    let mut v = attached(fresh(), Fencing::DontCare);
    v.handle_md_io_error();
    assert_eq!(v.state().disk, DiskState::Diskless);
    assert!(
        drain(&mut v)
            .iter()
            .any(|a| matches!(a, Action::CloseDisk { .. }))
    );
}

/// after_state_ch's flag formula, row by row.
#[test]
fn flag_formula() {
    use DiskState::*;
    let base = State {
        role: Role::Secondary,
        peer: Role::Unknown,
        disk: Inconsistent,
        pdsk: DUnknown,
        conn: ConnState::StandAlone,
    };
    let rows: &[(State, bool, u32)] = &[
        (base, false, 0),
        (
            State {
                disk: Outdated,
                ..base
            },
            false,
            C,
        ),
        (
            State {
                disk: Consistent,
                ..base
            },
            false,
            C | W,
        ),
        (
            State {
                disk: UpToDate,
                role: Role::Primary,
                ..base
            },
            false,
            C | W | P,
        ),
        (
            State {
                disk: UpToDate,
                pdsk: Outdated,
                ..base
            },
            true,
            C | W | O | X,
        ),
        (
            State {
                disk: UpToDate,
                conn: ConnState::Connected,
                ..base
            },
            false,
            C | W | MdFlags::CONNECTED_IND,
        ),
        (
            State {
                disk: Inconsistent,
                peer: Role::Primary,
                pdsk: Diskless,
                ..base
            },
            false,
            P,
        ),
    ];
    for (i, (s, crashed, want)) in rows.iter().enumerate() {
        let got = flags_for(MdFlags(MdFlags::AL_CLEAN | MdFlags::FULL_SYNC), s, *crashed);
        assert_eq!(got, MdFlags(want | MdFlags::FULL_SYNC), "row {i}");
    }
}

/// The handshake input between two volumes as they stand (no policies, no discard).
fn handshake_between(a: &Volume, b: &Volume, a_resolves: bool) -> Handshake {
    decision_between(a, b, a_resolves).outcome
}

/// The whole decision between two volumes as they stand (no policies, no discard).
fn decision_between(a: &Volume, b: &Volume, a_resolves: bool) -> HandshakeDecision {
    let side = |v: &Volume| Side {
        uuids: v.uuids().expect("attached"),
        crashed_primary: false,
        role: v.state().role,
    };
    let input = HandshakeInput {
        local: side(a),
        peer: side(b),
        link: Link {
            pro_version: PRO_VERSION_MAX,
            features: 0,
            resolve_conflicts: a_resolves,
        },
        local_disk: a.state().disk,
        local_disk_after: a.state().disk,
        peer_disk: b.state().disk,
        local_changes: 0,
        peer_changes: 0,
        local_discard_my_data: false,
        peer_discard_my_data: false,
        policies: Policies::default(),
    };
    sync_handshake(&input)
}

/// The seed's first sync: primary --force on one fresh disk, full sync, then both UUID
/// sets are equal and a reconnect needs no sync; a Primary that loses its peer starts a
/// new generation, so the reconnect is a bitmap resync towards the old peer.
#[test]
fn full_sync_then_reconnect_then_bitmap_resync() {
    let mut a = attached(fresh(), Fencing::DontCare);
    let mut b = attached(fresh(), Fencing::DontCare);
    assert_eq!(
        a.handle_admin(AdminCmd::Primary { force: true }, 0x1234_5678_9abc_def0),
        Ok(Outcome::Changed)
    );
    drain(&mut a);
    for v in [&mut a, &mut b] {
        let peer = if v.state().role == Role::Primary {
            Role::Secondary
        } else {
            Role::Primary
        };
        v.handle_peer(ConnState::WFBitMapS, peer, DiskState::Inconsistent, 0);
        drain(v);
    }
    assert_eq!(
        handshake_between(&a, &b, true),
        Handshake::SyncSource { full: true }
    );
    let a_handshake_uuids = a.uuids().unwrap();
    let sync_uuid = a.handle_sync_source_start(0x7777_0000_0000_0002);
    b.handle_sync_target_start(sync_uuid);
    assert_eq!(b.state().disk, DiskState::Inconsistent);
    assert_eq!(b.state().conn, ConnState::SyncTarget);
    a.handle_sync_finished(false, 0, None);
    b.handle_sync_finished(true, 0, Some(a_handshake_uuids));
    drain(&mut a);
    drain(&mut b);
    let (ua, ub) = (a.uuids().unwrap(), b.uuids().unwrap());
    assert_eq!(ua.current & !1, ub.current & !1, "{ua:?} {ub:?}");
    assert_eq!((ua.bitmap, ua.history), (ub.bitmap, ub.history));
    assert_eq!(ua.bitmap, 0);
    assert_eq!(b.state().disk, DiskState::UpToDate);
    assert_eq!(a.state().pdsk, DiskState::UpToDate);
    assert_eq!(handshake_between(&a, &b, true), Handshake::Connected);
    assert_eq!(handshake_between(&b, &a, false), Handshake::Connected);

    // The link drops while a is Primary: a starts a new generation.
    a.handle_peer(
        ConnState::WFConnection,
        Role::Unknown,
        DiskState::DUnknown,
        0x5555_0000_0000_0000,
    );
    b.handle_peer(
        ConnState::WFConnection,
        Role::Unknown,
        DiskState::DUnknown,
        0x6666_0000_0000_0000,
    );
    drain(&mut a);
    drain(&mut b);
    // drbd_uuid_new_current moves the current UUID as it is (role bit included).
    assert_eq!(a.uuids().unwrap().bitmap, ua.current);
    assert_eq!(
        b.uuids().unwrap().current & !1,
        ub.current & !1,
        "the Secondary keeps its generation"
    );
    assert_eq!(
        handshake_between(&a, &b, true),
        Handshake::SyncSource { full: false }
    );
    assert_eq!(
        handshake_between(&b, &a, false),
        Handshake::SyncTarget { full: false }
    );
}

/// A SyncSource whose SYNC_UUID never reaches the peer (the link breaks right after the
/// bitmap exchange), again and again: each start moves the bitmap UUID on and pushes the
/// old one into the history; the next handshake's rule 71 undoes that ("Last syncUUID did
/// not get through, corrected") and the repair must be kept, or after three tries the
/// common ancestor has left the history and the peers look unrelated (seed
/// 0x895d058bd9582e82 of the simulation).
#[test]
fn lost_sync_uuid_repair_is_applied() {
    let x = 0x5EED_0000_0000_1000;
    let info = attach_info(
        Uuids {
            current: x,
            ..Uuids::default()
        },
        MdFlags::AL_CLEAN | C | W,
    );
    let mut a = attached(info, Fencing::DontCare);
    let b = attached(info, Fencing::DontCare);
    assert_eq!(
        a.handle_admin(AdminCmd::Primary { force: false }, RANDOM),
        Ok(Outcome::Changed)
    );
    a.handle_peer(
        ConnState::WFConnection,
        Role::Unknown,
        DiskState::DUnknown,
        RANDOM,
    );
    drain(&mut a);
    assert_eq!(a.uuids().unwrap().bitmap, x);
    for round in 0..5 {
        let d = decision_between(&a, &b, true);
        assert_eq!(
            d.outcome,
            Handshake::SyncSource { full: false },
            "round {round}: {} {:x?} {:x?}",
            d.comparison,
            a.uuids(),
            b.uuids()
        );
        if round > 0 {
            assert_eq!(d.comparison.rule, 71, "round {round}");
        }
        if let Some(r) = d.comparison.local_repair {
            a.handle_uuid_repair(r);
            assert!(
                drain(&mut a)
                    .iter()
                    .any(|x| matches!(x, Action::PersistSuperblock { update, .. } if update.uuids.bitmap == r.bitmap)),
                "the repair is written to the meta data"
            );
        }
        // The SYNC_UUID is lost with the link.
        a.handle_sync_source_start(RANDOM);
        drain(&mut a);
    }
}

// ----- outdate and fencing ----------------------------------------------------------------

fn uuids_0x1000() -> Uuids {
    Uuids {
        current: 0x1000,
        ..Uuids::default()
    }
}

/// `outdate` (drbd_adm_outdate): which states accept it, with DRBD's errors, and what it
/// leaves in the flags.
#[test]
fn outdate_rules() {
    use DiskState::*;
    // UpToDate, StandAlone Secondary: Outdated, MDF_WAS_UP_TO_DATE cleared.
    let mut v = attached(attach_info(uuids_0x1000(), C | W), Fencing::DontCare);
    assert_eq!(v.handle_admin(AdminCmd::Outdate, 0), Ok(Outcome::Changed));
    assert_eq!(v.state().disk, Outdated);
    assert_eq!(v.md_flags(), Some(MdFlags(C)));
    assert!(matches!(
        drain(&mut v).first(),
        Some(Action::PersistSuperblock { .. })
    ));
    // Twice: nothing to do.
    assert_eq!(
        v.handle_admin(AdminCmd::Outdate, 0),
        Ok(Outcome::NothingToDo)
    );
    // An Outdated disk is not promoted without --force; with it, it is.
    assert_eq!(
        v.handle_admin(AdminCmd::Primary { force: false }, RANDOM),
        Err(Refusal::NoUpToDateDisk)
    );
    assert_eq!(
        v.handle_admin(AdminCmd::Primary { force: true }, RANDOM),
        Ok(Outcome::Changed)
    );

    // Refusals change nothing.
    let refused = |mut v: Volume, want: Refusal| {
        drain(&mut v);
        let before = (v.state(), v.md_flags());
        assert_eq!(v.handle_admin(AdminCmd::Outdate, 0), Err(want));
        assert_eq!((v.state(), v.md_flags()), before);
        assert!(v.poll_action().is_none());
    };
    // Inconsistent: lower than outdated.
    refused(
        attached(fresh(), Fencing::DontCare),
        Refusal::LowerThanOutdated,
    );
    // Diskless.
    refused(
        Volume::new(config(Fencing::DontCare)),
        Refusal::LowerThanOutdated,
    );
    // Connected.
    let mut v = attached(attach_info(uuids_0x1000(), C | W), Fencing::DontCare);
    v.handle_peer(ConnState::Connected, Role::Secondary, UpToDate, RANDOM);
    refused(v, Refusal::ConnectedOutdates);
    // A disconnected Primary would have no UpToDate data.
    let mut v = attached(attach_info(uuids_0x1000(), C | W), Fencing::DontCare);
    v.handle_admin(AdminCmd::Primary { force: false }, RANDOM)
        .unwrap();
    refused(v, Refusal::NoUpToDateDisk);
}

/// A StandAlone UpToDate Secondary with `fencing resource-only` (it was connected and in
/// sync, then lost the peer).
fn fenced_secondary() -> Volume {
    let mut v = attached(
        attach_info(uuids_0x1000(), C | W | O),
        Fencing::ResourceOnly,
    );
    v.handle_peer(
        ConnState::Connected,
        Role::Secondary,
        DiskState::UpToDate,
        RANDOM,
    );
    v.handle_peer(
        ConnState::WFConnection,
        Role::Unknown,
        DiskState::DUnknown,
        RANDOM,
    );
    drain(&mut v);
    assert_eq!(v.state().disk, DiskState::UpToDate);
    assert_eq!(v.state().pdsk, DiskState::DUnknown);
    v
}

/// `primary` without a connection under fencing (drbd_set_role + conn_try_outdate_peer):
/// each exit code of the fence-peer handler, with and without --force.
#[test]
fn promotion_asks_the_fence_peer_handler() {
    use DiskState::*;
    // (exit code, force, result, disk after, pdsk after)
    type Row = (Option<i32>, bool, Result<(), Refusal>, DiskState, DiskState);
    let table: &[Row] = &[
        (Some(4), false, Ok(()), UpToDate, Outdated),
        (Some(7), false, Ok(()), UpToDate, Outdated),
        (Some(5), false, Ok(()), UpToDate, Outdated),
        (Some(3), false, Ok(()), UpToDate, Inconsistent),
        // The peer is Primary: this node outdates itself and cannot be promoted.
        (
            Some(6),
            false,
            Err(Refusal::NoUpToDateDisk),
            Outdated,
            DUnknown,
        ),
        (Some(1), false, Err(Refusal::PrimaryNop), UpToDate, DUnknown),
        (None, false, Err(Refusal::PrimaryNop), UpToDate, DUnknown),
        // "Forced into split brain situation!"
        (Some(1), true, Ok(()), UpToDate, Outdated),
    ];
    for &(code, force, ref want, disk, pdsk) in table {
        let mut v = fenced_secondary();
        let before = (v.state(), v.uuids(), v.md_flags());
        assert_eq!(
            v.handle_admin(AdminCmd::Primary { force }, RANDOM),
            Ok(Outcome::NeedFence),
            "{code:?}"
        );
        assert_eq!((v.state(), v.uuids(), v.md_flags()), before);
        assert!(v.poll_action().is_none());
        v.handle_fence_result(None, FenceVerdict::from_exit(code));
        let got = v.handle_admin(AdminCmd::Primary { force }, RANDOM);
        match want {
            Ok(()) => {
                assert_eq!(got, Ok(Outcome::Changed), "{code:?} force {force}");
                assert_eq!(v.state().role, Role::Primary);
            }
            Err(e) => {
                assert_eq!(got, Err(*e), "{code:?}");
                assert_eq!(v.state().role, Role::Secondary);
            }
        }
        assert_eq!(
            (v.state().disk, v.state().pdsk),
            (disk, pdsk),
            "{code:?} force {force}"
        );
        // A later promotion asks the handler again.
        if *want == Err(Refusal::PrimaryNop) {
            assert_eq!(
                v.handle_admin(AdminCmd::Primary { force }, RANDOM),
                Ok(Outcome::NeedFence)
            );
        }
    }
    // A Consistent disk (attached with fencing, peer not known Outdated): the handler's
    // "peer outdated" makes it UpToDate.
    let mut v = attached(attach_info(uuids_0x1000(), C | W), Fencing::ResourceOnly);
    assert_eq!(v.state().disk, Consistent);
    assert_eq!(
        v.handle_admin(AdminCmd::Primary { force: false }, RANDOM),
        Ok(Outcome::NeedFence)
    );
    v.handle_fence_result(None, FenceVerdict::PeerOutdated);
    assert_eq!(
        v.handle_admin(AdminCmd::Primary { force: false }, RANDOM),
        Ok(Outcome::Changed)
    );
    assert_eq!((v.state().disk, v.state().pdsk), (UpToDate, Outdated));
    assert!(v.md_flags().unwrap().contains(C | W | O | P));
}

/// A connected UpToDate/UpToDate Primary with `fencing`.
fn connected_primary(fencing: Fencing) -> Volume {
    let mut v = attached(attach_info(uuids_0x1000(), C | W | O), fencing);
    v.handle_peer(
        ConnState::Connected,
        Role::Secondary,
        DiskState::UpToDate,
        RANDOM,
    );
    v.handle_admin(AdminCmd::Primary { force: false }, RANDOM)
        .unwrap();
    drain(&mut v);
    v
}

fn lose_peer(v: &mut Volume) -> Vec<Action> {
    v.handle_peer(
        ConnState::NetworkFailure,
        Role::Unknown,
        DiskState::DUnknown,
        RANDOM,
    );
    v.handle_peer(
        ConnState::WFConnection,
        Role::Unknown,
        DiskState::DUnknown,
        RANDOM,
    );
    drain(v)
}

fn fence_peer_count(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::FencePeer { connect_count, .. } => Some(*connect_count),
            _ => None,
        })
        .collect()
}

/// A Primary that loses its peer (conn_disconnect): fence-peer runs once; under
/// resource-and-stonith I/O freezes until a verdict says the peer is fenced.
#[test]
fn lost_peer_is_fenced() {
    use DiskState::*;
    // resource-and-stonith: frozen, then "stonithed" resumes.
    let mut v = connected_primary(Fencing::ResourceAndStonith);
    assert!(!v.suspended());
    let actions = lose_peer(&mut v);
    assert_eq!(fence_peer_count(&actions), vec![1]);
    assert!(v.suspended());
    // A broken handler: still frozen.
    assert_eq!(
        v.handle_fence_result(Some(1), FenceVerdict::Broken(1)),
        FenceOutcome::Broken
    );
    assert!(v.suspended());
    // A verdict for an older connection is ignored.
    assert_eq!(
        v.handle_fence_result(Some(0), FenceVerdict::PeerStonithed),
        FenceOutcome::Ignored
    );
    assert!(v.suspended());
    assert_eq!(
        v.handle_fence_result(Some(1), FenceVerdict::PeerStonithed),
        FenceOutcome::Applied {
            text: "peer was stonithed",
            resumed: true
        }
    );
    assert!(!v.suspended());
    assert_eq!(v.state().pdsk, Outdated);
    assert!(v.md_flags().unwrap().contains(O));
    let actions = drain(&mut v);
    assert!(actions.iter().any(|a| matches!(a, Action::ResumeIo { .. })));

    // "peer is active": a Primary cannot outdate itself; nothing changes, still frozen.
    let mut v = connected_primary(Fencing::ResourceAndStonith);
    lose_peer(&mut v);
    assert_eq!(
        v.handle_fence_result(Some(1), FenceVerdict::PeerPrimary),
        FenceOutcome::Refused(Refusal::NoUpToDateDisk)
    );
    assert!(v.suspended());
    assert_eq!(v.state().disk, UpToDate);
    // The operator resumes.
    assert_eq!(v.handle_admin(AdminCmd::ResumeIo, 0), Ok(Outcome::Changed));
    assert!(!v.suspended());
    assert_eq!(
        v.handle_admin(AdminCmd::ResumeIo, 0),
        Ok(Outcome::NothingToDo)
    );

    // The connection comes back while frozen: resumed, and the late verdict is ignored.
    let mut v = connected_primary(Fencing::ResourceAndStonith);
    lose_peer(&mut v);
    v.handle_peer(ConnState::Connected, Role::Secondary, UpToDate, RANDOM);
    assert!(!v.suspended());
    assert!(
        drain(&mut v)
            .iter()
            .any(|a| matches!(a, Action::ResumeIo { .. }))
    );
    assert_eq!(
        v.handle_fence_result(Some(1), FenceVerdict::PeerOutdated),
        FenceOutcome::Ignored
    );
    assert_eq!(v.state().pdsk, UpToDate);

    // resource-only: the handler runs, nothing freezes.
    let mut v = connected_primary(Fencing::ResourceOnly);
    assert_eq!(fence_peer_count(&lose_peer(&mut v)), vec![1]);
    assert!(!v.suspended());
    v.handle_fence_result(Some(1), FenceVerdict::PeerOutdated);
    assert_eq!(v.state().pdsk, Outdated);

    // No fencing, a Secondary, or a peer already Outdated: no handler.
    let mut v = connected_primary(Fencing::DontCare);
    assert!(fence_peer_count(&lose_peer(&mut v)).is_empty());
    let mut v = attached(
        attach_info(uuids_0x1000(), C | W | O),
        Fencing::ResourceAndStonith,
    );
    v.handle_peer(ConnState::Connected, Role::Primary, UpToDate, RANDOM);
    assert!(fence_peer_count(&lose_peer(&mut v)).is_empty());
    assert!(!v.suspended());
    let mut v = connected_primary(Fencing::ResourceAndStonith);
    v.handle_peer(ConnState::Connected, Role::Secondary, Outdated, RANDOM);
    assert!(fence_peer_count(&lose_peer(&mut v)).is_empty());
    assert!(!v.suspended());
}
