//! The seam to the data path. The daemon talks to the NBD export of each volume only
//! through [`Export`]. [`NbdExport`] serves the attached disk over NBD (io_uring data path,
//! `crate::nbd`); [`NoExport`] stands for "nothing exported" (tests of the control plane).
//!
//! [`make_export`] is the only place the daemon creates exports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{NbdTls, NbdTlsMode, NodeView, VolumeView};
use crate::control::RunDir;
use crate::io::{Aligned, Backend, BackendSpec, CacheMode, UringBackend};
use crate::nbd::{DataPath, ExportConfig, Gate};
use crate::status::Counters;

/// One volume's export (an NBD export of the replicated device).
///
/// The daemon calls, in its single control thread:
/// - [`Export::set_serving`] after every state change (attach, detach, primary,
///   secondary, down), in the order the core decided them;
/// - [`Export::open_clients`] right before a demotion or `down`, which are refused while it
///   is not zero (DRBD's "(-12) Device is held open by someone");
/// - [`Export::counters`] whenever it reports status (requests and every 2 seconds);
/// - [`Export::stop`] once, at shutdown, after the disks are detached (on SIGTERM: before,
///   so that no client holds the device open).
pub trait Export: Send {
    /// The volume's backing disk is attached: serve `size_bytes` of `disk` (O_DIRECT when
    /// `direct`). Called after the attach's state change; serving follows [`Export::set_serving`].
    ///
    /// `wrap` may put a layer around the local backend (replication).
    fn attach(
        &mut self,
        disk: &Path,
        size_bytes: u64,
        direct: bool,
        wrap: &dyn Fn(Box<dyn Backend>) -> Box<dyn Backend>,
    ) -> Result<(), String>;
    /// The backing disk is about to be closed: finish and flush what is in flight, close the
    /// clients and stop listening.
    fn detach(&mut self);
    /// Where clients connect, for status (`None` while nothing listens).
    fn endpoint(&self) -> Option<String>;
    /// `None`: serve the device (this node is Primary with UpToDate data). `Some(reason)`:
    /// refuse new clients and fail I/O with that reason.
    fn set_serving(&self, reason: Option<&str>);
    /// Clients that have the device open.
    fn open_clients(&self) -> usize;
    /// The data path's counters for /proc/drbd (`al` and `bm` included).
    fn counters(&self) -> Counters;
    /// Disconnects every client and stops serving for good.
    fn stop(self: Box<Self>);
    /// The unix socket clients connect to while listening, and the export name to ask
    /// for there (the kernel NBD client is attached through it). `None` by default.
    fn local_socket(&self) -> Option<(PathBuf, String)> {
        None
    }
}

/// No data path: nothing is exported.
#[derive(Debug, Default)]
pub struct NoExport;

impl Export for NoExport {
    fn attach(
        &mut self,
        _disk: &Path,
        _size_bytes: u64,
        _direct: bool,
        _wrap: &dyn Fn(Box<dyn Backend>) -> Box<dyn Backend>,
    ) -> Result<(), String> {
        Ok(())
    }

    fn detach(&mut self) {}

    fn endpoint(&self) -> Option<String> {
        None
    }

    fn set_serving(&self, reason: Option<&str>) {
        tracing::debug!(
            ?reason,
            "no data path on this build: serving state noted only"
        );
    }

    fn open_clients(&self) -> usize {
        0
    }

    fn counters(&self) -> Counters {
        // One epoch "on the fly", as DRBD shows for an idle device.
        Counters {
            ep: 1,
            ..Counters::default()
        }
    }

    fn stop(self: Box<Self>) {}
}

/// The NBD export of one volume: a [`Gate`] that lives as long as the daemon (serving state,
/// open clients, counters) and a [`DataPath`] that runs while the disk is attached.
pub struct NbdExport {
    /// The resource, which starts the refusal text clients see (`optzimbra is Secondary`).
    resource: String,
    config: ExportConfig,
    /// `nbd-tls*`: read at every attach (a renewed certificate is taken at the next one).
    tls: Option<NbdTls>,
    gate: Arc<Gate>,
    running: Option<DataPath>,
}

impl NbdExport {
    /// An export named `name`, listening on `socket` (and on `tcp` when set, with `tls`
    /// when set) once attached.
    pub fn new(
        resource: &str,
        name: &str,
        socket: PathBuf,
        tcp: Option<SocketAddr>,
        tls: Option<NbdTls>,
    ) -> Self {
        Self {
            resource: resource.to_owned(),
            config: ExportConfig {
                name: name.to_owned(),
                unix_socket: Some(socket),
                tcp,
                read_only: false,
                tls: None,
            },
            tls,
            gate: Arc::new(Gate::refusing(&format!("{resource} is not attached"))),
            running: None,
        }
    }
}

impl Export for NbdExport {
    fn attach(
        &mut self,
        disk: &Path,
        size_bytes: u64,
        direct: bool,
        wrap: &dyn Fn(Box<dyn Backend>) -> Box<dyn Backend>,
    ) -> Result<(), String> {
        self.detach();
        let mut config = self.config.clone();
        if let Some(t) = &self.tls {
            let tls = crate::daemon::tls::nbd_export_tls(t)
                .map_err(|e| format!("NBD export {}: TLS: {e}", self.config.name))?;
            config.tls = Some(tls);
        }
        let mut spec = BackendSpec::new(disk);
        spec.cache = if direct {
            CacheMode::Direct
        } else {
            CacheMode::Cached
        };
        spec.size_limit = Some(size_bytes);
        let local = UringBackend::open(&spec)
            .map_err(|e| format!("opening {} for I/O: {e}", disk.display()))?;
        // The layer (replication) sees whole blocks: unaligned requests are turned into
        // aligned read-modify-writes above it, so what goes to the peer is aligned too.
        let layered = wrap(crate::io::wrap_for(disk, Box::new(local)));
        let backend: Box<dyn Backend> = if layered.info().block_size > 1 {
            Box::new(Aligned::new(layered))
        } else {
            layered
        };
        let path = DataPath::start(config, backend, self.gate.clone())
            .map_err(|e| format!("starting the NBD export {}: {e}", self.config.name))?;
        tracing::info!(
            export = %self.config.name,
            socket = ?path.unix_socket(),
            tcp = ?path.tcp_addr(),
            tls = ?self.tls.as_ref().map(|t| t.mode),
            size_bytes,
            direct,
            "NBD export listening"
        );
        self.running = Some(path);
        Ok(())
    }

    fn detach(&mut self) {
        if let Some(path) = self.running.take()
            && let Err(e) = path.stop()
        {
            tracing::error!(export = %self.config.name, error = %e, "stopping the NBD export");
        }
    }

    fn endpoint(&self) -> Option<String> {
        let path = self.running.as_ref()?;
        let mut out = Vec::new();
        if let Some(p) = path.unix_socket() {
            out.push(format!(
                "nbd+unix:///{}?socket={}",
                self.config.name,
                p.display()
            ));
        }
        if let Some(a) = path.tcp_addr() {
            // libnbd's schemes: nbd:// in clear, nbds:// with TLS.
            let mode = self.tls.as_ref().map(|t| t.mode);
            if mode != Some(NbdTlsMode::Require) {
                out.push(format!("nbd://{a}/{}", self.config.name));
            }
            if mode.is_some() {
                out.push(format!("nbds://{a}/{}", self.config.name));
            }
        }
        Some(out.join(" "))
    }

    fn set_serving(&self, reason: Option<&str>) {
        let text = reason.map(|r| format!("{} {r}", self.resource));
        self.gate.set_serving(text.as_deref());
    }

    fn open_clients(&self) -> usize {
        self.gate.open_clients()
    }

    fn counters(&self) -> Counters {
        let c = self.gate.counters();
        Counters {
            dw: c.dw,
            dr: c.dr,
            lo: i64::try_from(c.lo).unwrap_or(i64::MAX),
            ap: i64::try_from(c.ap).unwrap_or(i64::MAX),
            // One epoch "on the fly", as DRBD shows for an idle device.
            ep: 1,
            ..Counters::default()
        }
    }

    fn stop(mut self: Box<Self>) {
        self.detach();
    }

    fn local_socket(&self) -> Option<(PathBuf, String)> {
        let path = self.running.as_ref()?.unix_socket()?;
        Some((path.to_path_buf(), self.config.name.clone()))
    }
}

/// Creates the export of one volume: volume 0 is exported as the resource's name on
/// `<run dir>/<resource>.nbd` (and on TCP when configured); volume N as `<resource>/N` on
/// `<run dir>/<resource>.N.nbd`.
pub fn make_export(run_dir: &RunDir, view: &NodeView, volume: &VolumeView) -> Box<dyn Export> {
    let (name, socket) = if volume.volume == 0 {
        (
            view.resource.clone(),
            run_dir.path().join(format!("{}.nbd", view.resource)),
        )
    } else {
        (
            format!("{}/{}", view.resource, volume.volume),
            run_dir
                .path()
                .join(format!("{}.{}.nbd", view.resource, volume.volume)),
        )
    };
    // TCP only when /etc/urbd.conf asks (`urbd-options RES { nbd-listen ADDR:PORT; }`), and
    // for volume 0 only: one address serves one export.
    let (tcp, tls) = if volume.volume == 0 {
        (view.nbd_listen, view.nbd_tls.clone())
    } else {
        (None, None)
    };
    Box::new(NbdExport::new(&view.resource, &name, socket, tcp, tls))
}
