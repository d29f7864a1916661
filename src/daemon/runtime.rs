//! The daemon's state: the core's volumes, their attached disks and exports, and how a
//! control request is carried out (decide in the core, do the I/O here, answer last).

use crate::config::{NodeView, VolumeView};
use crate::control::{FailKind, Request, Response, RunDir};
use crate::core::{Action, AdminCmd, Fencing, Outcome, Refusal, Volume, VolumeConfig};
use crate::status::{ResourceStatus, VolumeStatus, text};

use super::disk::{self, AttachedDisk};
use super::error::DaemonError;
use super::export::{Export, make_export};
use super::files;

mod kernel;

/// One volume: its state machine, its disk while attached, its export.
struct Slot {
    view: VolumeView,
    core: Volume,
    disk: Option<AttachedDisk>,
    export: Option<Box<dyn Export>>,
    /// The kernel NBD device (`/dev/nbdN`) attached while the volume serves.
    kernel: kernel::KernelSlot,
}

/// What the event loop does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep running.
    Continue,
    /// The resource is down: clean up and exit.
    Exit,
}

/// A running resource.
pub struct Runtime {
    view: NodeView,
    run_dir: RunDir,
    slots: Vec<Slot>,
    lock: Option<files::ResourceLock>,
}

/// A fresh random value for a new current UUID.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    match rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_ne_bytes(buf),
        // getrandom(2) does not return short reads for 8 bytes; be safe anyway.
        _ => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// `write-ordering` as /proc/drbd shows it: flush unless disabled, then drain, then none.
fn write_ordering(v: &VolumeView) -> char {
    let off = |name: &str| v.disk_opts.get(name).is_some_and(|x| x == "no");
    if !off("disk-flushes") {
        'f'
    } else if !off("disk-drain") {
        'd'
    } else {
        'n'
    }
}

impl Runtime {
    /// Sets up every volume (Diskless, with its export) without attaching anything.
    pub fn new(view: NodeView, run_dir: RunDir) -> Self {
        let slots = view
            .volumes
            .iter()
            .map(|v| Slot {
                core: Volume::new(VolumeConfig {
                    volume: v.volume,
                    minor: v.minor,
                    fencing: Fencing::from_option(v.disk_opts.get("fencing")),
                }),
                export: Some(make_export(&run_dir, &view, v)),
                kernel: kernel::KernelSlot::new(v),
                view: v.clone(),
                disk: None,
            })
            .collect();
        Self {
            view,
            run_dir,
            slots,
            lock: None,
        }
    }

    /// Keeps the resource lock until [`Runtime::release_files`].
    pub fn hold_lock(&mut self, lock: files::ResourceLock) {
        self.lock = Some(lock);
    }

    /// Removes the daemon's files from the run directory and releases the lock.
    pub fn release_files(&mut self) {
        files::remove_all(&self.run_dir, &self.view.resource);
        if let Some(lock) = self.lock.take() {
            lock.release();
        }
    }

    /// The resource name.
    pub fn resource(&self) -> &str {
        &self.view.resource
    }

    /// Attaches every volume (at startup). The first failure is returned.
    pub fn attach_all(&mut self) -> Result<(), DaemonError> {
        for i in 0..self.slots.len() {
            if let Err(e) = self.attach(i) {
                return Err(match e {
                    AttachError::Daemon(d) => d,
                    AttachError::Refused(r) => DaemonError::Config(r.to_string()),
                });
            }
        }
        Ok(())
    }

    fn attach(&mut self, i: usize) -> Result<(), AttachError> {
        let slot = &mut self.slots[i];
        slot.core.can_attach().map_err(AttachError::Refused)?;
        let (attached, info) = disk::open(&self.view, &slot.view)?;
        tracing::info!(
            volume = slot.view.volume,
            direct = attached.direct,
            capacity_sect = info.capacity_sect,
            "attaching"
        );
        let (disk_path, direct) = (slot.view.disk.clone(), attached.direct);
        slot.disk = Some(attached);
        slot.core
            .handle_attach(info)
            .map_err(AttachError::Refused)?;
        self.perform(i).map_err(AttachError::Daemon)?;
        let slot = &mut self.slots[i];
        let size_bytes = slot.core.size_sect() * 512;
        if let Some(export) = slot.export.as_mut()
            && let Err(e) = export.attach(&disk_path, size_bytes, direct)
        {
            tracing::error!(error = %e, "cannot export the device; detaching");
            let _ = slot.core.handle_admin(AdminCmd::Detach, 0);
            let _ = self.perform(i);
            return Err(AttachError::Daemon(DaemonError::Export(e)));
        }
        kernel::after_change(slot);
        Ok(())
    }

    /// Carries out the core's actions for slot `i`, in order. A failed superblock write
    /// drops the disk (as DRBD detaches on a meta-data I/O error) and is returned.
    fn perform(&mut self, i: usize) -> Result<(), DaemonError> {
        let slot = &mut self.slots[i];
        let label = disk::label(&self.view, &slot.view);
        let mut failure = None;
        while let Some(action) = slot.core.poll_action() {
            match action {
                Action::PersistSuperblock { update, .. } => {
                    if failure.is_some() {
                        continue;
                    }
                    let Some(d) = slot.disk.as_mut() else {
                        continue;
                    };
                    if let Err(source) = disk::persist(d, &update) {
                        tracing::error!(%label, error = %source, "metadata write failed; detaching");
                        slot.core.handle_md_io_error();
                        failure = Some(DaemonError::Meta {
                            label: label.clone(),
                            source,
                        });
                    }
                }
                Action::SetServing { reason, .. } => {
                    if let Some(e) = &slot.export {
                        e.set_serving(reason);
                    }
                }
                Action::CloseDisk { .. } => {
                    if let Some(e) = slot.export.as_mut() {
                        e.detach();
                    }
                    slot.disk = None;
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Indices of the volumes a request selects.
    fn select(&self, volume: Option<u32>) -> Result<Vec<usize>, Box<Response>> {
        match volume {
            None => Ok((0..self.slots.len()).collect()),
            Some(n) => match self.slots.iter().position(|s| s.view.volume == n) {
                Some(i) => Ok(vec![i]),
                None => Err(Box::new(Response::Failed {
                    kind: FailKind::NoSuchVolume,
                    message: format!("resource {} has no volume {n}", self.view.resource),
                })),
            },
        }
    }

    /// One administrative state change on the selected volumes, stopping at the first
    /// refusal (as drbdadm stops at the first failing minor).
    fn admin(&mut self, volume: Option<u32>, cmd: AdminCmd) -> Response {
        let idx = match self.select(volume) {
            Ok(i) => i,
            Err(r) => return *r,
        };
        for i in idx {
            let slot = &mut self.slots[i];
            let open = kernel::users(slot);
            slot.core.handle_open_count(open);
            if let Err(response) = kernel::before_change(slot, cmd) {
                return *response;
            }
            let minor = slot.view.minor;
            match slot.core.handle_admin(cmd, random_u64()) {
                Err(refusal) => {
                    tracing::info!(minor, ?cmd, %refusal, "refused");
                    return Response::Refused { minor, refusal };
                }
                Ok(Outcome::NothingToDo) => kernel::after_change(&mut self.slots[i]),
                Ok(Outcome::Changed) => {
                    tracing::info!(minor, ?cmd, state = ?self.slots[i].core.state(), "state changed");
                    if let Err(e) = self.perform(i) {
                        return failed_io(e);
                    }
                    kernel::after_change(&mut self.slots[i]);
                }
            }
        }
        self.ok(Vec::new())
    }

    fn ok(&self, lines: Vec<String>) -> Response {
        Response::Ok {
            status: self.status(),
            lines,
        }
    }

    /// Carries out one request.
    pub fn handle(&mut self, request: Request) -> (Response, Next) {
        let response = match request {
            Request::Status => self.ok(Vec::new()),
            Request::Role { volume } => self.lines(volume, text::role_line),
            Request::Cstate { volume } => self.lines(volume, text::cstate_line),
            Request::Dstate { volume } => self.lines(volume, text::dstate_line),
            Request::Primary { volume, force } => self.admin(volume, AdminCmd::Primary { force }),
            Request::Secondary { volume } => self.admin(volume, AdminCmd::Secondary),
            Request::Detach { volume } => self.admin(volume, AdminCmd::Detach),
            Request::Attach { volume } => self.attach_request(volume),
            Request::Down => return self.down(),
        };
        (response, Next::Continue)
    }

    fn lines(&self, volume: Option<u32>, f: fn(&VolumeStatus) -> String) -> Response {
        let idx = match self.select(volume) {
            Ok(i) => i,
            Err(r) => return *r,
        };
        let status = self.status();
        let lines = idx.iter().map(|&i| f(&status.volumes[i])).collect();
        Response::Ok { status, lines }
    }

    fn attach_request(&mut self, volume: Option<u32>) -> Response {
        let idx = match self.select(volume) {
            Ok(i) => i,
            Err(r) => return *r,
        };
        for i in idx {
            match self.attach(i) {
                Ok(()) => {}
                Err(AttachError::Refused(refusal)) => {
                    return Response::Refused {
                        minor: self.slots[i].view.minor,
                        refusal,
                    };
                }
                Err(AttachError::Daemon(e)) => {
                    self.slots[i].disk = None;
                    let kind = match e {
                        DaemonError::NoMetadata { .. } | DaemonError::SizeMismatch { .. } => {
                            FailKind::Config
                        }
                        _ => FailKind::Io,
                    };
                    return Response::Failed {
                        kind,
                        message: e.to_string(),
                    };
                }
            }
        }
        self.ok(Vec::new())
    }

    /// `down`: refused as a whole if any volume cannot be demoted; otherwise every volume
    /// is demoted and detached (clean superblock written) and the exports stopped.
    fn down(&mut self) -> (Response, Next) {
        for slot in &mut self.slots {
            let open = kernel::users(slot);
            let mut probe = slot.core.clone();
            probe.handle_open_count(open);
            if let Err(refusal) = probe.handle_admin(AdminCmd::Down, 0) {
                return (
                    Response::Refused {
                        minor: slot.view.minor,
                        refusal,
                    },
                    Next::Continue,
                );
            }
        }
        let response = self.admin(None, AdminCmd::Down);
        if matches!(response, Response::Ok { .. }) {
            self.stop_exports();
            (response, Next::Exit)
        } else {
            (response, Next::Continue)
        }
    }

    /// SIGTERM: stop the exports first (so nobody holds the device open), then go down.
    pub fn terminate(&mut self) {
        self.slots.iter_mut().for_each(kernel::detach_for_exit);
        self.stop_exports();
        let (response, _) = self.down();
        if !matches!(response, Response::Ok { .. }) {
            tracing::error!(?response, "could not go down cleanly on SIGTERM");
        }
    }

    fn stop_exports(&mut self) {
        for slot in &mut self.slots {
            if let Some(e) = slot.export.take() {
                e.stop();
            }
        }
    }

    /// The resource's state now.
    pub fn status(&self) -> ResourceStatus {
        ResourceStatus {
            resource: self.view.resource.clone(),
            node: self.view.node.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            volumes: self
                .slots
                .iter()
                .map(|s| {
                    let st = s.core.state();
                    let counters = s.export.as_ref().map(|e| e.counters()).unwrap_or_default();
                    VolumeStatus {
                        volume: s.view.volume,
                        minor: s.view.minor,
                        role: st.role,
                        peer_role: st.peer,
                        disk: st.disk,
                        peer_disk: st.pdsk,
                        cstate: st.conn,
                        // No network configuration is applied yet (no replication on this
                        // build): StandAlone, no protocol letter.
                        protocol: None,
                        suspended: false,
                        write_ordering: write_ordering(&s.view),
                        counters,
                        oos_kib: s.core.oos_kib(),
                        size_sect: s.core.size_sect(),
                        uuids: s
                            .core
                            .uuids()
                            .map(|u| [u.current, u.bitmap, u.history[0], u.history[1]]),
                        md_flags: s.core.md_flags().map(|f| f.0),
                        open_clients: s.export.as_ref().map_or(0, |e| e.open_clients()),
                        sync: None,
                        export: s.export.as_ref().and_then(|e| e.endpoint()),
                        kernel_device: Some(s.kernel.describe()),
                    }
                })
                .collect(),
        }
    }

    /// Writes the status file and `proc_drbd`.
    pub fn publish(&self) {
        if let Err(e) = files::publish(&self.run_dir, &self.status()) {
            tracing::warn!(error = %e, "cannot publish status");
        }
    }
}

enum AttachError {
    Refused(Refusal),
    Daemon(DaemonError),
}

impl From<DaemonError> for AttachError {
    fn from(e: DaemonError) -> Self {
        AttachError::Daemon(e)
    }
}

fn failed_io(e: DaemonError) -> Response {
    Response::Failed {
        kind: FailKind::Io,
        message: e.to_string(),
    }
}
