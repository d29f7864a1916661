//! The connection to one peer, sans I/O: DRBD 8.4's `drbd_connect` handshake from
//! StandAlone to the resync decision (`conn_connect`, `drbd_do_features`, `drbd_do_auth`,
//! `receive_protocol`, `receive_sizes`, `receive_uuids`, `receive_state`,
//! `drbd_sync_handshake`), plus the PING keep-alive.
//!
//! The host owns the sockets and the clock. It feeds in what happened with `handle_*`
//! (every time-dependent call takes `now`, which must not go backwards) and then drains the
//! outputs, in this order after every input: [`Connection::poll_transmit`] until `None`
//! (send them, in order, on the data socket or the meta socket as
//! [`Transmit::socket`] says), [`Connection::poll_event`] until `None`, then arm a wake-up
//! for [`Connection::poll_timeout`] and call [`Connection::handle_timeout`] when it passes.
//!
//! Sequence (`docs/PROTOCOL.md` section 7): `handle_admin(Connect)` → WFConnection and a
//! [`ConnEvent::Connect`]; `handle_transport_up` → WFReportParams and HELLO; after HELLO
//! (and, with `cram-hmac-alg`, the challenge both ways) REPORT_PARAMS; then SIZES, UUIDS
//! and STATE; when the peer's three have arrived, [`sync_handshake`] decides: Connected,
//! WFBitMapS/WFBitMapT (DRBD's next states for a resync, full or bitmap-based) or a
//! refusal. Refusals leave the connection StandAlone; a lost transport, a PING timeout or a
//! protocol error go back to WFConnection and ask for a new attempt after `connect-int`.
//!
//! One volume (number 0) for now.

mod auth;
mod config;
mod event;
mod timer;
mod transmit;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Instant;

use crate::meta;
use crate::wire::{
    self, Agreed, AuthChallenge, Hello, Packet, ReportParams, Sizes, conn_flags, features,
    negotiate,
};

use super::state::{ConnState, DiskState, Role};
use super::uuid_compare::{
    FF_WSAME, Handshake, HandshakeDecision, HandshakeInput, HandshakeRefusal, Link,
    PRO_VERSION_MAX, Side, sync_handshake, uuid_flags,
};

pub use auth::CHALLENGE_LEN;
pub use config::{AuthConfig, ConnConfig, LocalDisk, NetTimers};
pub use event::{ConnEvent, ConnRefusal, LostReason, ProtocolError, Setting};
pub use transmit::{OwnedReportParams, Transmit};

use timer::{Timer, TimerTable};

/// An administrative request for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAdmin {
    /// `connect [--discard-my-data]`.
    Connect {
        /// Mark this node's data as the one to throw away at the next handshake (one-shot).
        discard_my_data: bool,
    },
    /// `disconnect`.
    Disconnect,
}

/// What the host knows about a transport it just opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportUp {
    /// This node accepted the peer's connection (rather than dialled it). Exactly one side
    /// of a transport says so; it gets DRBD's `RESOLVE_CONFLICTS`.
    pub accepted: bool,
    /// Fresh random bytes from the host's CSPRNG: our auth challenge.
    pub random: [u8; CHALLENGE_LEN],
}

/// Where the setup sequence is, while WFReportParams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Our HELLO is out; waiting for the peer's.
    Hello,
    /// Challenges are out; waiting for the peer's challenge and its response.
    Auth { answered: bool, verified: bool },
    /// Our REPORT_PARAMS is out; waiting for the peer's.
    Params,
    /// Our SIZES/UUIDS/STATE are out; collecting the peer's.
    Volume,
}

#[derive(Debug, Clone, Copy, Default)]
struct PeerVolume {
    sizes: Option<Sizes>,
    uuids: Option<wire::Uuids>,
    state: Option<wire::State>,
}

/// One connection (resource, peer). See the module doc for the calling contract.
#[derive(Debug)]
pub struct Connection {
    config: ConnConfig,
    local: LocalDisk,
    conn: ConnState,
    phase: Phase,
    discard_my_data: bool,
    transport_up: bool,
    /// When the current transport came up (for the reconnect delay after a loss).
    up_since: Option<Instant>,
    accepted: bool,
    challenge: [u8; CHALLENGE_LEN],
    agreed: Option<Agreed>,
    peer_params: Option<(u32, bool)>,
    peer: PeerVolume,
    peer_role: Role,
    peer_disk: DiskState,
    agreed_size: u64,
    /// The local disk as our SIZES/UUIDS/STATE described it. Both sides must decide with
    /// the same UUIDs: if ours changed since (a promotion during the handshake takes a new
    /// current UUID, and the writes after it are only in our bitmap), the handshake
    /// starts over rather than decide with UUIDs the peer has not seen.
    sent: Option<LocalDisk>,
    timers: TimerTable,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ConnEvent>,
}

/// Bound on queued transmits and events: one handshake queues a dozen at most, and the host
/// drains both after every input.
const MAX_QUEUED: usize = 64;

impl Connection {
    /// A StandAlone connection.
    pub fn new(config: ConnConfig, local: LocalDisk) -> Connection {
        Connection {
            config,
            local,
            conn: ConnState::StandAlone,
            phase: Phase::Hello,
            discard_my_data: false,
            transport_up: false,
            up_since: None,
            accepted: false,
            challenge: [0; CHALLENGE_LEN],
            agreed: None,
            peer_params: None,
            peer: PeerVolume::default(),
            peer_role: Role::Unknown,
            peer_disk: DiskState::DUnknown,
            agreed_size: 0,
            sent: None,
            timers: TimerTable::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ----- queries --------------------------------------------------------------------

    /// The connection state.
    pub fn state(&self) -> ConnState {
        self.conn
    }

    /// The peer's role (Unknown until its STATE arrived).
    pub fn peer_role(&self) -> Role {
        self.peer_role
    }

    /// The peer's disk state (DUnknown until its STATE arrived).
    pub fn peer_disk(&self) -> DiskState {
        self.peer_disk
    }

    /// Whether the one-shot `--discard-my-data` is pending.
    pub fn is_discard_my_data(&self) -> bool {
        self.discard_my_data
    }

    /// What HELLO agreed on, while a transport is up.
    pub fn agreed(&self) -> Option<Agreed> {
        self.agreed
    }

    /// The local disk as last reported.
    pub fn local(&self) -> &LocalDisk {
        &self.local
    }

    // ----- inputs ---------------------------------------------------------------------

    /// The local disk changed (role, UUIDs, bitmap, size); the next handshake uses it.
    pub fn handle_local(&mut self, local: LocalDisk) {
        self.local = local;
    }

    /// `connect` or `disconnect`.
    pub fn handle_admin(&mut self, now: Instant, cmd: ConnAdmin) {
        match cmd {
            ConnAdmin::Connect { discard_my_data } => {
                if discard_my_data {
                    self.discard_my_data = true;
                }
                if self.conn == ConnState::StandAlone {
                    self.set_state(ConnState::WFConnection);
                    self.event(ConnEvent::Connect);
                    self.timers
                        .set(Timer::Reconnect, now + self.config.timers.connect_int);
                }
            }
            ConnAdmin::Disconnect => {
                if self.transport_up {
                    self.transmit(Transmit::Disconnect);
                    self.close_transport();
                }
                self.timers.stop_all();
                self.set_state(ConnState::StandAlone);
            }
        }
    }

    /// The host has a transport to the peer (both sockets). Ignored unless WFConnection
    /// (the host then closes the extra transport).
    pub fn handle_transport_up(&mut self, now: Instant, up: TransportUp) {
        if self.conn != ConnState::WFConnection || self.transport_up {
            return;
        }
        self.transport_up = true;
        self.up_since = Some(now);
        self.accepted = up.accepted;
        self.challenge = up.random;
        self.phase = Phase::Hello;
        self.agreed = None;
        self.peer_params = None;
        self.peer = PeerVolume::default();
        self.sent = None;
        self.timers.stop(Timer::Reconnect);
        self.timers
            .set(Timer::Handshake, now + self.config.timers.connect_int);
        self.timers
            .set(Timer::Ping, now + self.config.timers.ping_int);
        self.set_state(ConnState::WFReportParams);
        self.transmit(Transmit::Hello(Hello::OURS));
    }

    /// The transport broke (reset, EOF, a frame that does not decode).
    pub fn handle_transport_lost(&mut self, now: Instant) {
        if self.transport_up {
            self.lose(now, LostReason::Transport, false);
        }
    }

    /// A packet arrived from the peer (decoded by the wire codec).
    pub fn handle_packet(&mut self, now: Instant, packet: Packet<'_>) {
        if !self.transport_up {
            return;
        }
        match packet {
            Packet::Ping => return self.transmit(Transmit::PingAck),
            Packet::PingAck => return self.timers.stop(Timer::PingAck),
            Packet::Disconnect => return self.lose(now, LostReason::PeerDisconnected, true),
            Packet::Unknown { ty, .. } => {
                // Without the frame flags we cannot know MAY_IGNORE here; the host skips
                // those before calling. Anything else unknown is a protocol error.
                return self.protocol_error(now, ProtocolError::Unexpected(ty));
            }
            _ => {}
        }
        if self.conn != ConnState::WFReportParams {
            // After the decision, later packets (bitmaps, ...) belong to the replication
            // code, which does not exist yet.
            return;
        }
        let ty = packet.packet_type();
        match (self.phase, packet) {
            (Phase::Hello, Packet::Hello(h)) => self.on_hello(now, h),
            (Phase::Auth { .. }, Packet::AuthChallenge(c)) => self.on_challenge(now, c),
            (Phase::Auth { .. }, Packet::AuthResponse(r)) => self.on_response(now, r.response),
            (Phase::Auth { .. }, Packet::ReportParams(_)) => {
                self.refuse(ConnRefusal::AuthMismatch {
                    peer: self.config.peer_name.clone(),
                    what: "peer did not authenticate",
                })
            }
            (Phase::Params, Packet::AuthChallenge(_)) => self.refuse(ConnRefusal::AuthMismatch {
                peer: self.config.peer_name.clone(),
                what: "peer requires authentication",
            }),
            (Phase::Params, Packet::ReportParams(p)) => self.on_params(p),
            (Phase::Volume, Packet::Sizes(s)) if self.peer.sizes.is_none() => {
                self.peer.sizes = Some(s);
                self.on_volume(now)
            }
            (Phase::Volume, Packet::Uuids(u)) if self.peer.uuids.is_none() => {
                self.peer.uuids = Some(u);
                self.on_volume(now)
            }
            (Phase::Volume, Packet::State(s)) if self.peer.state.is_none() => {
                self.peer.state = Some(s);
                self.on_volume(now)
            }
            _ => self.protocol_error(now, ProtocolError::Unexpected(ty)),
        }
    }

    /// Time passed; call when [`Connection::poll_timeout`] is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.expired(now) {
            match t {
                Timer::Reconnect => {
                    if self.conn == ConnState::WFConnection && !self.transport_up {
                        self.event(ConnEvent::Connect);
                        self.timers
                            .set(Timer::Reconnect, now + self.config.timers.connect_int);
                    }
                }
                Timer::Handshake => {
                    if self.conn == ConnState::WFReportParams {
                        self.lose(now, LostReason::HandshakeTimeout, true);
                    }
                }
                Timer::Ping => {
                    if self.transport_up {
                        self.transmit(Transmit::Ping);
                        self.timers
                            .set(Timer::PingAck, now + self.config.timers.ping_timeout);
                        self.timers
                            .set(Timer::Ping, now + self.config.timers.ping_int);
                    }
                }
                Timer::PingAck => {
                    if self.transport_up {
                        self.lose(now, LostReason::PingTimeout, true);
                    }
                }
            }
        }
    }

    // ----- outputs --------------------------------------------------------------------

    /// The next packet to send. Poll until `None` after every input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event. Poll until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// When to call [`Connection::handle_timeout`] next, if at all.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- the setup sequence ---------------------------------------------------------

    /// `drbd_do_features`.
    fn on_hello(&mut self, _now: Instant, peer: Hello) {
        match negotiate(&Hello::OURS, &peer) {
            Err(e) => self.refuse(ConnRefusal::Version(e)),
            Ok(agreed) => {
                self.agreed = Some(agreed);
                self.event(ConnEvent::Agreed(agreed));
                if self.config.auth.is_some() {
                    self.phase = Phase::Auth {
                        answered: false,
                        verified: false,
                    };
                    self.transmit(Transmit::AuthChallenge(self.challenge.to_vec()));
                } else {
                    self.send_params();
                }
            }
        }
    }

    /// `drbd_do_auth`, the peer's challenge: answer it.
    fn on_challenge(&mut self, now: Instant, c: AuthChallenge<'_>) {
        let Phase::Auth { answered, verified } = self.phase else {
            unreachable!("checked by the caller")
        };
        if answered {
            return self.protocol_error(
                now,
                ProtocolError::Unexpected(wire::PacketType::AUTH_CHALLENGE),
            );
        }
        let peer = self.config.peer_name.clone();
        if c.challenge.len() < CHALLENGE_LEN {
            return self.refuse(ConnRefusal::ChallengeTooShort { peer });
        }
        if c.challenge == self.challenge {
            return self.refuse(ConnRefusal::ChallengeEchoed { peer });
        }
        let secret = &self
            .config
            .auth
            .as_ref()
            .expect("in Auth phase")
            .shared_secret;
        let r = auth::response(secret, c.challenge);
        self.transmit(Transmit::AuthResponse(r));
        self.after_auth_step(true, verified);
    }

    /// `drbd_do_auth`, the peer's response to our challenge: check it.
    fn on_response(&mut self, now: Instant, got: &[u8]) {
        let Phase::Auth { answered, verified } = self.phase else {
            unreachable!("checked by the caller")
        };
        if verified {
            return self.protocol_error(
                now,
                ProtocolError::Unexpected(wire::PacketType::AUTH_RESPONSE),
            );
        }
        let secret = &self
            .config
            .auth
            .as_ref()
            .expect("in Auth phase")
            .shared_secret;
        if !auth::verify(secret, &self.challenge, got) {
            return self.refuse(ConnRefusal::AuthFailed {
                peer: self.config.peer_name.clone(),
            });
        }
        self.event(ConnEvent::Authenticated);
        self.after_auth_step(answered, true);
    }

    fn after_auth_step(&mut self, answered: bool, verified: bool) {
        if answered && verified {
            self.send_params();
        } else {
            self.phase = Phase::Auth { answered, verified };
        }
    }

    fn send_params(&mut self) {
        let c = &self.config;
        let mut flags = 0;
        if self.discard_my_data {
            flags |= conn_flags::DISCARD_MY_DATA;
        }
        let p = OwnedReportParams {
            protocol: c.protocol,
            after_sb_0p: config::code(c.policies.after_sb_0p),
            after_sb_1p: config::code(c.policies.after_sb_1p),
            after_sb_2p: config::code(c.policies.after_sb_2p),
            flags,
            two_primaries: c.two_primaries,
            integrity_alg: c.integrity_alg.clone(),
            csums_alg: c.csums_alg.clone(),
            verify_alg: c.verify_alg.clone(),
        };
        self.phase = Phase::Params;
        self.transmit(Transmit::ReportParams(p));
    }

    /// `receive_protocol`: every setting must match (after-sb values as the peer sees
    /// them), and at most one side may discard its data.
    fn on_params(&mut self, p: ReportParams<'_>) {
        let c = &self.config;
        let ours = |a| config::code(a);
        let mismatch = if p.protocol != c.protocol {
            Some(Setting::Protocol {
                ours: c.protocol,
                peer: p.protocol,
            })
        } else if p.after_sb_0p.peer_equivalent() != ours(c.policies.after_sb_0p) {
            Some(Setting::AfterSb0p)
        } else if p.after_sb_1p.peer_equivalent() != ours(c.policies.after_sb_1p) {
            Some(Setting::AfterSb1p)
        } else if p.after_sb_2p.peer_equivalent() != ours(c.policies.after_sb_2p) {
            Some(Setting::AfterSb2p)
        } else if p.two_primaries != c.two_primaries {
            Some(Setting::TwoPrimaries)
        } else if p.integrity_alg != c.integrity_alg {
            Some(Setting::IntegrityAlg)
        } else if p.csums_alg != c.csums_alg {
            Some(Setting::CsumsAlg)
        } else if p.verify_alg != c.verify_alg {
            Some(Setting::VerifyAlg)
        } else if p.discard_my_data() && self.discard_my_data {
            Some(Setting::DiscardMyData)
        } else {
            None
        };
        if let Some(s) = mismatch {
            return self.refuse(ConnRefusal::Incompatible(s));
        }
        self.peer_params = Some((p.flags, p.two_primaries));
        self.phase = Phase::Volume;
        self.send_volume();
    }

    /// `drbd_send_sizes`, `drbd_send_uuids`, `drbd_send_current_state`.
    fn send_volume(&mut self) {
        let l = self.local;
        self.sent = Some(l);
        self.transmit(Transmit::Sizes(Sizes {
            backing: l.backing_sect,
            user: l.user_sect,
            current: l.current_sect,
            max_bio_size: crate::wire::MAX_DATA,
            flags: 0,
        }));
        let mut flags = 0;
        if self.discard_my_data {
            flags |= uuid_flags::DISCARD_MY_DATA;
        }
        if l.crashed_primary {
            flags |= uuid_flags::CRASHED_PRIMARY;
        }
        if l.disk == DiskState::Inconsistent {
            flags |= uuid_flags::INCONSISTENT;
        }
        self.transmit(Transmit::Uuids(wire::Uuids {
            current: l.uuids.current,
            bitmap: l.uuids.bitmap,
            history: l.uuids.history,
            bitmap_bits: l.oos_bits,
            flags,
        }));
        self.transmit(Transmit::State(wire::State {
            role: l.role as u8,
            peer: Role::Unknown as u8,
            conn: ConnState::WFReportParams as u8,
            disk: l.disk as u8,
            pdsk: DiskState::DUnknown as u8,
            flags: 0,
        }));
    }

    fn on_volume(&mut self, now: Instant) {
        let PeerVolume {
            sizes: Some(sizes),
            uuids: Some(uuids),
            state: Some(state),
        } = self.peer
        else {
            return;
        };
        let (Some(role), Some(disk)) = (
            Role::from_wire(state.role),
            DiskState::from_wire(state.disk),
        ) else {
            return self.protocol_error(now, ProtocolError::BadState);
        };
        self.peer_role = role;
        self.peer_disk = disk;
        if !self.check_sizes(&sizes) {
            return;
        }
        if self.sent.is_some_and(|s| s.uuids != self.local.uuids) {
            return self.lose(now, LostReason::LocalChanged, true);
        }
        self.decide(uuids, role, disk);
    }

    /// `receive_sizes` / `drbd_new_dev_size`: the smaller disk wins, a configured size
    /// caps it; refuse if that is less than what is in use.
    fn check_sizes(&mut self, peer: &Sizes) -> bool {
        let l = &self.local;
        let user = min_not_zero(l.user_sect, peer.user);
        // A Diskless side has no size of its own: the other's counts (DRBD's
        // drbd_determine_dev_size with only the peer's disk).
        let mut agreed = match (l.disk <= DiskState::Failed, peer.backing == 0) {
            (true, _) => peer.backing,
            (false, true) => l.backing_sect,
            (false, false) => l.backing_sect.min(peer.backing),
        };
        if user != 0 {
            agreed = agreed.min(user);
        }
        if agreed < l.current_sect && l.disk >= DiskState::Outdated {
            self.refuse(ConnRefusal::PeerDiskTooSmall {
                agreed_sect: agreed,
                in_use_sect: l.current_sect,
            });
            return false;
        }
        self.agreed_size = agreed;
        true
    }

    /// `drbd_sync_handshake` and the state change that follows it.
    fn decide(&mut self, p: wire::Uuids, peer_role: Role, peer_disk: DiskState) {
        let l = self.local;
        let peer_uuids = meta::Uuids {
            current: p.current,
            bitmap: p.bitmap,
            history: p.history,
        };
        let features = self.agreed.map_or(0, |a| a.features);
        let input = HandshakeInput {
            local: Side {
                uuids: l.uuids,
                crashed_primary: l.crashed_primary,
                role: l.role,
            },
            peer: Side {
                uuids: peer_uuids,
                crashed_primary: p.flags & uuid_flags::CRASHED_PRIMARY != 0,
                role: peer_role,
            },
            link: Link {
                pro_version: PRO_VERSION_MAX,
                features: if features & features::WSAME != 0 {
                    FF_WSAME
                } else {
                    0
                },
                resolve_conflicts: self.accepted,
            },
            local_disk: l.disk,
            local_disk_after: l.disk,
            peer_disk,
            local_changes: l.oos_bits,
            peer_changes: p.bitmap_bits,
            local_discard_my_data: self.discard_my_data,
            peer_discard_my_data: p.flags & uuid_flags::DISCARD_MY_DATA != 0
                || self
                    .peer_params
                    .is_some_and(|(f, _)| f & conn_flags::DISCARD_MY_DATA != 0),
            policies: self.config.policies,
        };
        let mut decision = sync_handshake(&input);
        if l.disk <= DiskState::Failed || peer_disk <= DiskState::Failed {
            // DRBD's receive_state runs drbd_sync_handshake only when both nodes have a
            // disk: with a Diskless side there is nothing to compare or resync.
            decision = HandshakeDecision::connected(decision.comparison);
        }
        // urbd's choices where DRBD changes a Primary's role inside the handshake:
        // - `call-pri-lost-after-sb` picked this Primary as the victim (`demote_first`).
        //   DRBD demotes it if the device is not in use and calls pri-lost-after-sb if it
        //   is; urbd's Primary always serves its export, so it counts as in use: the split
        //   brain stays unresolved (the host runs the handler; the operator demotes).
        // - a Primary would become SyncTarget (`rr-conflict violently`): urbd never resyncs
        //   under a serving Primary; refused as with `rr-conflict disconnect`.
        if decision.demote_first {
            decision.outcome = Handshake::Refuse(HandshakeRefusal::SplitBrain);
            decision.split_brain = None;
            decision.call_split_brain = true;
        } else if matches!(decision.outcome, Handshake::SyncTarget { .. })
            && l.role == Role::Primary
        {
            decision.outcome = Handshake::Refuse(HandshakeRefusal::TargetIsPrimary);
        }
        self.event(ConnEvent::Decided {
            decision,
            local: l.uuids,
            peer: peer_uuids,
            size_sect: self.agreed_size,
        });
        let next = match decision.outcome {
            Handshake::Connected => ConnState::Connected,
            Handshake::SyncSource { .. } => ConnState::WFBitMapS,
            Handshake::SyncTarget { .. } => ConnState::WFBitMapT,
            Handshake::Refuse(HandshakeRefusal::SplitBrain) => {
                return self.refuse(ConnRefusal::SplitBrain {
                    local: l.uuids,
                    peer: peer_uuids,
                });
            }
            Handshake::Refuse(r) => return self.refuse(ConnRefusal::Handshake(r)),
        };
        if self.discard_my_data {
            // One-shot (DRBD clears DISCARD_MY_DATA once the handshake used it).
            self.discard_my_data = false;
            self.event(ConnEvent::DiscardMyDataCleared);
        }
        self.timers.stop(Timer::Handshake);
        self.set_state(next);
    }

    // ----- helpers --------------------------------------------------------------------

    /// Drop the peer and stay StandAlone until the operator connects again.
    fn refuse(&mut self, why: ConnRefusal) {
        self.event(ConnEvent::Refused(why));
        self.transmit(Transmit::Disconnect);
        self.close_transport();
        self.timers.stop_all();
        self.set_state(ConnState::StandAlone);
    }

    fn protocol_error(&mut self, now: Instant, e: ProtocolError) {
        self.lose(now, LostReason::Protocol(e), true);
    }

    /// Give up the transport and try again: at once after an orderly disconnect of the
    /// peer, a handshake restarted on purpose, or the loss of a link that had been up for
    /// `connect-int` (DRBD's receiver reconnects, listening, right after a loss); after
    /// `connect-int` when the attempt itself failed (no tight loop with a peer that keeps
    /// failing the handshake).
    fn lose(&mut self, now: Instant, why: LostReason, _host_knows: bool) {
        let connect_int = self.config.timers.connect_int;
        let was_up_long = self
            .up_since
            .take()
            .is_some_and(|t| now.saturating_duration_since(t) >= connect_int);
        let at_once = match why {
            LostReason::PeerDisconnected | LostReason::LocalChanged => true,
            LostReason::Transport | LostReason::PingTimeout => was_up_long,
            LostReason::HandshakeTimeout | LostReason::Protocol(_) => false,
        };
        self.event(ConnEvent::TransportLost(why));
        // Even when the host reported the loss itself it gets CloseTransport: that is where
        // it closes its sockets and tells the data side the peer is gone.
        self.close_transport();
        self.timers.stop_all();
        self.timers.set(
            Timer::Reconnect,
            if at_once { now } else { now + connect_int },
        );
        self.set_state(ConnState::WFConnection);
    }

    fn close_transport(&mut self) {
        if self.transport_up {
            self.transport_up = false;
            self.event(ConnEvent::CloseTransport);
        }
        self.agreed = None;
        self.peer_role = Role::Unknown;
        self.peer_disk = DiskState::DUnknown;
    }

    fn set_state(&mut self, to: ConnState) {
        let from = self.conn;
        if from != to {
            self.conn = to;
            self.event(ConnEvent::StateChanged { from, to });
        }
    }

    fn transmit(&mut self, t: Transmit) {
        assert!(
            self.transmits.len() < MAX_QUEUED,
            "host did not drain poll_transmit"
        );
        self.transmits.push_back(t);
    }

    fn event(&mut self, e: ConnEvent) {
        assert!(
            self.events.len() < MAX_QUEUED,
            "host did not drain poll_event"
        );
        self.events.push_back(e);
    }
}

fn min_not_zero(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}
