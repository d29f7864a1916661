//! DRBD 8.4's state checks (`is_valid_state` and the "old state was illegal as well" rule of
//! `_drbd_set_state`), for the states a node without a connected peer can be in.
//!
//! Reference: drbd-8.4 `drbd/drbd_state.c`, `is_valid_state()` and `_drbd_set_state()`.
//! The connected-only rules (resync, verify, two primaries) arrive with replication.

use super::refusal::Refusal;
use super::state::{ConnState, DiskState, Role};

/// The part of DRBD's `union drbd_state` that the checks look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// This node's role.
    pub role: Role,
    /// The peer's role (Unknown while not connected).
    pub peer: Role,
    /// This node's disk.
    pub disk: DiskState,
    /// The peer's disk (DUnknown while not connected, unless known to be Outdated).
    pub pdsk: DiskState,
    /// The connection.
    pub conn: ConnState,
}

/// DRBD's `enum drbd_fencing_p` (the `fencing` disk option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Fencing {
    /// `dont-care` (the default): no fencing.
    #[default]
    DontCare,
    /// `resource-only`: outdate the peer through the fence-peer handler.
    ResourceOnly,
    /// `resource-and-stonith`: also freeze I/O until the peer is fenced.
    ResourceAndStonith,
}

impl Fencing {
    /// Parses the option's value; anything unknown is `dont-care` (the configuration
    /// module has already refused invalid values).
    pub fn from_option(value: Option<&str>) -> Self {
        match value {
            Some("resource-only") => Fencing::ResourceOnly,
            Some("resource-and-stonith") => Fencing::ResourceAndStonith,
            _ => Fencing::DontCare,
        }
    }
}

/// What the checks need besides the state itself.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The fencing policy (only meaningful with a disk).
    pub fencing: Fencing,
    /// How many openers the device has (NBD clients).
    pub open_count: usize,
}

/// `is_valid_state()`: is `ns` a state DRBD allows (for the rules that apply without a
/// connected peer)?
pub fn is_valid_state(ns: &State, ctx: &Context) -> Result<(), Refusal> {
    let fencing = if ns.disk >= DiskState::Inconsistent {
        ctx.fencing
    } else {
        Fencing::DontCare
    };
    if ns.role == Role::Primary && ns.peer == Role::Primary && ns.conn >= ConnState::Connected {
        return Err(Refusal::TwoPrimaries);
    }
    if ns.role == Role::Secondary && ctx.open_count > 0 {
        return Err(Refusal::DeviceInUse);
    }
    if ns.role == Role::Primary && ns.conn < ConnState::Connected && ns.disk < DiskState::UpToDate {
        return Err(Refusal::NoUpToDateDisk);
    }
    if fencing >= Fencing::ResourceOnly
        && ns.role == Role::Primary
        && ns.conn < ConnState::Connected
        && ns.pdsk >= DiskState::DUnknown
    {
        return Err(Refusal::PrimaryNop);
    }
    if ns.role == Role::Primary
        && ns.disk <= DiskState::Inconsistent
        && ns.pdsk <= DiskState::Inconsistent
    {
        return Err(Refusal::NoUpToDateDisk);
    }
    if ns.role == Role::Primary && ns.disk < DiskState::UpToDate && ns.pdsk < DiskState::UpToDate {
        return Err(Refusal::NoUpToDateDisk);
    }
    if matches!(
        ns.conn,
        ConnState::Connected
            | ConnState::WFBitMapS
            | ConnState::SyncSource
            | ConnState::PausedSyncS
    ) && ns.disk == DiskState::Outdated
    {
        return Err(Refusal::ConnectedOutdates);
    }
    Ok(())
}

/// `_drbd_set_state()` without `CS_HARD`: `ns` must be valid, unless the old state was
/// invalid for the same reason already (then DRBD lets the change happen).
pub fn check_transition(os: &State, ns: &State, ctx: &Context) -> Result<(), Refusal> {
    match is_valid_state(ns, ctx) {
        Ok(()) => Ok(()),
        Err(e) if is_valid_state(os, ctx) == Err(e) => Ok(()),
        Err(e) => Err(e),
    }
}
