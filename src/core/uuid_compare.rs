//! Which way to resync, decided from both nodes' generation UUIDs: DRBD 8.4's
//! `drbd_uuid_compare` and the handshake decision built on it (`drbd_sync_handshake`,
//! `drbd_asb_recover_0p/1p/2p`), in `drbd/drbd_receiver.c`, as pure functions.
//!
//! [`uuid_compare`] returns DRBD's verdict together with the number of the rule that decided
//! it, so a log line can read `uuid_compare()=2 by rule 30` exactly as DRBD's does. Where
//! DRBD repairs UUIDs while it compares (rules 34, 35, 51, 71: a resync-finished or sync-UUID
//! packet that got lost), the repaired set is returned for the caller to apply; nothing is
//! changed in place.
//!
//! [`sync_handshake`] turns that verdict into the connection state to go to, applying disk
//! states, the after-split-brain policies, `--discard-my-data` and `rr-conflict`.
//!
//! Bit 0 of a current UUID says "this node is Primary" (`__drbd_uuid_set`); every comparison
//! masks it off. `UUID_JUST_CREATED` (4) is what create-md writes: a disk that never held data.

use std::fmt;

use crate::meta::{UUID_JUST_CREATED, Uuids};

use super::state::{DiskState, Role};

/// The offset a SyncSource adds to its bitmap UUID when it starts a resync
/// (`drbd_gen_and_send_sync_uuid`); rules 51 and 71 look for it (protocol 96 and later).
pub const UUID_NEW_BM_OFFSET: u64 = 1 << 48;

/// The protocol version from which DRBD repairs UUIDs during the comparison (rules 34-37,
/// 51, 71); an older peer gets "requires protocol 91".
pub const PRO_VERSION_UUID_REPAIR: u32 = 91;

/// The protocol version from which rules 51 and 71 recognise a lost sync UUID by
/// [`UUID_NEW_BM_OFFSET`] rather than by the history slots.
pub const PRO_VERSION_NEW_BM_OFFSET: u32 = 96;

/// DRBD 8.4's highest protocol version (`PRO_VERSION_MAX`).
pub const PRO_VERSION_MAX: u32 = 101;

/// `DRBD_FF_WSAME`: the feature bit DRBD overloads to mean "knows rule 41".
pub const FF_WSAME: u32 = 4;

/// Bits of the flags word that travels with the UUIDs (`_drbd_send_uuids`).
pub mod uuid_flags {
    /// The sender was told `--discard-my-data`.
    pub const DISCARD_MY_DATA: u64 = 1;
    /// The sender is a crashed Primary (`MDF_CRASHED_PRIMARY` at attach).
    pub const CRASHED_PRIMARY: u64 = 2;
    /// The sender's disk will be Inconsistent after the handshake.
    pub const INCONSISTENT: u64 = 4;
    /// `new-current-uuid --clear-bitmap`: skip the initial sync.
    pub const SKIP_INITIAL_SYNC: u64 = 8;
}

/// One node's side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// Generation UUIDs as stored (bit 0 of `current` may be set).
    pub uuids: Uuids,
    /// `MDF_CRASHED_PRIMARY` (local) or [`uuid_flags::CRASHED_PRIMARY`] (peer).
    pub crashed_primary: bool,
    /// The node's role now (rule 41 asks whether a Primary is present).
    pub role: Role,
}

/// What the two nodes agreed on at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The agreed protocol version (`agreed_pro_version`).
    pub pro_version: u32,
    /// The agreed feature flags (`agreed_features`); only [`FF_WSAME`] matters here.
    pub features: u32,
    /// DRBD's `RESOLVE_CONFLICTS`: set on exactly one of the two nodes (the one that
    /// accepted the peer's meta socket), it breaks ties.
    pub resolve_conflicts: bool,
}

impl Link {
    /// A link between two nodes that speak everything DRBD 8.4 knows (what two urbd nodes
    /// always agree on).
    pub const fn current(resolve_conflicts: bool) -> Link {
        Link {
            pro_version: PRO_VERSION_MAX,
            features: FF_WSAME,
            resolve_conflicts,
        }
    }

    /// The same link seen from the peer (`resolve_conflicts` flipped).
    pub fn peer_view(self) -> Link {
        Link {
            resolve_conflicts: !self.resolve_conflicts,
            ..self
        }
    }
}

/// The verdict of [`uuid_compare`]. The comments give DRBD's integer (`hg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 0: the data is the same.
    NoSync,
    /// 1: this node is SyncSource of the blocks its bitmap marks.
    SyncSourceBitmap,
    /// -1: this node is SyncTarget of the blocks the peer's bitmap marks.
    SyncTargetBitmap,
    /// 2: this node is SyncSource of every block.
    SyncSourceFull,
    /// -2: this node is SyncTarget of every block.
    SyncTargetFull,
    /// 1 by rule 40 or 41: current UUIDs are equal and a Primary crashed; this node is
    /// SyncSource of the crashed Primary's activity-log extents (already in its bitmap).
    SyncSourceAfterCrash,
    /// -1 by rule 40 or 41: the mirror of [`Decision::SyncSourceAfterCrash`].
    SyncTargetAfterCrash,
    /// 100 (`auto_recover`: both bitmap UUIDs are the same, so the after-sb policies may
    /// pick a victim) or -100 (only the history is shared: disconnect unless
    /// `always-asbp` or `--discard-my-data` says otherwise).
    SplitBrain {
        /// True for 100, false for -100.
        auto_recover: bool,
    },
    /// -1000: no UUID in common. DRBD: "Unrelated data, aborting!".
    Unrelated,
    /// -1091 (`features == 0`) or -(0x10000 | version | features << 8) (rule 41): both
    /// sides must speak at least this protocol version and these feature flags.
    NeedNewerProtocol {
        /// The protocol version required.
        version: u32,
        /// The feature flags required.
        features: u32,
    },
}

impl Decision {
    /// DRBD's integer for this verdict, as `uuid_compare()=N` logs it.
    pub fn hg(self) -> i32 {
        match self {
            Decision::NoSync => 0,
            Decision::SyncSourceBitmap | Decision::SyncSourceAfterCrash => 1,
            Decision::SyncTargetBitmap | Decision::SyncTargetAfterCrash => -1,
            Decision::SyncSourceFull => 2,
            Decision::SyncTargetFull => -2,
            Decision::SplitBrain { auto_recover: true } => 100,
            Decision::SplitBrain {
                auto_recover: false,
            } => -100,
            Decision::Unrelated => -1000,
            Decision::NeedNewerProtocol {
                version,
                features: 0,
            } => -1000 - version as i32,
            Decision::NeedNewerProtocol { version, features } => {
                -((0x10000 | version | (features << 8)) as i32)
            }
        }
    }

    /// The verdict the peer reaches from the same facts: source and target swapped.
    pub fn mirror(self) -> Decision {
        match self {
            Decision::SyncSourceBitmap => Decision::SyncTargetBitmap,
            Decision::SyncTargetBitmap => Decision::SyncSourceBitmap,
            Decision::SyncSourceFull => Decision::SyncTargetFull,
            Decision::SyncTargetFull => Decision::SyncSourceFull,
            Decision::SyncSourceAfterCrash => Decision::SyncTargetAfterCrash,
            Decision::SyncTargetAfterCrash => Decision::SyncSourceAfterCrash,
            other => other,
        }
    }
}

/// The result of [`uuid_compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    /// The verdict.
    pub decision: Decision,
    /// DRBD's `rule_nr`: the last rule reached (10, 20, 30, 34-37, 40, 41, 50, 51, 60, 70,
    /// 71, 80, 90, 100).
    pub rule: u32,
    /// Repaired local UUIDs (rules 34 and 71) to write to the metadata before going on.
    pub local_repair: Option<Uuids>,
    /// Repaired copy of the peer's UUIDs (rules 35 and 51); the peer repairs its own
    /// metadata by the mirror rule.
    pub peer_repair: Option<Uuids>,
}

impl fmt::Display for Comparison {
    /// DRBD's log line: `uuid_compare()=N by rule R`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uuid_compare()={} by rule {}",
            self.decision.hg(),
            self.rule
        )
    }
}

const fn m(uuid: u64) -> u64 {
    uuid & !1
}

/// DRBD 8.4's `drbd_uuid_compare`, rule for rule.
///
/// `local` is this node (`device->ldev->md.uuid`, `CRASHED_PRIMARY`, `state.role`), `peer`
/// what the peer sent in P_UUIDS and P_STATE.
pub fn uuid_compare(local: &Side, peer: &Side, link: &Link) -> Comparison {
    let mut c = Comparison {
        decision: Decision::NoSync,
        rule: 0,
        local_repair: None,
        peer_repair: None,
    };
    c.decision = compare(local, peer, link, &mut c);
    c
}

fn need(version: u32, features: u32) -> Decision {
    Decision::NeedNewerProtocol { version, features }
}

fn compare(local: &Side, peer: &Side, link: &Link, c: &mut Comparison) -> Decision {
    let (l, p) = (&local.uuids, &peer.uuids);
    let self_cur = m(l.current);
    let peer_cur = m(p.current);

    c.rule = 10;
    if self_cur == UUID_JUST_CREATED && peer_cur == UUID_JUST_CREATED {
        return Decision::NoSync;
    }
    c.rule = 20;
    if (self_cur == UUID_JUST_CREATED || self_cur == 0) && peer_cur != UUID_JUST_CREATED {
        return Decision::SyncTargetFull;
    }
    c.rule = 30;
    if self_cur != UUID_JUST_CREATED && (peer_cur == UUID_JUST_CREATED || peer_cur == 0) {
        return Decision::SyncSourceFull;
    }

    if self_cur == peer_cur {
        // Bitmap UUIDs are compared raw against 0 here, as DRBD does.
        if p.bitmap == 0 && l.bitmap != 0 {
            if link.pro_version < PRO_VERSION_UUID_REPAIR {
                return need(PRO_VERSION_UUID_REPAIR, 0);
            }
            if m(l.bitmap) == m(p.history[0]) && m(l.history[0]) == m(p.history[1]) {
                // "was SyncSource, missed the resync finished event, corrected myself"
                let mut fixed = *l;
                fixed.history[1] = fixed.history[0];
                fixed.history[0] = fixed.bitmap;
                fixed.bitmap = 0;
                c.local_repair = Some(fixed);
                c.rule = 34;
            } else {
                // "was SyncSource (peer failed to write sync_uuid)"
                c.rule = 36;
            }
            return Decision::SyncSourceBitmap;
        }
        if l.bitmap == 0 && p.bitmap != 0 {
            if link.pro_version < PRO_VERSION_UUID_REPAIR {
                return need(PRO_VERSION_UUID_REPAIR, 0);
            }
            if m(l.history[0]) == m(p.bitmap) && m(l.history[1]) == m(p.history[0]) {
                // "was SyncTarget, peer missed the resync finished event, corrected peer"
                let mut fixed = *p;
                fixed.history[1] = fixed.history[0];
                fixed.history[0] = fixed.bitmap;
                fixed.bitmap = 0;
                c.peer_repair = Some(fixed);
                c.rule = 35;
            } else {
                // "was SyncTarget (failed to write sync_uuid)"
                c.rule = 37;
            }
            return Decision::SyncTargetBitmap;
        }

        // Common power failure: bit 0 is "I crashed as Primary", bit 1 "the peer did".
        let rct = u8::from(local.crashed_primary) | (u8::from(peer.crashed_primary) << 1);
        c.rule = 40;
        if rct == 0 {
            // Neither crashed as Primary: only the link hiccuped.
            return Decision::NoSync;
        }
        let self_pri = local.role == Role::Primary;
        let peer_pri = peer.role == Role::Primary;
        if self_pri || peer_pri {
            // Equal, unrotated UUIDs with a Primary present (I/O may have been frozen).
            c.rule = 41;
            if link.features & FF_WSAME == 0 {
                // "Equivalent unrotated UUIDs, but current primary present."
                return need(PRO_VERSION_MAX, FF_WSAME);
            }
            if self_pri && peer_pri {
                // "Equivalent unrotated UUIDs, but both are primary. Can not resolve this."
                return Decision::SplitBrain {
                    auto_recover: false,
                };
            }
            return if self_pri {
                Decision::SyncSourceAfterCrash
            } else {
                Decision::SyncTargetAfterCrash
            };
        }
        // Both Secondary: a simultaneous hard crash; whoever was Primary is the source.
        return match rct {
            1 => Decision::SyncSourceAfterCrash,
            2 => Decision::SyncTargetAfterCrash,
            _ if link.resolve_conflicts => Decision::SyncTargetAfterCrash,
            _ => Decision::SyncSourceAfterCrash,
        };
    }

    c.rule = 50;
    if self_cur == m(p.bitmap) {
        return Decision::SyncTargetBitmap;
    }

    c.rule = 51;
    let peer_h0 = m(p.history[0]);
    if self_cur == peer_h0 {
        let lost_sync_uuid = if link.pro_version < PRO_VERSION_NEW_BM_OFFSET {
            m(l.history[0]) == m(p.history[1])
        } else {
            peer_h0.wrapping_add(UUID_NEW_BM_OFFSET) == m(p.bitmap)
        };
        if lost_sync_uuid {
            // "Lost last syncUUID packet, corrected": undo the peer's start of resync.
            if link.pro_version < PRO_VERSION_UUID_REPAIR {
                return need(PRO_VERSION_UUID_REPAIR, 0);
            }
            let mut fixed = *p;
            fixed.bitmap = fixed.history[0];
            fixed.history[0] = fixed.history[1];
            c.peer_repair = Some(fixed);
            return Decision::SyncTargetBitmap;
        }
    }

    c.rule = 60;
    if p.history.iter().any(|&h| m(h) == self_cur) {
        return Decision::SyncTargetFull;
    }

    c.rule = 70;
    if m(l.bitmap) == peer_cur {
        return Decision::SyncSourceBitmap;
    }

    c.rule = 71;
    let self_h0 = m(l.history[0]);
    if self_h0 == peer_cur {
        let lost_sync_uuid = if link.pro_version < PRO_VERSION_NEW_BM_OFFSET {
            m(l.history[1]) == m(p.history[0])
        } else {
            self_h0.wrapping_add(UUID_NEW_BM_OFFSET) == m(l.bitmap)
        };
        if lost_sync_uuid {
            // "Last syncUUID did not get through, corrected": undo our start of resync.
            if link.pro_version < PRO_VERSION_UUID_REPAIR {
                return need(PRO_VERSION_UUID_REPAIR, 0);
            }
            let mut fixed = *l;
            fixed.bitmap = fixed.history[0];
            fixed.history[0] = fixed.history[1];
            c.local_repair = Some(fixed);
            return Decision::SyncSourceBitmap;
        }
    }

    c.rule = 80;
    if l.history.iter().any(|&h| m(h) == peer_cur) {
        return Decision::SyncSourceFull;
    }

    c.rule = 90;
    if m(l.bitmap) == m(p.bitmap) && m(l.bitmap) != 0 {
        return Decision::SplitBrain { auto_recover: true };
    }

    c.rule = 100;
    if l.history
        .iter()
        .any(|&s| p.history.iter().any(|&q| m(s) == m(q)))
    {
        return Decision::SplitBrain {
            auto_recover: false,
        };
    }

    Decision::Unrelated
}

/// An after-split-brain policy (`enum drbd_after_sb_p`, DRBD's numbering), and
/// `rr-conflict` (which uses three of the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AfterSb {
    /// `disconnect`.
    Disconnect = 0,
    /// `discard-younger-primary`.
    DiscardYoungerPrimary = 1,
    /// `discard-older-primary`.
    DiscardOlderPrimary = 2,
    /// `discard-zero-changes`.
    DiscardZeroChanges = 3,
    /// `discard-least-changes`.
    DiscardLeastChanges = 4,
    /// `discard-local`.
    DiscardLocal = 5,
    /// `discard-remote`.
    DiscardRemote = 6,
    /// `consensus`.
    Consensus = 7,
    /// `discard-secondary`.
    DiscardSecondary = 8,
    /// `call-pri-lost-after-sb` (`call-pri-lost` for rr-conflict).
    CallHelper = 9,
    /// `violently-as0p` (`violently` for rr-conflict).
    Violently = 10,
}

impl AfterSb {
    /// The policy with DRBD's number `code`, if there is one.
    pub fn from_code(code: u32) -> Option<AfterSb> {
        use AfterSb::*;
        [
            Disconnect,
            DiscardYoungerPrimary,
            DiscardOlderPrimary,
            DiscardZeroChanges,
            DiscardLeastChanges,
            DiscardLocal,
            DiscardRemote,
            Consensus,
            DiscardSecondary,
            CallHelper,
            Violently,
        ]
        .get(code as usize)
        .copied()
    }
}

/// The `net` options the handshake consults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policies {
    /// `after-sb-0pri`.
    pub after_sb_0p: AfterSb,
    /// `after-sb-1pri`.
    pub after_sb_1p: AfterSb,
    /// `after-sb-2pri`.
    pub after_sb_2p: AfterSb,
    /// `always-asbp`: apply the policies to -100 as well (then always a full sync).
    pub always_asbp: bool,
    /// `rr-conflict`: what a Primary does when it should become SyncTarget.
    pub rr_conflict: AfterSb,
}

impl Default for Policies {
    /// DRBD's defaults: disconnect everywhere.
    fn default() -> Policies {
        Policies {
            after_sb_0p: AfterSb::Disconnect,
            after_sb_1p: AfterSb::Disconnect,
            after_sb_2p: AfterSb::Disconnect,
            always_asbp: false,
            rr_conflict: AfterSb::Disconnect,
        }
    }
}

/// Everything [`sync_handshake`] looks at besides the UUIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeInput {
    /// This node.
    pub local: Side,
    /// The peer (P_UUIDS, P_STATE).
    pub peer: Side,
    /// What was agreed at connect time.
    pub link: Link,
    /// This node's disk state now (`device->state.disk`).
    pub local_disk: DiskState,
    /// The disk state this node will have after the handshake (`new_state_tmp.disk`),
    /// used in place of `local_disk` when that is Negotiating.
    pub local_disk_after: DiskState,
    /// The peer's disk state (P_STATE).
    pub peer_disk: DiskState,
    /// Bits set in this node's bitmap when it sent its UUIDs (`comm_bm_set`).
    pub local_changes: u64,
    /// Bits set in the peer's bitmap (the P_UUIDS bitmap-bits field).
    pub peer_changes: u64,
    /// This node was told `--discard-my-data` (DRBD's one-shot `DISCARD_MY_DATA`).
    pub local_discard_my_data: bool,
    /// The peer was ([`uuid_flags::DISCARD_MY_DATA`]).
    pub peer_discard_my_data: bool,
    /// The `net` options.
    pub policies: Policies,
}

/// Where the handshake leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// No resync: Connected.
    Connected,
    /// WFBitMapS then SyncSource; `full`: set every bitmap bit first.
    SyncSource {
        /// Full sync.
        full: bool,
    },
    /// WFBitMapT then SyncTarget; `full`: set every bitmap bit first.
    SyncTarget {
        /// Full sync.
        full: bool,
    },
    /// Drop the connection (DRBD returns `C_MASK`).
    Refuse(HandshakeRefusal),
}

/// Why [`sync_handshake`] drops the connection, with DRBD's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    /// "Unrelated data, aborting!"
    Unrelated,
    /// "To resolve this both sides have to support at least protocol N [and feature flags]".
    NeedNewerProtocol {
        /// Protocol version.
        version: u32,
        /// Feature flags (0: none needed).
        features: u32,
    },
    /// "Split-Brain detected but unresolved, dropping connection!"
    SplitBrain,
    /// "I shall become SyncSource, but I am inconsistent!"
    SourceInconsistent,
    /// "I shall become SyncTarget, but I am primary!" (`rr-conflict disconnect` or
    /// `call-pri-lost`).
    TargetIsPrimary,
}

impl fmt::Display for HandshakeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HandshakeRefusal::Unrelated => f.write_str("Unrelated data, aborting!"),
            HandshakeRefusal::NeedNewerProtocol {
                version,
                features: 0,
            } => write!(
                f,
                "To resolve this both sides have to support at least protocol {version}"
            ),
            HandshakeRefusal::NeedNewerProtocol { version, features } => write!(
                f,
                "To resolve this both sides have to support at least protocol {version} and \
                 feature flags {features:#x}"
            ),
            HandshakeRefusal::SplitBrain => {
                f.write_str("Split-Brain detected but unresolved, dropping connection!")
            }
            HandshakeRefusal::SourceInconsistent => {
                f.write_str("I shall become SyncSource, but I am inconsistent!")
            }
            HandshakeRefusal::TargetIsPrimary => {
                f.write_str("I shall become SyncTarget, but I am primary!")
            }
        }
    }
}

/// How a split brain was settled, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitBrainResolution {
    /// "Split-Brain detected, N primaries, automatically solved. Sync from this/peer node".
    Automatic {
        /// Primaries at the time (0, 1 or 2): which after-sb policy applied.
        primaries: u8,
    },
    /// "Split-Brain detected, manually solved" (`--discard-my-data` on one side).
    Manual,
}

/// The result of [`sync_handshake`], with what DRBD logs and the helpers it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeDecision {
    /// The UUID comparison it started from.
    pub comparison: Comparison,
    /// Where to go.
    pub outcome: Handshake,
    /// Set when a split brain was detected and resolved.
    pub split_brain: Option<SplitBrainResolution>,
    /// "Becoming sync source/target due to disk states."
    pub by_disk_states: bool,
    /// A policy chose this Primary as the victim (`call-pri-lost-after-sb`), or
    /// `rr-conflict violently` let a Primary become SyncTarget: the caller must demote to
    /// Secondary first and, if it cannot, call the `pri-lost-after-sb` handler and drop the
    /// connection.
    pub demote_first: bool,
    /// Call the `initial-split-brain` handler (`|uuid_compare| == 100`).
    pub call_initial_split_brain: bool,
    /// Call the `split-brain` handler (unresolved).
    pub call_split_brain: bool,
    /// Call the `pri-lost` handler (`rr-conflict call-pri-lost`).
    pub call_pri_lost: bool,
}

impl HandshakeDecision {
    /// Connected without a resync, no split brain, no handler, from `comparison`.
    pub fn connected(comparison: Comparison) -> HandshakeDecision {
        HandshakeDecision {
            comparison,
            outcome: Handshake::Connected,
            split_brain: None,
            by_disk_states: false,
            demote_first: false,
            call_initial_split_brain: false,
            call_split_brain: false,
            call_pri_lost: false,
        }
    }
}

/// DRBD 8.4's `drbd_sync_handshake` (without dry-run): compare UUIDs, then let disk states,
/// the after-sb policies and `--discard-my-data` settle direction and split brain.
pub fn sync_handshake(input: &HandshakeInput) -> HandshakeDecision {
    let comparison = uuid_compare(&input.local, &input.peer, &input.link);
    let mut d = HandshakeDecision::connected(comparison);
    let refuse = |mut d: HandshakeDecision, why| {
        d.outcome = Handshake::Refuse(why);
        d
    };
    let mydisk = if input.local_disk == DiskState::Negotiating {
        input.local_disk_after
    } else {
        input.local_disk
    };
    let mut hg = match comparison.decision {
        Decision::Unrelated => return refuse(d, HandshakeRefusal::Unrelated),
        Decision::NeedNewerProtocol { version, features } => {
            return refuse(d, HandshakeRefusal::NeedNewerProtocol { version, features });
        }
        other => other.hg(),
    };

    let peer_disk = input.peer_disk;
    if (mydisk == DiskState::Inconsistent && peer_disk > DiskState::Inconsistent)
        || (peer_disk == DiskState::Inconsistent && mydisk > DiskState::Inconsistent)
    {
        let full = hg == -100 || hg.abs() == 2;
        hg = if mydisk > DiskState::Inconsistent {
            1
        } else {
            -1
        };
        if full {
            hg *= 2;
        }
        d.by_disk_states = true;
    }

    if hg.abs() == 100 {
        d.call_initial_split_brain = true;
    }

    if hg == 100 || (hg == -100 && input.policies.always_asbp) {
        let primaries = u8::from(input.local.role == Role::Primary)
            + u8::from(input.peer.role == Role::Primary);
        let forced = hg == -100;
        let (h, demote) = match primaries {
            0 => (recover_0p(input, input.policies.after_sb_0p), false),
            1 => recover_1p(input),
            _ => recover_2p(input),
        };
        hg = h;
        if hg.abs() < 100 {
            d.demote_first = demote;
            d.split_brain = Some(SplitBrainResolution::Automatic { primaries });
            if forced {
                // "Doing a full sync, since UUIDs where ambiguous."
                hg *= 2;
            }
        }
    }

    if hg == -100 {
        if input.local_discard_my_data && !input.peer_discard_my_data {
            hg = -1;
        }
        if !input.local_discard_my_data && input.peer_discard_my_data {
            hg = 1;
        }
        if hg.abs() < 100 {
            d.split_brain = Some(SplitBrainResolution::Manual);
        }
    }

    if hg == -100 {
        d.call_split_brain = true;
        return refuse(d, HandshakeRefusal::SplitBrain);
    }

    if hg > 0 && mydisk <= DiskState::Inconsistent {
        return refuse(d, HandshakeRefusal::SourceInconsistent);
    }

    if hg < 0 && input.local.role == Role::Primary && input.local_disk >= DiskState::Consistent {
        match input.policies.rr_conflict {
            AfterSb::CallHelper => {
                d.call_pri_lost = true;
                return refuse(d, HandshakeRefusal::TargetIsPrimary);
            }
            AfterSb::Violently => {
                // "Becoming SyncTarget, violating the stable-data assumption"
            }
            _ => return refuse(d, HandshakeRefusal::TargetIsPrimary),
        }
    }

    d.outcome = match hg {
        0 => Handshake::Connected,
        h if h > 0 => Handshake::SyncSource { full: h >= 2 },
        h => Handshake::SyncTarget { full: h <= -2 },
    };
    d
}

/// `drbd_asb_recover_0p`: 1 = this node is the source, -1 = the peer is, -100 = no decision.
fn recover_0p(input: &HandshakeInput, policy: AfterSb) -> i32 {
    // Bit 0 of the bitmap UUID: this node was Primary when its current UUID was rotated
    // (the older Primary); the one that was promoted afterwards has it clear.
    let me = input.local.uuids.bitmap & 1;
    let peer = input.peer.uuids.bitmap & 1;
    let (ch_self, ch_peer) = (input.local_changes, input.peer_changes);
    let tie = if input.link.resolve_conflicts { -1 } else { 1 };
    let least_changes = || match ch_self.cmp(&ch_peer) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Greater => 1,
        std::cmp::Ordering::Equal => tie,
    };
    let zero_changes = || {
        if ch_peer == 0 && ch_self == 0 {
            Some(tie)
        } else if ch_peer == 0 {
            Some(1)
        } else if ch_self == 0 {
            Some(-1)
        } else {
            None
        }
    };
    // Younger/older primary fall through to zero changes, then to least changes.
    let younger = match (me, peer) {
        (0, 1) => Some(-1),
        (1, 0) => Some(1),
        _ => None,
    };
    match policy {
        AfterSb::DiscardYoungerPrimary => {
            younger.or_else(zero_changes).unwrap_or_else(least_changes)
        }
        AfterSb::DiscardOlderPrimary => younger
            .map(|v| -v)
            .or_else(zero_changes)
            .unwrap_or_else(least_changes),
        AfterSb::DiscardZeroChanges => zero_changes().unwrap_or(-100),
        AfterSb::DiscardLeastChanges => least_changes(),
        AfterSb::DiscardLocal => -1,
        AfterSb::DiscardRemote => 1,
        // Disconnect, and the values that are configuration errors for after-sb-0pri.
        _ => -100,
    }
}

/// `drbd_asb_recover_1p`: (verdict, demote this Primary first).
fn recover_1p(input: &HandshakeInput) -> (i32, bool) {
    let role = input.local.role;
    match input.policies.after_sb_1p {
        AfterSb::Consensus => {
            let hg = recover_0p(input, input.policies.after_sb_0p);
            let agrees =
                (hg == -1 && role == Role::Secondary) || (hg == 1 && role == Role::Primary);
            (if agrees { hg } else { -100 }, false)
        }
        AfterSb::Violently => (recover_0p(input, input.policies.after_sb_0p), false),
        AfterSb::DiscardSecondary => (if role == Role::Primary { 1 } else { -1 }, false),
        AfterSb::CallHelper => {
            let hg = recover_0p(input, input.policies.after_sb_0p);
            (hg, hg == -1 && role == Role::Primary)
        }
        _ => (-100, false),
    }
}

/// `drbd_asb_recover_2p`: (verdict, demote this Primary first).
fn recover_2p(input: &HandshakeInput) -> (i32, bool) {
    match input.policies.after_sb_2p {
        AfterSb::Violently => (recover_0p(input, input.policies.after_sb_0p), false),
        AfterSb::CallHelper => {
            let hg = recover_0p(input, input.policies.after_sb_0p);
            (hg, hg == -1)
        }
        _ => (-100, false),
    }
}

#[cfg(test)]
mod tests {
    //! One row per rule of `drbd_uuid_compare` (drbd-8.4 `drbd/drbd_receiver.c`), the
    //! handshake's resolution steps (`drbd_sync_handshake`, `drbd_asb_recover_*p`), the
    //! seed's three scenarios, and the mirror property.

    use super::*;
    use proptest::prelude::*;

    const JC: u64 = UUID_JUST_CREATED;
    const A: u64 = 0xAAAA_0000_0000_0010;
    const B: u64 = 0xBBBB_0000_0000_0020;
    const C: u64 = 0xCCCC_0000_0000_0030;
    const D: u64 = 0xDDDD_0000_0000_0040;
    const E: u64 = 0xEEEE_0000_0000_0050;
    const F: u64 = 0xFFFF_0000_0000_0060;
    const G: u64 = 0x1111_0000_0000_0070;
    const OFF: u64 = UUID_NEW_BM_OFFSET;

    fn u(current: u64, bitmap: u64, h0: u64, h1: u64) -> Uuids {
        Uuids {
            current,
            bitmap,
            history: [h0, h1],
        }
    }

    fn sec(uuids: Uuids) -> Side {
        Side {
            uuids,
            crashed_primary: false,
            role: Role::Secondary,
        }
    }

    fn crashed(uuids: Uuids, role: Role) -> Side {
        Side {
            uuids,
            crashed_primary: true,
            role,
        }
    }

    fn with_role(mut s: Side, role: Role) -> Side {
        s.role = role;
        s
    }

    const LINK: Link = Link::current(false);
    const LINK_RC: Link = Link::current(true);
    const OLD_90: Link = Link {
        pro_version: 90,
        features: 0,
        resolve_conflicts: false,
    };
    const OLD_95: Link = Link {
        pro_version: 95,
        features: 0,
        resolve_conflicts: false,
    };

    struct Row {
        why: &'static str,
        local: Side,
        peer: Side,
        link: Link,
        hg: i32,
        rule: u32,
    }

    fn rows() -> Vec<Row> {
        let r = |why, local, peer, link, hg, rule| Row {
            why,
            local,
            peer,
            link,
            hg,
            rule,
        };
        let s = |c, b, h0, h1| sec(u(c, b, h0, h1));
        vec![
            // Rule 10: both just created.
            r(
                "10 both created",
                s(JC, 0, 0, 0),
                s(JC, 0, 0, 0),
                LINK,
                0,
                10,
            ),
            r(
                "10 bit 0 masked",
                s(JC | 1, 0, 0, 0),
                s(JC, 0, 0, 0),
                LINK,
                0,
                10,
            ),
            // Rule 20: I am just created (or all zero), the peer has data.
            r(
                "20 created vs data",
                s(JC, 0, 0, 0),
                s(A, JC, 0, 0),
                LINK,
                -2,
                20,
            ),
            r(
                "20 zero vs data",
                s(0, 0, 0, 0),
                s(A, 0, 0, 0),
                LINK,
                -2,
                20,
            ),
            r(
                "20 zero vs zero",
                s(0, 0, 0, 0),
                s(0, 0, 0, 0),
                LINK,
                -2,
                20,
            ),
            // Rule 30: the peer is just created (or all zero).
            r(
                "30 data vs created",
                s(A | 1, JC, 0, 0),
                s(JC, 0, 0, 0),
                LINK,
                2,
                30,
            ),
            r("30 data vs zero", s(A, 0, 0, 0), s(0, 0, 0, 0), LINK, 2, 30),
            r(
                "30 zero vs created",
                s(0, 0, 0, 0),
                s(JC, 0, 0, 0),
                LINK,
                2,
                30,
            ),
            // Rules 34/36: equal currents, only I have a bitmap UUID.
            r(
                "34 missed resync-finished",
                s(A, B, C, D),
                s(A, 0, B, C),
                LINK,
                1,
                34,
            ),
            r(
                "36 peer lost sync uuid",
                s(A, B, C, D),
                s(A, 0, E, F),
                LINK,
                1,
                36,
            ),
            r(
                "30 (36) needs proto 91",
                s(A, B, C, D),
                s(A, 0, E, F),
                OLD_90,
                -1091,
                30,
            ),
            // Rules 35/37: equal currents, only the peer has a bitmap UUID.
            r(
                "35 peer missed resync-finished",
                s(A, 0, B, C),
                s(A, B, C, D),
                LINK,
                -1,
                35,
            ),
            r(
                "37 lost sync uuid",
                s(A, 0, E, F),
                s(A, B, C, D),
                LINK,
                -1,
                37,
            ),
            r(
                "30 (37) needs proto 91",
                s(A, 0, E, F),
                s(A, B, C, D),
                OLD_90,
                -1091,
                30,
            ),
            // Rule 40: equal currents, no bitmap UUID: crashed Primaries decide.
            r(
                "40 link hiccup",
                s(A, 0, B, 0),
                s(A | 1, 0, B, 0),
                LINK,
                0,
                40,
            ),
            r(
                "40 both bitmaps equal",
                s(A, C, B, 0),
                s(A, C, B, 0),
                LINK,
                0,
                40,
            ),
            r(
                "40 I crashed as primary",
                crashed(u(A, 0, B, 0), Role::Secondary),
                s(A, 0, B, 0),
                LINK,
                1,
                40,
            ),
            r(
                "40 peer crashed as primary",
                s(A, 0, B, 0),
                crashed(u(A, 0, B, 0), Role::Secondary),
                LINK,
                -1,
                40,
            ),
            r(
                "40 both crashed, I resolve conflicts",
                crashed(u(A, 0, B, 0), Role::Secondary),
                crashed(u(A, 0, B, 0), Role::Secondary),
                LINK_RC,
                -1,
                40,
            ),
            r(
                "40 both crashed, peer resolves conflicts",
                crashed(u(A, 0, B, 0), Role::Secondary),
                crashed(u(A, 0, B, 0), Role::Secondary),
                LINK,
                1,
                40,
            ),
            // Rule 41: equal unrotated UUIDs, a crash flag, and a Primary present.
            r(
                "41 I am primary",
                crashed(u(A | 1, 0, B, 0), Role::Primary),
                s(A, 0, B, 0),
                LINK,
                1,
                41,
            ),
            r(
                "41 peer is primary",
                crashed(u(A, 0, B, 0), Role::Secondary),
                with_role(s(A | 1, 0, B, 0), Role::Primary),
                LINK,
                -1,
                41,
            ),
            r(
                "41 both primary",
                crashed(u(A | 1, 0, B, 0), Role::Primary),
                with_role(s(A | 1, 0, B, 0), Role::Primary),
                LINK,
                -100,
                41,
            ),
            r(
                "41 peer without FF_WSAME",
                crashed(u(A | 1, 0, B, 0), Role::Primary),
                s(A, 0, B, 0),
                OLD_95,
                -(0x10000 | 101 | (4 << 8)),
                41,
            ),
            // Rule 50: my current is the peer's bitmap UUID: the peer moved on.
            r(
                "50 peer is ahead",
                s(A, 0, C, 0),
                s(B | 1, A | 1, C, 0),
                LINK,
                -1,
                50,
            ),
            // Rule 51: my current is the peer's history[0]: a lost P_SYNC_UUID.
            r(
                "51 peer started resync (offset)",
                s(A, 0, C, 0),
                s(B, A + OFF, A, C),
                LINK,
                -1,
                51,
            ),
            r(
                "51 peer started resync (proto < 96)",
                s(A, 0, C, 0),
                s(B, E, A, C),
                OLD_95,
                -1,
                51,
            ),
            r(
                "51 needs proto 91",
                s(A, 0, C, 0),
                s(B, E, A, C),
                OLD_90,
                -1091,
                51,
            ),
            // Rule 60: my current is in the peer's history: full sync from the peer.
            r(
                "60 via history[1]",
                s(A, 0, 0, 0),
                s(B, 0, C, A),
                LINK,
                -2,
                60,
            ),
            r(
                "60 after a 51 miss",
                s(A, 0, 0, 0),
                s(B, E, A, C),
                LINK,
                -2,
                60,
            ),
            // Rule 70: my bitmap UUID is the peer's current: I moved on.
            r(
                "70 I am ahead",
                s(B | 1, A | 1, C, 0),
                s(A, 0, C, 0),
                LINK,
                1,
                70,
            ),
            // Rule 71: the peer's current is my history[0]: my P_SYNC_UUID was lost.
            r(
                "71 I started resync (offset)",
                s(B, A + OFF, A, C),
                s(A, 0, C, 0),
                LINK,
                1,
                71,
            ),
            r(
                "71 I started resync (proto < 96)",
                s(B, E, A, C),
                s(A, 0, C, 0),
                OLD_95,
                1,
                71,
            ),
            r(
                "71 needs proto 91",
                s(B, E, A, C),
                s(A, 0, C, 0),
                OLD_90,
                -1091,
                71,
            ),
            // Rule 80: the peer's current is in my history: full sync from me.
            r(
                "80 via history[1]",
                s(B, 0, C, A),
                s(A, 0, 0, 0),
                LINK,
                2,
                80,
            ),
            // Rule 90: same bitmap UUID, different currents: split brain, policies apply.
            r(
                "90 split brain",
                s(B | 1, A | 1, C, 0),
                s(D, A, C, 0),
                LINK,
                100,
                90,
            ),
            // Rule 100: only a common history: split brain, disconnect.
            r(
                "100 common history",
                s(B, 0, A, C),
                s(D, 0, E, A),
                LINK,
                -100,
                100,
            ),
            r(
                "100 two empty history slots",
                s(B, 0, 0, 0),
                s(D, 0, 0, 0),
                LINK,
                -100,
                100,
            ),
            // Nothing in common.
            r(
                "-1000 unrelated",
                s(B, 0, C, D),
                s(E, 0, F, G),
                LINK,
                -1000,
                100,
            ),
        ]
    }

    #[test]
    fn every_rule_of_drbd_uuid_compare() {
        for row in rows() {
            let c = uuid_compare(&row.local, &row.peer, &row.link);
            assert_eq!(
                (c.decision.hg(), c.rule),
                (row.hg, row.rule),
                "{}: got {c}",
                row.why
            );
        }
    }

    /// Rules 34, 35, 51 and 71 repair UUIDs, as `drbd_uuid_move_history` and the
    /// `__drbd_uuid_set` calls next to them do.
    #[test]
    fn repairs() {
        let c = uuid_compare(&sec(u(A, B, C, D)), &sec(u(A, 0, B, C)), &LINK);
        assert_eq!(c.local_repair, Some(u(A, 0, B, C)));
        assert_eq!(c.peer_repair, None);
        let c = uuid_compare(&sec(u(A, 0, B, C)), &sec(u(A, B, C, D)), &LINK);
        assert_eq!(c.peer_repair, Some(u(A, 0, B, C)));
        assert_eq!(c.local_repair, None);
        let c = uuid_compare(&sec(u(A, 0, C, 0)), &sec(u(B, A + OFF, A, C)), &LINK);
        assert_eq!(c.peer_repair, Some(u(B, A, C, C)));
        let c = uuid_compare(&sec(u(B, A + OFF, A, C)), &sec(u(A, 0, C, 0)), &LINK);
        assert_eq!(c.local_repair, Some(u(B, A, C, C)));
        // 36/37 decide without repairing.
        let c = uuid_compare(&sec(u(A, B, C, D)), &sec(u(A, 0, E, F)), &LINK);
        assert_eq!((c.local_repair, c.peer_repair), (None, None));
    }

    #[test]
    fn log_line_matches_drbd() {
        let c = uuid_compare(&sec(u(A, JC, 0, 0)), &sec(u(JC, 0, 0, 0)), &LINK);
        assert_eq!(c.to_string(), "uuid_compare()=2 by rule 30");
        assert_eq!(c.decision, Decision::SyncSourceFull);
        let c = uuid_compare(&sec(u(B, 0, C, D)), &sec(u(E, 0, F, G)), &LINK);
        assert_eq!(c.to_string(), "uuid_compare()=-1000 by rule 100");
        assert_eq!(c.decision, Decision::Unrelated);
        assert_eq!(
            HandshakeRefusal::NeedNewerProtocol {
                version: 101,
                features: 4
            }
            .to_string(),
            "To resolve this both sides have to support at least protocol 101 and feature \
             flags 0x4"
        );
    }

    /// The UUID operations of `drbd_main.c` the scenarios need.
    #[derive(Debug, Clone, Copy)]
    struct Node {
        uuids: Uuids,
        role: Role,
        disk: DiskState,
        changes: u64,
    }

    impl Node {
        /// `create-md`.
        fn created() -> Node {
            Node {
                uuids: u(JC, 0, 0, 0),
                role: Role::Secondary,
                disk: DiskState::Inconsistent,
                changes: 0,
            }
        }

        /// `drbd_uuid_new_current`: the raw current (bit 0 included) goes to the bitmap slot.
        fn new_current(&mut self, random: u64) {
            self.uuids.bitmap = self.uuids.current;
            self.uuids.current = random | u64::from(self.role == Role::Primary);
        }

        /// `drbd_set_role(PRIMARY)`: new current when forced or when disconnected without a
        /// bitmap UUID, then bit 0 set.
        fn promote(&mut self, forced: bool, connected: bool, random: u64) {
            self.role = Role::Primary;
            if forced || (!connected && self.uuids.bitmap == 0) {
                // The current UUID still has bit 0 clear: it was written as Secondary.
                self.new_current(random);
            }
            self.uuids.current |= 1;
            if forced {
                self.disk = DiskState::UpToDate;
            }
        }

        /// A Primary losing its peer (`after_state_ch`: new current when no bitmap UUID).
        fn lose_peer(&mut self, random: u64) {
            if self.role == Role::Primary && self.uuids.bitmap == 0 {
                self.new_current(random);
            }
        }

        fn side(&self) -> Side {
            Side {
                uuids: self.uuids,
                crashed_primary: false,
                role: self.role,
            }
        }
    }

    fn handshake(me: &Node, peer: &Node, link: Link, policies: Policies) -> HandshakeDecision {
        sync_handshake(&HandshakeInput {
            local: me.side(),
            peer: peer.side(),
            link,
            local_disk: me.disk,
            local_disk_after: me.disk,
            peer_disk: peer.disk,
            local_changes: me.changes,
            peer_changes: peer.changes,
            local_discard_my_data: false,
            peer_discard_my_data: false,
            policies,
        })
    }

    /// Both directions of a handshake, each node seeing itself as local.
    fn both(a: &Node, b: &Node, policies: Policies) -> (HandshakeDecision, HandshakeDecision) {
        (
            handshake(a, b, LINK_RC, policies),
            handshake(b, a, LINK_RC.peer_view(), policies),
        )
    }

    /// A synced, connected pair with `a` Primary: what scenario 1 ends in once the full
    /// sync is done. The source's sync UUID (random `S`, since its bitmap UUID was
    /// `UUID_JUST_CREATED`) went to history when the resync finished
    /// (`drbd_resync_finished`: `drbd_uuid_set_bm(0)`), and the target copied the source's
    /// set.
    fn synced_pair() -> (Node, Node) {
        const S: u64 = 0x5555_0000_0000_0080;
        let mut a = Node::created();
        a.promote(true, false, A);
        a.uuids = u(A | 1, 0, S, JC);
        let mut b = a;
        b.role = Role::Secondary;
        b.uuids.current &= !1;
        (a, b)
    }

    /// Seed scenario 1: create-md on both, `primary --force` on one, connect: full sync
    /// from the forced node (rules 30 and 20).
    #[test]
    fn scenario_fresh_pair_forced_primary() {
        let mut a = Node::created();
        let b = Node::created();
        a.promote(true, false, A);
        assert_eq!(a.uuids, u(A | 1, JC, 0, 0));
        let (da, db) = both(&a, &b, Policies::default());
        assert_eq!(da.comparison.to_string(), "uuid_compare()=2 by rule 30");
        assert_eq!(db.comparison.to_string(), "uuid_compare()=-2 by rule 20");
        assert_eq!(da.outcome, Handshake::SyncSource { full: true });
        assert_eq!(db.outcome, Handshake::SyncTarget { full: true });
        assert!(da.by_disk_states && db.by_disk_states);
    }

    /// Seed scenario 2: disconnect, writes on the Primary only, reconnect: bitmap sync
    /// Primary -> Secondary (rules 70 and 50).
    #[test]
    fn scenario_primary_writes_while_disconnected() {
        let (mut a, b) = synced_pair();
        a.lose_peer(B);
        a.changes = 42;
        assert_eq!(a.uuids.current, B | 1);
        assert_eq!(a.uuids.bitmap, A | 1);
        let (da, db) = both(&a, &b, Policies::default());
        assert_eq!(da.comparison.to_string(), "uuid_compare()=1 by rule 70");
        assert_eq!(db.comparison.to_string(), "uuid_compare()=-1 by rule 50");
        assert_eq!(da.outcome, Handshake::SyncSource { full: false });
        assert_eq!(db.outcome, Handshake::SyncTarget { full: false });
    }

    /// Seed scenario 3: both wrote while disconnected (both rotated their current UUID):
    /// split brain by rule 90; with the default policies it stays unresolved until one side
    /// is told `--discard-my-data`, which then becomes SyncTarget of a bitmap sync.
    #[test]
    fn scenario_split_brain_and_discard_my_data() {
        let (mut a, mut b) = synced_pair();
        a.lose_peer(B);
        a.changes = 10;
        b.promote(false, false, C);
        b.changes = 3;
        assert_eq!((b.uuids.current, b.uuids.bitmap), (C | 1, A));
        let (da, db) = both(&a, &b, Policies::default());
        assert_eq!(da.comparison.to_string(), "uuid_compare()=100 by rule 90");
        assert_eq!(db.comparison.to_string(), "uuid_compare()=100 by rule 90");
        for d in [da, db] {
            assert_eq!(d.outcome, Handshake::Refuse(HandshakeRefusal::SplitBrain));
            assert!(d.call_initial_split_brain && d.call_split_brain);
        }
        // The seed's recovery: `secondary` + `connect --discard-my-data` on the victim (b).
        b.role = Role::Secondary;
        b.uuids.current &= !1;
        let mut inb = HandshakeInput {
            local: b.side(),
            peer: a.side(),
            link: LINK,
            local_disk: b.disk,
            local_disk_after: b.disk,
            peer_disk: a.disk,
            local_changes: b.changes,
            peer_changes: a.changes,
            local_discard_my_data: true,
            peer_discard_my_data: false,
            policies: Policies::default(),
        };
        let db = sync_handshake(&inb);
        assert_eq!(db.outcome, Handshake::SyncTarget { full: false });
        assert_eq!(db.split_brain, Some(SplitBrainResolution::Manual));
        std::mem::swap(&mut inb.local, &mut inb.peer);
        std::mem::swap(&mut inb.local_disk, &mut inb.peer_disk);
        inb.local_disk_after = inb.local_disk;
        std::mem::swap(&mut inb.local_changes, &mut inb.peer_changes);
        std::mem::swap(
            &mut inb.local_discard_my_data,
            &mut inb.peer_discard_my_data,
        );
        inb.link = inb.link.peer_view();
        let da = sync_handshake(&inb);
        assert_eq!(da.outcome, Handshake::SyncSource { full: false });
    }

    /// A split-brain pair (rule 90): `a` was Primary when it lost `b` (older Primary),
    /// `b` was promoted later (younger). Both Secondary again, both UpToDate.
    fn split_pair(a_changes: u64, b_changes: u64) -> (Node, Node) {
        let (mut a, mut b) = synced_pair();
        a.lose_peer(B);
        b.promote(false, false, C);
        for n in [&mut a, &mut b] {
            n.role = Role::Secondary;
            n.uuids.current &= !1;
        }
        a.changes = a_changes;
        b.changes = b_changes;
        (a, b)
    }

    fn policies_0p(p: AfterSb) -> Policies {
        Policies {
            after_sb_0p: p,
            ..Policies::default()
        }
    }

    /// `drbd_asb_recover_0p`, policy by policy, seen from `a` (the older Primary).
    #[test]
    fn after_sb_0pri() {
        use AfterSb::*;
        let src = Handshake::SyncSource { full: false };
        let tgt = Handshake::SyncTarget { full: false };
        let sb = Handshake::Refuse(HandshakeRefusal::SplitBrain);
        let cases: &[(AfterSb, u64, u64, bool, Handshake)] = &[
            (Disconnect, 1, 1, false, sb),
            (DiscardYoungerPrimary, 1, 5, false, src),
            (DiscardOlderPrimary, 5, 1, false, tgt),
            (DiscardZeroChanges, 0, 5, false, tgt),
            (DiscardZeroChanges, 5, 0, false, src),
            (DiscardZeroChanges, 5, 5, false, sb),
            // Both zero: the node with RESOLVE_CONFLICTS discards.
            (DiscardZeroChanges, 0, 0, true, tgt),
            (DiscardZeroChanges, 0, 0, false, src),
            (DiscardLeastChanges, 2, 5, false, tgt),
            (DiscardLeastChanges, 7, 5, false, src),
            (DiscardLeastChanges, 5, 5, true, tgt),
            (DiscardLocal, 9, 1, false, tgt),
            (DiscardRemote, 1, 9, false, src),
            // Not valid for after-sb-0pri: DRBD logs "Configuration error." and disconnects.
            (Consensus, 1, 9, false, sb),
            (DiscardSecondary, 1, 9, false, sb),
        ];
        for &(policy, ca, cb, rc, want) in cases {
            let (a, b) = split_pair(ca, cb);
            let link = Link::current(rc);
            let d = handshake(&a, &b, link, policies_0p(policy));
            assert_eq!(d.outcome, want, "{policy:?} changes {ca}/{cb} rc {rc}");
            if !matches!(want, Handshake::Refuse(_)) {
                assert_eq!(
                    d.split_brain,
                    Some(SplitBrainResolution::Automatic { primaries: 0 })
                );
                // The peer agrees.
                // The peer's configuration is the converted one (`convert_after_sb`:
                // discard-local there is discard-remote here).
                let peer_policy = match policy {
                    DiscardLocal => DiscardRemote,
                    DiscardRemote => DiscardLocal,
                    p => p,
                };
                let dp = handshake(&b, &a, link.peer_view(), policies_0p(peer_policy));
                let mirrored = match want {
                    Handshake::SyncSource { full } => Handshake::SyncTarget { full },
                    Handshake::SyncTarget { full } => Handshake::SyncSource { full },
                    other => other,
                };
                assert_eq!(dp.outcome, mirrored, "peer view of {policy:?}");
            }
        }
        // Younger/older primary without a decision (neither bitmap UUID has bit 0) fall
        // through to zero changes, then least changes.
        let (mut a, mut b) = split_pair(3, 5);
        a.uuids.bitmap &= !1;
        b.uuids.bitmap &= !1;
        let d = handshake(&a, &b, LINK, policies_0p(DiscardYoungerPrimary));
        assert_eq!(d.outcome, tgt);
        let d = handshake(&a, &b, LINK, policies_0p(DiscardOlderPrimary));
        assert_eq!(d.outcome, tgt);
    }

    /// `drbd_asb_recover_1p` and `_2p`.
    #[test]
    fn after_sb_1pri_and_2pri() {
        use AfterSb::*;
        let (mut a, b) = split_pair(5, 1);
        a.role = Role::Primary;
        let pol = |p1, p2| Policies {
            after_sb_0p: DiscardLeastChanges,
            after_sb_1p: p1,
            after_sb_2p: p2,
            ..Policies::default()
        };
        // discard-secondary: the Primary (a) wins.
        let d = handshake(&a, &b, LINK, pol(DiscardSecondary, Disconnect));
        assert_eq!(d.outcome, Handshake::SyncSource { full: false });
        assert_eq!(
            d.split_brain,
            Some(SplitBrainResolution::Automatic { primaries: 1 })
        );
        let d = handshake(&b, &a, LINK_RC, pol(DiscardSecondary, Disconnect));
        assert_eq!(d.outcome, Handshake::SyncTarget { full: false });
        // consensus: 0p (least changes: b loses) agrees with the roles (a is Primary).
        let d = handshake(&a, &b, LINK, pol(Consensus, Disconnect));
        assert_eq!(d.outcome, Handshake::SyncSource { full: false });
        // ... and disagrees when the Primary has fewer changes.
        let (mut a2, b2) = split_pair(1, 5);
        a2.role = Role::Primary;
        let d = handshake(&a2, &b2, LINK, pol(Consensus, Disconnect));
        assert_eq!(d.outcome, Handshake::Refuse(HandshakeRefusal::SplitBrain));
        // violently-as0p: 0p decides even against the Primary; rr-conflict then refuses.
        let d = handshake(&a2, &b2, LINK, pol(Violently, Disconnect));
        assert_eq!(
            d.outcome,
            Handshake::Refuse(HandshakeRefusal::TargetIsPrimary)
        );
        // call-pri-lost-after-sb: the losing Primary must demote first.
        let mut p = pol(CallHelper, Disconnect);
        p.rr_conflict = Violently;
        let d = handshake(&a2, &b2, LINK, p);
        assert_eq!(d.outcome, Handshake::SyncTarget { full: false });
        assert!(d.demote_first);
        // Two primaries: only violently-as0p and call-pri-lost-after-sb resolve.
        let mut b3 = b2;
        b3.role = Role::Primary;
        let d = handshake(&a2, &b3, LINK, pol(Disconnect, Disconnect));
        assert_eq!(d.outcome, Handshake::Refuse(HandshakeRefusal::SplitBrain));
        let d = handshake(&a2, &b3, LINK, pol(Disconnect, DiscardSecondary));
        assert_eq!(d.outcome, Handshake::Refuse(HandshakeRefusal::SplitBrain));
        let mut p = pol(Disconnect, CallHelper);
        p.rr_conflict = Violently;
        let d = handshake(&a2, &b3, LINK, p);
        assert_eq!(d.outcome, Handshake::SyncTarget { full: false });
        assert!(d.demote_first);
        let d = handshake(&b3, &a2, LINK_RC, pol(Disconnect, Violently));
        assert_eq!(d.outcome, Handshake::SyncSource { full: false });
        assert_eq!(
            d.split_brain,
            Some(SplitBrainResolution::Automatic { primaries: 2 })
        );
    }

    /// -100 (rule 100) goes to the policies only with `always-asbp`, and then fully.
    #[test]
    fn always_asbp_makes_a_full_sync() {
        let mut a = Node::created();
        a.disk = DiskState::UpToDate;
        a.uuids = u(B, 0, A, C);
        a.changes = 9;
        let mut b = a;
        b.uuids = u(D, 0, E, A);
        b.changes = 1;
        let p = Policies {
            after_sb_0p: AfterSb::DiscardLeastChanges,
            ..Policies::default()
        };
        let d = handshake(&a, &b, LINK, p);
        assert_eq!(d.outcome, Handshake::Refuse(HandshakeRefusal::SplitBrain));
        let p = Policies {
            always_asbp: true,
            ..p
        };
        let d = handshake(&a, &b, LINK, p);
        assert_eq!(d.outcome, Handshake::SyncSource { full: true });
        assert!(d.call_initial_split_brain);
    }

    /// The checks after the verdict: disk states override, an Inconsistent source and a
    /// Primary target are refused.
    #[test]
    fn disk_states_and_rr_conflict() {
        let (a, mut b) = synced_pair();
        // Equal UUIDs, but b's disk is Inconsistent: bitmap sync from a.
        b.disk = DiskState::Inconsistent;
        let (da, db) = both(&a, &b, Policies::default());
        assert_eq!(da.comparison.decision, Decision::NoSync);
        assert_eq!(da.outcome, Handshake::SyncSource { full: false });
        assert_eq!(db.outcome, Handshake::SyncTarget { full: false });
        // Negotiating counts as the state the disk will have.
        let mut inp = HandshakeInput {
            local: b.side(),
            peer: a.side(),
            link: LINK,
            local_disk: DiskState::Negotiating,
            local_disk_after: DiskState::Inconsistent,
            peer_disk: DiskState::UpToDate,
            local_changes: 0,
            peer_changes: 0,
            local_discard_my_data: false,
            peer_discard_my_data: false,
            policies: Policies::default(),
        };
        assert_eq!(
            sync_handshake(&inp).outcome,
            Handshake::SyncTarget { full: false }
        );
        // Source by UUIDs but Inconsistent on both sides.
        inp.local = sec(u(A, 0, 0, 0));
        inp.peer = sec(u(JC, 0, 0, 0));
        inp.peer_disk = DiskState::Inconsistent;
        assert_eq!(
            sync_handshake(&inp).outcome,
            Handshake::Refuse(HandshakeRefusal::SourceInconsistent)
        );
        // A consistent Primary told to become SyncTarget.
        // b moved on from a's current UUID (rule 50): a, a consistent Primary, must become
        // the target.
        let (a, mut b) = synced_pair();
        b.uuids.bitmap = b.uuids.current;
        b.uuids.current = B;
        for (rr, want, helper) in [
            (
                AfterSb::Disconnect,
                Handshake::Refuse(HandshakeRefusal::TargetIsPrimary),
                false,
            ),
            (
                AfterSb::CallHelper,
                Handshake::Refuse(HandshakeRefusal::TargetIsPrimary),
                true,
            ),
            (
                AfterSb::Violently,
                Handshake::SyncTarget { full: false },
                false,
            ),
        ] {
            let p = Policies {
                rr_conflict: rr,
                ..Policies::default()
            };
            let d = handshake(&a, &b, LINK, p);
            assert_eq!(d.outcome, want, "{rr:?}");
            assert_eq!(d.call_pri_lost, helper);
        }
    }

    #[test]
    fn refusals_carry_drbds_text() {
        let d = handshake(
            &Node {
                uuids: u(B, 0, C, D),
                ..Node::created()
            },
            &Node {
                uuids: u(E, 0, F, G),
                ..Node::created()
            },
            LINK,
            Policies::default(),
        );
        assert_eq!(d.outcome, Handshake::Refuse(HandshakeRefusal::Unrelated));
        assert_eq!(
            HandshakeRefusal::Unrelated.to_string(),
            "Unrelated data, aborting!"
        );
    }

    #[test]
    fn after_sb_codes_are_drbds() {
        assert_eq!(AfterSb::from_code(0), Some(AfterSb::Disconnect));
        assert_eq!(AfterSb::from_code(10), Some(AfterSb::Violently));
        assert_eq!(AfterSb::from_code(11), None);
        for code in 0..11 {
            assert_eq!(AfterSb::from_code(code).map(|p| p as u32), Some(code));
        }
    }

    /// A small pool, so that generated UUID sets collide often enough to reach every rule.
    fn pool_uuid() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(JC),
            Just(A),
            Just(A | 1),
            Just(B),
            Just(C),
            Just(D),
            Just(A + OFF),
            Just(B + OFF),
        ]
    }

    fn side_strategy() -> impl Strategy<Value = Side> {
        (
            [pool_uuid(), pool_uuid(), pool_uuid(), pool_uuid()],
            any::<bool>(),
            prop_oneof![Just(Role::Primary), Just(Role::Secondary)],
        )
            .prop_map(|([c, b, h0, h1], crashed_primary, role)| Side {
                uuids: u(c, b, h0, h1),
                crashed_primary,
                role,
            })
    }

    /// The rules DRBD pairs so that both nodes reach mirrored verdicts.
    fn mirror_rule(rule: u32) -> u32 {
        match rule {
            20 => 30,
            30 => 20,
            34 => 35,
            35 => 34,
            36 => 37,
            37 => 36,
            50 => 70,
            70 => 50,
            51 => 71,
            71 => 51,
            60 => 80,
            80 => 60,
            r => r,
        }
    }

    proptest! {
        /// Swapping the two sides (and RESOLVE_CONFLICTS, which is set on exactly one
        /// node) mirrors the verdict whenever both nodes stop at mirrored rules. Where they
        /// do not, the first rule that matched on one side is one the other side's order
        /// does not reach first (DRBD checks 50/51/60 before 70/71/80), or both currents
        /// are 0 (rule 20 on both sides); those cases are checked to be exactly that.
        #[test]
        fn swapping_sides_mirrors_the_verdict(
            a in side_strategy(), b in side_strategy(), rc in any::<bool>()
        ) {
            let link = Link::current(rc);
            let ab = uuid_compare(&a, &b, &link);
            let ba = uuid_compare(&b, &a, &link.peer_view());
            if mirror_rule(ab.rule) == ba.rule {
                prop_assert_eq!(ab.decision.mirror(), ba.decision, "{} vs {}", ab, ba);
            } else {
                let both_zero = m(a.uuids.current) == 0 && m(b.uuids.current) == 0;
                let order = (50..=80).contains(&ab.rule) && (50..=80).contains(&ba.rule);
                prop_assert!(both_zero || order, "{} vs {}", ab, ba);
            }
        }

        /// Realistic pairs (distinct random UUIDs, currents never 0) mirror except where
        /// DRBD's rule order decides.
        #[test]
        fn distinct_uuids_mirror_exactly(
            ids in proptest::collection::hash_set(8u64..u64::MAX / 2, 8),
            shape in proptest::collection::vec(0usize..9, 8),
            rc in any::<bool>(),
        ) {
            let ids: Vec<u64> = ids.into_iter().map(|v| v & !1).collect();
            // Each slot picks a shared id, a private id or 0, so ancestry overlaps.
            let pick = |i: usize| if shape[i] == 8 { 0 } else { ids[shape[i]] };
            // A current UUID is never 0 once create-md has run.
            let a = sec(u(ids[shape[0] % 8], pick(1), pick(2), pick(3)));
            let b = sec(u(ids[shape[4] % 8], pick(5), pick(6), pick(7)));
            let link = Link::current(rc);
            let ab = uuid_compare(&a, &b, &link);
            let ba = uuid_compare(&b, &a, &link.peer_view());
            if mirror_rule(ab.rule) == ba.rule {
                prop_assert_eq!(ab.decision.mirror(), ba.decision);
            } else {
                // Only DRBD's rule order (50/51/60 before 70/71/80) breaks the mirror.
                prop_assert!((50..=80).contains(&ab.rule) && (50..=80).contains(&ba.rule));
            }
        }

        /// Bit 0 (the Primary indication) of any UUID never changes the verdict (rule 41
        /// and the policies read it, but only through roles and bitmap bit 0 respectively).
        #[test]
        fn bit_zero_is_masked(a in side_strategy(), b in side_strategy(), flips in any::<[bool; 8]>()) {
            let flip = |s: &Side, f: &[bool]| {
                let mut s = *s;
                s.uuids.current ^= u64::from(f[0]);
                s.uuids.bitmap ^= u64::from(f[1] && s.uuids.bitmap > 1);
                s.uuids.history[0] ^= u64::from(f[2] && s.uuids.history[0] > 1);
                s.uuids.history[1] ^= u64::from(f[3] && s.uuids.history[1] > 1);
                s
            };
            let plain = uuid_compare(&a, &b, &LINK);
            let flipped = uuid_compare(&flip(&a, &flips[..4]), &flip(&b, &flips[4..]), &LINK);
            prop_assert_eq!((plain.decision, plain.rule), (flipped.decision, flipped.rule));
        }
    }
}
