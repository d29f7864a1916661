//! The session thread: one input queue, the connection and data-side state machines, and
//! the host work they ask for (sockets, disk jobs, calls to the event loop).

mod actions;
mod exchange;
mod link;
mod ring_recv;
mod sb_save;
mod split;

use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::core::conn::{ConnConfig, ConnEvent, Connection, LocalDisk, TransportUp};
use crate::core::repl::{
    LocalIo, Payload, ReplAction, ReplConfig, Replicator, SyncSide, WriteKind,
};
use crate::core::{ConnState, DiskState, Handshake, Role};
use crate::io::{AlignedBuf, BackendSpec, BufPool, Done, Errno, Op};
use crate::meta::{Bitmap, Uuids};
use crate::wire::{self, Frame, Packet, PacketType, Socket, SyncUuid, flags};

use super::super::peer::{
    FrameError, FrameReader, LinkConfig, Listener, PeerLink, PeerStream, PeerTls, establish,
};
use super::bridge::Completions;
use super::disk::SessionRing;
use super::inbox::{Inbox, InputTx};
use super::{Admin, Host, Input, PeerCall, PeerStatus};

/// Everything a session needs to know.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The resource, for messages.
    pub resource: String,
    /// Where this node listens and the peer is.
    pub link: LinkConfig,
    /// TLS for both sockets (`tls-*` in `urbd-options`); `None`: in clear.
    pub tls: Option<PeerTls>,
    /// The connection's settings.
    pub conn: ConnConfig,
    /// The data side's settings.
    pub repl: ReplConfig,
    /// The data disk, for the session's own I/O.
    pub disk: BackendSpec,
    /// The device size, bytes.
    pub size_bytes: u64,
    /// The local disk as the event loop sees it now.
    pub local: LocalDisk,
    /// `ko-count` (0: off).
    pub ko_count: u32,
    /// The meta-disk, for activity-log transactions and bitmap write-back (`None`: keep
    /// no activity log).
    pub meta: Option<(crate::meta::MetaDevice, crate::meta::Metadata)>,
    /// The `fencing` disk option: under `resource-and-stonith` a Primary that loses its
    /// peer freezes application I/O until the event loop says the peer is fenced.
    pub fencing: crate::core::Fencing,
    /// Where and how this node saves its blocks when it is a split-brain victim.
    pub sb_save: SbSaveConfig,
}

/// The split-brain save settings of a volume.
#[derive(Debug, Clone)]
pub struct SbSaveConfig {
    /// The resource's state folder (`/var/lib/urbd/RES`).
    pub dir: std::path::PathBuf,
    /// This node's name (for the file's header).
    pub node: String,
    /// The volume number.
    pub volume: u32,
    /// How much may be saved.
    pub limit: crate::sbsave::SaveLimit,
}

/// How long the loop sleeps at most (status refresh).
const TICK: Duration = Duration::from_millis(250);
/// How often a changed bitmap is written back at most (besides the write-backs at resync
/// start and end, disconnect and down): a crash then resumes a resync from at most this
/// far back.
const BITMAP_WRITEBACK: Duration = Duration::from_secs(5);
/// How often a change of the out-of-sync count alone is passed to the event loop at most.
const OOS_REPORT_EVERY: Duration = Duration::from_millis(500);
/// How often status is refreshed at most while the session is busy.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// Free disk buffers kept for reuse while a resync runs, at most (16 of its largest).
const RESYNC_POOL_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No resync in preparation.
    Idle,
    /// Exchanging bitmaps before a resync.
    Bitmap {
        side: SyncSide,
        /// Bits of the bitmap, and how many the peer's chunks have covered so far.
        bits_total: u64,
        bits_got: u64,
        /// A SYNC_UUID that arrived early (target).
        sync_uuid: Option<u64>,
    },
    /// Target: bitmap merged, waiting for SYNC_UUID.
    WaitSyncUuid,
    /// Source: asked the event loop for the sync UUID.
    AwaitSource,
    /// Target: asked the event loop to record the sync UUID (Inconsistent) first.
    AwaitTarget,
}

/// What a disk job carries back.
/// A block received from the peer, left where it arrived: inside its frame's payload.
pub(super) struct PeerBuf {
    pub(super) frame: Vec<u8>,
    pub(super) at: usize,
    pub(super) len: usize,
}

impl PeerBuf {
    /// The block (empty if the frame is shorter than recorded, which decoding rules out).
    pub(super) fn bytes(&self) -> &[u8] {
        self.frame.get(self.at..self.at + self.len).unwrap_or(&[])
    }
}

#[derive(Debug, Clone, Copy)]
enum Job {
    /// The application's request `tag`: keep its buffer until the completion (`write`: it
    /// changes the disk).
    App { tag: u64, write: bool },
    /// A read for the peer: keep the buffer as the payload (`digest`: hand the core its
    /// block digests first).
    Read { digest: bool },
    /// Anything else (`write`: it changes the disk).
    Other { write: bool },
}

struct LinkIo {
    data: PeerStream,
    meta: PeerStream,
    /// Receiver threads (inside TLS).
    readers: Vec<JoinHandle<()>>,
    /// Receives on the session's ring (plain TCP).
    ring: Option<ring_recv::RingRecv>,
}

pub(super) struct Session {
    cfg: SessionConfig,
    conn: Connection,
    repl: Replicator,
    tx: InputTx,
    rx: Inbox,
    host: Box<dyn Host>,
    status: Arc<Mutex<PeerStatus>>,
    completions: Arc<Completions>,
    /// Finished application requests not yet handed to the data path (one doorbell ring
    /// per loop turn).
    app_done: Vec<Done>,
    /// Finished disk operations being handled.
    disk_done: Vec<Done>,
    disk: SessionRing,
    /// The data disk, for a synchronous flush before bitmap write-back (cleared bits must
    /// not reach the meta-disk before the data they stand for is durable).
    data_sync: Option<std::fs::File>,
    /// A write (or discard) to the data disk completed since `data_sync` was last
    /// flushed (true at the start: nothing is known of what came before).
    data_dirty: bool,
    /// The session's `md.bitmap` is what the meta-disk's bitmap area holds (false until
    /// the session wrote all of it once, and after a failed write).
    bm_on_disk_known: bool,
    /// Frames for the peer not yet written, per socket: written once per loop turn, so a
    /// burst of acks or data costs one system call and one wakeup of the peer's receiver.
    out_data: Vec<u8>,
    out_meta: Vec<u8>,
    /// Listening for the peer while not StandAlone (a StandAlone node refuses the peer's
    /// dials instead of collecting them in its backlog, where they went stale and crossed
    /// the node's own dial at the next `connect`).
    listener: Option<Arc<Listener>>,
    connector: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    link: Option<LinkIo>,
    generation: u64,
    app_ops: HashMap<u64, Op>,
    app_bufs: HashMap<u64, AlignedBuf>,
    jobs: HashMap<u64, Job>,
    peer_bufs: HashMap<u64, PeerBuf>,
    /// Bytes of peer data received and not written yet (the data socket's receiver stops
    /// reading above [`MAX_PEER_BUFFERED`]: TCP then holds the peer back, as DRBD's
    /// `max-buffers` does).
    buffered: Arc<std::sync::atomic::AtomicUsize>,
    read_bufs: HashMap<u64, AlignedBuf>,
    /// Large disk buffers reused while a resync runs (its reads and writes), emptied when
    /// it is over.
    pool: BufPool,
    next_key: u64,
    phase: Phase,
    peer_uuids: Option<Uuids>,
    cs_override: Option<ConnState>,
    peer_role: Role,
    peer_disk: DiskState,
    last_state_sent: Option<(Role, DiskState)>,
    reported: Option<PeerCall>,
    stopping: bool,
    sent_bytes: u64,
    recv_bytes: u64,
    scratch: Vec<u8>,
    rng: u64,
    /// `data-integrity-alg crc32c` is on.
    integrity: bool,
    /// Bytes written / read locally for the peer.
    disk_written: u64,
    disk_read: u64,
    /// The resync's progress as last published, and, between the end of a resync and the
    /// event loop recording it, that progress completed (so status never shows a resync
    /// state without its progress lines).
    last_progress: Option<crate::core::repl::SyncProgress>,
    finishing: Option<crate::core::repl::SyncProgress>,
    /// Activity-log transactions and whole-bitmap writes done (`al:` and `bm:`).
    al_writes: u64,
    bm_writes: u64,
    /// Link generation of each call the event loop has not answered yet, in order.
    calls: std::collections::VecDeque<u64>,
    /// Replicated writes waiting for the peer's ack, by block id, with when they were sent
    /// (`timeout` x `ko-count`).
    peer_waits: std::collections::BTreeMap<u64, Instant>,
    /// `pause-sync` here (user_isp) and on the peer (peer_isp).
    user_paused: bool,
    peer_paused: bool,
    /// When the online verify started here (VerifyS), for its summary line.
    verify_started: Option<Instant>,
    /// When the out-of-sync count was last passed to the event loop.
    oos_reported_at: Instant,
    /// The last bitmap write-back: when, and the number of bits set then.
    bm_written: (Instant, u64),
    /// Counters of checksum-based resync (`csums-alg`): blocks found equal.
    same_csum_blocks: u64,
    /// Blocks the last online verify found different.
    verify_found: u64,
    /// The bitmap weight the peer sent with its P_UUIDS during the handshake (what it
    /// changed since the two were last connected), for the split-brain report.
    handshake_peer_bits: u64,
    /// The last handshake's unresolved split brain (cleared by a successful one).
    split_brain: Option<super::SplitBrainSeen>,
    /// Application I/O frozen by fencing: requests wait in `held`, answers in `app_done`.
    frozen: bool,
    /// When each application request in flight arrived, and how long finished ones took.
    app_started: HashMap<u64, Instant>,
    ack_latency: crate::status::LatencyHistogram,
    held: std::collections::VecDeque<(u64, Op)>,
    /// A split-brain save in progress: local disk operations wait for it.
    sb_save: Option<sb_save::Pending>,
    /// Application writes split into parts of one DATA packet each.
    splits: split::Splits,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: SessionConfig,
        bitmap: Bitmap,
        host: Box<dyn Host>,
        tx: InputTx,
        rx: Inbox,
        status: Arc<Mutex<PeerStatus>>,
        completions: Arc<Completions>,
    ) -> std::io::Result<Session> {
        let listener = Listener::bind(cfg.link.local).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {} for the peer: {e}", cfg.link.local),
            )
        })?;
        let disk = SessionRing::new(&cfg.disk, rx.doorbell_fd())?;
        let data_sync = std::fs::File::open(&cfg.disk.path).ok();
        let conn = Connection::new(cfg.conn.clone(), cfg.local);
        let mut repl = Replicator::new(cfg.repl, cfg.size_bytes, bitmap);
        if let Some((_, md)) = &cfg.meta {
            let al_extents =
                u16::try_from(md.superblock.al_nr_extents.clamp(7, 65534)).unwrap_or(u16::MAX - 1);
            let writer = match md.replay_al() {
                Ok(replay) => crate::meta::AlWriter::resume(al_extents, &replay),
                Err(_) => crate::meta::AlWriter::new(al_extents, 0),
            };
            repl = repl.with_activity_log(writer);
        }
        let integrity = !cfg.conn.integrity_alg.is_empty();
        let mut seed = [0u8; 8];
        let _ = rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::empty());
        Ok(Session {
            cfg,
            conn,
            repl,
            tx,
            rx,
            host,
            status,
            completions,
            disk,
            data_sync,
            data_dirty: true,
            bm_on_disk_known: false,
            app_done: Vec::new(),
            disk_done: Vec::new(),
            out_data: Vec::new(),
            out_meta: Vec::new(),
            listener: Some(Arc::new(listener)),
            connector: None,
            link: None,
            generation: 0,
            app_ops: HashMap::new(),
            app_bufs: HashMap::new(),
            jobs: HashMap::new(),
            peer_bufs: HashMap::new(),
            buffered: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            read_bufs: HashMap::new(),
            pool: BufPool::new(RESYNC_POOL_BYTES),
            next_key: 1,
            phase: Phase::Idle,
            peer_uuids: None,
            cs_override: None,
            peer_role: Role::Unknown,
            peer_disk: DiskState::DUnknown,
            last_state_sent: None,
            reported: None,
            stopping: false,
            sent_bytes: 0,
            recv_bytes: 0,
            integrity,
            disk_written: 0,
            disk_read: 0,
            peer_waits: std::collections::BTreeMap::new(),
            user_paused: false,
            peer_paused: false,
            verify_started: None,
            same_csum_blocks: 0,
            bm_written: (Instant::now(), u64::MAX),
            oos_reported_at: Instant::now(),
            verify_found: 0,
            handshake_peer_bits: 0,
            split_brain: None,
            frozen: false,
            app_started: HashMap::new(),
            ack_latency: crate::status::LatencyHistogram::default(),
            held: std::collections::VecDeque::new(),
            sb_save: None,
            splits: split::Splits::default(),
            calls: std::collections::VecDeque::new(),
            al_writes: 0,
            bm_writes: 0,
            last_progress: None,
            finishing: None,
            scratch: Vec::new(),
            rng: u64::from_ne_bytes(seed) | 1,
        })
    }

    /// The loop. Returns the bitmap when stopped.
    pub(super) fn run(mut self) -> Bitmap {
        let mut last_publish = Instant::now();
        loop {
            let mut busy = false;
            // Inputs, a bounded batch per turn so disk completions and timers are not
            // starved. Each input's consequences (the connection's decision included) are
            // carried out before the next input is looked at.
            for _ in 0..256 {
                let Some(input) = self.rx.try_recv() else {
                    break;
                };
                busy = true;
                self.handle(input);
                self.drain(Instant::now());
            }
            if self.reap_disk() {
                busy = true;
            }
            let now = Instant::now();
            if self.conn.poll_timeout().is_some_and(|t| t <= now) {
                self.conn.handle_timeout(now);
            }
            if self.repl.poll_timeout().is_some_and(|t| t <= now) {
                self.repl.handle_timeout(now);
            }
            self.check_ko_count(now);
            self.drain(now);
            self.lazy_bitmap_writeback(now);
            self.arm_receives();
            self.flush_out();
            if !busy || now.saturating_duration_since(last_publish) >= PUBLISH_EVERY {
                self.publish(now);
                last_publish = now;
            }
            if self.stopping && self.quiet() {
                break;
            }
            if busy {
                continue;
            }
            if self.pool.kept_bytes() > 0 && !self.repl.is_syncing() {
                self.pool.clear();
            }
            // Nothing to do: sleep on the ring until a disk operation completes, an input
            // rings the doorbell or the next timer is due.
            if let Some(input) = self.rx.prepare_sleep() {
                self.handle(input);
                self.drain(Instant::now());
                continue;
            }
            let now = Instant::now();
            let next = [self.conn.poll_timeout(), self.repl.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
            self.disk.wait(next);
            self.rx.woke();
        }
        self.shutdown()
    }

    /// Hands queued disk operations to the kernel, answers the data path and writes the
    /// frames queued for the peer.
    fn flush_out(&mut self) {
        self.disk.flush();
        if !self.frozen {
            self.completions.push_all(&mut self.app_done);
        }
        self.flush_link();
    }

    /// `resource-and-stonith`: the link to the peer is going while this node is Primary
    /// and the peer's disk was good, so the peer may be promoted by the cluster. Nothing
    /// completes (not even the writes in flight, which now complete locally) and nothing
    /// new starts until the event loop says the peer is fenced (`susp_fen`).
    pub(super) fn freeze_if_fencing(&mut self) {
        if self.cfg.fencing == crate::core::Fencing::ResourceAndStonith
            && self.conn.local().role == Role::Primary
            && self.conn.local().disk >= DiskState::Consistent
            && self.peer_disk >= DiskState::Consistent
            && !self.frozen
        {
            tracing::warn!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name,
                "peer lost under fencing resource-and-stonith: I/O frozen until the fence-peer handler answers");
            self.frozen = true;
            self.completions.set_frozen(true);
        }
    }

    /// Frozen I/O continues: answers held back go out, held requests start.
    fn thaw(&mut self, why: &str) {
        if !self.frozen {
            return;
        }
        tracing::info!(resource = %self.cfg.resource, held = self.held.len(), answers = self.app_done.len(), "I/O resumed: {why}");
        self.frozen = false;
        self.completions.set_frozen(false);
        while let Some((tag, op)) = self.held.pop_front() {
            self.on_app(tag, op);
        }
    }

    /// Writes the bitmap back if it changed and the last write-back is old enough.
    fn lazy_bitmap_writeback(&mut self, now: Instant) {
        let (at, count) = self.bm_written;
        if now.saturating_duration_since(at) < BITMAP_WRITEBACK {
            return;
        }
        let now_count = self.repl.bitmap().count();
        if now_count != count {
            self.write_bitmap();
        }
        self.bm_written = (now, now_count);
    }

    /// Handles finished disk operations; true if there were any (or the doorbell rang).
    fn reap_disk(&mut self) -> bool {
        let mut done = std::mem::take(&mut self.disk_done);
        let rang = self.disk.reap(&mut done);
        let any = !done.is_empty();
        let now = Instant::now();
        for d in done.drain(..) {
            self.on_disk_done(now, d);
            self.drain(now);
        }
        let received = self.on_received(now);
        // A link that closed meanwhile reaped into `disk_done` while it waited for its
        // receives: those are handled in the next turn.
        let later = std::mem::replace(&mut self.disk_done, done);
        self.disk_done.extend(later);
        any || rang || received || !self.disk_done.is_empty()
    }

    fn on_disk_done(&mut self, now: Instant, d: Done) {
        let Done { tag: id, res, buf } = d;
        match self.jobs.remove(&id) {
            Some(Job::App { tag, write }) => {
                self.data_dirty |= write;
                if let Some(b) = buf {
                    self.app_bufs.insert(tag, b);
                }
            }
            Some(Job::Read { digest }) => {
                if let Some(b) = buf {
                    if digest && res.is_ok() {
                        let mut d = std::mem::take(&mut self.scratch);
                        crate::core::repl::block_digests(b.as_slice(), &mut d);
                        self.repl.handle_read_digest(id, &d);
                        self.scratch = d;
                    }
                    self.read_bufs.insert(id, b);
                }
            }
            Some(Job::Other { write }) => {
                self.data_dirty |= write;
                if let Some(b) = buf {
                    self.recycle(b);
                }
            }
            None => {}
        }
        if let Err(e) = res {
            tracing::error!(resource = %self.cfg.resource, error = %e, "local disk I/O failed");
        }
        self.repl.handle_local_done(now, id, res);
    }

    /// A disk buffer that is no longer needed: kept for the next one while a resync runs.
    pub(super) fn recycle(&mut self, buf: AlignedBuf) {
        if self.repl.is_syncing() {
            self.pool.give(buf);
        }
    }

    fn quiet(&self) -> bool {
        self.app_ops.is_empty()
            && self.jobs.is_empty()
            && self.repl.app_in_flight() == 0
            && self.disk.in_flight() == 0
    }

    fn shutdown(mut self) -> Bitmap {
        self.finish_split_brain_save();
        self.stop_connector();
        self.flush_link();
        self.close_link();
        // Anything still forwarded by the data path gets an answer.
        self.frozen = false;
        self.completions.set_frozen(false);
        let held: Vec<_> = self.held.drain(..).collect();
        for (tag, op) in self.app_ops.drain().chain(held) {
            if split::Splits::is_part(tag) {
                continue;
            }
            self.app_done.push(Done {
                tag,
                res: Err(Errno::EIO),
                buf: op.into_buf(),
            });
        }
        self.app_done.extend(self.splits.fail_all());
        self.completions.push_all(&mut self.app_done);
        self.repl.bitmap().clone()
    }

    // ----- inputs ---------------------------------------------------------------------

    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::App { tag, op } => self.on_app(tag, op),
            Input::ReadFailed { tag, op } => self.on_read_failed(tag, op),
            Input::Linked(link) => self.on_linked(now, link),
            Input::LinkGaveUp(why) => {
                tracing::error!(resource = %self.cfg.resource, "cannot connect: {why}");
                self.connector = None;
                self.conn
                    .handle_admin(now, crate::core::ConnAdmin::Disconnect);
            }
            Input::Packet {
                generation,
                ty,
                flags: f,
                payload,
            } => {
                // The receiver counted it; from here the stored copy counts (below).
                if ty.carries_data() {
                    self.buffered.fetch_sub(payload.len(), Ordering::AcqRel);
                }
                if generation == self.generation && self.link.is_some() {
                    self.on_packet(now, ty, f, payload);
                }
            }
            Input::RecvFailed {
                generation,
                data,
                why,
            } => self.on_recv_failed(now, generation, data, why),
            Input::Admin(a) => self.on_admin(now, a),
            Input::SplitBrainSaved(r) => self.on_split_brain_saved(now, r),
            Input::Reply { call, reply } => self.on_reply(now, call, reply),
            Input::Stop => {
                self.stopping = true;
                self.conn
                    .handle_admin(now, crate::core::ConnAdmin::Disconnect);
            }
        }
    }

    /// A socket's receiving ended (end of file, error, bad frame).
    fn on_recv_failed(&mut self, now: Instant, generation: u64, data: bool, why: String) {
        // The data socket's receiver delivers everything the peer sent before it closed
        // (its last STATE, say, before a refusal), so the loss is declared when that
        // receiver stops; the meta socket's end alone only waits for it (a dead peer ends
        // both; a broken meta socket fails the next PING send).
        if generation == self.generation && self.link.is_some() && data {
            tracing::warn!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, "connection lost: {why}");
            self.conn.handle_transport_lost(now);
        } else if generation == self.generation && self.link.is_some() {
            tracing::debug!(resource = %self.cfg.resource, "meta socket closed: {why}");
        }
    }

    fn on_admin(&mut self, now: Instant, a: Admin) {
        match a {
            Admin::Connect { discard_my_data } => {
                if !self.stopping {
                    self.conn
                        .handle_admin(now, crate::core::ConnAdmin::Connect { discard_my_data });
                }
            }
            Admin::Disconnect => {
                self.conn
                    .handle_admin(now, crate::core::ConnAdmin::Disconnect);
                self.stop_connector();
            }
            Admin::Local(local) => self.on_local(local),
            Admin::Verify => self.start_verify(now),
            Admin::Invalidate => self.start_full_sync(SyncSide::Target),
            Admin::InvalidateRemote => self.start_full_sync(SyncSide::Source),
            Admin::PauseSync(on) => self.set_user_paused(now, on),
            Admin::ResumeIo => self.thaw("the peer is fenced, or resume-io"),
        }
    }

    /// An application read failed on the local disk (DRBD's READ_COMPLETED_WITH_ERROR):
    /// its blocks are out of sync, the volume applies `on-io-error`, and the peer serves
    /// the read if its disk is UpToDate (else the read fails).
    fn on_read_failed(&mut self, tag: u64, op: Op) {
        let Op::Read { offset, buf } = &op else {
            return self.on_app(tag, op);
        };
        let len = buf.len() as u64;
        tracing::error!(resource = %self.cfg.resource, offset, len, "Local IO failed in a read; asking the peer");
        if self.repl.has_local_disk() {
            self.repl.mark_out_of_sync(*offset, len);
            self.call(PeerCall::LocalIoError { write: false });
        }
        if self.peer_disk == DiskState::UpToDate && self.linked_and_decided() {
            self.on_app(tag, op);
        } else {
            self.app_started.remove(&tag);
            self.app_done.push(Done {
                tag,
                res: Err(Errno::EIO),
                buf: op.into_buf(),
            });
        }
    }

    /// The local disk changed: remember it for the next handshake; tell the peer.
    fn on_local(&mut self, mut local: LocalDisk) {
        let old = *self.conn.local();
        if local.disk == DiskState::Diskless && self.repl.has_local_disk() {
            // Detached after an I/O error: no more local I/O, activity log or bitmap
            // write-back; reads and writes go to the peer.
            tracing::warn!(resource = %self.cfg.resource, "local disk detached: Diskless, serving through the peer");
            self.repl.handle_detach();
            self.cfg.meta = None;
            self.data_sync = None;
        }
        self.completions
            .set_remote_reads(local.disk != DiskState::UpToDate);
        self.repl
            .handle_local_trusted(local.disk == DiskState::UpToDate);
        local.oos_bits = self.repl.bitmap().count();
        self.conn.handle_local(local);
        // `after_state_ch`: "Write out all changed bits on demote" (not during a resync).
        // Once demoted, a crash no longer resyncs the activity log's extents, so the bits
        // of the writes made without the peer must be on disk (found by the simulation,
        // tests/sim, seed 0x82f24636e6f1978c).
        if old.role == Role::Primary
            && local.role == Role::Secondary
            && self.cstate() <= ConnState::Connected
        {
            self.write_bitmap();
        }
        if !self.linked_and_decided() {
            return;
        }
        if old.uuids != local.uuids {
            // drbd_send_uuids after a forced promotion or a new generation.
            self.send_packet(
                Socket::Data,
                Packet::Uuids(wire::Uuids {
                    current: local.uuids.current,
                    bitmap: local.uuids.bitmap,
                    history: local.uuids.history,
                    bitmap_bits: self.repl.bitmap().count(),
                    flags: 0,
                }),
            );
        }
        if self.last_state_sent != Some((local.role, local.disk)) {
            self.send_state(local);
        }
    }

    /// The connection's copy of the local disk takes the bitmap's count as it is now: the
    /// event loop's copy lags (out-of-sync-only reports are rate-limited), and the
    /// handshake sends and compares this count (`discard-least-changes`, the split-brain
    /// report).
    pub(super) fn refresh_local_oos(&mut self) {
        let mut local = *self.conn.local();
        local.oos_bits = self.repl.bitmap().count();
        self.conn.handle_local(local);
    }

    fn linked_and_decided(&self) -> bool {
        self.link.is_some() && self.conn.state() >= ConnState::Connected
    }

    fn send_state(&mut self, local: LocalDisk) {
        let cs = self.cstate();
        self.send_state_as(local, cs);
    }

    fn send_state_as(&mut self, local: LocalDisk, conn: ConnState) {
        let st = wire::State {
            role: local.role as u8,
            peer: self.peer_role as u8,
            conn: conn as u8,
            disk: local.disk as u8,
            pdsk: self.peer_disk as u8,
            flags: if self.user_paused {
                wire::state_flags::USER_ISP
            } else {
                0
            },
        };
        self.last_state_sent = Some((local.role, local.disk));
        self.send_packet(Socket::Data, Packet::State(st));
    }

    fn on_app(&mut self, tag: u64, op: Op) {
        tracing::trace!(tag, op = op.name(), "application request");
        // The latency histogram counts whole requests, not the parts of a split write.
        if !split::Splits::is_part(tag) {
            self.app_started.entry(tag).or_insert_with(Instant::now);
        }
        if self.frozen {
            self.held.push_back((tag, op));
            return;
        }
        let op = match self.splits.split(tag, op) {
            Ok(parts) => {
                for (sub, part) in parts {
                    self.on_app(sub, part);
                }
                return;
            }
            Err(op) => op,
        };
        let (offset, len, kind) = match &op {
            Op::Flush => {
                self.repl.handle_app_flush(tag);
                return;
            }
            Op::Read { offset, buf } => {
                // The data path sends reads here when the local disk cannot serve them
                // (Diskless or not UpToDate): the peer does.
                let (offset, len) = (*offset, u32::try_from(buf.len()).unwrap_or(u32::MAX));
                self.app_ops.insert(tag, op);
                self.repl.handle_app_read(tag, offset, len);
                return;
            }
            Op::Write { fua, buf, offset } => {
                (*offset, buf.len() as u64, WriteKind::Write { fua: *fua })
            }
            Op::Trim { offset, len } => (*offset, *len, WriteKind::Trim),
            Op::Zero {
                offset,
                len,
                may_trim,
            } => (
                *offset,
                *len,
                WriteKind::Zero {
                    may_trim: *may_trim,
                },
            ),
        };
        let Ok(len) = u32::try_from(len) else {
            self.app_started.remove(&tag);
            self.app_done.push(Done {
                tag,
                res: Err(Errno::EINVAL),
                buf: op.into_buf(),
            });
            return;
        };
        self.app_ops.insert(tag, op);
        self.repl.handle_app_write(tag, offset, len, kind);
    }

    // ----- the link -------------------------------------------------------------------

    fn cstate(&self) -> ConnState {
        let s = self.conn.state();
        if s < ConnState::Connected {
            return s;
        }
        match (self.repl.verify_side(), self.cs_override) {
            (Some(SyncSide::Source), _) => ConnState::VerifyS,
            (Some(SyncSide::Target), _) => ConnState::VerifyT,
            (None, Some(ConnState::SyncSource)) if self.repl.is_sync_paused() => {
                ConnState::PausedSyncS
            }
            (None, Some(ConnState::SyncTarget)) if self.repl.is_sync_paused() => {
                ConnState::PausedSyncT
            }
            (None, Some(o)) => o,
            (None, None) => s,
        }
    }

    /// `verify`: VerifyS from here.
    fn start_verify(&mut self, now: Instant) {
        if self.cstate() != ConnState::Connected || self.phase != Phase::Idle {
            tracing::warn!(resource = %self.cfg.resource, cstate = ?self.cstate(), "verify not started: not Connected and idle");
            return;
        }
        tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, "Starting Online Verify from sector 0");
        self.verify_started = Some(now);
        self.repl.start_verify(now);
        self.report();
    }

    /// `invalidate` (this node becomes SyncTarget) or `invalidate-remote` (SyncSource) of
    /// a full sync. The peer learns it from our STATE (StartingSyncS/T) and its bitmap
    /// exchange follows.
    fn start_full_sync(&mut self, side: SyncSide) {
        if self.cstate() != ConnState::Connected || self.phase != Phase::Idle {
            tracing::warn!(resource = %self.cfg.resource, cstate = ?self.cstate(), "full sync not started: not Connected and idle");
            return;
        }
        let (local, starting) = match side {
            SyncSide::Target => (*self.conn.local(), ConnState::StartingSyncT),
            SyncSide::Source => (*self.conn.local(), ConnState::StartingSyncS),
        };
        tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, "{}: full sync as {}",
            if side == SyncSide::Target { "invalidate" } else { "invalidate-remote" },
            if side == SyncSide::Target { "SyncTarget" } else { "SyncSource" });
        self.send_state_as(local, starting);
        self.begin_resync(side, true);
        self.report();
    }

    /// `pause-sync` / `resume-sync` here (DRBD's user_isp); the peer learns it from the
    /// STATE flags (its peer_isp).
    fn set_user_paused(&mut self, now: Instant, on: bool) {
        self.user_paused = on;
        self.repl
            .set_sync_paused(now, self.user_paused || self.peer_paused);
        if self.linked_and_decided() {
            let local = *self.conn.local();
            self.send_state(local);
        }
        self.report();
    }

    /// Tells the event loop the connection's state if it changed.
    fn report(&mut self) {
        let call = PeerCall::State {
            conn: self.cstate(),
            peer: self.peer_role,
            pdsk: self.peer_disk,
            oos_bits: self.repl.bitmap().count(),
        };
        if self.reported == Some(call) {
            return;
        }
        // A change of the out-of-sync count alone (every write while disconnected makes
        // one) is passed on at most every OOS_REPORT_EVERY and only when the event loop
        // has answered the previous call: it only feeds the metadata's count, and a call
        // per write would queue up faster than the loop answers them.
        let oos_only = matches!(
            (self.reported, call),
            (Some(PeerCall::State { conn: c0, peer: p0, pdsk: d0, .. }),
             PeerCall::State { conn, peer, pdsk, .. }) if (c0, p0, d0) == (conn, peer, pdsk)
        );
        let now = Instant::now();
        if oos_only
            && (!self.calls.is_empty()
                || now.saturating_duration_since(self.oos_reported_at) < OOS_REPORT_EVERY)
        {
            return;
        }
        self.oos_reported_at = now;
        self.reported = Some(call);
        self.call(call);
    }

    /// Queues a call to the event loop; its answer comes back as `Input::Reply`.
    fn call(&mut self, call: PeerCall) {
        if self.host.notify(call) {
            self.calls.push_back(self.generation);
        } else {
            self.stopping = true;
        }
    }

    /// The event loop's answer to a call.
    fn on_reply(&mut self, now: Instant, call: PeerCall, reply: PeerReply) {
        let generation = self.calls.pop_front();
        let current = generation == Some(self.generation) && self.link.is_some();
        match call {
            PeerCall::SyncSourceStart if current && self.phase == Phase::AwaitSource => {
                self.phase = Phase::Idle;
                self.send_packet(
                    Socket::Data,
                    Packet::SyncUuid(SyncUuid {
                        uuid: reply.sync_uuid,
                    }),
                );
                self.cs_override = Some(ConnState::SyncSource);
                self.started_sync(now, SyncSide::Source, reply.local);
            }
            PeerCall::SyncTargetStart(_) if current && self.phase == Phase::AwaitTarget => {
                self.phase = Phase::Idle;
                self.cs_override = Some(ConnState::SyncTarget);
                self.started_sync(now, SyncSide::Target, reply.local);
            }
            PeerCall::SyncFinished { .. } => {
                self.finishing = None;
                self.on_local(reply.local);
            }
            _ => self.on_local(reply.local),
        }
    }

    fn publish(&mut self, now: Instant) {
        let progress = self
            .repl
            .sync_progress(now)
            .or_else(|| self.repl.verify_progress(now));
        if progress.is_some() {
            self.last_progress = progress;
        }
        let s = PeerStatus {
            sync: progress.or(self.finishing),
            oos_kib: self.repl.oos_kib(),
            net_sent_kib: self.sent_bytes / 1024,
            net_recv_kib: self.recv_bytes / 1024,
            pending: self.repl.app_in_flight() as u64,
            disk_written_kib: self.disk_written / 1024,
            disk_read_kib: self.disk_read / 1024,
            al_writes: self.al_writes,
            bm_writes: self.bm_writes,
            same_csum_kib: self.same_csum_blocks * 4,
            verify_found_blocks: self.verify_found,
            user_paused: self.user_paused,
            peer_paused: self.peer_paused,
            split_brain: self.split_brain,
            frozen: self.frozen,
            ack_latency: self.ack_latency.clone(),
        };
        if let Ok(mut st) = self.status.lock() {
            *st = s;
        }
        // Keep the event loop's view of the bitmap weight current.
        self.report();
    }
}

use super::PeerReply;

/// With `data-integrity-alg crc32c` (`on`), a DATA, RS_DATA_REPLY or DATA_REPLY that
/// carries data must carry the CRC32C of it; `Err(sector)` otherwise.
fn integrity_ok(on: bool, packet: &Packet<'_>) -> Result<(), u64> {
    if !on {
        return Ok(());
    }
    let (Packet::Data(d) | Packet::RsDataReply(d) | Packet::DataReply(d)) = packet else {
        return Ok(());
    };
    if d.dp_flags & (wire::dp_flags::DISCARD | wire::dp_flags::ZEROES) != 0 {
        return Ok(());
    }
    if d.digest == crc32c::crc32c(d.payload).to_be_bytes() {
        Ok(())
    } else {
        Err(d.sector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data<'a>(payload: &'a [u8], digest: &'a [u8], dp_flags: u32) -> Packet<'a> {
        Packet::Data(wire::Data {
            sector: 42,
            block_id: 1,
            seq: 1,
            dp_flags,
            digest,
            payload,
        })
    }

    #[test]
    fn integrity_digest_is_checked_on_data() {
        let payload = vec![7u8; 4096];
        let good = crc32c::crc32c(&payload).to_be_bytes();
        let mut bad = good;
        bad[0] ^= 1;
        assert_eq!(integrity_ok(true, &data(&payload, &good, 0)), Ok(()));
        assert_eq!(integrity_ok(true, &data(&payload, &bad, 0)), Err(42));
        assert_eq!(
            integrity_ok(true, &data(&payload, &[], 0)),
            Err(42),
            "missing digest"
        );
        let mut flipped = payload.clone();
        flipped[100] ^= 0x80;
        assert_eq!(
            integrity_ok(true, &data(&flipped, &good, 0)),
            Err(42),
            "corrupt data"
        );
        // Off: nothing is checked; trims carry a length, not data.
        assert_eq!(integrity_ok(false, &data(&payload, &bad, 0)), Ok(()));
        let len = 4096u32.to_be_bytes();
        assert_eq!(
            integrity_ok(true, &data(&len, &[], wire::dp_flags::DISCARD)),
            Ok(())
        );
        assert_eq!(integrity_ok(true, &Packet::Ping), Ok(()));
    }
}
