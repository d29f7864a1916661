//! The session's link to the peer: the connector thread, the two sockets and their
//! receiver threads, sending, and the checks that drop a misbehaving link (ko-count,
//! data integrity, protocol errors).

use super::*;

impl Session {
    pub(super) fn start_connector(&mut self) {
        if self.connector.is_some() || self.stopping {
            return;
        }
        if self.listener.is_none() {
            match Listener::bind(self.cfg.link.local) {
                Ok(l) => self.listener = Some(Arc::new(l)),
                Err(e) => {
                    tracing::error!(resource = %self.cfg.resource, "cannot listen on {} for the peer: {e}", self.cfg.link.local);
                    let _ = self.tx.send(Input::LinkGaveUp(format!(
                        "cannot listen on {}: {e}",
                        self.cfg.link.local
                    )));
                    return;
                }
            }
        }
        let Some(listener) = self.listener.clone() else {
            return;
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (cfg, tx, flag) = (self.cfg.link.clone(), self.tx.clone(), stop.clone());
        let tls = self.cfg.tls.clone();
        let resource = self.cfg.resource.clone();
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
                loop {
                    let link = match establish(&listener, &cfg, &flag, &mut rng) {
                        Ok(Some(link)) => link,
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Input::LinkGaveUp(e.to_string()));
                            return;
                        }
                    };
                    match link.secure(tls.as_ref(), cfg.timeout) {
                        Ok(link) => {
                            let _ = tx.send(Input::Linked(link));
                            return;
                        }
                        Err(e) => {
                            // Nothing was read from or written to the peer but the
                            // initial frames; try again after connect-int.
                            tracing::error!(%resource, peer = %cfg.peer_name, addr = %cfg.peer,
                                "dropping the connection: {e}; retrying in {:?}", cfg.connect_int);
                            let until = Instant::now() + cfg.connect_int;
                            while Instant::now() < until {
                                if flag.load(Ordering::Acquire) {
                                    return;
                                }
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                }
            });
        match spawned {
            Ok(h) => self.connector = Some((stop, h)),
            Err(e) => tracing::error!(error = %e, "cannot start the connector thread"),
        }
    }

    pub(super) fn stop_connector(&mut self) {
        if let Some((stop, h)) = self.connector.take() {
            stop.store(true, Ordering::Release);
            let _ = h.join();
        }
    }

    pub(super) fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    pub(super) fn on_linked(&mut self, now: Instant, mut link: PeerLink) {
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
        let timeout = self.write_timeout();
        let _ = link.data.set_write_timeout(Some(timeout));
        let _ = link.meta.set_write_timeout(Some(timeout));
        let mut readers = Vec::new();
        let ring = match (link.data.plain_fd(), link.meta.plain_fd()) {
            (Some(data), Some(meta)) => {
                Some(super::ring_recv::RingRecv::new(data, meta, generation))
            }
            _ => {
                readers = self.start_receivers(&link, generation);
                None
            }
        };
        tracing::info!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, accepted = link.accepted,
            tls = link.data.is_tls(), "connection established");
        self.link = Some(LinkIo {
            data: link.data,
            meta: link.meta,
            readers,
            ring,
        });
        self.arm_receives();
        let mut random = [0u8; crate::core::conn::CHALLENGE_LEN];
        let _ = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty());
        self.refresh_local_oos();
        self.conn.handle_transport_up(
            now,
            TransportUp {
                accepted: link.accepted,
                random,
            },
        );
    }

    /// A receiver thread per socket (a link inside TLS).
    fn start_receivers(&self, link: &PeerLink, generation: u64) -> Vec<JoinHandle<()>> {
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
        readers
    }

    pub(super) fn close_link(&mut self) {
        // What was queued before the close (a last STATE, a refusal) still goes out.
        self.flush_link();
        if let Some(l) = self.link.take() {
            let _ = l.data.shutdown(Shutdown::Both);
            let _ = l.meta.shutdown(Shutdown::Both);
            for r in l.readers {
                let _ = r.join();
            }
            if let Some(rr) = l.ring {
                self.end_ring_receives(rr);
            }
        }
        self.generation += 1;
    }

    /// Queues a frame for the peer; it is written at the end of the loop turn (or now, if
    /// much is queued already).
    pub(super) fn send_bytes(&mut self, socket: Socket, bytes: &[u8]) {
        if self.link.is_none() {
            return;
        }
        let out = self.out_buf(socket == Socket::Data);
        out.extend_from_slice(bytes);
        if out.len() >= MAX_QUEUED_OUT {
            self.flush_link();
        }
    }

    /// Writes the queued frames: the meta socket's first (acks and pings never wait behind
    /// data).
    pub(super) fn flush_link(&mut self) {
        if self.link.is_none() {
            self.out_data.clear();
            self.out_meta.clear();
            return;
        }
        let mut failed = None;
        for data in [false, true] {
            let mut out = std::mem::take(self.out_buf(data));
            if !out.is_empty() && failed.is_none() {
                failed = self.write_link(data, &out).err();
            }
            out.clear();
            if out.capacity() > 4 * MAX_QUEUED_OUT {
                out.shrink_to(MAX_QUEUED_OUT);
            }
            *self.out_buf(data) = out;
        }
        if let Some(e) = failed
            && let Some(l) = self.link.as_ref()
        {
            tracing::warn!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, error = %e, "sending to the peer failed");
            let _ = l.data.shutdown(Shutdown::Both);
            let _ = l.meta.shutdown(Shutdown::Both);
            self.conn.handle_transport_lost(Instant::now());
        }
    }

    /// Writes all of `bytes` to the data or meta socket. On a link received on the ring the
    /// socket is written without blocking, and while it is full the session goes on
    /// receiving (into the frame buffers, handled after the write): the peer may be
    /// writing to us at the same moment (both bitmaps at a connect, remote reads beside
    /// writes), and two nodes that both waited for the other to read would wait until the
    /// write timeout.
    fn write_link(&mut self, data: bool, bytes: &[u8]) -> std::io::Result<()> {
        let Some(l) = self.link.as_mut() else {
            return Ok(());
        };
        let s = if data { &mut l.data } else { &mut l.meta };
        let fd = match (l.ring.is_some(), s.plain_fd()) {
            (true, Some(fd)) => fd,
            _ => return s.write_all(bytes),
        };
        let timeout = self.write_timeout();
        let mut deadline = Instant::now() + timeout;
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            // SAFETY: sending from a valid slice on a socket the link owns.
            let n = unsafe {
                libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                at += n as usize;
                // As SO_SNDTIMEO: the time limit is for making no progress.
                deadline = Instant::now() + timeout;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock => self.wait_writable(fd, deadline)?,
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// The frames queued for the data or the meta socket.
    fn out_buf(&mut self, data: bool) -> &mut Vec<u8> {
        if data {
            &mut self.out_data
        } else {
            &mut self.out_meta
        }
    }

    /// How long a write to the peer may make no progress (`timeout`, at least 1 s).
    fn write_timeout(&self) -> Duration {
        self.cfg.conn.timers.timeout.max(Duration::from_secs(1))
    }

    pub(super) fn send_packet(&mut self, socket: Socket, packet: Packet<'_>) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        Frame::new(0, packet).encode(&mut buf);
        self.send_bytes(socket, &buf);
        self.scratch = buf;
    }

    // ----- packets --------------------------------------------------------------------

    /// DRBD's `ko-count`: a peer that has not answered a write for `timeout` x `ko-count`
    /// is dropped (its disk or the link is stuck; the Primary goes on alone).
    pub(super) fn check_ko_count(&mut self, now: Instant) {
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

    /// `data-integrity-alg crc32c`: the digest of every data packet must match.
    pub(super) fn check_integrity(&self, packet: &Packet<'_>) -> Result<(), u64> {
        integrity_ok(self.integrity, packet)
    }

    pub(super) fn protocol_error(&mut self, now: Instant, e: impl std::fmt::Display) {
        tracing::error!(resource = %self.cfg.resource, peer = %self.cfg.link.peer_name, "protocol error: {e}; dropping the connection");
        if let Some(l) = &self.link {
            let _ = l.data.shutdown(Shutdown::Both);
            let _ = l.meta.shutdown(Shutdown::Both);
        }
        self.conn.handle_transport_lost(now);
    }
}

/// Bytes queued for one socket at most before they are written without waiting for the
/// end of the loop turn.
const MAX_QUEUED_OUT: usize = 1 << 20;

/// Peer data buffered in memory at most before the data socket's receiver pauses.
pub(super) const MAX_PEER_BUFFERED: usize = 16 << 20;

/// A receiver thread: frames from one socket into the session's queue. With `limit`, it
/// stops reading while more than [`MAX_PEER_BUFFERED`] bytes of received data wait to be
/// written.
fn receive(
    mut s: PeerStream,
    generation: u64,
    tx: &InputTx,
    limit: Option<Arc<std::sync::atomic::AtomicUsize>>,
) {
    let mut reader = FrameReader::new();
    loop {
        if let Some(l) = &limit {
            while l.load(Ordering::Acquire) > MAX_PEER_BUFFERED {
                // The session shuts the socket down when the link goes: stop then.
                if !s.is_open() {
                    let _ = tx.send(Input::RecvFailed {
                        generation,
                        data: limit.is_some(),
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
                    data: limit.is_some(),
                    why: e.to_string(),
                });
                return;
            }
        }
    }
}
