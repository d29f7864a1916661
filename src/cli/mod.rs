//! The `urbdadm` command tree: drbdadm's commands, resolved against the configuration and
//! carried out by the library (metadata now; the node daemon in later versions).
//!
//! Two stages, as ripgrep does it: [`args`] is the flag table (no syscalls), [`context`]
//! resolves it against the configuration file and the node name; each `cmd_*` module then
//! does one family of commands.

pub mod args;
pub mod argv;
mod cmd_config;
mod cmd_daemon;
mod cmd_events;
mod cmd_generate;
mod cmd_meta;
mod cmd_sbsave;
pub mod context;
mod demo;
pub mod error;
mod output;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use context::Context;
use error::CliError;

/// Entry point of the `urbdadm` binary.
pub fn main() -> ExitCode {
    let argv = argv::normalize(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that exit 0.
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(u8::try_from(code).unwrap_or(error::exit::SYNTAX));
        }
    };
    init_tracing(cli.verbose);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("urbdadm: {e}");
            ExitCode::from(e.code())
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("URBD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// Runs one parsed command line.
pub fn run(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Dump(res) => cmd_config::dump(&Context::load(cli)?, &res.names),
        Command::CreateMd { force, res } => {
            cmd_meta::create_md(&Context::load(cli)?, &res.names, *force)
        }
        Command::DumpMd(res) => cmd_meta::dump_md(&Context::load(cli)?, &res.names),
        Command::ShowGi(res) => cmd_meta::show_gi(&Context::load(cli)?, &res.names),
        Command::GetGi(res) => cmd_meta::get_gi(&Context::load(cli)?, &res.names),
        Command::ApplyAl(res) => cmd_meta::apply_al(&Context::load(cli)?, &res.names),
        Command::Demo(args) => demo::run(args),
        Command::Generate { what } => cmd_generate::run(what, cli.dry_run),
        Command::Events { now, res } => cmd_events::run(&Context::load(cli)?, &res.names, *now),
        Command::InstallOcf { dir } => install_ocf(dir),
        Command::Up(res) => cmd_daemon::up(&Context::load(cli)?, &res.names),
        Command::Down(res) => cmd_daemon::down(&Context::load(cli)?, &res.names),
        Command::Attach(res) => {
            cmd_daemon::per_volume(&Context::load(cli)?, &res.names, "attach", |volume| {
                crate::control::Request::Attach { volume }
            })
        }
        Command::Detach(res) => {
            cmd_daemon::per_volume(&Context::load(cli)?, &res.names, "detach", |volume| {
                crate::control::Request::Detach { volume }
            })
        }
        Command::Primary { force, res } => {
            let what = if *force { "primary --force" } else { "primary" };
            cmd_daemon::per_volume(&Context::load(cli)?, &res.names, what, |volume| {
                crate::control::Request::Primary {
                    volume,
                    force: *force,
                }
            })
        }
        Command::Secondary(res) => {
            cmd_daemon::per_volume(&Context::load(cli)?, &res.names, "secondary", |volume| {
                crate::control::Request::Secondary { volume }
            })
        }
        Command::Role(res) => {
            cmd_daemon::show_lines(&Context::load(cli)?, &res.names, "role", |volume| {
                crate::control::Request::Role { volume }
            })
        }
        Command::Cstate(res) => {
            cmd_daemon::show_lines(&Context::load(cli)?, &res.names, "cstate", |volume| {
                crate::control::Request::Cstate { volume }
            })
        }
        Command::Dstate(res) => {
            cmd_daemon::show_lines(&Context::load(cli)?, &res.names, "dstate", |volume| {
                crate::control::Request::Dstate { volume }
            })
        }
        Command::Status { json, res } => {
            cmd_daemon::status(&Context::load(cli)?, &res.names, *json)
        }
        Command::Proc { json } => cmd_daemon::proc(cli.dry_run, *json),
        Command::Connect {
            discard_my_data,
            res,
        } => {
            let what = if *discard_my_data {
                "connect --discard-my-data"
            } else {
                "connect"
            };
            cmd_daemon::per_resource(&Context::load(cli)?, &res.names, what, || {
                crate::control::Request::Connect {
                    discard_my_data: *discard_my_data,
                }
            })
        }
        Command::Disconnect(res) => {
            cmd_daemon::per_resource(&Context::load(cli)?, &res.names, "disconnect", || {
                crate::control::Request::Disconnect
            })
        }
        Command::SplitBrainSaves { json, res } => cmd_sbsave::list(&res.names, *json),
        Command::RestoreSplitBrainSave { file, to, force } => {
            cmd_sbsave::restore(cli, file, to, *force)
        }
        Command::WaitConnect(res) => cmd_daemon::wait_connect(&Context::load(cli)?, &res.names),
        Command::Verify(res) => sync_cmd(cli, res, crate::core::SyncCmd::Verify, "verify"),
        Command::Invalidate(res) => {
            sync_cmd(cli, res, crate::core::SyncCmd::Invalidate, "invalidate")
        }
        Command::InvalidateRemote(res) => sync_cmd(
            cli,
            res,
            crate::core::SyncCmd::InvalidateRemote,
            "invalidate-remote",
        ),
        Command::PauseSync(res) => {
            sync_cmd(cli, res, crate::core::SyncCmd::PauseSync, "pause-sync")
        }
        Command::ResumeSync(res) => {
            sync_cmd(cli, res, crate::core::SyncCmd::ResumeSync, "resume-sync")
        }
        Command::Outdate(res) => cmd_meta::outdate(&Context::load(cli)?, &res.names),
        Command::InjectFault(f) => {
            let plan = crate::io::FaultPlan {
                read_errors: f.read_errors.clone(),
                write_errors: f.write_errors.clone(),
                flush_errors: f.flush_error,
                dead: f.dead,
            };
            cmd_daemon::per_volume(
                &Context::load(cli)?,
                &f.res.names,
                "inject-fault",
                |volume| crate::control::Request::InjectFault {
                    volume,
                    plan: plan.clone(),
                },
            )
        }
        Command::ResumeIo(res) => {
            cmd_daemon::per_volume(&Context::load(cli)?, &res.names, "resume-io", |volume| {
                crate::control::Request::ResumeIo { volume }
            })
        }
        other => Err(CliError::not_built(&other.describe(), arrives_with(other))),
    }
}

/// `verify`, `invalidate`, `invalidate-remote`, `pause-sync`, `resume-sync` on every
/// volume of the named resources.
fn sync_cmd(
    cli: &Cli,
    res: &args::Resources,
    cmd: crate::core::SyncCmd,
    what: &str,
) -> Result<(), CliError> {
    cmd_daemon::show_lines(&Context::load(cli)?, &res.names, what, |volume| {
        crate::control::Request::Sync { which: cmd, volume }
    })
}

/// The resource agents, as shipped in contrib/ocf: ocf:urbd:urbd and the stand-in for
/// /dev/nbd0 on kernels without nbd, ocf:urbd:nbdfuse-loop.
const OCF_AGENTS: [(&str, &str); 2] = [
    ("urbd", include_str!("../../contrib/ocf/urbd")),
    (
        "nbdfuse-loop",
        include_str!("../../contrib/ocf/nbdfuse-loop"),
    ),
];

/// `urbdadm install-ocf`: writes the agents into DIR, mode 0755, each replacing an older
/// one atomically (a temporary file renamed over it).
fn install_ocf(dir: &std::path::Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    let fail =
        |what: String, e: std::io::Error| CliError::exec(anyhow::Error::new(e).context(what));
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}", dir.display()), e))?;
    for (name, text) in OCF_AGENTS {
        let target = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(|e| fail(format!("writing {}", tmp.display()), e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| fail(format!("chmod {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &target)
            .map_err(|e| fail(format!("installing {}", target.display()), e))?;
        println!("installed {} (ocf:urbd:{name})", target.display());
    }
    Ok(())
}

/// Which part of urbd a command that is not served yet belongs to.
fn arrives_with(command: &Command) -> &'static str {
    match command {
        Command::Adjust(_) => "online reconfiguration (adjust)",
        _ => "a later version",
    }
}
