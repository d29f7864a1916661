//! The data side of a connection, sans I/O: replicated writes (protocols A, B and C),
//! write epochs and barriers, the Secondary's ordered apply, and the resync (both sides),
//! over an in-memory out-of-sync bitmap.
//!
//! The host (the daemon's data path, or the simulation) owns disks, sockets and buffers.
//! It feeds what happened into the `handle_*` methods and then drains
//! [`Replicator::poll_action`] until `None`, carrying out each [`ReplAction`] in order:
//! local I/O ([`ReplAction::Local`], reported back with [`Replicator::handle_local_done`]),
//! packets for the peer ([`ReplAction::Send`]), completions to the application
//! ([`ReplAction::Complete`]) and the end of a resync ([`ReplAction::SyncFinished`]).
//! Payloads never pass through here: the host keeps each buffer under a [`Payload`] key.
//!
//! Rules kept here (DESIGN.md, correctness rules 1-3):
//! - Protocol C completes an application write only when the local write is done and the
//!   peer's WRITE_ACK arrived (B: RECV_ACK; A: sent). A NEG_ACK, or a peer lost with the
//!   write in flight, marks the range out of sync; the application sees success because
//!   the local disk has the data (DRBD with an UpToDate local disk).
//! - An application write overlapping one still in flight waits until that one has
//!   completed (DRBD's `complete_conflicting_writes`); a resync read waits for overlapping
//!   application writes and they wait for it, so the peer receives both in one order.
//! - A write completing closes the epoch; the next replicated write is preceded by BARRIER.
//!   The receiver applies everything in arrival order, waits at each BARRIER until the
//!   epoch's writes are done, flushes (write ordering `flush`) and answers BARRIER_ACK
//!   before it applies anything later.
//! - The resync is pulled by the SyncTarget (RS_DATA_REQUEST per run of out-of-sync
//!   blocks, paced by `resync-rate`); the SyncSource reads and answers RS_DATA_REPLY; the
//!   SyncTarget writes, clears its bits and answers RS_WRITE_ACK; the SyncSource clears
//!   its bits on that ack. Each side finishes when its bitmap is empty.

mod al;
mod apply;
mod bitmap_xfer;
mod controller;
mod reads;
mod resync;
mod verify;
mod writes;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::io::Errno;
use crate::meta::Bitmap;
use crate::wire::{
    Barrier, BarrierAck, BlockAck, BlockRequest, Data, Frame, Packet, PacketType, Socket,
    WireProtocol,
};

pub use bitmap_xfer::{RunChunk, encode_runs};
pub use controller::{ControllerConfig, RateController, SLEEP_TIME};
pub use resync::SyncProgress;

use apply::Apply;
use resync::Resync;
use writes::Writes;

/// Bytes per bitmap bit.
pub const BM_BLOCK: u64 = 4096;
/// Sectors per bitmap bit.
const SECT_PER_BIT: u64 = BM_BLOCK / 512;

/// How the data side is configured (`net` and `disk` sections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplConfig {
    /// `protocol`.
    pub protocol: WireProtocol,
    /// `disk-flushes` (default yes): the receiver flushes its disk at every barrier.
    pub flush_at_barrier: bool,
    /// `resync-rate`, KiB/s (DRBD's default 250).
    pub resync_rate_kib: u64,
    /// Resync requests in flight at most.
    pub max_rs_requests: usize,
    /// Bitmap bits (4 KiB blocks) one resync request covers at most.
    pub rs_max_bits: u64,
    /// `csums-alg crc32c` (both sides): the SyncTarget sends the checksums of its blocks
    /// and the SyncSource sends data only where they differ.
    pub csums: bool,
    /// The dynamic resync-rate controller (`c-plan-ahead` and friends), when the disk
    /// section sets `c-plan-ahead` above 0; `None`: the fixed `resync-rate`.
    pub controller: Option<ControllerConfig>,
}

impl Default for ReplConfig {
    fn default() -> Self {
        ReplConfig {
            protocol: WireProtocol::C,
            flush_at_barrier: true,
            resync_rate_kib: 250,
            max_rs_requests: 16,
            rs_max_bits: 128,
            csums: false,
            controller: None,
        }
    }
}

/// Which buffer the host holds for a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Payload {
    /// The application write `tag` (its NBD request).
    App(u64),
    /// Data received from the peer, kept by the host under this key.
    Peer(u64),
    /// What the local read `id` read.
    Read(u64),
}

/// What an application write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Write the payload; `fua`: durable before the reply.
    Write {
        /// Force unit access.
        fua: bool,
    },
    /// Discard the range.
    Trim,
    /// Write zeroes (`may_trim`: by discarding if that reads back as zeroes).
    Zero {
        /// NBD's !NO_HOLE.
        may_trim: bool,
    },
}

/// Local I/O the host must do; the result comes back with the action's `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalIo {
    /// Carry out the application request `tag` on the local disk as it was received.
    App {
        /// The application request.
        tag: u64,
    },
    /// Write the payload `key` received from the peer.
    Write {
        /// Host key of the payload.
        key: Payload,
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u32,
        /// Durable before done.
        fua: bool,
    },
    /// Discard or zero a range for the peer.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u32,
        /// Write zeroes (else trim).
        zero: bool,
    },
    /// Read for the peer (resync, checksums, verify); the host keeps the buffer as
    /// [`Payload::Read`]`(id)`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u32,
        /// Before reporting the read done, the host hands its [`block_digests`] to
        /// [`Replicator::handle_read_digest`] (the core compares them with the peer's).
        digest: bool,
    },
    /// Flush the disk's volatile cache.
    Flush,
}

impl LocalIo {
    /// A read of the sectors the peer asked for (`sector`, `size` bytes), for it.
    pub(super) fn read_for_peer(sector: u64, size: u32, digest: bool) -> LocalIo {
        LocalIo::Read {
            offset: sector * 512,
            len: size,
            digest,
        }
    }
}

/// A packet for the peer. Data payloads are referred to by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// DATA (a replicated write). For a trim or zero (`dp_flags` DISCARD or ZEROES) there
    /// is no payload and `len` is sent instead.
    Data {
        /// The payload (`None` for trim/zero).
        payload: Option<Payload>,
        /// First sector.
        sector: u64,
        /// Echoed in the ack.
        block_id: u64,
        /// Write sequence number.
        seq: u32,
        /// `dp_flags`.
        dp_flags: u32,
        /// Bytes.
        len: u32,
    },
    /// BARRIER.
    Barrier {
        /// The epoch it closes.
        epoch: u32,
    },
    /// BARRIER_ACK.
    BarrierAck {
        /// The epoch.
        epoch: u32,
        /// Writes counted in it.
        set_size: u32,
    },
    /// One of the block acks (RECV_ACK, WRITE_ACK, NEG_ACK, RS_WRITE_ACK, NEG_RS_DREPLY).
    Ack {
        /// The packet type.
        ty: PacketType,
        /// The ack.
        ack: BlockAck,
    },
    /// RS_DATA_REQUEST.
    RsRequest(BlockRequest),
    /// CSUM_RS_REQUEST: the [`block_digests`] of `payload` (a local read), not the data.
    CsumRequest {
        /// The local read whose digests go out.
        payload: Payload,
        /// First sector.
        sector: u64,
        /// The request's id.
        block_id: u64,
        /// Bytes.
        len: u32,
    },
    /// OV_REQUEST (online verify).
    OvRequest(BlockRequest),
    /// OV_REPLY: the [`block_digests`] of `payload` (a local read).
    OvReply {
        /// The local read whose digests go out.
        payload: Payload,
        /// First sector.
        sector: u64,
        /// The requester's id.
        block_id: u64,
        /// Bytes.
        len: u32,
    },
    /// DATA_REQUEST: a read this node's disk cannot serve.
    DataRequest(BlockRequest),
    /// DATA_REPLY with the data of local read `payload` (for a peer's DATA_REQUEST).
    DataReply {
        /// The buffer.
        payload: Payload,
        /// First sector.
        sector: u64,
        /// The requester's id.
        block_id: u64,
        /// Bytes.
        len: u32,
    },
    /// RS_DATA_REPLY with the data of local read `read`.
    RsReply {
        /// The buffer.
        payload: Payload,
        /// First sector.
        sector: u64,
        /// The requester's id.
        block_id: u64,
        /// Bytes.
        len: u32,
    },
}

/// Which side of a resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncSide {
    /// Has the good data, answers requests.
    Source,
    /// Receives the data; Inconsistent until done.
    Target,
}

/// One thing for the host to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplAction {
    /// Local disk I/O; report with [`Replicator::handle_local_done`]`(id, ..)`.
    Local {
        /// Identifies the I/O.
        id: u64,
        /// What to do.
        io: LocalIo,
    },
    /// Send a packet (in order; data-socket and meta-socket packets keep their own order).
    Send(Outgoing),
    /// Answer the application request `tag`.
    Complete {
        /// The request.
        tag: u64,
        /// Its result.
        res: Result<(), Errno>,
    },
    /// The payload `key` is no longer needed (its write is done).
    Release(Payload),
    /// Make an activity-log transaction durable on the meta-disk: first the bitmap blocks
    /// of the `evicted` extents (their bits must survive a crash once they leave the log),
    /// then `tr`, synced; then [`Replicator::handle_al_written`]. Writes to the extents it
    /// adds wait until then. When it evicts extents, the core has flushed the data disk
    /// first (a [`LocalIo::Flush`]), so that the writes to them are durable once a crash
    /// no longer resyncs them.
    WriteAl {
        /// The transaction.
        tr: crate::meta::AlTransaction,
        /// Extents that leave the active set.
        evicted: Vec<u32>,
    },
    /// The local disk failed a write (the application's, or one the peer replicated: that
    /// one was answered with NEG_ACK and its blocks are marked out of sync) or a read (for
    /// the application or for the peer): the volume applies `on-io-error`
    /// ([`crate::core::Volume::handle_local_io_error`]). The request itself was answered
    /// from the peer where it could be.
    LocalIoError {
        /// A write failed (else a read).
        write: bool,
    },
    /// Part of the application read `tag` came from the peer: copy the payload into the
    /// read's buffer at byte `at`, then release the payload. The read completes with a
    /// [`ReplAction::Complete`] once every part is in.
    ReadData {
        /// The application request.
        tag: u64,
        /// Byte offset within the request's buffer.
        at: u32,
        /// The data received.
        payload: Payload,
    },
    /// The resync ended on this side: `failed` blocks could not be synced (the target
    /// stays Inconsistent if any).
    SyncFinished {
        /// This node's side.
        side: SyncSide,
        /// Blocks that failed.
        failed: u64,
        /// Blocks found equal by their checksums (`csums-alg`), not transferred.
        same_csum: u64,
    },
    /// The online verify ended on this side (both replicas compared, or the link went).
    VerifyFinished {
        /// `Source`: this node started it (VerifyS); `Target`: VerifyT.
        side: SyncSide,
        /// 4 KiB blocks found different (now marked out of sync).
        found: u64,
        /// Every block was compared (false: cut short by a disconnect).
        complete: bool,
    },
}

/// A peer that broke the data protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplError {
    /// A packet that has no place in the current state.
    #[error("unexpected {0} packet")]
    Unexpected(PacketType),
    /// A range outside the device or not in 4 KiB blocks.
    #[error("{what} at sector {sector} size {size} is outside the device")]
    BadRange {
        /// Which packet.
        what: &'static str,
        /// First sector.
        sector: u64,
        /// Bytes.
        size: u32,
    },
    /// An ack for a request this node does not have in flight.
    #[error("{0} for an unknown request")]
    UnknownAck(PacketType),
}

/// The link as the data side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkMode {
    /// No peer: writes are local and marked out of sync.
    Down,
    /// Replicating (Connected, or a resync on either side).
    Up,
}

/// The data side of one volume with one peer. See the module doc.
#[derive(Debug)]
pub struct Replicator {
    config: ReplConfig,
    size_bytes: u64,
    bitmap: Bitmap,
    link: LinkMode,
    next_id: u64,
    writes: Writes,
    apply: Apply,
    resync: Resync,
    verify: verify::Verify,
    /// Digests of local reads made with `digest` (see [`Replicator::handle_read_digest`]).
    digests: BTreeMap<u64, Vec<u8>>,
    /// The activity log's active set (application writes wait for their extents).
    al: Option<al::ActiveSet>,
    /// An AL transaction that evicts extents, held until the data disk is flushed.
    al_after_flush: Option<(crate::meta::AlTransaction, Vec<u32>)>,
    actions: VecDeque<ReplAction>,
    /// Local I/O in flight: id -> who waits for it.
    local: BTreeMap<u64, Waiter>,
    /// The local disk is attached (false: Diskless, application I/O goes to the peer).
    local_disk: bool,
    /// The peer has a disk that takes replicated writes (its disk is at least
    /// Inconsistent; DRBD's `drbd_should_do_remote`).
    peer_disk: bool,
    /// Reads served by the peer (both sides).
    reads: reads::Reads,
    /// The local disk holds good data (UpToDate): a write it has is done even if the peer
    /// lost it. Otherwise (Inconsistent: a SyncTarget, or after `on-io-error pass_on`) the
    /// next resync from the peer would overwrite it, so only the peer's copy counts.
    local_trusted: bool,
}

/// Who a local I/O belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// An application write (writes.rs), by request id.
    App(u64),
    /// The local flush of an application flush.
    AppFlush(u64),
    /// A write received from the peer (apply.rs).
    Peer,
    /// The receiver's barrier flush.
    BarrierFlush,
    /// A resync read on the SyncSource.
    RsRead,
    /// The SyncTarget's read for the checksums of a resync request (`csums-alg`).
    CsumRead,
    /// VerifyT: a read whose digests answer OV_REQUEST.
    OvRead,
    /// VerifyS: a read to compare with the peer's OV_REPLY.
    OvCompare,
    /// A read for the peer's DATA_REQUEST.
    DataRead,
    /// The data disk's flush before an AL transaction that evicts extents.
    AlFlush,
}

impl Replicator {
    /// A data side for a device of `size_bytes` with this bitmap (bits set: out of sync),
    /// link down.
    pub fn new(config: ReplConfig, size_bytes: u64, bitmap: Bitmap) -> Self {
        Replicator {
            config,
            size_bytes,
            bitmap,
            link: LinkMode::Down,
            next_id: 1,
            writes: Writes::default(),
            apply: Apply::default(),
            resync: Resync::default(),
            verify: verify::Verify::default(),
            digests: BTreeMap::new(),
            al: None,
            al_after_flush: None,
            actions: VecDeque::new(),
            local: BTreeMap::new(),
            local_disk: true,
            peer_disk: true,
            reads: reads::Reads::default(),
            local_trusted: true,
        }
    }

    /// Keep an activity log: application writes first make their 4 MiB extents active
    /// with a [`ReplAction::WriteAl`] (continuing `writer`'s ring).
    pub fn with_activity_log(mut self, writer: crate::meta::AlWriter) -> Self {
        self.al = Some(al::ActiveSet::new(writer));
        self
    }

    /// The activity-log transaction asked for is durable.
    pub fn handle_al_written(&mut self) {
        if let Some(a) = self.al.as_mut() {
            a.committed();
        }
        self.pump_writes();
    }

    /// Extents in the activity log now.
    pub fn al_extents(&self) -> Vec<u32> {
        self.al
            .as_ref()
            .map(al::ActiveSet::active_extents)
            .unwrap_or_default()
    }

    // ----- queries --------------------------------------------------------------------

    /// The out-of-sync bitmap.
    pub fn bitmap(&self) -> &Bitmap {
        &self.bitmap
    }

    /// Out-of-sync KiB (proc's `oos:`).
    pub fn oos_kib(&self) -> u64 {
        self.bitmap.count().saturating_mul(BM_BLOCK / 1024)
    }

    /// Whether the peer link is up for replication.
    pub fn is_linked(&self) -> bool {
        self.link == LinkMode::Up
    }

    /// The resync, while one runs.
    pub fn sync_progress(&self, now: Instant) -> Option<SyncProgress> {
        self.resync.progress(now).map(|p| SyncProgress {
            want_kib_s: self
                .resync
                .controller_want()
                .unwrap_or(self.config.resync_rate_kib),
            ..p
        })
    }

    /// The host should stop reading the data socket until the receiver has caught up
    /// (a barrier flush or overlapping writes hold back this many packets).
    pub fn receive_backlog(&self) -> usize {
        self.apply.backlog()
    }

    /// Application requests in flight (waiting or submitted).
    pub fn app_in_flight(&self) -> usize {
        self.writes.in_flight()
    }

    /// When to call [`Replicator::handle_timeout`] (the resync's pacing), if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.resync.next_wakeup(),
            self.verify_wakeup(),
            self.barrier_flush_retry_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next action. Drain after every input.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<ReplAction> {
        self.actions.pop_front()
    }

    // ----- link -----------------------------------------------------------------------

    /// The peer is connected (after the handshake): replicate from now on.
    pub fn handle_link_up(&mut self) {
        self.link = LinkMode::Up;
        self.writes.link_up();
        self.apply.link_up();
    }

    /// The peer is gone: everything waiting for it completes locally, its ranges are marked
    /// out of sync; a resync stops (the bitmap keeps what is left).
    pub fn handle_link_down(&mut self) {
        if self.link == LinkMode::Down {
            return;
        }
        self.link = LinkMode::Down;
        let lost = self.writes.link_down();
        for (offset, len) in lost {
            self.mark_oos(offset, u64::from(len));
        }
        self.complete_ready();
        self.resync.stop();
        self.stop_verify();
        let released = self.apply.link_down();
        for key in released {
            self.push(ReplAction::Release(key));
        }
        self.fail_remote_reads();
        self.pump_writes();
    }

    /// The device shrank to `size_bytes` (the connection agreed on the smaller disk); the
    /// bitmap keeps the bits that still cover the device.
    pub fn handle_resize(&mut self, size_bytes: u64) {
        let mut b = Bitmap::new(size_bytes / 512);
        b.or_words(0, self.bitmap.words());
        self.bitmap = b;
        self.size_bytes = size_bytes;
    }

    /// Mark the whole device out of sync (a full sync).
    pub fn set_all_out_of_sync(&mut self) {
        let bits = self.bitmap.bits();
        let _ = self.bitmap.set_range(0, bits);
    }

    /// OR in a run-length chunk of the peer's bitmap (the compressed bitmap exchange);
    /// the bits it covered, or `None` for a malformed or overlong chunk.
    pub fn merge_peer_runs(
        &mut self,
        start_bit: u64,
        runs: impl Iterator<Item = Option<crate::wire::Run>>,
    ) -> Option<u64> {
        bitmap_xfer::apply_runs(&mut self.bitmap, start_bit, runs)
    }

    /// OR in the peer's bitmap words from `start_word` (the bitmap exchange).
    pub fn merge_peer_words(&mut self, start_word: u64, words: &[u64]) {
        self.bitmap.or_words(start_word, words);
    }

    /// Start the resync on this side (after the bitmap exchange and SYNC_UUID).
    pub fn start_sync(&mut self, now: Instant, side: SyncSide) {
        self.resync.start(now, side, self.bitmap.count());
        if side == SyncSide::Target
            && let Some(cfg) = self.config.controller
        {
            self.resync.set_controller(now, cfg);
        }
        self.pump_resync(now);
    }

    /// Resync pacing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.retry_barrier_flush(now);
        self.pump_resync(now);
        self.pump_verify(now);
    }

    // ----- helpers shared by the parts ------------------------------------------------

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn push(&mut self, a: ReplAction) {
        self.actions.push_back(a);
    }

    fn local_io(&mut self, waiter: Waiter, io: LocalIo) -> u64 {
        let id = self.id();
        self.local.insert(id, waiter);
        self.push(ReplAction::Local { id, io });
        id
    }

    fn send(&mut self, o: Outgoing) {
        self.push(ReplAction::Send(o));
    }

    fn mark_oos(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset / BM_BLOCK;
        let last = (offset + len - 1) / BM_BLOCK;
        let bits = self.bitmap.bits();
        if first < bits {
            let n = self
                .bitmap
                .set_range(first, (last + 1).min(bits) - first)
                .unwrap_or(0);
            self.resync.note_new_oos(n);
        }
    }

    fn clear_oos(&mut self, offset: u64, len: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        let first = offset / BM_BLOCK;
        let last = (offset + len - 1) / BM_BLOCK;
        let bits = self.bitmap.bits();
        if first >= bits {
            return 0;
        }
        self.bitmap
            .clear_range(first, (last + 1).min(bits) - first)
            .unwrap_or(0)
    }

    fn check_range(&self, what: &'static str, sector: u64, size: u32) -> Result<(), ReplError> {
        let bad = ReplError::BadRange { what, sector, size };
        let off = sector.checked_mul(512).ok_or(bad)?;
        let end = off.checked_add(u64::from(size)).ok_or(bad)?;
        if end > self.size_bytes || off % 512 != 0 || size % 512 != 0 {
            return Err(bad);
        }
        Ok(())
    }

    // ----- inputs: local completions and peer packets ---------------------------------

    /// A local I/O finished.
    pub fn handle_local_done(&mut self, now: Instant, id: u64, res: Result<(), Errno>) {
        let Some(w) = self.local.remove(&id) else {
            return;
        };
        match w {
            Waiter::App(req) => self.on_app_local_done(req, res),
            Waiter::AppFlush(req) => self.on_app_flush_done(req, res),
            Waiter::Peer => self.on_peer_write_done(id, res),
            Waiter::BarrierFlush => self.on_barrier_flush_done(now, id, res),
            Waiter::RsRead => self.on_rs_read_done(now, id, res),
            Waiter::CsumRead => self.on_csum_read_done(id, res),
            Waiter::OvRead => self.on_ov_read_done(id, res),
            Waiter::OvCompare => self.on_ov_compare_done(id, res),
            Waiter::DataRead => self.on_data_read_done(id, res),
            Waiter::AlFlush => {
                // A failed flush leaves nothing better to do than go on (DRBD would
                // detach the disk on the error), but the writes to the evicted extents may
                // die with the cache: they stay out of sync, and the host writes their bits
                // with the transaction (found by the simulation, seed 0xc74295ddab409c07).
                if let Some((tr, evicted)) = self.al_after_flush.take() {
                    if res.is_err() {
                        let bytes = crate::meta::al::AL_EXTENT_BYTES;
                        for &e in &evicted {
                            self.mark_oos(u64::from(e) * bytes, bytes);
                        }
                    }
                    self.push(ReplAction::WriteAl { tr, evicted });
                }
            }
        }
        self.digests.remove(&id);
        self.pump_verify(now);
        self.pump_writes();
        self.pump_apply();
        self.pump_resync(now);
    }

    /// A packet from the peer that belongs to the data side. Data packets carry their
    /// payload under `key` (the host keeps it until [`ReplAction::Release`]).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: &Packet<'_>,
        key: Option<u64>,
    ) -> Result<(), ReplError> {
        if self.link != LinkMode::Up {
            return Ok(());
        }
        match packet {
            Packet::Data(d) => self.on_peer_data(d, key)?,
            Packet::Barrier(b) => self.on_barrier(b.epoch),
            Packet::RsDataReply(d) => self.on_rs_reply(d, key)?,
            Packet::DataReply(d) => self.on_data_reply(d, key)?,
            Packet::DataRequest(r) => self.on_data_request(r)?,
            Packet::NegDReply(a) => self.on_neg_dreply(a)?,
            Packet::RecvAck(a) => self.on_ack(PacketType::RECV_ACK, a)?,
            Packet::WriteAck(a) => self.on_ack(PacketType::WRITE_ACK, a)?,
            Packet::NegAck(a) => self.on_ack(PacketType::NEG_ACK, a)?,
            Packet::BarrierAck(b) => self.on_barrier_ack(b.epoch),
            Packet::RsDataRequest(r) => self.on_rs_request(r)?,
            Packet::RsWriteAck(a) => self.on_rs_write_ack(a)?,
            Packet::NegRsDReply(a) => self.on_neg_rs_reply(a)?,
            Packet::RsIsInSync(a) => self.on_rs_is_in_sync(a)?,
            Packet::CsumRsRequest(r) => self.on_csum_rs_request(r)?,
            Packet::OvRequest(r) => self.on_ov_request(now, r)?,
            Packet::OvReply(r) => self.on_ov_reply(r)?,
            Packet::OvResult(a) => self.on_ov_result(a)?,
            other => return Err(ReplError::Unexpected(other.packet_type())),
        }
        self.pump_writes();
        self.pump_apply();
        self.pump_resync(now);
        self.pump_verify(now);
        Ok(())
    }

    /// The [`block_digests`] of the local read `id` (one asked for with `digest`), handed
    /// in before [`Replicator::handle_local_done`] for it.
    pub fn handle_read_digest(&mut self, id: u64, digest: &[u8]) {
        if self.local.contains_key(&id) {
            self.digests.insert(id, digest.to_vec());
        }
    }
}

/// Bytes of digest per 4 KiB block in CSUM_RS_REQUEST and OV_REPLY.
pub const DIGEST_PER_BLOCK: usize = 4;

/// Blocks one checksum or verify request covers at most (its digests fill
/// [`crate::wire::MAX_DIGEST`]).
pub const DIGEST_MAX_BITS: u64 = crate::wire::MAX_DIGEST as u64 / DIGEST_PER_BLOCK as u64;

/// The digests the peer compares for `csums-alg` and online verify: the CRC32C
/// (big-endian) of every 4 KiB block of `data`, concatenated, so a difference is found
/// to the block, not to the request.
pub fn block_digests(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for chunk in data.chunks(BM_BLOCK as usize) {
        out.extend_from_slice(&crc32c::crc32c(chunk).to_be_bytes());
    }
}

/// Does `a..a+alen` overlap `b..b+blen`?
fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Resync pacing: how long `bytes` take at `rate_kib` KiB/s.
fn pace(bytes: u64, rate_kib: u64) -> Duration {
    if rate_kib == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(bytes.saturating_mul(1_000_000) / (rate_kib * 1024))
}

impl Outgoing {
    /// The socket it goes on.
    pub fn socket(&self) -> Socket {
        self.packet_type().socket()
    }

    /// Its packet type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Outgoing::Data { .. } => PacketType::DATA,
            Outgoing::Barrier { .. } => PacketType::BARRIER,
            Outgoing::BarrierAck { .. } => PacketType::BARRIER_ACK,
            Outgoing::Ack { ty, .. } => *ty,
            Outgoing::RsRequest(_) => PacketType::RS_DATA_REQUEST,
            Outgoing::RsReply { .. } => PacketType::RS_DATA_REPLY,
            Outgoing::DataRequest(_) => PacketType::DATA_REQUEST,
            Outgoing::DataReply { .. } => PacketType::DATA_REPLY,
            Outgoing::CsumRequest { .. } => PacketType::CSUM_RS_REQUEST,
            Outgoing::OvRequest(_) => PacketType::OV_REQUEST,
            Outgoing::OvReply { .. } => PacketType::OV_REPLY,
        }
    }

    /// The payload buffer the host must supply to [`Outgoing::encode`], if any.
    pub fn payload(&self) -> Option<Payload> {
        match self {
            Outgoing::Data { payload, .. } => *payload,
            Outgoing::RsReply { payload, .. }
            | Outgoing::DataReply { payload, .. }
            | Outgoing::CsumRequest { payload, .. }
            | Outgoing::OvReply { payload, .. } => Some(*payload),
            _ => None,
        }
    }

    /// Appends the frame (volume `volume`) to `out`; `data` is the payload's bytes
    /// ([`Outgoing::payload`]), empty when there is none; `digest` is its
    /// `data-integrity-alg` digest (empty when none is configured; only DATA and
    /// RS_DATA_REPLY carry it). For CSUM_RS_REQUEST and OV_REPLY, `data` is the local
    /// read whose [`block_digests`] are sent.
    pub fn encode(&self, volume: u16, data: &[u8], digest: &[u8], out: &mut Vec<u8>) {
        let len_bytes;
        let mut digests = Vec::new();
        let packet = match *self {
            Outgoing::Data {
                payload,
                sector,
                block_id,
                seq,
                dp_flags,
                len,
            } => {
                let body = if payload.is_some() {
                    data
                } else {
                    len_bytes = len.to_be_bytes();
                    &len_bytes[..]
                };
                Packet::Data(Data {
                    sector,
                    block_id,
                    seq,
                    dp_flags,
                    digest: if payload.is_some() { digest } else { &[] },
                    payload: body,
                })
            }
            Outgoing::Barrier { epoch } => Packet::Barrier(Barrier { epoch }),
            Outgoing::BarrierAck { epoch, set_size } => {
                Packet::BarrierAck(BarrierAck { epoch, set_size })
            }
            Outgoing::Ack { ty, ack } => match ty {
                PacketType::RECV_ACK => Packet::RecvAck(ack),
                PacketType::WRITE_ACK => Packet::WriteAck(ack),
                PacketType::NEG_ACK => Packet::NegAck(ack),
                PacketType::RS_WRITE_ACK => Packet::RsWriteAck(ack),
                PacketType::NEG_RS_DREPLY => Packet::NegRsDReply(ack),
                PacketType::NEG_DREPLY => Packet::NegDReply(ack),
                PacketType::OV_RESULT => Packet::OvResult(ack),
                _ => Packet::RsIsInSync(ack),
            },
            Outgoing::RsRequest(r) => Packet::RsDataRequest(r),
            Outgoing::DataRequest(r) => Packet::DataRequest(r),
            Outgoing::OvRequest(r) => Packet::OvRequest(r),
            Outgoing::CsumRequest {
                sector,
                block_id,
                len,
                ..
            }
            | Outgoing::OvReply {
                sector,
                block_id,
                len,
                ..
            } => {
                block_digests(data, &mut digests);
                let r = crate::wire::DigestRequest {
                    sector,
                    block_id,
                    size: len,
                    digest: &digests,
                };
                if matches!(self, Outgoing::CsumRequest { .. }) {
                    Packet::CsumRsRequest(r)
                } else {
                    Packet::OvReply(r)
                }
            }
            Outgoing::RsReply {
                sector, block_id, ..
            }
            | Outgoing::DataReply {
                sector, block_id, ..
            } => {
                let d = Data {
                    sector,
                    block_id,
                    seq: 0,
                    dp_flags: 0,
                    digest,
                    payload: data,
                };
                if matches!(self, Outgoing::RsReply { .. }) {
                    Packet::RsDataReply(d)
                } else {
                    Packet::DataReply(d)
                }
            }
        };
        Frame::new(volume, packet).encode(out);
    }
}
