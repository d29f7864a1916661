//! When DRBD 8.4 (and urbd) accept `verify`, `invalidate`, `invalidate-remote`,
//! `pause-sync` and `resume-sync`: a pure decision on the volume's state, so that a
//! refused command changes nothing (`is_valid_soft_transition` and the `drbd_adm_*`
//! handlers of drbd_nl.c / drbd_state.c).

use super::{ConnState, DiskState, Refusal, Role, State};

/// A resync-related operator command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SyncCmd {
    /// `verify`: online verify from this node.
    Verify,
    /// `invalidate`: this node's disk is resynced from the peer, every block.
    Invalidate,
    /// `invalidate-remote`: the peer's disk is resynced from this node, every block.
    InvalidateRemote,
    /// `pause-sync`.
    PauseSync,
    /// `resume-sync`.
    ResumeSync,
}

/// Whether `cmd` may run now. `verify_alg`: the net section has one; `paused`: this
/// node's pause-sync flag is set.
pub fn check_sync_cmd(
    cmd: SyncCmd,
    s: &State,
    verify_alg: bool,
    paused: bool,
) -> Result<(), Refusal> {
    if s.disk == DiskState::Diskless {
        return Err(Refusal::IsDiskless);
    }
    let connection = || {
        if s.conn < ConnState::Connected {
            Err(Refusal::NeedConnection)
        } else if s.conn > ConnState::Connected {
            Err(Refusal::ResyncRunning)
        } else {
            Ok(())
        }
    };
    match cmd {
        SyncCmd::Verify => {
            if !verify_alg {
                return Err(Refusal::NoVerifyAlg);
            }
            connection()
        }
        SyncCmd::Invalidate => {
            connection()?;
            if s.role == Role::Primary {
                Err(Refusal::InvalidatePrimary)
            } else if s.pdsk != DiskState::UpToDate {
                Err(Refusal::NoUpToDateDisk)
            } else {
                Ok(())
            }
        }
        SyncCmd::InvalidateRemote => {
            connection()?;
            if s.disk != DiskState::UpToDate {
                Err(Refusal::NoUpToDateDisk)
            } else if s.peer == Role::Primary {
                Err(Refusal::InvalidateRemotePrimary)
            } else {
                Ok(())
            }
        }
        SyncCmd::PauseSync if paused => Err(Refusal::PauseIsSet),
        SyncCmd::ResumeSync if !paused => Err(Refusal::PauseIsClear),
        SyncCmd::PauseSync | SyncCmd::ResumeSync => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnState::*;
    use DiskState::*;
    use Role::*;

    fn st(role: Role, peer: Role, disk: DiskState, pdsk: DiskState, conn: ConnState) -> State {
        State {
            role,
            peer,
            disk,
            pdsk,
            conn,
        }
    }

    /// One row per situation: (command, state, verify-alg set, paused, expected).
    #[test]
    fn decisions() {
        let ok = Ok(());
        let sec = |conn| st(Secondary, Primary, UpToDate, UpToDate, conn);
        let pri = |conn| st(Primary, Secondary, UpToDate, UpToDate, conn);
        type Row = (SyncCmd, State, bool, bool, Result<(), Refusal>);
        let rows: Vec<Row> = vec![
            // verify (drbd_state.c: SS_NO_VERIFY_ALG, SS_NEED_CONNECTION, SS_RESYNC_RUNNING)
            (SyncCmd::Verify, pri(Connected), true, false, ok),
            (SyncCmd::Verify, sec(Connected), true, false, ok),
            (
                SyncCmd::Verify,
                pri(Connected),
                false,
                false,
                Err(Refusal::NoVerifyAlg),
            ),
            (
                SyncCmd::Verify,
                pri(StandAlone),
                true,
                false,
                Err(Refusal::NeedConnection),
            ),
            (
                SyncCmd::Verify,
                pri(WFConnection),
                true,
                false,
                Err(Refusal::NeedConnection),
            ),
            (
                SyncCmd::Verify,
                pri(SyncSource),
                true,
                false,
                Err(Refusal::ResyncRunning),
            ),
            (
                SyncCmd::Verify,
                pri(VerifyS),
                true,
                false,
                Err(Refusal::ResyncRunning),
            ),
            (
                SyncCmd::Verify,
                pri(PausedSyncS),
                true,
                false,
                Err(Refusal::ResyncRunning),
            ),
            // invalidate: this node becomes SyncTarget
            (SyncCmd::Invalidate, sec(Connected), false, false, ok),
            (
                SyncCmd::Invalidate,
                sec(StandAlone),
                false,
                false,
                Err(Refusal::NeedConnection),
            ),
            (
                SyncCmd::Invalidate,
                sec(SyncTarget),
                false,
                false,
                Err(Refusal::ResyncRunning),
            ),
            (
                SyncCmd::Invalidate,
                pri(Connected),
                false,
                false,
                Err(Refusal::InvalidatePrimary),
            ),
            (
                SyncCmd::Invalidate,
                st(Secondary, Secondary, UpToDate, Inconsistent, Connected),
                false,
                false,
                Err(Refusal::NoUpToDateDisk),
            ),
            // invalidate-remote: this node becomes SyncSource
            (SyncCmd::InvalidateRemote, pri(Connected), false, false, ok),
            (
                SyncCmd::InvalidateRemote,
                pri(StandAlone),
                false,
                false,
                Err(Refusal::NeedConnection),
            ),
            (
                SyncCmd::InvalidateRemote,
                pri(SyncSource),
                false,
                false,
                Err(Refusal::ResyncRunning),
            ),
            (
                SyncCmd::InvalidateRemote,
                sec(Connected),
                false,
                false,
                Err(Refusal::InvalidateRemotePrimary),
            ),
            (
                SyncCmd::InvalidateRemote,
                st(Secondary, Secondary, Inconsistent, UpToDate, Connected),
                false,
                false,
                Err(Refusal::NoUpToDateDisk),
            ),
            // pause/resume (drbd_nl.c: ERR_PAUSE_IS_SET / ERR_PAUSE_IS_CLEAR); allowed in
            // any connection state, like DRBD's user_isp flag
            (SyncCmd::PauseSync, pri(SyncSource), false, false, ok),
            (SyncCmd::PauseSync, pri(Connected), false, false, ok),
            (
                SyncCmd::PauseSync,
                pri(PausedSyncS),
                false,
                true,
                Err(Refusal::PauseIsSet),
            ),
            (SyncCmd::ResumeSync, pri(PausedSyncS), false, true, ok),
            (
                SyncCmd::ResumeSync,
                pri(SyncSource),
                false,
                false,
                Err(Refusal::PauseIsClear),
            ),
            // no disk
            (
                SyncCmd::Verify,
                st(Secondary, Primary, Diskless, UpToDate, Connected),
                true,
                false,
                Err(Refusal::IsDiskless),
            ),
        ];
        for (i, (cmd, s, alg, paused, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                check_sync_cmd(cmd, &s, alg, paused),
                want,
                "row {i}: {cmd:?} {s:?}"
            );
        }
    }
}
