//! What the connection tells its host: [`ConnEvent`], with typed reasons for refusing a
//! peer ([`ConnRefusal`]) and for losing a transport ([`LostReason`]).

use crate::meta::Uuids;
use crate::wire::{Agreed, Incompatible, WireProtocol};

use super::super::state::ConnState;
use super::super::uuid_compare::{HandshakeDecision, HandshakeRefusal};

/// Something the host must act on or log, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// The connection state changed.
    StateChanged {
        /// Before.
        from: ConnState,
        /// After.
        to: ConnState,
    },
    /// Open a transport to the peer now (dial, and keep accepting), then report it with
    /// `handle_transport_up`.
    Connect,
    /// Close the transport (after sending what `poll_transmit` returned).
    CloseTransport,
    /// HELLO exchanged: the agreed version and features.
    Agreed(Agreed),
    /// The peer answered our challenge with the right HMAC.
    Authenticated,
    /// The transport went away; the connection retries after `connect-int`.
    TransportLost(LostReason),
    /// The peer was refused; the connection is StandAlone until the next `connect`.
    Refused(ConnRefusal),
    /// The resync decision (`drbd_sync_handshake`), with both UUID sets for the log line
    /// `uuid_compare()=N by rule R` and the agreed size.
    Decided {
        /// The decision.
        decision: HandshakeDecision,
        /// Our UUIDs as compared.
        local: Uuids,
        /// The peer's UUIDs as received.
        peer: Uuids,
        /// The size both agreed on, sectors.
        size_sect: u64,
    },
    /// The one-shot `--discard-my-data` was used by a handshake and is now cleared.
    DiscardMyDataCleared,
}

/// Why a transport was given up (the connection goes back to WFConnection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LostReason {
    /// The host reported the transport gone (DRBD's NetworkFailure/BrokenPipe).
    #[error("transport lost")]
    Transport,
    /// "PingAck did not arrive in time."
    #[error("PingAck did not arrive in time.")]
    PingTimeout,
    /// The handshake took longer than `connect-int`.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer sent DISCONNECT.
    #[error("peer disconnected")]
    PeerDisconnected,
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// Our UUIDs changed after we sent them (a promotion during the handshake takes a new
    /// current UUID): the peer decides with the old ones, so the handshake starts over.
    #[error("local UUIDs changed during the handshake")]
    LocalChanged,
}

/// A peer that broke the setup sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A packet that has no place at this point ("unexpected packet ... received").
    #[error("unexpected {0} packet")]
    Unexpected(crate::wire::PacketType),
    /// A role or disk state number out of range in STATE.
    #[error("invalid value in STATE")]
    BadState,
}

/// Which `net` setting the peers disagree on (DRBD: "incompatible %s settings").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `protocol`.
    Protocol {
        /// Ours.
        ours: WireProtocol,
        /// The peer's.
        peer: WireProtocol,
    },
    /// `after-sb-0pri`.
    AfterSb0p,
    /// `after-sb-1pri`.
    AfterSb1p,
    /// `after-sb-2pri`.
    AfterSb2p,
    /// `allow-two-primaries`.
    TwoPrimaries,
    /// `data-integrity-alg`.
    IntegrityAlg,
    /// `csums-alg`.
    CsumsAlg,
    /// `verify-alg`.
    VerifyAlg,
    /// Both sides were told `--discard-my-data`.
    DiscardMyData,
}

impl Setting {
    fn name(self) -> &'static str {
        match self {
            Setting::Protocol { .. } => "protocol",
            Setting::AfterSb0p => "after-sb-0pri",
            Setting::AfterSb1p => "after-sb-1pri",
            Setting::AfterSb2p => "after-sb-2pri",
            Setting::TwoPrimaries => "allow-two-primaries",
            Setting::IntegrityAlg => "data-integrity-alg",
            Setting::CsumsAlg => "csums-alg",
            Setting::VerifyAlg => "verify-alg",
            Setting::DiscardMyData => "discard-my-data",
        }
    }
}

/// Why the peer was refused. Each leaves the connection StandAlone (DRBD's
/// `conn_request_state(C_DISCONNECTING)`), as an operator must step in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnRefusal {
    /// No common protocol version (`drbd_do_features`).
    #[error("{0}")]
    Version(#[from] Incompatible),
    /// The peer's HMAC does not match: a different shared secret (`drbd_do_auth`).
    #[error("Authentication of peer {peer} failed")]
    AuthFailed {
        /// The peer's configured name.
        peer: String,
    },
    /// Only one side is configured for authentication.
    #[error("Authentication with peer {peer} failed: {what}")]
    AuthMismatch {
        /// The peer's configured name.
        peer: String,
        /// "peer requires authentication" or "peer did not authenticate".
        what: &'static str,
    },
    /// The peer sent our own challenge back ("Peer presented the same challenge!").
    #[error("Peer {peer} presented the same challenge!")]
    ChallengeEchoed {
        /// The peer's configured name.
        peer: String,
    },
    /// The challenge is shorter than we accept.
    #[error("Peer {peer} sent a short challenge")]
    ChallengeTooShort {
        /// The peer's configured name.
        peer: String,
    },
    /// A `net` setting differs (`receive_protocol`).
    #[error("incompatible {} settings", .0.name())]
    Incompatible(Setting),
    /// The peer's disk is smaller than the size in use (`receive_sizes`).
    #[error("The peer's disk size is too small! ({agreed_sect} < {in_use_sect} sectors)")]
    PeerDiskTooSmall {
        /// The size the two disks allow.
        agreed_sect: u64,
        /// Our size in use.
        in_use_sect: u64,
    },
    /// Unresolved split brain, with both UUID sets (`drbd_sync_handshake`).
    #[error("Split-Brain detected but unresolved, dropping connection!")]
    SplitBrain {
        /// Our UUIDs.
        local: Uuids,
        /// The peer's.
        peer: Uuids,
    },
    /// Another refusal of `sync_handshake` (unrelated data, rr-conflict, ...).
    #[error("{0}")]
    Handshake(HandshakeRefusal),
}
