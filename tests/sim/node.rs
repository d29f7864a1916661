//! One simulated node: the three sans-IO state machines of the core (the volume's roles,
//! disk states and UUIDs; the connection; the data side) glued together the way the
//! daemon's session (`src/daemon/replication/session`) and event loop
//! (`src/daemon/runtime.rs`) glue them: the same packet routing, bitmap exchange, sync
//! start and finish calls, bitmap write-back points and `drain` order. The differences
//! are what a simulation needs: the event loop's calls are answered at once (in the
//! daemon they come back through a queue), disk I/O completes when the schedule says so,
//! and every frame goes through the real wire codec.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use urbd::core::conn::{
    CHALLENGE_LEN, ConnConfig, ConnEvent, Connection, LocalDisk, NetTimers, TransportUp,
};
use urbd::core::repl::{LocalIo, Payload, ReplAction, ReplConfig, Replicator, SyncSide, WriteKind};
use urbd::core::{
    Action, AdminCmd, AttachInfo, ConnAdmin, ConnRefusal, ConnState, DiskState, Fencing, Handshake,
    Refusal, Role, Volume, VolumeConfig,
};
use urbd::io::Errno;
use urbd::meta::{AlWriter, Bitmap, Uuids};
use urbd::wire::{self, Frame, Packet, Socket, SyncUuid, flags};

use crate::disk::{DurableMeta, SimDisk};
use crate::rng::Rng;

/// Device size: two 4 MiB activity-log extents.
pub const SIZE: u64 = 8 << 20;
/// Activity-log slots: one, so that the two extents evict each other often.
pub const AL_EXTENTS: u16 = 1;

/// A deliberate bug the harness can plant, to show the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// The Primary answers the application as soon as its own disk has the write, without
    /// waiting for the peer's WRITE_ACK (protocol C broken).
    AckOnLocalCompletion,
    /// A Secondary does not flush its disk at barriers (write ordering `none` while the
    /// peer relies on `flush`).
    SkipSecondaryFlush,
    /// The bitmap goes to the meta-disk without flushing the data disk first, as the
    /// daemon's session does today (`write_bitmap` in `session/actions.rs`): bits cleared
    /// for resync writes still in the data disk's cache survive a crash that loses the
    /// writes, and the blocks are never resynced.
    BitmapWriteWithoutFlush,
}

/// Why an operator's request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminError {
    /// The volume refused it.
    Refused(Refusal),
    /// The data disk's flush before a demotion failed.
    Io(Errno),
}

/// Something the oracle must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The application's request `tag` was answered.
    Completed {
        /// The request.
        tag: u64,
        /// Success.
        ok: bool,
        /// The data side was linked to the peer when it was issued and when it was
        /// answered.
        linked: bool,
        /// Issued while the data side was not linked (its blocks were marked out of sync
        /// when it started).
        issued_unlinked: bool,
    },
    /// The handshake on transport `generation` decided (with the UUIDs it compared, for
    /// the trace).
    Decided(Handshake, u64, String),
    /// The handshake refused the peer because of a split brain.
    SplitBrain,
    /// The data side broke the protocol (a bug, with a correct peer).
    ProtocolError(String),
}

/// A frame to send or the end of this node's transport.
#[derive(Debug)]
pub enum Out {
    /// Send on a socket.
    Frame(Socket, Vec<u8>),
    /// Close the transport (after the frames before it).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Bitmap {
        side: SyncSide,
        words_total: u64,
        words_got: u64,
        sync_uuid: Option<u64>,
    },
    WaitSyncUuid,
}

/// An application request the host still holds.
#[derive(Debug, Clone)]
enum AppOp {
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    Flush,
}

/// A local I/O the core asked for, not completed yet.
#[derive(Debug, Clone)]
pub struct PendingIo {
    id: u64,
    io: LocalIo,
    /// For a flush: its result (a flush takes effect when submitted, so that it never
    /// covers a write that completes after it was issued).
    early: Option<Result<(), Errno>>,
}

/// One node.
pub struct Node {
    /// 0 or 1.
    pub id: usize,
    /// Running (false: crashed and not restarted yet).
    pub up: bool,
    /// The data disk.
    pub disk: SimDisk,
    /// The metadata that survives a crash.
    pub meta: DurableMeta,
    /// The volume (roles, disk states, UUIDs).
    pub vol: Volume,
    /// The connection.
    pub conn: Connection,
    /// The data side.
    pub repl: Replicator,
    /// The planted bug, if any.
    pub mutation: Option<Mutation>,
    /// The connector is trying (a `Connect` event and no transport yet).
    pub connecting: bool,
    /// The transport this node holds.
    pub generation: Option<u64>,
    /// For the oracle.
    pub notes: Vec<Note>,
    /// For the network.
    pub outbox: Vec<Out>,
    /// Local I/O in flight.
    pub pending: Vec<PendingIo>,
    rng: Rng,
    phase: Phase,
    peer_uuids: Option<Uuids>,
    cs_override: Option<ConnState>,
    peer_role: Role,
    peer_disk: DiskState,
    last_state_sent: Option<(Role, DiskState)>,
    reported: Option<(ConnState, Role, DiskState, u64)>,
    app: HashMap<u64, AppOp>,
    early_acked: BTreeSet<u64>,
    /// Writes issued while the data side was not linked (never replicated as such).
    unlinked: BTreeSet<u64>,
    peer_bufs: HashMap<u64, Vec<u8>>,
    read_bufs: HashMap<u64, Vec<u8>>,
    next_key: u64,
}

/// The connection's configuration: protocol C, DRBD's policies (all `disconnect`), timers
/// short enough for a run's simulated seconds.
pub fn conn_config(peer: usize) -> ConnConfig {
    let mut c = ConnConfig::new(format!("node{peer}"));
    c.timers = NetTimers {
        connect_int: Duration::from_millis(500),
        ping_int: Duration::from_millis(1000),
        ping_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(6),
    };
    c
}

fn fresh_volume() -> Volume {
    let mut v = Volume::new(VolumeConfig {
        volume: 0,
        minor: 0,
        fencing: Fencing::DontCare,
    });
    // The simulated nodes have no Diskless data path: a local I/O error leaves the disk
    // attached and Inconsistent (`on-io-error pass_on`); a node that has it stops
    // claiming UpToDate (the oracle's rule), and the next handshake resyncs it.
    v.set_on_io_error(urbd::core::OnIoError::PassOn);
    v
}

fn fresh_connection(id: usize) -> Connection {
    Connection::new(
        conn_config(1 - id),
        LocalDisk {
            uuids: Uuids::default(),
            role: Role::Secondary,
            disk: DiskState::Diskless,
            crashed_primary: false,
            oos_bits: 0,
            backing_sect: SIZE / 512,
            user_sect: 0,
            current_sect: 0,
        },
    )
}

/// The data side's configuration: protocol C, flushes at barriers, a fast resync in
/// small requests (so that a resync interleaves with everything else).
pub fn repl_config() -> ReplConfig {
    ReplConfig {
        resync_rate_kib: 200_000,
        max_rs_requests: 8,
        rs_max_bits: 16,
        ..ReplConfig::default()
    }
}

impl Node {
    /// Node `id` on this storage, not started.
    pub fn new(
        id: usize,
        disk: SimDisk,
        meta: DurableMeta,
        rng: Rng,
        mutation: Option<Mutation>,
    ) -> Node {
        Node {
            id,
            up: false,
            disk,
            meta,
            vol: fresh_volume(),
            conn: fresh_connection(id),
            repl: Replicator::new(repl_config(), SIZE, Bitmap::new(SIZE / 512)),
            mutation,
            connecting: false,
            generation: None,
            notes: Vec::new(),
            outbox: Vec::new(),
            pending: Vec::new(),
            rng,
            phase: Phase::Idle,
            peer_uuids: None,
            cs_override: None,
            peer_role: Role::Unknown,
            peer_disk: DiskState::DUnknown,
            last_state_sent: None,
            reported: None,
            app: HashMap::new(),
            early_acked: BTreeSet::new(),
            unlinked: BTreeSet::new(),
            peer_bufs: HashMap::new(),
            read_bufs: HashMap::new(),
            next_key: 1,
        }
    }

    /// Power loss: the disk loses its cache (torn with `tear`), everything in memory is
    /// gone; the metadata stays as last written.
    pub fn crash(&mut self, tear: Option<u64>) {
        self.disk.crash(tear);
        let meta = self.meta.clone();
        let disk = std::mem::replace(&mut self.disk, SimDisk::placeholder());
        let rng = self.rng.fork();
        *self = Node::new(self.id, disk, meta, rng, self.mutation);
    }

    /// Boots: `apply-al` when the metadata is unclean, attach, then `connect` as `up`
    /// does.
    pub fn start(&mut self, now: Instant) {
        if !self.meta.sb.clean {
            self.meta.apply_al();
        }
        self.up = true;
        self.repl = Replicator::new(repl_config(), SIZE, self.meta.bitmap.clone())
            .with_activity_log(AlWriter::new(AL_EXTENTS, 0));
        let info = AttachInfo {
            uuids: self.meta.sb.uuids,
            flags: self.meta.sb.flags,
            la_size_sect: self.meta.sb.la_size_sect,
            capacity_sect: SIZE / 512,
            oos_bits: self.meta.bitmap.count(),
        };
        self.vol
            .handle_attach(info)
            .expect("a node's own metadata attaches");
        self.perform();
        let local = self.local_disk();
        self.conn.handle_local(local);
        self.conn.handle_admin(
            now,
            ConnAdmin::Connect {
                discard_my_data: false,
            },
        );
        self.drain(now);
    }

    // ----- queries --------------------------------------------------------------------

    /// The connection state as status shows it (a resync's state while one runs).
    pub fn cstate(&self) -> ConnState {
        match (self.cs_override, self.conn.state()) {
            (Some(o), s) if s >= ConnState::Connected => o,
            (_, s) => s,
        }
    }

    /// Role.
    pub fn role(&self) -> Role {
        self.vol.state().role
    }

    /// Disk state.
    pub fn disk_state(&self) -> DiskState {
        self.vol.state().disk
    }

    /// Application requests not answered yet.
    pub fn app_in_flight(&self) -> usize {
        self.app.len()
    }

    /// Whether the data path serves the device (Primary, UpToDate).
    pub fn serving(&self) -> bool {
        self.up && self.vol.serving().is_none()
    }

    /// Nothing in progress on this node (no I/O, no request, no bitmap exchange).
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.app.is_empty() && self.phase == Phase::Idle
    }

    fn local_disk(&self) -> LocalDisk {
        let st = self.vol.state();
        LocalDisk {
            uuids: self.vol.uuids().unwrap_or_default(),
            role: st.role,
            disk: st.disk,
            crashed_primary: self.vol.crashed_primary(),
            oos_bits: self.vol.oos_kib() / 4,
            backing_sect: SIZE / 512,
            user_sect: 0,
            current_sect: self.vol.size_sect(),
        }
    }

    fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    // ----- the event loop's side (runtime.rs) -----------------------------------------

    /// Carries out the volume's actions (superblock writes are synchronous and durable).
    fn perform(&mut self) {
        while let Some(a) = self.vol.poll_action() {
            match a {
                Action::PersistSuperblock { update, .. } => self.meta.sb = update,
                Action::SetServing { .. }
                | Action::CloseDisk { .. }
                | Action::DetachFailedDisk { .. } => {}
                // The simulated nodes run with `fencing dont-care` (no handler to call).
                Action::FencePeer { .. } | Action::ResumeIo { .. } => {}
            }
        }
    }

    /// `primary`/`secondary`, as `Runtime::admin` does it, with the application's open
    /// count (a client with requests in flight has the device open), and the data disk
    /// flushed before a Primary demotes (`flush_before_demotion`; a failed flush refuses).
    pub fn admin(&mut self, now: Instant, cmd: AdminCmd) -> Result<(), AdminError> {
        let open = usize::from(!self.app.is_empty());
        self.vol.handle_open_count(open);
        let random = self.random();
        if matches!(cmd, AdminCmd::Secondary | AdminCmd::Down) && self.role() == Role::Primary {
            // The probe the runtime's checks amount to: a refusal must change nothing, so
            // the flush only runs for a demotion the volume would accept.
            let mut probe = self.vol.clone();
            probe
                .handle_admin(cmd, random)
                .map_err(AdminError::Refused)?;
            self.disk.flush().map_err(AdminError::Io)?;
        }
        self.vol
            .handle_admin(cmd, random)
            .map_err(AdminError::Refused)?;
        self.perform();
        let local = self.local_disk();
        self.on_local(local);
        self.drain(now);
        Ok(())
    }

    /// `connect [--discard-my-data]` (nothing to do unless StandAlone, as the runtime
    /// says) and `disconnect`.
    pub fn conn_admin(&mut self, now: Instant, cmd: ConnAdmin) {
        match cmd {
            ConnAdmin::Connect { .. } if self.vol.state().conn != ConnState::StandAlone => {}
            ConnAdmin::Disconnect => {
                self.conn.handle_admin(now, cmd);
                self.connecting = false;
            }
            _ => self.conn.handle_admin(now, cmd),
        }
        self.drain(now);
    }

    /// The session's call to the event loop, answered at once.
    fn report(&mut self) {
        let call = (
            self.cstate(),
            self.peer_role,
            self.peer_disk,
            self.repl.bitmap().count(),
        );
        if self.reported == Some(call) {
            return;
        }
        self.reported = Some(call);
        self.vol.handle_oos_bits(call.3);
        let random = self.random();
        self.vol.handle_peer(call.0, call.1, call.2, random);
        self.perform();
        let local = self.local_disk();
        self.on_local(local);
    }

    // ----- the session (session/mod.rs) -----------------------------------------------

    fn on_local(&mut self, local: LocalDisk) {
        let old = *self.conn.local();
        self.conn.handle_local(local);
        self.repl
            .handle_local_trusted(local.disk == DiskState::UpToDate);
        // As the session does: the bitmap goes to disk on a demotion (`after_state_ch`).
        if old.role == Role::Primary
            && local.role == Role::Secondary
            && self.cstate() <= ConnState::Connected
        {
            self.write_bitmap();
        }
        if !(self.generation.is_some() && self.conn.state() >= ConnState::Connected) {
            return;
        }
        if old.uuids != local.uuids {
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

    fn send_packet(&mut self, socket: Socket, packet: Packet<'_>) {
        if self.generation.is_none() {
            return;
        }
        let mut buf = Vec::new();
        Frame::new(0, packet).encode(&mut buf);
        self.outbox.push(Out::Frame(socket, buf));
    }

    /// An application write (the schedule only writes to a serving Primary).
    pub fn app_write(&mut self, now: Instant, tag: u64, offset: u64, data: Vec<u8>, fua: bool) {
        let len = data.len() as u32;
        if !self.repl.is_linked() {
            self.unlinked.insert(tag);
        }
        self.app.insert(tag, AppOp::Write { offset, data, fua });
        self.repl
            .handle_app_write(tag, offset, len, WriteKind::Write { fua });
        self.drain(now);
    }

    /// An application flush (issued only when no write is in flight, as NBD orders it).
    pub fn app_flush(&mut self, now: Instant, tag: u64) {
        self.app.insert(tag, AppOp::Flush);
        self.repl.handle_app_flush(tag);
        self.drain(now);
    }

    /// The transport is up (both sockets).
    pub fn transport_up(&mut self, now: Instant, generation: u64, accepted: bool) {
        self.generation = Some(generation);
        self.connecting = false;
        let mut random = [0u8; CHALLENGE_LEN];
        for b in random.iter_mut() {
            *b = self.rng.next_u64() as u8;
        }
        self.conn
            .handle_transport_up(now, TransportUp { accepted, random });
        if self.conn.state() != ConnState::WFReportParams {
            // Not waiting for one: the host closes the extra transport.
            self.outbox.push(Out::Close);
            self.generation = None;
        }
        self.drain(now);
    }

    /// The transport ended under us (the peer closed or the link broke).
    pub fn transport_lost(&mut self, now: Instant) {
        if self.generation.is_some() {
            self.conn.handle_transport_lost(now);
            self.drain(now);
        }
    }

    /// A frame from the peer (`RecvFailed`/`Packet` routing of the session).
    pub fn receive(&mut self, now: Instant, bytes: &[u8]) {
        if self.generation.is_none() {
            return;
        }
        let frame = match Frame::decode(bytes) {
            Ok(Some((f, used))) if used == bytes.len() => f,
            other => {
                self.notes
                    .push(Note::ProtocolError(format!("undecodable frame: {other:?}")));
                self.conn.handle_transport_lost(now);
                self.drain(now);
                return;
            }
        };
        if frame.flags & flags::MAY_IGNORE != 0 && matches!(frame.packet, Packet::Unknown { .. }) {
            return;
        }
        self.on_packet(now, frame.packet);
        self.drain(now);
    }

    fn on_packet(&mut self, now: Instant, packet: Packet<'_>) {
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
            Packet::State(s) => {
                if let Some(conn) = ConnState::from_wire(s.conn) {
                    self.repl.handle_peer_conn_state(now, conn);
                }
                self.on_peer_state(s)
            }
            Packet::Bitmap(b) => self.on_bitmap(now, b),
            Packet::SyncUuid(u) => self.on_sync_uuid(now, u.uuid),
            Packet::Data(d) | Packet::RsDataReply(d) => {
                let key = self.next_key;
                self.next_key += 1;
                self.peer_bufs.insert(key, d.payload.to_vec());
                if let Err(e) = self.repl.handle_packet(now, &packet, Some(key)) {
                    self.peer_bufs.remove(&key);
                    self.protocol_error(now, e.to_string());
                }
            }
            other => {
                if let Err(e) = self.repl.handle_packet(now, &other, None) {
                    self.protocol_error(now, e.to_string());
                }
            }
        }
    }

    fn protocol_error(&mut self, now: Instant, what: String) {
        self.notes.push(Note::ProtocolError(what));
        self.conn.handle_transport_lost(now);
    }

    // ----- exchange.rs ----------------------------------------------------------------

    fn on_peer_state(&mut self, s: wire::State) {
        let role = Role::from_wire(s.role).unwrap_or(Role::Unknown);
        let mut disk = DiskState::from_wire(s.disk).unwrap_or(DiskState::DUnknown);
        if disk == DiskState::UpToDate && self.repl.is_awaiting_target() {
            disk = DiskState::Inconsistent;
        }
        let was = self.peer_disk;
        self.peer_role = role;
        self.peer_disk = disk;
        self.report();
        if self.phase == Phase::Idle
            && self.cstate() == ConnState::Connected
            && self.conn.local().disk == DiskState::Inconsistent
            && disk == DiskState::UpToDate
            && was != DiskState::UpToDate
        {
            self.begin_resync(SyncSide::Target, true);
        }
    }

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

    fn on_bitmap(&mut self, now: Instant, b: wire::Bitmap<'_>) {
        if self.phase == Phase::Idle
            && self.cstate() == ConnState::Connected
            && self.conn.local().disk == DiskState::UpToDate
            && b.start_word == 0
        {
            self.begin_resync(SyncSide::Source, false);
        }
        let Phase::Bitmap {
            side,
            words_total,
            words_got,
            sync_uuid,
        } = self.phase
        else {
            return self.protocol_error(now, "BITMAP outside a bitmap exchange".into());
        };
        let words: Vec<u64> = b
            .words
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if b.start_word != words_got {
            return self.protocol_error(now, "BITMAP chunks out of order".into());
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
            self.write_bitmap();
            match side {
                SyncSide::Source => {
                    self.phase = Phase::Idle;
                    let random = self.random();
                    let uuid = self.vol.handle_sync_source_start(random);
                    self.perform();
                    self.send_packet(Socket::Data, Packet::SyncUuid(SyncUuid { uuid }));
                    self.cs_override = Some(ConnState::SyncSource);
                    self.started_sync(now, SyncSide::Source);
                }
                SyncSide::Target => {
                    self.phase = Phase::WaitSyncUuid;
                    if let Some(u) = sync_uuid {
                        self.on_sync_uuid(now, u);
                    }
                }
            }
        }
    }

    fn on_sync_uuid(&mut self, now: Instant, uuid: u64) {
        match self.phase {
            Phase::WaitSyncUuid => {
                self.phase = Phase::Idle;
                self.vol.handle_sync_target_start(uuid);
                self.perform();
                self.cs_override = Some(ConnState::SyncTarget);
                self.started_sync(now, SyncSide::Target);
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
            _ => self.protocol_error(now, "SYNC_UUID outside a resync start".into()),
        }
    }

    fn started_sync(&mut self, now: Instant, side: SyncSide) {
        let local = self.local_disk();
        self.conn.handle_local(local);
        self.send_state(local);
        if side == SyncSide::Source {
            // The target is Inconsistent from here on (the session's `started_sync`).
            self.peer_disk = DiskState::Inconsistent;
        }
        self.repl.start_sync(now, side);
        self.report();
    }

    fn on_conn_event(&mut self, now: Instant, e: ConnEvent) {
        match e {
            ConnEvent::StateChanged { .. } => self.report(),
            ConnEvent::Connect => self.connecting = true,
            ConnEvent::CloseTransport => {
                if self.generation.take().is_some() {
                    self.outbox.push(Out::Close);
                }
                if self.repl.may_target_have_finished() {
                    self.vol.handle_sync_source_tail();
                }
                self.repl.handle_link_down();
                self.write_bitmap();
                self.phase = Phase::Idle;
                self.cs_override = None;
                self.peer_role = Role::Unknown;
                self.peer_disk = DiskState::DUnknown;
                self.last_state_sent = None;
                self.report();
            }
            ConnEvent::Refused(ConnRefusal::SplitBrain { .. }) => self.notes.push(Note::SplitBrain),
            ConnEvent::Decided {
                decision,
                local,
                peer: peer_uuids,
                ..
            } => {
                self.notes.push(Note::Decided(
                    decision.outcome,
                    self.generation.unwrap_or_default(),
                    format!(
                        "{:?} local {local:x?} crashed={} peer {peer_uuids:x?}",
                        decision.comparison,
                        self.conn.local().crashed_primary
                    ),
                ));
                // Rules 34/71 repaired our UUIDs, rules 35/51 our copy of the peer's (the
                // peer repairs its own): DRBD keeps both.
                if let Some(r) = decision.comparison.local_repair {
                    self.vol.handle_uuid_repair(r);
                    self.perform();
                }
                self.peer_uuids = Some(decision.comparison.peer_repair.unwrap_or(peer_uuids));
                self.peer_role = self.conn.peer_role();
                self.peer_disk = self.conn.peer_disk();
                self.repl.handle_link_up();
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
            ConnEvent::Refused(_)
            | ConnEvent::Agreed(_)
            | ConnEvent::Authenticated
            | ConnEvent::TransportLost(_)
            | ConnEvent::DiscardMyDataCleared => {}
        }
    }

    // ----- actions.rs -----------------------------------------------------------------

    /// Carries out everything the state machines ask for, until they are quiet.
    pub fn drain(&mut self, now: Instant) {
        for _ in 0..10_000 {
            let mut busy = false;
            while let Some(t) = self.conn.poll_transmit() {
                busy = true;
                if self.generation.is_some() {
                    let mut buf = Vec::new();
                    t.frame().encode(&mut buf);
                    self.outbox.push(Out::Frame(t.socket(), buf));
                }
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
        panic!("node {} did not settle in drain", self.id);
    }

    fn on_repl_action(&mut self, a: ReplAction) {
        match a {
            ReplAction::Local { id, io } => {
                let early = match io {
                    LocalIo::Flush => Some(self.flush_now()),
                    _ => None,
                };
                self.pending.push(PendingIo { id, io, early });
            }
            ReplAction::Send(o) => {
                let data: Vec<u8> = match o.payload() {
                    Some(Payload::App(tag)) => match self.app.get(&tag) {
                        Some(AppOp::Write { data, .. }) => data.clone(),
                        _ => Vec::new(),
                    },
                    Some(Payload::Peer(k)) => self.peer_bufs.get(&k).cloned().unwrap_or_default(),
                    Some(Payload::Read(id)) => self.read_bufs.remove(&id).unwrap_or_default(),
                    None => Vec::new(),
                };
                if self.generation.is_some() {
                    let mut buf = Vec::new();
                    o.encode(0, &data, &[], &mut buf);
                    self.outbox.push(Out::Frame(o.socket(), buf));
                }
            }
            ReplAction::Complete { tag, res } => {
                self.app.remove(&tag);
                let issued_unlinked = self.unlinked.remove(&tag);
                if !self.early_acked.remove(&tag) {
                    let linked = self.repl.is_linked() && !issued_unlinked;
                    self.notes.push(Note::Completed {
                        tag,
                        ok: res.is_ok(),
                        linked,
                        issued_unlinked,
                    });
                }
            }
            // A failed write: the disk misses data it claimed, it goes Inconsistent. A
            // failed read changes nothing here: the simulated disks fail transiently, the
            // block is still there, and what it served is marked or retried (DRBD 8.4's
            // pass_on would make the disk Inconsistent for that too, which with a
            // transient error only stops a resync from its only good source).
            ReplAction::LocalIoError { write: false } => {}
            ReplAction::LocalIoError { write: true } => {
                self.vol.handle_local_io_error();
                self.perform();
                let local = self.local_disk();
                self.on_local(local);
            }
            // Nothing here reads through the peer.
            ReplAction::ReadData { .. } => {}
            ReplAction::Release(p) => match p {
                Payload::Peer(k) => {
                    self.peer_bufs.remove(&k);
                }
                Payload::Read(id) => {
                    self.read_bufs.remove(&id);
                }
                Payload::App(_) => {}
            },
            ReplAction::WriteAl { tr, evicted } => {
                let live = self.repl.bitmap().clone();
                self.meta.write_al(&live, &tr, &evicted);
                self.repl.handle_al_written();
            }
            ReplAction::VerifyFinished { .. } => self.write_bitmap(),
            ReplAction::SyncFinished { side, failed, .. } => {
                self.write_bitmap();
                self.cs_override = Some(ConnState::Connected);
                let target = side == SyncSide::Target;
                if !target {
                    // As the session does (`drbd_resync_finished` sets the source's pdsk).
                    self.peer_disk = if failed == 0 {
                        DiskState::UpToDate
                    } else {
                        DiskState::Inconsistent
                    };
                }
                self.vol
                    .handle_sync_finished(target, failed, self.peer_uuids);
                self.perform();
                let local = self.local_disk();
                self.on_local(local);
                self.report();
            }
        }
    }

    /// The whole bitmap to the meta-disk (the daemon's `write_bitmap`), after a flush of
    /// the data disk: a bit is cleared when a resync write completes, which may be in the
    /// disk's volatile cache; the cleared bit must not become durable before the data.
    fn write_bitmap(&mut self) {
        let flushed =
            self.mutation == Some(Mutation::BitmapWriteWithoutFlush) || self.disk.flush().is_ok();
        if flushed {
            self.meta.bitmap = self.repl.bitmap().clone();
        } else {
            // As the session does: without the flush no bit may be cleared on disk.
            let live = self.repl.bitmap().words().to_vec();
            self.meta.bitmap.or_words(0, &live);
        }
    }

    fn flush_now(&mut self) -> Result<(), Errno> {
        if self.mutation == Some(Mutation::SkipSecondaryFlush) && self.role() == Role::Secondary {
            return Ok(());
        }
        self.disk.flush()
    }

    /// Completes local I/O number `i` of [`Node::pending`].
    pub fn complete_io(&mut self, now: Instant, i: usize) {
        let p = self.pending.swap_remove(i);
        let res = match p.io {
            LocalIo::App { tag } => match self.app.get(&tag).cloned() {
                Some(AppOp::Write { offset, data, fua }) => {
                    let res = self.disk.write(offset, &data, fua);
                    if res.is_ok() && self.mutation == Some(Mutation::AckOnLocalCompletion) {
                        self.early_acked.insert(tag);
                        self.notes.push(Note::Completed {
                            tag,
                            ok: true,
                            linked: self.repl.is_linked(),
                            issued_unlinked: self.unlinked.contains(&tag),
                        });
                    }
                    res
                }
                _ => Err(Errno::EINVAL),
            },
            LocalIo::Write {
                key,
                offset,
                len,
                fua,
            } => {
                let data = match key {
                    Payload::Peer(k) => self.peer_bufs.get(&k).cloned(),
                    _ => None,
                };
                match data {
                    Some(d) if d.len() == len as usize => self.disk.write(offset, &d, fua),
                    _ => {
                        self.notes.push(Note::ProtocolError(format!(
                            "write payload {key:?} missing when its write ran"
                        )));
                        Err(Errno::EIO)
                    }
                }
            }
            LocalIo::Discard { offset, len, .. } => self.disk.zero(offset, u64::from(len)),
            LocalIo::Read {
                offset,
                len,
                digest,
            } => match self.disk.read(offset, len) {
                Ok(d) => {
                    if digest {
                        let mut sum = Vec::new();
                        urbd::core::repl::block_digests(&d, &mut sum);
                        self.repl.handle_read_digest(p.id, &sum);
                    }
                    self.read_bufs.insert(p.id, d);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            LocalIo::Flush => p.early.unwrap_or(Ok(())),
        };
        self.repl.handle_local_done(now, p.id, res);
        self.drain(now);
    }

    /// Timers due at `now`.
    pub fn tick(&mut self, now: Instant) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        if self.repl.poll_timeout().is_some_and(|t| t <= now) {
            self.repl.handle_timeout(now);
        }
        self.drain(now);
    }

    /// The next timer.
    pub fn next_timer(&self) -> Option<Instant> {
        [self.conn.poll_timeout(), self.repl.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The bitmap in memory.
    pub fn bitmap(&self) -> &Bitmap {
        self.repl.bitmap()
    }
}
