//! What a failed `urbdadm` command reports, and its exit code (drbdadm's codes).

use std::fmt;

/// drbdadm's exit codes (drbd-utils `drbdadm.h`), which scripts around DRBD test for.
pub mod exit {
    /// The named resource is not defined for this host (what drbdadm-84 returns).
    pub const NOT_DEFINED: u8 = 1;
    /// Command-line syntax error (clap's own code).
    pub const SYNTAX: u8 = 2;
    /// Usage error: a resource that does not exist, a bad combination of arguments.
    pub const USAGE: u8 = 3;
    /// The configuration file is invalid.
    pub const CONFIG_INVALID: u8 = 10;
    /// The command ran and failed, was refused, or is not available yet.
    pub const EXEC_ERROR: u8 = 20;
    /// drbdsetup's code for a failure reported by DRBD (`Failure: (1xx) ...`), also used
    /// for a resource that is not up (drbdsetup's "No such resource" / "Device minor not
    /// allocated").
    pub const FAILURE: u8 = 10;
    /// drbdsetup's code for a refused state change other than "no UpToDate data".
    pub const STATE_CHANGE_FAILED: u8 = 11;
    /// drbdsetup's code for "(-2) Need access to UpToDate data".
    pub const NO_UP_TO_DATE_DISK: u8 = 17;
}

/// A failed command: a message for the operator and drbdadm's exit code.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    error: anyhow::Error,
}

impl CliError {
    /// A usage error (exit 3).
    pub fn usage(msg: impl fmt::Display) -> Self {
        Self {
            code: exit::USAGE,
            error: anyhow::anyhow!("{msg}"),
        }
    }

    /// A command that ran and failed or was refused (exit 20).
    pub fn exec(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: exit::EXEC_ERROR,
            error: error.into(),
        }
    }

    /// A command of drbdadm's that urbd does not serve yet (exit 20). Says so plainly.
    pub fn not_built(command_line: &str, arrives_with: &str) -> Self {
        Self {
            code: exit::EXEC_ERROR,
            error: anyhow::anyhow!(
                "`urbdadm {command_line}` is not available yet in this version of urbd \
                 (it arrives with {arrives_with}); nothing was done"
            ),
        }
    }

    /// A resource or volume that the configuration does not define for this host (exit 1, as
    /// `drbdadm-84` exits for "'RES' not defined in your config (for this host).").
    pub fn not_defined(msg: impl fmt::Display) -> Self {
        Self {
            code: exit::NOT_DEFINED,
            error: anyhow::anyhow!("{msg}"),
        }
    }

    /// A failure with an explicit drbdadm/drbdsetup exit code.
    pub fn with_code(code: u8, msg: impl fmt::Display) -> Self {
        Self {
            code,
            error: anyhow::anyhow!("{msg}"),
        }
    }

    /// The process exit code.
    pub fn code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self {
            code: e.exit_code(),
            error: e.into(),
        }
    }
}

impl From<crate::meta::MetaError> for CliError {
    fn from(e: crate::meta::MetaError) -> Self {
        Self::exec(e)
    }
}
