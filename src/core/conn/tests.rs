//! Two connections over an in-memory link (quinn's test `Pair`): frames are encoded with
//! the wire codec and decoded on the other side, time is virtual and jumps to the earliest
//! `poll_timeout`, nothing sleeps and no socket is opened. Each test names the DRBD 8.4
//! behaviour (function in `drbd/drbd_receiver.c` unless said otherwise) it checks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::core::{
    AdminCmd, AttachInfo, ConnState, DiskState, Fencing, Handshake, Outcome, Role, Volume,
    VolumeConfig,
};
use crate::meta::{MdFlags, UUID_JUST_CREATED, Uuids};
use crate::wire::{Frame, Hello, Incompatible, Packet, WireProtocol};

use super::*;

const SIZE: u64 = 2048;

/// One node: its volume (the source of UUIDs, role and disk state), its connection, and
/// the events it produced.
struct Node {
    vol: Volume,
    conn: Connection,
    events: Vec<(Instant, ConnEvent)>,
    wants_connect: bool,
    open: bool,
    up_at: Vec<Instant>,
}

enum Msg {
    Bytes(Vec<u8>),
    /// The sender closed the transport (TCP FIN after the bytes before it).
    Fin,
}

struct Pair {
    a: Node,
    b: Node,
    time: Instant,
    /// Packets vanish (the transport stays up): for ping timeouts.
    blackhole: bool,
    a_to_b: VecDeque<Msg>,
    b_to_a: VecDeque<Msg>,
    /// Seeded PRNG for auth challenges (splitmix64).
    seed: u64,
}

fn attached(uuids: Uuids, flags: u32) -> Volume {
    let mut v = Volume::new(VolumeConfig {
        volume: 0,
        minor: 0,
        fencing: Fencing::DontCare,
    });
    let info = AttachInfo {
        uuids,
        flags: MdFlags(flags),
        la_size_sect: 0,
        capacity_sect: SIZE,
        oos_bits: 0,
    };
    assert_eq!(v.handle_attach(info), Ok(Outcome::Changed));
    while v.poll_action().is_some() {}
    v
}

fn fresh() -> Volume {
    attached(
        Uuids {
            current: UUID_JUST_CREATED,
            ..Uuids::default()
        },
        MdFlags::AL_CLEAN,
    )
}

const SHARED: u64 = 0x1234_5678_9ABC_DEF0;

/// UpToDate with current UUID [`SHARED`]: two nodes after a finished initial sync.
fn synced() -> Volume {
    attached(
        Uuids {
            current: SHARED,
            bitmap: 0,
            history: [UUID_JUST_CREATED, 0],
        },
        MdFlags::CONSISTENT | MdFlags::WAS_UP_TO_DATE | MdFlags::AL_CLEAN,
    )
}

fn disk_of(v: &Volume, oos_bits: u64) -> LocalDisk {
    let s = v.state();
    LocalDisk {
        uuids: v.uuids().expect("attached"),
        role: s.role,
        disk: s.disk,
        crashed_primary: false,
        oos_bits,
        backing_sect: SIZE,
        user_sect: 0,
        current_sect: 0,
    }
}

fn node(name: &str, vol: Volume, config: impl FnOnce(&mut ConnConfig)) -> Node {
    let mut c = ConnConfig::new(name);
    config(&mut c);
    let local = disk_of(&vol, 0);
    Node {
        conn: Connection::new(c, local),
        vol,
        events: Vec::new(),
        wants_connect: false,
        open: false,
        up_at: Vec::new(),
    }
}

impl Node {
    fn refresh(&mut self, oos_bits: u64) {
        let d = disk_of(&self.vol, oos_bits);
        self.conn.handle_local(d);
    }

    fn refusals(&self) -> Vec<ConnRefusal> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                ConnEvent::Refused(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn decisions(&self) -> Vec<Handshake> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                ConnEvent::Decided { decision, .. } => Some(decision.outcome),
                _ => None,
            })
            .collect()
    }

    fn lost(&self) -> Vec<(Instant, LostReason)> {
        self.events
            .iter()
            .filter_map(|(t, e)| match e {
                ConnEvent::TransportLost(r) => Some((*t, *r)),
                _ => None,
            })
            .collect()
    }
}

impl Pair {
    fn new(a: Node, b: Node) -> Pair {
        Pair {
            a,
            b,
            time: Instant::now(), // the harness's epoch; the core never reads a clock
            blackhole: false,
            a_to_b: VecDeque::new(),
            b_to_a: VecDeque::new(),
            seed: 0x5EED,
        }
    }

    fn random(&mut self) -> [u8; CHALLENGE_LEN] {
        let mut out = [0; CHALLENGE_LEN];
        for chunk in out.chunks_mut(8) {
            self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
        }
        out
    }

    /// `connect` on both nodes.
    fn connect(&mut self) {
        let now = self.time;
        for n in [&mut self.a, &mut self.b] {
            n.conn.handle_admin(
                now,
                ConnAdmin::Connect {
                    discard_my_data: false,
                },
            );
        }
    }

    /// Drains one node's outputs onto the link. Returns whether anything moved.
    fn drain(
        now: Instant,
        n: &mut Node,
        out: &mut VecDeque<Msg>,
        inbox: &mut VecDeque<Msg>,
        blackhole: bool,
    ) -> bool {
        let mut moved = false;
        while let Some(t) = n.conn.poll_transmit() {
            moved = true;
            if n.open && !blackhole {
                let mut bytes = Vec::new();
                t.encode(&mut bytes);
                out.push_back(Msg::Bytes(bytes));
            }
        }
        while let Some(e) = n.conn.poll_event() {
            moved = true;
            match e {
                ConnEvent::Connect => n.wants_connect = true,
                ConnEvent::CloseTransport if n.open => {
                    n.open = false;
                    out.push_back(Msg::Fin);
                    inbox.clear();
                }
                _ => {}
            }
            n.events.push((now, e));
        }
        moved
    }

    fn deliver(now: Instant, n: &mut Node, inbox: &mut VecDeque<Msg>) -> bool {
        let Some(msg) = inbox.pop_front() else {
            return false;
        };
        if !n.open {
            return true;
        }
        match msg {
            Msg::Bytes(bytes) => {
                let (frame, used) = Frame::decode(&bytes).expect("valid frame").expect("whole");
                assert_eq!(used, bytes.len());
                n.conn.handle_packet(now, frame.packet);
            }
            Msg::Fin => {
                n.open = false;
                n.conn.handle_transport_lost(now);
            }
        }
        true
    }

    /// Moves everything that can move at the current time.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let now = self.time;
            let mut moved = Self::drain(
                now,
                &mut self.a,
                &mut self.a_to_b,
                &mut self.b_to_a,
                self.blackhole,
            );
            moved |= Self::drain(
                now,
                &mut self.b,
                &mut self.b_to_a,
                &mut self.a_to_b,
                self.blackhole,
            );
            moved |= Self::deliver(now, &mut self.b, &mut self.a_to_b);
            moved |= Self::deliver(now, &mut self.a, &mut self.b_to_a);
            if !moved && self.try_establish() {
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the pair did not settle");
    }

    /// Both sides in WFConnection, one asked to connect, no transport left: a TCP
    /// connection forms (the asker dialled, the other accepted).
    fn try_establish(&mut self) -> bool {
        let ready = |n: &Node| !n.open && n.conn.state() == ConnState::WFConnection;
        if !(ready(&self.a) && ready(&self.b)) || !(self.a.wants_connect || self.b.wants_connect) {
            return false;
        }
        if !self.a_to_b.is_empty() || !self.b_to_a.is_empty() {
            return false;
        }
        let a_dialled = self.a.wants_connect;
        let (ra, rb) = (self.random(), self.random());
        let now = self.time;
        for (n, accepted, random) in [(&mut self.a, !a_dialled, ra), (&mut self.b, a_dialled, rb)] {
            n.wants_connect = false;
            n.open = true;
            n.up_at.push(now);
            n.conn
                .handle_transport_up(now, TransportUp { accepted, random });
        }
        true
    }

    /// Settles, then jumps time to each next timeout up to `d` from now.
    fn run_for(&mut self, d: Duration) {
        let end = self.time + d;
        self.settle();
        loop {
            let next = [self.a.conn.poll_timeout(), self.b.conn.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.time = self.time.max(t);
                    let now = self.time;
                    for n in [&mut self.a, &mut self.b] {
                        if n.conn.poll_timeout().is_some_and(|t| t <= now) {
                            n.conn.handle_timeout(now);
                        }
                    }
                    self.settle();
                }
                _ => break,
            }
        }
        self.time = end;
    }

    /// The host reports the transport gone on both sides (a cable pulled).
    fn cut(&mut self) {
        let now = self.time;
        self.a_to_b.clear();
        self.b_to_a.clear();
        for n in [&mut self.a, &mut self.b] {
            n.open = false;
            n.conn.handle_transport_lost(now);
        }
        self.settle();
    }

    fn states(&self) -> (ConnState, ConnState) {
        (self.a.conn.state(), self.b.conn.state())
    }
}

fn promote(v: &mut Volume, force: bool, random: u64) {
    assert_eq!(
        v.handle_admin(AdminCmd::Primary { force }, random),
        Ok(Outcome::Changed)
    );
    while v.poll_action().is_some() {}
}

fn none(_: &mut ConnConfig) {}

/// DRBD 8.4, both nodes fresh from create-md, `primary --force` on one: uuid_compare rule
/// 20/30 ("peer has just-created UUID") makes the forced side SyncSource of a full sync
/// (`drbd_sync_handshake` returns C_WF_BITMAP_S with a full-sync bitmap).
#[test]
fn fresh_nodes_forced_primary_becomes_full_sync_source() {
    let mut a = node("beta", fresh(), none);
    let b = node("alpha", fresh(), none);
    promote(&mut a.vol, true, 0xAAAA_0000_0000_0000);
    a.refresh(0);
    let mut p = Pair::new(a, b);
    p.connect();
    p.settle();
    assert_eq!(p.states(), (ConnState::WFBitMapS, ConnState::WFBitMapT));
    assert_eq!(p.a.decisions(), [Handshake::SyncSource { full: true }]);
    assert_eq!(p.b.decisions(), [Handshake::SyncTarget { full: true }]);
    assert_eq!(p.b.conn.peer_role(), Role::Primary);
    assert_eq!(p.b.conn.peer_disk(), DiskState::UpToDate);
}

/// `drbd_uuid_compare` rule 10/"equal current UUIDs, no crash": identical generations
/// connect without a resync (C_CONNECTED).
#[test]
fn identical_uuids_connect_without_sync() {
    let mut p = Pair::new(node("b", synced(), none), node("a", synced(), none));
    p.connect();
    p.settle();
    assert_eq!(p.states(), (ConnState::Connected, ConnState::Connected));
    assert_eq!(p.a.decisions(), [Handshake::Connected]);
    let decided = p.a.events.iter().find_map(|(_, e)| match e {
        ConnEvent::Decided {
            decision,
            size_sect,
            ..
        } => Some((decision.comparison, *size_sect)),
        _ => None,
    });
    let (cmp, size) = decided.expect("decided");
    assert!(cmp.to_string().starts_with("uuid_compare()=0 by rule"));
    assert_eq!(size, SIZE);
}

/// DESIGN rule 5 / `drbd_uuid_new_current`: a node promoted while disconnected rotates its
/// current UUID into the bitmap slot; at reconnect rule 50 (peer current == my bitmap)
/// makes it SyncSource of a bitmap-based resync, the other SyncTarget.
#[test]
fn writes_on_one_side_while_disconnected_give_bitmap_sync() {
    let mut a = node("b", synced(), none);
    let b = node("a", synced(), none);
    promote(&mut a.vol, false, 0xBBBB_0000_0000_0000);
    a.refresh(10);
    let mut p = Pair::new(a, b);
    p.connect();
    p.settle();
    assert_eq!(p.states(), (ConnState::WFBitMapS, ConnState::WFBitMapT));
    assert_eq!(p.a.decisions(), [Handshake::SyncSource { full: false }]);
    assert_eq!(p.b.decisions(), [Handshake::SyncTarget { full: false }]);
}

/// `drbd_sync_handshake`: both sides wrote while apart (both rotated from the same
/// generation) -> split brain; with after-sb policies `disconnect` it is "unresolved,
/// dropping connection", both StandAlone, the event carries both UUID sets. Then
/// `connect --discard-my-data` on one side resolves it manually ("Split-Brain detected,
/// manually solved"): that side becomes SyncTarget, and the flag is one-shot.
#[test]
fn split_brain_then_discard_my_data() {
    let mut a = node("b", synced(), none);
    let mut b = node("a", synced(), none);
    promote(&mut a.vol, false, 0xA000_0000_0000_0000);
    promote(&mut b.vol, false, 0xB000_0000_0000_0000);
    a.refresh(5);
    b.refresh(7);
    let (ua, ub) = (a.vol.uuids().unwrap(), b.vol.uuids().unwrap());
    let mut p = Pair::new(a, b);
    p.connect();
    p.settle();
    assert_eq!(p.states(), (ConnState::StandAlone, ConnState::StandAlone));
    assert_eq!(
        p.a.refusals(),
        [ConnRefusal::SplitBrain {
            local: ua,
            peer: ub
        }]
    );
    assert_eq!(
        p.b.refusals(),
        [ConnRefusal::SplitBrain {
            local: ub,
            peer: ua
        }]
    );
    assert_eq!(
        p.a.refusals()[0].to_string(),
        "Split-Brain detected but unresolved, dropping connection!"
    );

    // The victim steps down and discards its data.
    assert_eq!(
        p.b.vol.handle_admin(AdminCmd::Secondary, 0),
        Ok(Outcome::Changed)
    );
    while p.b.vol.poll_action().is_some() {}
    p.b.refresh(7);
    let now = p.time;
    p.b.conn.handle_admin(
        now,
        ConnAdmin::Connect {
            discard_my_data: true,
        },
    );
    p.a.conn.handle_admin(
        now,
        ConnAdmin::Connect {
            discard_my_data: false,
        },
    );
    assert!(p.b.conn.is_discard_my_data());
    p.settle();
    assert_eq!(p.states(), (ConnState::WFBitMapS, ConnState::WFBitMapT));
    assert!(matches!(
        p.b.decisions()[..],
        [Handshake::Refuse(_), Handshake::SyncTarget { .. }]
    ));
    assert!(
        !p.b.conn.is_discard_my_data(),
        "--discard-my-data is one-shot"
    );
    assert!(
        p.b.events
            .iter()
            .any(|(_, e)| *e == ConnEvent::DiscardMyDataCleared)
    );
}

/// Both promoted while apart, then `b` stepped down: one Primary (`a`), which changed less.
fn primary_changed_less(policy: impl Fn(&mut ConnConfig) + Copy) -> Pair {
    let mut a = node("b", synced(), policy);
    let mut b = node("a", synced(), policy);
    promote(&mut a.vol, false, 0xA000_0000_0000_0000);
    promote(&mut b.vol, false, 0xB000_0000_0000_0000);
    assert_eq!(
        b.vol.handle_admin(AdminCmd::Secondary, 0),
        Ok(Outcome::Changed)
    );
    while b.vol.poll_action().is_some() {}
    a.refresh(5);
    b.refresh(7);
    let mut p = Pair::new(a, b);
    p.connect();
    p.settle();
    p
}

/// after-sb-1pri call-pri-lost-after-sb picks the Primary as the victim. DRBD demotes it
/// unless its device is in use, and then calls pri-lost-after-sb and keeps the split brain
/// unresolved. urbd's Primary always serves its export: the decision says
/// `demote_first` and the split brain stays unresolved (the host runs the handlers).
#[test]
fn call_pri_lost_after_sb_never_discards_a_primary() {
    let p = primary_changed_less(|c| {
        c.policies.after_sb_0p = crate::core::AfterSb::DiscardLeastChanges;
        c.policies.after_sb_1p = crate::core::AfterSb::CallHelper;
    });
    assert_eq!(p.a.conn.state(), ConnState::StandAlone);
    assert!(matches!(
        p.a.refusals()[..],
        [ConnRefusal::SplitBrain { .. }]
    ));
    let d =
        p.a.events
            .iter()
            .find_map(|(_, e)| match e {
                ConnEvent::Decided { decision, .. } => Some(*decision),
                _ => None,
            })
            .expect("a decision");
    assert!(d.demote_first && d.call_split_brain, "{d:?}");
    assert_eq!(d.outcome, Handshake::Refuse(HandshakeRefusal::SplitBrain));
}

/// rr-conflict violently: DRBD lets a Primary become SyncTarget; urbd refuses as with
/// rr-conflict disconnect ("I shall become SyncTarget, but I am primary!").
#[test]
fn a_primary_never_becomes_sync_target() {
    let p = primary_changed_less(|c| {
        c.policies.after_sb_0p = crate::core::AfterSb::DiscardLeastChanges;
        c.policies.after_sb_1p = crate::core::AfterSb::Violently;
        c.policies.rr_conflict = crate::core::AfterSb::Violently;
    });
    assert_eq!(p.a.conn.state(), ConnState::StandAlone);
    assert_eq!(
        p.a.refusals(),
        [ConnRefusal::Handshake(HandshakeRefusal::TargetIsPrimary)]
    );
    assert_eq!(
        p.a.decisions(),
        [Handshake::Refuse(HandshakeRefusal::TargetIsPrimary)]
    );
}

/// `drbd_do_auth`: with different shared secrets each side's HMAC check fails
/// ("Authentication of peer failed"), both refuse, nothing is decided.
#[test]
fn wrong_shared_secret_is_refused_on_both_sides() {
    let secret = |s: &'static [u8]| {
        move |c: &mut ConnConfig| {
            c.auth = Some(AuthConfig {
                shared_secret: s.to_vec(),
            })
        }
    };
    let mut p = Pair::new(
        node("bob", synced(), secret(b"one")),
        node("alice", synced(), secret(b"two")),
    );
    p.connect();
    p.settle();
    assert_eq!(p.states(), (ConnState::StandAlone, ConnState::StandAlone));
    assert_eq!(
        p.a.refusals(),
        [ConnRefusal::AuthFailed { peer: "bob".into() }]
    );
    assert_eq!(
        p.b.refusals(),
        [ConnRefusal::AuthFailed {
            peer: "alice".into()
        }]
    );
    assert_eq!(
        p.a.refusals()[0].to_string(),
        "Authentication of peer bob failed"
    );
    assert!(p.a.decisions().is_empty() && p.b.decisions().is_empty());
}

/// `drbd_do_auth` with the same secret: both authenticate, then connect.
#[test]
fn same_shared_secret_connects() {
    let secret = |c: &mut ConnConfig| {
        c.auth = Some(AuthConfig {
            shared_secret: b"s3cret".to_vec(),
        })
    };
    let mut p = Pair::new(node("b", synced(), secret), node("a", synced(), secret));
    p.connect();
    p.settle();
    assert_eq!(p.states(), (ConnState::Connected, ConnState::Connected));
    assert!(
        p.a.events
            .iter()
            .any(|(_, e)| *e == ConnEvent::Authenticated)
    );
}

/// `drbd_do_auth`: one side configured without auth -> refused, not hung.
#[test]
fn auth_on_one_side_only_is_refused() {
    let secret = |c: &mut ConnConfig| {
        c.auth = Some(AuthConfig {
            shared_secret: b"x".to_vec(),
        })
    };
    let mut p = Pair::new(node("b", synced(), secret), node("a", synced(), none));
    p.connect();
    p.settle();
    assert_eq!(p.a.conn.state(), ConnState::StandAlone);
    assert!(matches!(
        p.a.refusals()[..],
        [ConnRefusal::AuthMismatch { .. }]
    ));
    assert!(p.a.decisions().is_empty() && p.b.decisions().is_empty());
}

/// `receive_protocol`: "incompatible protocol settings" -> C_DISCONNECTING on both.
#[test]
fn protocol_mismatch_is_refused() {
    let mut p = Pair::new(
        node("b", synced(), none),
        node("a", synced(), |c| c.protocol = WireProtocol::A),
    );
    p.connect();
    p.settle();
    assert_eq!(p.states(), (ConnState::StandAlone, ConnState::StandAlone));
    let want = ConnRefusal::Incompatible(Setting::Protocol {
        ours: WireProtocol::C,
        peer: WireProtocol::A,
    });
    assert_eq!(want.to_string(), "incompatible protocol settings");
    assert_eq!(p.a.refusals(), [want]);
    assert_eq!(
        p.b.refusals(),
        [ConnRefusal::Incompatible(Setting::Protocol {
            ours: WireProtocol::A,
            peer: WireProtocol::C,
        })]
    );
    assert!(p.a.decisions().is_empty());
}

/// `receive_protocol` + `convert_after_sb`: discard-local here must be discard-remote
/// there; the same value on both sides is a conflict.
#[test]
fn after_sb_policies_are_compared_as_the_peer_sees_them() {
    use crate::core::AfterSb;
    let local = |c: &mut ConnConfig| c.policies.after_sb_0p = AfterSb::DiscardLocal;
    let remote = |c: &mut ConnConfig| c.policies.after_sb_0p = AfterSb::DiscardRemote;
    let mut p = Pair::new(node("b", synced(), local), node("a", synced(), remote));
    p.connect();
    p.settle();
    assert_eq!(p.states(), (ConnState::Connected, ConnState::Connected));
    let mut p = Pair::new(node("b", synced(), local), node("a", synced(), local));
    p.connect();
    p.settle();
    assert_eq!(
        p.a.refusals(),
        [ConnRefusal::Incompatible(Setting::AfterSb0p)]
    );
}

/// `receive_sizes`: "The peer's disk size is too small!" when the agreed size would be
/// below the size in use; the other side just sees the peer go away and retries.
#[test]
fn peer_with_smaller_disk_than_in_use_is_refused() {
    let mut a = node("b", synced(), none);
    let mut b = node("a", synced(), none);
    let mut la = disk_of(&a.vol, 0);
    la.current_sect = SIZE;
    a.conn.handle_local(la);
    let mut lb = disk_of(&b.vol, 0);
    lb.backing_sect = SIZE / 2;
    b.conn.handle_local(lb);
    let mut p = Pair::new(a, b);
    p.connect();
    p.settle();
    assert_eq!(p.a.conn.state(), ConnState::StandAlone);
    assert_eq!(
        p.a.refusals(),
        [ConnRefusal::PeerDiskTooSmall {
            agreed_sect: SIZE / 2,
            in_use_sect: SIZE
        }]
    );
    assert!(p.a.decisions().is_empty());
    assert_eq!(p.b.conn.state(), ConnState::WFConnection);
}

/// `drbd_do_features`: "incompatible DRBD dialects" when the version ranges do not
/// overlap -> refused with both ranges, DISCONNECT sent.
#[test]
fn version_negotiation_failure_is_refused() {
    let t0 = Instant::now();
    let mut c = Connection::new(ConnConfig::new("peer"), disk_of(&synced(), 0));
    c.handle_admin(
        t0,
        ConnAdmin::Connect {
            discard_my_data: false,
        },
    );
    c.handle_transport_up(
        t0,
        TransportUp {
            accepted: true,
            random: [7; CHALLENGE_LEN],
        },
    );
    assert_eq!(c.poll_transmit(), Some(Transmit::Hello(Hello::OURS)));
    // The peer's HELLO through the codec.
    let mut bytes = Vec::new();
    Frame::new(
        0,
        Packet::Hello(Hello {
            min_version: 2,
            max_version: 5,
            features: 0,
        }),
    )
    .encode(&mut bytes);
    let (frame, _) = Frame::decode(&bytes).unwrap().unwrap();
    c.handle_packet(t0, frame.packet);
    assert_eq!(c.state(), ConnState::StandAlone);
    assert_eq!(c.poll_transmit(), Some(Transmit::Disconnect));
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        events.contains(&ConnEvent::Refused(ConnRefusal::Version(Incompatible {
            ours_min: 1,
            ours_max: 1,
            peer_min: 2,
            peer_max: 5
        })))
    );
    assert!(events.contains(&ConnEvent::CloseTransport));
    assert_eq!(c.poll_timeout(), None);
}

/// `drbd_connect`'s retry loop: a lost transport (NetworkFailure) goes back to
/// WFConnection, and the next attempt comes `connect-int` (10 s) later.
#[test]
fn lost_transport_reconnects_after_connect_int() {
    let mut p = Pair::new(node("b", synced(), none), node("a", synced(), none));
    p.connect();
    p.settle();
    assert_eq!(p.states(), (ConnState::Connected, ConnState::Connected));
    p.run_for(Duration::from_secs(3));
    let lost_at = p.time;
    p.cut();
    assert_eq!(
        p.states(),
        (ConnState::WFConnection, ConnState::WFConnection)
    );
    assert_eq!(p.a.lost(), [(lost_at, LostReason::Transport)]);
    // The host reported the loss itself and still gets CloseTransport: that is where it
    // closes its sockets and tells the data side (without it, a daemon kept a dead link).
    for n in [&p.a, &p.b] {
        assert!(
            n.events
                .iter()
                .any(|(t, e)| *t == lost_at && *e == ConnEvent::CloseTransport),
            "{:?}",
            n.events
        );
    }
    p.run_for(Duration::from_millis(9_999));
    assert_eq!(
        p.states(),
        (ConnState::WFConnection, ConnState::WFConnection)
    );
    p.run_for(Duration::from_millis(1));
    assert_eq!(p.states(), (ConnState::Connected, ConnState::Connected));
    assert_eq!(p.a.up_at.last(), Some(&(lost_at + Duration::from_secs(10))));
}

/// The asender's ping (`drbd_asender`, "PingAck did not arrive in time."): PING every
/// `ping-int`; without a PING_ACK within `ping-timeout` the transport is declared lost.
#[test]
fn ping_timeout_declares_the_transport_lost() {
    let mut p = Pair::new(node("b", synced(), none), node("a", synced(), none));
    let t0 = p.time;
    p.connect();
    p.settle();
    // Pings are answered while the link works.
    p.run_for(Duration::from_secs(25));
    assert!(p.a.lost().is_empty());
    assert_eq!(p.states(), (ConnState::Connected, ConnState::Connected));
    p.blackhole = true;
    p.run_for(Duration::from_secs(11));
    let lost = p.a.lost();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].1, LostReason::PingTimeout);
    // Pings go out at 10, 20, 30 s; the one at 30 s is unanswered.
    assert_eq!(lost[0].0, t0 + Duration::from_millis(30_500));
    assert_ne!(p.a.conn.state(), ConnState::Connected);
}

/// `conn_disconnect`: an admin `disconnect` sends DISCONNECT and goes StandAlone; the peer
/// treats it as orderly and waits for a new connection.
#[test]
fn admin_disconnect() {
    let mut p = Pair::new(node("b", synced(), none), node("a", synced(), none));
    p.connect();
    p.settle();
    let now = p.time;
    p.a.conn.handle_admin(now, ConnAdmin::Disconnect);
    p.settle();
    assert_eq!(p.states(), (ConnState::StandAlone, ConnState::WFConnection));
    assert_eq!(
        p.b.lost().last().map(|l| l.1),
        Some(LostReason::PeerDisconnected)
    );
    assert_eq!(p.a.conn.poll_timeout(), None);
}

/// A single connection fed packets by hand, through the codec.
fn lone(
    config: impl FnOnce(&mut ConnConfig),
    random: [u8; CHALLENGE_LEN],
) -> (Connection, Instant) {
    let t0 = Instant::now();
    let mut cfg = ConnConfig::new("peer");
    config(&mut cfg);
    let mut c = Connection::new(cfg, disk_of(&synced(), 0));
    c.handle_admin(
        t0,
        ConnAdmin::Connect {
            discard_my_data: false,
        },
    );
    c.handle_transport_up(
        t0,
        TransportUp {
            accepted: false,
            random,
        },
    );
    while c.poll_transmit().is_some() {}
    while c.poll_event().is_some() {}
    (c, t0)
}

fn feed(c: &mut Connection, now: Instant, packet: Packet<'_>) {
    let mut bytes = Vec::new();
    Frame::new(0, packet).encode(&mut bytes);
    let (frame, _) = Frame::decode(&bytes).unwrap().unwrap();
    c.handle_packet(now, frame.packet);
}

/// `drbd_do_auth`: "Peer presented the same challenge!" (a reflection attack) is refused.
#[test]
fn echoed_challenge_is_refused() {
    let auth = |c: &mut ConnConfig| {
        c.auth = Some(AuthConfig {
            shared_secret: b"k".to_vec(),
        })
    };
    let random = [9; CHALLENGE_LEN];
    let (mut c, t0) = lone(auth, random);
    feed(&mut c, t0, Packet::Hello(Hello::OURS));
    assert_eq!(
        c.poll_transmit(),
        Some(Transmit::AuthChallenge(random.to_vec()))
    );
    feed(
        &mut c,
        t0,
        Packet::AuthChallenge(crate::wire::AuthChallenge { challenge: &random }),
    );
    assert_eq!(c.state(), ConnState::StandAlone);
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        events.contains(&ConnEvent::Refused(ConnRefusal::ChallengeEchoed {
            peer: "peer".into()
        }))
    );
}

/// DRBD drops the connection on a packet out of sequence ("unexpected packet"): a
/// protocol error, back to WFConnection, retry after `connect-int`.
#[test]
fn packet_out_of_sequence_is_a_protocol_error() {
    let (mut c, t0) = lone(none, [1; CHALLENGE_LEN]);
    feed(&mut c, t0, Packet::Sizes(crate::wire::Sizes::default()));
    assert_eq!(c.state(), ConnState::WFConnection);
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        events.contains(&ConnEvent::TransportLost(LostReason::Protocol(
            ProtocolError::Unexpected(crate::wire::PacketType::SIZES)
        )))
    );
    assert!(events.contains(&ConnEvent::CloseTransport));
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
}

/// A peer that never answers: the handshake gives up after `connect-int` and retries.
#[test]
fn silent_peer_times_out_the_handshake() {
    let (mut c, t0) = lone(none, [1; CHALLENGE_LEN]);
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(10));
    c.handle_timeout(deadline);
    assert_eq!(c.state(), ConnState::WFConnection);
    let events: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(events.contains(&ConnEvent::TransportLost(LostReason::HandshakeTimeout)));
    // Only the reconnect timer is left.
    assert_eq!(c.poll_timeout(), Some(deadline + Duration::from_secs(10)));
    assert_eq!(c.poll_transmit(), None);
}

/// `receive_protocol`: "incompatible discard-my-data settings" when both sides were told
/// `--discard-my-data`; the flag stays pending (the handshake did not use it).
#[test]
fn discard_my_data_on_both_sides_is_refused() {
    let mut p = Pair::new(node("b", synced(), none), node("a", synced(), none));
    let now = p.time;
    for n in [&mut p.a, &mut p.b] {
        n.conn.handle_admin(
            now,
            ConnAdmin::Connect {
                discard_my_data: true,
            },
        );
    }
    p.settle();
    assert_eq!(p.states(), (ConnState::StandAlone, ConnState::StandAlone));
    let want = ConnRefusal::Incompatible(Setting::DiscardMyData);
    assert_eq!(want.to_string(), "incompatible discard-my-data settings");
    assert_eq!(p.a.refusals(), [want]);
    assert!(p.a.conn.is_discard_my_data());
}

/// Found by the simulation (tests/sim, SEED=0xdc7591b702f525b5 and, with a first fix
/// that decided with the UUIDs sent, SEED=0x3d3d3afeb0800c0e): a node promoted while its
/// handshake runs takes a new current UUID (it is not Connected yet), and its writes from
/// then on are only in its bitmap. The peer decides with the UUIDs this node sent; deciding
/// with the new ones made this node SyncSource while the peer chose Connected, deciding
/// with the old ones left the new writes out of any resync. The handshake starts over.
#[test]
fn a_promotion_during_the_handshake_restarts_it() {
    let mut p = Pair::new(node("b", synced(), none), node("a", synced(), none));
    p.connect();
    // Move until `a` has sent its SIZES/UUIDS/STATE and not yet decided.
    for _ in 0..1_000 {
        let now = p.time;
        Pair::drain(now, &mut p.a, &mut p.a_to_b, &mut p.b_to_a, false);
        Pair::drain(now, &mut p.b, &mut p.b_to_a, &mut p.a_to_b, false);
        if p.a.conn.phase == Phase::Volume {
            break;
        }
        if !Pair::deliver(now, &mut p.b, &mut p.a_to_b)
            && !Pair::deliver(now, &mut p.a, &mut p.b_to_a)
        {
            p.try_establish();
        }
    }
    assert_eq!(p.a.conn.phase, Phase::Volume);
    assert!(p.a.conn.peer.uuids.is_none(), "a has not decided yet");
    promote(&mut p.a.vol, false, 0xABCD_0000);
    p.a.refresh(0);
    p.run_for(Duration::from_secs(30));
    assert!(
        p.a.lost()
            .iter()
            .any(|(_, r)| *r == LostReason::LocalChanged),
        "the first handshake was given up"
    );
    // The second one sees a's new generation: a bitmap resync from a.
    assert_eq!(
        p.a.decisions().last(),
        Some(&Handshake::SyncSource { full: false })
    );
    assert_eq!(
        p.b.decisions().last(),
        Some(&Handshake::SyncTarget { full: false })
    );
    assert_eq!(p.states(), (ConnState::WFBitMapS, ConnState::WFBitMapT));
}
