//! `urbd`: the per-resource node daemon. All logic lives in `urbd::daemon`.
fn main() -> std::process::ExitCode {
    urbd::daemon::main()
}
