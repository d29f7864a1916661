//! The kernel NBD device of each volume (`/dev/nbdN`): attached while the volume serves
//! (Primary, UpToDate), detached before a demotion, a detach or `down`, which are refused
//! while the device is held (mounted, or opened with O_EXCL), as DRBD refuses to demote a
//! /dev/drbdN that is open.
//!
//! The runtime calls, for slot `i`: [`users`] wherever it counts openers for the core,
//! [`before_change`] after the core's open count is set and before a request that may
//! stop the serving, [`after_change`] once a state change is carried out, and
//! [`detach_for_exit`] when the daemon exits on a signal.
//!
//! `URBD_KERNEL_NBD=0` (read when the daemon starts) leaves the kernel device alone; the
//! integration tests set it so that tests running side by side do not fight over
//! /dev/nbd0 on a machine with nbd.

use std::time::{Duration, Instant};

use crate::config::VolumeView;
use crate::control::{FailKind, Response};
use crate::core::{AdminCmd, Refusal};
use crate::nbd::kernel::{self, Attached, KernelError, NbdDevice};

use super::Slot;

/// The environment variable that turns kernel attachment off (`0`, `no`, `off`).
pub const ENV_KERNEL_NBD: &str = "URBD_KERNEL_NBD";
/// How long the kernel and the export may take to let go after a disconnect.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// What we know of one volume's kernel device.
#[derive(Debug)]
enum State {
    /// Not attached: the volume is not serving, or attachment is off.
    Idle,
    /// Attached to the export.
    Attached,
    /// The last attach failed (kept for status until the next attempt).
    Failed(String),
}

/// One volume's kernel device and its state.
#[derive(Debug)]
pub(super) struct KernelSlot {
    device: NbdDevice,
    enabled: bool,
    /// `modprobe nbd` was tried (once per daemon).
    tried_modprobe: bool,
    state: State,
}

/// The kernel device a volume's `device` names: `/dev/nbdN` as written, `/dev/drbdN` as
/// /dev/nbdN, anything else by its minor.
pub(super) fn device_for(v: &VolumeView) -> NbdDevice {
    let from_path = v
        .device_path
        .as_ref()
        .and_then(|p| p.to_str())
        .and_then(|p| {
            p.strip_prefix("/dev/nbd")
                .or_else(|| p.strip_prefix("/dev/drbd"))
                .and_then(|n| n.parse::<u32>().ok())
        });
    NbdDevice {
        index: from_path.unwrap_or(v.minor),
    }
}

fn enabled_by_env() -> bool {
    !std::env::var(ENV_KERNEL_NBD).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "no" | "off" | "false"
        )
    })
}

impl KernelSlot {
    pub(super) fn new(v: &VolumeView) -> Self {
        Self {
            device: device_for(v),
            enabled: enabled_by_env(),
            tried_modprobe: false,
            state: State::Idle,
        }
    }

    fn attached(&self) -> bool {
        matches!(self.state, State::Attached)
    }

    /// The status line's text (`/dev/nbd0 attached`, or why not).
    pub(super) fn describe(&self) -> String {
        let dev = self.device;
        match &self.state {
            State::Attached => format!("{dev} attached"),
            State::Failed(why) => format!("{dev} not attached: {why}; use the export"),
            State::Idle if !kernel::kernel_has_nbd() => {
                format!("{dev} not attached: this kernel has no nbd module; use the export")
            }
            State::Idle if !self.enabled => {
                format!("{dev} not attached: disabled by {ENV_KERNEL_NBD}=0; use the export")
            }
            State::Idle => format!("{dev} not attached: the Primary attaches it"),
        }
    }
}

/// The openers the core counts: clients of the export other than the kernel's own
/// connection, plus one when the kernel device is held.
pub(super) fn users(slot: &Slot) -> usize {
    let open = slot.export.as_ref().map_or(0, |e| e.open_clients());
    if !slot.kernel.attached() {
        return open;
    }
    let held = match kernel::claim(slot.kernel.device) {
        Ok(Some(_claim)) => false,
        Ok(None) => true,
        Err(e) => {
            tracing::warn!(device = %slot.kernel.device, error = %e, "cannot open the kernel device to see whether it is held");
            false
        }
    };
    open.saturating_sub(1) + usize::from(held)
}

/// Before `cmd` is handed to the core: if it will be accepted and leaves the volume not
/// serving, disconnect the kernel device now (nothing has changed yet, so a failure here
/// refuses the request whole). `Err` is the answer to send instead.
pub(super) fn before_change(slot: &mut Slot, cmd: AdminCmd) -> Result<(), Box<Response>> {
    if !slot.kernel.attached() {
        return Ok(());
    }
    let mut probe = slot.core.clone();
    match probe.handle_admin(cmd, 0) {
        // The real request will be refused the same way; nothing to do here.
        Err(_) => return Ok(()),
        Ok(_) if probe.serving().is_none() => return Ok(()),
        Ok(_) => {}
    }
    while probe.poll_action().is_some() {}
    let device = slot.kernel.device;
    // Hold the device exclusively across the disconnect, so that nobody mounts it between
    // the check and the disconnect.
    let claim = match kernel::claim(device) {
        Ok(Some(c)) => Some(c),
        Ok(None) => {
            tracing::info!(%device, ?cmd, "refused: the kernel device is held");
            return Err(Box::new(Response::Refused {
                minor: slot.view.minor,
                refusal: Refusal::DeviceInUse,
            }));
        }
        Err(e) => {
            tracing::warn!(%device, error = %e, "cannot claim the kernel device; disconnecting anyway");
            None
        }
    };
    let open_before = slot.export.as_ref().map_or(0, |e| e.open_clients());
    if let Err(e) = kernel::disconnect(device) {
        tracing::error!(%device, error = %e, "cannot detach the kernel device");
        return Err(Box::new(Response::Failed {
            kind: FailKind::Io,
            message: e.to_string(),
        }));
    }
    drop(claim);
    let released = kernel::wait_released(device, RELEASE_TIMEOUT);
    // The kernel shut its socket down: wait for the export to see the connection go, so
    // that status and the core's open count agree with what is left.
    let start = Instant::now();
    while slot.export.as_ref().map_or(0, |e| e.open_clients()) >= open_before
        && start.elapsed() < RELEASE_TIMEOUT
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    slot.kernel.state = State::Idle;
    match released {
        Ok(()) => tracing::info!(%device, "kernel NBD client detached"),
        // The disconnect was accepted and the socket is shut down; the kernel frees the
        // device when its last opener closes it.
        Err(e) => tracing::warn!(error = %e, "kernel device detached but not yet released"),
    }
    Ok(())
}

/// After a state change is carried out: attach the kernel device when the volume serves
/// and it is not attached yet. A failure is logged and shown in status; the state change
/// itself stands (the export serves regardless).
pub(super) fn after_change(slot: &mut Slot) {
    if slot.core.serving().is_some() {
        // Not serving: an earlier attach failure no longer applies.
        if !slot.kernel.attached() {
            slot.kernel.state = State::Idle;
        }
        return;
    }
    if slot.kernel.attached() {
        return;
    }
    let ks = &mut slot.kernel;
    if !ks.enabled {
        ks.state = State::Idle;
        return;
    }
    if !kernel::kernel_has_nbd() && !ks.tried_modprobe {
        ks.tried_modprobe = true;
        tracing::info!("no nbd module loaded; trying modprobe nbd");
        kernel::try_load_module();
    }
    let Some((socket, name)) = slot.export.as_ref().and_then(|e| e.local_socket()) else {
        ks.state = State::Failed("the export is not listening on a unix socket".into());
        return;
    };
    let backend = format!("urbd:{name}");
    ks.state = match kernel::attach(ks.device, &socket, &name, &backend) {
        Ok(Attached { .. }) => State::Attached,
        Err(KernelError::NoNbd { device }) => {
            tracing::info!(%device, "this kernel has no nbd module; the device is served on the export only");
            State::Failed("this kernel has no nbd module".into())
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot attach the kernel NBD client");
            State::Failed(e.to_string())
        }
    };
}

/// The daemon exits on a signal: disconnect the kernel device whoever holds it (a held
/// device then fails I/O, as it would once the export is gone anyway).
pub(super) fn detach_for_exit(slot: &mut Slot) {
    if !slot.kernel.attached() {
        return;
    }
    let device = slot.kernel.device;
    if matches!(kernel::claim(device), Ok(None)) {
        tracing::warn!(%device, "the kernel device is held; detaching it anyway, its users get I/O errors");
    }
    match kernel::disconnect(device) {
        Ok(()) => {
            if let Err(e) = kernel::wait_released(device, RELEASE_TIMEOUT) {
                tracing::warn!(error = %e, "kernel device not released");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot detach the kernel device"),
    }
    slot.kernel.state = State::Idle;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn view(device: Option<&str>, minor: u32) -> VolumeView {
        VolumeView {
            volume: 0,
            device_path: device.map(PathBuf::from),
            minor,
            disk: PathBuf::from("/dev/null"),
            meta_disk: crate::config::MetaDiskSpec::Internal,
            disk_opts: Default::default(),
        }
    }

    #[test]
    fn device_names_map_to_nbd() {
        assert_eq!(device_for(&view(Some("/dev/nbd3"), 0)).index, 3);
        assert_eq!(device_for(&view(Some("/dev/drbd2"), 2)).index, 2);
        assert_eq!(device_for(&view(Some("/dev/drbd_data"), 7)).index, 7);
        assert_eq!(device_for(&view(None, 5)).index, 5);
    }
}
