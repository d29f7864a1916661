//! The `startup` section: how long to wait for the peer (`wfc-timeout`,
//! `degr-wfc-timeout`, `outdated-wfc-timeout`) and who becomes Primary once the wait is
//! over (`become-primary-on`).
//!
//! DRBD 8.4 splits this between drbdsetup (`wait-connect` picks a timeout by what the
//! kernel reports: `choose_timeout()` in drbdsetup.c, `drbd_adm_get_timeout_type()` in
//! drbd_nl.c) and the init script (`drbdadm wait-con-int`, then `drbdadm sh-b-pri all`,
//! which promotes with up to five tries a second apart). urbd has no init script: the
//! daemon itself runs the become-primary-on step after it is ready, so `urbdadm up` and
//! `systemctl start urbd@RES` behave alike. `urbdadm wait-connect` uses the same timeout
//! rule.

use std::time::{Duration, Instant};

use crate::config::NodeView;
use crate::control::{self, ControlError, Request, Response, RunDir};
use crate::core::{ConnState, DiskState};
use crate::status::ResourceStatus;

/// Which of the three timeouts applies (drbd.h's `UT_DEFAULT`, `UT_DEGRADED`,
/// `UT_PEER_OUTDATED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WfcKind {
    /// The peer was there when this node last went away: `wfc-timeout`.
    Default,
    /// This node was a Primary without its peer when it went away (a degraded cluster
    /// that crashed): `degr-wfc-timeout`.
    Degraded,
    /// The peer's disk is known to be Outdated: `outdated-wfc-timeout`.
    PeerOutdated,
}

impl WfcKind {
    /// The option that sets this kind's timeout.
    pub fn option(self) -> &'static str {
        match self {
            WfcKind::Default => "wfc-timeout",
            WfcKind::Degraded => "degr-wfc-timeout",
            WfcKind::PeerOutdated => "outdated-wfc-timeout",
        }
    }

    /// The kind for a resource's status: PeerOutdated if any volume knows its peer's disk
    /// Outdated, else Degraded if any volume attached as a degraded Primary, as the kernel
    /// answers per minor (`pdsk == D_OUTDATED` first, then `USE_DEGR_WFC_T`).
    pub fn of(status: &ResourceStatus) -> Self {
        if status
            .volumes
            .iter()
            .any(|v| v.peer_disk == DiskState::Outdated)
        {
            WfcKind::PeerOutdated
        } else if status.volumes.iter().any(|v| v.wfc_degraded) {
            WfcKind::Degraded
        } else {
            WfcKind::Default
        }
    }
}

/// The three timeouts in seconds (0: wait for ever), as configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WfcTimeouts {
    /// `wfc-timeout`.
    pub wfc: u64,
    /// `degr-wfc-timeout`.
    pub degr: u64,
    /// `outdated-wfc-timeout`.
    pub outdated: u64,
}

impl WfcTimeouts {
    /// The resource's `startup` timeouts (unset or unparsable: 0, DRBD's default).
    pub fn of(view: &NodeView) -> Self {
        let get = |name| {
            view.startup
                .get_scaled(name)
                .and_then(Result::ok)
                .unwrap_or(0)
        };
        Self {
            wfc: get("wfc-timeout"),
            degr: get("degr-wfc-timeout"),
            outdated: get("outdated-wfc-timeout"),
        }
    }

    /// How long to wait for `kind`; `None` is for ever. drbdsetup's `choose_timeout()`
    /// first makes each special timeout no longer than the one above it: a
    /// `degr-wfc-timeout` of 0 or longer than a set `wfc-timeout` becomes `wfc-timeout`,
    /// an `outdated-wfc-timeout` of 0 or longer than a set `degr-wfc-timeout` becomes
    /// that. (drbdsetup 8.4 assigns `wfc-timeout` there while its message says
    /// `degr-wfc-timeout`; urbd does what the message says.)
    pub fn choose(self, kind: WfcKind) -> Option<Duration> {
        let mut t = self;
        if t.wfc > 0 && (t.wfc < t.degr || t.degr == 0) {
            t.degr = t.wfc;
        }
        if t.degr > 0 && (t.degr < t.outdated || t.outdated == 0) {
            t.outdated = t.degr;
        }
        let secs = match kind {
            WfcKind::Default => t.wfc,
            WfcKind::Degraded => t.degr,
            WfcKind::PeerOutdated => t.outdated,
        };
        (secs > 0).then(|| Duration::from_secs(secs))
    }
}

/// Whether `become-primary-on` names this node (or `both`).
pub fn becomes_primary(view: &NodeView) -> bool {
    view.startup.get("become-primary-on").is_some_and(|names| {
        names
            .split_whitespace()
            .any(|n| n == view.node || n == "both")
    })
}

/// What waiting for the peer ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// Every volume is Connected (or resyncing).
    Connected,
    /// A volume stayed StandAlone for [`STANDALONE_GRACE`] (a refused handshake,
    /// `disconnect`): drbdsetup stops waiting there too.
    StandAlone,
    /// The timeout chosen for this kind passed.
    TimedOut(Duration, WfcKind),
}

/// How often the wait looks at the state.
const POLL: Duration = Duration::from_millis(100);

/// How long StandAlone must last to end the wait (`connect` reaches the replication
/// session asynchronously; the state leaves StandAlone a moment after the command).
const STANDALONE_GRACE: Duration = Duration::from_secs(2);

/// Waits until `resource` is connected, StandAlone, or the timeout of its startup section
/// (chosen by [`WfcKind::of`] its first status) has passed.
pub fn wait_for_peer(
    run_dir: &RunDir,
    resource: &str,
    timeouts: WfcTimeouts,
) -> Result<WaitEnd, ControlError> {
    let start = Instant::now();
    let mut chosen = None;
    let mut standalone_since = None;
    loop {
        let status = status(run_dir, resource)?;
        let (kind, limit) = *chosen.get_or_insert_with(|| {
            let kind = WfcKind::of(&status);
            (kind, timeouts.choose(kind))
        });
        if status
            .volumes
            .iter()
            .all(|v| v.cstate >= ConnState::Connected)
        {
            return Ok(WaitEnd::Connected);
        }
        if status
            .volumes
            .iter()
            .any(|v| v.cstate == ConnState::StandAlone)
        {
            // A `connect` just sent leaves StandAlone only when the session has taken it:
            // only a StandAlone that lasts ends the wait.
            let since = *standalone_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STANDALONE_GRACE {
                return Ok(WaitEnd::StandAlone);
            }
        } else {
            standalone_since = None;
        }
        if let Some(limit) = limit.filter(|&l| start.elapsed() >= l) {
            return Ok(WaitEnd::TimedOut(limit, kind));
        }
        std::thread::sleep(POLL);
    }
}

fn status(run_dir: &RunDir, resource: &str) -> Result<ResourceStatus, ControlError> {
    match control::call(run_dir, resource, Request::Status)? {
        Response::Ok { status, .. } => Ok(status),
        other => Err(ControlError::Io {
            socket: run_dir.socket(resource),
            source: std::io::Error::other(format!("unexpected answer to status: {other:?}")),
        }),
    }
}

/// How many times the promotion is tried, a second apart (drbdadm's `sh-b-pri`: a
/// resync that starts at connect time may refuse the first try).
const PROMOTE_TRIES: u32 = 5;

/// Starts the become-primary-on step in a thread when the startup section asks for it:
/// wait for the peer as [`wait_for_peer`] does, then promote every volume (without
/// `--force`: a node without UpToDate data stays Secondary, and says why in the log).
/// The thread talks to the daemon over its own control socket, as `urbdadm primary`
/// would, and ends when the daemon goes down.
pub fn spawn_become_primary(view: &NodeView, run_dir: &RunDir) {
    if !becomes_primary(view) {
        return;
    }
    let (resource, timeouts, run_dir) = (
        view.resource.clone(),
        WfcTimeouts::of(view),
        run_dir.clone(),
    );
    let spawned = std::thread::Builder::new()
        .name("become-primary".into())
        .spawn(move || become_primary(&run_dir, &resource, timeouts));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the become-primary-on thread");
    }
}

fn become_primary(run_dir: &RunDir, resource: &str, timeouts: WfcTimeouts) {
    let end = match wait_for_peer(run_dir, resource, timeouts) {
        Ok(end) => end,
        Err(e) => {
            tracing::info!(error = %e, "become-primary-on: stopped waiting for the peer");
            return;
        }
    };
    tracing::info!(?end, "become-primary-on names this node: promoting");
    let mut last = String::new();
    for attempt in 1..=PROMOTE_TRIES {
        match control::call(
            run_dir,
            resource,
            Request::Primary {
                volume: None,
                force: false,
            },
        ) {
            Ok(Response::Ok { .. }) => {
                tracing::info!(attempt, "become-primary-on: Primary");
                return;
            }
            Ok(other) => last = format!("{other:?}"),
            Err(e) => {
                tracing::info!(error = %e, "become-primary-on: the daemon went away");
                return;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    tracing::warn!(
        answer = %last,
        "become-primary-on: promotion refused {PROMOTE_TRIES} times; staying Secondary"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(wfc: u64, degr: u64, outdated: u64) -> WfcTimeouts {
        WfcTimeouts {
            wfc,
            degr,
            outdated,
        }
    }

    fn secs(d: Option<Duration>) -> u64 {
        d.map_or(0, |d| d.as_secs())
    }

    /// drbdsetup.c `choose_timeout()`, case by case.
    #[test]
    fn choose_timeout_as_drbdsetup() {
        use WfcKind::*;
        // (wfc, degr, outdated) -> (default, degraded, peer outdated); 0 = for ever.
        let table = [
            ((0, 0, 0), (0, 0, 0)),
            ((100, 0, 0), (100, 100, 100)),
            ((100, 10, 0), (100, 10, 10)),
            ((100, 10, 5), (100, 10, 5)),
            // A degr-wfc-timeout longer than wfc-timeout is cut to it.
            ((100, 200, 0), (100, 100, 100)),
            ((100, 10, 50), (100, 10, 10)),
            // Without wfc-timeout, only the degraded and outdated waits end.
            ((0, 10, 0), (0, 10, 10)),
            ((0, 0, 7), (0, 0, 7)),
        ];
        for ((w, d, o), (ed, edeg, eout)) in table {
            let x = t(w, d, o);
            assert_eq!(
                (
                    secs(x.choose(Default)),
                    secs(x.choose(Degraded)),
                    secs(x.choose(PeerOutdated))
                ),
                (ed, edeg, eout),
                "{x:?}"
            );
        }
    }
}
