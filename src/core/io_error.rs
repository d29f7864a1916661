//! The `on-io-error` disk option: what a failed local read or write does to the disk
//! state (DRBD 8.4's `__drbd_chk_io_error_`).

/// DRBD's `enum drbd_io_error_p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnIoError {
    /// `pass_on`: the disk stays attached and becomes Inconsistent (if it was better); the
    /// request is answered from the peer where it can be.
    PassOn,
    /// `call-local-io-error`: as `detach`, and the `local-io-error` handler runs first.
    CallHelper,
    /// `detach` (the default): the disk goes Failed, then Diskless; a Primary goes on
    /// serving through an UpToDate peer.
    #[default]
    Detach,
}

impl OnIoError {
    /// Parses the option's value; anything unknown is `detach` (the configuration module
    /// has already refused invalid values).
    pub fn from_option(v: Option<&str>) -> OnIoError {
        match v {
            Some("pass_on") => OnIoError::PassOn,
            Some("call-local-io-error") => OnIoError::CallHelper,
            _ => OnIoError::Detach,
        }
    }
}

/// What [`crate::core::Volume::handle_local_io_error`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoErrorOutcome {
    /// There was no disk (already detached): nothing changed.
    NoDisk,
    /// `pass_on`: the disk stays; `inconsistent`: it just became Inconsistent.
    PassedOn {
        /// The disk state changed to Inconsistent now.
        inconsistent: bool,
    },
    /// The disk was detached ("Local IO failed in ... Detaching...").
    Detached {
        /// Run the `local-io-error` handler (`call-local-io-error`), before anything else.
        call_helper: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values() {
        assert_eq!(OnIoError::from_option(None), OnIoError::Detach);
        assert_eq!(OnIoError::from_option(Some("detach")), OnIoError::Detach);
        assert_eq!(OnIoError::from_option(Some("pass_on")), OnIoError::PassOn);
        assert_eq!(
            OnIoError::from_option(Some("call-local-io-error")),
            OnIoError::CallHelper
        );
    }
}
