//! One socket of a peer link, in clear or inside TLS, with the calls the session makes on
//! a `TcpStream`: blocking `Read` and `Write` (also through `&PeerStream`), `try_clone` for
//! a receiver thread, `shutdown`, a write timeout, and "is it still open".
//!
//! Inside TLS, the session reads each socket on its own receiver thread while it writes from its
//! loop, so the two directions of one socket run at once. A rustls connection is one
//! state machine for both directions: here it sits behind a mutex, the socket is
//! non-blocking, and neither side holds the lock while it waits in poll(2). A writer that
//! waited for socket space holding the lock would keep the reader from draining records,
//! and two peers whose send buffers are full would wait on each other for ever.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::sock;

/// The longest one poll(2) waits before the loop looks again (every wait is bounded).
const POLL_SLICE: Duration = Duration::from_secs(1);

/// Plaintext the TLS connection buffers at most for sending before a writer must wait
/// for the socket (rustls's default of 64 KiB would cut every 1 MiB frame into 16 turns).
const TLS_SEND_BUFFER: usize = 4 << 20;

/// A socket of the link.
#[derive(Debug)]
pub enum PeerStream {
    /// No TLS configured.
    Plain(TcpStream),
    /// TLS (`tls-cert`, `tls-key`, `tls-ca`).
    Tls(TlsStream),
}

/// A TLS connection over a non-blocking socket, shared by the clones of one stream.
#[derive(Debug)]
pub struct TlsStream {
    sock: TcpStream,
    conn: Arc<Mutex<rustls::Connection>>,
    write_timeout: Option<Duration>,
}

impl TlsStream {
    /// Wraps a socket whose handshake is complete.
    pub(super) fn new(sock: TcpStream, mut conn: rustls::Connection) -> io::Result<TlsStream> {
        sock.set_nonblocking(true)?;
        conn.set_buffer_limit(Some(TLS_SEND_BUFFER));
        Ok(TlsStream {
            sock,
            conn: Arc::new(Mutex::new(conn)),
            write_timeout: None,
        })
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, rustls::Connection>> {
        self.conn
            .lock()
            .map_err(|_| io::Error::other("TLS state poisoned by a panicked thread"))
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut c = self.lock()?;
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                match c.read_tls(&mut &self.sock) {
                    Ok(0) => {
                        // End of file: what rustls makes of it (clean close_notify or a
                        // truncation) comes out of the next plaintext read.
                        c.process_new_packets().map_err(tls_error)?;
                        return match c.reader().read(buf) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the peer closed the connection inside TLS",
                            )),
                            other => other,
                        };
                    }
                    Ok(_) => {
                        let processed = c.process_new_packets();
                        // Whatever rustls answers (an alert, a key update) goes out now.
                        flush_nonblocking(&mut c, &self.sock)?;
                        processed.map_err(tls_error)?;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            sock::wait(&[self.sock.as_fd()], libc::POLLIN, POLL_SLICE)?;
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        self.drain(deadline)?;
        let n = self.lock()?.writer().write(buf)?;
        self.drain(deadline)?;
        Ok(n)
    }

    /// Writes every TLS record rustls holds, waiting for socket space without the lock.
    fn drain(&self, deadline: Option<Instant>) -> io::Result<()> {
        loop {
            {
                let mut c = self.lock()?;
                flush_nonblocking(&mut c, &self.sock)?;
                if !c.wants_write() {
                    return Ok(());
                }
            }
            let now = Instant::now();
            let slice = match deadline {
                Some(d) if now >= d => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer took no data within the timeout",
                    ));
                }
                Some(d) => (d - now).min(POLL_SLICE),
                None => POLL_SLICE,
            };
            sock::wait(&[self.sock.as_fd()], libc::POLLOUT, slice)?;
        }
    }
}

/// Writes TLS records until rustls has none or the socket is full.
fn flush_nonblocking(c: &mut rustls::Connection, sock: &TcpStream) -> io::Result<()> {
    while c.wants_write() {
        match c.write_tls(&mut &*sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl PeerStream {
    /// Another handle on the same socket (and the same TLS state), for a receiver thread.
    pub fn try_clone(&self) -> io::Result<PeerStream> {
        Ok(match self {
            PeerStream::Plain(s) => PeerStream::Plain(s.try_clone()?),
            PeerStream::Tls(t) => PeerStream::Tls(TlsStream {
                sock: t.sock.try_clone()?,
                conn: t.conn.clone(),
                write_timeout: t.write_timeout,
            }),
        })
    }

    /// Shuts the socket down (a blocked reader or writer of any clone returns).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp().shutdown(how)
    }

    /// A write that cannot make progress for `t` fails with `TimedOut` / `WouldBlock`.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        match self {
            PeerStream::Plain(s) => s.set_write_timeout(t),
            PeerStream::Tls(s) => {
                s.write_timeout = t;
                Ok(())
            }
        }
    }

    /// False once the peer closed or reset the connection (see `sock::is_open`).
    pub fn is_open(&self) -> bool {
        sock::is_open(self.tcp())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// The socket's descriptor if the stream is in clear (its bytes are the frames).
    pub fn plain_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            PeerStream::Plain(s) => Some(std::os::fd::AsRawFd::as_raw_fd(s)),
            PeerStream::Tls(_) => None,
        }
    }

    /// Whether the stream is inside TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, PeerStream::Tls(_))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            PeerStream::Plain(s) => s,
            PeerStream::Tls(t) => &t.sock,
        }
    }
}

impl Read for &PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            PeerStream::Plain(s) => (&*s).read(buf),
            PeerStream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for &PeerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            PeerStream::Plain(s) => (&*s).write(buf),
            PeerStream::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match *self {
            PeerStream::Plain(s) => (&*s).write_vectored(bufs),
            PeerStream::Tls(t) => match bufs.iter().find(|b| !b.is_empty()) {
                Some(b) => t.write(b),
                None => Ok(0),
            },
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match *self {
            PeerStream::Plain(_) => Ok(()),
            PeerStream::Tls(t) => t.drain(t.write_timeout.map(|d| Instant::now() + d)),
        }
    }
}

impl Read for PeerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for PeerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}
