//! The state of a running resource as the daemon reports it: what every renderer
//! (/proc/drbd, `status`, `role`, JSON) reads. Serializable both ways: it travels over the
//! control socket.

use serde::{Deserialize, Serialize};

use crate::core::{ConnState, DiskState, Role};

/// /proc/drbd's counters for one minor (`ns`, `nr`, `dw`, `dr` in KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Sent to the peer, KiB.
    pub ns: u64,
    /// Received from the peer, KiB.
    pub nr: u64,
    /// Written to the local disk, KiB.
    pub dw: u64,
    /// Read from the local disk, KiB.
    pub dr: u64,
    /// Activity-log transactions written.
    pub al: u64,
    /// Bitmap blocks written.
    pub bm: u64,
    /// Local I/O in flight.
    pub lo: i64,
    /// Requests sent to the peer and not answered yet (plus resync requests).
    pub pe: i64,
    /// Requests from the peer not answered yet.
    pub ua: i64,
    /// Application requests accepted and not completed.
    pub ap: i64,
    /// Epochs on the fly.
    pub ep: i64,
}

/// Upper bounds of the ack-latency histogram's buckets, microseconds; a last bucket holds
/// everything slower (Prometheus' `+Inf`).
pub const LATENCY_BUCKETS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// How long application writes, trims and flushes took from arrival at the replication
/// session to completion (for protocol C: both disks have them).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Requests per bucket of [`LATENCY_BUCKETS_US`] (not cumulative), plus the `+Inf`
    /// bucket: `LATENCY_BUCKETS_US.len() + 1` entries once anything was observed.
    pub counts: Vec<u64>,
    /// The sum of all latencies, microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Counts one request that took `us` microseconds.
    pub fn observe(&mut self, us: u64) {
        if self.counts.len() != LATENCY_BUCKETS_US.len() + 1 {
            self.counts = vec![0; LATENCY_BUCKETS_US.len() + 1];
        }
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A running resync or verify, for the progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProgress {
    /// Bits (4 KiB blocks) to sync in total.
    pub total_bits: u64,
    /// Bits still to sync.
    pub left_bits: u64,
    /// Seconds since the rolling mark used for the short-term speed.
    pub mark_age_secs: u64,
    /// Bits still to sync at that mark.
    pub mark_left_bits: u64,
    /// Seconds the resync has been running, paused time excluded.
    pub elapsed_secs: u64,
    /// The configured/controlled resync rate, KiB/s (`want:`).
    pub want_kib_per_sec: u64,
}

/// One volume of a running resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStatus {
    /// Volume number.
    pub volume: u32,
    /// Minor number.
    pub minor: u32,
    /// This node's role.
    pub role: Role,
    /// The peer's role.
    pub peer_role: Role,
    /// This node's disk.
    pub disk: DiskState,
    /// The peer's disk.
    pub peer_disk: DiskState,
    /// The connection.
    pub cstate: ConnState,
    /// Replication protocol letter, when a network configuration is active.
    pub protocol: Option<char>,
    /// I/O suspended.
    pub suspended: bool,
    /// `pause-sync` on this node (proc's `u`).
    #[serde(default)]
    pub user_isp: bool,
    /// `pause-sync` on the peer (proc's `p`).
    #[serde(default)]
    pub peer_isp: bool,
    /// Write ordering: `b`, `f`, `d` or `n`.
    pub write_ordering: char,
    /// Counters.
    pub counters: Counters,
    /// Known out-of-sync data, KiB.
    pub oos_kib: u64,
    /// Device size, sectors (0 while Diskless).
    pub size_sect: u64,
    /// Current, bitmap and history UUIDs, when a disk is attached.
    pub uuids: Option<[u64; 4]>,
    /// `MDF_*` flags, when a disk is attached.
    pub md_flags: Option<u32>,
    /// Openers of the exported device.
    pub open_clients: usize,
    /// A running resync or verify.
    pub sync: Option<SyncProgress>,
    /// Where NBD clients connect (`nbd+unix:///RES?socket=PATH`), while the disk is attached.
    #[serde(default)]
    pub export: Option<String>,
    /// The configured kernel device and whether it is attached, in words (`/dev/nbd0
    /// attached`, `/dev/nbd0 not attached: this kernel has no nbd module; use the export`).
    #[serde(default)]
    pub kernel_device: Option<String>,
    /// The last connection attempt found a split brain that no policy resolved: the
    /// resource stays StandAlone until the operator picks a victim (`connect
    /// --discard-my-data` there). Cleared by the next successful handshake.
    #[serde(default)]
    pub split_brain: Option<SplitBrainStatus>,
    /// Application request latency through the replication session (absent without a
    /// peer configured).
    #[serde(default)]
    pub ack_latency: Option<LatencyHistogram>,
    /// This volume attached as a Primary that had lost its peer (`MDF_PRIMARY_IND` without
    /// `MDF_CONNECTED_IND`: a degraded cluster that crashed) and has not been connected
    /// since: `wait-connect` uses `degr-wfc-timeout` (DRBD's `USE_DEGR_WFC_T`).
    #[serde(default)]
    pub wfc_degraded: bool,
}

/// A split brain found at connect time and not resolved (DRBD logs "Split-Brain detected
/// but unresolved, dropping connection!").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBrainStatus {
    /// The peer's node name.
    pub peer: String,
    /// What this node changed since the two were last connected (its bitmap), KiB.
    pub local_changed_kib: u64,
    /// What the peer changed (the bitmap weight it sent with its UUIDs), KiB.
    pub peer_changed_kib: u64,
    /// This node's UUIDs (current, bitmap, history 1, history 2) at the handshake.
    pub local_uuids: [u64; 4],
    /// The peer's.
    pub peer_uuids: [u64; 4],
}

/// A running resource on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    /// Resource name.
    pub resource: String,
    /// The node the daemon runs as.
    pub node: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The daemon's version.
    pub version: String,
    /// Volumes in volume order.
    pub volumes: Vec<VolumeStatus>,
}

impl ResourceStatus {
    /// The resource's role as DRBD 9 reports it: Primary if any volume is.
    pub fn role(&self) -> Role {
        if self.volumes.iter().any(|v| v.role == Role::Primary) {
            Role::Primary
        } else {
            Role::Secondary
        }
    }
}
