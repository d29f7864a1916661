//! One volume's state machine: role, disk and connection state, generation UUIDs and
//! metadata flags, driven by administrative requests (`handle_*`) and emitting
//! [`Action`]s for the host (`poll_action`).
//!
//! Each rule names the DRBD 8.4 function it follows (`drbd/drbd_nl.c`, `drbd_state.c`,
//! `drbd_main.c`).

use std::collections::VecDeque;

use crate::meta::{MdFlags, UUID_JUST_CREATED, Uuids};

use super::action::{Action, MdUpdate};
use super::fence::{FenceChange, FenceOutcome, FenceVerdict};
use super::refusal::Refusal;
use super::state::{ConnState, DiskState, Role};
use super::validity::{self, Context, Fencing, State};

/// Static facts about a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeConfig {
    /// Volume number.
    pub volume: u32,
    /// Minor number (what /proc/drbd and drbdsetup messages show).
    pub minor: u32,
    /// The `fencing` disk option.
    pub fencing: Fencing,
}

/// What the host read from the metadata before attaching (after `apply-al`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachInfo {
    /// Generation UUIDs on disk.
    pub uuids: Uuids,
    /// Flags on disk.
    pub flags: MdFlags,
    /// Last agreed size on disk, sectors (0 after create-md).
    pub la_size_sect: u64,
    /// What this disk can hold: the data disk, limited by what the bitmap covers,
    /// sectors.
    pub capacity_sect: u64,
    /// Bits set in the bitmap (4 KiB each).
    pub oos_bits: u64,
}

/// An administrative request for one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCmd {
    /// `primary [--force]`.
    Primary {
        /// Consider Inconsistent or Outdated data UpToDate; promote despite fencing.
        force: bool,
    },
    /// `secondary`.
    Secondary,
    /// `detach`.
    Detach,
    /// `down`: demote, then detach (DRBD's `drbd_adm_down`).
    Down,
    /// `outdate`: mark the disk Outdated (`drbd_adm_outdate`).
    Outdate,
    /// `resume-io`: resume I/O frozen by fencing (`drbd_adm_resume_io`).
    ResumeIo,
}

/// Whether an accepted request changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The state changed; actions are queued.
    Changed,
    /// Already in the requested state (DRBD's `SS_NOTHING_TO_DO`): nothing queued.
    NothingToDo,
    /// `primary` needs the `fence-peer` handler's verdict first (fencing is set and the
    /// peer is not known to be Outdated): run it, pass its exit code to
    /// [`Volume::handle_fence_result`] with no connect count, then ask again. Nothing
    /// changed yet.
    NeedFence,
}

/// Metadata held while a disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Md {
    uuids: Uuids,
    flags: MdFlags,
    la_size_sect: u64,
    /// DRBD's `CRASHED_PRIMARY` device bit: set at attach when the disk says it was
    /// Primary (and this node is not Primary now).
    crashed_primary: bool,
    oos_bits: u64,
}

/// One volume. Starts Diskless, Secondary, StandAlone.
#[derive(Debug, Clone)]
pub struct Volume {
    config: VolumeConfig,
    state: State,
    md: Option<Md>,
    open_count: usize,
    actions: VecDeque<Action>,
    /// I/O frozen by fencing (`susp_fen`): a Primary under `resource-and-stonith` lost its
    /// peer and the fence-peer handler has not said yet that the peer is fenced.
    susp_fen: bool,
    /// Connections established so far (DRBD's `connect_cnt`).
    connect_count: u64,
    /// The promotion in progress has had its fence-peer verdict.
    fence_tried: bool,
    /// The `on-io-error` disk option.
    on_io_error: super::OnIoError,
    /// The disk is Inconsistent because it failed I/O (`pass_on`), not because it is a
    /// SyncTarget: such a Primary goes on serving through an UpToDate peer.
    failed_io: bool,
    /// For the next [`Volume::handle_peer`] only: this SyncSource had answered every
    /// out-of-sync block when the link went ([`Volume::handle_sync_source_tail`]).
    target_may_be_done: bool,
}

/// Bound on queued actions: a request queues at most a handful, and the host drains the
/// queue after every request.
const MAX_QUEUED_ACTIONS: usize = 64;

impl Volume {
    /// A Diskless, Secondary, StandAlone volume.
    pub fn new(config: VolumeConfig) -> Self {
        Self {
            config,
            state: State {
                role: Role::Secondary,
                peer: Role::Unknown,
                disk: DiskState::Diskless,
                pdsk: DiskState::DUnknown,
                conn: ConnState::StandAlone,
            },
            md: None,
            open_count: 0,
            actions: VecDeque::new(),
            susp_fen: false,
            connect_count: 0,
            fence_tried: false,
            on_io_error: super::OnIoError::Detach,
            failed_io: false,
            target_may_be_done: false,
        }
    }

    // ----- queries --------------------------------------------------------------------

    /// The volume's static facts.
    pub fn config(&self) -> &VolumeConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Generation UUIDs, while a disk is attached.
    pub fn uuids(&self) -> Option<Uuids> {
        self.md.map(|m| m.uuids)
    }

    /// Metadata flags, while a disk is attached.
    pub fn md_flags(&self) -> Option<MdFlags> {
        self.md.map(|m| m.flags)
    }

    /// The device size, sectors (0 while Diskless).
    pub fn size_sect(&self) -> u64 {
        self.md.map_or(0, |m| m.la_size_sect)
    }

    /// DRBD's `CRASHED_PRIMARY`: the disk says it was Primary when it went away.
    pub fn crashed_primary(&self) -> bool {
        self.md.is_some_and(|m| m.crashed_primary)
    }

    /// I/O is frozen by fencing (`susp_fen`; /proc/drbd's `s`).
    pub fn suspended(&self) -> bool {
        self.susp_fen
    }

    /// Known out-of-sync data, KiB (the bitmap's weight).
    pub fn oos_kib(&self) -> u64 {
        self.md.map_or(0, |m| m.oos_bits.saturating_mul(4))
    }

    /// May the data path serve the device? `None` if so, else why not, as the end of a
    /// sentence that starts with the resource name (`optzimbra is Secondary`).
    pub fn serving(&self) -> Option<&'static str> {
        if self.state.role != Role::Primary {
            Some("is Secondary")
        } else if self.state.disk == DiskState::UpToDate
            || (self.state.conn >= ConnState::Connected
                && self.state.pdsk == DiskState::UpToDate
                && (self.state.disk == DiskState::Diskless
                    || (self.failed_io && self.state.disk == DiskState::Inconsistent)))
        {
            // Its own disk, or, once its disk failed (Diskless after `detach`, Inconsistent
            // after `pass_on`), the peer's. A Primary that is a SyncTarget does not serve
            // (urbd does not resync under a Primary's users).
            None
        } else {
            Some("has no access to UpToDate data")
        }
    }

    /// Sets the `on-io-error` disk option (default `detach`).
    pub fn set_on_io_error(&mut self, policy: super::OnIoError) {
        self.on_io_error = policy;
    }

    /// The local disk failed a read or a write (`__drbd_chk_io_error`), as `on-io-error`
    /// says: `pass_on` makes a disk better than Inconsistent Inconsistent and keeps it;
    /// `detach` and `call-local-io-error` take it through Failed (the superblock then says
    /// neither consistent nor was-up-to-date, so a re-attach resyncs) to Diskless and ask
    /// the host to stop local I/O with [`Action::DetachFailedDisk`]. The role stays: a
    /// Primary goes on serving through an UpToDate peer ([`Volume::serving`]).
    pub fn handle_local_io_error(&mut self) -> super::IoErrorOutcome {
        use super::{IoErrorOutcome, OnIoError};
        if self.md.is_none() {
            return IoErrorOutcome::NoDisk;
        }
        match self.on_io_error {
            OnIoError::PassOn => {
                let inconsistent = self.state.disk > DiskState::Inconsistent;
                if inconsistent {
                    self.failed_io = true;
                    self.state.disk = DiskState::Inconsistent;
                    self.after_state_change(false);
                }
                IoErrorOutcome::PassedOn { inconsistent }
            }
            OnIoError::Detach | OnIoError::CallHelper => {
                self.state.disk = DiskState::Failed;
                // drbd_md_sync at the first half of the detach: the last chance to record
                // that this disk is not to be trusted.
                self.after_state_change(false);
                self.md = None;
                self.state.disk = DiskState::Diskless;
                self.queue(Action::DetachFailedDisk {
                    volume: self.config.volume,
                });
                self.queue_serving();
                IoErrorOutcome::Detached {
                    call_helper: self.on_io_error == OnIoError::CallHelper,
                }
            }
        }
    }

    /// The next action for the host, in order. Drain after every `handle_*` call.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- inputs -----------------------------------------------------------------------

    /// The data path's current number of openers (NBD clients). Demotion is refused while
    /// it is not zero.
    pub fn handle_open_count(&mut self, count: usize) {
        self.open_count = count;
    }

    /// Would an attach be accepted? Ask before reading the metadata.
    pub fn can_attach(&self) -> Result<(), Refusal> {
        if self.state.disk != DiskState::Diskless {
            return Err(Refusal::DiskConfigured);
        }
        Ok(())
    }

    /// Attaches a disk whose metadata the host has read and checked
    /// (`drbd_adm_attach`): the disk state follows from the flags, a disk that was
    /// Primary is marked as a crashed Primary, the size is settled, and the superblock
    /// is written back (unclean, as DRBD 8.4 does while attached).
    pub fn handle_attach(&mut self, info: AttachInfo) -> Result<Outcome, Refusal> {
        self.can_attach()?;
        let flags = info.flags;
        let mut ns = self.state;
        ns.disk = if flags.is_consistent() {
            if flags.was_up_to_date() {
                DiskState::Consistent
            } else {
                DiskState::Outdated
            }
        } else {
            DiskState::Inconsistent
        };
        if flags.contains(MdFlags::PEER_OUT_DATED) {
            ns.pdsk = DiskState::Outdated;
        }
        if ns.disk == DiskState::Consistent
            && (ns.pdsk == DiskState::Outdated || self.config.fencing == Fencing::DontCare)
        {
            ns.disk = DiskState::UpToDate;
        }
        let crashed_primary =
            flags.is_crashed_primary() || (flags.is_primary() && self.state.role != Role::Primary);
        // drbd_new_dev_size() without a peer: the last agreed size, or all we have.
        let la_size_sect = if info.la_size_sect == 0 {
            info.capacity_sect
        } else {
            info.la_size_sect.min(info.capacity_sect)
        };
        let mut uuids = info.uuids;
        set_role_bit(&mut uuids, self.state.role);
        self.md = Some(Md {
            uuids,
            flags,
            la_size_sect,
            crashed_primary,
            oos_bits: info.oos_bits,
        });
        self.state = ns;
        self.after_state_change(false);
        Ok(Outcome::Changed)
    }

    /// An administrative request (`drbd_set_role`, `drbd_adm_detach`, `drbd_adm_down`).
    /// `random` is a fresh random value for a new current UUID, should one be needed.
    pub fn handle_admin(&mut self, cmd: AdminCmd, random: u64) -> Result<Outcome, Refusal> {
        assert!(
            self.actions.len() < MAX_QUEUED_ACTIONS,
            "the host must drain poll_action() after every request"
        );
        match cmd {
            AdminCmd::Primary { force } => self.promote(force, random),
            AdminCmd::Secondary => self.demote(),
            AdminCmd::Detach => self.detach(),
            AdminCmd::Outdate => self.outdate(),
            AdminCmd::ResumeIo => Ok(if self.resume_io() {
                Outcome::Changed
            } else {
                Outcome::NothingToDo
            }),
            AdminCmd::Down => {
                let demoted = self.demote()?;
                let detached = self.detach()?;
                Ok(
                    if demoted == Outcome::NothingToDo && detached == Outcome::NothingToDo {
                        Outcome::NothingToDo
                    } else {
                        Outcome::Changed
                    },
                )
            }
        }
    }

    /// Writing the metadata failed: the disk is dropped (DRBD detaches on a meta-data I/O
    /// error). The host must not report the request that caused the write as done.
    pub fn handle_md_io_error(&mut self) {
        if self.md.take().is_some() {
            self.state.disk = DiskState::Diskless;
            self.state.pdsk = DiskState::DUnknown;
            self.queue(Action::CloseDisk {
                volume: self.config.volume,
            });
            self.queue_serving();
        }
    }

    // ----- the peer (driven by the connection) ------------------------------------------

    /// What the connection knows now: its state, the peer's role and disk. When a Primary
    /// (or the peer of a Primary) loses an UpToDate peer while its bitmap UUID is clear, a
    /// new data generation starts (`after_state_ch`, "lost contact to peer's copy of the
    /// data": `drbd_uuid_new_current`), so that the next handshake finds the blocks written
    /// since in the bitmap. `random` is the new UUID, should one be needed.
    pub fn handle_peer(&mut self, conn: ConnState, peer: Role, pdsk: DiskState, random: u64) {
        let target_may_be_done = std::mem::take(&mut self.target_may_be_done);
        let os = self.state;
        let mut ns = os;
        ns.conn = conn;
        ns.peer = peer;
        ns.pdsk = if self.md.is_none() && conn < ConnState::Connected {
            DiskState::DUnknown
        } else if conn < ConnState::Connected
            && pdsk == DiskState::DUnknown
            && (DiskState::Inconsistent..=DiskState::Outdated).contains(&os.pdsk)
            && !target_may_be_done
        {
            // `sanitize_state`: without a connection a peer known to be Inconsistent or
            // Outdated (fenced, or `MDF_PEER_OUT_DATED` at attach) stays so (not a target
            // that may have finished unseen: its disk is unknown).
            os.pdsk
        } else {
            pdsk
        };
        if self.md.is_some() && ns.conn >= ConnState::Connected {
            ns.disk = connected_disk(ns.conn, ns.disk);
            // `sanitize_state`: a SyncSource's peer is at best Inconsistent. Only the
            // Outdated of a late STATE from the target's WFBitMapT is clamped here: it would
            // hide the loss of the target (`lost_contact_to_peer_data` skips Outdated). An
            // UpToDate (the target finished first) is kept for the new generation below.
            if matches!(ns.conn, ConnState::SyncSource | ConnState::PausedSyncS)
                && ns.pdsk == DiskState::Outdated
            {
                ns.pdsk = DiskState::Inconsistent;
            }
        }
        if ns == os {
            return;
        }
        if os.conn < ConnState::Connected && ns.conn >= ConnState::Connected {
            self.connect_count += 1;
            // The connection is back: frozen I/O resumes (`after_state_ch`, case 2).
            self.resume_io();
        }
        // `conn_disconnect`: a Primary that loses a peer not known to be Outdated asks the
        // fence-peer handler; under resource-and-stonith its I/O freezes until the answer
        // (`sanitize_state`: susp_fen).
        if self.config.fencing != Fencing::DontCare
            && os.conn >= ConnState::Connected
            && ns.conn < ConnState::Connected
            && os.role == Role::Primary
            && os.pdsk >= DiskState::Consistent
            && os.disk >= DiskState::Consistent
            && self.md.is_some()
        {
            if self.config.fencing == Fencing::ResourceAndStonith {
                self.susp_fen = true;
            }
            self.queue(Action::FencePeer {
                volume: self.config.volume,
                connect_count: self.connect_count,
            });
        }
        let had_peer_disk = os.pdsk >= DiskState::Inconsistent
            && os.pdsk != DiskState::DUnknown
            && os.pdsk != DiskState::Outdated;
        let lost_peer_disk = ns.pdsk < DiskState::Inconsistent
            || ns.pdsk == DiskState::DUnknown
            || ns.pdsk == DiskState::Outdated;
        if had_peer_disk
            && lost_peer_disk
            && (ns.role == Role::Primary || ns.peer == Role::Primary)
            && ns.disk >= DiskState::UpToDate
            && let Some(md) = self.md.as_mut()
            && (md.uuids.bitmap == 0
                || ((os.pdsk >= DiskState::Consistent || target_may_be_done)
                    && matches!(os.conn, ConnState::SyncSource | ConnState::PausedSyncS)))
        {
            // drbd_uuid_new_current: the current UUID goes to the bitmap slot as it is,
            // bit 0 included (discard-younger/older-primary read it: set means this node
            // was Primary when the link went).
            //
            // Deviation from DRBD 8.4's `after_state_ch`, which does this only when
            // `uuid[UI_BITMAP] == 0`: a SyncSource whose target already said UpToDate (it
            // finished the resync and took this node's current UUID, while this side had
            // not finished yet) would write on under the UUID the target now has; a later
            // promotion of the target (its bitmap UUID := that UUID) then makes this node
            // a plain SyncTarget by rule 50 and its writes vanish: a split brain resolved
            // silently. (Only an UpToDate said during the resync counts: the one of the
            // handshake, before the bitmap exchange, is from before the target took the sync
            // UUID.) As DRBD 9 does, a new generation starts then too, and the bitmap
            // UUID moves to the history (`drbd_uuid_set`): the bitmap UUIDs then match
            // (rule 90, split brain), or the target's current is our bitmap UUID (rule 70,
            // a bitmap resync). A target still Inconsistent keeps DRBD 8.4's rule (it
            // cannot be promoted without --force; rotating there would push a UUID into
            // the history on every interrupted resync and lose the common ancestor). A
            // target this side has answered every block may have finished unseen (its
            // UpToDate still on the way): that counts as said (`target_may_be_done`); if it
            // had not finished, the next handshake finds its sync UUID in our history
            // (rule 80) and resyncs it in full.
            let current = md.uuids.current;
            set_bitmap_uuid(&mut md.uuids, current);
            md.uuids.current = random;
            set_role_bit(&mut md.uuids, ns.role);
        }
        self.state = ns;
        self.after_state_change(false);
    }

    /// The link of a SyncSource is going, and the data side had answered every block still
    /// out of sync ([`Replicator::may_target_have_finished`]): the target may have finished
    /// the resync and taken this node's current UUID without this side knowing. Call it
    /// before the [`Volume::handle_peer`] that reports the loss; it counts for that call only.
    ///
    /// [`Replicator::may_target_have_finished`]: super::repl::Replicator::may_target_have_finished
    pub fn handle_sync_source_tail(&mut self) {
        self.target_may_be_done = true;
    }

    /// The fence-peer handler's verdict (`conn_try_outdate_peer`). `connect_count` is the
    /// one of [`Action::FencePeer`] (the asynchronous call after a lost connection): a
    /// verdict that arrives after the connection came back is ignored. `None`: the call a
    /// promotion asked for ([`Outcome::NeedFence`]).
    pub fn handle_fence_result(
        &mut self,
        connect_count: Option<u64>,
        verdict: FenceVerdict,
    ) -> FenceOutcome {
        if connect_count.is_none() {
            self.fence_tried = true;
        }
        if matches!(verdict, FenceVerdict::Broken(_)) {
            return FenceOutcome::Broken;
        }
        if self.state.conn >= ConnState::WFReportParams
            || connect_count.is_some_and(|c| c != self.connect_count)
        {
            return FenceOutcome::Ignored;
        }
        let (change, text) = verdict.change(self.state.disk);
        if self.md.is_none() {
            return FenceOutcome::Applied {
                text,
                resumed: false,
            };
        }
        let os = self.state;
        let mut ns = os;
        match change {
            Some(FenceChange::Peer(d)) => ns.pdsk = d,
            Some(FenceChange::Local(d)) => ns.disk = d,
            None => {}
        }
        if ns != os {
            if let Err(r) = validity::check_transition(&os, &ns, &self.context()) {
                return FenceOutcome::Refused(r);
            }
            self.state = ns;
            self.after_state_change(false);
        }
        // Case 1 of `conn_set_state`: the peer is fenced, frozen I/O resumes.
        let resumed = self.susp_fen && self.state.pdsk <= DiskState::Outdated && self.resume_io();
        FenceOutcome::Applied { text, resumed }
    }

    /// This node becomes SyncSource (`drbd_gen_and_send_sync_uuid`): the bitmap UUID
    /// moves on (the old bitmap UUID plus `UUID_NEW_BM_OFFSET`, or a random one), the
    /// peer's disk is Inconsistent. Returns the sync UUID for the peer.
    pub fn handle_sync_source_start(&mut self, random: u64) -> u64 {
        let mut sync_uuid = random & !1;
        if let Some(md) = self.md.as_mut() {
            let bm = md.uuids.bitmap;
            if bm != 0 && bm != UUID_JUST_CREATED {
                sync_uuid = bm.wrapping_add(super::uuid_compare::UUID_NEW_BM_OFFSET);
            }
            set_bitmap_uuid(&mut md.uuids, sync_uuid);
        }
        self.state.conn = ConnState::SyncSource;
        self.state.pdsk = DiskState::Inconsistent;
        self.after_state_change(false);
        sync_uuid
    }

    /// The handshake repaired our UUIDs (`drbd_uuid_compare` rules 34 and 71: a lost
    /// resync-finished or SYNC_UUID packet; DRBD moves the history in place and writes the
    /// meta data). Only the bitmap UUID and the history change; the current UUID (and its
    /// role bit) stays. Without this, every interrupted start of a resync as SyncSource
    /// pushes one more bitmap UUID into the history until the common ancestor falls out
    /// and the peers look unrelated.
    pub fn handle_uuid_repair(&mut self, repaired: Uuids) {
        let Some(md) = self.md.as_mut() else {
            return;
        };
        if (md.uuids.bitmap, md.uuids.history) == (repaired.bitmap, repaired.history) {
            return;
        }
        md.uuids.bitmap = repaired.bitmap;
        md.uuids.history = repaired.history;
        self.after_state_change(false);
    }

    /// This node becomes SyncTarget with the source's sync UUID (`receive_sync_uuid`):
    /// current UUID := it, bitmap UUID cleared, the disk Inconsistent until the end.
    pub fn handle_sync_target_start(&mut self, sync_uuid: u64) {
        if let Some(md) = self.md.as_mut() {
            md.uuids.current = sync_uuid;
            md.uuids.bitmap = 0;
            set_role_bit(&mut md.uuids, self.state.role);
        }
        self.state.conn = ConnState::SyncTarget;
        self.state.disk = DiskState::Inconsistent;
        self.after_state_change(false);
    }

    /// The resync ended (`drbd_resync_finished`). Without failures both disks are
    /// UpToDate and both nodes end with the same UUID set: the target takes the source's
    /// (its own current becomes history), the source clears its bitmap UUID into the
    /// history. `peer` is the peer's UUID set as its handshake sent it.
    pub fn handle_sync_finished(&mut self, target: bool, failed: u64, peer: Option<Uuids>) {
        if failed > 0 {
            if target {
                self.state.disk = DiskState::Inconsistent;
                self.state.pdsk = DiskState::UpToDate;
            } else {
                self.state.disk = DiskState::UpToDate;
                self.state.pdsk = DiskState::Inconsistent;
            }
        } else {
            self.state.disk = DiskState::UpToDate;
            self.state.pdsk = DiskState::UpToDate;
            if let Some(md) = self.md.as_mut() {
                if target && let Some(p) = peer {
                    let own = md.uuids.current & !1;
                    md.uuids.bitmap = p.bitmap;
                    md.uuids.history = p.history;
                    set_bitmap_uuid(&mut md.uuids, own);
                    md.uuids.current = p.current;
                }
                // drbd_uuid_set_bm(0): the bitmap UUID goes to the history.
                let bm = md.uuids.bitmap;
                md.uuids.history[1] = md.uuids.history[0];
                md.uuids.history[0] = bm;
                md.uuids.bitmap = 0;
                set_role_bit(&mut md.uuids, self.state.role);
            }
        }
        self.state.conn = ConnState::Connected;
        self.after_state_change(false);
    }

    /// The connection agreed on a smaller device (`drbd_determine_dev_size`: the smaller
    /// disk wins). The connection refuses a peer smaller than what is in use, so this only
    /// shrinks a device whose data is not in use.
    pub fn handle_resize(&mut self, size_sect: u64) {
        if let Some(md) = self.md.as_mut()
            && md.la_size_sect != size_sect
        {
            md.la_size_sect = size_sect;
            self.after_state_change(false);
        }
    }

    /// Bits set in the bitmap, as the data side counts them now.
    pub fn handle_oos_bits(&mut self, bits: u64) {
        if let Some(md) = self.md.as_mut() {
            md.oos_bits = bits;
        }
    }

    // ----- rules ------------------------------------------------------------------------

    fn context(&self) -> Context {
        Context {
            fencing: self.config.fencing,
            open_count: self.open_count,
        }
    }

    /// `drbd_set_role(R_PRIMARY, force)`, which may first need the fence-peer handler.
    fn promote(&mut self, force: bool, random: u64) -> Result<Outcome, Refusal> {
        let r = self.try_promote(force, random);
        if r != Ok(Outcome::NeedFence) {
            self.fence_tried = false;
        }
        r
    }

    fn try_promote(&mut self, force: bool, random: u64) -> Result<Outcome, Refusal> {
        if self.state.role == Role::Primary {
            return Ok(Outcome::NothingToDo);
        }
        let os = self.state;
        let mut ns = os;
        ns.role = Role::Primary;
        let mut forced = false;
        let mut tried_outdate = false;
        let mut tried_nop = false;
        // DRBD retries the state change at most four times, adjusting it each time.
        let mut result = Err(Refusal::InTransientState);
        for _ in 0..4 {
            result = validity::check_transition(&os, &ns, &self.context());
            match result {
                Ok(()) => break,
                Err(Refusal::NoUpToDateDisk)
                    if force
                        && !forced
                        && os.disk < DiskState::UpToDate
                        && os.disk >= DiskState::Inconsistent =>
                {
                    ns.disk = DiskState::UpToDate;
                    forced = true;
                }
                Err(Refusal::NoUpToDateDisk)
                    if os.disk == DiskState::Consistent && !tried_outdate =>
                {
                    tried_outdate = true;
                    // conn_try_outdate_peer(): without fencing the peer counts as
                    // outdated; with fencing the fence-peer handler must say so.
                    if self.config.fencing == Fencing::DontCare {
                        ns.disk = DiskState::UpToDate;
                    } else if !self.fence_tried {
                        return Ok(Outcome::NeedFence);
                    } else if os.pdsk <= DiskState::Outdated {
                        ns.disk = DiskState::UpToDate;
                    }
                }
                Err(Refusal::PrimaryNop) if !tried_nop => {
                    tried_nop = true;
                    if !self.fence_tried {
                        return Ok(Outcome::NeedFence);
                    }
                    if force {
                        // "Forced into split brain situation!"
                        ns.pdsk = DiskState::Outdated;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        result?;
        self.state = ns;
        if let Some(md) = self.md.as_mut() {
            // Promotion without a (connected) peer, or a forced one: a new data generation
            // starts (drbd_uuid_new_current; the old current goes to the bitmap slot as it
            // is, bit 0 included, which discard-younger/older-primary read later).
            let no_peer = ns.conn < ConnState::Connected || ns.pdsk <= DiskState::Failed;
            if (no_peer && md.uuids.bitmap == 0) || forced {
                md.uuids.bitmap = md.uuids.current;
                md.uuids.current = random;
            } else if no_peer {
                // Deviation from DRBD 8.4, which keeps the current UUID when the bitmap
                // UUID is set: the peer may have moved on from our current UUID unseen
                // (a target that finished the resync of a SyncSource that crashed before it
                // heard so, then was promoted: its bitmap UUID is our current). Writing on
                // under that UUID makes the next handshake take us for the peer's plain
                // SyncTarget (rule 50), and our writes vanish: a split brain resolved
                // silently. As DRBD 9 does, a new generation starts; the current UUID goes to
                // the history, the bitmap UUID stays (the bitmap tracks changes since it).
                // A peer still at our bitmap UUID syncs from us as before (rule 70); one at
                // our old current finds it in the history (rule 80, full sync); one that
                // moved on too shares our history: split brain (rule 100).
                md.uuids.history[1] = md.uuids.history[0];
                md.uuids.history[0] = md.uuids.current;
                md.uuids.current = random;
            }
            set_role_bit(&mut md.uuids, Role::Primary);
        }
        self.after_state_change(false);
        Ok(Outcome::Changed)
    }

    /// `drbd_set_role(R_SECONDARY)`.
    fn demote(&mut self) -> Result<Outcome, Refusal> {
        if self.state.role == Role::Secondary {
            return Ok(Outcome::NothingToDo);
        }
        let os = self.state;
        let mut ns = os;
        ns.role = Role::Secondary;
        validity::check_transition(&os, &ns, &self.context())?;
        self.state = ns;
        if let Some(md) = self.md.as_mut() {
            set_role_bit(&mut md.uuids, Role::Secondary);
        }
        self.after_state_change(false);
        Ok(Outcome::Changed)
    }

    /// `drbd_adm_outdate()`: the disk becomes Outdated (`is_valid_state`, then
    /// `is_valid_soft_transition`'s `SS_LOWER_THAN_OUTDATED`).
    fn outdate(&mut self) -> Result<Outcome, Refusal> {
        let os = self.state;
        if os.disk == DiskState::Outdated {
            return Ok(Outcome::NothingToDo);
        }
        let mut ns = os;
        ns.disk = DiskState::Outdated;
        validity::check_transition(&os, &ns, &self.context())?;
        if os.disk < DiskState::Outdated && os.disk != DiskState::Attaching {
            return Err(Refusal::LowerThanOutdated);
        }
        self.state = ns;
        self.after_state_change(false);
        Ok(Outcome::Changed)
    }

    /// `drbd_adm_resume_io()` (and the automatic resumes): frozen I/O continues. True if
    /// it was frozen.
    fn resume_io(&mut self) -> bool {
        if !self.susp_fen {
            return false;
        }
        self.susp_fen = false;
        self.queue(Action::ResumeIo {
            volume: self.config.volume,
        });
        true
    }

    /// `drbd_adm_detach()`: through Failed to Diskless. A Diskless volume has nothing to
    /// do (`SS_IS_DISKLESS` is reported as `SS_NOTHING_TO_DO`).
    fn detach(&mut self) -> Result<Outcome, Refusal> {
        if self.state.disk == DiskState::Diskless {
            return Ok(Outcome::NothingToDo);
        }
        let os = self.state;
        let mut ns = os;
        ns.disk = DiskState::Failed;
        validity::check_transition(&os, &ns, &self.context())?;
        // The disk leaves cleanly: record that the activity log is applied (what
        // `drbdadm attach` would do with apply-al before the next attach).
        if let Some(mut md) = self.md {
            md.flags.set(MdFlags::AL_CLEAN, true);
            self.queue(Action::PersistSuperblock {
                volume: self.config.volume,
                update: MdUpdate {
                    uuids: md.uuids,
                    flags: md.flags,
                    la_size_sect: md.la_size_sect,
                    clean: true,
                },
            });
        }
        self.md = None;
        self.state.disk = DiskState::Diskless;
        self.state.pdsk = DiskState::DUnknown;
        self.queue(Action::CloseDisk {
            volume: self.config.volume,
        });
        self.queue_serving();
        Ok(Outcome::Changed)
    }

    /// The flag bookkeeping of `after_state_ch()` plus the superblock write of
    /// `drbd_md_sync()`, and the data path's permission.
    fn after_state_change(&mut self, clean: bool) {
        let s = self.state;
        if s.disk != DiskState::Inconsistent {
            self.failed_io = false;
        }
        if let Some(md) = self.md.as_mut() {
            // after_state_ch: once both disks are UpToDate, nothing of a crash is left to
            // repair, so the crashed-Primary flag goes (else every later connect with equal
            // UUIDs would take rule 40 again, and a stale flag could pick the source).
            if s.disk == DiskState::UpToDate && s.pdsk == DiskState::UpToDate {
                md.crashed_primary = false;
            }
            md.flags = flags_for(md.flags, &s, md.crashed_primary);
            let update = MdUpdate {
                uuids: md.uuids,
                flags: md.flags,
                la_size_sect: md.la_size_sect,
                clean,
            };
            self.queue(Action::PersistSuperblock {
                volume: self.config.volume,
                update,
            });
        }
        self.queue_serving();
    }

    fn queue_serving(&mut self) {
        let reason = self.serving();
        self.queue(Action::SetServing {
            volume: self.config.volume,
            reason,
        });
    }

    fn queue(&mut self, action: Action) {
        self.actions.push_back(action);
    }
}

/// `after_state_ch()`'s recomputation of the `MDF_*` flags from the state (for a volume
/// with a disk). `MDF_AL_CLEAN` is cleared: the activity log is in use while attached.
pub fn flags_for(old: MdFlags, s: &State, crashed_primary: bool) -> MdFlags {
    let owned = MdFlags::CONSISTENT
        | MdFlags::PRIMARY_IND
        | MdFlags::CONNECTED_IND
        | MdFlags::WAS_UP_TO_DATE
        | MdFlags::PEER_OUT_DATED
        | MdFlags::CRASHED_PRIMARY
        | MdFlags::AL_CLEAN;
    let mut f = MdFlags(old.0 & !owned);
    f.set(MdFlags::CRASHED_PRIMARY, crashed_primary);
    f.set(
        MdFlags::PRIMARY_IND,
        s.role == Role::Primary || (s.pdsk < DiskState::Inconsistent && s.peer == Role::Primary),
    );
    f.set(MdFlags::CONNECTED_IND, s.conn > ConnState::WFReportParams);
    f.set(MdFlags::CONSISTENT, s.disk > DiskState::Inconsistent);
    f.set(MdFlags::WAS_UP_TO_DATE, s.disk > DiskState::Outdated);
    f.set(
        MdFlags::PEER_OUT_DATED,
        s.pdsk <= DiskState::Outdated && s.pdsk >= DiskState::Inconsistent,
    );
    f
}

/// `sanitize_state`'s implications of a connected state on the local disk: Consistent and
/// Outdated vanish (UpToDate) when connected; from the bitmap exchange to the start of a
/// resync as target the disk is at best Outdated (`WFBitMapT`, `WFSyncUUID`, ...), during
/// it at best Inconsistent. The Outdated is durable (`MDF_WAS_UP_TO_DATE` clears): a target
/// that loses its source before the resync starts, crashes or not, must not be promoted
/// without `--force` (its data may be older than the source's; the source's writes since
/// are its alone, so a promotion here is a split brain the next handshake cannot see).
/// DRBD's lower bounds (implicit upgrades) are left out: they never apply to a state the
/// core reaches, and an upgrade is never the safe side.
fn connected_disk(conn: ConnState, disk: DiskState) -> DiskState {
    let disk = if matches!(disk, DiskState::Consistent | DiskState::Outdated)
        && !matches!(conn, ConnState::Ahead | ConnState::Behind)
    {
        DiskState::UpToDate
    } else {
        disk
    };
    let max = match conn {
        ConnState::WFBitMapT
        | ConnState::PausedSyncT
        | ConnState::StartingSyncT
        | ConnState::WFSyncUUID
        | ConnState::Behind => DiskState::Outdated,
        ConnState::SyncTarget => DiskState::Inconsistent,
        _ => DiskState::UpToDate,
    };
    disk.min(max)
}

/// Bit 0 of the current UUID says "Primary" (`__drbd_uuid_set`, attach, set_role).
/// `UUID_JUST_CREATED` keeps its value: it is even, so clearing bit 0 leaves it alone.
fn set_role_bit(uuids: &mut Uuids, role: Role) {
    debug_assert_eq!(UUID_JUST_CREATED & 1, 0);
    if role == Role::Primary {
        uuids.current |= 1;
    } else {
        uuids.current &= !1;
    }
}

/// `drbd_uuid_set(UI_BITMAP, value)`: a non-zero old value moves into the history first.
fn set_bitmap_uuid(uuids: &mut Uuids, value: u64) {
    if uuids.bitmap != 0 {
        uuids.history[1] = uuids.history[0];
        uuids.history[0] = uuids.bitmap;
    }
    uuids.bitmap = value;
}
