//! The resync, both sides: the SyncTarget walks its bitmap and requests runs of
//! out-of-sync blocks, paced by `resync-rate`; the SyncSource reads and answers; each side
//! clears bits as blocks land and finishes when its bitmap is empty.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::core::ConnState;
use crate::io::Errno;
use crate::wire::{BlockAck, BlockRequest, PacketType};

use super::{
    BM_BLOCK, LocalIo, Outgoing, Payload, ReplAction, ReplError, Replicator, SECT_PER_BIT,
};
use super::{SyncSide, Waiter, overlaps, pace};

/// Resync requests in flight at most, whatever their size (see `target_window_full`).
pub(super) const MAX_RS_REQUESTS: usize = 1024;

/// How far a resync is, for proc and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncProgress {
    /// This node's side.
    pub side: SyncSide,
    /// Out-of-sync KiB when it started.
    pub total_kib: u64,
    /// Out-of-sync KiB left.
    pub left_kib: u64,
    /// Time since it started.
    pub elapsed: Duration,
    /// How long ago the oldest rolling mark was taken (for the short-term speed).
    pub mark_age: Duration,
    /// Out-of-sync KiB left at that mark.
    pub mark_left_kib: u64,
    /// `resync-rate`, KiB/s.
    pub want_kib_s: u64,
}

/// Progress marks (time, bits left) kept for the recent rate.
const MARKS: usize = 8;
const MARK_STEP: Duration = Duration::from_secs(1);
/// Pacing never saves up more than this much idle time as a burst.
const MAX_BURST: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub(super) struct Resync {
    side: Option<SyncSide>,
    started: Option<Instant>,
    total_bits: u64,
    left_bits: u64,
    failed_bits: u64,
    marks: VecDeque<(Instant, u64)>,
    /// Target: next bit to look at.
    cursor: u64,
    /// Target: requests out, block_id -> (first bit, bits).
    requests: BTreeMap<u64, (u64, u64)>,
    /// Target: the bits of `requests`, summed (asked for before every new request).
    requested_bits: u64,
    /// Target: when the next request may go.
    next_send: Option<Instant>,
    /// Source: requests not read yet (waiting for overlapping application writes).
    pending: VecDeque<BlockRequest>,
    /// Source: reads in flight, local id -> request.
    reads: BTreeMap<u64, BlockRequest>,
    /// Source: the target's checksums of pending requests (`csums-alg`), by block_id.
    expected: BTreeMap<u64, Vec<u8>>,
    /// Target: checksum reads in flight, local id -> block_id.
    csum_reads: BTreeMap<u64, u64>,
    /// Blocks found equal by their checksums.
    same_csum: u64,
    /// Paused by `pause-sync` on either node (PausedSyncS/PausedSyncT): the target sends
    /// no new requests.
    paused: bool,
    /// Target with `c-plan-ahead`: the rate controller, sectors it allows in the current
    /// step, and sectors that arrived since the last step.
    controller: Option<super::RateController>,
    step_budget_sect: u64,
    arrived_sect: u64,
    /// Target: as many requests out as allowed; the next one waits for a reply, not for
    /// a timer (so the host does not wake up for nothing).
    capped: bool,
    /// Source: the target is known to have started (its STATE said SyncTarget, or a
    /// request came).
    target_started: bool,
    /// Source: the target confirmed progress (a resync ack, or its STATE back to
    /// Connected after SyncTarget). Until then the source does not finish, not even an
    /// empty resync: its SYNC_UUID may still die with the link, and a source that moved
    /// its bitmap UUID into the history meanwhile leaves a target that never took the
    /// sync UUID further from it on every retry (DRBD 8.4 since protocol 95 finishes an
    /// empty resync in `receive_state`, on the target's Connected).
    target_confirmed: bool,
    /// Source: bits of the RS_DATA_REPLYs sent whose RS_WRITE_ACK has not come yet.
    replied_bits: u64,
    /// Source: bits set here since the resync started (a local write error, a write lost
    /// with a link), which the target does not know of and never asks for.
    new_bits: u64,
}

impl Resync {
    pub(super) fn start(&mut self, now: Instant, side: SyncSide, bits: u64) {
        let paused = self.paused;
        *self = Resync {
            side: Some(side),
            started: Some(now),
            total_bits: bits,
            left_bits: bits,
            next_send: Some(now),
            paused,
            ..Resync::default()
        };
        self.marks.push_back((now, bits));
    }

    /// Target: pace with the dynamic controller instead of the fixed rate.
    pub(super) fn set_controller(&mut self, now: Instant, cfg: super::ControllerConfig) {
        let mut ctl = super::RateController::new(cfg);
        ctl.reset(now);
        self.controller = Some(ctl);
    }

    /// Source: `n` bits were newly set in the bitmap.
    pub(super) fn note_new_oos(&mut self, n: u64) {
        if self.side == Some(SyncSide::Source) {
            self.new_bits += n;
        }
    }

    /// The resync ends (finished, or the link went down). Reads still in flight are
    /// forgotten: their completions find no request and release their buffers. Keeping
    /// them would answer a request of the old connection on the next one, before that
    /// one's resync started (DRBD's `conn_disconnect` waits for the old peer requests
    /// before a new connection can start), and the target would see an RS_DATA_REPLY it
    /// never asked for.
    pub(super) fn stop(&mut self) {
        *self = Resync::default();
    }

    pub(super) fn progress(&self, now: Instant) -> Option<SyncProgress> {
        let side = self.side?;
        let started = self.started?;
        let elapsed = now.saturating_duration_since(started);
        let kib = |bits: u64| bits * (BM_BLOCK / 1024);
        let (mt, ml) = self
            .marks
            .front()
            .copied()
            .unwrap_or((started, self.total_bits));
        Some(SyncProgress {
            side,
            total_kib: kib(self.total_bits),
            left_kib: kib(self.left_bits),
            elapsed,
            mark_age: now.saturating_duration_since(mt),
            mark_left_kib: kib(ml),
            want_kib_s: 0,
        })
    }

    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        match self.side {
            Some(SyncSide::Target) if !self.paused && !self.capped => self.next_send,
            _ => None,
        }
    }

    /// Is a resync running on this side?
    pub(super) fn is_running(&self) -> bool {
        self.side.is_some()
    }

    /// Source: does a resync read (in flight) overlap this range?
    pub(super) fn reading_overlaps(&self, offset: u64, len: u64) -> bool {
        self.reads
            .values()
            .any(|r| overlaps(r.sector * 512, u64::from(r.size), offset, len))
    }

    /// Target: a reply for request `block_id` arrived (false: no such request).
    pub(super) fn take_request(&mut self, block_id: u64) -> bool {
        if self.side != Some(SyncSide::Target) {
            return false;
        }
        match self.requests.remove(&block_id) {
            Some((_, n)) => {
                self.requested_bits -= n;
                true
            }
            None => false,
        }
    }

    /// The controller's current aim, KiB/s (proc's `want:`).
    pub(super) fn controller_want(&self) -> Option<u64> {
        self.controller
            .as_ref()
            .map(super::RateController::want_kib_s)
    }

    /// Target: blocks written (`ok`) or failed.
    pub(super) fn target_done(&mut self, ok: u64, failed: u64) {
        self.arrived_sect += (ok + failed) * SECT_PER_BIT;
        self.left_bits = self.left_bits.saturating_sub(ok + failed);
        self.failed_bits += failed;
    }

    fn mark(&mut self, now: Instant) {
        if self
            .marks
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= MARK_STEP)
        {
            self.marks.push_back((now, self.left_bits));
            if self.marks.len() > MARKS {
                self.marks.pop_front();
            }
        }
    }
}

impl Replicator {
    /// Issue requests (target), start reads (source), and notice the end.
    pub(super) fn pump_resync(&mut self, now: Instant) {
        if !self.is_linked() {
            return;
        }
        match self.resync.side {
            Some(SyncSide::Target) => self.pump_target(now),
            Some(SyncSide::Source) => self.pump_source(),
            None => {}
        }
        if self.resync.side.is_some() {
            self.resync.mark(now);
        }
    }

    fn pump_target(&mut self, now: Instant) {
        let bits = self.bitmap.bits();
        let rate = self.config.resync_rate_kib;
        // Plain requests may be large (fewer round trips); checksum requests carry one
        // digest per block and stay within the digest cap.
        let max_bits = if self.config.csums {
            self.config.rs_max_bits.min(super::DIGEST_MAX_BITS)
        } else {
            self.config.rs_max_bits
        };
        if let Some(ctl) = self.resync.controller.as_mut()
            && !self.resync.paused
            && self.resync.next_send.is_none_or(|t| t <= now)
        {
            // DRBD's drbd_rs_number_requests: one plan step every SLEEP_TIME.
            let in_flight = self.resync.requested_bits;
            let arrived = std::mem::take(&mut self.resync.arrived_sect);
            self.resync.step_budget_sect = ctl.plan(now, in_flight * SECT_PER_BIT, arrived);
            self.resync.next_send = Some(now + super::SLEEP_TIME);
        }
        while !self.resync.paused && !self.target_window_full(max_bits) {
            let next = self.resync.next_send.unwrap_or(now);
            if self.resync.controller.is_some() {
                if self.resync.step_budget_sect == 0 {
                    break;
                }
            } else if next > now {
                break;
            }
            // The next run of set bits from the cursor.
            let mut first = self.resync.cursor;
            while first < bits && !self.bitmap.is_set(first) {
                // Skip clear words quickly.
                if first % 64 == 0 && self.bitmap.words().get((first / 64) as usize) == Some(&0) {
                    first += 64;
                } else {
                    first += 1;
                }
            }
            if first >= bits {
                self.resync.cursor = bits;
                break;
            }
            let mut n = 1;
            while n < max_bits && first + n < bits && self.bitmap.is_set(first + n) {
                n += 1;
            }
            self.resync.cursor = first + n;
            let block_id = self.id();
            self.resync.requests.insert(block_id, (first, n));
            self.resync.requested_bits += n;
            let size = (n * BM_BLOCK) as u32;
            if self.config.csums {
                // Read the blocks first: their checksums go instead of a plain request.
                let id = self.local_io(
                    Waiter::CsumRead,
                    LocalIo::Read {
                        offset: first * BM_BLOCK,
                        len: size,
                        digest: false,
                    },
                );
                self.resync.csum_reads.insert(id, block_id);
            } else {
                self.send(Outgoing::RsRequest(BlockRequest {
                    sector: first * SECT_PER_BIT,
                    block_id,
                    size,
                }));
            }
            if self.resync.controller.is_some() {
                self.resync.step_budget_sect = self
                    .resync
                    .step_budget_sect
                    .saturating_sub(n * SECT_PER_BIT);
            } else {
                let floor = now.checked_sub(MAX_BURST).unwrap_or(now);
                self.resync.next_send = Some(next.max(floor) + pace(u64::from(size), rate));
            }
        }
        self.resync.capped = self.target_window_full(max_bits);
        if self.resync.cursor >= bits
            && self.resync.requests.is_empty()
            && self.resync.csum_reads.is_empty()
            && !self.apply.rs_pending()
        {
            self.finish(SyncSide::Target);
        }
    }

    /// The SyncTarget's window: `max_rs_requests` requests of the largest size, in bits
    /// (as DRBD bounds its resync by sectors in flight, not by requests), and at most
    /// [`MAX_RS_REQUESTS`] requests: scattered out-of-sync blocks (one 4 KiB request each)
    /// then keep as many disk operations going as a sequential run does bytes.
    fn target_window_full(&self, max_bits: u64) -> bool {
        let in_flight = self.resync.requested_bits;
        self.resync.requests.len() >= MAX_RS_REQUESTS
            || in_flight >= self.config.max_rs_requests as u64 * max_bits
    }

    fn pump_source(&mut self) {
        while let Some(r) = self.resync.pending.front().copied() {
            if self
                .writes
                .overlaps_started(r.sector * 512, u64::from(r.size))
            {
                break;
            }
            self.resync.pending.pop_front();
            let digest = self.resync.expected.contains_key(&r.block_id);
            let id = self.local_io(
                Waiter::RsRead,
                LocalIo::read_for_peer(r.sector, r.size, digest),
            );
            self.resync.reads.insert(id, r);
        }
        if self.bitmap.count() <= self.resync.failed_bits
            && self.resync.pending.is_empty()
            && self.resync.reads.is_empty()
            && self.resync.target_confirmed
        {
            self.finish(SyncSide::Source);
        }
    }

    /// A SyncSource whose target has not shown that it started (no SyncTarget STATE, no
    /// request yet). A peer disk reported UpToDate meanwhile is from before the resync and
    /// counts as Inconsistent (DRBD's `receive_state`: "ignore its uptodate-ness").
    pub fn is_awaiting_target(&self) -> bool {
        self.resync.side == Some(SyncSide::Source) && !self.resync.target_started
    }

    /// A SyncSource that has answered every block still out of sync here (or has none
    /// left): its target may have finished the resync, and taken this node's current UUID,
    /// while this side does not know yet (the acks, or the target's STATE, are on the way).
    /// Until then the target cannot have finished: it still needs a block from here.
    pub fn may_target_have_finished(&self) -> bool {
        self.resync.side == Some(SyncSide::Source)
            && self.resync.pending.is_empty()
            && self.resync.reads.is_empty()
            && self.bitmap.count()
                <= self.resync.replied_bits + self.resync.failed_bits + self.resync.new_bits
    }

    /// The peer's connection state from its STATE packet (DRBD's `receive_state`). On a
    /// SyncSource: SyncTarget says the target took the sync UUID; Connected after that
    /// says it finished, which finishes this side too once nothing is left here (the only
    /// way an empty resync, or one the checksums settled entirely, finishes).
    pub fn handle_peer_conn_state(&mut self, now: Instant, conn: ConnState) {
        if self.resync.side != Some(SyncSide::Source) {
            return;
        }
        match conn {
            ConnState::SyncTarget | ConnState::PausedSyncT => self.resync.target_started = true,
            ConnState::Connected if self.resync.target_started => {
                self.resync.target_confirmed = true;
                self.pump_resync(now);
            }
            _ => {}
        }
    }

    fn finish(&mut self, side: SyncSide) {
        let failed = self.resync.failed_bits;
        let same_csum = self.resync.same_csum;
        self.resync.stop();
        self.push(ReplAction::SyncFinished {
            side,
            failed,
            same_csum,
        });
    }

    /// `pause-sync` / `resume-sync` on either node (DRBD's user_isp / peer_isp): while
    /// paused, the SyncTarget sends no new requests; what is in flight finishes.
    pub fn set_sync_paused(&mut self, now: Instant, paused: bool) {
        if self.resync.paused == paused {
            return;
        }
        self.resync.paused = paused;
        if !paused {
            self.resync.next_send = Some(now);
            self.pump_resync(now);
        }
    }

    /// Is the resync paused?
    pub fn is_sync_paused(&self) -> bool {
        self.resync.paused
    }

    /// Is a resync running on this side?
    pub fn is_syncing(&self) -> bool {
        self.resync.is_running()
    }

    /// Target (`csums-alg`): the blocks of a request were read; their checksums go to the
    /// source (or, if the read failed, a plain request).
    pub(super) fn on_csum_read_done(&mut self, id: u64, res: Result<(), Errno>) {
        let Some(block_id) = self.resync.csum_reads.remove(&id) else {
            self.push(ReplAction::Release(Payload::Read(id)));
            return;
        };
        let Some(&(first, n)) = self.resync.requests.get(&block_id) else {
            self.push(ReplAction::Release(Payload::Read(id)));
            return;
        };
        if !self.is_linked() {
            self.push(ReplAction::Release(Payload::Read(id)));
            return;
        }
        let sector = first * SECT_PER_BIT;
        let size = (n * BM_BLOCK) as u32;
        if res.is_ok() {
            // The host encodes the read's digests and drops the buffer.
            self.send(Outgoing::CsumRequest {
                payload: Payload::Read(id),
                sector,
                block_id,
                len: size,
            });
        } else {
            self.push(ReplAction::Release(Payload::Read(id)));
            self.send(Outgoing::RsRequest(BlockRequest {
                sector,
                block_id,
                size,
            }));
        }
    }

    /// Source: CSUM_RS_REQUEST, a resync request with the target's checksums.
    pub(super) fn on_csum_rs_request(
        &mut self,
        r: &crate::wire::DigestRequest<'_>,
    ) -> Result<(), ReplError> {
        self.check_range("CSUM_RS_REQUEST", r.sector, r.size)?;
        let blocks = u64::from(r.size).div_ceil(BM_BLOCK) as usize;
        if self.resync.side != Some(SyncSide::Source)
            || r.size == 0
            || r.digest.len() != blocks * super::DIGEST_PER_BLOCK
        {
            return Err(ReplError::Unexpected(PacketType::CSUM_RS_REQUEST));
        }
        self.resync.target_started = true;
        self.resync.expected.insert(r.block_id, r.digest.to_vec());
        self.resync.pending.push_back(BlockRequest {
            sector: r.sector,
            block_id: r.block_id,
            size: r.size,
        });
        Ok(())
    }

    /// Target: RS_IS_IN_SYNC, the source found the request's blocks equal (`csums-alg`);
    /// on the source it is not expected.
    pub(super) fn on_rs_is_in_sync(&mut self, a: &BlockAck) -> Result<(), ReplError> {
        self.check_range("RS_IS_IN_SYNC", a.sector, a.size)?;
        if self.resync.side != Some(SyncSide::Target) || !self.resync.take_request(a.block_id) {
            return Err(ReplError::UnknownAck(PacketType::RS_IS_IN_SYNC));
        }
        let n = self.clear_oos(a.sector * 512, u64::from(a.size));
        self.resync.target_done(n, 0);
        self.resync.same_csum += n;
        Ok(())
    }

    pub(super) fn on_rs_request(&mut self, r: &BlockRequest) -> Result<(), ReplError> {
        self.check_range("RS_DATA_REQUEST", r.sector, r.size)?;
        if self.resync.side != Some(SyncSide::Source) || r.size == 0 {
            return Err(ReplError::Unexpected(PacketType::RS_DATA_REQUEST));
        }
        self.resync.target_started = true;
        self.resync.pending.push_back(*r);
        Ok(())
    }

    pub(super) fn on_rs_read_done(&mut self, _now: Instant, id: u64, res: Result<(), Errno>) {
        let Some(r) = self.resync.reads.remove(&id) else {
            self.push(ReplAction::Release(Payload::Read(id)));
            return;
        };
        if !self.is_linked() {
            self.push(ReplAction::Release(Payload::Read(id)));
            return;
        }
        if let Some(expected) = self.resync.expected.remove(&r.block_id)
            && res.is_ok()
            && self.digests.get(&id) == Some(&expected)
        {
            // Equal checksums: no data goes; both sides clear the blocks.
            self.push(ReplAction::Release(Payload::Read(id)));
            self.send(Outgoing::Ack {
                ty: PacketType::RS_IS_IN_SYNC,
                ack: BlockAck {
                    sector: r.sector,
                    block_id: r.block_id,
                    size: r.size,
                    seq: 0,
                },
            });
            let n = self.clear_oos(r.sector * 512, u64::from(r.size));
            self.resync.left_bits = self.resync.left_bits.saturating_sub(n);
            self.resync.same_csum += n;
            return;
        }
        match res {
            Ok(()) => {
                let first = r.sector * 512 / BM_BLOCK;
                let last = (r.sector * 512 + u64::from(r.size) - 1) / BM_BLOCK;
                let set = self
                    .bitmap
                    .count_range(first, last + 1 - first)
                    .unwrap_or(0);
                self.resync.replied_bits += set;
                self.send(Outgoing::RsReply {
                    payload: Payload::Read(id),
                    sector: r.sector,
                    block_id: r.block_id,
                    len: r.size,
                })
            }
            Err(_) => {
                self.push(ReplAction::Release(Payload::Read(id)));
                self.send(Outgoing::Ack {
                    ty: PacketType::NEG_RS_DREPLY,
                    ack: BlockAck {
                        sector: r.sector,
                        block_id: r.block_id,
                        size: r.size,
                        seq: 0,
                    },
                });
                let bits = u64::from(r.size).div_ceil(BM_BLOCK);
                self.resync.failed_bits += bits;
                if self.has_local_disk() {
                    // The volume applies `on-io-error` (DRBD: __drbd_chk_io_error on the
                    // failed read of w_e_end_rsdata_req). Once detached, the rest of the
                    // resync is answered NEG_RS_DREPLY at once: it ends, failed.
                    self.push(ReplAction::LocalIoError { write: false });
                }
            }
        }
    }

    /// Source: the target wrote a block (RS_WRITE_ACK) or had it already (RS_IS_IN_SYNC).
    pub(super) fn on_rs_write_ack(&mut self, a: &BlockAck) -> Result<(), ReplError> {
        self.check_range("RS_WRITE_ACK", a.sector, a.size)?;
        if self.resync.side != Some(SyncSide::Source) {
            return Err(ReplError::Unexpected(PacketType::RS_WRITE_ACK));
        }
        let n = self.clear_oos(a.sector * 512, u64::from(a.size));
        self.resync.left_bits = self.resync.left_bits.saturating_sub(n);
        self.resync.replied_bits = self.resync.replied_bits.saturating_sub(n);
        self.resync.target_confirmed = true;
        Ok(())
    }

    /// NEG_RS_DREPLY: on the target, the source could not read the block; on the source,
    /// the target could not write it. The block stays out of sync either way.
    pub(super) fn on_neg_rs_reply(&mut self, a: &BlockAck) -> Result<(), ReplError> {
        self.check_range("NEG_RS_DREPLY", a.sector, a.size)?;
        if self.on_ov_neg_reply(a) {
            return Ok(());
        }
        let bits = u64::from(a.size).div_ceil(BM_BLOCK);
        match self.resync.side {
            Some(SyncSide::Target) => {
                if !self.resync.take_request(a.block_id) {
                    return Err(ReplError::UnknownAck(PacketType::NEG_RS_DREPLY));
                }
                self.resync.target_done(0, bits);
            }
            Some(SyncSide::Source) => {
                self.resync.replied_bits = self.resync.replied_bits.saturating_sub(bits);
                self.resync.failed_bits += bits;
                self.resync.left_bits = self.resync.left_bits.saturating_sub(bits);
                self.resync.target_confirmed = true;
            }
            None => return Err(ReplError::Unexpected(PacketType::NEG_RS_DREPLY)),
        }
        Ok(())
    }
}
