//! Why the core refuses an administrative request: DRBD's state-change errors
//! (`SS_*`, negative) and configuration failures (`ERR_*`, 100 and up), with the numbers
//! and texts drbdsetup prints, so operators and scripts see what DRBD would tell them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A refused request. Nothing was changed, in memory or on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// `SS_TWO_PRIMARIES` (-1): the peer is Primary and dual-primary is not allowed.
    #[error("State change failed: (-1) Multiple primaries not allowed by config")]
    TwoPrimaries,
    /// `SS_NO_UP_TO_DATE_DISK` (-2): promotion (or detach of a Primary) would leave no
    /// access to UpToDate data. `primary --force` overrides it for Inconsistent and
    /// Outdated disks.
    #[error("State change failed: (-2) Need access to UpToDate data")]
    NoUpToDateDisk,
    /// `SS_CONNECTED_OUTDATES` (-6): `outdate` while Connected (the peer would not know).
    #[error("State change failed: (-6) Refusing to be Outdated while Connected")]
    ConnectedOutdates,
    /// `SS_LOWER_THAN_OUTDATED` (-16): `outdate` of a disk that is Inconsistent or worse.
    #[error("State change failed: (-16) Disk state is lower than outdated")]
    LowerThanOutdated,
    /// `SS_PRIMARY_NOP` (-7): fencing is configured and the peer could not be outdated.
    #[error("State change failed: (-7) Refusing to be Primary while peer is not outdated")]
    PrimaryNop,
    /// `SS_IS_DISKLESS` (-11): the request needs a local disk.
    #[error(
        "State change failed: (-11) Device is diskless, the requested operation requires a disk"
    )]
    IsDiskless,
    /// `SS_DEVICE_IN_USE` (-12): demotion while the device is open (an NBD client is
    /// connected).
    #[error("State change failed: (-12) Device is held open by someone")]
    DeviceInUse,
    /// `SS_IN_TRANSIENT_STATE` (-18): retry after the next state change.
    #[error("State change failed: (-18) In transient state, retry after next state change")]
    InTransientState,
    /// `ERR_DISK_CONFIGURED` (124): attach while a disk is attached.
    #[error("Failure: (124) Device is attached to a disk (use detach first)")]
    DiskConfigured,
    /// `SS_RESYNC_RUNNING` (-8): verify or invalidate while a resync or verify runs.
    #[error("State change failed: (-8) Can not start OV/resync since it is already active")]
    ResyncRunning,
    /// `SS_NO_VERIFY_ALG` (-14): verify without `verify-alg` in the net section.
    #[error("State change failed: (-14) Need a verify algorithm to start online verify")]
    NoVerifyAlg,
    /// `SS_NEED_CONNECTION` (-15): verify or invalidate while not Connected.
    #[error("State change failed: (-15) Need a connection to start verify or resync")]
    NeedConnection,
    /// `ERR_PAUSE_IS_SET` (134): pause-sync twice.
    #[error("Failure: (134) Sync-pause flag is already set")]
    PauseIsSet,
    /// `ERR_PAUSE_IS_CLEAR` (135): resume-sync without pause-sync.
    #[error("Failure: (135) Sync-pause flag is already cleared")]
    PauseIsClear,
    /// urbd's own: `invalidate` on the Primary, or `invalidate-remote` towards it, would
    /// throw away the data being served (DRBD 8.4 resyncs under a Primary and reads the
    /// missing blocks over the network; urbd does not resync under a Primary). Demote
    /// first.
    #[error(
        "State change failed: (-2) Need access to UpToDate data: this node is Primary and serves this data; demote it first"
    )]
    InvalidatePrimary,
    /// As [`Refusal::InvalidatePrimary`], for `invalidate-remote` while the peer is
    /// Primary.
    #[error(
        "State change failed: (-2) Need access to UpToDate data: the peer is Primary and serves this data; demote it first"
    )]
    InvalidateRemotePrimary,
}

impl Refusal {
    /// DRBD's number (`enum drbd_state_rv` or `enum drbd_ret_code`).
    pub fn number(self) -> i32 {
        match self {
            Refusal::TwoPrimaries => -1,
            Refusal::NoUpToDateDisk => -2,
            Refusal::PrimaryNop => -7,
            Refusal::ConnectedOutdates => -6,
            Refusal::LowerThanOutdated => -16,
            Refusal::IsDiskless => -11,
            Refusal::DeviceInUse => -12,
            Refusal::InTransientState => -18,
            Refusal::DiskConfigured => 124,
            Refusal::ResyncRunning => -8,
            Refusal::NoVerifyAlg => -14,
            Refusal::NeedConnection => -15,
            Refusal::PauseIsSet => 134,
            Refusal::PauseIsClear => 135,
            Refusal::InvalidatePrimary | Refusal::InvalidateRemotePrimary => -2,
        }
    }

    /// The exit code drbdsetup 8.4 exits with for this error (and drbdadm passes on):
    /// 17 for "no UpToDate disk", 5 for "lower than outdated", 11 for other state
    /// changes, 10 for failures.
    pub fn exit_code(self) -> u8 {
        match self {
            Refusal::NoUpToDateDisk => 17,
            Refusal::LowerThanOutdated => 5,
            Refusal::DiskConfigured | Refusal::PauseIsSet | Refusal::PauseIsClear => 10,
            _ => 11,
        }
    }
}

/// A refusal for one volume, printed as drbdsetup prints it: `MINOR: TEXT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRefusal {
    /// The volume's minor number (drbdsetup's object name).
    pub minor: u32,
    /// Why.
    pub refusal: Refusal,
}

impl fmt::Display for VolumeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.minor, self.refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_drbdsetups() {
        let r = VolumeRefusal {
            minor: 0,
            refusal: Refusal::NoUpToDateDisk,
        };
        assert_eq!(
            r.to_string(),
            "0: State change failed: (-2) Need access to UpToDate data"
        );
        assert_eq!(Refusal::NoUpToDateDisk.exit_code(), 17);
        assert_eq!(Refusal::DeviceInUse.exit_code(), 11);
        for r in [
            Refusal::TwoPrimaries,
            Refusal::NoUpToDateDisk,
            Refusal::PrimaryNop,
            Refusal::IsDiskless,
            Refusal::DeviceInUse,
            Refusal::InTransientState,
            Refusal::DiskConfigured,
            Refusal::ConnectedOutdates,
            Refusal::LowerThanOutdated,
        ] {
            assert!(r.to_string().contains(&format!("({})", r.number())), "{r}");
        }
    }
}
