//! `urbdadm`: the drbdadm-compatible command line. All logic lives in `urbd::cli`.
fn main() -> std::process::ExitCode {
    urbd::cli::main()
}
