//! The kernel's NBD client: make `/dev/nbdN` a block device backed by one of our exports.
//!
//! How (the way `nbd-client -N` does it with netlink, include/uapi/linux/nbd-netlink.h):
//! 1. connect to the export's unix socket with our own [`Client`] and negotiate with
//!    `NBD_OPT_GO`, without structured replies (the kernel only reads simple replies);
//! 2. resolve the generic netlink family `nbd` (`CTRL_CMD_GETFAMILY`; ENOENT means the
//!    kernel has no nbd module loaded);
//! 3. send `NBD_CMD_CONNECT` with the device index, the size and flags the server
//!    advertised and the connected socket's descriptor; the kernel takes its own reference
//!    to the socket and from then on sends the requests, so ours is closed.
//!
//! On the server's side the kernel is one more client of the export: it shows in the
//! counters and in `Gate::open_clients`. [`disconnect`] (`NBD_CMD_DISCONNECT`) makes the
//! kernel send `NBD_CMD_DISC`, shut the socket down and fail what it still queued, so the
//! caller first makes sure nobody uses the device ([`claim`]).
//!
//! Neither `NBD_ATTR_TIMEOUT` nor `NBD_ATTR_DEAD_CONN_TIMEOUT` is set, on purpose: the server
//! is a local daemon that answers every request, however slow the disk; with no timeout
//! the kernel waits (and warns every 30 s) instead of failing a slow request, and when the
//! daemon dies its socket closes and the kernel fails I/O at once (dead-connection timeout 0).

pub mod netlink;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use self::netlink::{Message, NetlinkError, Socket};
use super::{Client, ClientError};

/// `NBD_GENL_FAMILY_NAME`.
const FAMILY: &str = "nbd";
/// `NBD_GENL_VERSION`.
const VERSION: u8 = 1;

/// `NBD_CMD_*` of the nbd generic netlink family.
mod cmd {
    pub(super) const CONNECT: u8 = 1;
    pub(super) const DISCONNECT: u8 = 2;
}

/// `NBD_ATTR_*` (the kernel's policy: INDEX is u32, the sizes, timeouts and flags u64,
/// SOCKETS nested, BACKEND_IDENTIFIER a string).
mod attr {
    pub(super) const INDEX: u16 = 1;
    pub(super) const SIZE_BYTES: u16 = 2;
    pub(super) const BLOCK_SIZE_BYTES: u16 = 3;
    pub(super) const SERVER_FLAGS: u16 = 5;
    pub(super) const SOCKETS: u16 = 7;
    pub(super) const BACKEND_IDENTIFIER: u16 = 10;
    /// `NBD_SOCK_ITEM`, inside SOCKETS.
    pub(super) const SOCK_ITEM: u16 = 1;
    /// `NBD_SOCK_FD` (u32), inside SOCK_ITEM.
    pub(super) const SOCK_FD: u16 = 1;
}

/// How long the kernel may take to answer one netlink request.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(10);

/// One kernel NBD device, `/dev/nbd<index>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NbdDevice {
    /// The device index (the N of /dev/nbdN).
    pub index: u32,
}

impl NbdDevice {
    /// The device node.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/nbd{}", self.index))
    }

    /// The device's sysfs directory.
    fn sys(&self) -> PathBuf {
        PathBuf::from(format!("/sys/block/nbd{}", self.index))
    }

    /// Is a connection configured (the kernel keeps `pid` in sysfs while it is)?
    pub fn is_connected(&self) -> bool {
        self.sys().join("pid").exists()
    }

    /// The size the kernel gives the device, bytes (0 while disconnected).
    pub fn size_bytes(&self) -> Option<u64> {
        let s = std::fs::read_to_string(self.sys().join("size")).ok()?;
        s.trim().parse::<u64>().ok().map(|sect| sect * 512)
    }

    /// What `NBD_ATTR_BACKEND_IDENTIFIER` said at connect time (sysfs `backend`).
    pub fn backend(&self) -> Option<String> {
        let s = std::fs::read_to_string(self.sys().join("backend")).ok()?;
        Some(s.trim_end().to_owned())
    }

    /// The process that connected the device (sysfs `pid`).
    fn connector_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.sys().join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl std::fmt::Display for NbdDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/dev/nbd{}", self.index)
    }
}

/// Why the kernel device could not be attached or detached. Every variant names it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The kernel has no `nbd` generic netlink family: no nbd module.
    #[error("{device}: this kernel has no nbd module")]
    NoNbd {
        /// The device.
        device: NbdDevice,
    },
    /// The device is connected to something else (the kernel answered EBUSY).
    #[error("{device} is already in use by another NBD connection")]
    Busy {
        /// The device.
        device: NbdDevice,
    },
    /// The kernel refused or netlink failed.
    #[error("{device}: netlink {what}: {source}")]
    Netlink {
        /// The device.
        device: NbdDevice,
        /// The request (`NBD_CMD_CONNECT`, ...).
        what: &'static str,
        /// The failure.
        source: NetlinkError,
    },
    /// Our own handshake with the export failed.
    #[error("{device}: handshake with the export failed: {source}")]
    Handshake {
        /// The device.
        device: NbdDevice,
        /// The failure.
        source: ClientError,
    },
    /// The export advertises something the kernel client cannot take.
    #[error("{device}: {what}")]
    Unsupported {
        /// The device.
        device: NbdDevice,
        /// What.
        what: String,
    },
    /// The kernel did not let go of the device in time after a disconnect.
    #[error("{device} is still connected {waited:?} after the disconnect")]
    NotReleased {
        /// The device.
        device: NbdDevice,
        /// How long we waited.
        waited: Duration,
    },
}

/// A quick look, without netlink, whether this kernel has nbd: the module is loaded (or
/// built in) or a device node exists.
pub fn kernel_has_nbd() -> bool {
    Path::new("/sys/module/nbd").exists() || Path::new("/dev/nbd0").exists()
}

/// Asks the kernel to load nbd (`modprobe nbd`), waiting at most 5 seconds. Returns whether
/// nbd is there afterwards. Cheap where there is no modprobe or no modules.
pub fn try_load_module() -> bool {
    if kernel_has_nbd() {
        return true;
    }
    let child = std::process::Command::new("modprobe")
        .arg("nbd")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    kernel_has_nbd()
}

/// The kernel block size for an export: the server's minimum block size, at least 512
/// (DRBD's devices have 512-byte logical blocks, and so does ours unless the backing store
/// demands more). The kernel takes powers of two from 512 to the page size.
fn block_size(device: NbdDevice, min_block: u32) -> Result<u64, KernelError> {
    let bs = u64::from(min_block.max(512));
    if !bs.is_power_of_two() || bs > 4096 {
        return Err(KernelError::Unsupported {
            device,
            what: format!(
                "the export's minimum block size {min_block} is not one the kernel takes"
            ),
        });
    }
    Ok(bs)
}

/// The kernel device, attached to an export. Dropping it does not detach the device
/// (a daemon that crashes leaves the kernel failing I/O, which [`attach`] clears up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The device.
    pub device: NbdDevice,
    /// Its size, bytes.
    pub size_bytes: u64,
}

/// Connects `device` to the export `export` served on the unix socket `socket`.
///
/// `backend` is shown by the kernel in `/sys/block/nbdN/backend` and identifies our
/// attachments: a device left connected by a daemon that died (same `backend`, its
/// process gone) is disconnected first.
pub fn attach(
    device: NbdDevice,
    socket: &Path,
    export: &str,
    backend: &str,
) -> Result<Attached, KernelError> {
    let nl_err = |what, source| KernelError::Netlink {
        device,
        what,
        source,
    };
    let mut nl = Socket::open(NETLINK_TIMEOUT).map_err(|e| nl_err("socket", e))?;
    let family = nl
        .family_id(FAMILY)
        .map_err(|e| nl_err("CTRL_CMD_GETFAMILY", e))?
        .ok_or(KernelError::NoNbd { device })?;

    if device.is_connected() && device.backend().as_deref() == Some(backend) {
        let alive = device
            .connector_pid()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
        if !alive {
            tracing::warn!(%device, backend, "disconnecting a stale attachment of a daemon that is gone");
            send_disconnect(&mut nl, family, device)?;
            wait_released(device, Duration::from_secs(5))?;
        }
    }

    let client = Client::connect_unix(socket, export, false)
        .map_err(|source| KernelError::Handshake { device, source })?;
    let info = *client.info();
    let bs = block_size(device, info.min_block)?;
    let stream = client.into_unix_stream().ok_or(KernelError::Unsupported {
        device,
        what: "not a unix socket connection".into(),
    })?;
    // The kernel reads this socket with the socket's own receive timeout: left at our
    // client's 60 s, an idle device would be declared dead after a minute.
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|e| KernelError::Handshake {
            device,
            source: ClientError::Io(e),
        })?;
    let fd = u32::try_from(stream.as_raw_fd()).map_err(|_| KernelError::Unsupported {
        device,
        what: "negative socket descriptor".into(),
    })?;
    let mut msg = Message::new(family, cmd::CONNECT, VERSION);
    msg.u32(attr::INDEX, device.index)
        .u64(attr::SIZE_BYTES, info.size)
        .u64(attr::BLOCK_SIZE_BYTES, bs)
        .u64(attr::SERVER_FLAGS, u64::from(info.flags))
        .string(attr::BACKEND_IDENTIFIER, backend)
        .begin_nest(attr::SOCKETS)
        .begin_nest(attr::SOCK_ITEM)
        .u32(attr::SOCK_FD, fd)
        .end_nest()
        .end_nest();
    match nl.request(&mut msg) {
        Ok(_) => {}
        Err(NetlinkError::Kernel(e)) if e == libc::EBUSY => {
            return Err(KernelError::Busy { device });
        }
        Err(e) => return Err(nl_err("NBD_CMD_CONNECT", e)),
    }
    // The kernel holds its own reference to the socket now.
    drop(stream);
    tracing::info!(%device, size = info.size, block_size = bs, flags = info.flags, "kernel NBD client attached");
    Ok(Attached {
        device,
        size_bytes: info.size,
    })
}

fn send_disconnect(nl: &mut Socket, family: u16, device: NbdDevice) -> Result<(), KernelError> {
    let mut msg = Message::new(family, cmd::DISCONNECT, VERSION);
    msg.u32(attr::INDEX, device.index);
    nl.request(&mut msg)
        .map(drop)
        .map_err(|source| KernelError::Netlink {
            device,
            what: "NBD_CMD_DISCONNECT",
            source,
        })
}

/// Disconnects `device` (`NBD_CMD_DISCONNECT`): the kernel sends `NBD_CMD_DISC`, shuts its
/// socket down and fails whatever is still queued, so [`claim`] the device first.
pub fn disconnect(device: NbdDevice) -> Result<(), KernelError> {
    let mut nl = Socket::open(NETLINK_TIMEOUT).map_err(|source| KernelError::Netlink {
        device,
        what: "socket",
        source,
    })?;
    let family = nl
        .family_id(FAMILY)
        .map_err(|source| KernelError::Netlink {
            device,
            what: "CTRL_CMD_GETFAMILY",
            source,
        })?
        .ok_or(KernelError::NoNbd { device })?;
    send_disconnect(&mut nl, family, device)
}

/// Waits until the kernel has let go of `device` (its connection is gone from sysfs).
pub fn wait_released(device: NbdDevice, limit: Duration) -> Result<(), KernelError> {
    let start = Instant::now();
    while device.is_connected() {
        if start.elapsed() >= limit {
            return Err(KernelError::NotReleased {
                device,
                waited: limit,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The device opened exclusively: while this lives nobody can mount it or claim it
/// otherwise, so a disconnect cannot pull it from under a new user.
#[derive(Debug)]
pub struct Claim {
    _file: File,
}

/// Opens `device` with `O_EXCL`. `Ok(None)`: someone holds it (mounted, in a device-mapper
/// or md array, or opened with O_EXCL by a program), which is DRBD's "held open". A plain
/// open without O_EXCL is not seen this way.
pub fn claim(device: NbdDevice) -> io::Result<Option<Claim>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(device.path())
    {
        Ok(f) => Ok(Some(Claim { _file: f })),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_the_kernel_takes() {
        let d = NbdDevice { index: 3 };
        assert_eq!(block_size(d, 1).unwrap(), 512);
        assert_eq!(block_size(d, 4096).unwrap(), 4096);
        let e = block_size(d, 8192).unwrap_err().to_string();
        assert!(e.starts_with("/dev/nbd3: "), "{e}");
        assert!(block_size(d, 1000).is_err());
    }

    #[test]
    fn errors_name_the_device() {
        let d = NbdDevice { index: 0 };
        assert_eq!(
            KernelError::NoNbd { device: d }.to_string(),
            "/dev/nbd0: this kernel has no nbd module"
        );
        assert_eq!(
            KernelError::Busy { device: d }.to_string(),
            "/dev/nbd0 is already in use by another NBD connection"
        );
        let e = KernelError::Netlink {
            device: d,
            what: "NBD_CMD_CONNECT",
            source: NetlinkError::Kernel(libc::EINVAL),
        };
        assert!(
            e.to_string()
                .starts_with("/dev/nbd0: netlink NBD_CMD_CONNECT: the kernel answered"),
            "{e}"
        );
    }
}
