//! The daemon's state: the core's volumes, their attached disks and exports, and how a
//! control request is carried out (decide in the core, do the I/O here, answer last).

use crate::config::{NodeView, VolumeView};
use crate::control::{FailKind, Request, Response, RunDir};
use crate::core::{
    Action, AdminCmd, ConnState, FenceOutcome, FenceVerdict, Fencing, IoErrorOutcome, Outcome,
    Refusal, Volume, VolumeConfig,
};
use crate::status::{ResourceStatus, VolumeStatus, text};

use super::disk::{self, AttachedDisk};
use super::error::DaemonError;
use super::export::{Export, make_export};
use super::files;
use super::replication::{self, Admin, Host, PeerCall, PeerHandle, PeerReply};

/// Makes a session's way back into the event loop.
pub type HostFactory = std::sync::Arc<dyn Fn() -> Box<dyn Host> + Send + Sync>;

mod kernel;

/// One volume: its state machine, its disk while attached, its export.
struct Slot {
    view: VolumeView,
    core: Volume,
    disk: Option<AttachedDisk>,
    export: Option<Box<dyn Export>>,
    /// The replication session while the disk is attached and a peer is configured.
    peer: Option<PeerHandle>,
    /// What the backing disk offers, sectors (set at attach).
    capacity_sect: u64,
    /// The kernel NBD device (`/dev/nbdN`) attached while the volume serves.
    kernel: kernel::KernelSlot,
    /// Attached as a degraded Primary and not connected since (status' `wfc_degraded`);
    /// cleared when the status first shows a connection.
    degr_wfc: std::cell::Cell<bool>,
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
    host: Option<HostFactory>,
    /// The configuration file the daemon read (`DRBD_CONF` of the handlers).
    config_path: Option<std::path::PathBuf>,
    /// What the Prometheus endpoint serves, when `metrics-listen` is set.
    metrics: Option<super::metrics::Shared>,
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
                core: {
                    let mut core = Volume::new(VolumeConfig {
                        volume: v.volume,
                        minor: v.minor,
                        fencing: Fencing::from_option(v.disk_opts.get("fencing")),
                    });
                    core.set_on_io_error(crate::core::OnIoError::from_option(
                        v.disk_opts.get("on-io-error"),
                    ));
                    core
                },
                export: Some(make_export(&run_dir, &view, v)),
                kernel: kernel::KernelSlot::new(v),
                view: v.clone(),
                disk: None,
                peer: None,
                capacity_sect: 0,
                degr_wfc: std::cell::Cell::new(false),
            })
            .collect();
        Self {
            view,
            run_dir,
            slots,
            lock: None,
            host: None,
            config_path: None,
            metrics: None,
        }
    }

    /// Starts the Prometheus endpoint if the configuration asks for one (`urbd-options
    /// RES { metrics-listen ADDR:PORT; }`).
    pub fn start_metrics(&mut self) -> Result<(), DaemonError> {
        let Some(addr) = self.view.metrics_listen else {
            return Ok(());
        };
        let shared: super::metrics::Shared = std::sync::Arc::new(std::sync::Mutex::new(None));
        super::metrics::serve(addr, shared.clone())
            .map_err(|e| DaemonError::io(format!("serving metrics on {addr}"), e))?;
        self.metrics = Some(shared);
        Ok(())
    }

    /// The configuration file, for the handlers' `DRBD_CONF`.
    pub fn set_config_path(&mut self, path: std::path::PathBuf) {
        self.config_path = Some(path);
    }

    /// Where replication sessions send their calls (set before the first attach).
    pub fn set_host(&mut self, host: HostFactory) {
        self.host = Some(host);
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
        if slot.peer.is_some() {
            // A node that detached a failed disk (`on-io-error`) still talks to its peer.
            // A Primary would need a resync under its users, which urbd does not do.
            if slot.core.state().role == crate::core::Role::Primary {
                return Err(AttachError::Daemon(DaemonError::Config(format!(
                    "{}: this Diskless node is Primary and serves through its peer; attaching \
                     a disk here would need a resync under the Primary, which urbd does not \
                     do: move the Primary role to the peer first",
                    disk::label(&self.view, &slot.view)
                ))));
            }
            // A Secondary: the diskless session goes; the new one connects with the disk
            // and resyncs it.
            let label = disk::label(&self.view, &slot.view);
            stop_peer(slot, &label);
            if let Some(e) = slot.export.as_mut() {
                e.detach();
            }
        }
        let (attached, info) = disk::open(&self.view, &slot.view)?;
        tracing::info!(
            volume = slot.view.volume,
            direct = attached.direct,
            capacity_sect = info.capacity_sect,
            "attaching"
        );
        let (disk_path, direct) = (slot.view.disk.clone(), attached.direct);
        // DRBD's attach: `USE_DEGR_WFC_T` when the metadata says Primary but not connected.
        slot.degr_wfc.set(
            info.flags.contains(crate::meta::MdFlags::PRIMARY_IND)
                && !info.flags.contains(crate::meta::MdFlags::CONNECTED_IND),
        );
        slot.disk = Some(attached);
        slot.capacity_sect = info.capacity_sect;
        slot.core
            .handle_attach(info)
            .map_err(AttachError::Refused)?;
        self.perform(i).map_err(AttachError::Daemon)?;
        let bitmap = {
            let slot = &self.slots[i];
            match &slot.disk {
                Some(d) => disk::bitmap_for(d, slot.core.size_sect()),
                None => crate::meta::Bitmap::new(slot.core.size_sect()),
            }
        };
        if let Err(e) = self.start_peer(i, bitmap, direct) {
            let slot = &mut self.slots[i];
            let _ = slot.core.handle_admin(AdminCmd::Detach, 0);
            let _ = self.perform(i);
            return Err(AttachError::Daemon(e));
        }
        let slot = &mut self.slots[i];
        let size_bytes = slot.core.size_sect() * 512;
        let attached = match slot.export.as_mut() {
            Some(export) => export.attach(
                &disk_path,
                size_bytes,
                direct,
                &data_path_layer(slot.peer.as_ref()),
            ),
            None => Ok(()),
        };
        if let Err(e) = attached {
            tracing::error!(error = %e, "cannot export the device; detaching");
            let _ = slot.core.handle_admin(AdminCmd::Detach, 0);
            let _ = self.perform(i);
            return Err(AttachError::Daemon(DaemonError::Export(e)));
        }
        kernel::after_change(slot);
        Ok(())
    }

    /// Starts slot `i`'s replication session (when the resource has a peer and the event
    /// loop is wired), connecting at once as `up` does.
    fn start_peer(
        &mut self,
        i: usize,
        bitmap: crate::meta::Bitmap,
        direct: bool,
    ) -> Result<(), DaemonError> {
        let Some(host) = self.host.clone() else {
            return Ok(());
        };
        if self.view.peer.is_none() || self.slots[i].peer.is_some() {
            return Ok(());
        }
        let local = self.local_disk(i);
        let slot = &self.slots[i];
        let meta = slot.disk.as_ref().map(|d| {
            let mut md = d.metadata.clone();
            md.superblock = d.superblock.clone();
            (d.meta.clone(), md)
        });
        let cfg = replication::session_config(
            &self.view,
            &slot.view,
            local,
            slot.core.size_sect() * 512,
            direct,
            meta,
        )
        .map_err(DaemonError::Config)?;
        let Some(cfg) = cfg else {
            return Ok(());
        };
        let handle = PeerHandle::start(cfg, bitmap, host(), true)
            .map_err(|e| DaemonError::io("starting replication", e))?;
        self.slots[i].peer = Some(handle);
        Ok(())
    }

    /// `connect`/`disconnect`: to every volume's session.
    fn send_to_peers(&mut self, a: Admin) -> Response {
        if self.view.peer.is_none() {
            return Response::Failed {
                kind: FailKind::Config,
                message: format!(
                    "resource {} has no peer in the configuration",
                    self.view.resource
                ),
            };
        }
        if let Admin::Connect {
            discard_my_data: true,
        } = a
        {
            // DRBD's ERR_DISCARD_IMPOSSIBLE (drbd_nl.c, `check_net_options`): a Primary's
            // data is what its users see; it cannot be the victim. Nothing changes.
            if let Some(slot) = self
                .slots
                .iter()
                .find(|s| s.core.state().role == crate::core::Role::Primary)
            {
                return Response::Failed {
                    kind: FailKind::Config,
                    message: format!(
                        "(123) --discard-my-data not allowed when primary. {} is Primary: its data is the one in use; run `urbdadm secondary {}` first (the victim must be Secondary), or pick the other node as the victim",
                        disk::label(&self.view, &slot.view),
                        self.view.resource
                    ),
                };
            }
        }
        let mut any = false;
        let mut lines = Vec::new();
        for slot in &self.slots {
            if let Some(p) = &slot.peer {
                any = true;
                let cs = slot.core.state().conn;
                match a {
                    Admin::Connect {
                        discard_my_data: true,
                    } if cs != ConnState::StandAlone && cs < ConnState::WFReportParams => {
                        // Still looking for the peer: the flag holds for the handshake to come.
                        lines.push(format!(
                            "{}: already connecting ({cs:?}); --discard-my-data applies to the next handshake",
                            disk::label(&self.view, &slot.view)
                        ));
                    }
                    Admin::Connect { .. } if cs != ConnState::StandAlone => {
                        lines.push(format!(
                            "{}: already {} ({cs:?}); nothing to do",
                            disk::label(&self.view, &slot.view),
                            if cs >= ConnState::Connected {
                                "connected"
                            } else {
                                "connecting"
                            }
                        ));
                        continue;
                    }
                    Admin::Disconnect if cs == ConnState::StandAlone => {
                        lines.push(format!(
                            "{}: already StandAlone; nothing to do",
                            disk::label(&self.view, &slot.view)
                        ));
                        continue;
                    }
                    _ => {}
                }
                p.admin(a);
            }
        }
        if !any {
            return Response::Failed {
                kind: FailKind::Config,
                message: format!(
                    "resource {} has no disk attached; attach it first",
                    self.view.resource
                ),
            };
        }
        self.ok(lines)
    }

    /// Restarts slot `i`'s export with the current size (after the device shrank).
    fn reexport(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let size_bytes = slot.core.size_sect() * 512;
        let Some(d) = slot.disk.as_ref() else {
            return;
        };
        let (path, direct) = (slot.view.disk.clone(), d.direct);
        let peer = slot.peer.as_ref();
        let wrap = data_path_layer(peer);
        if let Some(p) = peer {
            p.set_local_only(true);
        }
        if let Some(export) = slot.export.as_mut()
            && let Err(e) = export.attach(&path, size_bytes, direct, &wrap)
        {
            tracing::error!(error = %e, "cannot export the device at its new size");
        }
        if let Some(p) = peer {
            p.set_local_only(false);
        }
    }

    /// The local disk as the connection needs it.
    fn local_disk(&self, i: usize) -> crate::core::LocalDisk {
        let slot = &self.slots[i];
        let st = slot.core.state();
        crate::core::LocalDisk {
            uuids: slot.core.uuids().unwrap_or_default(),
            role: st.role,
            disk: st.disk,
            crashed_primary: slot.core.crashed_primary(),
            oos_bits: slot.core.oos_kib() / 4,
            backing_sect: slot.capacity_sect,
            user_sect: 0,
            current_sect: slot.core.size_sect(),
        }
    }

    /// A call of volume 0's replication session (the sessions serve volume 0 for now),
    /// answered through the session's queue.
    pub fn handle_peer_call(&mut self, call: PeerCall) {
        if let PeerCall::FenceResult {
            connect_count,
            code,
        } = call
        {
            return self.fence_result(0, Some(connect_count), code);
        }
        let reply = self.apply_peer_call(call);
        if let Some(p) = &self.slots[0].peer {
            p.deliver(call, reply);
        }
    }

    fn apply_peer_call(&mut self, call: PeerCall) -> PeerReply {
        let i = 0;
        let mut sync_uuid = 0;
        let core = &mut self.slots[i].core;
        match call {
            PeerCall::State {
                conn,
                peer,
                pdsk,
                oos_bits,
            } => {
                core.handle_oos_bits(oos_bits);
                core.handle_peer(conn, peer, pdsk, random_u64());
            }
            PeerCall::Resize { size_sect } => {
                core.handle_resize(size_sect);
                if let Err(e) = self.perform(i) {
                    tracing::error!(error = %e, "recording the new size");
                }
                self.reexport(i);
            }
            PeerCall::UuidRepair(u) => core.handle_uuid_repair(u),
            PeerCall::LocalIoError { write } => {
                let what = if write { "write" } else { "read" };
                match core.handle_local_io_error() {
                    IoErrorOutcome::NoDisk => {}
                    IoErrorOutcome::PassedOn { inconsistent } => {
                        tracing::error!(
                            "Local IO failed in a {what} (on-io-error pass_on){}",
                            if inconsistent {
                                "; the disk is Inconsistent until a resync"
                            } else {
                                ""
                            }
                        )
                    }
                    IoErrorOutcome::Detached { call_helper } => {
                        tracing::error!("Local IO failed in a {what}. Detaching...");
                        // Before anything else (DRBD calls it before it tells the peer).
                        if call_helper {
                            self.run_handler(i, replication::Handler::LocalIoError);
                        }
                    }
                }
            }
            PeerCall::SyncSourceTail => core.handle_sync_source_tail(),
            PeerCall::SyncSourceStart => sync_uuid = core.handle_sync_source_start(random_u64()),
            PeerCall::SyncTargetStart(uuid) => core.handle_sync_target_start(uuid),
            PeerCall::SyncFinished {
                target,
                failed,
                peer,
            } => core.handle_sync_finished(target, failed, peer),
            PeerCall::FenceResult { .. } => {}
            PeerCall::Handler(h) => {
                self.run_handler(i, h);
                return PeerReply {
                    local: self.local_disk(i),
                    sync_uuid,
                };
            }
        }
        if let Err(e) = self.perform(i) {
            tracing::error!(error = %e, "applying the peer's state change");
        }
        PeerReply {
            local: self.local_disk(i),
            sync_uuid,
        }
    }

    /// Runs handler `h` of the `handlers` section, if configured, as drbdadm does
    /// (`/bin/sh -c COMMAND` with DRBD's environment: DRBD_RESOURCE, DRBD_MINOR,
    /// DRBD_VOLUME, DRBD_LL_DISK, DRBD_PEER, DRBD_PEERS, DRBD_PEER_AF, DRBD_PEER_ADDRESS,
    /// DRBD_CONF; drbd-utils `user/v84/drbdadm_main.c`, `adm_khelper`). The event loop
    /// does not wait for it: a thread reaps it and logs its exit status.
    fn run_handler(&self, i: usize, h: replication::Handler) {
        let name = h.name();
        let Some(mut cmd) = self.handler_command(i, name) else {
            tracing::info!(handler = name, "no {name} handler configured");
            return;
        };
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = std::thread::Builder::new()
                    .name("urbd-handler".into())
                    .spawn(move || match child.wait() {
                        Ok(st) => tracing::info!(
                            handler = name,
                            "helper command: {name} exit code {}",
                            st.code().unwrap_or(-1)
                        ),
                        Err(e) => tracing::warn!(handler = name, "helper command: {name}: {e}"),
                    });
            }
            Err(e) => tracing::error!(handler = name, "cannot run the {name} handler: {e}"),
        }
    }

    /// The command of handler `name` with DRBD's environment, if one is configured.
    fn handler_command(&self, i: usize, name: &str) -> Option<std::process::Command> {
        let command = self.view.handlers.get(name)?.to_owned();
        let v = &self.slots[i].view;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&command)
            .env("DRBD_RESOURCE", &self.view.resource)
            .env("DRBD_MINOR", v.minor.to_string())
            .env("DRBD_VOLUME", v.volume.to_string())
            .env("DRBD_LL_DISK", &v.disk)
            .stdin(std::process::Stdio::null());
        if let Some(p) = &self.view.peer {
            let af = if p.address.host.contains(':') {
                "ipv6"
            } else {
                "ipv4"
            };
            cmd.env("DRBD_PEER", &p.name)
                .env("DRBD_PEERS", &p.name)
                .env("DRBD_PEER_AF", af)
                .env("DRBD_PEER_ADDRESS", &p.address.host);
        }
        if let Some(c) = &self.config_path {
            cmd.env("DRBD_CONF", c);
        }
        tracing::info!(handler = name, command = %command, "helper command: {name}");
        Some(cmd)
    }

    /// Starts the fence-peer handler for a lost connection; its exit code comes back into
    /// the event loop as [`PeerCall::FenceResult`]. Without a handler the verdict is
    /// "broken" at once (exit code 0, as drbdadm's missing handler gives DRBD).
    fn start_fence_peer(&self, i: usize, connect_count: u64) {
        let Some(host) = self.host.clone() else {
            return;
        };
        let host = host();
        let Some(mut cmd) = self.handler_command(i, "fence-peer") else {
            tracing::error!(
                "fencing is set but no fence-peer handler is configured; I/O stays frozen (resource-and-stonith) until the peer is back or `resume-io`"
            );
            host.notify(PeerCall::FenceResult {
                connect_count,
                code: Some(0),
            });
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("urbd-fence-peer".into())
            .spawn(move || {
                let code = match cmd.status() {
                    Ok(st) => st.code(),
                    Err(e) => {
                        tracing::error!("cannot run the fence-peer handler: {e}");
                        None
                    }
                };
                host.notify(PeerCall::FenceResult {
                    connect_count,
                    code,
                });
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the fence-peer handler: {e}");
        }
    }

    /// Runs the fence-peer handler for a promotion and waits for it, at most
    /// [`FENCE_PEER_WAIT`] (the control client waits 60 s for its answer); a handler that
    /// takes longer is killed and counts as broken.
    fn fence_peer_now(&self, i: usize) -> Option<i32> {
        let Some(mut cmd) = self.handler_command(i, "fence-peer") else {
            tracing::error!("fencing is set but no fence-peer handler is configured");
            return Some(0);
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot run the fence-peer handler: {e}");
                return None;
            }
        };
        let deadline = std::time::Instant::now() + FENCE_PEER_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return st.code(),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Ok(None) => {
                    tracing::error!(
                        "the fence-peer handler did not answer within {} s; killed, counted as broken",
                        FENCE_PEER_WAIT.as_secs()
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                Err(e) => {
                    tracing::error!("waiting for the fence-peer handler: {e}");
                    return None;
                }
            }
        }
    }

    /// A fence-peer verdict for slot `i`: into the core, logged as DRBD logs it, and the
    /// session told what changed.
    fn fence_result(&mut self, i: usize, connect_count: Option<u64>, code: Option<i32>) {
        let verdict = FenceVerdict::from_exit(code);
        let outcome = self.slots[i]
            .core
            .handle_fence_result(connect_count, verdict);
        match outcome {
            FenceOutcome::Applied { text, resumed } => {
                if verdict == FenceVerdict::PeerPrimary {
                    tracing::warn!("Peer is primary, outdating myself.");
                }
                tracing::info!(
                    "fence-peer helper returned {} ({text}){}",
                    verdict.code(),
                    if resumed { "; I/O resumed" } else { "" }
                );
            }
            FenceOutcome::Broken => tracing::error!(
                "fence-peer helper broken, returned {}{}",
                verdict.code(),
                if self.slots[i].core.suspended() {
                    "; I/O stays frozen until the peer is back or `resume-io`"
                } else {
                    ""
                }
            ),
            FenceOutcome::Ignored => tracing::info!("Ignoring fence-peer exit code"),
            FenceOutcome::Refused(r) => {
                tracing::error!("fence-peer helper returned {}: {r}", verdict.code())
            }
        }
        if let Err(e) = self.perform(i) {
            tracing::error!(error = %e, "recording the fence-peer verdict");
        }
        let local = self.local_disk(i);
        if let Some(p) = &self.slots[i].peer {
            p.admin(Admin::Local(local));
        }
    }

    /// Carries out the core's actions for slot `i`, in order. A failed superblock write
    /// drops the disk (as DRBD detaches on a meta-data I/O error) and is returned.
    fn perform(&mut self, i: usize) -> Result<(), DaemonError> {
        let slot = &mut self.slots[i];
        let label = disk::label(&self.view, &slot.view);
        let mut failure = None;
        let mut fence = None;
        while let Some(action) = slot.core.poll_action() {
            match action {
                Action::FencePeer { connect_count, .. } => fence = Some(connect_count),
                Action::ResumeIo { .. } => {
                    if let Some(p) = &slot.peer {
                        p.admin(Admin::ResumeIo);
                    }
                }
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
                Action::DetachFailedDisk { .. } => {
                    // The session stops local I/O when it learns the disk is Diskless
                    // (the reply to its call); the data path then reads through it.
                    slot.disk = None;
                    tracing::warn!(%label, "disk detached after an I/O error: Diskless; I/O goes to the peer");
                }
                Action::CloseDisk { .. } => {
                    // The session first: it may be waiting for this loop, which would wait
                    // for the data path, which would wait for the session. Nobody has the
                    // device open here (detach and down are refused otherwise); the data
                    // path's final flush then goes to the local disk.
                    stop_peer(slot, &label);
                    if let Some(e) = slot.export.as_mut() {
                        e.detach();
                    }
                    slot.disk = None;
                }
            }
        }
        if let Some(connect_count) = fence {
            self.start_fence_peer(i, connect_count);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `inject-fault`: the data disks of the selected volumes fail as `plan` says (both
    /// the NBD data path's backend and the replication session's share the plan).
    fn inject_fault(&mut self, volume: Option<u32>, plan: crate::io::FaultPlan) -> Response {
        if !crate::io::injection_enabled() {
            return Response::Failed {
                kind: FailKind::BadRequest,
                message: format!(
                    "fault injection is off in this daemon; start it with {}=1 (a testing aid)",
                    crate::io::FAULT_INJECTION_ENV
                ),
            };
        }
        let idx = match self.select(volume) {
            Ok(i) => i,
            Err(r) => return *r,
        };
        for i in idx {
            let v = &self.slots[i].view;
            if let Some(f) = crate::io::faults_for(&v.disk) {
                tracing::warn!(minor = v.minor, disk = %v.disk.display(), ?plan, "fault injection: new plan");
                f.set(plan.clone());
            }
        }
        self.ok(Vec::new())
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
            if let Err(e) = flush_before_demotion(slot, cmd) {
                tracing::error!(minor, ?cmd, error = %e, "flushing the data disk before the demotion failed");
                return Response::Failed {
                    kind: FailKind::Io,
                    message: format!("flushing the data disk before demoting: {e}"),
                };
            }
            let mut result = slot.core.handle_admin(cmd, random_u64());
            if result == Ok(Outcome::NeedFence) {
                // drbd_set_role: the peer must be outdated first (conn_try_outdate_peer).
                let code = self.fence_peer_now(i);
                self.fence_result(i, None, code);
                result = self.slots[i].core.handle_admin(cmd, random_u64());
            }
            match result {
                Ok(Outcome::NeedFence) => {
                    tracing::error!(minor, ?cmd, "the promotion asked for fencing twice");
                    return Response::Refused {
                        minor,
                        refusal: Refusal::PrimaryNop,
                    };
                }
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
                    let local = self.local_disk(i);
                    if let Some(p) = &self.slots[i].peer {
                        p.admin(Admin::Local(local));
                    }
                    kernel::after_change(&mut self.slots[i]);
                }
            }
        }
        self.ok(Vec::new())
    }

    /// `verify`, `invalidate`, `invalidate-remote`, `pause-sync`, `resume-sync`: checked
    /// against the volume's state first (a refusal changes nothing), then handed to the
    /// session.
    fn sync_cmd(&mut self, volume: Option<u32>, cmd: crate::core::SyncCmd) -> Response {
        use crate::core::SyncCmd;
        let idx = match self.select(volume) {
            Ok(i) => i,
            Err(r) => return *r,
        };
        let verify_alg = self.view.net.get("verify-alg").is_some();
        for &i in &idx {
            let slot = &self.slots[i];
            let Some(p) = &slot.peer else {
                return Response::Failed {
                    kind: FailKind::Config,
                    message: format!(
                        "resource {} has no peer or no disk attached",
                        self.view.resource
                    ),
                };
            };
            let state = slot.core.state();
            if let Err(refusal) =
                crate::core::check_sync_cmd(cmd, &state, verify_alg, p.is_user_paused())
            {
                tracing::info!(minor = slot.view.minor, ?cmd, %refusal, "refused");
                return Response::Refused {
                    minor: slot.view.minor,
                    refusal,
                };
            }
        }
        for &i in &idx {
            if let Some(p) = &self.slots[i].peer {
                p.admin(match cmd {
                    SyncCmd::Verify => Admin::Verify,
                    SyncCmd::Invalidate => Admin::Invalidate,
                    SyncCmd::InvalidateRemote => Admin::InvalidateRemote,
                    SyncCmd::PauseSync => Admin::PauseSync(true),
                    SyncCmd::ResumeSync => Admin::PauseSync(false),
                });
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
            Request::Outdate { volume } => self.admin(volume, AdminCmd::Outdate),
            Request::ResumeIo { volume } => self.admin(volume, AdminCmd::ResumeIo),
            Request::InjectFault { volume, plan } => self.inject_fault(volume, plan),
            Request::Attach { volume } => self.attach_request(volume),
            Request::Down => return self.down(),
            Request::Connect { discard_my_data } => {
                self.send_to_peers(Admin::Connect { discard_my_data })
            }
            Request::Disconnect => self.send_to_peers(Admin::Disconnect),
            Request::Sync { which, volume } => self.sync_cmd(volume, which),
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
        let mut notes = Vec::new();
        for i in idx {
            match self.attach(i) {
                Ok(()) => {
                    if let Some(d) = &self.slots[i].disk {
                        notes.extend(d.notes.iter().cloned());
                    }
                }
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
        // What attach had to do with the metadata (log applied, full sync), for the
        // operator.
        self.ok(notes)
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

    /// SIGTERM: stop the replication sessions and the exports first (so nobody holds the
    /// device open), then go down.
    pub fn terminate(&mut self) {
        self.slots.iter_mut().for_each(kernel::detach_for_exit);
        for slot in &mut self.slots {
            let label = disk::label(&self.view, &slot.view);
            stop_peer(slot, &label);
        }
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
                    let mut counters = s.export.as_ref().map(|e| e.counters()).unwrap_or_default();
                    let peer = s.peer.as_ref().map(|p| p.status());
                    if let Some(p) = &peer {
                        counters.ns = p.net_sent_kib;
                        counters.nr = p.net_recv_kib;
                        counters.pe = i64::try_from(p.pending).unwrap_or(i64::MAX);
                        counters.dw += p.disk_written_kib;
                        counters.dr += p.disk_read_kib;
                        counters.al = p.al_writes;
                        counters.bm = p.bm_writes;
                    }
                    if st.conn >= ConnState::Connected {
                        s.degr_wfc.set(false);
                    }
                    VolumeStatus {
                        wfc_degraded: s.degr_wfc.get(),
                        volume: s.view.volume,
                        minor: s.view.minor,
                        role: st.role,
                        peer_role: st.peer,
                        disk: st.disk,
                        peer_disk: st.pdsk,
                        cstate: st.conn,
                        protocol: self.view.peer.as_ref().map(|_| protocol_letter(&self.view)),
                        suspended: s.core.suspended() || peer.as_ref().is_some_and(|p| p.frozen),
                        user_isp: peer.as_ref().is_some_and(|p| p.user_paused),
                        peer_isp: peer.as_ref().is_some_and(|p| p.peer_paused),
                        write_ordering: write_ordering(&s.view),
                        counters,
                        oos_kib: peer.as_ref().map_or(s.core.oos_kib(), |p| p.oos_kib),
                        size_sect: s.core.size_sect(),
                        uuids: s
                            .core
                            .uuids()
                            .map(|u| [u.current, u.bitmap, u.history[0], u.history[1]]),
                        md_flags: s.core.md_flags().map(|f| f.0),
                        open_clients: s.export.as_ref().map_or(0, |e| e.open_clients()),
                        sync: peer
                            .as_ref()
                            .and_then(|p| p.sync)
                            .map(replication::status_progress),
                        export: s.export.as_ref().and_then(|e| e.endpoint()),
                        kernel_device: Some(s.kernel.describe()),
                        ack_latency: peer.as_ref().map(|p| p.ack_latency.clone()),
                        split_brain: peer.as_ref().and_then(|p| p.split_brain).map(|sb| {
                            let u = |u: crate::meta::Uuids| {
                                [u.current, u.bitmap, u.history[0], u.history[1]]
                            };
                            crate::status::SplitBrainStatus {
                                peer: self
                                    .view
                                    .peer
                                    .as_ref()
                                    .map_or_else(|| "the peer".to_owned(), |p| p.name.clone()),
                                local_changed_kib: sb.local_bits * 4,
                                peer_changed_kib: sb.peer_bits * 4,
                                local_uuids: u(sb.local),
                                peer_uuids: u(sb.peer),
                            }
                        }),
                    }
                })
                .collect(),
        }
    }

    /// Writes the status file and `proc_drbd`.
    pub fn publish(&self) {
        let status = self.status();
        if let Err(e) = files::publish(&self.run_dir, &status) {
            tracing::warn!(error = %e, "cannot publish status");
        }
        if let Some(m) = &self.metrics
            && let Ok(mut slot) = m.lock()
        {
            *slot = Some(status);
        }
    }
}

/// How long a promotion waits for the fence-peer handler.
const FENCE_PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(45);

/// The protocol letter /proc/drbd shows.
fn protocol_letter(view: &NodeView) -> char {
    match view.protocol {
        crate::config::Protocol::A => 'A',
        crate::config::Protocol::B => 'B',
        crate::config::Protocol::C => 'C',
    }
}

/// What the NBD data path's local backend is wrapped in: the replication session when
/// there is one.
fn data_path_layer(
    peer: Option<&PeerHandle>,
) -> impl Fn(Box<dyn crate::io::Backend>) -> Box<dyn crate::io::Backend> + '_ {
    move |b| match peer {
        Some(p) => p.backend(b),
        None => b,
    }
}

/// Stops a slot's replication session and writes its bitmap back.
fn stop_peer(slot: &mut Slot, label: &str) {
    if let Some(p) = slot.peer.take()
        && let Some(bitmap) = p.stop()
        && let Some(d) = slot.disk.as_mut()
        && let Err(e) = disk::persist_bitmap(d, &bitmap)
    {
        tracing::error!(%label, error = %e, "writing the bitmap failed");
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

/// Before a Primary demotes (`secondary`, `down`), its data disk is flushed. The demotion
/// clears `MDF_PRIMARY_IND`, and with it the crash recovery of the activity log: a write
/// the Primary completed into the disk's volatile cache, then lost with a crash after the
/// demotion, would leave this replica older than the peer with nothing in the bitmap to
/// say so (found by the simulation). DRBD 8.4's `drbd_set_role` does not flush (it relies
/// on the file system's flush at unmount); urbd does not rely on the client. A failed
/// flush refuses the demotion, which then changes nothing.
fn flush_before_demotion(slot: &Slot, cmd: AdminCmd) -> std::io::Result<()> {
    if !matches!(cmd, AdminCmd::Secondary | AdminCmd::Down)
        || slot.core.state().role != crate::core::Role::Primary
    {
        return Ok(());
    }
    match &slot.disk {
        Some(d) => d.data.sync_data(),
        None => Ok(()),
    }
}

fn failed_io(e: DaemonError) -> Response {
    Response::Failed {
        kind: FailKind::Io,
        message: e.to_string(),
    }
}
