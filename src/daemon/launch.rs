//! Starting the daemon in the background: `urbd RES` (without `--foreground`) runs itself
//! again with `--foreground`, detached in its own process group, stderr appended to
//! `<run dir>/<resource>.log`, and waits until the daemon says it is ready or why it is
//! not. `urbdadm up` runs this and passes the outcome on.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::control::RunDir;

use super::args::DaemonArgs;
use super::{ERROR_PREFIX, EXIT_STARTUP_FAILED, READY_LINE};

/// How long the daemon may take to attach its disks and bind its socket.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn launch(args: &DaemonArgs) -> ExitCode {
    match try_launch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("urbd: {msg}");
            ExitCode::from(EXIT_STARTUP_FAILED)
        }
    }
}

fn try_launch(args: &DaemonArgs) -> Result<(), String> {
    let run_dir = RunDir::from_env();
    std::fs::create_dir_all(run_dir.path())
        .map_err(|e| format!("creating {}: {e}", run_dir.path().display()))?;
    let log_path = run_dir.log(&args.resource);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding the urbd binary: {e}"))?;
    let mut cmd = Command::new(exe);
    if let Some(c) = &args.config {
        cmd.arg("-c").arg(c);
    }
    if let Some(n) = &args.node {
        cmd.arg("--node").arg(n);
    }
    cmd.args(["--foreground", "--ready-on-stdout"])
        .arg(&args.resource)
        // Not systemd's main process: readiness goes to the launcher on stdout, and a
        // `Type=notify` unit that ran `urbdadm up` must not take a READY=1 from it.
        .env_remove(super::notify::NOTIFY_SOCKET_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Its own process group: a Ctrl-C on the terminal that ran `urbdadm up` does not
        // reach the daemon.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the daemon: {e}"))?;
    let Some(stdout) = child.stdout.take() else {
        return Err("no pipe to the daemon".into());
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut reader = BufReader::new(stdout).take(64 * 1024);
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            return Err(format!(
                "the daemon (pid {}) did not report within {} s; see {}",
                child.id(),
                STARTUP_TIMEOUT.as_secs(),
                log_path.display()
            ));
        }
    };
    let line = line.trim_end();
    if line == READY_LINE {
        // The daemon runs on; it is reparented when we exit.
        return Ok(());
    }
    let _ = child.wait();
    match line.strip_prefix(ERROR_PREFIX) {
        Some(msg) => Err(msg.to_owned()),
        None => Err(format!(
            "the daemon exited before it was ready; see {}",
            log_path.display()
        )),
    }
}
