//! What comes from the peer: packet routing between the connection and the data side, the
//! peer's state, the bitmap exchange and the start of a resync, and the connection's events.

use super::*;
use crate::core::HandshakeRefusal;

impl Session {
    pub(super) fn on_packet(&mut self, now: Instant, ty: PacketType, f: u8, payload: Vec<u8>) {
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
            Packet::Uuids(u) => {
                // What the peer changed, for the split-brain report (the connection
                // compares it in `drbd_sync_handshake`).
                self.handshake_peer_bits = u.bitmap_bits;
                self.refresh_local_oos();
                self.conn.handle_packet(now, Packet::Uuids(u))
            }
            Packet::Hello(_)
            | Packet::AuthChallenge(_)
            | Packet::AuthResponse(_)
            | Packet::ReportParams(_)
            | Packet::Sizes(_)
            | Packet::Ping
            | Packet::PingAck
            | Packet::Disconnect
            | Packet::Unknown { .. } => self.conn.handle_packet(now, packet),
            Packet::State(s) if self.conn.state() == ConnState::WFReportParams => {
                self.conn.handle_packet(now, Packet::State(s))
            }
            Packet::State(s) => self.on_peer_state(s),
            Packet::Bitmap(b) => self.on_bitmap_chunk(now, BitmapChunk::Plain(b)),
            Packet::CompressedBitmap(c) => self.on_bitmap_chunk(now, BitmapChunk::Runs(c)),
            Packet::SyncUuid(u) => self.on_sync_uuid(now, u.uuid),
            Packet::Data(_) | Packet::RsDataReply(_) | Packet::DataReply(_) => {
                if let Err(sector) = self.check_integrity(&packet) {
                    tracing::error!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name,
                        "Digest integrity check FAILED: sector {sector} ({ty}); dropping the connection");
                    return self.protocol_error(now, "data integrity check failed");
                }
                let key = self.next_key;
                self.next_key += 1;
                // The block stays in the received frame (no copy): where it is in it.
                let (at, len) = match &packet {
                    Packet::Data(d) | Packet::RsDataReply(d) | Packet::DataReply(d) => (
                        (d.payload.as_ptr() as usize).saturating_sub(payload.as_ptr() as usize),
                        d.payload.len(),
                    ),
                    _ => (0, 0),
                };
                // The core only queues actions here; the payload is stored before they run.
                if let Err(e) = self.repl.handle_packet(now, &packet, Some(key)) {
                    return self.protocol_error(now, e);
                }
                // nr: data received, as ns counts data sent.
                self.recv_bytes += len as u64;
                self.buffered.fetch_add(len, Ordering::AcqRel);
                self.peer_bufs.insert(
                    key,
                    PeerBuf {
                        frame: payload,
                        at,
                        len,
                    },
                );
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

    /// A received payload is no longer needed.
    pub(super) fn drop_peer_buf(&mut self, key: u64) {
        if let Some(b) = self.peer_bufs.remove(&key) {
            self.buffered.fetch_sub(b.len, Ordering::AcqRel);
        }
    }

    pub(super) fn on_peer_state(&mut self, s: wire::State) {
        let role = Role::from_wire(s.role).unwrap_or(Role::Unknown);
        let mut disk = DiskState::from_wire(s.disk).unwrap_or(DiskState::DUnknown);
        // A STATE from before the target took the sync UUID (DRBD's receive_state).
        if disk == DiskState::UpToDate && self.repl.is_awaiting_target() {
            disk = DiskState::Inconsistent;
        }
        if (role, disk) != (self.peer_role, self.peer_disk) {
            tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, ?role, ?disk, "peer state");
        }
        let was = self.peer_disk;
        self.peer_role = role;
        self.peer_disk = disk;
        // A Diskless peer takes no replicated writes; what it writes through us is marked.
        self.repl.handle_peer_disk(disk >= DiskState::Inconsistent);
        // A SyncSource learns from here that its target started and finished (the end of
        // an empty resync, `receive_state`).
        if let Some(conn) = ConnState::from_wire(s.conn) {
            self.repl.handle_peer_conn_state(Instant::now(), conn);
        }
        // The peer's pause-sync (its user_isp is our peer_isp).
        let peer_paused = s.flags & wire::state_flags::USER_ISP != 0;
        if peer_paused != self.peer_paused {
            self.peer_paused = peer_paused;
            tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name,
                "the peer {} the resync", if peer_paused { "paused" } else { "resumed" });
            self.repl
                .set_sync_paused(Instant::now(), self.user_paused || self.peer_paused);
        }
        self.report();
        // The peer's invalidate-remote: it is about to be SyncSource of a full sync.
        if self.phase == Phase::Idle
            && self.cstate() == ConnState::Connected
            && s.conn == ConnState::StartingSyncS as u8
        {
            tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name,
                "the peer invalidated our disk (invalidate-remote): full resync from it");
            self.begin_resync(SyncSide::Target, true);
            return;
        }
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
    pub(super) fn begin_resync(&mut self, side: SyncSide, full: bool) {
        if full {
            self.repl.set_all_out_of_sync();
        }
        self.phase = Phase::Bitmap {
            side,
            bits_total: self.repl.bitmap().bits(),
            bits_got: 0,
            sync_uuid: None,
        };
        self.send_bitmap();
    }

    /// A chunk of the peer's bitmap, plain or run-length coded: the peer starting a resync
    /// towards itself, or the other half of ours.
    pub(super) fn on_bitmap_chunk(&mut self, now: Instant, chunk: BitmapChunk<'_>) {
        if self.phase == Phase::Idle
            && self.cstate() == ConnState::Connected
            && self.conn.local().disk == DiskState::UpToDate
            && chunk.start_bit() == 0
        {
            // The peer started a resync towards itself (its receive_state above).
            self.begin_resync(SyncSide::Source, false);
        }
        let Phase::Bitmap {
            side,
            bits_total,
            bits_got,
            sync_uuid,
        } = self.phase
        else {
            return self.protocol_error(now, "BITMAP outside a bitmap exchange");
        };
        if chunk.start_bit() != bits_got {
            return self.protocol_error(now, "BITMAP chunks out of order");
        }
        let covered = match chunk {
            BitmapChunk::Plain(b) => {
                let words: Vec<u64> = b.words().collect();
                self.repl.merge_peer_words(b.start_word, &words);
                Some((words.len() as u64 * 64).min(bits_total - bits_got))
            }
            BitmapChunk::Runs(c) => self
                .repl
                .merge_peer_runs(c.start_bit, c.runs().map(|r| r.ok())),
        };
        let Some(covered) = covered else {
            return self.protocol_error(now, "a bitmap chunk reaches past the bitmap");
        };
        let got = bits_got + covered;
        self.phase = Phase::Bitmap {
            side,
            bits_total,
            bits_got: got,
            sync_uuid,
        };
        if got >= bits_total {
            self.bitmap_exchanged(now, side, sync_uuid);
        }
    }

    pub(super) fn bitmap_exchanged(
        &mut self,
        now: Instant,
        side: SyncSide,
        early_uuid: Option<u64>,
    ) {
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

    pub(super) fn on_sync_uuid(&mut self, now: Instant, uuid: u64) {
        match self.phase {
            Phase::WaitSyncUuid => {
                if self.hold_sync_uuid(uuid) {
                    // The resync starts once the split-brain save is durable.
                    return;
                }
                // Nothing is written before the metadata says Inconsistent (the answer
                // starts the resync).
                self.phase = Phase::AwaitTarget;
                self.call(PeerCall::SyncTargetStart(uuid));
            }
            Phase::Bitmap {
                side: SyncSide::Target,
                bits_total,
                bits_got,
                ..
            } => {
                self.phase = Phase::Bitmap {
                    side: SyncSide::Target,
                    bits_total,
                    bits_got,
                    sync_uuid: Some(uuid),
                }
            }
            _ => self.protocol_error(now, "SYNC_UUID outside a resync start"),
        }
    }

    pub(super) fn started_sync(&mut self, now: Instant, side: SyncSide, mut local: LocalDisk) {
        local.oos_bits = self.repl.bitmap().count();
        self.conn.handle_local(local);
        let kib = self.repl.oos_kib();
        tracing::info!(resource = %self.cfg.resource, "Began resync as {} (will sync {kib} KB [{} bits set]).",
            if side == SyncSide::Source { "SyncSource" } else { "SyncTarget" }, kib / 4);
        self.send_state(local);
        if side == SyncSide::Source {
            // The target is Inconsistent from here on (`drbd_start_resync`); what the
            // handshake said of its disk is stale, and reporting it would undo the
            // volume's pdsk (and with it the new generation a lost finished target needs).
            self.peer_disk = DiskState::Inconsistent;
        }
        self.repl.start_sync(now, side);
        self.report();
    }

    // ----- outputs --------------------------------------------------------------------

    pub(super) fn on_conn_event(&mut self, now: Instant, e: ConnEvent) {
        let res = self.cfg.resource.clone();
        let peer = self.cfg.link.peer_name.clone();
        match e {
            ConnEvent::StateChanged { from, to } => {
                tracing::info!(resource = %res, %peer, "conn( {from:?} -> {to:?} )");
                if to >= ConnState::Connected {
                    // The peer is back: what was frozen goes on (DRBD resends; here the
                    // writes completed locally are in the bitmap and the handshake's
                    // resync moves them).
                    self.thaw("the connection is back");
                }
                if to == ConnState::StandAlone {
                    // StandAlone does not listen: the peer's dials are refused, not
                    // queued up to cross our next connect.
                    self.stop_connector();
                    self.listener = None;
                }
                self.report();
            }
            ConnEvent::Connect => self.start_connector(),
            ConnEvent::CloseTransport => {
                self.freeze_if_fencing();
                self.peer_waits.clear();
                self.close_link();
                // Before the loss reaches the volume (the next State call): a SyncSource
                // that answered everything may have a finished target it has not heard of.
                if self.repl.may_target_have_finished() {
                    self.call(PeerCall::SyncSourceTail);
                }
                self.repl.handle_link_down();
                self.sb_save_link_down(now);
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
                    let local_bits = self.conn.local().oos_bits;
                    let peer_bits = self.handshake_peer_bits;
                    tracing::error!(resource = %res, %peer,
                        "{why} local UUIDs {}, peer UUIDs {}; changed since last connected: this node {} KiB, {peer} {} KiB (connect --discard-my-data on the node whose changes are to be thrown away; `urbdadm status {res}` prints the commands)",
                        fmt_uuids(local), fmt_uuids(theirs), local_bits * 4, peer_bits * 4);
                    self.split_brain = Some(super::super::SplitBrainSeen {
                        local_bits,
                        peer_bits,
                        local: *local,
                        peer: *theirs,
                    });
                    self.publish(now);
                } else if why
                    == crate::core::ConnRefusal::Handshake(HandshakeRefusal::TargetIsPrimary)
                {
                    tracing::error!(resource = %res, %peer,
                        "{why} (this Primary's data was chosen to be overwritten; urbd never resyncs under a serving Primary: make it Secondary, then connect)");
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
                self.on_decision_handlers(&decision);
                // A split brain reported earlier is over once a handshake decides anything
                // else (the Refused event that follows sets it again if not).
                if decision.outcome != Handshake::Refuse(HandshakeRefusal::SplitBrain)
                    && self.split_brain.take().is_some()
                {
                    self.publish(now);
                }
                if let Handshake::Refuse(_) = decision.outcome {
                    // The connection refuses next (Refused, CloseTransport): nothing of the
                    // data side starts.
                    return;
                }
                // The victim of a resolved split brain saves its own changes (the bitmap
                // holds only those until the exchange merges the peer's) before anything
                // overwrites them; a save that cannot be made refuses the resync.
                if let (Handshake::SyncTarget { .. }, Some(resolution)) =
                    (decision.outcome, decision.split_brain)
                    && !self.start_split_brain_save(now, resolution, peer_uuids)
                {
                    return;
                }
                if size_sect > 0 && size_sect * 512 < self.cfg.size_bytes {
                    // The smaller disk wins (the connection refused it if our data in use
                    // would not fit).
                    tracing::warn!(resource = %res, %peer, size_sect,
                        "the peer's disk is smaller: the device shrinks to {size_sect} sectors");
                    self.call(PeerCall::Resize { size_sect });
                    self.cfg.size_bytes = size_sect * 512;
                    self.repl.handle_resize(size_sect * 512);
                }
                // DRBD's repair of the UUIDs after a SYNC_UUID lost with the link (rules
                // 34/71 here, 35/51 for our copy of the peer's): without it each such cut
                // pushes one more UUID into the history until the common ancestor falls out
                // and the nodes look unrelated (found by the simulation).
                if let Some(r) = decision.comparison.local_repair {
                    self.call(PeerCall::UuidRepair(r));
                }
                self.peer_uuids = Some(decision.comparison.peer_repair.unwrap_or(peer_uuids));
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
            }
        }
    }

    /// DRBD's log lines for a split brain the handshake resolved, and the handlers the
    /// decision calls (`drbd_khelper` in `drbd_sync_handshake`).
    fn on_decision_handlers(&mut self, d: &crate::core::HandshakeDecision) {
        use crate::core::SplitBrainResolution;
        let res = self.cfg.resource.clone();
        let peer = self.cfg.link.peer_name.clone();
        let from = match d.outcome {
            Handshake::SyncSource { .. } => "this",
            _ => "peer",
        };
        match d.split_brain {
            Some(SplitBrainResolution::Automatic { primaries }) => {
                tracing::warn!(resource = %res, %peer,
                    "Split-Brain detected, {primaries} primaries, automatically solved. Sync from {from} node")
            }
            Some(SplitBrainResolution::Manual) => {
                tracing::warn!(resource = %res, %peer,
                    "Split-Brain detected, manually solved. Sync from {from} node")
            }
            None => {}
        }
        if d.call_initial_split_brain {
            self.call(PeerCall::Handler(super::super::Handler::InitialSplitBrain));
        }
        if d.demote_first {
            tracing::error!(resource = %res, %peer,
                "after-sb policy call-pri-lost-after-sb chose this Primary's data to discard; urbd does not demote a serving Primary during the handshake: calling the pri-lost-after-sb handler and staying StandAlone (make this node Secondary, then connect)");
            self.call(PeerCall::Handler(super::super::Handler::PriLostAfterSb));
        }
        if d.call_pri_lost {
            self.call(PeerCall::Handler(super::super::Handler::PriLost));
        }
        if d.call_split_brain {
            self.call(PeerCall::Handler(super::super::Handler::SplitBrain));
        }
    }

    /// Our bitmap to the peer: run-length coded when both sides have the feature and that
    /// is smaller (it nearly always is), else as plain words.
    pub(super) fn send_bitmap(&mut self) {
        let bm = self.repl.bitmap();
        let words_total = bm.bits().div_ceil(64) as usize;
        let compressed = self
            .conn
            .agreed()
            .is_some_and(|a| a.features & wire::features::COMPRESSED_BITMAP != 0);
        if compressed {
            let chunks = crate::core::repl::encode_runs(bm, wire::MAX_BITMAP_CODE as usize);
            let code: usize = chunks.iter().map(|c| c.code.len() + 9).sum();
            if code < words_total * 8 {
                tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name,
                    "send bitmap stats [Bytes(packets)]: plain {}({}), RLE {}({}), total {:.1}% saved",
                    words_total * 8, (words_total * 8).div_ceil(wire::MAX_BITMAP_WORDS_BYTES as usize),
                    code, chunks.len(),
                    100.0 - 100.0 * code as f64 / (words_total * 8).max(1) as f64);
                for c in &chunks {
                    self.send_packet(
                        Socket::Data,
                        Packet::CompressedBitmap(wire::CompressedBitmap {
                            start_bit: c.start_bit,
                            first_set: c.first_set,
                            code: &c.code,
                        }),
                    );
                }
                return;
            }
        }
        let per_chunk = (wire::MAX_BITMAP_WORDS_BYTES / 8) as usize;
        let words: Vec<u64> = self.repl.bitmap().words()[..words_total].to_vec();
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
}

/// A chunk of the peer's bitmap.
pub(super) enum BitmapChunk<'a> {
    /// P_BITMAP: words.
    Plain(wire::Bitmap<'a>),
    /// P_COMPRESSED_BITMAP: runs.
    Runs(wire::CompressedBitmap<'a>),
}

impl BitmapChunk<'_> {
    fn start_bit(&self) -> u64 {
        match self {
            BitmapChunk::Plain(b) => b.start_word.saturating_mul(64),
            BitmapChunk::Runs(c) => c.start_bit,
        }
    }
}

/// UUIDs as drbdsetup prints them: `CURRENT:BITMAP:HISTORY1:HISTORY2`.
fn fmt_uuids(u: &Uuids) -> String {
    format!(
        "{:016X}:{:016X}:{:016X}:{:016X}",
        u.current, u.bitmap, u.history[0], u.history[1]
    )
}
