//! A TCP proxy for link faults: it forwards every connection made to its loopback port to a
//! fixed target, and can be told to cut the link.
//!
//! - [`Proxy::cut`] shuts down every forwarded connection (both directions, both sockets:
//!   each side sees end-of-file or a reset) and from then on accepts new connections only to
//!   reset them at once (`SO_LINGER` 0), as a link that is down.
//! - [`Proxy::restore`] forwards new connections again.
//!
//! Everything is bounded: one accept thread that looks at its stop flag every 10 ms, two
//! copy threads per connection that end when either socket ends, at most [`MAX_PIPES`]
//! connections at once (more are reset), and `Drop` stops and joins all of them.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Forwarded connections at most; more are reset.
pub const MAX_PIPES: usize = 64;

/// Bytes recorded per connection and direction at most ([`Proxy::recorded`]).
pub const MAX_RECORDED: usize = 256 << 20;

/// How long dialing the target may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

struct Pipe {
    client: TcpStream,
    server: TcpStream,
    threads: Vec<JoinHandle<()>>,
}

impl Pipe {
    fn close(self) {
        for s in [&self.client, &self.server] {
            set_linger_zero(s);
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }

    fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }
}

/// The bytes one direction of one connection carried.
type Record = Arc<Mutex<Vec<u8>>>;

struct Shared {
    target: SocketAddr,
    stop: AtomicBool,
    cut: AtomicBool,
    pipes: Mutex<Vec<Pipe>>,
    forwarded: AtomicU64,
    refused: AtomicU64,
    /// Per forwarded connection, in accept order: what the client sent, what the server
    /// sent (each up to [`MAX_RECORDED`] bytes).
    recorded: Mutex<Vec<[Record; 2]>>,
}

/// A running proxy on 127.0.0.1 (a free port) to one target.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Makes the next close of `s` send a reset instead of a FIN.
fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid fd and a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Copies `from` to `to` until either ends; then ends both directions of both. Appends
/// what it copies to `record` (up to [`MAX_RECORDED`] bytes).
fn copy(mut from: TcpStream, mut to: TcpStream, record: Record) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                // A clean end: pass the FIN on, keep the other direction going.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if let Ok(mut r) = record.lock() {
                    let room = MAX_RECORDED.saturating_sub(r.len()).min(n);
                    r.extend_from_slice(&buf[..room]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Proxy {
    /// Starts forwarding 127.0.0.1:(free port) to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target,
            stop: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            pipes: Mutex::new(Vec::new()),
            forwarded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            recorded: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || accept_loop(listener, sh))
            .expect("proxy thread");
        Proxy {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// Where to connect to reach the target through the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts the link: every forwarded connection is shut down, new ones are reset.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let pipes = std::mem::take(&mut *self.shared.pipes.lock().expect("pipes"));
        for p in pipes {
            p.close();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// What each forwarded connection carried so far, in accept order: (bytes from the
    /// client, bytes from the server), each up to [`MAX_RECORDED`].
    pub fn recorded(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let rec = self.shared.recorded.lock().expect("recorded");
        rec.iter()
            .map(|[c, s]| {
                (
                    c.lock().expect("record").clone(),
                    s.lock().expect("record").clone(),
                )
            })
            .collect()
    }

    /// Connections reset because the link was cut (or too many were open).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let pipes = std::mem::take(&mut *self.shared.pipes.lock().expect("pipes"));
        for p in pipes {
            p.close();
        }
    }
}

fn reset(s: TcpStream, sh: &Shared) {
    set_linger_zero(&s);
    drop(s);
    sh.refused.fetch_add(1, Ordering::SeqCst);
}

fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let _ = client.set_nonblocking(false);
        if sh.cut.load(Ordering::SeqCst) {
            reset(client, &sh);
            continue;
        }
        {
            let mut pipes = sh.pipes.lock().expect("pipes");
            let (done, live): (Vec<Pipe>, Vec<Pipe>) = std::mem::take(&mut *pipes)
                .into_iter()
                .partition(Pipe::finished);
            *pipes = live;
            for p in done {
                p.close();
            }
            if pipes.len() >= MAX_PIPES {
                drop(pipes);
                reset(client, &sh);
                continue;
            }
        }
        let server = match TcpStream::connect_timeout(&sh.target, DIAL_TIMEOUT) {
            Ok(s) => s,
            Err(_) => {
                reset(client, &sh);
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let clones = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else {
            reset(client, &sh);
            continue;
        };
        let rec: [Record; 2] = Default::default();
        let (rc, rs) = (rec[0].clone(), rec[1].clone());
        sh.recorded.lock().expect("recorded").push(rec);
        let threads = vec![
            std::thread::spawn(move || copy(c1, s1, rc)),
            std::thread::spawn(move || copy(s2, c2, rs)),
        ];
        sh.forwarded.fetch_add(1, Ordering::SeqCst);
        let pipe = Pipe {
            client,
            server,
            threads,
        };
        let mut pipes = sh.pipes.lock().expect("pipes");
        if sh.cut.load(Ordering::SeqCst) {
            // Cut while we were dialing: this one goes down with the others.
            drop(pipes);
            pipe.close();
        } else {
            pipes.push(pipe);
        }
    }
}
