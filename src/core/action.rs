//! What the core asks its host to do. The host performs each action in order and only then
//! reports the request that caused it as done: a state change that must survive a crash is
//! acknowledged only after its superblock write is durable.

use crate::meta::{MdFlags, Uuids};

/// The superblock fields the core owns. The host keeps the rest (layout, AL geometry) from
/// what it read at attach and writes the whole 4 KiB block in one aligned write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdUpdate {
    /// Generation UUIDs.
    pub uuids: Uuids,
    /// `MDF_*` flags.
    pub flags: MdFlags,
    /// Last agreed size, sectors.
    pub la_size_sect: u64,
    /// Write the clean magic (`MD_MAGIC_08`, with `MDF_AL_CLEAN` in `flags`): the activity
    /// log holds nothing to apply. False while attached (DRBD 8.4 writes
    /// `MD_MAGIC_84_UNCLEAN` then).
    pub clean: bool,
}

/// One thing for the host to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write the superblock of volume `volume` with these fields and sync it, before the
    /// request is reported as done.
    PersistSuperblock {
        /// Volume number.
        volume: u32,
        /// The fields to write.
        update: MdUpdate,
    },
    /// Tell the data path whether it may serve the device: `None` serves it (Primary with
    /// UpToDate data), `Some(reason)` refuses new clients and I/O with that reason.
    SetServing {
        /// Volume number.
        volume: u32,
        /// Why not, or `None` to serve.
        reason: Option<&'static str>,
    },
    /// Run the `fence-peer` handler (asynchronously) and hand its exit code to
    /// `Volume::handle_fence_result` with this `connect_count`: a Primary lost a peer whose
    /// disk was not known to be Outdated (`conn_try_outdate_peer_async`).
    FencePeer {
        /// Volume number.
        volume: u32,
        /// Connections established so far: a verdict for an older connection is ignored.
        connect_count: u64,
    },
    /// Frozen I/O (`susp_fen`) may resume: the peer is fenced, the connection is back, or
    /// the operator said `resume-io`. Requests held since the loss complete.
    ResumeIo {
        /// Volume number.
        volume: u32,
    },
    /// The backing disk of volume `volume` is no longer used: close the data and meta
    /// devices (after the superblock write queued before this action).
    CloseDisk {
        /// Volume number.
        volume: u32,
    },
    /// The backing disk of volume `volume` failed and is detached (`on-io-error detach`):
    /// close the meta device (after the superblock write queued before this action) and
    /// stop all local I/O, but keep the connection and the data path: a Primary goes on
    /// serving through its peer.
    DetachFailedDisk {
        /// Volume number.
        volume: u32,
    },
}
