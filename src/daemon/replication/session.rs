//! The session thread: one input queue, the connection and data-side state machines, and
//! the host work they ask for (sockets, disk jobs, calls to the event loop).

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::core::conn::{ConnConfig, ConnEvent, Connection, LocalDisk, TransportUp};
use crate::core::repl::{
    LocalIo, Payload, ReplAction, ReplConfig, Replicator, SyncSide, WriteKind,
};
use crate::core::{ConnState, DiskState, Handshake, Role};
use crate::io::{AlignedBuf, BackendSpec, Done, Errno, Op};
use crate::meta::{Bitmap, Uuids};
use crate::wire::{self, Frame, Packet, PacketType, Socket, SyncUuid, flags};

use super::super::peer::{FrameReader, Link, LinkConfig, Listener, establish};
use super::bridge::Completions;
use super::disk::DiskWorkers;
use super::{Admin, Host, Input, PeerCall, PeerStatus};

/// Everything a session needs to know.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The resource, for messages.
    pub resource: String,
    /// Where this node listens and the peer is.
    pub link: LinkConfig,
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
}

/// How long the loop sleeps at most (status refresh).
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No resync in preparation.
    Idle,
    /// Exchanging bitmaps before a resync.
    Bitmap {
        side: SyncSide,
        words_total: u64,
        words_got: u64,
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
#[derive(Debug, Clone, Copy)]
enum Job {
    /// The application's request `tag`: keep its buffer until the completion.
    App(u64),
    /// A resync read: keep the buffer as the payload.
    Read,
    /// Anything else.
    Other,
}

struct LinkIo {
    data: TcpStream,
    meta: TcpStream,
    readers: Vec<JoinHandle<()>>,
}

pub(super) struct Session {
    cfg: SessionConfig,
    conn: Connection,
    repl: Replicator,
    tx: Sender<Input>,
    rx: Receiver<Input>,
    host: Box<dyn Host>,
    status: Arc<Mutex<PeerStatus>>,
    completions: Arc<Completions>,
    stop: Arc<AtomicBool>,
    disk: Option<DiskWorkers>,
    listener: Arc<Listener>,
    connector: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    link: Option<LinkIo>,
    generation: u64,
    app_ops: HashMap<u64, Op>,
    app_bufs: HashMap<u64, AlignedBuf>,
    jobs: HashMap<u64, Job>,
    peer_bufs: HashMap<u64, Vec<u8>>,
    /// Bytes of peer data received and not written yet (the data socket's receiver stops
    /// reading above [`MAX_PEER_BUFFERED`]: TCP then holds the peer back, as DRBD's
    /// `max-buffers` does).
    buffered: Arc<std::sync::atomic::AtomicUsize>,
    read_bufs: HashMap<u64, AlignedBuf>,
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
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: SessionConfig,
        bitmap: Bitmap,
        host: Box<dyn Host>,
        tx: Sender<Input>,
        rx: Receiver<Input>,
        status: Arc<Mutex<PeerStatus>>,
        completions: Arc<Completions>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Session> {
        let listener = Listener::bind(cfg.link.local).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {} for the peer: {e}", cfg.link.local),
            )
        })?;
        let disk = DiskWorkers::start(&cfg.disk, tx.clone())?;
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
            stop,
            disk: Some(disk),
            listener: Arc::new(listener),
            connector: None,
            link: None,
            generation: 0,
            app_ops: HashMap::new(),
            app_bufs: HashMap::new(),
            jobs: HashMap::new(),
            peer_bufs: HashMap::new(),
            buffered: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            read_bufs: HashMap::new(),
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
        loop {
            let now = Instant::now();
            let next = [self.conn.poll_timeout(), self.repl.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
            match self.rx.recv_timeout(next) {
                Ok(input) => {
                    // Each input's consequences (the connection's decision included) are
                    // carried out before the next input is looked at.
                    self.handle(input);
                    self.drain(Instant::now());
                    while let Ok(more) = self.rx.try_recv() {
                        self.handle(more);
                        self.drain(Instant::now());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
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
            self.publish(now);
            if self.stopping && self.quiet() {
                break;
            }
        }
        self.shutdown()
    }

    fn quiet(&self) -> bool {
        self.app_ops.is_empty() && self.jobs.is_empty() && self.repl.app_in_flight() == 0
    }

    fn shutdown(mut self) -> Bitmap {
        self.stop_connector();
        self.close_link();
        if let Some(d) = self.disk.take() {
            d.stop();
        }
        // Anything still forwarded by the data path gets an answer.
        for (tag, op) in self.app_ops.drain() {
            self.completions.push(Done {
                tag,
                res: Err(Errno::EIO),
                buf: op.into_buf(),
            });
        }
        self.repl.bitmap().clone()
    }

    // ----- inputs ---------------------------------------------------------------------

    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::App { tag, op } => self.on_app(tag, op),
            Input::DiskDone { id, res, buf } => {
                match self.jobs.remove(&id) {
                    Some(Job::App(tag)) => {
                        if let Some(b) = buf {
                            self.app_bufs.insert(tag, b);
                        }
                    }
                    Some(Job::Read) => {
                        if let Some(b) = buf {
                            self.read_bufs.insert(id, b);
                        }
                    }
                    _ => {}
                }
                if let Err(e) = res {
                    tracing::error!(resource = %self.cfg.resource, error = %e, "local disk I/O failed");
                }
                self.repl.handle_local_done(now, id, res);
            }
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
            Input::RecvFailed { generation, why } => {
                if generation == self.generation && self.link.is_some() {
                    tracing::warn!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, "connection lost: {why}");
                    self.conn.handle_transport_lost(now);
                }
            }
            Input::Admin(a) => self.on_admin(now, a),
            Input::Reply { call, reply } => self.on_reply(now, call, reply),
            Input::Stop => {
                self.stopping = true;
                self.conn
                    .handle_admin(now, crate::core::ConnAdmin::Disconnect);
            }
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
        }
    }

    /// The local disk changed: remember it for the next handshake; tell the peer.
    fn on_local(&mut self, local: LocalDisk) {
        let old = *self.conn.local();
        self.conn.handle_local(local);
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

    fn linked_and_decided(&self) -> bool {
        self.link.is_some() && self.conn.state() >= ConnState::Connected
    }

    fn send_state(&mut self, local: LocalDisk) {
        let st = wire::State {
            role: local.role as u8,
            peer: self.peer_role as u8,
            conn: self.cstate() as u8,
            disk: local.disk as u8,
            pdsk: self.peer_disk as u8,
            flags: 0,
        };
        self.last_state_sent = Some((local.role, local.disk));
        self.send_packet(Socket::Data, Packet::State(st));
    }

    fn on_app(&mut self, tag: u64, op: Op) {
        tracing::trace!(tag, op = op.name(), "application request");
        let kind = match &op {
            Op::Flush => {
                self.repl.handle_app_flush(tag);
                return;
            }
            Op::Read { .. } => None,
            Op::Write { fua, buf, offset } => {
                Some((*offset, buf.len() as u64, WriteKind::Write { fua: *fua }))
            }
            Op::Trim { offset, len } => Some((*offset, *len, WriteKind::Trim)),
            Op::Zero {
                offset,
                len,
                may_trim,
            } => Some((
                *offset,
                *len,
                WriteKind::Zero {
                    may_trim: *may_trim,
                },
            )),
        };
        let Some((offset, len, kind)) = kind else {
            // The bridge keeps reads local; answer anyway.
            self.completions.push(Done {
                tag,
                res: Err(Errno::EINVAL),
                buf: op.into_buf(),
            });
            return;
        };
        let Ok(len) = u32::try_from(len) else {
            self.completions.push(Done {
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

    fn start_connector(&mut self) {
        if self.connector.is_some() || self.stopping {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (listener, cfg, tx, flag) = (
            self.listener.clone(),
            self.cfg.link.clone(),
            self.tx.clone(),
            stop.clone(),
        );
        let mut x = self.next_random();
        let spawned = std::thread::Builder::new()
            .name("urbd-connect".into())
            .spawn(move || {
                let mut rng = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                match establish(&listener, &cfg, &flag, &mut rng) {
                    Ok(Some(link)) => {
                        let _ = tx.send(Input::Linked(link));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = tx.send(Input::LinkGaveUp(e.to_string()));
                    }
                }
            });
        match spawned {
            Ok(h) => self.connector = Some((stop, h)),
            Err(e) => tracing::error!(error = %e, "cannot start the connector thread"),
        }
    }

    fn stop_connector(&mut self) {
        if let Some((stop, h)) = self.connector.take() {
            stop.store(true, Ordering::Release);
            let _ = h.join();
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn on_linked(&mut self, now: Instant, link: Link) {
        if let Some((_, h)) = self.connector.take() {
            let _ = h.join();
        }
        if self.link.is_some() || self.conn.state() != ConnState::WFConnection || self.stopping {
            let _ = link.data.shutdown(Shutdown::Both);
            let _ = link.meta.shutdown(Shutdown::Both);
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let timeout = self.cfg.conn.timers.timeout.max(Duration::from_secs(1));
        let _ = link.data.set_write_timeout(Some(timeout));
        let _ = link.meta.set_write_timeout(Some(timeout));
        let mut readers = Vec::new();
        for (name, s) in [("data", &link.data), ("meta", &link.meta)] {
            match s.try_clone() {
                Ok(r) => {
                    let tx = self.tx.clone();
                    // Only the data socket is held back; acks and pings always flow.
                    let limit = (name == "data").then(|| self.buffered.clone());
                    if let Ok(h) = std::thread::Builder::new()
                        .name(format!("urbd-recv-{name}"))
                        .spawn(move || receive(r, generation, &tx, limit))
                    {
                        readers.push(h);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot clone the {name} socket"),
            }
        }
        tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, accepted = link.accepted, "connection established");
        self.link = Some(LinkIo {
            data: link.data,
            meta: link.meta,
            readers,
        });
        let mut random = [0u8; crate::core::conn::CHALLENGE_LEN];
        let _ = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty());
        self.conn.handle_transport_up(
            now,
            TransportUp {
                accepted: link.accepted,
                random,
            },
        );
    }

    fn close_link(&mut self) {
        if let Some(l) = self.link.take() {
            let _ = l.data.shutdown(Shutdown::Both);
            let _ = l.meta.shutdown(Shutdown::Both);
            for r in l.readers {
                let _ = r.join();
            }
        }
        self.generation += 1;
    }

    fn send_bytes(&mut self, socket: Socket, bytes: &[u8]) {
        let Some(l) = self.link.as_mut() else {
            return;
        };
        let s = match socket {
            Socket::Data => &mut l.data,
            _ => &mut l.meta,
        };
        if let Err(e) = s.write_all(bytes) {
            tracing::warn!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, error = %e, "sending to the peer failed");
            let _ = l.data.shutdown(Shutdown::Both);
            let _ = l.meta.shutdown(Shutdown::Both);
            self.conn.handle_transport_lost(Instant::now());
        }
    }

    fn send_packet(&mut self, socket: Socket, packet: Packet<'_>) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        Frame::new(0, packet).encode(&mut buf);
        self.send_bytes(socket, &buf);
        self.scratch = buf;
    }

    // ----- packets --------------------------------------------------------------------

    fn on_packet(&mut self, now: Instant, ty: PacketType, f: u8, payload: Vec<u8>) {
        let packet = match Packet::decode(ty, &payload) {
            Ok(Packet::Unknown { .. }) if f & flags::MAY_IGNORE != 0 => return,
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, "bad {ty} packet: {e}");
                return self.conn.handle_transport_lost(now);
            }
        };
        match packet {
            Packet::Uuids(u) if self.conn.state() >= ConnState::Connected => {
                self.peer_uuids = Some(Uuids {
                    current: u.current,
                    bitmap: u.bitmap,
                    history: u.history,
                });
            }
            Packet::Hello(_)
            | Packet::AuthChallenge(_)
            | Packet::AuthResponse(_)
            | Packet::ReportParams(_)
            | Packet::Sizes(_)
            | Packet::Uuids(_)
            | Packet::Ping
            | Packet::PingAck
            | Packet::Disconnect
            | Packet::Unknown { .. } => self.conn.handle_packet(now, packet),
            Packet::State(s) if self.conn.state() == ConnState::WFReportParams => {
                self.conn.handle_packet(now, Packet::State(s))
            }
            Packet::State(s) => self.on_peer_state(s),
            Packet::Bitmap(b) => self.on_bitmap(now, b),
            Packet::SyncUuid(u) => self.on_sync_uuid(now, u.uuid),
            Packet::Data(_) | Packet::RsDataReply(_) => {
                if let Err(sector) = self.check_integrity(&packet) {
                    tracing::error!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name,
                        "Digest integrity check FAILED: sector {sector} ({ty}); dropping the connection");
                    return self.protocol_error(now, "data integrity check failed");
                }
                self.recv_bytes += payload.len() as u64;
                let key = self.next_key;
                self.next_key += 1;
                let data = match &packet {
                    Packet::Data(d) | Packet::RsDataReply(d) => d.payload.to_vec(),
                    _ => Vec::new(),
                };
                self.buffered.fetch_add(data.len(), Ordering::AcqRel);
                self.peer_bufs.insert(key, data);
                if let Err(e) = self.repl.handle_packet(now, &packet, Some(key)) {
                    self.drop_peer_buf(key);
                    self.protocol_error(now, e);
                }
            }
            other => {
                if let Packet::WriteAck(a) | Packet::RecvAck(a) | Packet::NegAck(a) = &other {
                    self.peer_waits.remove(&a.block_id);
                }
                if let Err(e) = self.repl.handle_packet(now, &other, None) {
                    self.protocol_error(now, e);
                }
            }
        }
    }

    /// DRBD's `ko-count`: a peer that has not answered a write for `timeout` x `ko-count`
    /// is dropped (its disk or the link is stuck; the Primary goes on alone).
    fn check_ko_count(&mut self, now: Instant) {
        let ko = self.cfg.ko_count;
        if ko == 0 {
            return;
        }
        let limit = self.cfg.conn.timers.timeout * ko;
        if let Some((&id, &sent)) = self.peer_waits.first_key_value()
            && now.saturating_duration_since(sent) > limit
        {
            tracing::error!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name,
                block_id = id, "the peer did not answer a write for {limit:?} (timeout x ko-count): dropping the connection");
            self.peer_waits.clear();
            self.protocol_error(now, "ko-count reached");
        }
    }

    /// A received payload is no longer needed.
    fn drop_peer_buf(&mut self, key: u64) {
        if let Some(b) = self.peer_bufs.remove(&key) {
            self.buffered.fetch_sub(b.len(), Ordering::AcqRel);
        }
    }

    /// `data-integrity-alg crc32c`: the digest of every data packet must match.
    fn check_integrity(&self, packet: &Packet<'_>) -> Result<(), u64> {
        integrity_ok(self.integrity, packet)
    }

    fn protocol_error(&mut self, now: Instant, e: impl std::fmt::Display) {
        tracing::error!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, "protocol error: {e}; dropping the connection");
        if let Some(l) = &self.link {
            let _ = l.data.shutdown(Shutdown::Both);
            let _ = l.meta.shutdown(Shutdown::Both);
        }
        self.conn.handle_transport_lost(now);
    }

    fn on_peer_state(&mut self, s: wire::State) {
        let role = Role::from_wire(s.role).unwrap_or(Role::Unknown);
        let disk = DiskState::from_wire(s.disk).unwrap_or(DiskState::DUnknown);
        if (role, disk) != (self.peer_role, self.peer_disk) {
            tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, ?role, ?disk, "peer state");
        }
        let was = self.peer_disk;
        self.peer_role = role;
        self.peer_disk = disk;
        self.report();
        // DRBD's receive_state: connected, our disk Inconsistent, and the peer's has just
        // become UpToDate (a forced promotion there): resync from it, every block.
        if self.phase == Phase::Idle
            && self.cstate() == ConnState::Connected
            && self.conn.local().disk == DiskState::Inconsistent
            && disk == DiskState::UpToDate
            && was != DiskState::UpToDate
        {
            tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name,
                "the peer's disk became UpToDate while ours is Inconsistent: full resync from it");
            self.begin_resync(SyncSide::Target, true);
        }
    }

    /// Starts the bitmap exchange of a resync on this side.
    fn begin_resync(&mut self, side: SyncSide, full: bool) {
        if full {
            self.repl.set_all_out_of_sync();
        }
        let words_total = self.repl.bitmap().bits().div_ceil(64);
        self.phase = Phase::Bitmap {
            side,
            words_total,
            words_got: 0,
            sync_uuid: None,
        };
        self.send_bitmap(words_total);
    }

    fn on_bitmap(&mut self, now: Instant, b: wire::Bitmap<'_>) {
        if self.phase == Phase::Idle
            && self.cstate() == ConnState::Connected
            && self.conn.local().disk == DiskState::UpToDate
            && b.start_word == 0
        {
            // The peer started a resync towards itself (its receive_state above).
            self.begin_resync(SyncSide::Source, false);
        }
        let Phase::Bitmap {
            side,
            words_total,
            words_got,
            sync_uuid,
        } = self.phase
        else {
            return self.protocol_error(now, "BITMAP outside a bitmap exchange");
        };
        let words: Vec<u64> = b
            .words
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if b.start_word != words_got {
            return self.protocol_error(now, "BITMAP chunks out of order");
        }
        self.repl.merge_peer_words(b.start_word, &words);
        let got = words_got + words.len() as u64;
        self.phase = Phase::Bitmap {
            side,
            words_total,
            words_got: got,
            sync_uuid,
        };
        if got >= words_total {
            self.bitmap_exchanged(now, side, sync_uuid);
        }
    }

    fn bitmap_exchanged(&mut self, now: Instant, side: SyncSide, early_uuid: Option<u64>) {
        tracing::info!(resource = %self.cfg.resource, ?side, oos_kib = self.repl.oos_kib(), "bitmaps exchanged");
        self.write_bitmap();
        match side {
            SyncSide::Source => {
                // The answer (Input::Reply) sends SYNC_UUID and starts the resync.
                self.phase = Phase::AwaitSource;
                self.call(PeerCall::SyncSourceStart);
            }
            SyncSide::Target => {
                self.phase = Phase::WaitSyncUuid;
                if let Some(u) = early_uuid {
                    self.on_sync_uuid(now, u);
                }
            }
        }
    }

    fn on_sync_uuid(&mut self, now: Instant, uuid: u64) {
        match self.phase {
            Phase::WaitSyncUuid => {
                // Nothing is written before the metadata says Inconsistent (the answer
                // starts the resync).
                self.phase = Phase::AwaitTarget;
                self.call(PeerCall::SyncTargetStart(uuid));
            }
            Phase::Bitmap {
                side: SyncSide::Target,
                words_total,
                words_got,
                ..
            } => {
                self.phase = Phase::Bitmap {
                    side: SyncSide::Target,
                    words_total,
                    words_got,
                    sync_uuid: Some(uuid),
                }
            }
            _ => self.protocol_error(now, "SYNC_UUID outside a resync start"),
        }
    }

    fn started_sync(&mut self, now: Instant, side: SyncSide, local: LocalDisk) {
        self.conn.handle_local(local);
        let kib = self.repl.oos_kib();
        tracing::info!(resource = %self.cfg.resource, "Began resync as {} (will sync {kib} KB [{} bits set]).",
            if side == SyncSide::Source { "SyncSource" } else { "SyncTarget" }, kib / 4);
        self.send_state(local);
        self.repl.start_sync(now, side);
        self.report();
    }

    // ----- outputs --------------------------------------------------------------------

    fn drain(&mut self, now: Instant) {
        for _ in 0..10_000 {
            let mut busy = false;
            while let Some(t) = self.conn.poll_transmit() {
                busy = true;
                let socket = t.socket();
                let frame = t.frame();
                let mut buf = std::mem::take(&mut self.scratch);
                buf.clear();
                frame.encode(&mut buf);
                self.send_bytes(socket, &buf);
                self.scratch = buf;
            }
            while let Some(e) = self.conn.poll_event() {
                busy = true;
                self.on_conn_event(now, e);
            }
            while let Some(a) = self.repl.poll_action() {
                busy = true;
                self.on_repl_action(a);
            }
            if !busy {
                return;
            }
        }
    }

    fn on_conn_event(&mut self, now: Instant, e: ConnEvent) {
        let res = self.cfg.resource.clone();
        let peer = self.cfg.link.peer_name.clone();
        match e {
            ConnEvent::StateChanged { from, to } => {
                tracing::info!(resource = %res, %peer, "conn( {from:?} -> {to:?} )");
                self.report();
            }
            ConnEvent::Connect => self.start_connector(),
            ConnEvent::CloseTransport => {
                self.peer_waits.clear();
                self.close_link();
                self.repl.handle_link_down();
                // What is out of sync from now on is in the bitmap; write it back (DRBD
                // writes the bitmap out on disconnect).
                self.write_bitmap();
                self.phase = Phase::Idle;
                self.cs_override = None;
                self.peer_role = Role::Unknown;
                self.peer_disk = DiskState::DUnknown;
                self.last_state_sent = None;
                self.report();
            }
            ConnEvent::Agreed(a) => {
                tracing::info!(resource = %res, %peer, "Handshake successful: Agreed network protocol version {}", a.version)
            }
            ConnEvent::Authenticated => {
                tracing::info!(resource = %res, %peer, "Peer authenticated using {} bytes HMAC", 32)
            }
            ConnEvent::TransportLost(why) => {
                tracing::warn!(resource = %res, %peer, "connection lost: {why}")
            }
            ConnEvent::Refused(why) => {
                if let crate::core::ConnRefusal::SplitBrain {
                    local,
                    peer: theirs,
                } = &why
                {
                    tracing::error!(resource = %res, %peer,
                        "{why} local UUIDs {}, peer UUIDs {} (connect --discard-my-data on the node whose changes are to be thrown away)",
                        fmt_uuids(local), fmt_uuids(theirs));
                } else {
                    tracing::error!(resource = %res, %peer, "{why}");
                }
            }
            ConnEvent::DiscardMyDataCleared => {
                tracing::info!(resource = %res, "--discard-my-data used by the handshake")
            }
            ConnEvent::Decided {
                decision,
                local,
                peer: peer_uuids,
                size_sect,
            } => {
                tracing::info!(resource = %res, %peer, local = ?local, peer_uuids = ?peer_uuids,
                    "{}", decision.comparison);
                if size_sect > 0 && size_sect * 512 < self.cfg.size_bytes {
                    // The smaller disk wins (the connection refused it if our data in use
                    // would not fit).
                    tracing::warn!(resource = %res, %peer, size_sect,
                        "the peer's disk is smaller: the device shrinks to {size_sect} sectors");
                    self.call(PeerCall::Resize { size_sect });
                    self.cfg.size_bytes = size_sect * 512;
                    self.repl.handle_resize(size_sect * 512);
                }
                self.peer_uuids = Some(peer_uuids);
                self.peer_role = self.conn.peer_role();
                self.peer_disk = self.conn.peer_disk();
                self.repl.handle_link_up();
                // After a Primary's crash (rule 40/41) the crashed node's bitmap holds the
                // extents of its activity log (applied at attach): a bitmap resync.
                match decision.outcome {
                    Handshake::SyncSource { full } => self.begin_resync(SyncSide::Source, full),
                    Handshake::SyncTarget { full } => self.begin_resync(SyncSide::Target, full),
                    _ => self.phase = Phase::Idle,
                }
                self.report();
                let local = *self.conn.local();
                self.send_state(local);
                let _ = now;
            }
        }
    }

    fn send_bitmap(&mut self, words_total: u64) {
        let per_chunk = (wire::MAX_BITMAP_WORDS_BYTES / 8) as usize;
        let words: Vec<u64> = self.repl.bitmap().words()[..words_total as usize].to_vec();
        for (i, chunk) in words.chunks(per_chunk).enumerate() {
            let bytes: Vec<u8> = chunk.iter().flat_map(|w| w.to_le_bytes()).collect();
            self.send_packet(
                Socket::Data,
                Packet::Bitmap(wire::Bitmap {
                    start_word: (i * per_chunk) as u64,
                    words: &bytes,
                }),
            );
        }
    }

    fn on_repl_action(&mut self, a: ReplAction) {
        match a {
            ReplAction::Local { id, io } => self.local_io(id, io),
            ReplAction::Send(o) => {
                let mut buf = std::mem::take(&mut self.scratch);
                buf.clear();
                let payload = o.payload();
                {
                    let data: &[u8] = match payload {
                        Some(Payload::App(tag)) => match self.app_ops.get(&tag) {
                            Some(Op::Write { buf, .. }) => buf.as_slice(),
                            _ => &[],
                        },
                        Some(Payload::Peer(k)) => self.peer_bufs.get(&k).map_or(&[][..], |v| v),
                        Some(Payload::Read(id)) => {
                            self.read_bufs.get(&id).map_or(&[][..], |b| b.as_slice())
                        }
                        None => &[],
                    };
                    self.sent_bytes += data.len() as u64;
                    let digest = if self.integrity && o.payload().is_some() {
                        crc32c::crc32c(data).to_be_bytes().to_vec()
                    } else {
                        Vec::new()
                    };
                    o.encode(0, data, &digest, &mut buf);
                }
                if let Some(Payload::Read(id)) = payload {
                    self.read_bufs.remove(&id);
                }
                if let crate::core::repl::Outgoing::Data {
                    block_id, dp_flags, ..
                } = o
                    && dp_flags
                        & (wire::dp_flags::SEND_WRITE_ACK | wire::dp_flags::SEND_RECEIVE_ACK)
                        != 0
                {
                    self.peer_waits.insert(block_id, Instant::now());
                }
                self.send_bytes(o.socket(), &buf);
                self.scratch = buf;
            }
            ReplAction::Complete { tag, res } => {
                tracing::trace!(tag, ?res, "application request complete");
                let buf = self
                    .app_bufs
                    .remove(&tag)
                    .or_else(|| self.app_ops.remove(&tag).and_then(Op::into_buf));
                self.completions.push(Done { tag, res, buf });
            }
            ReplAction::Release(p) => match p {
                Payload::Peer(k) => self.drop_peer_buf(k),
                Payload::Read(id) => {
                    self.read_bufs.remove(&id);
                }
                Payload::App(_) => {}
            },
            ReplAction::WriteAl { tr, evicted } => self.write_al(&tr, &evicted),
            ReplAction::SyncFinished { side, failed } => {
                // The cleared bits reach the meta-disk (a crash later must not redo it).
                self.write_bitmap();
                self.finishing = self.last_progress.map(|p| crate::core::repl::SyncProgress {
                    left_kib: 0,
                    mark_left_kib: 0,
                    ..p
                });
                let target = side == SyncSide::Target;
                tracing::info!(resource = %self.cfg.resource, failed, "Resync done ({})", if target { "SyncTarget" } else { "SyncSource" });
                self.cs_override = Some(ConnState::Connected);
                self.call(PeerCall::SyncFinished {
                    target,
                    failed,
                    peer: self.peer_uuids,
                });
                self.report();
            }
        }
    }

    /// An activity-log transaction, synchronously: the bitmap blocks of the extents that
    /// leave the log, then the transaction, each synced (DRBD's `drbd_al_begin_io`).
    fn write_al(&mut self, tr: &crate::meta::AlTransaction, evicted: &[u32]) {
        let Some((dev, md)) = self.cfg.meta.as_mut() else {
            self.repl.handle_al_written();
            return;
        };
        if !evicted.is_empty() {
            md.bitmap = self.repl.bitmap().clone();
            for &e in evicted {
                let first = u64::from(e) * 1024;
                if first >= md.bitmap.capacity() {
                    continue;
                }
                let count = 1024.min(md.bitmap.capacity() - first);
                if let Err(err) = crate::meta::write_bitmap_range(dev, md, first, count) {
                    tracing::error!(resource = %self.cfg.resource, error = %err, "writing the bitmap of an evicted extent failed");
                }
            }
        }
        if let Err(err) = crate::meta::write_al_transaction(dev, md, tr) {
            // DRBD detaches on a meta-data I/O error; urbd logs it and goes on (the next
            // crash recovery may then miss these extents).
            tracing::error!(resource = %self.cfg.resource, error = %err, "writing an activity-log transaction failed");
        }
        self.al_writes += 1;
        self.repl.handle_al_written();
    }

    /// The whole bitmap to the meta-disk (before a resync starts, so that a crash during it
    /// resumes from what is left rather than from a stale bitmap).
    fn write_bitmap(&mut self) {
        let Some((dev, md)) = self.cfg.meta.as_mut() else {
            return;
        };
        md.bitmap = self.repl.bitmap().clone();
        let capacity = md.bitmap.capacity();
        if let Err(err) = crate::meta::write_bitmap_range(dev, md, 0, capacity) {
            tracing::error!(resource = %self.cfg.resource, error = %err, "writing the bitmap failed");
        }
        self.bm_writes += 1;
    }

    fn local_io(&mut self, id: u64, io: LocalIo) {
        let (job, op) = match io {
            LocalIo::App { tag } => match self.app_ops.remove(&tag) {
                Some(op) => (Job::App(tag), op),
                None => {
                    tracing::error!(tag, "application request vanished");
                    return;
                }
            },
            LocalIo::Write {
                key,
                offset,
                len,
                fua,
            } => {
                let data = match key {
                    Payload::Peer(k) => self.peer_bufs.get(&k).map(|v| v.as_slice()),
                    _ => None,
                };
                let buf = match data {
                    Some(d) if d.len() == len as usize => AlignedBuf::from_slice(d),
                    _ => {
                        tracing::error!(?key, "write payload missing");
                        return;
                    }
                };
                self.disk_written += u64::from(len);
                (Job::Other, Op::Write { offset, buf, fua })
            }
            LocalIo::Discard { offset, len, zero } => (
                Job::Other,
                if zero {
                    Op::Zero {
                        offset,
                        len: u64::from(len),
                        may_trim: false,
                    }
                } else {
                    Op::Trim {
                        offset,
                        len: u64::from(len),
                    }
                },
            ),
            LocalIo::Read { offset, len } => {
                self.disk_read += u64::from(len);
                (
                    Job::Read,
                    Op::Read {
                        offset,
                        buf: AlignedBuf::zeroed(len as usize),
                    },
                )
            }
            LocalIo::Flush => (Job::Other, Op::Flush),
        };
        self.jobs.insert(id, job);
        if let Some(d) = &self.disk {
            d.submit(id, op);
        }
    }

    // ----- the event loop and status --------------------------------------------------

    fn cstate(&self) -> ConnState {
        match (self.cs_override, self.conn.state()) {
            (Some(o), s) if s >= ConnState::Connected => o,
            (_, s) => s,
        }
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
        let progress = self.repl.sync_progress(now);
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
        };
        if let Ok(mut st) = self.status.lock() {
            *st = s;
        }
        // Keep the event loop's view of the bitmap weight current.
        self.report();
        let _ = self.stop.load(Ordering::Relaxed);
    }
}

use super::PeerReply;

/// Peer data buffered in memory at most before the data socket's receiver pauses.
const MAX_PEER_BUFFERED: usize = 16 << 20;

/// A receiver thread: frames from one socket into the session's queue. With `limit`, it
/// stops reading while more than [`MAX_PEER_BUFFERED`] bytes of received data wait to be
/// written.
fn receive(
    mut s: TcpStream,
    generation: u64,
    tx: &Sender<Input>,
    limit: Option<Arc<std::sync::atomic::AtomicUsize>>,
) {
    let mut reader = FrameReader::new();
    loop {
        if let Some(l) = &limit {
            while l.load(Ordering::Acquire) > MAX_PEER_BUFFERED {
                // The session shuts the socket down when the link goes: stop then.
                if !super::super::peer::is_open(&s) {
                    let _ = tx.send(Input::RecvFailed {
                        generation,
                        why: "closed while paused".into(),
                    });
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        match reader.read(&mut s) {
            Ok((h, payload)) => {
                if let Some(l) = &limit
                    && h.ty.carries_data()
                {
                    l.fetch_add(payload.len(), Ordering::AcqRel);
                }
                if tx
                    .send(Input::Packet {
                        generation,
                        ty: h.ty,
                        flags: h.flags,
                        payload: payload.to_vec(),
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Input::RecvFailed {
                    generation,
                    why: e.to_string(),
                });
                return;
            }
        }
    }
}

/// With `data-integrity-alg crc32c` (`on`), a DATA or RS_DATA_REPLY that carries data must
/// carry the CRC32C of it; `Err(sector)` otherwise.
fn integrity_ok(on: bool, packet: &Packet<'_>) -> Result<(), u64> {
    if !on {
        return Ok(());
    }
    let (Packet::Data(d) | Packet::RsDataReply(d)) = packet else {
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

/// UUIDs as drbdsetup prints them: `CURRENT:BITMAP:HISTORY1:HISTORY2`.
fn fmt_uuids(u: &Uuids) -> String {
    format!(
        "{:016X}:{:016X}:{:016X}:{:016X}",
        u.current, u.bitmap, u.history[0], u.history[1]
    )
}

#[allow(dead_code)]
fn _assert_send(_: SocketAddr) {}

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
