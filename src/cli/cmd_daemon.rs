//! Commands served by the node daemon: up, down, attach, detach, primary, secondary,
//! role, cstate, dstate, status, proc. Each resolves its resources through the
//! configuration, then talks to the resource's `urbd` over its control socket.
//!
//! Exit codes follow drbdadm 8.4, which passes drbdsetup's on: 17 for "(-2) Need access to
//! UpToDate data", 11 for other refused state changes, 10 for failures and for a resource
//! that is not up.

use std::path::PathBuf;
use std::process::Command;

use crate::control::{self, ControlError, FailKind, Request, Response, RunDir};
use crate::core::VolumeRefusal;
use crate::status::{ResourceStatus, proc, text};

use super::context::{Context, Target};
use super::error::{CliError, exit};
use super::output::print;

/// Environment variable naming the `urbd` binary (default: next to `urbdadm`).
pub const URBD_BIN_ENV: &str = "URBD_BIN";

/// The `urbd` binary: `URBD_BIN`, else `urbd` in the directory of the running `urbdadm`.
fn urbd_binary() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os(URBD_BIN_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::exec(anyhow::Error::new(e).context("finding urbdadm's path")))?;
    Ok(exe.with_file_name("urbd"))
}

/// Resource names of `targets`, each once, in order.
fn resources(targets: &[Target]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in targets {
        if !out.contains(&t.view.resource) {
            out.push(t.view.resource.clone());
        }
    }
    out
}

/// Turns a control error into the CLI's error.
fn control_error(e: ControlError) -> CliError {
    match e {
        ControlError::NotUp { resource, .. } => {
            CliError::with_code(exit::FAILURE, format!("resource {resource} is not up"))
        }
        other => CliError::exec(other),
    }
}

/// Sends `request` to `resource`'s daemon; refusals and failures become errors.
fn request(
    run_dir: &RunDir,
    resource: &str,
    request: Request,
) -> Result<(ResourceStatus, Vec<String>), CliError> {
    match control::call(run_dir, resource, request).map_err(control_error)? {
        Response::Ok { status, lines } => Ok((status, lines)),
        Response::Refused { minor, refusal } => Err(CliError::with_code(
            refusal.exit_code(),
            VolumeRefusal { minor, refusal },
        )),
        Response::Failed { kind, message } => Err(CliError::with_code(
            match kind {
                FailKind::BadRequest => exit::EXEC_ERROR,
                _ => exit::FAILURE,
            },
            format!("{resource}: {message}"),
        )),
    }
}

/// `urbdadm up RES`: starts the resource's daemon, which attaches the disks. Waits until
/// the daemon answers or has said why it cannot start.
/// With `all`, one resource that fails does not keep the others down: each failure is
/// printed and the first one's exit code returned at the end.
pub fn up(ctx: &Context, names: &[String]) -> Result<(), CliError> {
    let targets = ctx.targets(names)?;
    let urbd = urbd_binary()?;
    let mut outcome = AllOutcome::new(names);
    for res in resources(&targets) {
        let r = up_one(ctx, &urbd, &targets, &res);
        outcome.record(r)?;
    }
    outcome.finish()
}

/// The outcome of a command over several resources: stop at the first failure for named
/// resources (as drbdadm does), go on for `all` and report every failure.
struct AllOutcome {
    all: bool,
    first: Option<CliError>,
}

impl AllOutcome {
    fn new(names: &[String]) -> Self {
        Self {
            all: super::context::is_all(names),
            first: None,
        }
    }

    /// Records one resource's result; `Err` when the command must stop now.
    fn record(&mut self, r: Result<(), CliError>) -> Result<(), CliError> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if self.all => {
                eprintln!("urbdadm: {e}");
                self.first.get_or_insert(e);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn finish(self) -> Result<(), CliError> {
        match self.first {
            // Already printed: exit with its code and a one-line summary.
            Some(e) => Err(CliError::with_code(
                e.code(),
                "some resources failed (see above)",
            )),
            None => Ok(()),
        }
    }
}

/// `up` of one resource.
fn up_one(
    ctx: &Context,
    urbd: &std::path::Path,
    targets: &[Target],
    res: &str,
) -> Result<(), CliError> {
    if ctx.dry_run {
        return print(&format!(
            "{} -c {} --node {} {res}\n",
            urbd.display(),
            ctx.config_path.display(),
            ctx.node
        ));
    }
    let notes: Vec<String> = targets
        .iter()
        .filter(|t| t.view.resource == res)
        .flat_map(predicted_notes)
        .collect();
    let out = Command::new(urbd)
        .arg("-c")
        .arg(&ctx.config_path)
        .arg("--node")
        .arg(&ctx.node)
        .arg(res)
        .output()
        .map_err(|e| {
            CliError::exec(anyhow::Error::new(e).context(format!("running {}", urbd.display())))
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let msg = stderr.trim().trim_start_matches("urbd: ");
        let code = out
            .status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .filter(|&c| c != 0)
            .unwrap_or(exit::EXEC_ERROR);
        return Err(CliError::with_code(code, format!("up {res}: {msg}")));
    }
    for note in notes {
        eprintln!("{note}");
    }
    Ok(())
}

/// `urbdadm down RES`: demote, detach, stop the daemon. A resource that is not up is
/// already down (drbdsetup's `down` treats an unknown resource as done).
/// With `all`, a resource that refuses (a mounted device) does not keep the others up.
pub fn down(ctx: &Context, names: &[String]) -> Result<(), CliError> {
    let targets = ctx.targets(names)?;
    let run_dir = RunDir::from_env();
    let mut outcome = AllOutcome::new(names);
    for res in resources(&targets) {
        if ctx.dry_run {
            print(&format!(
                "down {res}: demote and detach every volume, stop urbd ({})\n",
                run_dir.socket(&res).display()
            ))?;
            continue;
        }
        let r = match request(&run_dir, &res, Request::Down) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == exit::FAILURE && e.to_string().ends_with("is not up") => {
                eprintln!("urbdadm: resource {res} is not up; nothing to do");
                Ok(())
            }
            Err(e) => Err(e),
        };
        outcome.record(r)?;
    }
    outcome.finish()
}

/// A per-volume command: `attach`, `detach`, `primary`, `secondary`.
pub fn per_volume(
    ctx: &Context,
    names: &[String],
    what: &str,
    make: impl Fn(Option<u32>) -> Request,
) -> Result<(), CliError> {
    let run_dir = RunDir::from_env();
    for t in ctx.targets(names)? {
        if ctx.dry_run {
            print(&format!(
                "{what} {} (minor {}): ask urbd over {}\n",
                t.label(),
                t.volume.minor,
                run_dir.socket(&t.view.resource).display()
            ))?;
            continue;
        }
        let (_, lines) = request(&run_dir, &t.view.resource, make(Some(t.volume.volume)))?;
        // What the daemon reports about the command (attach: log applied, full sync).
        for line in lines {
            eprintln!("{line}");
        }
    }
    Ok(())
}

/// What attaching `t` will do with its metadata, predicted from the metadata as it is now
/// (the daemon runs the same decision on the same bytes): printed by `up` once the daemon
/// is up. Unreadable metadata predicts nothing: the daemon's refusal says why.
fn predicted_notes(t: &Target) -> Vec<String> {
    let dev = crate::daemon::disk::meta_device(&t.volume);
    let Ok(mut md) = crate::meta::read_md(&dev) else {
        return Vec::new();
    };
    match md.recover() {
        Ok(r) => crate::daemon::disk::recovery_notes(&t.label(), &dev, &r, md.bitmap.bits()),
        Err(_) => Vec::new(),
    }
}

/// A resource-wide command: `connect`, `disconnect`.
pub fn per_resource(
    ctx: &Context,
    names: &[String],
    what: &str,
    make: impl Fn() -> Request,
) -> Result<(), CliError> {
    let run_dir = RunDir::from_env();
    for res in resources(&ctx.targets(names)?) {
        if ctx.dry_run {
            print(&format!(
                "{what} {res}: ask urbd over {}\n",
                run_dir.socket(&res).display()
            ))?;
            continue;
        }
        let (_, lines) = request(&run_dir, &res, make())?;
        for line in lines {
            print(&format!("{line}\n"))?;
        }
    }
    Ok(())
}

/// `wait-connect`: until every volume is connected (Connected or resyncing), StandAlone
/// (drbdsetup stops waiting there too), or the `startup` section's timeout passes:
/// `wfc-timeout`, or `degr-wfc-timeout` after a crash of a Primary that had lost its
/// peer, or `outdated-wfc-timeout` when the peer's disk is known Outdated, chosen as
/// drbdsetup chooses (0 or unset: wait for ever). Not connected at the end: exit 10.
pub fn wait_connect(ctx: &Context, names: &[String]) -> Result<(), CliError> {
    use crate::daemon::startup::{WaitEnd, WfcTimeouts, wait_for_peer};
    let run_dir = RunDir::from_env();
    let targets = ctx.targets(names)?;
    for res in resources(&targets) {
        if ctx.dry_run {
            print(&format!("wait-connect {res}: poll urbd until connected\n"))?;
            continue;
        }
        let timeouts = targets
            .iter()
            .find(|t| t.view.resource == res)
            .map(|t| WfcTimeouts::of(&t.view))
            .unwrap_or_default();
        match wait_for_peer(&run_dir, &res, timeouts).map_err(control_error)? {
            WaitEnd::Connected => {}
            WaitEnd::StandAlone => {
                return Err(CliError::with_code(
                    exit::FAILURE,
                    format!("{res}: StandAlone, not connecting (see `urbdadm status {res}`)"),
                ));
            }
            WaitEnd::TimedOut(after, kind) => {
                return Err(CliError::with_code(
                    exit::FAILURE,
                    format!(
                        "{res}: not connected after {} ({} s)",
                        kind.option(),
                        after.as_secs()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `role`, `cstate`, `dstate`: one line per volume.
pub fn show_lines(
    ctx: &Context,
    names: &[String],
    what: &str,
    make: impl Fn(Option<u32>) -> Request,
) -> Result<(), CliError> {
    let run_dir = RunDir::from_env();
    for t in ctx.targets(names)? {
        if ctx.dry_run {
            print(&format!("{what} {}: ask urbd\n", t.label()))?;
            continue;
        }
        let (_, lines) = request(&run_dir, &t.view.resource, make(Some(t.volume.volume)))?;
        for line in lines {
            print(&format!("{line}\n"))?;
        }
    }
    Ok(())
}

/// `urbdadm status [RES...] [--json]`. Without names: every configured resource that is
/// up. A named resource that is not up is an error (exit 10).
pub fn status(ctx: &Context, names: &[String], json: bool) -> Result<(), CliError> {
    let run_dir = RunDir::from_env();
    let explicit = !(names.is_empty() || names.iter().any(|n| n == "all"));
    let targets = ctx.targets(names)?;
    let mut statuses = Vec::new();
    for res in resources(&targets) {
        if ctx.dry_run {
            print(&format!("status {res}: ask urbd\n"))?;
            continue;
        }
        match request(&run_dir, &res, Request::Status) {
            Ok((s, _)) => statuses.push(s),
            Err(e) if !explicit && e.code() == exit::FAILURE => {}
            Err(e) => return Err(e),
        }
    }
    if ctx.dry_run {
        return Ok(());
    }
    if json {
        let text = serde_json::to_string_pretty(&statuses).map_err(CliError::exec)?;
        return print(&format!("{text}\n"));
    }
    let text: String = statuses.iter().map(text::status).collect();
    print(&text)
}

/// `urbdadm proc [--json]`: /proc/drbd for every resource up in the run directory (whatever
/// the configuration says).
pub fn proc(dry_run: bool, json: bool) -> Result<(), CliError> {
    let run_dir = RunDir::from_env();
    if dry_run {
        return print(&format!(
            "proc: ask every urbd with a socket in {}\n",
            run_dir.path().display()
        ));
    }
    let mut statuses = Vec::new();
    for res in run_dir.resources_with_sockets() {
        match control::call(&run_dir, &res, Request::Status) {
            Ok(Response::Ok { status, .. }) => statuses.push(status),
            // A stale socket of a daemon that was killed: not up.
            Err(ControlError::NotUp { .. }) => {}
            Ok(other) => tracing::warn!(resource = %res, ?other, "unexpected answer"),
            Err(e) => tracing::warn!(resource = %res, error = %e, "no status"),
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&statuses).map_err(CliError::exec)?;
        return print(&format!("{text}\n"));
    }
    print(&proc::render(&statuses))
}
