//! `urbd`: the per-resource node daemon.
fn main() -> std::process::ExitCode {
    eprintln!("urbd: the node daemon is not built yet (see issue 4); nothing was started");
    std::process::ExitCode::from(20)
}
