//! The three parts of a volume's state that /proc/drbd shows: role, disk state and
//! connection state, with DRBD 8.4's names and DRBD's numeric order (its state checks
//! compare them with `<` and `>`, so the order is part of the meaning).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's role for one volume (`enum drbd_role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The peer's role while not connected.
    Unknown,
    /// May write; exports the device.
    Primary,
    /// Receives the Primary's writes; the device is not exported.
    Secondary,
}

impl Role {
    /// The role with DRBD's number `v` (as STATE carries it), if there is one.
    pub fn from_wire(v: u8) -> Option<Role> {
        [Role::Unknown, Role::Primary, Role::Secondary]
            .get(usize::from(v))
            .copied()
    }

    /// DRBD's name (`drbd_role_str`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "Unknown",
            Role::Primary => "Primary",
            Role::Secondary => "Secondary",
        }
    }
}

/// A disk state (`enum drbd_disk_state`), lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DiskState {
    /// No backing disk attached.
    Diskless,
    /// Being attached (metadata is read).
    Attaching,
    /// An I/O error happened; on the way to Diskless.
    Failed,
    /// Attached while connected; waiting for the handshake to decide.
    Negotiating,
    /// Data not usable (fresh disk, or a SyncTarget).
    Inconsistent,
    /// Consistent but known to be older than the peer's.
    Outdated,
    /// The peer's disk state while not connected.
    DUnknown,
    /// Consistent; whether it is the newest is not known.
    Consistent,
    /// Consistent and the newest data.
    UpToDate,
}

impl DiskState {
    /// The disk state with DRBD's number `v` (as STATE carries it), if there is one.
    pub fn from_wire(v: u8) -> Option<DiskState> {
        use DiskState::*;
        [
            Diskless,
            Attaching,
            Failed,
            Negotiating,
            Inconsistent,
            Outdated,
            DUnknown,
            Consistent,
            UpToDate,
        ]
        .get(usize::from(v))
        .copied()
    }

    /// DRBD's name (`drbd_disk_str`).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskState::Diskless => "Diskless",
            DiskState::Attaching => "Attaching",
            DiskState::Failed => "Failed",
            DiskState::Negotiating => "Negotiating",
            DiskState::Inconsistent => "Inconsistent",
            DiskState::Outdated => "Outdated",
            DiskState::DUnknown => "DUnknown",
            DiskState::Consistent => "Consistent",
            DiskState::UpToDate => "UpToDate",
        }
    }
}

/// A connection state (`enum drbd_conns`), in DRBD's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConnState {
    /// No network configuration: not trying to connect.
    StandAlone,
    /// Tearing the network configuration down.
    Disconnecting,
    /// Network configured, connection attempt about to start.
    Unconnected,
    /// The connection timed out.
    Timeout,
    /// The connection broke.
    BrokenPipe,
    /// The network failed.
    NetworkFailure,
    /// The peer misbehaved.
    ProtocolError,
    /// Listening for / connecting to the peer.
    WFConnection,
    /// Connected, exchanging parameters.
    WFReportParams,
    /// Closing the connection.
    TearDown,
    /// Connected, in sync.
    Connected,
    /// Full sync requested, this node the source.
    StartingSyncS,
    /// Full sync requested, this node the target.
    StartingSyncT,
    /// Bitmap exchange, this node the source.
    WFBitMapS,
    /// Bitmap exchange, this node the target.
    WFBitMapT,
    /// Waiting for the sync UUID.
    WFSyncUUID,
    /// Resyncing, this node the source.
    SyncSource,
    /// Resyncing, this node the target.
    SyncTarget,
    /// Resync paused, this node the source.
    PausedSyncS,
    /// Resync paused, this node the target.
    PausedSyncT,
    /// Online verify, this node the source.
    VerifyS,
    /// Online verify, this node the target.
    VerifyT,
    /// Congestion: replication replaced by out-of-sync tracking (source).
    Ahead,
    /// Congestion: the peer is Ahead.
    Behind,
}

impl ConnState {
    /// The connection state with DRBD's number `v` (as STATE carries it), if there is one.
    pub fn from_wire(v: u8) -> Option<ConnState> {
        use ConnState::*;
        [
            StandAlone,
            Disconnecting,
            Unconnected,
            Timeout,
            BrokenPipe,
            NetworkFailure,
            ProtocolError,
            WFConnection,
            WFReportParams,
            TearDown,
            Connected,
            StartingSyncS,
            StartingSyncT,
            WFBitMapS,
            WFBitMapT,
            WFSyncUUID,
            SyncSource,
            SyncTarget,
            PausedSyncS,
            PausedSyncT,
            VerifyS,
            VerifyT,
            Ahead,
            Behind,
        ]
        .get(usize::from(v))
        .copied()
    }

    /// DRBD's name (`drbd_conn_str`).
    pub fn as_str(self) -> &'static str {
        use ConnState::*;
        match self {
            StandAlone => "StandAlone",
            Disconnecting => "Disconnecting",
            Unconnected => "Unconnected",
            Timeout => "Timeout",
            BrokenPipe => "BrokenPipe",
            NetworkFailure => "NetworkFailure",
            ProtocolError => "ProtocolError",
            WFConnection => "WFConnection",
            WFReportParams => "WFReportParams",
            TearDown => "TearDown",
            Connected => "Connected",
            StartingSyncS => "StartingSyncS",
            StartingSyncT => "StartingSyncT",
            WFBitMapS => "WFBitMapS",
            WFBitMapT => "WFBitMapT",
            WFSyncUUID => "WFSyncUUID",
            SyncSource => "SyncSource",
            SyncTarget => "SyncTarget",
            PausedSyncS => "PausedSyncS",
            PausedSyncT => "PausedSyncT",
            VerifyS => "VerifyS",
            VerifyT => "VerifyT",
            Ahead => "Ahead",
            Behind => "Behind",
        }
    }

    /// Is a resync or verify running (the states /proc/drbd prints a progress bar for)?
    pub fn shows_progress(self) -> bool {
        matches!(
            self,
            ConnState::SyncSource | ConnState::SyncTarget | ConnState::VerifyS | ConnState::VerifyT
        )
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Role, DiskState, ConnState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_drbds() {
        assert!(DiskState::Inconsistent < DiskState::Outdated);
        assert!(DiskState::Outdated < DiskState::DUnknown);
        assert!(DiskState::Consistent < DiskState::UpToDate);
        assert!(ConnState::WFConnection < ConnState::Connected);
        assert!(ConnState::Connected < ConnState::SyncSource);
        assert_eq!(ConnState::Behind as u8, 23);
        assert_eq!(DiskState::UpToDate as u8, 8);
        assert_eq!(Role::Secondary as u8, 2);
    }

    #[test]
    fn names() {
        assert_eq!(DiskState::DUnknown.to_string(), "DUnknown");
        assert_eq!(ConnState::WFBitMapS.to_string(), "WFBitMapS");
        assert_eq!(Role::Unknown.to_string(), "Unknown");
    }
}
