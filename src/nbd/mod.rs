//! The NBD server (and a small blocking client).
//!
//! The daemon starts a [`DataPath`] with an [`ExportConfig`], a backend from
//! [`crate::io`], and a shared [`Gate`]; the data path then serves the export named like
//! the resource on a unix socket (mode 0600) and optionally on TCP, until
//! [`DataPath::stop`]. The gate decides whether new clients are admitted (with the refusal
//! text sent to those that are not) and carries the counters /proc/drbd shows.
//!
//! Files: `proto` (wire constants), `handshake` (sans-IO option negotiation), `request`
//! (request header and its checks), `reply` (simple and structured replies), `conn`
//! (per-connection buffers and, after STARTTLS, the connection's TLS layer), `server` (the io_uring loop), `gate`, `client`, `kernel` (the
//! kernel's NBD client attached to an export: /dev/nbdN, over generic netlink). What is
//! advertised, the caps and the errors are listed in `docs/NBD.md`.

pub mod client;
mod conn;
pub mod fuzz;
pub mod gate;
pub mod handshake;
pub mod kernel;
mod pool;
pub mod proto;
pub mod reply;
pub mod request;
mod server;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use thiserror::Error;

use crate::io::Backend;

pub use client::{Client, ClientError, ExportInfo};
pub use gate::{Counters, Gate};
pub use handshake::{ExportDesc, MAX_OPTION_LEN, MAX_OPTIONS, TlsMode};
pub use request::MAX_PAYLOAD;
pub use server::{MAX_CONNECTIONS, MAX_INFLIGHT_BYTES, MAX_QUEUED_REPLY_BYTES};

/// What to export and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Export name (the resource name); the empty name also selects it.
    pub name: String,
    /// Unix socket path (created with mode 0600; a stale socket there is replaced).
    pub unix_socket: Option<PathBuf>,
    /// TCP address (port 0 picks one; see [`DataPath::tcp_addr`]).
    pub tcp: Option<SocketAddr>,
    /// Refuse writes (EPERM) and advertise READ_ONLY.
    pub read_only: bool,
    /// TLS on the TCP listener (`NBD_OPT_STARTTLS`); the unix socket never offers it.
    pub tls: Option<ExportTls>,
}

/// TLS of an export's TCP listener: whether clients may or must upgrade, and the rustls
/// server configuration (certificate, key, optional client verification) they get.
#[derive(Debug, Clone)]
pub struct ExportTls {
    /// [`TlsMode::On`] or [`TlsMode::Require`] ([`TlsMode::Off`] is the same as `None`).
    pub mode: TlsMode,
    /// The server side of every TLS session.
    pub config: Arc<rustls::ServerConfig>,
}

impl PartialEq for ExportTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for ExportTls {}

/// Why the data path could not start or stopped badly.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NbdError {
    /// Neither a unix socket nor a TCP address was configured.
    #[error("no listener configured (need a unix socket or a TCP address)")]
    NoListener,
    /// Binding a listener failed.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// The socket.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// Setting up the ring or the stop signal failed.
    #[error("cannot start the data path: {0}")]
    Setup(io::Error),
    /// The loop failed.
    #[error("data path I/O failure: {0}")]
    Io(io::Error),
    /// The data path thread panicked (a bug).
    #[error("the data path thread panicked")]
    Panicked,
}

/// The running data path: one I/O thread serving the export.
pub struct DataPath {
    thread: Option<JoinHandle<Result<(), NbdError>>>,
    stop_fd: Arc<OwnedFd>,
    unix_socket: Option<PathBuf>,
    tcp_addr: Option<SocketAddr>,
}

impl DataPath {
    /// Binds the listeners and starts serving `backend` as `cfg.name`.
    pub fn start(
        cfg: ExportConfig,
        backend: Box<dyn Backend>,
        gate: Arc<Gate>,
    ) -> Result<DataPath, NbdError> {
        let mut listeners = Vec::new();
        if let Some(path) = &cfg.unix_socket {
            listeners.push(server::Listener::new(bind_unix(path)?, false));
        }
        let mut tcp_addr = None;
        if let Some(addr) = cfg.tcp {
            let l = TcpListener::bind(addr).map_err(|source| NbdError::Listen {
                what: addr.to_string(),
                source,
            })?;
            tcp_addr = l.local_addr().ok();
            let mut l = server::Listener::new(OwnedFd::from(l), true);
            l.tls = cfg.tls.clone().filter(|t| t.mode != TlsMode::Off);
            listeners.push(l);
        }
        if listeners.is_empty() {
            return Err(NbdError::NoListener);
        }
        // SAFETY: eventfd returns a new fd or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(NbdError::Setup(io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh fd we own.
        let stop_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let desc = export_desc(&cfg, backend.as_ref());
        tracing::info!(export = %desc.name, size = desc.size, flags = desc.flags, "NBD export");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = stop_fd.clone();
        let thread = std::thread::Builder::new()
            .name(format!("urbd-io-{}", cfg.name))
            .spawn(move || {
                // The ring is created on this thread: it is SINGLE_ISSUER.
                let srv = match server::Server::new(backend, desc, gate, listeners, stop) {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                srv.run().map_err(NbdError::Io)
            })
            .map_err(NbdError::Setup)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(NbdError::Setup(e));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(NbdError::Panicked);
            }
        }
        Ok(DataPath {
            thread: Some(thread),
            stop_fd,
            unix_socket: cfg.unix_socket.clone(),
            tcp_addr,
        })
    }

    /// The bound TCP address, if any (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The unix socket path, if any.
    pub fn unix_socket(&self) -> Option<&Path> {
        self.unix_socket.as_deref()
    }

    fn signal_stop(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes to our eventfd.
        unsafe {
            libc::write(
                self.stop_fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
    }

    /// Stops accepting, answers or finishes what is in flight, flushes the backend, closes
    /// every client and joins the thread. The unix socket file is removed.
    pub fn stop(mut self) -> Result<(), NbdError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), NbdError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.signal_stop();
        let res = thread.join().map_err(|_| NbdError::Panicked)?;
        if let Some(p) = &self.unix_socket {
            let _ = std::fs::remove_file(p);
        }
        res
    }
}

impl Drop for DataPath {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("data path stopped with an error: {e}");
        }
    }
}

fn bind_unix(path: &Path) -> Result<OwnedFd, NbdError> {
    let err = |source| NbdError::Listen {
        what: path.display().to_string(),
        source,
    };
    // Replace a stale socket (never any other kind of file).
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(OwnedFd::from(l))
}

/// What negotiation advertises for this export and backend (see docs/NBD.md).
pub fn export_desc(cfg: &ExportConfig, backend: &dyn Backend) -> ExportDesc {
    use proto::tx_flags as f;
    let info = backend.info();
    let read_only = cfg.read_only || info.read_only;
    let mut flags = f::HAS_FLAGS | f::SEND_FLUSH | f::SEND_FUA | f::CAN_MULTI_CONN;
    if read_only {
        flags |= f::READ_ONLY;
    } else {
        flags |= f::SEND_WRITE_ZEROES;
        if info.can_trim {
            flags |= f::SEND_TRIM;
        }
    }
    if info.is_rotational {
        flags |= f::ROTATIONAL;
    }
    ExportDesc {
        name: cfg.name.clone(),
        description: format!("urbd export {}", cfg.name),
        size: info.size,
        flags,
        // Any byte range works (the Aligned wrapper does read-modify-write).
        min_block: info.block_size.max(1),
        preferred_block: info.preferred_block.max(512),
        max_payload: MAX_PAYLOAD,
    }
}
