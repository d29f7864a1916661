//! The network between the two nodes, with TCP's guarantees and nothing more: one transport
//! at a time (a generation number), two sockets per direction (data and meta), each in
//! order and lossless while the transport lives; the sockets' delays vary independently, so
//! data and meta packets interleave arbitrarily. A break loses everything in flight; an
//! orderly close by one side still delivers what it sent before (then the peer sees the
//! end of the stream). Packets of an old transport never reach a new one: queues belong
//! to a transport and go with it.

use std::collections::VecDeque;
use std::time::Instant;

use urbd::wire::Socket;

/// One socket in one direction.
#[derive(Debug, Default)]
struct Pipe {
    q: VecDeque<(Instant, Vec<u8>)>,
}

/// A live transport.
#[derive(Debug)]
pub struct Transport {
    /// Its generation (never reused).
    pub generation: u64,
    /// `[from][0 data, 1 meta]`.
    pipes: [[Pipe; 2]; 2],
    /// A side that closed: it sends nothing more and reads nothing more.
    closed: [bool; 2],
}

/// What a delivery step yields.
#[derive(Debug)]
pub enum Delivery {
    /// A frame for node `to`.
    Frame {
        /// Receiver.
        to: usize,
        /// The encoded frame.
        bytes: Vec<u8>,
    },
    /// Node `to` sees the end of the transport (the peer closed and everything it sent
    /// before has arrived).
    End {
        /// Receiver.
        to: usize,
    },
}

fn idx(s: Socket) -> usize {
    match s {
        Socket::Data => 0,
        _ => 1,
    }
}

/// The network.
#[derive(Debug, Default)]
pub struct Net {
    transport: Option<Transport>,
    next_generation: u64,
    /// Frames sent so far (for statistics).
    pub sent: u64,
}

impl Net {
    /// The live transport's generation.
    pub fn generation(&self) -> Option<u64> {
        self.transport.as_ref().map(|t| t.generation)
    }

    /// Opens a new transport; returns its generation.
    pub fn open(&mut self) -> u64 {
        self.next_generation += 1;
        self.transport = Some(Transport {
            generation: self.next_generation,
            pipes: Default::default(),
            closed: [false; 2],
        });
        self.next_generation
    }

    /// Sends `bytes` from `from` on `socket`, arriving at `at` at the earliest (never
    /// before what the socket carries already). Dropped without a transport or after the
    /// sender closed.
    pub fn send(&mut self, from: usize, socket: Socket, bytes: Vec<u8>, at: Instant) {
        let Some(t) = self.transport.as_mut() else {
            return;
        };
        if t.closed[from] || t.closed[1 - from] {
            // The peer has closed: what we send is refused (an RST at the peer).
            return;
        }
        let pipe = &mut t.pipes[from][idx(socket)];
        let at = pipe.q.back().map_or(at, |(last, _)| at.max(*last));
        pipe.q.push_back((at, bytes));
        self.sent += 1;
    }

    /// Node `from` closes its end: it reads nothing more (frames towards it are lost);
    /// what it sent still arrives, then the peer sees the end.
    pub fn close(&mut self, from: usize) {
        let Some(t) = self.transport.as_mut() else {
            return;
        };
        t.closed[from] = true;
        for p in &mut t.pipes[1 - from] {
            p.q.clear();
        }
        if t.closed[1 - from] {
            self.transport = None;
        }
    }

    /// The transport breaks: everything in flight is lost. Returns whether there was one.
    pub fn cut(&mut self) -> bool {
        self.transport.take().is_some()
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.transport.as_ref().map_or(0, |t| {
            t.pipes
                .iter()
                .flat_map(|d| d.iter())
                .map(|p| p.q.len())
                .sum()
        })
    }

    /// When the next frame arrives (an end is due at `now`), if at all.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        let t = self.transport.as_ref()?;
        let mut due = t
            .pipes
            .iter()
            .flat_map(|d| d.iter())
            .filter_map(|p| p.q.front().map(|(at, _)| *at))
            .min();
        for from in 0..2 {
            if t.closed[from] && t.pipes[from][0].q.is_empty() && !t.closed[1 - from] {
                // The end is due as soon as the data socket drained.
                due = Some(now);
            }
        }
        due
    }

    /// The sockets with a frame due at `now`, plus pending ends, as (from, socket index).
    pub fn due(&self, now: Instant) -> Vec<(usize, usize)> {
        let Some(t) = self.transport.as_ref() else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for from in 0..2 {
            for s in 0..2 {
                if t.pipes[from][s].q.front().is_some_and(|(at, _)| *at <= now) {
                    v.push((from, s));
                }
            }
            if t.closed[from] && t.pipes[from][0].q.is_empty() && !t.closed[1 - from] {
                v.push((from, 2));
            }
        }
        v
    }

    /// Takes what `due` listed as `(from, socket)`.
    pub fn take(&mut self, from: usize, socket: usize) -> Option<Delivery> {
        let t = self.transport.as_mut()?;
        if socket == 2 {
            // The data socket's end: the receiver stops; the meta socket's rest is lost.
            self.transport = None;
            return Some(Delivery::End { to: 1 - from });
        }
        let (_, bytes) = t.pipes[from][socket].q.pop_front()?;
        Some(Delivery::Frame {
            to: 1 - from,
            bytes,
        })
    }
}
