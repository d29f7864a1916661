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
}

impl Refusal {
    /// DRBD's number (`enum drbd_state_rv` or `enum drbd_ret_code`).
    pub fn number(self) -> i32 {
        match self {
            Refusal::TwoPrimaries => -1,
            Refusal::NoUpToDateDisk => -2,
            Refusal::PrimaryNop => -7,
            Refusal::IsDiskless => -11,
            Refusal::DeviceInUse => -12,
            Refusal::InTransientState => -18,
            Refusal::DiskConfigured => 124,
        }
    }

    /// The exit code drbdsetup 8.4 exits with for this error (and drbdadm passes on):
    /// 17 for "no UpToDate disk", 11 for other state changes, 10 for failures.
    pub fn exit_code(self) -> u8 {
        match self {
            Refusal::NoUpToDateDisk => 17,
            Refusal::DiskConfigured => 10,
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
        ] {
            assert!(r.to_string().contains(&format!("({})", r.number())), "{r}");
        }
    }
}
