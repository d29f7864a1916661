//! Fencing: what the `fence-peer` handler's exit code means (DRBD 8.4
//! `conn_try_outdate_peer`, `drbd/drbd_nl.c`) and the state change each verdict asks for.
//!
//! The handler runs when a Primary loses a peer whose disk was not known to be Outdated
//! (`conn_disconnect`), and when a node without a connection is promoted while `fencing`
//! is set (`drbd_set_role`). Under `resource-and-stonith` the Primary's I/O is frozen
//! (`susp_fen`) from the loss until a verdict says the peer cannot have newer data.

use super::state::DiskState;

/// The handler's verdict, from its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceVerdict {
    /// 3: the peer's disk is Inconsistent or worse.
    PeerInconsistent,
    /// 4: the peer was outdated (or already was).
    PeerOutdated,
    /// 5: the peer is unreachable, presumed dead.
    PeerDown,
    /// 6: the peer is Primary: this node outdates itself.
    PeerPrimary,
    /// 7: the peer was STONITHed.
    PeerStonithed,
    /// Anything else (including no handler, or one killed by a signal): the handler is
    /// broken; nothing changes and frozen I/O stays frozen.
    Broken(i32),
}

impl FenceVerdict {
    /// The verdict for an exit status (`None`: killed by a signal or never ran).
    pub fn from_exit(code: Option<i32>) -> Self {
        match code {
            Some(3) => FenceVerdict::PeerInconsistent,
            Some(4) => FenceVerdict::PeerOutdated,
            Some(5) => FenceVerdict::PeerDown,
            Some(6) => FenceVerdict::PeerPrimary,
            Some(7) => FenceVerdict::PeerStonithed,
            Some(c) => FenceVerdict::Broken(c),
            None => FenceVerdict::Broken(-1),
        }
    }

    /// The exit code.
    pub fn code(self) -> i32 {
        match self {
            FenceVerdict::PeerInconsistent => 3,
            FenceVerdict::PeerOutdated => 4,
            FenceVerdict::PeerDown => 5,
            FenceVerdict::PeerPrimary => 6,
            FenceVerdict::PeerStonithed => 7,
            FenceVerdict::Broken(c) => c,
        }
    }

    /// The change of (disk, pdsk) the verdict asks for, given this node's disk, and DRBD's
    /// words for it. `None` as the change: nothing changes.
    pub fn change(self, disk: DiskState) -> (Option<FenceChange>, &'static str) {
        match self {
            FenceVerdict::PeerInconsistent => (
                Some(FenceChange::Peer(DiskState::Inconsistent)),
                "peer is inconsistent or worse",
            ),
            FenceVerdict::PeerOutdated => (
                Some(FenceChange::Peer(DiskState::Outdated)),
                "peer was fenced",
            ),
            FenceVerdict::PeerDown if disk == DiskState::UpToDate => (
                Some(FenceChange::Peer(DiskState::Outdated)),
                "peer is unreachable, assumed to be dead",
            ),
            FenceVerdict::PeerDown => (
                None,
                "peer unreachable, doing nothing since disk != UpToDate",
            ),
            FenceVerdict::PeerPrimary => (
                Some(FenceChange::Local(DiskState::Outdated)),
                "peer is active",
            ),
            FenceVerdict::PeerStonithed => (
                Some(FenceChange::Peer(DiskState::Outdated)),
                "peer was stonithed",
            ),
            FenceVerdict::Broken(_) => (None, "fence-peer helper broken"),
        }
    }
}

/// A state change a verdict asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceChange {
    /// The peer's disk becomes this.
    Peer(DiskState),
    /// This node's disk becomes this.
    Local(DiskState),
}

/// What became of a verdict, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceOutcome {
    /// Applied (or nothing to apply): `fence-peer helper returned N (TEXT)`.
    Applied {
        /// DRBD's words for the verdict.
        text: &'static str,
        /// Frozen I/O resumed because of it.
        resumed: bool,
    },
    /// The handler is broken: nothing changed, frozen I/O stays frozen.
    Broken,
    /// The connection came back (or went and came back) while the handler ran: "Ignoring
    /// fence-peer exit code".
    Ignored,
    /// The change is not a valid state (e.g. outdating a Primary): refused, nothing changed.
    Refused(super::refusal::Refusal),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        use DiskState::*;
        for (code, disk, change) in [
            (3, UpToDate, Some(FenceChange::Peer(Inconsistent))),
            (4, UpToDate, Some(FenceChange::Peer(Outdated))),
            (4, Consistent, Some(FenceChange::Peer(Outdated))),
            (5, UpToDate, Some(FenceChange::Peer(Outdated))),
            (5, Consistent, None),
            (6, Consistent, Some(FenceChange::Local(Outdated))),
            (7, UpToDate, Some(FenceChange::Peer(Outdated))),
            (0, UpToDate, None),
            (1, UpToDate, None),
            (8, UpToDate, None),
        ] {
            let v = FenceVerdict::from_exit(Some(code));
            assert_eq!(v.code(), code);
            assert_eq!(v.change(disk).0, change, "exit {code} with {disk:?}");
        }
        assert_eq!(FenceVerdict::from_exit(None), FenceVerdict::Broken(-1));
    }
}
