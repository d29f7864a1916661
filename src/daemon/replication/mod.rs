//! Replication with the peer: one session thread per replicated volume that owns the
//! connection state machine ([`crate::core::conn`]), the data side
//! ([`crate::core::repl`]), the peer sockets ([`super::peer`]) and an io_uring for the
//! local I/O the core asks for. The NBD data path hands writes and flushes to it through
//! [`ReplBackend`]; the daemon's event loop owns the volume's roles, disk states and UUIDs,
//! and the session asks it to change them with [`PeerCall`]s.
//!
//! Threads: the session (all decisions, the local disk's I/O and, on a plain TCP link, the
//! receives from both peer sockets, on its own ring), one connector while
//! dialling/accepting, and inside TLS two receivers while linked (data and meta socket,
//! blocking frame reads). All of them, the NBD thread and the daemon's event loop feed the
//! session's one input queue ([`Input`], with a doorbell: `inbox`).

mod bridge;
mod config;
mod disk;
mod inbox;
mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::core::ConnState;
use crate::core::conn::LocalDisk;
use crate::core::repl::SyncProgress;
use crate::core::{DiskState, Role};
use crate::io::{Backend, Op};
use crate::meta::{Bitmap, Uuids};
use crate::wire::PacketType;

pub use bridge::{Completions, ReplBackend};
pub use config::{session_config, status_progress};
pub use session::{SbSaveConfig, SessionConfig};

use super::peer::PeerLink;

/// A request of the session to the daemon's event loop, which owns the volume's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerCall {
    /// The connection state or what is known of the peer changed.
    State {
        /// Connection state.
        conn: ConnState,
        /// The peer's role.
        peer: Role,
        /// The peer's disk.
        pdsk: DiskState,
        /// Bits set in the bitmap now.
        oos_bits: u64,
    },
    /// The connection agreed on a smaller device: shrink to this many sectors.
    Resize {
        /// The new size.
        size_sect: u64,
    },
    /// The handshake repaired this node's UUIDs (DRBD's rules 34/71: a SYNC_UUID lost with
    /// the link); record them before anything else.
    UuidRepair(Uuids),
    /// The local disk failed a read or write (the peer's replicated write included): the
    /// volume applies `on-io-error` (`Volume::handle_local_io_error`).
    LocalIoError {
        /// A write failed (else a read).
        write: bool,
    },
    /// The link of a SyncSource goes while every out-of-sync block is answered: its target
    /// may have finished unseen (`Volume::handle_sync_source_tail`). Comes before the
    /// State call that reports the loss.
    SyncSourceTail,
    /// Become SyncSource; the answer carries the sync UUID to send.
    SyncSourceStart,
    /// Become SyncTarget with this sync UUID.
    SyncTargetStart(u64),
    /// The resync ended on this side.
    SyncFinished {
        /// This node was the target.
        target: bool,
        /// Blocks that failed.
        failed: u64,
        /// The peer's UUIDs from the handshake.
        peer: Option<Uuids>,
    },
    /// Run a handler of the `handlers` section (DRBD's `drbd_khelper`).
    Handler(Handler),
    /// Not a session's call: the fence-peer handler started for a lost connection has
    /// exited (the runtime posts it into its own loop; no answer goes to the session).
    FenceResult {
        /// The connect count of the core's `FencePeer` action.
        connect_count: u64,
        /// The exit code (`None`: killed by a signal, or it could not run).
        code: Option<i32>,
    },
}

/// The handlers the connection calls (`handlers { NAME "command"; }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `split-brain`: a split brain no policy resolved.
    SplitBrain,
    /// `initial-split-brain`: a split brain was detected (resolved or not).
    InitialSplitBrain,
    /// `pri-lost-after-sb`: a policy chose this Primary as the split-brain victim.
    PriLostAfterSb,
    /// `pri-lost`: `rr-conflict call-pri-lost`: this Primary should become SyncTarget.
    PriLost,
    /// `local-io-error`: `on-io-error call-local-io-error` and the disk failed.
    LocalIoError,
}

impl Handler {
    /// The handler's name in the `handlers` section.
    pub fn name(self) -> &'static str {
        match self {
            Handler::SplitBrain => "split-brain",
            Handler::InitialSplitBrain => "initial-split-brain",
            Handler::PriLostAfterSb => "pri-lost-after-sb",
            Handler::PriLost => "pri-lost",
            Handler::LocalIoError => "local-io-error",
        }
    }
}

/// A split brain the last handshake found and did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitBrainSeen {
    /// This node's bitmap weight (4 KiB blocks changed) at the handshake.
    pub local_bits: u64,
    /// The peer's, from its P_UUIDS.
    pub peer_bits: u64,
    /// This node's UUIDs.
    pub local: Uuids,
    /// The peer's.
    pub peer: Uuids,
}

/// The event loop's answer: the local disk as it stands now, and for
/// [`PeerCall::SyncSourceStart`] the sync UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerReply {
    /// For the next handshake and the STATE packets.
    pub local: LocalDisk,
    /// The sync UUID ([`PeerCall::SyncSourceStart`]), else 0.
    pub sync_uuid: u64,
}

/// Where the session's calls go (the daemon's event loop). Calls never wait: the loop
/// carries a call out when it gets to it and answers with [`Input::Reply`] through
/// [`PeerHandle::deliver`], so the session never blocks on the loop (which may itself be
/// waiting for the data path, which may be waiting for the session).
pub trait Host: Send {
    /// Queues `call`; false if the daemon's loop is gone.
    fn notify(&self, call: PeerCall) -> bool;
}

/// An operator's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// `connect [--discard-my-data]`.
    Connect {
        /// One-shot: this node's data is the one to throw away.
        discard_my_data: bool,
    },
    /// `disconnect`.
    Disconnect,
    /// The local disk changed (role, disk state, UUIDs).
    Local(LocalDisk),
    /// `verify`: start an online verify from this node (the event loop checked that the
    /// resource is Connected with nothing running).
    Verify,
    /// `invalidate`: become SyncTarget of a full sync.
    Invalidate,
    /// `invalidate-remote`: become SyncSource of a full sync.
    InvalidateRemote,
    /// `pause-sync` (true) / `resume-sync` (false).
    PauseSync(bool),
    /// Frozen I/O may continue (the peer is fenced, or `resume-io`).
    ResumeIo,
}

/// Everything the session reacts to.
#[derive(Debug)]
pub enum Input {
    /// An application write, trim, zero or flush from the NBD data path.
    App {
        /// The NBD request.
        tag: u64,
        /// What to do.
        op: Op,
    },
    /// An application read that failed on the local disk (the peer may serve it).
    ReadFailed {
        /// The NBD request.
        tag: u64,
        /// The read.
        op: Op,
    },
    /// The connector established the two sockets.
    Linked(PeerLink),
    /// The connector cannot work (configuration error).
    LinkGaveUp(String),
    /// A frame from the peer.
    Packet {
        /// The link generation it came on.
        generation: u64,
        /// Its type.
        ty: PacketType,
        /// Its frame flags.
        flags: u8,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// A receiver stopped (EOF, error, bad frame).
    RecvFailed {
        /// The link generation.
        generation: u64,
        /// Which socket's receiver.
        data: bool,
        /// Why.
        why: String,
    },
    /// An operator's request.
    Admin(Admin),
    /// The event loop carried out a call.
    Reply {
        /// The call.
        call: PeerCall,
        /// Its answer.
        reply: PeerReply,
    },
    /// The split-brain save finished (or failed, with why).
    SplitBrainSaved(Result<crate::sbsave::Saved, String>),
    /// Go down: disconnect, finish what is in flight, exit.
    Stop,
}

/// What status shows of the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// The resync, while one runs.
    pub sync: Option<SyncProgress>,
    /// Out-of-sync KiB.
    pub oos_kib: u64,
    /// KiB sent to the peer (`ns:`).
    pub net_sent_kib: u64,
    /// KiB received from the peer (`nr:`).
    pub net_recv_kib: u64,
    /// Requests waiting for the peer's ack (`pe:`).
    pub pending: u64,
    /// KiB written to the local disk for the peer (replicated writes and resync data on
    /// a Secondary/SyncTarget), for `dw:`.
    pub disk_written_kib: u64,
    /// KiB read from the local disk for the peer (resync), for `dr:`.
    pub disk_read_kib: u64,
    /// Activity-log transactions written (`al:`).
    pub al_writes: u64,
    /// Bitmap write-backs (`bm:`).
    pub bm_writes: u64,
    /// KiB a checksum-based resync (`csums-alg`) found equal and did not transfer.
    pub same_csum_kib: u64,
    /// 4 KiB blocks the last online verify found different.
    pub verify_found_blocks: u64,
    /// `pause-sync` here (proc's `u` flag).
    pub user_paused: bool,
    /// `pause-sync` on the peer (proc's `p` flag).
    pub peer_paused: bool,
    /// The last handshake found a split brain it did not resolve.
    pub split_brain: Option<SplitBrainSeen>,
    /// Application I/O is frozen by fencing (`resource-and-stonith`).
    pub frozen: bool,
    /// How long application requests took.
    pub ack_latency: crate::status::LatencyHistogram,
}

/// The running session of one volume.
pub struct PeerHandle {
    tx: inbox::InputTx,
    status: Arc<Mutex<PeerStatus>>,
    completions: Arc<Completions>,
    local_only: Arc<AtomicBool>,
    user_paused: AtomicBool,
    thread: Option<JoinHandle<Bitmap>>,
}

impl PeerHandle {
    /// Starts the session (opening its own handle on the data disk). `connect`: start connecting at once
    /// (`up`), else StandAlone until [`Admin::Connect`].
    pub fn start(
        cfg: SessionConfig,
        bitmap: Bitmap,
        host: Box<dyn Host>,
        connect: bool,
    ) -> std::io::Result<PeerHandle> {
        let (tx, rx) = inbox::Inbox::new()?;
        let status = Arc::new(Mutex::new(PeerStatus::default()));
        let completions = Completions::new()?;
        let session = session::Session::new(
            cfg,
            bitmap,
            host,
            tx.clone(),
            rx,
            status.clone(),
            completions.clone(),
        )?;
        let thread = std::thread::Builder::new()
            .name("urbd-peer".into())
            .spawn(move || session.run())?;
        if connect {
            let _ = tx.send(Input::Admin(Admin::Connect {
                discard_my_data: false,
            }));
        }
        Ok(PeerHandle {
            tx,
            status,
            completions,
            local_only: Arc::new(AtomicBool::new(false)),
            user_paused: AtomicBool::new(false),
            thread: Some(thread),
        })
    }

    /// Sends an operator's request (answered through the state the event loop sees).
    pub fn admin(&self, a: Admin) {
        if let Admin::PauseSync(on) = a {
            self.user_paused.store(on, Ordering::Release);
        }
        let _ = self.tx.send(Input::Admin(a));
    }

    /// `pause-sync` is in force on this node.
    pub fn is_user_paused(&self) -> bool {
        self.user_paused.load(Ordering::Acquire)
    }

    /// Hands the session the answer to one of its calls.
    pub fn deliver(&self, call: PeerCall, reply: PeerReply) {
        let _ = self.tx.send(Input::Reply { call, reply });
    }

    /// What status shows.
    pub fn status(&self) -> PeerStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wraps the local backend of the NBD data path.
    pub fn backend(&self, local: Box<dyn Backend>) -> Box<dyn Backend> {
        Box::new(ReplBackend::new(
            local,
            self.tx.clone(),
            self.completions.clone(),
            self.local_only.clone(),
        ))
    }

    /// While set, the data path's requests bypass the session (see [`ReplBackend`]): set it
    /// around stopping or restarting the data path, which happens when no client has the
    /// device open.
    pub fn set_local_only(&self, on: bool) {
        self.local_only.store(on, Ordering::Release);
    }

    /// Disconnects, waits for what is in flight and stops. Returns the bitmap to persist.
    pub fn stop(mut self) -> Option<Bitmap> {
        let _ = self.tx.send(Input::Stop);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(Input::Stop);
            let _ = t.join();
        }
    }
}
