//! The transmission loop: one I/O thread, one io_uring for sockets and disk.
//!
//! The thread owns the ring, the backend, the listeners and every connection. Each turn it
//! submits everything queued and waits for at least one completion in a single
//! `io_uring_enter`, then handles all completions: accepts, receives (negotiation bytes go
//! to the sans-IO [`Handshake`], request headers are decoded and checked, payloads copied
//! or received straight into an aligned buffer), backend completions (which become
//! replies), and sends (all queued replies of a connection go out in one sendmsg).
//!
//! Requests are pipelined and complete out of order. Ordering that NBD requires is enforced
//! here, because io_uring gives none: every write-type request gets a global sequence
//! number, and a FLUSH waits until every write received before it — on any connection — has
//! completed, then issues fdatasync. That is what makes CAN_MULTI_CONN truthful. FUA on a
//! write is native (RWF_DSYNC); FUA on trim/write-zeroes (or on a backend without native
//! FUA) is a flush after the op.
//!
//! Backpressure: a connection stops parsing requests while the backend has no free slot or
//! more than [`MAX_INFLIGHT_BYTES`] of payload is in flight, and resumes when ops complete.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{IoUring, opcode, types};

use crate::io::{AlignedBuf, BACKEND_KEY_BIT, Backend, Done, Errno, IoCtx, Op, new_ring};

use super::conn::{Conn, PayloadRecv, Phase};
use super::gate::Gate;
use super::handshake::{ExportDesc, Handshake, Outcome};
use super::pool::BufPool;
use super::proto::{Command, ErrorCode, cmd_flags};
use super::reply;
use super::request::{Limits, REQUEST_HEADER_LEN, Request};

/// Payload bytes (reads and writes) in flight before connections pause.
pub const MAX_INFLIGHT_BYTES: usize = 256 << 20;
/// Reply bytes queued on one connection before it stops taking requests: a client that
/// pipelines reads and never reads the replies cannot make the server buffer without bound.
pub const MAX_QUEUED_REPLY_BYTES: usize = 64 << 20;
/// Connections served at once; more are closed right after accept.
pub const MAX_CONNECTIONS: usize = 256;
const RING_ENTRIES: u32 = 512;

const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_STOP: u64 = 4;
const KIND_CANCEL: u64 = 5;
const KIND_ACCEPT_RETRY: u64 = 6;
/// Pause before accepting again after running out of fds or memory (no busy loop).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const FINAL_FLUSH_TAG: u64 = u64::MAX;

fn ud(kind: u64, generation: u32, idx: usize) -> u64 {
    (kind << 56) | ((u64::from(generation) & 0xFF_FFFF) << 32) | (idx as u64 & 0xFFFF_FFFF)
}

fn ud_parts(ud: u64) -> (u64, u32, usize) {
    (
        (ud >> 56) & 0x7F,
        ((ud >> 32) & 0xFF_FFFF) as u32,
        (ud & 0xFFFF_FFFF) as usize,
    )
}

pub(crate) struct Listener {
    pub(crate) fd: OwnedFd,
    pub(crate) tcp: bool,
    /// TLS offered to this listener's clients.
    pub(crate) tls: Option<super::ExportTls>,
    armed: bool,
    /// A backoff timer is in flight (its timespec lives in `backoff`).
    retry_armed: bool,
    backoff: Box<types::Timespec>,
}

impl Listener {
    pub(crate) fn new(fd: OwnedFd, tcp: bool) -> Self {
        Self {
            fd,
            tcp,
            tls: None,
            armed: false,
            retry_armed: false,
            backoff: Box::new(types::Timespec::new().nsec(ACCEPT_BACKOFF.as_nanos() as u32)),
        }
    }
}

struct Req {
    conn: usize,
    generation: u32,
    cookie: u64,
    cmd: Command,
    offset: u64,
    len: u32,
    seq: Option<u64>,
    flush_after: bool,
    flushing: bool,
    bytes: usize,
}

#[derive(PartialEq, Eq)]
enum FinalFlush {
    NotYet,
    InFlight,
    Done,
}

pub(crate) struct Server {
    ring: IoUring,
    backend: Box<dyn Backend>,
    can_fua: bool,
    desc: ExportDesc,
    gate: Arc<Gate>,
    listeners: Vec<Listener>,
    stop_fd: Arc<OwnedFd>,
    stop_armed: bool,
    stopping: bool,
    final_flush: FinalFlush,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<usize>,
    next_gen: u32,
    reqs: Vec<Option<Req>>,
    free_reqs: Vec<usize>,
    live_reqs: usize,
    inflight_bytes: usize,
    write_seq: u64,
    inflight_writes: BTreeSet<u64>,
    waiting_flushes: VecDeque<(usize, u64)>,
    done: Vec<Done>,
    pool: BufPool,
}

impl Server {
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        desc: ExportDesc,
        gate: Arc<Gate>,
        listeners: Vec<Listener>,
        stop_fd: Arc<OwnedFd>,
    ) -> io::Result<Self> {
        let can_fua = backend.info().can_fua;
        Ok(Self {
            ring: new_ring(RING_ENTRIES)?,
            backend,
            can_fua,
            desc,
            gate,
            listeners,
            stop_fd,
            stop_armed: false,
            stopping: false,
            final_flush: FinalFlush::NotYet,
            conns: Vec::new(),
            free_conns: Vec::new(),
            next_gen: 0,
            reqs: Vec::new(),
            free_reqs: Vec::new(),
            live_reqs: 0,
            inflight_bytes: 0,
            write_seq: 0,
            inflight_writes: BTreeSet::new(),
            waiting_flushes: VecDeque::new(),
            done: Vec::new(),
            pool: BufPool::default(),
        })
    }

    fn push(&mut self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: every buffer an entry points to (receive buffers, payload buffers, iovecs
        // and msghdr, listener and socket fds) lives in a connection or listener that is only
        // freed after its SQEs have completed (`Conn::finished`, `armed` flags).
        unsafe { crate::io::driver_push(&mut self.ring, &entry) }
    }

    /// Runs until stopped and drained.
    pub(crate) fn run(mut self) -> io::Result<()> {
        self.arm_stop()?;
        for i in 0..self.listeners.len() {
            self.arm_accept(i)?;
        }
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            let cqes: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (user_data, res) in cqes {
                self.handle_cqe(user_data, res)?;
                self.handle_backend_done();
            }
            self.after_turn()?;
            if self.stopping && self.drained() {
                break;
            }
        }
        tracing::debug!("data path thread exits");
        Ok(())
    }

    fn drained(&self) -> bool {
        self.final_flush == FinalFlush::Done
            && self.conns.iter().all(Option::is_none)
            && self.live_reqs == 0
            && self.listeners.iter().all(|l| !l.armed && !l.retry_armed)
            && !self.stop_armed
            && self.backend.in_flight() == 0
    }

    fn arm_stop(&mut self) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(self.stop_fd.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(ud(KIND_STOP, 0, 0));
        self.push(e)?;
        self.stop_armed = true;
        Ok(())
    }

    fn arm_accept(&mut self, i: usize) -> io::Result<()> {
        let l = &mut self.listeners[i];
        let e = opcode::Accept::new(
            types::Fd(l.fd.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ud(KIND_ACCEPT, 0, i));
        l.armed = true;
        self.push(e)
    }

    fn handle_cqe(&mut self, user_data: u64, res: i32) -> io::Result<()> {
        if user_data & BACKEND_KEY_BIT != 0 {
            let mut ctx = IoCtx::new(&mut self.ring, &mut self.done);
            self.backend
                .complete(&mut ctx, user_data & !BACKEND_KEY_BIT, res);
            return Ok(());
        }
        let (kind, generation, idx) = ud_parts(user_data);
        match kind {
            KIND_ACCEPT => self.on_accept(idx, res),
            KIND_RECV => {
                self.on_recv(idx, generation, res);
                Ok(())
            }
            KIND_SEND => {
                self.on_send(idx, generation, res);
                Ok(())
            }
            KIND_STOP => {
                self.stop_armed = false;
                self.begin_stop();
                Ok(())
            }
            KIND_CANCEL => Ok(()),
            KIND_ACCEPT_RETRY => {
                if let Some(l) = self.listeners.get_mut(idx) {
                    l.retry_armed = false;
                    if !self.stopping {
                        self.arm_accept(idx)?;
                    }
                }
                Ok(())
            }
            _ => {
                tracing::warn!(user_data, "unexpected completion");
                Ok(())
            }
        }
    }

    fn on_accept(&mut self, li: usize, res: i32) -> io::Result<()> {
        let Some(l) = self.listeners.get_mut(li) else {
            return Ok(());
        };
        l.armed = false;
        if res >= 0 {
            // SAFETY: accept returned a new fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            let tcp = l.tcp;
            let tls = l.tls.clone();
            self.new_conn(fd, tcp, tls);
        } else if res != -libc::ECANCELED {
            tracing::warn!("accept failed: {}", io::Error::from_raw_os_error(-res));
        }
        if self.stopping || res == -libc::ECANCELED {
            return Ok(());
        }
        let exhausted = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM]
            .iter()
            .any(|&e| res == -e);
        if exhausted {
            let l = &mut self.listeners[li];
            let ts: *const types::Timespec = &*l.backoff;
            l.retry_armed = true;
            let e = opcode::Timeout::new(ts)
                .build()
                .user_data(ud(KIND_ACCEPT_RETRY, 0, li));
            self.push(e)?;
        } else {
            self.arm_accept(li)?;
        }
        Ok(())
    }

    fn new_conn(&mut self, fd: OwnedFd, tcp: bool, tls: Option<super::ExportTls>) {
        if self.stopping {
            return;
        }
        let live = self.conns.iter().filter(|c| c.is_some()).count();
        if live >= MAX_CONNECTIONS {
            tracing::warn!("too many connections ({live}); closing a new one");
            return;
        }
        if tcp {
            let one: libc::c_int = 1;
            // SAFETY: plain setsockopt with an int option on a socket we own.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        self.next_gen = self.next_gen.wrapping_add(1) & 0xFF_FFFF;
        let peer = if tcp { "tcp" } else { "unix" };
        let mut hs = Handshake::new(self.desc.clone());
        if let Some(t) = &tls {
            hs.set_tls(t.mode);
        }
        let greeting = hs.take_output();
        let mut conn = Conn::new(fd, self.next_gen, format!("{peer}#{}", self.next_gen), hs);
        conn.tls_config = tls.map(|t| t.config);
        conn.queue(greeting, None);
        tracing::debug!(peer = %conn.peer, "client connected");
        let idx = match self.free_conns.pop() {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.arm_conn(idx);
    }

    fn conn(&mut self, idx: usize, generation: u32) -> Option<&mut Conn> {
        self.conns
            .get_mut(idx)
            .and_then(Option::as_mut)
            .filter(|c| c.generation == generation)
    }

    fn on_recv(&mut self, idx: usize, generation: u32, res: i32) {
        let Some(c) = self.conn(idx, generation) else {
            return;
        };
        c.recv_armed = false;
        if res > 0 {
            c.received(res as usize);
            if !c.read_closed {
                self.process_input(idx);
            }
        } else if !c.read_closed {
            let mid = c.payload.is_some() || c.rx_end > c.rx_start || c.discard > 0;
            if res == 0 {
                if mid {
                    tracing::info!(peer = %c.peer, "client vanished mid-request; its partial request is dropped");
                } else {
                    tracing::debug!(peer = %c.peer, "client closed the connection");
                }
            } else {
                tracing::info!(peer = %c.peer, "receive failed: {}", io::Error::from_raw_os_error(-res));
            }
            // Nobody is left to read replies.
            c.read_closed = true;
            c.hard_close = true;
            c.payload = None;
            c.drop_output();
            if c.send_armed {
                shutdown(c.raw_fd(), libc::SHUT_RDWR);
            }
        }
        self.maybe_free(idx);
    }

    fn on_send(&mut self, idx: usize, generation: u32, res: i32) {
        let pool = &mut self.pool;
        let Some(c) = self
            .conns
            .get_mut(idx)
            .and_then(Option::as_mut)
            .filter(|c| c.generation == generation)
        else {
            return;
        };
        c.send_armed = false;
        if res >= 0 {
            c.sent(res as usize, &mut |b| pool.put(b));
        } else {
            tracing::debug!(peer = %c.peer, "send failed: {}", io::Error::from_raw_os_error(-res));
            c.hard_close = true;
            c.read_closed = true;
            c.drop_output();
            if c.recv_armed {
                shutdown(c.raw_fd(), libc::SHUT_RDWR);
            }
        }
        self.maybe_free(idx);
    }

    /// Ends the connection's input (graceful: queued replies still go out).
    fn close_read(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) {
            c.read_closed = true;
            c.payload = None;
            if c.recv_armed {
                shutdown(c.raw_fd(), libc::SHUT_RD);
            }
        }
    }

    fn hard_close(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) {
            c.read_closed = true;
            c.hard_close = true;
            c.payload = None;
            c.drop_output();
            shutdown(c.raw_fd(), libc::SHUT_RDWR);
        }
    }

    fn maybe_free(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut)
            && c.wants_close_tls()
            && c.close_tls()
        {
            self.arm_conn(idx);
        }
        let finished = self
            .conns
            .get(idx)
            .and_then(Option::as_ref)
            .is_some_and(Conn::finished);
        if finished && let Some(c) = self.conns[idx].take() {
            if c.counted {
                self.gate.client_closed();
            }
            tracing::debug!(peer = %c.peer, "connection closed");
            self.free_conns.push(idx);
            // Dropping `c` closes the socket.
        }
    }

    /// Parses what has been received: negotiation, then requests. Inside TLS, decrypts
    /// into the receive buffer as far as it has room, parses, and goes on while either
    /// step makes progress (parsing frees room for the rest of what was decrypted).
    fn process_input(&mut self, idx: usize) {
        if !self.pump_tls(idx) {
            return;
        }
        loop {
            let started = self.parse_input(idx);
            match self.pump_tls_delivered(idx) {
                Some(true) => continue,
                Some(false) if started => continue,
                _ => break,
            }
        }
        // A close_notify ends the client's input once everything before it is parsed.
        if let Some(c) = self.conns.get(idx).and_then(Option::as_ref)
            && !c.read_closed
            && c.tls.as_ref().is_some_and(|t| t.closed_by_peer())
        {
            tracing::debug!(peer = %c.peer, "client closed the TLS session");
            self.close_read(idx);
        }
    }

    /// Decrypts what it can; false when TLS failed (the connection's input is then closed).
    fn pump_tls(&mut self, idx: usize) -> bool {
        self.pump_tls_delivered(idx).is_some()
    }

    /// `Some(delivered plaintext)`, or `None` when TLS failed or the connection is gone or
    /// closed for input.
    fn pump_tls_delivered(&mut self, idx: usize) -> Option<bool> {
        let c = self.conns.get_mut(idx).and_then(Option::as_mut)?;
        if c.read_closed {
            return None;
        }
        let was_handshaking = c.tls.as_ref().is_some_and(|t| t.is_handshaking());
        match c.pump_tls() {
            Ok(delivered) => {
                if was_handshaking && c.tls.as_ref().is_some_and(|t| !t.is_handshaking()) {
                    tracing::info!(peer = %c.peer, "TLS established");
                }
                Some(delivered)
            }
            Err(e) => {
                tracing::info!(peer = %c.peer, "TLS failed: {}; closing the connection", e.0);
                self.close_read(idx);
                None
            }
        }
    }

    /// Parses the receive buffer: negotiation, then requests. Returns true when it just
    /// started TLS (bytes already received may be the client's first TLS bytes).
    fn parse_input(&mut self, idx: usize) -> bool {
        loop {
            let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return false;
            };
            if c.read_closed {
                return false;
            }
            if let Phase::Handshake(hs) = &mut c.phase {
                hs.set_refusal(self.gate.refusal());
                let n = hs.handle_input(&c.rx[c.rx_start..c.rx_end]);
                let out = hs.take_output();
                let outcome = hs.outcome().clone();
                if outcome == Outcome::StartTls && c.tls_config.is_some() {
                    // The ACK (in `out`) goes first, in clear; then the TLS handshake.
                    hs.tls_started();
                }
                c.consume(n);
                if !out.is_empty() {
                    c.queue(out, None);
                }
                match outcome {
                    Outcome::Negotiating => return false,
                    Outcome::StartTls => {
                        let Some(cfg) = c.tls_config.clone() else {
                            // The handshake offers STARTTLS only when a configuration exists.
                            tracing::error!(peer = %c.peer, "STARTTLS without a TLS configuration");
                            self.hard_close(idx);
                            return false;
                        };
                        if let Err(e) = c.start_tls(cfg) {
                            tracing::info!(peer = %c.peer, "{}; closing the connection", e.0);
                            self.close_read(idx);
                            return false;
                        }
                        tracing::debug!(peer = %c.peer, "STARTTLS: TLS handshake");
                        return true;
                    }
                    Outcome::Close(reason) => {
                        tracing::info!(peer = %c.peer, ?reason, "negotiation ended");
                        self.close_read(idx);
                        return false;
                    }
                    Outcome::Transmission(neg) => {
                        c.phase = Phase::Transmission {
                            lim: Limits {
                                size: self.desc.size,
                                flags: neg.flags,
                                structured: neg.structured_replies,
                                max_payload: self.desc.max_payload,
                            },
                        };
                        c.counted = true;
                        self.gate.client_opened();
                        tracing::info!(peer = %c.peer, structured = neg.structured_replies, tls = c.tls.is_some(), "client in transmission");
                        continue;
                    }
                }
            }
            if !self.step_transmission(idx) {
                return false;
            }
        }
    }

    /// Handles at most one request; false when more input is needed (or the connection
    /// paused or closed).
    fn step_transmission(&mut self, idx: usize) -> bool {
        let room = self.backend.has_room() && self.inflight_bytes < MAX_INFLIGHT_BYTES;
        let stopping = self.stopping;
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return false;
        };
        let Phase::Transmission { lim } = c.phase else {
            return false;
        };
        if c.discard > 0 {
            let n = (c.avail().len() as u64).min(c.discard);
            c.consume(n as usize);
            c.discard -= n;
            return c.discard == 0;
        }
        if let Some(p) = &c.payload {
            if p.got < p.buf.len() {
                return false;
            }
            let Some(p) = c.payload.take() else {
                return false;
            };
            self.execute(idx, p.req, Some(p.buf));
            return true;
        }
        let Some(h) = c.avail().first_chunk::<REQUEST_HEADER_LEN>().copied() else {
            return false;
        };
        if (!room || c.tx_bytes > MAX_QUEUED_REPLY_BYTES) && !stopping {
            c.paused = true;
            return false;
        }
        let req = match Request::decode(&h) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer = %c.peer, "{e}; closing the connection");
                self.hard_close(idx);
                return false;
            }
        };
        c.consume(REQUEST_HEADER_LEN);
        tracing::trace!(peer = %c.peer, ?req, "request");
        let mut verdict = req.check(&lim);
        if stopping && req.cmd != Command::DISC {
            verdict = Err(ErrorCode::ESHUTDOWN);
        }
        let plen = req.payload_len() as usize;
        if let Err(code) = verdict {
            c.discard = plen as u64;
            let head = error_reply(lim.structured, req.cookie, code, refusal_text(code));
            c.queue(head, None);
            return true;
        }
        match req.cmd {
            Command::DISC => {
                tracing::debug!(peer = %c.peer, "soft disconnect");
                self.close_read(idx);
                false
            }
            Command::WRITE => {
                let avail = c.avail().len();
                if avail >= plen {
                    let mut buf = self.pool.get(plen);
                    buf.as_mut_slice().copy_from_slice(&c.avail()[..plen]);
                    c.consume(plen);
                    self.execute(idx, req, Some(buf));
                    true
                } else {
                    let mut buf = self.pool.get(plen);
                    buf.as_mut_slice()[..avail].copy_from_slice(c.avail());
                    c.consume(avail);
                    c.payload = Some(PayloadRecv {
                        req,
                        buf,
                        got: avail,
                    });
                    false
                }
            }
            _ => {
                self.execute(idx, req, None);
                true
            }
        }
    }

    fn alloc_req(&mut self, r: Req) -> usize {
        self.live_reqs += 1;
        self.inflight_bytes += r.bytes;
        match self.free_reqs.pop() {
            Some(i) => {
                self.reqs[i] = Some(r);
                i
            }
            None => {
                self.reqs.push(Some(r));
                self.reqs.len() - 1
            }
        }
    }

    fn submit(&mut self, tag: u64, op: Op) {
        let mut ctx = IoCtx::new(&mut self.ring, &mut self.done);
        self.backend.submit(&mut ctx, tag, op);
    }

    /// Starts a checked request on the backend.
    fn execute(&mut self, idx: usize, req: Request, payload: Option<AlignedBuf>) {
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        c.outstanding += 1;
        let generation = c.generation;
        let fua = req.flags & cmd_flags::FUA != 0;
        let is_write = matches!(
            req.cmd,
            Command::WRITE | Command::TRIM | Command::WRITE_ZEROES
        );
        let seq = is_write.then(|| {
            self.write_seq += 1;
            self.inflight_writes.insert(self.write_seq);
            self.write_seq
        });
        let len = req.len as usize;
        let (op, flush_after) = match req.cmd {
            Command::READ => (
                Op::Read {
                    offset: req.offset,
                    buf: self.pool.get(len),
                },
                false,
            ),
            Command::WRITE => (
                Op::Write {
                    offset: req.offset,
                    buf: payload.unwrap_or_else(|| AlignedBuf::zeroed(len)),
                    fua: fua && self.can_fua,
                },
                fua && !self.can_fua,
            ),
            Command::TRIM => (
                Op::Trim {
                    offset: req.offset,
                    len: u64::from(req.len),
                },
                fua,
            ),
            Command::WRITE_ZEROES => (
                Op::Zero {
                    offset: req.offset,
                    len: u64::from(req.len),
                    may_trim: req.flags & cmd_flags::NO_HOLE == 0,
                },
                fua,
            ),
            _ => (Op::Flush, false),
        };
        let bytes = if matches!(req.cmd, Command::READ | Command::WRITE) {
            len
        } else {
            0
        };
        let r = Req {
            conn: idx,
            generation,
            cookie: req.cookie,
            cmd: req.cmd,
            offset: req.offset,
            len: req.len,
            seq,
            flush_after,
            flushing: false,
            bytes,
        };
        let ri = self.alloc_req(r);
        if req.cmd == Command::FLUSH {
            // Covers every write received before it, on every connection.
            let barrier = self.write_seq;
            if self
                .inflight_writes
                .first()
                .is_none_or(|&oldest| oldest > barrier)
            {
                self.submit(ri as u64, Op::Flush);
            } else {
                self.waiting_flushes.push_back((ri, barrier));
            }
            return;
        }
        self.submit(ri as u64, op);
    }

    fn handle_backend_done(&mut self) {
        while let Some(d) = self.done.pop() {
            self.on_done(d);
        }
    }

    fn on_done(&mut self, d: Done) {
        if d.tag == FINAL_FLUSH_TAG {
            if let Err(e) = d.res {
                tracing::error!("final flush failed: {e}");
            }
            self.final_flush = FinalFlush::Done;
            return;
        }
        let ri = d.tag as usize;
        let Some(r) = self.reqs.get_mut(ri).and_then(Option::as_mut) else {
            tracing::warn!(tag = d.tag, "completion for an unknown request");
            return;
        };
        if !r.flushing {
            if d.res.is_ok() {
                match r.cmd {
                    Command::WRITE => self.gate.add_written(u64::from(r.len)),
                    Command::READ => self.gate.add_read(u64::from(r.len)),
                    _ => {}
                }
            }
            if let Some(seq) = r.seq.take() {
                self.inflight_writes.remove(&seq);
                self.release_flushes();
            }
            let Some(r) = self.reqs.get_mut(ri).and_then(Option::as_mut) else {
                return;
            };
            if d.res.is_ok() && r.flush_after {
                r.flushing = true;
                self.submit(ri as u64, Op::Flush);
                return;
            }
        }
        let Some(r) = self.reqs.get_mut(ri).and_then(Option::take) else {
            return;
        };
        self.free_reqs.push(ri);
        self.live_reqs -= 1;
        self.inflight_bytes -= r.bytes;
        let buf = match (r.cmd, d.buf) {
            (Command::READ, buf) => buf,
            (_, Some(b)) => {
                self.pool.put(b);
                None
            }
            (_, None) => None,
        };
        self.reply(r, d.res, buf);
    }

    /// Starts every waiting flush whose earlier writes have all completed.
    fn release_flushes(&mut self) {
        let oldest = self.inflight_writes.first().copied();
        while let Some(&(ri, barrier)) = self.waiting_flushes.front() {
            if oldest.is_some_and(|o| o <= barrier) {
                break;
            }
            self.waiting_flushes.pop_front();
            self.submit(ri as u64, Op::Flush);
        }
    }

    fn reply(&mut self, r: Req, res: Result<(), Errno>, buf: Option<AlignedBuf>) {
        let Some(c) = self
            .conns
            .get_mut(r.conn)
            .and_then(Option::as_mut)
            .filter(|c| c.generation == r.generation)
        else {
            return; // the client is gone
        };
        c.outstanding = c.outstanding.saturating_sub(1);
        let structured = match c.phase {
            Phase::Transmission { lim } => lim.structured,
            Phase::Handshake(_) => false,
        };
        match res {
            Ok(()) if r.cmd == Command::READ => {
                let head = if structured {
                    reply::read_data_header(r.cookie, r.offset, r.len)
                } else {
                    reply::simple(r.cookie, None).to_vec()
                };
                c.queue(head, buf);
            }
            Ok(()) => c.queue(reply::simple(r.cookie, None).to_vec(), None),
            Err(e) => {
                tracing::debug!(peer = %c.peer, cmd = %r.cmd, offset = r.offset, len = r.len, "request failed: {e}");
                let code = ErrorCode::from_errno(e.0);
                let head = error_reply(structured, r.cookie, code, &format!("{e}"));
                c.queue(head, None);
            }
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        tracing::info!("data path stopping");
        self.stopping = true;
        for i in 0..self.listeners.len() {
            if self.listeners[i].armed {
                let e = opcode::AsyncCancel::new(ud(KIND_ACCEPT, 0, i))
                    .build()
                    .user_data(ud(KIND_CANCEL, 0, i));
                if let Err(err) = self.push(e) {
                    tracing::warn!("cannot cancel accept: {err}");
                }
            }
        }
        for idx in 0..self.conns.len() {
            let Some(c) = self.conns[idx].as_mut() else {
                continue;
            };
            match c.phase {
                Phase::Handshake(_) => self.hard_close(idx),
                Phase::Transmission { .. } => {
                    // Answer what is already buffered with ESHUTDOWN, then stop reading.
                    self.process_input(idx);
                    self.close_read(idx);
                }
            }
        }
    }

    /// End of a turn: resume paused connections, arm receives and sends, update counters,
    /// run the final flush when stopping.
    fn after_turn(&mut self) -> io::Result<()> {
        for idx in 0..self.conns.len() {
            let resume = self.conns[idx]
                .as_ref()
                .is_some_and(|c| c.paused && c.tx_bytes <= MAX_QUEUED_REPLY_BYTES)
                && self.backend.has_room()
                && self.inflight_bytes < MAX_INFLIGHT_BYTES;
            if resume {
                if let Some(c) = self.conns[idx].as_mut() {
                    c.paused = false;
                }
                self.process_input(idx);
                self.handle_backend_done();
            }
        }
        for idx in 0..self.conns.len() {
            self.arm_conn(idx);
            self.maybe_free(idx);
        }
        if self.stopping && self.live_reqs == 0 && self.final_flush == FinalFlush::NotYet {
            self.final_flush = FinalFlush::InFlight;
            self.submit(FINAL_FLUSH_TAG, Op::Flush);
            self.handle_backend_done();
        }
        self.gate
            .set_levels(self.backend.in_flight(), self.live_reqs);
        Ok(())
    }

    fn arm_conn(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let mut entries = Vec::with_capacity(2);
        if !c.send_armed
            && !c.hard_close
            && let Some(msg) = c.prepare_send()
        {
            entries.push(
                opcode::SendMsg::new(types::Fd(c.raw_fd()), msg)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
                    .user_data(ud(KIND_SEND, c.generation, idx)),
            );
            c.send_armed = true;
        }
        if !c.recv_armed && !c.read_closed && !c.paused {
            let (ptr, len) = c.recv_target();
            if len > 0 {
                entries.push(
                    opcode::Recv::new(
                        types::Fd(c.raw_fd()),
                        ptr,
                        len.min(u32::MAX as usize) as u32,
                    )
                    .build()
                    .user_data(ud(KIND_RECV, c.generation, idx)),
                );
                c.recv_armed = true;
            }
        }
        for e in entries {
            if let Err(err) = self.push(e) {
                tracing::error!("cannot queue a socket op: {err}");
            }
        }
    }
}

/// An error reply: a structured error chunk (with a message) when negotiated, else simple.
fn error_reply(structured: bool, cookie: u64, code: ErrorCode, msg: &str) -> Vec<u8> {
    if structured {
        reply::error_chunk(cookie, code, msg)
    } else {
        reply::simple(cookie, Some(code)).to_vec()
    }
}

/// The message of a structured error chunk for a request refused before execution.
fn refusal_text(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::EPERM => "the export is read-only",
        ErrorCode::ENOSPC => "write beyond the end of the export",
        ErrorCode::ESHUTDOWN => "the server is shutting down",
        _ => "invalid request (command, flags, range or length)",
    }
}

fn shutdown(fd: RawFd, how: libc::c_int) {
    // SAFETY: shutdown on a socket fd we own; failure (already closed) is harmless.
    unsafe {
        libc::shutdown(fd, how);
    }
}
