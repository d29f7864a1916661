//! The receiving side: writes and resync data from the peer, applied in arrival order,
//! acks per protocol, and barriers (wait for the epoch, flush, BARRIER_ACK).
//!
//! The flush a barrier needs may already be under way: a Secondary that has written the
//! peer's writes and has nothing else to do flushes at once, before the BARRIER arrives
//! (it comes a round trip later: the Primary sends it when the epoch's first WRITE_ACK
//! completes a write). The barrier then waits for that flush instead of starting its own,
//! but only if the flush was issued after every write it must cover had completed: a flush
//! makes durable what completed before it was submitted, nothing later. DRBD 8.4's
//! `receive_Barrier` starts the flush only when the barrier is received.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::io::Errno;
use crate::wire::{BlockAck, Data, PacketType, dp_flags};

use super::{BM_BLOCK, overlaps};
use super::{LocalIo, Outgoing, Payload, ReplAction, ReplError, Replicator, Waiter};

/// Something received and not applied yet.
#[derive(Debug, Clone, Copy)]
enum Incoming {
    /// DATA (a replicated write, trim or zero).
    Data {
        key: Option<u64>,
        sector: u64,
        block_id: u64,
        seq: u32,
        dp_flags: u32,
        len: u32,
    },
    /// RS_DATA_REPLY.
    Rs {
        key: u64,
        sector: u64,
        block_id: u64,
        len: u32,
    },
    /// BARRIER.
    Barrier(u32),
    /// DATA_REQUEST: read for the peer once the writes before it are applied.
    Read(crate::wire::BlockRequest),
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    key: Option<u64>,
    sector: u64,
    block_id: u64,
    seq: u32,
    len: u32,
    /// Protocol C: answer WRITE_ACK when written.
    write_ack: bool,
    /// Resync data.
    rs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BarrierPhase {
    /// Waiting for the epoch's writes.
    Draining,
    /// Waiting for a disk flush that covers this many completed writes
    /// ([`Apply::completed`]).
    Flushing(u64),
}

#[derive(Debug, Default)]
pub(super) struct Apply {
    queue: VecDeque<Incoming>,
    inflight: BTreeMap<u64, InFlight>,
    epoch_writes: u32,
    barrier: Option<(u32, u32, BarrierPhase)>,
    /// Writes completed so far (a count that also moves at each link-up, so that the
    /// first barrier of a connection always flushes).
    completed: u64,
    /// [`Apply::completed`] when the newest successful flush was submitted: those writes
    /// are durable. A barrier with nothing newer (an application flush right after an
    /// epoch's barrier) is answered without flushing the disk again.
    durable: u64,
    /// Flushes in flight: their local I/O id and the [`Apply::completed`] they cover.
    flushes: Vec<(u64, u64)>,
    /// A replicated write completed since the last flush was submitted: when the
    /// Secondary goes idle, it flushes before the barrier comes.
    early_due: bool,
    /// The barrier's flush failed: when to try it again (the BARRIER_ACK says the epoch
    /// is on stable storage, so it waits until a flush succeeds).
    flush_retry_at: Option<Instant>,
}

/// How long a Secondary waits before it tries a failed barrier flush again.
pub(super) const FLUSH_RETRY: Duration = Duration::from_millis(100);

impl Apply {
    pub(super) fn backlog(&self) -> usize {
        self.queue.len()
    }

    /// Resync data queued or being written.
    pub(super) fn rs_pending(&self) -> bool {
        self.inflight.values().any(|f| f.rs)
            || self.queue.iter().any(|i| matches!(i, Incoming::Rs { .. }))
    }

    pub(super) fn link_up(&mut self) {
        self.epoch_writes = 0;
        self.barrier = None;
        self.completed += 1;
    }

    /// A flush in flight covers every completed write.
    fn flush_covers_all(&self) -> bool {
        self.flushes.iter().any(|&(_, c)| c >= self.completed)
    }

    /// Drop what was received but not started; returns the payloads to release. Writes
    /// already submitted finish (their acks go nowhere).
    pub(super) fn link_down(&mut self) -> Vec<Payload> {
        self.barrier = None;
        self.flush_retry_at = None;
        self.epoch_writes = 0;
        for f in self.inflight.values_mut() {
            f.write_ack = false;
            f.rs = false;
        }
        self.queue
            .drain(..)
            .filter_map(|i| match i {
                Incoming::Data { key, .. } => key.map(Payload::Peer),
                Incoming::Rs { key, .. } => Some(Payload::Peer(key)),
                Incoming::Barrier(_) | Incoming::Read(_) => None,
            })
            .collect()
    }
}

/// The length a DATA packet writes: its payload, or for a trim/zero the 4-byte length
/// that is its payload.
fn data_len(d: &Data<'_>) -> Option<u32> {
    if d.dp_flags & (dp_flags::DISCARD | dp_flags::ZEROES) != 0 {
        let b: [u8; 4] = d.payload.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    } else {
        u32::try_from(d.payload.len()).ok()
    }
}

impl Replicator {
    pub(super) fn on_peer_data(&mut self, d: &Data<'_>, key: Option<u64>) -> Result<(), ReplError> {
        let len = data_len(d).ok_or(ReplError::BadRange {
            what: "DATA",
            sector: d.sector,
            size: 0,
        })?;
        self.check_range("DATA", d.sector, len)?;
        if !self.peer_has_disk() {
            // The peer writes through us alone: its disk misses this (DRBD's
            // receive_Data with pdsk < D_INCONSISTENT), so a disk it attaches later
            // resyncs it.
            self.mark_oos(d.sector * 512, u64::from(len));
        }
        let is_write = d.dp_flags & (dp_flags::DISCARD | dp_flags::ZEROES) == 0;
        self.apply.queue.push_back(Incoming::Data {
            key: if is_write { key } else { None },
            sector: d.sector,
            block_id: d.block_id,
            seq: d.seq,
            dp_flags: d.dp_flags,
            len,
        });
        if !is_write && let Some(k) = key {
            self.push(ReplAction::Release(Payload::Peer(k)));
        }
        Ok(())
    }

    pub(super) fn on_rs_reply(&mut self, d: &Data<'_>, key: Option<u64>) -> Result<(), ReplError> {
        let len = u32::try_from(d.payload.len()).unwrap_or(u32::MAX);
        self.check_range("RS_DATA_REPLY", d.sector, len)?;
        if !self.resync.take_request(d.block_id) {
            return Err(ReplError::UnknownAck(PacketType::RS_DATA_REPLY));
        }
        let Some(key) = key else {
            return Err(ReplError::Unexpected(PacketType::RS_DATA_REPLY));
        };
        self.apply.queue.push_back(Incoming::Rs {
            key,
            sector: d.sector,
            block_id: d.block_id,
            len,
        });
        Ok(())
    }

    pub(super) fn on_barrier(&mut self, epoch: u32) {
        self.apply.queue.push_back(Incoming::Barrier(epoch));
    }

    pub(super) fn queue_data_request(&mut self, r: crate::wire::BlockRequest) {
        self.apply.queue.push_back(Incoming::Read(r));
    }

    /// Start what may start, in order; flush early if that leaves the receiver idle.
    pub(super) fn pump_apply(&mut self) {
        self.start_queued();
        self.flush_early();
    }

    fn start_queued(&mut self) {
        loop {
            self.check_barrier();
            if self.apply.barrier.is_some() {
                return;
            }
            let Some(front) = self.apply.queue.front().copied() else {
                return;
            };
            match front {
                Incoming::Barrier(epoch) => {
                    self.apply.queue.pop_front();
                    let set_size = std::mem::take(&mut self.apply.epoch_writes);
                    self.apply.barrier = Some((epoch, set_size, BarrierPhase::Draining));
                }
                Incoming::Data { sector, len, .. }
                | Incoming::Rs { sector, len, .. }
                | Incoming::Read(crate::wire::BlockRequest {
                    sector, size: len, ..
                }) => {
                    let offset = sector * 512;
                    if self
                        .apply
                        .inflight
                        .values()
                        .any(|f| overlaps(f.sector * 512, u64::from(f.len), offset, u64::from(len)))
                    {
                        return;
                    }
                    self.apply.queue.pop_front();
                    self.start_apply(front);
                }
            }
        }
    }

    fn start_apply(&mut self, item: Incoming) {
        match item {
            Incoming::Data {
                key,
                sector,
                block_id,
                seq,
                dp_flags: flags,
                len,
            } => {
                self.apply.epoch_writes += 1;
                if flags & dp_flags::SEND_RECEIVE_ACK != 0 {
                    self.send(Outgoing::Ack {
                        ty: PacketType::RECV_ACK,
                        ack: BlockAck {
                            sector,
                            block_id,
                            size: len,
                            seq,
                        },
                    });
                }
                let io = match key {
                    Some(k) => LocalIo::Write {
                        key: Payload::Peer(k),
                        offset: sector * 512,
                        len,
                        fua: flags & dp_flags::FUA != 0,
                    },
                    None => LocalIo::Discard {
                        offset: sector * 512,
                        len,
                        zero: flags & dp_flags::ZEROES != 0,
                    },
                };
                let id = self.local_io(Waiter::Peer, io);
                self.apply.inflight.insert(
                    id,
                    InFlight {
                        key,
                        sector,
                        block_id,
                        seq,
                        len,
                        write_ack: flags & dp_flags::SEND_WRITE_ACK != 0,
                        rs: false,
                    },
                );
            }
            Incoming::Rs {
                key,
                sector,
                block_id,
                len,
            } => {
                let id = self.local_io(
                    Waiter::Peer,
                    LocalIo::Write {
                        key: Payload::Peer(key),
                        offset: sector * 512,
                        len,
                        fua: false,
                    },
                );
                self.apply.inflight.insert(
                    id,
                    InFlight {
                        key: Some(key),
                        sector,
                        block_id,
                        seq: 0,
                        len,
                        write_ack: false,
                        rs: true,
                    },
                );
            }
            Incoming::Read(r) => self.start_data_read(r),
            Incoming::Barrier(_) => {}
        }
    }

    pub(super) fn on_peer_write_done(&mut self, id: u64, res: Result<(), Errno>) {
        let Some(f) = self.apply.inflight.remove(&id) else {
            return;
        };
        self.apply.completed += 1;
        // (A write that completes after the link went is nobody's epoch any more.)
        self.apply.early_due |= !f.rs && self.is_linked();
        if let Some(k) = f.key {
            self.push(ReplAction::Release(Payload::Peer(k)));
        }
        let ack = BlockAck {
            sector: f.sector,
            block_id: f.block_id,
            size: f.len,
            seq: f.seq,
        };
        if f.rs {
            let bits = u64::from(f.len).div_ceil(BM_BLOCK);
            if res.is_ok() {
                self.clear_oos(f.sector * 512, u64::from(f.len));
                self.resync.target_done(bits, 0);
                self.send(Outgoing::Ack {
                    ty: PacketType::RS_WRITE_ACK,
                    ack,
                });
            } else {
                self.resync.target_done(0, bits);
                self.send(Outgoing::Ack {
                    ty: PacketType::NEG_RS_DREPLY,
                    ack,
                });
                if self.has_local_disk() {
                    self.push(ReplAction::LocalIoError { write: true });
                }
            }
        } else if res.is_err() {
            self.mark_oos(f.sector * 512, u64::from(f.len));
            self.push(ReplAction::LocalIoError { write: true });
            if f.write_ack {
                self.send(Outgoing::Ack {
                    ty: PacketType::NEG_ACK,
                    ack,
                });
            }
        } else if f.write_ack {
            self.send(Outgoing::Ack {
                ty: PacketType::WRITE_ACK,
                ack,
            });
        }
    }

    /// A barrier whose epoch has drained flushes, then is answered.
    fn check_barrier(&mut self) {
        let Some((epoch, set_size, BarrierPhase::Draining)) = self.apply.barrier else {
            return;
        };
        if !self.apply.inflight.is_empty() {
            return;
        }
        let need = self.apply.completed;
        if self.config.flush_at_barrier && self.apply.durable < need {
            self.apply.barrier = Some((epoch, set_size, BarrierPhase::Flushing(need)));
            if !self.apply.flush_covers_all() {
                self.start_barrier_flush();
            }
        } else {
            self.apply.barrier = None;
            self.send(Outgoing::BarrierAck { epoch, set_size });
        }
    }

    /// A flush of every write completed so far.
    fn start_barrier_flush(&mut self) {
        let id = self.local_io(Waiter::BarrierFlush, LocalIo::Flush);
        self.apply.flushes.push((id, self.apply.completed));
        self.apply.early_due = false;
    }

    /// The receiver is idle after replicated writes: flush now, so that the barrier that
    /// follows them finds the flush under way (or done). One early flush at a time; none
    /// while a barrier waits (it starts its own) or during a resync's stream of writes.
    fn flush_early(&mut self) {
        let a = &self.apply;
        if self.config.flush_at_barrier
            && a.early_due
            && a.barrier.is_none()
            && a.queue.is_empty()
            && a.inflight.is_empty()
            && a.flushes.is_empty()
            && a.flush_retry_at.is_none()
            && a.durable < a.completed
            && self.is_linked()
        {
            self.start_barrier_flush();
        }
    }

    pub(super) fn on_barrier_flush_done(&mut self, now: Instant, id: u64, res: Result<(), Errno>) {
        let Some(i) = self.apply.flushes.iter().position(|&(f, _)| f == id) else {
            return;
        };
        let (_, covers) = self.apply.flushes.swap_remove(i);
        if res.is_ok() {
            self.apply.durable = self.apply.durable.max(covers);
        }
        let Some((epoch, set_size, BarrierPhase::Flushing(need))) = self.apply.barrier else {
            return;
        };
        if self.apply.durable >= need {
            self.apply.barrier = None;
            if self.is_linked() {
                self.send(Outgoing::BarrierAck { epoch, set_size });
            }
        } else if res.is_err() && !self.apply.flush_covers_all() {
            // The epoch's writes may still sit in the disk's volatile cache: the
            // BARRIER_ACK would tell the Primary they are durable, and it would forget them
            // (its transfer log marks only unacknowledged epochs out of sync when the link
            // goes). Try again later; the barrier holds later writes back meanwhile.
            self.apply.flush_retry_at = Some(now + FLUSH_RETRY);
        }
    }

    /// When a failed barrier flush is tried again.
    pub(super) fn barrier_flush_retry_at(&self) -> Option<Instant> {
        self.apply.flush_retry_at
    }

    /// Tries a failed barrier flush again once its time has come.
    pub(super) fn retry_barrier_flush(&mut self, now: Instant) {
        if self.apply.flush_retry_at.is_some_and(|t| t <= now) {
            self.apply.flush_retry_at = None;
            if matches!(self.apply.barrier, Some((_, _, BarrierPhase::Flushing(_)))) {
                self.start_barrier_flush();
            }
        }
    }
}
