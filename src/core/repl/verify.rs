//! Online verify (DRBD's `drbdadm verify`): the node that starts it (VerifyS) walks the
//! whole device in requests paced by `resync-rate`; the peer (VerifyT) reads each range and
//! answers OV_REPLY with the CRC32C of every 4 KiB block ([`super::block_digests`]); VerifyS
//! reads its own blocks, compares, marks every block that differs out of sync and answers
//! OV_RESULT (IN_SYNC, or OUT_OF_SYNC with the span of the differences, which the peer
//! marks too). Nothing is repaired here: the marked blocks move at the next resync (after a
//! disconnect/connect), as in DRBD.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::io::Errno;
use crate::wire::{BlockAck, BlockRequest, DigestRequest, PacketType};

use super::resync::SyncProgress;
use super::{
    BM_BLOCK, DIGEST_PER_BLOCK, LocalIo, Outgoing, Payload, ReplAction, ReplError, Replicator,
    SECT_PER_BIT, SyncSide, Waiter, pace,
};

#[derive(Debug, Default)]
pub(super) struct Verify {
    side: Option<SyncSide>,
    started: Option<Instant>,
    total_bits: u64,
    left_bits: u64,
    found: u64,
    /// VerifyS: next block to request.
    cursor: u64,
    /// VerifyS: requests out, block_id -> (first bit, bits).
    requests: BTreeMap<u64, (u64, u64)>,
    /// VerifyS: when the next request may go.
    next_send: Option<Instant>,
    /// VerifyS: compare reads in flight, local id -> (request, the peer's digests).
    compares: BTreeMap<u64, (BlockRequest, Vec<u8>)>,
    /// VerifyT: reads in flight, local id -> request.
    reads: BTreeMap<u64, BlockRequest>,
    /// VerifyT: ranges answered whose OV_RESULT has not come yet.
    awaiting_results: u64,
    /// VerifyS: as many requests out as allowed (the next waits for a reply).
    capped: bool,
}

impl Verify {
    fn start(&mut self, now: Instant, side: SyncSide, bits: u64) {
        *self = Verify {
            side: Some(side),
            started: Some(now),
            total_bits: bits,
            left_bits: bits,
            next_send: Some(now),
            ..Verify::default()
        };
    }

    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        match self.side {
            Some(SyncSide::Source) if !self.capped => self.next_send,
            _ => None,
        }
    }
}

impl Replicator {
    /// Start an online verify from this node (VerifyS). The caller checked that the link
    /// is up and no resync or verify runs.
    pub fn start_verify(&mut self, now: Instant) {
        let bits = self.bitmap.bits();
        self.verify.start(now, SyncSide::Source, bits);
        self.pump_verify(now);
    }

    /// Is an online verify running on this side (VerifyS or VerifyT)?
    pub fn verify_side(&self) -> Option<SyncSide> {
        self.verify.side
    }

    /// The verify's progress, for proc and status (`verified:`).
    pub fn verify_progress(&self, now: Instant) -> Option<SyncProgress> {
        let side = self.verify.side?;
        let started = self.verify.started?;
        let kib = |bits: u64| bits * (BM_BLOCK / 1024);
        let elapsed = now.saturating_duration_since(started);
        Some(SyncProgress {
            side,
            total_kib: kib(self.verify.total_bits),
            left_kib: kib(self.verify.left_bits),
            elapsed,
            mark_age: elapsed,
            mark_left_kib: kib(self.verify.total_bits),
            want_kib_s: self.config.resync_rate_kib,
        })
    }

    pub(super) fn verify_wakeup(&self) -> Option<Instant> {
        self.verify.next_wakeup()
    }

    /// The link went: a verify ends where it is (what it found stays marked).
    pub(super) fn stop_verify(&mut self) {
        if let Some(side) = self.verify.side {
            let found = self.verify.found;
            for id in std::mem::take(&mut self.verify.reads).into_keys() {
                self.push(ReplAction::Release(Payload::Read(id)));
            }
            self.verify = Verify::default();
            self.push(ReplAction::VerifyFinished {
                side,
                found,
                complete: false,
            });
        }
    }

    pub(super) fn pump_verify(&mut self, now: Instant) {
        if !self.is_linked() {
            return;
        }
        match self.verify.side {
            Some(SyncSide::Source) => self.pump_verify_source(now),
            Some(SyncSide::Target)
                if self.verify.left_bits == 0
                    && self.verify.awaiting_results == 0
                    && self.verify.reads.is_empty() =>
            {
                self.finish_verify(SyncSide::Target);
            }
            Some(SyncSide::Target) => {}
            None => {}
        }
    }

    fn pump_verify_source(&mut self, now: Instant) {
        let bits = self.bitmap.bits();
        let rate = self.config.resync_rate_kib;
        while self.verify.cursor < bits
            && self.verify.requests.len() + self.verify.compares.len() < self.config.max_rs_requests
        {
            let next = self.verify.next_send.unwrap_or(now);
            if next > now {
                break;
            }
            let first = self.verify.cursor;
            let n = self
                .config
                .rs_max_bits
                .min(super::DIGEST_MAX_BITS)
                .min(bits - first)
                .max(1);
            self.verify.cursor = first + n;
            let block_id = self.id();
            self.verify.requests.insert(block_id, (first, n));
            let size = (n * BM_BLOCK) as u32;
            self.send(Outgoing::OvRequest(BlockRequest {
                sector: first * SECT_PER_BIT,
                block_id,
                size,
            }));
            self.verify.next_send = Some(next.max(now) + pace(u64::from(size), rate));
        }
        self.verify.capped =
            self.verify.requests.len() + self.verify.compares.len() >= self.config.max_rs_requests;
        if self.verify.cursor >= bits
            && self.verify.requests.is_empty()
            && self.verify.compares.is_empty()
        {
            self.finish_verify(SyncSide::Source);
        }
    }

    fn finish_verify(&mut self, side: SyncSide) {
        let found = self.verify.found;
        self.verify = Verify::default();
        self.push(ReplAction::VerifyFinished {
            side,
            found,
            complete: true,
        });
    }

    /// VerifyT: OV_REQUEST (the first one starts the verify on this side).
    pub(super) fn on_ov_request(
        &mut self,
        now: Instant,
        r: &BlockRequest,
    ) -> Result<(), ReplError> {
        self.check_range("OV_REQUEST", r.sector, r.size)?;
        if r.size == 0 || self.verify.side == Some(SyncSide::Source) || self.resync.is_running() {
            return Err(ReplError::Unexpected(PacketType::OV_REQUEST));
        }
        if self.verify.side.is_none() {
            let bits = self.bitmap.bits();
            self.verify.start(now, SyncSide::Target, bits);
        }
        let id = self.local_io(
            Waiter::OvRead,
            LocalIo::read_for_peer(r.sector, r.size, false),
        );
        self.verify.reads.insert(id, *r);
        Ok(())
    }

    /// VerifyT: the range was read; its digests go back (a read error marks it).
    pub(super) fn on_ov_read_done(&mut self, id: u64, res: Result<(), Errno>) {
        let Some(r) = self.verify.reads.remove(&id) else {
            self.push(ReplAction::Release(Payload::Read(id)));
            return;
        };
        let bits = u64::from(r.size).div_ceil(BM_BLOCK);
        self.verify.left_bits = self.verify.left_bits.saturating_sub(bits);
        if !self.is_linked() {
            self.push(ReplAction::Release(Payload::Read(id)));
            return;
        }
        if res.is_ok() {
            self.verify.awaiting_results += 1;
            self.send(Outgoing::OvReply {
                payload: Payload::Read(id),
                sector: r.sector,
                block_id: r.block_id,
                len: r.size,
            });
        } else {
            // This side cannot read it: it differs as far as anyone can tell.
            self.push(ReplAction::Release(Payload::Read(id)));
            self.mark_oos(r.sector * 512, u64::from(r.size));
            self.verify.found += bits;
            self.send(Outgoing::Ack {
                ty: PacketType::NEG_RS_DREPLY,
                ack: BlockAck {
                    sector: r.sector,
                    block_id: r.block_id,
                    size: r.size,
                    seq: 0,
                },
            });
        }
    }

    /// VerifyS: OV_REPLY with the peer's digests: read ours to compare.
    pub(super) fn on_ov_reply(&mut self, r: &DigestRequest<'_>) -> Result<(), ReplError> {
        self.check_range("OV_REPLY", r.sector, r.size)?;
        let Some(&(first, n)) = self.verify.requests.get(&r.block_id) else {
            return Err(ReplError::UnknownAck(PacketType::OV_REPLY));
        };
        if first * SECT_PER_BIT != r.sector
            || n * BM_BLOCK != u64::from(r.size)
            || r.digest.len() != n as usize * DIGEST_PER_BLOCK
        {
            return Err(ReplError::Unexpected(PacketType::OV_REPLY));
        }
        self.verify.requests.remove(&r.block_id);
        let req = BlockRequest {
            sector: r.sector,
            block_id: r.block_id,
            size: r.size,
        };
        let id = self.local_io(
            Waiter::OvCompare,
            LocalIo::read_for_peer(r.sector, r.size, true),
        );
        self.verify.compares.insert(id, (req, r.digest.to_vec()));
        Ok(())
    }

    /// VerifyS: our blocks were read; compare them block by block.
    pub(super) fn on_ov_compare_done(&mut self, id: u64, res: Result<(), Errno>) {
        self.push(ReplAction::Release(Payload::Read(id)));
        let Some((r, theirs)) = self.verify.compares.remove(&id) else {
            return;
        };
        let bits = u64::from(r.size).div_ceil(BM_BLOCK);
        self.verify.left_bits = self.verify.left_bits.saturating_sub(bits);
        let ours = self.digests.get(&id).filter(|_| res.is_ok()).cloned();
        let mut span: Option<(u64, u64)> = None;
        for i in 0..bits {
            let at = i as usize * DIGEST_PER_BLOCK;
            let same = ours.as_ref().is_some_and(|o| {
                o.get(at..at + DIGEST_PER_BLOCK) == theirs.get(at..at + DIGEST_PER_BLOCK)
            });
            if !same {
                let block = r.sector / SECT_PER_BIT + i;
                self.mark_oos(block * BM_BLOCK, BM_BLOCK);
                self.verify.found += 1;
                span = Some(span.map_or((block, block), |(a, _)| (a, block)));
            }
        }
        if !self.is_linked() {
            return;
        }
        let ack = match span {
            None => BlockAck {
                sector: r.sector,
                block_id: BlockAck::IN_SYNC,
                size: r.size,
                seq: 0,
            },
            Some((a, b)) => BlockAck {
                sector: a * SECT_PER_BIT,
                block_id: BlockAck::OUT_OF_SYNC,
                size: ((b - a + 1) * BM_BLOCK) as u32,
                seq: 0,
            },
        };
        self.send(Outgoing::Ack {
            ty: PacketType::OV_RESULT,
            ack,
        });
    }

    /// VerifyT: OV_RESULT for a range it answered; VerifyS: NEG_RS_DREPLY when the peer
    /// could not read one (handled in `on_neg_rs_reply`'s verify branch).
    pub(super) fn on_ov_result(&mut self, a: &BlockAck) -> Result<(), ReplError> {
        self.check_range("OV_RESULT", a.sector, a.size)?;
        if self.verify.side != Some(SyncSide::Target) || self.verify.awaiting_results == 0 {
            return Err(ReplError::UnknownAck(PacketType::OV_RESULT));
        }
        self.verify.awaiting_results -= 1;
        match a.block_id {
            BlockAck::IN_SYNC => {}
            BlockAck::OUT_OF_SYNC => {
                self.mark_oos(a.sector * 512, u64::from(a.size));
                self.verify.found += u64::from(a.size).div_ceil(BM_BLOCK);
            }
            _ => return Err(ReplError::UnknownAck(PacketType::OV_RESULT)),
        }
        Ok(())
    }

    /// VerifyS: the peer could not read a range: it counts as different.
    pub(super) fn on_ov_neg_reply(&mut self, a: &BlockAck) -> bool {
        if self.verify.side != Some(SyncSide::Source) {
            return false;
        }
        if self.verify.requests.remove(&a.block_id).is_none() {
            return false;
        }
        let bits = u64::from(a.size).div_ceil(BM_BLOCK);
        self.mark_oos(a.sector * 512, u64::from(a.size));
        self.verify.found += bits;
        self.verify.left_bits = self.verify.left_bits.saturating_sub(bits);
        true
    }
}
