//! Reads served by the peer, both sides.
//!
//! The requester: an application read that this node's disk cannot serve (the disk is
//! Diskless after an I/O error, not UpToDate, or failed the read) goes to the peer as
//! DATA_REQUEST packets of at most [`MAX_DATA`] bytes each; every DATA_REPLY is copied
//! into the read's buffer ([`ReplAction::ReadData`]) and the read completes when all its
//! parts are in. A NEG_DREPLY, or the link going down, fails it with EIO: there is no
//! other copy to try (DRBD 8.4's `READ_RETRY_REMOTE_CANCELED`).
//!
//! The server: a DATA_REQUEST queues behind the writes received before it that overlap
//! it (the apply queue's order), is read from the local disk and answered with
//! DATA_REPLY, or NEG_DREPLY when the read fails (and the local error goes to the volume
//! as [`ReplAction::LocalIoError`]).

use std::collections::BTreeMap;

use crate::io::Errno;
use crate::wire::{BlockAck, BlockRequest, Data, MAX_DATA, PacketType};

use super::{LocalIo, Outgoing, Payload, ReplAction, ReplError, Replicator, Waiter};

/// One application read in progress at the peer.
#[derive(Debug, Clone, Copy)]
struct Pending {
    tag: u64,
    /// Parts not answered yet.
    parts_left: u32,
    /// A part failed.
    failed: bool,
}

/// What the reads served by the peer have in flight.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// Application reads by their first part's id.
    pending: BTreeMap<u64, Pending>,
    /// DATA_REQUEST parts in flight: block id -> (read, byte offset in it, bytes).
    parts: BTreeMap<u64, (u64, u32, u32)>,
    /// Local reads for the peer's DATA_REQUESTs: read id -> the request.
    serving: BTreeMap<u64, BlockRequest>,
}

impl Reads {
    /// Application reads waiting for the peer.
    pub(super) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

impl Replicator {
    /// The local disk is gone (detached after an I/O error): from now on application
    /// writes go to the peer alone, reads must come from it ([`Replicator::handle_app_read`]),
    /// and nothing asks for local I/O. Local I/O already submitted still reports back.
    pub fn handle_detach(&mut self) {
        self.local_disk = false;
        self.al = None;
        self.al_after_flush = None;
        self.pump_writes();
    }

    /// Marks a range out of sync (an application read failed there: DRBD's
    /// READ_COMPLETED_WITH_ERROR).
    pub fn mark_out_of_sync(&mut self, offset: u64, len: u64) {
        if self.local_disk {
            self.mark_oos(offset, len);
        }
    }

    /// Whether the local disk holds good data (UpToDate); see the field.
    pub fn handle_local_trusted(&mut self, trusted: bool) {
        self.local_trusted = trusted;
    }

    /// Whether the local disk is attached.
    pub fn has_local_disk(&self) -> bool {
        self.local_disk
    }

    /// Whether the peer has a disk that takes replicated writes (its disk state is at
    /// least Inconsistent). Without one, writes stay local and are marked out of sync; a
    /// node whose peer is Diskless marks what that peer writes through it (DRBD's
    /// `receive_Data` with `pdsk < D_INCONSISTENT`).
    pub fn handle_peer_disk(&mut self, has_disk: bool) {
        self.peer_disk = has_disk;
    }

    /// Whether the peer has a disk that takes writes.
    pub(super) fn peer_has_disk(&self) -> bool {
        self.peer_disk
    }

    /// An application read of `len` bytes at `offset` that the local disk cannot serve:
    /// ask the peer. Fails at once with EIO when there is no peer with a disk.
    pub fn handle_app_read(&mut self, tag: u64, offset: u64, len: u32) {
        if !self.is_linked() || !self.peer_disk || len == 0 {
            let res = if len == 0 { Ok(()) } else { Err(Errno::EIO) };
            self.push(ReplAction::Complete { tag, res });
            return;
        }
        let first = self.next_id;
        let parts = len.div_ceil(MAX_DATA);
        self.reads.pending.insert(
            first,
            Pending {
                tag,
                parts_left: parts,
                failed: false,
            },
        );
        let mut at = 0u32;
        while at < len {
            let n = (len - at).min(MAX_DATA);
            let id = self.id();
            self.reads.parts.insert(id, (first, at, n));
            self.send(Outgoing::DataRequest(BlockRequest {
                sector: (offset + u64::from(at)) / 512,
                block_id: id,
                size: n,
            }));
            at += n;
        }
    }

    /// Application reads waiting for the peer.
    pub fn remote_reads_in_flight(&self) -> usize {
        self.reads.in_flight()
    }

    pub(super) fn on_data_reply(
        &mut self,
        d: &Data<'_>,
        key: Option<u64>,
    ) -> Result<(), ReplError> {
        let Some(&(read, at, n)) = self.reads.parts.get(&d.block_id) else {
            return Err(ReplError::UnknownAck(PacketType::DATA_REPLY));
        };
        let (Some(key), true) = (key, d.payload.len() == n as usize) else {
            return Err(ReplError::BadRange {
                what: "DATA_REPLY",
                sector: d.sector,
                size: u32::try_from(d.payload.len()).unwrap_or(u32::MAX),
            });
        };
        self.reads.parts.remove(&d.block_id);
        if let Some(p) = self.reads.pending.get(&read) {
            let tag = p.tag;
            self.push(ReplAction::ReadData {
                tag,
                at,
                payload: Payload::Peer(key),
            });
        } else {
            self.push(ReplAction::Release(Payload::Peer(key)));
        }
        self.read_part_done(read, true);
        Ok(())
    }

    pub(super) fn on_neg_dreply(&mut self, a: &BlockAck) -> Result<(), ReplError> {
        let Some((read, _, _)) = self.reads.parts.remove(&a.block_id) else {
            return Err(ReplError::UnknownAck(PacketType::NEG_DREPLY));
        };
        self.read_part_done(read, false);
        Ok(())
    }

    fn read_part_done(&mut self, read: u64, ok: bool) {
        let Some(p) = self.reads.pending.get_mut(&read) else {
            return;
        };
        p.failed |= !ok;
        p.parts_left = p.parts_left.saturating_sub(1);
        if p.parts_left == 0 {
            let p = *p;
            self.reads.pending.remove(&read);
            let res = if p.failed { Err(Errno::EIO) } else { Ok(()) };
            self.push(ReplAction::Complete { tag: p.tag, res });
        }
    }

    /// The link went down: every read waiting for the peer fails.
    pub(super) fn fail_remote_reads(&mut self) {
        self.reads.parts.clear();
        for (_, p) in std::mem::take(&mut self.reads.pending) {
            self.push(ReplAction::Complete {
                tag: p.tag,
                res: Err(Errno::EIO),
            });
        }
    }

    pub(super) fn on_data_request(&mut self, r: &BlockRequest) -> Result<(), ReplError> {
        self.check_range("DATA_REQUEST", r.sector, r.size)?;
        if r.size == 0 {
            return Err(ReplError::Unexpected(PacketType::DATA_REQUEST));
        }
        self.queue_data_request(*r);
        Ok(())
    }

    /// The apply queue reached a DATA_REQUEST: read for the peer (or refuse at once
    /// without a disk).
    pub(super) fn start_data_read(&mut self, r: BlockRequest) {
        if !self.local_disk {
            self.send_neg_dreply(&r);
            return;
        }
        let id = self.local_io(
            Waiter::DataRead,
            LocalIo::read_for_peer(r.sector, r.size, false),
        );
        self.reads.serving.insert(id, r);
    }

    pub(super) fn on_data_read_done(&mut self, id: u64, res: Result<(), Errno>) {
        let Some(r) = self.reads.serving.remove(&id) else {
            self.push(ReplAction::Release(Payload::Read(id)));
            return;
        };
        match res {
            Ok(()) if self.is_linked() => self.send(Outgoing::DataReply {
                payload: Payload::Read(id),
                sector: r.sector,
                block_id: r.block_id,
                len: r.size,
            }),
            Ok(()) => self.push(ReplAction::Release(Payload::Read(id))),
            Err(_) => {
                self.push(ReplAction::Release(Payload::Read(id)));
                self.push(ReplAction::LocalIoError { write: false });
                if self.is_linked() {
                    self.send_neg_dreply(&r);
                }
            }
        }
    }

    fn send_neg_dreply(&mut self, r: &BlockRequest) {
        self.send(Outgoing::Ack {
            ty: PacketType::NEG_DREPLY,
            ack: BlockAck {
                sector: r.sector,
                block_id: r.block_id,
                size: r.size,
                seq: 0,
            },
        });
    }
}
