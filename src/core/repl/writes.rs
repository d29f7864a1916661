//! The Primary's side of replication: application writes and flushes, their local and
//! peer halves, conflicting writes, write epochs and barriers.

use std::collections::{BTreeMap, VecDeque};

use crate::io::Errno;
use crate::wire::{BlockAck, PacketType, WireProtocol, dp_flags};

use super::overlaps;
use super::{LocalIo, Outgoing, Payload, ReplAction, ReplError, Replicator, Waiter, WriteKind};

/// What the peer half of a request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerPart {
    /// Nothing (done, not replicated, or protocol A).
    Done,
    /// RECV_ACK (protocol B).
    Recv,
    /// WRITE_ACK (protocol C).
    Write,
    /// BARRIER_ACK of this epoch (a flush).
    BarrierAck(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReqKind {
    Write {
        offset: u64,
        len: u32,
        kind: WriteKind,
    },
    Flush,
}

#[derive(Debug, Clone, Copy)]
struct Req {
    tag: u64,
    kind: ReqKind,
    started: bool,
    local: Option<Result<(), Errno>>,
    peer: PeerPart,
    /// Sent to the peer (its completion closes the epoch).
    replicated: bool,
    /// The peer has it (DRBD's RQ_NET_OK): acknowledged per protocol, or for a flush its
    /// BARRIER_ACK arrived. A request whose local half failed still succeeds then.
    peer_ok: bool,
    /// It has a local half (false on a Diskless node: the peer alone serves it).
    has_local: bool,
    /// The epoch it was sent in.
    epoch: u32,
}

impl Req {
    fn range(&self) -> Option<(u64, u64)> {
        match self.kind {
            ReqKind::Write { offset, len, .. } => Some((offset, u64::from(len))),
            ReqKind::Flush => None,
        }
    }
}

/// Application requests, by request id (also the DATA `block_id`).
#[derive(Debug, Default)]
pub(super) struct Writes {
    reqs: BTreeMap<u64, Req>,
    /// Not started yet (an earlier overlapping write is in flight), in arrival order.
    waiting: VecDeque<u64>,
    seq: u32,
    epoch: u32,
    epoch_writes: u32,
    close_epoch: bool,
    /// The transfer log: completed replicated writes whose epoch the peer has not
    /// confirmed with BARRIER_ACK yet (epoch, offset, len). Until then the peer may not
    /// have them on stable storage (protocol A: not even received), so a lost connection
    /// marks them out of sync (DRBD's `tl_clear`).
    tl: VecDeque<(u32, u64, u32)>,
}

impl Writes {
    pub(super) fn in_flight(&self) -> usize {
        self.reqs.len()
    }

    /// Does a started application write overlap this range?
    pub(super) fn overlaps_started(&self, offset: u64, len: u64) -> bool {
        self.reqs
            .values()
            .any(|r| r.started && r.range().is_some_and(|(o, l)| overlaps(o, l, offset, len)))
    }

    pub(super) fn link_up(&mut self) {
        self.epoch = 0;
        self.epoch_writes = 0;
        self.close_epoch = false;
        self.tl.clear();
    }

    /// The peer is gone: every peer half is done. Returns the write ranges that did not
    /// reach the peer for sure (to be marked out of sync).
    pub(super) fn link_down(&mut self) -> Vec<(u64, u32)> {
        let mut lost: Vec<(u64, u32)> = self.tl.drain(..).map(|(_, o, l)| (o, l)).collect();
        for r in self.reqs.values_mut() {
            // A replicated write the peer acked while its local half is still running is
            // not in the transfer log yet, but the peer may not have it on stable storage
            // either: DRBD's CONNECTION_LOST_WHILE_PENDING clears RQ_NET_OK of every request
            // not barrier-acked, so it is marked out of sync too (found by the simulation,
            // seed 0x36723f03ce2a8ee4: the peer crashed and lost it from its cache).
            if r.started && (r.peer != PeerPart::Done || r.replicated) {
                if let ReqKind::Write { offset, len, .. } = r.kind {
                    lost.push((offset, len));
                }
                r.peer = PeerPart::Done;
                r.peer_ok = false;
            }
        }
        lost
    }
}

impl Replicator {
    /// An application write (`tag` identifies it to the host, which keeps its payload).
    pub fn handle_app_write(&mut self, tag: u64, offset: u64, len: u32, kind: WriteKind) {
        let id = self.id();
        self.writes.reqs.insert(
            id,
            Req {
                tag,
                kind: ReqKind::Write { offset, len, kind },
                started: false,
                local: None,
                peer: PeerPart::Done,
                replicated: false,
                peer_ok: false,
                has_local: true,
                epoch: 0,
            },
        );
        self.writes.waiting.push_back(id);
        self.pump_writes();
    }

    /// An application flush. The host issues it only after every earlier write has
    /// completed (NBD's ordering), so it starts at once: a local flush, and on the peer a
    /// BARRIER whose ack says the peer's disk is flushed.
    pub fn handle_app_flush(&mut self, tag: u64) {
        let id = self.id();
        let peer = if self.is_linked() {
            let epoch = self.writes.epoch;
            self.send(Outgoing::Barrier { epoch });
            self.writes.epoch = epoch.wrapping_add(1);
            self.writes.epoch_writes = 0;
            self.writes.close_epoch = false;
            PeerPart::BarrierAck(epoch)
        } else {
            PeerPart::Done
        };
        let has_local = self.local_disk;
        self.writes.reqs.insert(
            id,
            Req {
                tag,
                kind: ReqKind::Flush,
                started: true,
                local: (!has_local).then_some(Ok(())),
                peer,
                replicated: false,
                peer_ok: false,
                has_local,
                epoch: 0,
            },
        );
        if has_local {
            self.local_io(Waiter::AppFlush(id), LocalIo::Flush);
        } else {
            self.try_complete(id);
        }
    }

    /// Start every waiting write that no longer conflicts (in order: a write also waits
    /// behind an earlier waiting write it overlaps).
    pub(super) fn pump_writes(&mut self) {
        let mut i = 0;
        while i < self.writes.waiting.len() {
            let id = self.writes.waiting[i];
            let Some((offset, len)) = self.writes.reqs.get(&id).and_then(Req::range) else {
                self.writes.waiting.remove(i);
                continue;
            };
            let blocked_by_earlier = self.writes.waiting.iter().take(i).any(|w| {
                self.writes
                    .reqs
                    .get(w)
                    .and_then(Req::range)
                    .is_some_and(|(o, l)| overlaps(o, l, offset, len))
            });
            if blocked_by_earlier
                || self.writes.overlaps_started(offset, len)
                || self.resync.reading_overlaps(offset, len)
            {
                i += 1;
                continue;
            }
            // Activity log before data.
            if let Some(a) = self.al.as_mut() {
                match a.begin(super::al::extents(offset, len)) {
                    super::al::Begin::Go => {}
                    super::al::Begin::Wait => {
                        i += 1;
                        continue;
                    }
                    super::al::Begin::Write { tr, evicted } if evicted.is_empty() => {
                        self.push(ReplAction::WriteAl { tr, evicted });
                        i += 1;
                        continue;
                    }
                    super::al::Begin::Write { tr, evicted } => {
                        // Completed writes to the evicted extents may still sit in the
                        // data disk's volatile cache; after a crash of this Primary only
                        // the extents in the log are resynced, so they must be durable
                        // before their extents leave it.
                        self.al_after_flush = Some((tr, evicted));
                        self.local_io(Waiter::AlFlush, LocalIo::Flush);
                        i += 1;
                        continue;
                    }
                }
            }
            self.writes.waiting.remove(i);
            self.start_write(id);
        }
    }

    fn start_write(&mut self, id: u64) {
        let Some(req) = self.writes.reqs.get(&id).copied() else {
            return;
        };
        let ReqKind::Write { offset, len, kind } = req.kind else {
            return;
        };
        let mut peer = PeerPart::Done;
        let mut replicated = false;
        if self.is_linked() && self.peer_disk {
            let w = &mut self.writes;
            if w.close_epoch && w.epoch_writes > 0 {
                let epoch = w.epoch;
                w.epoch = epoch.wrapping_add(1);
                w.epoch_writes = 0;
                w.close_epoch = false;
                self.send(Outgoing::Barrier { epoch });
            }
            let (flags, payload) = match kind {
                WriteKind::Write { fua } => (
                    if fua { dp_flags::FUA } else { 0 },
                    Some(Payload::App(req.tag)),
                ),
                WriteKind::Trim => (dp_flags::DISCARD, None),
                WriteKind::Zero { .. } => (dp_flags::ZEROES, None),
            };
            let (ack_flag, part) = match self.config.protocol {
                WireProtocol::B => (dp_flags::SEND_RECEIVE_ACK, PeerPart::Recv),
                WireProtocol::C => (dp_flags::SEND_WRITE_ACK, PeerPart::Write),
                _ => (0, PeerPart::Done),
            };
            self.writes.seq = self.writes.seq.wrapping_add(1);
            self.writes.epoch_writes += 1;
            let seq = self.writes.seq;
            self.send(Outgoing::Data {
                payload,
                sector: offset / 512,
                block_id: id,
                seq,
                dp_flags: flags | ack_flag,
                len,
            });
            peer = part;
            replicated = true;
        } else if self.local_disk {
            self.mark_oos(offset, u64::from(len));
        }
        let epoch = self.writes.epoch;
        let has_local = self.local_disk;
        if let Some(r) = self.writes.reqs.get_mut(&id) {
            r.started = true;
            r.peer = peer;
            r.replicated = replicated;
            // Protocol A: the peer's half is done (and good) once sent.
            r.peer_ok = replicated && peer == PeerPart::Done;
            r.epoch = epoch;
            r.has_local = has_local;
            if !has_local {
                r.local = Some(Ok(()));
            }
        }
        if has_local {
            self.local_io(Waiter::App(id), LocalIo::App { tag: req.tag });
        } else {
            self.try_complete(id);
        }
    }

    pub(super) fn on_app_local_done(&mut self, id: u64, res: Result<(), Errno>) {
        if let Some(r) = self.writes.reqs.get_mut(&id) {
            r.local = Some(res);
        }
        self.try_complete(id);
    }

    pub(super) fn on_app_flush_done(&mut self, id: u64, res: Result<(), Errno>) {
        self.on_app_local_done(id, res);
    }

    pub(super) fn on_ack(&mut self, ty: PacketType, a: &BlockAck) -> Result<(), ReplError> {
        let Some(r) = self.writes.reqs.get_mut(&a.block_id) else {
            return Err(ReplError::UnknownAck(ty));
        };
        let (offset, len) = r.range().ok_or(ReplError::UnknownAck(ty))?;
        match ty {
            PacketType::RECV_ACK if r.peer == PeerPart::Recv => {
                r.peer = PeerPart::Done;
                r.peer_ok = true;
            }
            PacketType::WRITE_ACK if r.peer == PeerPart::Write => {
                r.peer = PeerPart::Done;
                r.peer_ok = true;
            }
            PacketType::NEG_ACK => {
                r.peer = PeerPart::Done;
                r.peer_ok = false;
                self.mark_oos(offset, len);
            }
            _ => return Err(ReplError::UnknownAck(ty)),
        }
        self.try_complete(a.block_id);
        Ok(())
    }

    pub(super) fn on_barrier_ack(&mut self, epoch: u32) {
        // Everything up to this epoch is on the peer's stable storage.
        self.writes
            .tl
            .retain(|&(e, _, _)| (e.wrapping_sub(epoch) as i32) > 0);
        let done: Vec<u64> = self
            .writes
            .reqs
            .iter_mut()
            .filter_map(|(id, r)| match r.peer {
                PeerPart::BarrierAck(e) if epoch.wrapping_sub(e) < u32::MAX / 2 => {
                    r.peer = PeerPart::Done;
                    r.peer_ok = true;
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        for id in done {
            self.try_complete(id);
        }
    }

    /// Complete every request whose halves are both done (after the link went down).
    pub(super) fn complete_ready(&mut self) {
        let ids: Vec<u64> = self.writes.reqs.keys().copied().collect();
        for id in ids {
            self.try_complete(id);
        }
    }

    fn try_complete(&mut self, id: u64) {
        let Some(r) = self.writes.reqs.get(&id) else {
            return;
        };
        let (Some(res), PeerPart::Done) = (r.local, r.peer) else {
            return;
        };
        let r = *r;
        self.writes.reqs.remove(&id);
        let res = match res {
            _ if !r.has_local => {
                // Diskless: the peer's copy is the only one.
                if r.peer_ok {
                    Ok(())
                } else {
                    Err(crate::io::Errno::EIO)
                }
            }
            // A disk that is not UpToDate is not where the write counts: the peer's is.
            Ok(()) if !self.local_trusted && r.range().is_some() && !r.peer_ok => {
                Err(crate::io::Errno::EIO)
            }
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some((offset, len)) = r.range() {
                    // The local disk failed the write while the peer may have it: the
                    // blocks differ, so they are out of sync (drbd_req_destroy sets
                    // out-of-sync unless both RQ_NET_OK and RQ_LOCAL_OK), before the
                    // answer; the volume applies `on-io-error`. (A failed flush is not
                    // a disk failure in DRBD 8.4: it only changes the write ordering.)
                    self.mark_oos(offset, len);
                    self.push(ReplAction::LocalIoError { write: true });
                }
                // DRBD's drbd_req_complete: success when either half succeeded.
                if r.peer_ok { Ok(()) } else { Err(e) }
            }
        };
        if let (Some(a), Some((offset, len))) = (self.al.as_mut(), r.range()) {
            a.end(super::al::extents(offset, len));
        }
        if r.replicated {
            // Close the epoch if this write belongs to the open one (drbd_req_complete:
            // `req->epoch == current_tle_nr`); a write of an epoch already closed changes
            // nothing, so epochs hold every write issued between two such completions.
            if r.epoch == self.writes.epoch {
                self.writes.close_epoch = true;
                // The barrier goes out now rather than with the next write (DRBD 8.4's
                // sender does the same when it finds nothing else to send), so the peer
                // flushes the epoch while the application is still reacting to this
                // completion: at queue depth 1 the flush overlaps the round trip.
                if self.is_linked() && self.writes.epoch_writes > 0 {
                    let epoch = self.writes.epoch;
                    self.writes.epoch = epoch.wrapping_add(1);
                    self.writes.epoch_writes = 0;
                    self.writes.close_epoch = false;
                    self.send(Outgoing::Barrier { epoch });
                }
            }
            if let ReqKind::Write { offset, len, .. } = r.kind {
                self.writes.tl.push_back((r.epoch, offset, len));
            }
        }
        self.push(ReplAction::Complete { tag: r.tag, res });
    }
}
