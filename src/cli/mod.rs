//! The `urbdadm` command tree.

/// Entry point of the `urbdadm` binary.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(20)
}
