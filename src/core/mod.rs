//! The replication state machine, sans I/O.
//!
//! This module is deterministic: it touches no disks, sockets, clocks or random number
//! generators. Inputs come in through `handle_*` methods (administrative requests, the
//! metadata the host read, the data path's open count); the time and any randomness are
//! arguments. Outputs leave through `poll_*` methods as [`Action`]s that the host must
//! perform, in order, before it reports a request as done (a superblock write before the
//! "ok" of the `primary` that caused it).
//!
//! It covers one node's roles, disk states, generation UUIDs and `MDF_*` flags with DRBD
//! 8.4's rules and refusal messages, and the connection setup with a peer up to the resync
//! decision ([`conn`]). The bitmap exchange and resync join it later.
//!
//! Files: `state` (the enums), `validity` (DRBD's state checks), `refusal` (errors with
//! DRBD's numbers and texts), `volume` (the per-volume machine), `action` (host requests),
//! `uuid_compare` (the connect-time resync decision from both nodes' generation UUIDs),
//! `conn` (the connection handshake: negotiation, authentication, parameters, decision).

mod action;
pub mod conn;
mod fence;
mod io_error;
mod refusal;
pub mod repl;
mod state;
mod sync_cmd;
mod uuid_compare;
mod validity;
mod volume;

#[cfg(test)]
mod tests;

pub use action::{Action, MdUpdate};
pub use conn::{
    ConnAdmin, ConnConfig, ConnEvent, ConnRefusal, Connection, LocalDisk, LostReason, NetTimers,
    TransportUp,
};
pub use fence::{FenceChange, FenceOutcome, FenceVerdict};
pub use io_error::{IoErrorOutcome, OnIoError};
pub use refusal::{Refusal, VolumeRefusal};
pub use state::{ConnState, DiskState, Role};
pub use sync_cmd::{SyncCmd, check_sync_cmd};
pub use uuid_compare::{
    AfterSb, Comparison, Decision, FF_WSAME, Handshake, HandshakeDecision, HandshakeInput,
    HandshakeRefusal, Link, PRO_VERSION_MAX, PRO_VERSION_NEW_BM_OFFSET, PRO_VERSION_UUID_REPAIR,
    Policies, Side, SplitBrainResolution, UUID_NEW_BM_OFFSET, sync_handshake, uuid_compare,
    uuid_flags,
};
pub use validity::{Context, Fencing, State, check_transition, is_valid_state};
pub use volume::{AdminCmd, AttachInfo, Outcome, Volume, VolumeConfig, flags_for};
