//! What a [`Connection`](super::Connection) is configured with: the `net` section's timers
//! and the settings both peers must agree on, plus the local disk as the host last saw it.

use std::time::Duration;

use crate::meta::Uuids;
use crate::wire::{AfterSbCode, WireProtocol};

use super::super::state::{DiskState, Role};
use super::super::uuid_compare::{AfterSb, Policies};

/// The `net` timers, with DRBD 8.4's defaults (`drbd_limits.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetTimers {
    /// `connect-int` (default 10 s): time between connection attempts, and how long a
    /// handshake may take before the transport is given up.
    pub connect_int: Duration,
    /// `ping-int` (default 10 s): a PING goes out this long after the previous one.
    pub ping_int: Duration,
    /// `ping-timeout` (default 500 ms): the PING_ACK must arrive within this.
    pub ping_timeout: Duration,
    /// `timeout` (default 6 s): the peer's answer to a data request. Kept for the
    /// replication code; the handshake does not use it.
    pub timeout: Duration,
}

impl Default for NetTimers {
    fn default() -> NetTimers {
        NetTimers {
            connect_int: Duration::from_secs(10),
            ping_int: Duration::from_secs(10),
            ping_timeout: Duration::from_millis(500),
            timeout: Duration::from_secs(6),
        }
    }
}

/// `cram-hmac-alg` and `shared-secret`. Only `sha256` is implemented (HMAC-SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `shared-secret`.
    pub shared_secret: Vec<u8>,
}

/// A connection's configuration (one resource, one peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// The peer's name as the resource file gives it (`on <host>`), for messages.
    pub peer_name: String,
    /// Timers.
    pub timers: NetTimers,
    /// `cram-hmac-alg`/`shared-secret`; `None`: no authentication.
    pub auth: Option<AuthConfig>,
    /// `protocol`.
    pub protocol: WireProtocol,
    /// after-sb policies, `always-asbp`, `rr-conflict`.
    pub policies: Policies,
    /// `allow-two-primaries`.
    pub two_primaries: bool,
    /// `data-integrity-alg` (empty: none).
    pub integrity_alg: String,
    /// `csums-alg` (empty: none; urbd: crc32c).
    pub csums_alg: String,
    /// `verify-alg` (empty: none; urbd: crc32c).
    pub verify_alg: String,
}

impl ConnConfig {
    /// DRBD's defaults: protocol C, no authentication, every policy `disconnect`.
    pub fn new(peer_name: impl Into<String>) -> ConnConfig {
        ConnConfig {
            peer_name: peer_name.into(),
            timers: NetTimers::default(),
            auth: None,
            protocol: WireProtocol::C,
            policies: Policies::default(),
            two_primaries: false,
            integrity_alg: String::new(),
            csums_alg: String::new(),
            verify_alg: String::new(),
        }
    }
}

pub(super) fn code(p: AfterSb) -> AfterSbCode {
    AfterSbCode(p as u32)
}

/// The local volume as the host sees it when the handshake runs (the superblock and the
/// volume state machine own these; the connection only reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDisk {
    /// Generation UUIDs (bit 0 of `current` set while Primary).
    pub uuids: Uuids,
    /// Role.
    pub role: Role,
    /// Disk state.
    pub disk: DiskState,
    /// DRBD's `CRASHED_PRIMARY` device bit.
    pub crashed_primary: bool,
    /// Bits set in the bitmap.
    pub oos_bits: u64,
    /// Usable size of the backing disk, sectors.
    pub backing_sect: u64,
    /// `disk { size }`, sectors (0: none).
    pub user_sect: u64,
    /// The size in use (last agreed size), sectors (0: never agreed).
    pub current_sect: u64,
}
