//! The node daemon `urbd`: one process per resource and node. It attaches the volumes'
//! disks, keeps every volume's state in the sans-IO [`crate::core`], answers `urbdadm`
//! on the control socket, keeps `proc_drbd` current, and (later) runs the data path and
//! the peer connection.
//!
//! Files: `args` (command line), `launch` (background start with a readiness report),
//! `notify` (systemd's `READY=1`),
//! `disk` (attach checks), `files` (lock, pid, status files), `runtime` (requests ->
//! core -> I/O; `runtime/kernel`: /dev/nbdN attached while a volume serves), `server` (socket, signals, event loop), `export` (the seam to the data
//! path), `error`.

pub mod access;
pub mod args;
pub mod disk;
pub mod error;
pub mod export;
pub mod files;
mod launch;
pub mod metrics;
pub mod notify;
pub mod peer;
pub mod replication;
pub mod runtime;
mod server;
pub mod startup;
pub mod tls;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{self, Config};
use crate::control::RunDir;

pub use args::DaemonArgs;
pub use error::DaemonError;
pub use export::{Export, NoExport, make_export};

/// Exit code of a daemon that could not start (drbdsetup's code for a failed attach).
pub const EXIT_STARTUP_FAILED: u8 = 10;

/// What the daemon prints on stdout for its launcher once it answers on its socket.
pub(crate) const READY_LINE: &str = "READY";
/// Prefix of the line it prints instead when it cannot start.
pub(crate) const ERROR_PREFIX: &str = "ERROR ";

/// Entry point of the `urbd` binary.
pub fn main() -> ExitCode {
    let args = match DaemonArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
    };
    if !args.foreground {
        return launch::launch(&args);
    }
    init_tracing();
    abort_on_panic();
    match run_foreground(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            if args.ready_on_stdout {
                let one_line = e.to_string().replace('\n', " ");
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{ERROR_PREFIX}{one_line}");
                let _ = out.flush();
            } else {
                eprintln!("urbd: {e}");
            }
            ExitCode::from(EXIT_STARTUP_FAILED)
        }
    }
}

/// A panic in any of the daemon's threads (the event loop, a replication session, the NBD
/// data path) ends the process at once, after logging it: a daemon with one thread gone
/// would keep its sockets and state but hang every request that needs that thread. Ended,
/// it is a crash like any other: the peer sees the connection go, and the next `up`
/// recovers from the activity log.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(thread, "{info}; aborting the daemon");
        default(info);
        std::process::abort();
    }));
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("URBD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Starts the daemon in this process and runs it until `down` or SIGTERM.
pub fn run_foreground(args: &DaemonArgs) -> Result<(), DaemonError> {
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(config::default_config_path);
    let config = Config::load(&config_path).map_err(|e| DaemonError::Config(e.to_string()))?;
    let node = match &args.node {
        Some(n) if !n.is_empty() => n.clone(),
        _ => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    let resource = config.resource(&args.resource).ok_or_else(|| {
        DaemonError::Config(format!(
            "'{}' not defined in your config (for this host).",
            args.resource
        ))
    })?;
    let view = resource
        .for_node(&node)
        .map_err(|e| DaemonError::Config(e.to_string()))?;

    let access = access::ControlAccess::new(&view.resource, view.control_group.as_deref())?;
    let run_dir = RunDir::from_env();
    std::fs::create_dir_all(run_dir.path())
        .map_err(|e| DaemonError::io(format!("creating {}", run_dir.path().display()), e))?;
    let lock = files::ResourceLock::acquire(&run_dir, &view.resource)?;
    tracing::info!(resource = %view.resource, %node, config = %config_path.display(), "starting");

    let view_for_startup = view.clone();
    let mut runtime = runtime::Runtime::new(view, run_dir.clone());
    runtime.set_config_path(std::fs::canonicalize(&config_path).unwrap_or(config_path.clone()));
    runtime.hold_lock(lock);
    let queue = server::queue();
    runtime.set_host(queue.host_factory());
    if let Err(e) = runtime.attach_all() {
        runtime.release_files();
        return Err(e);
    }
    if let Err(e) = runtime.start_metrics() {
        runtime.terminate();
        runtime.release_files();
        return Err(e);
    }

    // We hold the lock: a socket file left by a daemon that was killed is stale.
    let socket = run_dir.socket(runtime.resource());
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            runtime.terminate();
            runtime.release_files();
            return Err(DaemonError::io(format!("binding {}", socket.display()), e));
        }
    };
    if let Err(e) = access.secure_socket(&socket) {
        runtime.terminate();
        runtime.release_files();
        return Err(DaemonError::io(
            format!("setting the mode of {}", socket.display()),
            e,
        ));
    }
    let pid_path = run_dir.pid(runtime.resource());
    if let Err(e) = files::write_atomic(&pid_path, format!("{}\n", std::process::id()).as_bytes()) {
        runtime.terminate();
        runtime.release_files();
        return Err(DaemonError::io(
            format!("writing {}", pid_path.display()),
            e,
        ));
    }
    runtime.publish();
    tracing::info!(socket = %socket.display(), "ready");
    if args.ready_on_stdout {
        report_ready();
    }
    // Under systemd (`Type=notify`): the unit is started now.
    notify::notify_or_log(&format!(
        "READY=1\nSTATUS=serving {} on {}",
        runtime.resource(),
        socket.display()
    ));
    startup::spawn_become_primary(&view_for_startup, &run_dir);
    let served = server::run(&mut runtime, listener, queue, access);
    notify::notify_or_log("STOPPING=1");
    served.map_err(|e| DaemonError::io("starting the control threads", e))?;
    tracing::info!("down");
    Ok(())
}

/// Tells the launcher we are up, then points stdout at the log (stderr) so that nothing
/// written later goes to a closed pipe.
fn report_ready() {
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{READY_LINE}");
        let _ = out.flush();
    }
    if let Err(e) = rustix::stdio::dup2_stdout(std::io::stderr()) {
        tracing::warn!(error = %e, "cannot redirect stdout to the log");
    }
}
