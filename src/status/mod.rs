//! Renderers of a running resource's state: DRBD 8.4's /proc/drbd text ([`proc`]), the
//! resync progress lines ([`progress`]), the `role`/`cstate`/`dstate` lines and the DRBD 9
//! style `status` ([`text`]), the `events2`-style stream ([`events`]). All pure functions of a [`ResourceStatus`]; JSON is the
//! model's serde form.

pub mod events;
pub mod model;
pub mod proc;
pub mod progress;
pub mod text;

pub use model::{
    Counters, LATENCY_BUCKETS_US, LatencyHistogram, ResourceStatus, SplitBrainStatus, SyncProgress,
    VolumeStatus,
};
