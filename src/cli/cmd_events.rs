//! `urbdadm events [--now] [RES...]`: the state of the resources and then every change,
//! in the form of DRBD 9's `drbdsetup events2` ([`crate::status::events`]).
//!
//! The daemons publish their status in the run directory on every request, every peer
//! event and every second (`<RES>.state.json`); this reads those files every
//! [`POLL`] and prints what changed. It puts no load on the daemons, needs no socket of
//! its own, and sees a daemon start (`create`) and stop (`destroy`). A state that lasts
//! less than one poll may be missed: the stream is a sequence of samples, never a wrong
//! one.

use std::io::{self, Write};
use std::time::Duration;

use crate::control::RunDir;
use crate::daemon::files::live_statuses;
use crate::status::events::{self, Object, PeerId};

use super::context::{Context, is_all};
use super::error::CliError;

/// How often the published statuses are read.
pub const POLL: Duration = Duration::from_millis(100);

/// Runs the stream (until killed, or stdout is closed), or with `now` prints the current
/// state and returns.
pub fn run(ctx: &Context, names: &[String], now: bool) -> Result<(), CliError> {
    let selected: Vec<String> = if is_all(names) {
        ctx.all_resources()
    } else {
        let mut v: Vec<String> = Vec::new();
        for t in ctx.targets(names)? {
            if !v.contains(&t.view.resource) {
                v.push(t.view.resource.clone());
            }
        }
        v
    };
    let peers: Vec<(String, Option<PeerId>)> = selected
        .iter()
        .map(|r| (r.clone(), peer_id(ctx, r)))
        .collect();
    let run_dir = RunDir::from_env();
    if ctx.dry_run {
        return super::output::print(&format!(
            "events {}: read the published status in {} every {} ms and print the changes\n",
            selected.join(" "),
            run_dir.path().display(),
            POLL.as_millis()
        ));
    }
    let mut before = snapshot(&run_dir, &peers);
    if !emit(&events::exists(&before))? || now {
        return Ok(());
    }
    loop {
        std::thread::sleep(POLL);
        let current = snapshot(&run_dir, &peers);
        if !emit(&events::diff(&before, &current))? {
            return Ok(());
        }
        before = current;
    }
}

/// The peer of `resource` as events2 names it: the position of its `on` section and its
/// name. `None` for a resource without a peer.
fn peer_id(ctx: &Context, resource: &str) -> Option<PeerId> {
    let r = ctx.config.resource(resource)?;
    let (node_id, host) = r
        .hosts
        .iter()
        .enumerate()
        .find(|(_, h)| !h.matches(&ctx.node))?;
    let view = r.for_node(&ctx.node).ok()?;
    let name = view.peer.map_or_else(|| host.names().join(" "), |p| p.name);
    Some(PeerId { node_id, name })
}

/// The event objects of the selected resources that are up, in the order selected.
fn snapshot(run_dir: &RunDir, peers: &[(String, Option<PeerId>)]) -> Vec<Object> {
    let statuses = live_statuses(run_dir);
    let mut out = Vec::new();
    for (res, peer) in peers {
        if let Some(s) = statuses.iter().find(|s| &s.resource == res) {
            out.extend(events::objects(s, peer.as_ref()));
        }
    }
    out
}

/// Prints `lines`, flushed at once (a reader waits for each). `Ok(false)` when stdout is
/// closed: the stream ends quietly, as a Unix tool does.
fn emit(lines: &[String]) -> Result<bool, CliError> {
    if lines.is_empty() {
        return Ok(true);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::exec(
            anyhow::Error::new(e).context("writing to stdout"),
        )),
    }
}
