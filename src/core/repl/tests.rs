//! Two data sides exchanging wire-encoded frames over an in-memory network, each with an
//! in-memory disk, driven step by step.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::*;
use crate::core::ConnState;
use crate::meta::Bitmap;
use crate::wire::Frame;

const SIZE: u64 = 4 << 20;

struct Node {
    r: Replicator,
    disk: Vec<u8>,
    /// Writes the disk has but has not flushed (offset, old bytes) are not modelled; count
    /// flushes instead.
    flushes: usize,
    bufs: HashMap<Payload, Vec<u8>>,
    app: HashMap<u64, (u64, Vec<u8>, WriteKind)>,
    completed: Vec<(u64, Result<(), Errno>)>,
    /// Local I/O submitted, not done yet (the test decides when it completes).
    pending_io: VecDeque<(u64, LocalIo)>,
    finished: Vec<(SyncSide, u64)>,
    /// Blocks found equal by checksums, per finished resync.
    same_csum: Vec<u64>,
    /// Finished online verifies: (side, blocks found, complete).
    verified: Vec<(SyncSide, u64, bool)>,
    /// Bytes of data payload sent (DATA and RS_DATA_REPLY).
    data_sent: u64,
    next_key: u64,
    /// Activity-log transactions asked for: (extents added, extents evicted).
    al_written: Vec<(Vec<u32>, Vec<u32>)>,
    /// Do not report AL transactions as written (the test does it).
    hold_al: bool,
    /// Every local I/O fails with EIO (a dead disk).
    fail_io: bool,
    /// `LocalIoError` actions seen: (write?).
    local_io_errors: Vec<bool>,
    /// What application reads got from the peer, by tag.
    read_data: HashMap<u64, Vec<u8>>,
}

impl Node {
    fn new(config: ReplConfig, fill: u8) -> Node {
        Node {
            r: Replicator::new(config, SIZE, Bitmap::new(SIZE / 512)),
            disk: vec![fill; SIZE as usize],
            flushes: 0,
            bufs: HashMap::new(),
            app: HashMap::new(),
            completed: Vec::new(),
            pending_io: VecDeque::new(),
            finished: Vec::new(),
            same_csum: Vec::new(),
            verified: Vec::new(),
            data_sent: 0,
            next_key: 1,
            al_written: Vec::new(),
            hold_al: false,
            fail_io: false,
            local_io_errors: Vec::new(),
            read_data: HashMap::new(),
        }
    }

    /// Drains actions: sends go to `out` as encoded frames.
    fn drain(&mut self, out: &mut VecDeque<Vec<u8>>) {
        while let Some(a) = self.r.poll_action() {
            match a {
                ReplAction::Local { id, io } => self.pending_io.push_back((id, io)),
                ReplAction::Send(o) => {
                    let data = o
                        .payload()
                        .map(|p| match p {
                            Payload::App(tag) => self.app[&tag].1.clone(),
                            other => self.bufs.get(&other).cloned().unwrap_or_default(),
                        })
                        .unwrap_or_default();
                    if let Some(p @ Payload::Read(_)) = o.payload() {
                        self.bufs.remove(&p);
                    }
                    if matches!(
                        o,
                        Outgoing::Data { .. }
                            | Outgoing::RsReply { .. }
                            | Outgoing::DataReply { .. }
                    ) {
                        self.data_sent += data.len() as u64;
                    }
                    let mut f = Vec::new();
                    o.encode(0, &data, &[], &mut f);
                    out.push_back(f);
                }
                ReplAction::Complete { tag, res } => self.completed.push((tag, res)),
                ReplAction::LocalIoError { write } => self.local_io_errors.push(write),
                ReplAction::ReadData { tag, at, payload } => {
                    let data = self.bufs.remove(&payload).expect("payload");
                    let buf = self.read_data.entry(tag).or_default();
                    let end = at as usize + data.len();
                    if buf.len() < end {
                        buf.resize(end, 0);
                    }
                    buf[at as usize..end].copy_from_slice(&data);
                }
                ReplAction::Release(p) => {
                    self.bufs.remove(&p);
                }
                ReplAction::SyncFinished {
                    side,
                    failed,
                    same_csum,
                } => {
                    self.finished.push((side, failed));
                    self.same_csum.push(same_csum);
                }
                ReplAction::VerifyFinished {
                    side,
                    found,
                    complete,
                } => self.verified.push((side, found, complete)),
                ReplAction::WriteAl { tr, evicted } => {
                    self.al_written
                        .push((tr.updates().map(|u| u.extent).collect(), evicted));
                    if !self.hold_al {
                        self.r.handle_al_written();
                    }
                }
            }
        }
    }

    /// Completes the oldest local I/O.
    fn complete_one(&mut self, now: Instant) -> bool {
        let Some((id, io)) = self.pending_io.pop_front() else {
            return false;
        };
        if self.fail_io {
            self.r.handle_local_done(now, id, Err(Errno::EIO));
            return true;
        }
        match io {
            LocalIo::App { tag } => {
                let (off, data, kind) = self.app[&tag].clone();
                match kind {
                    WriteKind::Write { .. } => {
                        self.disk[off as usize..off as usize + data.len()].copy_from_slice(&data)
                    }
                    _ => {
                        let len = data.len();
                        self.disk[off as usize..off as usize + len].fill(0)
                    }
                }
            }
            LocalIo::Write {
                key, offset, len, ..
            } => {
                let data = self.bufs[&key].clone();
                assert_eq!(data.len(), len as usize);
                self.disk[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
            }
            LocalIo::Discard { offset, len, .. } => {
                self.disk[offset as usize..(offset + u64::from(len)) as usize].fill(0)
            }
            LocalIo::Read {
                offset,
                len,
                digest,
            } => {
                let data = self.disk[offset as usize..(offset + u64::from(len)) as usize].to_vec();
                if digest {
                    let mut d = Vec::new();
                    block_digests(&data, &mut d);
                    self.r.handle_read_digest(id, &d);
                }
                self.bufs.insert(Payload::Read(id), data);
            }
            LocalIo::Flush => self.flushes += 1,
        }
        self.r.handle_local_done(now, id, Ok(()));
        true
    }

    fn receive(&mut self, now: Instant, frame: &[u8]) {
        let (f, _) = Frame::decode(frame)
            .expect("valid frame")
            .expect("whole frame");
        let key = match f.packet {
            Packet::Data(d) | Packet::RsDataReply(d) | Packet::DataReply(d) => {
                let k = self.next_key;
                self.next_key += 1;
                self.bufs.insert(Payload::Peer(k), d.payload.to_vec());
                Some(k)
            }
            _ => None,
        };
        self.r
            .handle_packet(now, &f.packet, key)
            .expect("valid packet");
    }

    fn write(&mut self, tag: u64, offset: u64, data: Vec<u8>) {
        let len = data.len() as u32;
        let kind = WriteKind::Write { fua: false };
        self.app.insert(tag, (offset, data, kind));
        self.r.handle_app_write(tag, offset, len, kind);
    }

    fn done(&self, tag: u64) -> bool {
        self.completed.iter().any(|(t, r)| *t == tag && r.is_ok())
    }
}

struct Pair {
    a: Node,
    b: Node,
    a_to_b: VecDeque<Vec<u8>>,
    b_to_a: VecDeque<Vec<u8>>,
    now: Instant,
}

impl Pair {
    fn new(config: ReplConfig) -> Pair {
        let mut p = Pair {
            a: Node::new(config, 0xAA),
            b: Node::new(config, 0x55),
            a_to_b: VecDeque::new(),
            b_to_a: VecDeque::new(),
            now: Instant::now(),
        };
        p.a.r.handle_link_up();
        p.b.r.handle_link_up();
        p
    }

    fn drain(&mut self) {
        self.a.drain(&mut self.a_to_b);
        self.b.drain(&mut self.b_to_a);
    }

    /// Runs until nothing moves: deliver packets, complete I/O, advance time for pacing.
    fn settle(&mut self) {
        for _ in 0..1_000_000 {
            self.drain();
            if let Some(f) = self.a_to_b.pop_front() {
                self.b.receive(self.now, &f);
                continue;
            }
            if let Some(f) = self.b_to_a.pop_front() {
                self.a.receive(self.now, &f);
                continue;
            }
            if self.a.complete_one(self.now) || self.b.complete_one(self.now) {
                continue;
            }
            let next = [self.a.r.poll_timeout(), self.b.r.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.a.r.handle_timeout(self.now);
                    self.b.r.handle_timeout(self.now);
                }
                None => return,
            }
        }
        panic!("did not settle");
    }
}

fn block(fill: u8, len: usize) -> Vec<u8> {
    vec![fill; len]
}

#[test]
fn protocol_c_completes_only_after_the_peer_wrote() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.write(1, 8192, block(1, 4096));
    p.drain();
    // Local write done, DATA not yet delivered: not complete.
    assert!(p.a.complete_one(p.now));
    p.drain();
    assert!(!p.a.done(1));
    let f = p.a_to_b.pop_front().expect("DATA sent");
    p.b.receive(p.now, &f);
    p.drain();
    assert!(p.b_to_a.is_empty(), "no ack before the peer's disk has it");
    assert!(p.b.complete_one(p.now));
    p.drain();
    let ack = p.b_to_a.pop_front().expect("WRITE_ACK");
    p.a.receive(p.now, &ack);
    p.drain();
    assert!(p.a.done(1));
    assert!(p.a.disk == p.b.disk_after_fill(0xAA));
}

impl Node {
    /// The disk with every byte that is still the initial fill replaced: compare only the
    /// written ranges by making both fills equal.
    fn disk_after_fill(&self, fill: u8) -> Vec<u8> {
        let mut d = self.disk.clone();
        for x in d.iter_mut() {
            if *x == 0x55 {
                *x = fill;
            }
        }
        d
    }
}

#[test]
fn protocol_b_completes_on_receive_and_a_on_send() {
    for (proto, needs_peer) in [(WireProtocol::B, true), (WireProtocol::A, false)] {
        let cfg = ReplConfig {
            protocol: proto,
            ..ReplConfig::default()
        };
        let mut p = Pair::new(cfg);
        p.a.write(1, 0, block(3, 4096));
        p.drain();
        assert!(p.a.complete_one(p.now));
        p.drain();
        assert_eq!(p.a.done(1), !needs_peer, "{proto:?}");
        let f = p.a_to_b.pop_front().expect("DATA");
        p.b.receive(p.now, &f);
        p.drain();
        if needs_peer {
            let ack = p.b_to_a.pop_front().expect("RECV_ACK before the write");
            p.a.receive(p.now, &ack);
            p.drain();
            assert!(p.a.done(1));
        } else {
            assert!(p.b_to_a.is_empty(), "protocol A sends no per-write ack");
        }
        p.settle();
        assert!(p.b.disk[..4096] == block(3, 4096)[..]);
    }
}

#[test]
fn peer_lost_mid_write_completes_locally_and_marks_out_of_sync() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.write(1, 3 * 4096, block(9, 8192));
    p.drain();
    assert!(p.a.complete_one(p.now));
    p.drain();
    assert!(!p.a.done(1));
    p.a.r.handle_link_down();
    p.drain();
    assert!(p.a.done(1), "the client sees no error");
    assert!(p.a.r.bitmap().is_set(3) && p.a.r.bitmap().is_set(4));
    assert_eq!(p.a.r.bitmap().count(), 2);
    // While disconnected, writes are local and marked.
    p.a.write(2, 0, block(1, 4096));
    p.drain();
    assert!(p.a.complete_one(p.now));
    p.drain();
    assert!(p.a.done(2));
    assert_eq!(p.a.r.oos_kib(), 12);
}

#[test]
fn a_local_write_error_marks_the_blocks_the_peer_wrote_out_of_sync() {
    // Found by the simulation (EIO on the Primary's disk): the peer wrote the blocks, the
    // local disk did not; without the bits no resync ever made the replicas equal again.
    let mut p = Pair::new(ReplConfig::default());
    p.a.write(1, 3 * 4096, block(9, 8192));
    p.drain();
    let (id, io) = p.a.pending_io.pop_front().expect("local write");
    assert!(matches!(io, LocalIo::App { tag: 1 }));
    p.a.r.handle_local_done(p.now, id, Err(Errno::EIO));
    p.settle();
    assert!(
        p.b.disk[3 * 4096..5 * 4096] == block(9, 8192)[..],
        "the peer has it"
    );
    // The peer has it: the write succeeds (DRBD's drbd_req_complete).
    assert!(matches!(p.a.completed[..], [(1, Ok(()))]));
    assert!(p.a.r.bitmap().is_set(3) && p.a.r.bitmap().is_set(4));
    assert_eq!(p.a.r.bitmap().count(), 2);
}

/// Runs `p` until nothing moves, failing the first flush the B side submits; time does
/// not advance.
fn settle_failing_b_flush(p: &mut Pair) {
    let mut failed = false;
    for _ in 0..100_000 {
        p.drain();
        if let Some(f) = p.a_to_b.pop_front() {
            p.b.receive(p.now, &f);
            continue;
        }
        if let Some(f) = p.b_to_a.pop_front() {
            p.a.receive(p.now, &f);
            continue;
        }
        if !failed && let Some(&(id, LocalIo::Flush)) = p.b.pending_io.front() {
            p.b.pending_io.pop_front();
            p.b.r.handle_local_done(p.now, id, Err(Errno::EIO));
            failed = true;
            continue;
        }
        if p.a.complete_one(p.now) || p.b.complete_one(p.now) {
            continue;
        }
        assert!(failed, "the barrier was flushed");
        return;
    }
    panic!("did not settle");
}

/// Found by the simulation (EIO on the Secondary): a replicated write that fails on the
/// peer's disk is answered with NEG_ACK, marked out of sync on both sides, and reported to
/// the host, whose volume then stops claiming UpToDate (`__drbd_chk_io_error`).
#[test]
fn a_failed_peer_write_is_neg_acked_and_reported() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.write(1, 8192, block(1, 4096));
    for _ in 0..100 {
        p.drain();
        if let Some(f) = p.a_to_b.pop_front() {
            p.b.receive(p.now, &f);
            continue;
        }
        if let Some(f) = p.b_to_a.pop_front() {
            p.a.receive(p.now, &f);
            continue;
        }
        if let Some(&(id, LocalIo::Write { .. })) = p.b.pending_io.front() {
            p.b.pending_io.pop_front();
            p.b.r.handle_local_done(p.now, id, Err(Errno::EIO));
            continue;
        }
        if !(p.a.complete_one(p.now) || p.b.complete_one(p.now)) {
            break;
        }
    }
    assert!(
        p.a.done(1),
        "the Primary's disk has it: NEG_ACK completes the write"
    );
    assert_eq!(p.b.local_io_errors, vec![true]);
    assert!(p.a.r.bitmap().is_set(2) && p.b.r.bitmap().is_set(2));
    assert!(p.a.local_io_errors.is_empty());
}

#[test]
fn a_failed_barrier_flush_is_not_acknowledged_but_retried() {
    // Found by the simulation (a flush EIO on the Secondary, then its crash): the
    // BARRIER_ACK after a failed flush made the Primary forget writes that were lost with
    // the Secondary's cache, so no bit and no resync brought them back.
    let mut p = Pair::new(ReplConfig::default());
    p.a.write(1, 0, block(7, 4096));
    settle_failing_b_flush(&mut p);
    assert!(p.a.done(1), "WRITE_ACK answers the write");
    // The link goes now: the epoch was never acknowledged, so the write is out of sync.
    p.a.r.handle_link_down();
    p.drain();
    assert!(
        p.a.r.bitmap().is_set(0),
        "an unflushed epoch is not forgotten"
    );

    // With the link up, the flush is tried again after a while and then acknowledged.
    let mut p = Pair::new(ReplConfig::default());
    p.a.write(1, 0, block(7, 4096));
    settle_failing_b_flush(&mut p);
    let retry = p.b.r.poll_timeout().expect("a retry is scheduled");
    assert!(retry > p.now);
    p.settle();
    assert!(p.b.flushes >= 1, "flushed on the retry");
    p.a.r.handle_link_down();
    p.drain();
    assert_eq!(
        p.a.r.bitmap().count(),
        0,
        "the acknowledged epoch is durable"
    );
}

/// Write 1 (4 KiB at 0): the Primary's local half done, its DATA delivered to the
/// Secondary and written there; the WRITE_ACK waits in `b_to_a`.
fn write_one_through_b(p: &mut Pair) {
    p.a.write(1, 0, block(1, 4096));
    p.drain();
    assert!(p.a.complete_one(p.now), "local write");
    p.drain();
    let data = p.a_to_b.pop_front().expect("DATA");
    p.b.receive(p.now, &data);
    p.drain();
    assert!(p.b.complete_one(p.now), "peer write");
    p.drain();
}

#[test]
fn a_completed_write_closes_the_epoch_and_the_peer_flushes_at_the_barrier() {
    let mut p = Pair::new(ReplConfig::default());
    // The local write, then the peer's: the epoch closes with the completion and its
    // barrier goes out at once (not with the next write).
    write_one_through_b(&mut p);
    let ack = p.b_to_a.pop_front().expect("WRITE_ACK");
    p.a.receive(p.now, &ack);
    p.drain();
    assert!(p.a.done(1));
    let barrier = p
        .a_to_b
        .pop_front()
        .expect("BARRIER right after the completion");
    let (f, _) = Frame::decode(&barrier).unwrap().unwrap();
    assert_eq!(f.packet, Packet::Barrier(crate::wire::Barrier { epoch: 0 }));
    p.b.receive(p.now, &barrier);
    p.settle();
    assert_eq!(p.b.flushes, 1, "the peer flushed epoch 0");
    // The next write opens epoch 1: no barrier in front of it.
    p.a.write(2, 4096, block(2, 4096));
    p.drain();
    let (f, _) = Frame::decode(p.a_to_b.front().expect("DATA"))
        .unwrap()
        .unwrap();
    assert!(matches!(f.packet, Packet::Data(_)), "{:?}", f.packet);
    p.settle();
    assert!(p.a.done(2));
    assert_eq!(p.b.flushes, 2);
}

#[test]
fn an_idle_secondary_flushes_before_the_barrier_arrives_and_the_barrier_uses_it() {
    let mut p = Pair::new(ReplConfig::default());
    write_one_through_b(&mut p);
    // Nothing else to apply: the flush starts now, before the BARRIER is even sent.
    assert!(
        matches!(p.b.pending_io.front(), Some((_, LocalIo::Flush))),
        "{:?}",
        p.b.pending_io
    );
    let ack = p.b_to_a.pop_front().expect("WRITE_ACK");
    p.a.receive(p.now, &ack);
    p.drain();
    let barrier = p.a_to_b.pop_front().expect("BARRIER");
    p.b.receive(p.now, &barrier);
    p.drain();
    assert_eq!(p.b.pending_io.len(), 1, "the barrier waits for that flush");
    assert!(
        p.b_to_a.is_empty(),
        "no BARRIER_ACK before the flush is done"
    );
    assert!(p.b.complete_one(p.now));
    p.drain();
    let back = p.b_to_a.pop_front().expect("BARRIER_ACK");
    let (f, _) = Frame::decode(&back).unwrap().unwrap();
    assert!(matches!(f.packet, Packet::BarrierAck(_)), "{:?}", f.packet);
    assert_eq!(p.b.flushes, 1);
}

#[test]
fn an_early_flush_does_not_cover_writes_that_complete_after_it() {
    let mut p = Pair::new(ReplConfig::default());
    // Write 1 reaches the Secondary alone; its early flush starts.
    p.a.write(1, 0, block(1, 4096));
    p.drain();
    let data1 = p.a_to_b.pop_front().expect("DATA 1");
    p.b.receive(p.now, &data1);
    p.drain();
    assert!(p.b.complete_one(p.now), "peer write 1");
    p.drain();
    assert!(matches!(p.b.pending_io.front(), Some((_, LocalIo::Flush))));
    // Write 2 of the same epoch arrives and completes while that flush runs.
    p.a.write(2, 8192, block(2, 4096));
    p.drain();
    let data2 = p.a_to_b.pop_front().expect("DATA 2");
    p.b.receive(p.now, &data2);
    p.drain();
    let (id, io) = p.b.pending_io.pop_back().expect("peer write 2");
    assert!(matches!(io, LocalIo::Write { .. }), "{io:?}");
    p.b.pending_io.push_front((id, io));
    assert!(p.b.complete_one(p.now), "peer write 2");
    p.drain();
    // The acks complete both writes on the Primary, which closes the epoch.
    while let Some(f) = p.b_to_a.pop_front() {
        p.a.receive(p.now, &f);
        p.drain();
    }
    while p.a.complete_one(p.now) {
        p.drain();
    }
    assert!(p.a.done(1) && p.a.done(2));
    let barrier = p.a_to_b.pop_front().expect("BARRIER");
    p.b.receive(p.now, &barrier);
    p.drain();
    // The early flush was submitted before write 2 completed: the barrier needs another.
    let flushes: Vec<_> =
        p.b.pending_io
            .iter()
            .filter(|(_, io)| matches!(io, LocalIo::Flush))
            .collect();
    assert_eq!(flushes.len(), 2, "{:?}", p.b.pending_io);
    // The early flush completing is not enough for the BARRIER_ACK.
    assert!(p.b.complete_one(p.now));
    p.drain();
    assert!(p.b_to_a.is_empty(), "acked on a flush that misses write 2");
    assert!(p.b.complete_one(p.now));
    p.drain();
    let back = p.b_to_a.pop_front().expect("BARRIER_ACK");
    let (f, _) = Frame::decode(&back).unwrap().unwrap();
    assert!(matches!(f.packet, Packet::BarrierAck(_)), "{:?}", f.packet);
}

#[test]
fn flush_waits_for_the_peers_barrier_ack() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.write(1, 0, block(1, 4096));
    p.settle();
    assert_eq!(p.b.flushes, 1, "epoch 0's barrier");
    p.a.write(2, 4096, block(2, 4096));
    p.settle();
    assert_eq!(p.b.flushes, 2, "epoch 1's barrier");
    p.a.r.handle_app_flush(7);
    p.drain();
    assert!(p.a.complete_one(p.now), "local flush");
    p.drain();
    assert!(
        !p.a.done(7),
        "the peer has not answered the flush's barrier yet"
    );
    p.settle();
    assert!(p.a.done(7));
    assert_eq!(p.a.flushes, 1);
    // Nothing was written on the peer since epoch 1's flush: its disk is already durable
    // up to the application's flush, so the flush's barrier is answered without a second
    // flush.
    assert_eq!(p.b.flushes, 2);
}

#[test]
fn overlapping_writes_apply_in_order_on_both_sides() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.write(1, 0, block(1, 8192));
    p.a.write(2, 4096, block(2, 8192));
    p.a.write(3, 16384, block(3, 4096));
    p.drain();
    // Write 2 overlaps 1 and waits; 3 goes.
    assert_eq!(p.a.pending_io.len(), 2);
    p.settle();
    assert!(p.a.done(1) && p.a.done(2) && p.a.done(3));
    assert!(p.a.disk[4096..12288] == block(2, 8192)[..]);
    assert!(p.a.disk[..12288] == p.b.disk[..12288]);
    assert!(p.a.disk[16384..20480] == p.b.disk[16384..20480]);
}

#[test]
fn full_sync_makes_the_target_identical_and_both_sides_finish() {
    let cfg = ReplConfig {
        resync_rate_kib: 100_000,
        ..ReplConfig::default()
    };
    let mut p = Pair::new(cfg);
    p.a.r.set_all_out_of_sync();
    p.b.r.set_all_out_of_sync();
    let t0 = p.now;
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    let prog = p.b.r.sync_progress(p.now).expect("syncing");
    assert_eq!(prog.total_kib, SIZE / 1024);
    p.settle();
    assert!(p.a.disk == p.b.disk, "replicas differ");
    assert_eq!(p.a.finished, vec![(SyncSide::Source, 0)]);
    assert_eq!(p.b.finished, vec![(SyncSide::Target, 0)]);
    assert_eq!(p.a.r.bitmap().count() + p.b.r.bitmap().count(), 0);
    // 4 MiB at 100,000 KiB/s is about 41 ms of simulated time.
    let took = p.now - t0;
    assert!(took >= Duration::from_millis(30), "paced: {took:?}");
    assert!(took <= Duration::from_millis(200), "{took:?}");
}

#[test]
fn resync_honours_the_rate() {
    let cfg = ReplConfig {
        resync_rate_kib: 1024,
        ..ReplConfig::default()
    };
    let mut p = Pair::new(cfg);
    p.a.r.set_all_out_of_sync();
    p.b.r.set_all_out_of_sync();
    let t0 = p.now;
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    p.settle();
    let took = p.now - t0;
    // 4 MiB at 1 MiB/s: eight 512 KiB requests, the first at once, the last after 3.5 s
    // (the peer answers instantly here).
    assert!(took >= Duration::from_millis(3400), "{took:?}");
    assert!(took <= Duration::from_millis(4200), "{took:?}");
    assert!(p.a.disk == p.b.disk, "replicas differ");
}

#[test]
fn writes_during_a_resync_leave_both_replicas_identical() {
    let cfg = ReplConfig {
        resync_rate_kib: 50_000,
        ..ReplConfig::default()
    };
    let mut p = Pair::new(cfg);
    p.a.r.set_all_out_of_sync();
    p.b.r.set_all_out_of_sync();
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    let mut tag = 100;
    // Interleave: a few steps of the resync, then an application write, many times.
    for round in 0..200u64 {
        for _ in 0..7 {
            p.drain();
            if let Some(f) = p.a_to_b.pop_front() {
                p.b.receive(p.now, &f);
            } else if let Some(f) = p.b_to_a.pop_front() {
                p.a.receive(p.now, &f);
            } else if !p.a.complete_one(p.now) && !p.b.complete_one(p.now) {
                p.now += Duration::from_millis(1);
                p.a.r.handle_timeout(p.now);
                p.b.r.handle_timeout(p.now);
            }
        }
        let off = (round * 7919 % (SIZE / 4096)) * 4096;
        tag += 1;
        p.a.write(tag, off, block(round as u8, 4096));
    }
    p.settle();
    assert_eq!(p.a.finished.len(), 1);
    assert_eq!(p.b.finished.len(), 1);
    assert!(p.a.disk == p.b.disk, "replicas differ");
}

/// The source's side of a resync with nothing in it (or settled by checksums) ends on the
/// target's STATE going from SyncTarget back to Connected (`receive_state`), never on its
/// own: found by the simulation, a source that finished at once moved its bitmap UUID into
/// the history while its SYNC_UUID died with the link, and a few such starts later the
/// peers looked unrelated.
fn target_reports_done(p: &mut Pair) {
    assert!(p.a.finished.is_empty(), "the source waits for the target");
    p.a.r.handle_peer_conn_state(p.now, ConnState::SyncTarget);
    p.a.r.handle_peer_conn_state(p.now, ConnState::Connected);
    p.drain();
}

#[test]
fn empty_resync_source_finishes_on_the_targets_state() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    p.settle();
    assert_eq!(p.b.finished, vec![(SyncSide::Target, 0)]);
    // A STATE Connected from before the target started (the handshake's) is not the end.
    p.a.r.handle_peer_conn_state(p.now, ConnState::Connected);
    p.drain();
    assert!(
        p.a.finished.is_empty(),
        "Connected before SyncTarget ends nothing"
    );
    target_reports_done(&mut p);
    assert_eq!(p.a.finished, vec![(SyncSide::Source, 0)]);
}

#[test]
fn bad_ranges_and_unknown_acks_are_errors() {
    let mut n = Node::new(ReplConfig::default(), 0);
    n.r.handle_link_up();
    let ack = crate::wire::BlockAck {
        sector: 0,
        block_id: 99,
        size: 4096,
        seq: 0,
    };
    assert_eq!(
        n.r.handle_packet(n_now(), &Packet::WriteAck(ack), None),
        Err(ReplError::UnknownAck(PacketType::WRITE_ACK))
    );
    let d = crate::wire::Data {
        sector: SIZE / 512,
        block_id: 1,
        seq: 1,
        dp_flags: 0,
        digest: &[],
        payload: &[0; 4096],
    };
    assert!(matches!(
        n.r.handle_packet(n_now(), &Packet::Data(d), Some(1)),
        Err(ReplError::BadRange { .. })
    ));
    let r = crate::wire::BlockRequest {
        sector: 0,
        block_id: 1,
        size: 4096,
    };
    assert_eq!(
        n.r.handle_packet(n_now(), &Packet::RsDataRequest(r), None),
        Err(ReplError::Unexpected(PacketType::RS_DATA_REQUEST)),
        "not a SyncSource"
    );
}

fn n_now() -> Instant {
    Instant::now()
}

/// A small seeded schedule: local I/O completes in random order, the two directions
/// interleave at random, application writes (some overlapping) arrive during the resync.
fn chaos(seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut x = seed | 1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let cfg = ReplConfig {
        resync_rate_kib: 400_000,
        rs_max_bits: 4,
        ..ReplConfig::default()
    };
    let mut p = Pair::new(cfg);
    p.a.r.set_all_out_of_sync();
    p.b.r.set_all_out_of_sync();
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    let mut tag = 0;
    for _ in 0..20_000 {
        p.drain();
        match rnd(6) {
            0 => {
                if let Some(f) = p.a_to_b.pop_front() {
                    p.b.receive(p.now, &f);
                }
            }
            1 => {
                if let Some(f) = p.b_to_a.pop_front() {
                    p.a.receive(p.now, &f);
                }
            }
            2 | 3 => {
                let n = if rnd(2) == 0 { &mut p.a } else { &mut p.b };
                if !n.pending_io.is_empty() {
                    let i = rnd(n.pending_io.len() as u64) as usize;
                    let item = n.pending_io.remove(i).expect("index in range");
                    n.pending_io.push_front(item);
                    n.complete_one(p.now);
                }
            }
            4 if tag < 300 => {
                tag += 1;
                let off = rnd(SIZE / 4096 - 2) * 4096;
                let len = (1 + rnd(2) as usize) * 4096;
                p.a.write(tag, off, block((tag % 250) as u8 + 1, len));
            }
            _ => {
                p.now += Duration::from_micros(200);
                p.a.r.handle_timeout(p.now);
                p.b.r.handle_timeout(p.now);
            }
        }
    }
    p.settle();
    assert_eq!(p.a.finished.len(), 1, "seed {seed}: source finished");
    assert_eq!(p.b.finished.len(), 1, "seed {seed}: target finished");
    assert_eq!(
        p.a.completed.len(),
        tag as usize,
        "seed {seed}: every write completed"
    );
    (p.a.disk, p.b.disk)
}

#[test]
fn random_schedules_keep_replicas_identical() {
    for seed in 1..=12 {
        let (a, b) = chaos(seed);
        assert!(a == b, "seed {seed}: replicas differ");
    }
}

#[test]
fn writes_the_peer_has_not_confirmed_are_marked_when_the_link_drops() {
    // Protocol A completes on send; until the epoch's BARRIER_ACK the peer may not have
    // the data, so a lost link marks it out of sync (DRBD's transfer log).
    let cfg = ReplConfig {
        protocol: WireProtocol::A,
        ..ReplConfig::default()
    };
    let mut p = Pair::new(cfg);
    p.a.write(1, 0, block(1, 4096));
    p.drain();
    assert!(p.a.complete_one(p.now));
    p.drain();
    assert!(p.a.done(1));
    p.a.r.handle_link_down();
    assert!(p.a.r.bitmap().is_set(0), "unconfirmed write marked");

    // Once the barrier is acked, a later link loss does not mark it.
    let mut p = Pair::new(cfg);
    p.a.write(1, 0, block(1, 4096));
    p.settle(); // BARRIER 0 went out with the completion and was acked
    assert!(p.b.flushes >= 1);
    p.a.write(2, 8192, block(2, 4096));
    p.drain();
    assert!(p.a.complete_one(p.now));
    p.drain();
    assert!(p.a.done(2), "protocol A: complete on send");
    p.a.r.handle_link_down();
    assert!(!p.a.r.bitmap().is_set(0), "confirmed by BARRIER_ACK");
    assert!(
        p.a.r.bitmap().is_set(2),
        "the newest epoch is not confirmed yet"
    );
}

#[test]
fn a_write_waits_for_its_activity_log_transaction() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.r = Replicator::new(ReplConfig::default(), SIZE, Bitmap::new(SIZE / 512))
        .with_activity_log(crate::meta::AlWriter::new(2, 0));
    p.a.r.handle_link_up();
    p.a.hold_al = true;
    p.a.write(1, 4096, block(1, 4096));
    p.drain();
    assert_eq!(p.a.al_written.len(), 1, "the AL transaction comes first");
    assert!(
        p.a.pending_io.is_empty(),
        "no data write before it is durable"
    );
    assert!(p.a_to_b.is_empty(), "nothing sent before it is durable");
    p.a.r.handle_al_written();
    p.drain();
    assert_eq!(p.a.pending_io.len(), 1);
    p.settle();
    assert!(p.a.done(1));
    // Same extent again: no transaction (eviction order is tested in al.rs).
    p.a.hold_al = false;
    p.a.write(2, 8192, block(2, 4096));
    p.settle();
    assert_eq!(p.a.al_written.len(), 1);
    assert_eq!(p.a.r.al_extents(), vec![0]);
    assert!(p.a.done(2));
}

#[test]
fn only_a_completion_from_the_open_epoch_closes_it() {
    let cfg = ReplConfig {
        protocol: WireProtocol::A,
        ..ReplConfig::default()
    };
    let mut p = Pair::new(cfg);
    p.a.write(1, 0, block(1, 4096));
    p.a.write(2, 8192, block(2, 4096));
    p.drain();
    assert!(p.a.complete_one(p.now)); // write 1 (epoch 0) completes: epoch 0 closes
    p.a.write(3, 16384, block(3, 4096));
    p.drain();
    assert!(p.a.complete_one(p.now)); // write 2, of the closed epoch 0: no effect
    p.a.write(4, 24576, block(4, 4096));
    p.drain();
    let types: Vec<PacketType> = p
        .a_to_b
        .iter()
        .map(|f| Frame::decode(f).unwrap().unwrap().0.packet.packet_type())
        .collect();
    assert_eq!(
        types,
        [
            PacketType::DATA,
            PacketType::DATA,
            PacketType::BARRIER,
            PacketType::DATA,
            PacketType::DATA
        ],
        "writes 3 and 4 share epoch 1"
    );
}

// ----- checksum-based resync, online verify, pause (issue 6) ------------------------------

fn csums() -> ReplConfig {
    ReplConfig {
        resync_rate_kib: 1_000_000,
        csums: true,
        ..ReplConfig::default()
    }
}

#[test]
fn csums_resync_of_identical_disks_sends_no_data() {
    let mut p = Pair::new(csums());
    p.b.disk = p.a.disk.clone();
    p.a.r.set_all_out_of_sync();
    p.b.r.set_all_out_of_sync();
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    p.settle();
    assert_eq!(p.b.finished, vec![(SyncSide::Target, 0)]);
    target_reports_done(&mut p);
    assert_eq!(p.a.finished, vec![(SyncSide::Source, 0)]);
    assert_eq!(p.a.data_sent, 0, "every block had equal checksums");
    let blocks = SIZE / BM_BLOCK;
    assert_eq!(p.a.same_csum, vec![blocks]);
    assert_eq!(p.b.same_csum, vec![blocks]);
    assert_eq!(p.a.r.bitmap().count() + p.b.r.bitmap().count(), 0);
}

#[test]
fn csums_resync_sends_only_the_requests_that_differ() {
    let mut p = Pair::new(csums());
    p.b.disk = p.a.disk.clone();
    // Two blocks differ, in two different 128 KiB requests.
    p.b.disk[5 * 4096] ^= 1;
    p.b.disk[700 * 4096 + 17] ^= 0x80;
    p.a.r.set_all_out_of_sync();
    p.b.r.set_all_out_of_sync();
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    p.settle();
    assert!(p.a.disk == p.b.disk, "replicas differ after the resync");
    assert_eq!(p.a.data_sent, 2 * 32 * 4096, "two 128 KiB replies");
    assert_eq!(p.b.same_csum, vec![SIZE / BM_BLOCK - 64]);
}

#[test]
fn verify_marks_exactly_the_blocks_that_differ_on_both_sides() {
    let mut p = Pair::new(ReplConfig {
        resync_rate_kib: 1_000_000,
        ..ReplConfig::default()
    });
    p.b.disk = p.a.disk.clone();
    for block in [3u64, 4, 300, 1023] {
        p.b.disk[(block * 4096) as usize + 100] ^= 0xFF;
    }
    p.a.r.start_verify(p.now);
    assert_eq!(p.a.r.verify_side(), Some(SyncSide::Source));
    p.settle();
    assert_eq!(p.a.verified, vec![(SyncSide::Source, 4, true)]);
    assert_eq!(p.b.verified, vec![(SyncSide::Target, 4, true)]);
    for block in [3u64, 4, 300, 1023] {
        assert!(p.a.r.bitmap().is_set(block), "source marks block {block}");
        assert!(p.b.r.bitmap().is_set(block), "target marks block {block}");
    }
    assert_eq!(p.a.r.bitmap().count(), 4, "only the differing blocks");
    assert_eq!(p.b.r.bitmap().count(), 4);
    assert_eq!(p.a.r.verify_side(), None);
    assert_eq!(p.a.data_sent, 0, "verify moves digests, not data");
    // Nothing was repaired: the next resync (here: started by hand) moves the 4 blocks.
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    p.settle();
    assert!(p.a.disk == p.b.disk);
    assert_eq!(p.a.data_sent, 4 * 4096);
}

#[test]
fn verify_of_identical_disks_finds_nothing_and_a_lost_link_ends_it() {
    let cfg = ReplConfig {
        resync_rate_kib: 1_000_000,
        ..ReplConfig::default()
    };
    let mut p = Pair::new(cfg);
    p.b.disk = p.a.disk.clone();
    p.a.r.start_verify(p.now);
    p.settle();
    assert_eq!(p.a.verified, vec![(SyncSide::Source, 0, true)]);
    assert_eq!(p.b.verified, vec![(SyncSide::Target, 0, true)]);
    assert_eq!(p.a.r.bitmap().count() + p.b.r.bitmap().count(), 0);

    let mut p = Pair::new(cfg);
    p.a.r.start_verify(p.now);
    p.drain();
    p.a.r.handle_link_down();
    p.drain();
    assert_eq!(p.a.verified, vec![(SyncSide::Source, 0, false)]);
    assert_eq!(p.a.r.verify_side(), None);
}

#[test]
fn a_paused_resync_sends_no_requests_until_resumed() {
    let mut p = Pair::new(ReplConfig {
        resync_rate_kib: 1_000_000,
        ..ReplConfig::default()
    });
    p.a.r.set_all_out_of_sync();
    p.b.r.set_all_out_of_sync();
    p.b.r.set_sync_paused(p.now, true);
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    p.settle();
    assert!(p.b.r.is_sync_paused());
    assert_eq!(p.b.r.bitmap().count(), SIZE / BM_BLOCK, "nothing moved");
    assert!(p.b.finished.is_empty());
    p.b.r.set_sync_paused(p.now, false);
    p.settle();
    assert_eq!(p.b.finished, vec![(SyncSide::Target, 0)]);
    assert!(p.a.disk == p.b.disk);
}

#[test]
fn the_dynamic_controller_paces_a_full_sync_to_the_end() {
    let mut p = Pair::new(ReplConfig {
        controller: Some(ControllerConfig {
            plan_ahead_ds: 20,
            max_rate_kib: 20_000,
            ..ControllerConfig::default()
        }),
        ..ReplConfig::default()
    });
    p.a.r.set_all_out_of_sync();
    p.b.r.set_all_out_of_sync();
    let t0 = p.now;
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    p.settle();
    assert!(p.a.disk == p.b.disk);
    assert_eq!(p.b.finished, vec![(SyncSide::Target, 0)]);
    // The peer answers at once here, so the controller runs at c-max-rate: 4 MiB at
    // 20,000 KiB/s is about 200 ms of simulated time, in 100 ms steps.
    let took = p.now - t0;
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took <= Duration::from_millis(1000), "{took:?}");
}

/// Found by the simulation (tests/sim, SEED=0x632be6b57c9e0d47): a Primary crashed with a
/// completed write still in its disk's volatile cache, in an extent already evicted from
/// the activity log; after the crash only the log's extents were resynced and the block
/// stayed different on the two disks (Connected, UpToDate/UpToDate). An eviction now
/// flushes the data disk before the AL transaction.
#[test]
fn an_eviction_flushes_the_data_disk_before_the_al_transaction() {
    let mut p = Pair::new(ReplConfig::default());
    // Two 4 MiB extents, one AL slot.
    p.a.r = Replicator::new(ReplConfig::default(), 2 * SIZE, Bitmap::new(2 * SIZE / 512))
        .with_activity_log(crate::meta::AlWriter::new(1, 0));
    p.a.r.handle_link_up();
    p.a.write(1, 0, block(1, 4096));
    p.settle();
    assert!(p.a.done(1));
    assert_eq!(
        p.a.al_written.len(),
        1,
        "extent 0 enters the log without a flush"
    );
    let flushes = p.a.flushes;
    // A write to extent 1: extent 0 must leave the single slot.
    p.a.hold_al = true;
    p.a.r
        .handle_app_write(2, 4 << 20, 4096, WriteKind::Write { fua: false });
    p.a.app.insert(
        2,
        (4 << 20, block(2, 4096), WriteKind::Write { fua: false }),
    );
    let mut actions = Vec::new();
    while let Some(a) = p.a.r.poll_action() {
        actions.push(a);
    }
    assert!(
        matches!(
            actions.as_slice(),
            [ReplAction::Local {
                io: LocalIo::Flush,
                ..
            }]
        ),
        "a flush first, nothing else ({} actions; the first is a WriteAl: {})",
        actions.len(),
        matches!(actions.first(), Some(ReplAction::WriteAl { .. }))
    );
    let ReplAction::Local { id, .. } = actions[0] else {
        unreachable!()
    };
    p.a.r.handle_local_done(p.now, id, Ok(()));
    let next = p.a.r.poll_action();
    assert!(
        matches!(&next, Some(ReplAction::WriteAl { evicted, .. }) if evicted == &[0]),
        "then the AL transaction evicting extent 0: {next:?}"
    );
    assert_eq!(
        p.a.flushes, flushes,
        "the flush went through the action, not the test"
    );
}

/// The source's read for a resync request completes after the link went down and came
/// back up, before the new resync starts: the reply must not go out on the new link (the
/// target has no such request; simulation seed 0x3a27d21838171a0a).
#[test]
fn a_resync_read_of_a_lost_link_is_not_answered_on_the_next() {
    let cfg = ReplConfig {
        resync_rate_kib: 100_000,
        ..ReplConfig::default()
    };
    let mut p = Pair::new(cfg);
    p.a.r.set_all_out_of_sync();
    p.b.r.set_all_out_of_sync();
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    p.drain();
    // The target's requests reach the source, which starts reading.
    while let Some(f) = p.b_to_a.pop_front() {
        p.a.receive(p.now, &f);
    }
    p.drain();
    assert!(
        p.a.pending_io
            .iter()
            .any(|(_, io)| matches!(io, LocalIo::Read { .. })),
        "the source reads"
    );
    // The link breaks and comes back; the reads complete before a new resync starts.
    p.a_to_b.clear();
    p.a.r.handle_link_down();
    p.b.r.handle_link_down();
    p.drain();
    p.a_to_b.clear();
    p.b_to_a.clear();
    p.a.r.handle_link_up();
    p.b.r.handle_link_up();
    while p.a.complete_one(p.now) {}
    p.drain();
    let replies = p
        .a_to_b
        .iter()
        .filter(|f| {
            matches!(
                Frame::decode(f),
                Ok(Some((
                    Frame {
                        packet: Packet::RsDataReply(_),
                        ..
                    },
                    _
                )))
            )
        })
        .count();
    assert_eq!(replies, 0, "a reply to a request of the old link went out");
    assert!(p.a.bufs.is_empty(), "the read buffers are released");
}

// ----- local I/O errors and the Diskless node (on-io-error) -----------------------------

#[test]
fn a_local_write_error_completes_from_the_peer_and_marks_the_block() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.fail_io = true;
    p.a.write(1, 8192, block(7, 4096));
    p.settle();
    // DRBD's drbd_req_complete: ok when either half is; the volume hears of the error.
    assert!(p.a.done(1), "{:?}", p.a.completed);
    assert_eq!(p.a.local_io_errors, vec![true]);
    assert_eq!(&p.b.disk[8192..12288], &block(7, 4096)[..]);
    assert_eq!(p.a.r.bitmap().count(), 1, "the local copy misses it");
}

#[test]
fn a_local_write_error_without_the_peer_fails_the_write() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.r.handle_link_down();
    p.a.fail_io = true;
    p.a.write(1, 0, block(7, 4096));
    p.settle();
    assert_eq!(p.a.completed, vec![(1, Err(Errno::EIO))]);
    assert_eq!(p.a.local_io_errors, vec![true]);
}

#[test]
fn a_diskless_primary_writes_and_reads_through_the_peer() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.r.handle_detach();
    p.b.r.handle_peer_disk(false);
    p.a.write(1, 8192, block(3, 8192));
    p.settle();
    assert!(p.a.done(1));
    assert_eq!(&p.b.disk[8192..16384], &block(3, 8192)[..]);
    // The peer's bitmap records what the Diskless node wrote (its disk misses it).
    assert_eq!(p.b.r.bitmap().count(), 2);
    assert_eq!(
        &p.a.disk[8192..16384],
        &block(0xAA, 8192)[..],
        "no local I/O"
    );
    // A read larger than one DATA_REPLY comes in parts.
    let len = (MAX_DATA_TEST * 2 + 4096) as u32;
    p.a.r.handle_app_read(9, 0, len);
    p.a.r.handle_app_flush(10);
    p.settle();
    assert!(p.a.done(9) && p.a.done(10), "{:?}", p.a.completed);
    assert_eq!(p.a.read_data[&9], p.b.disk[..len as usize].to_vec());
    assert!(p.a.pending_io.is_empty());
    assert_eq!(p.a.r.remote_reads_in_flight(), 0);
}

const MAX_DATA_TEST: usize = crate::wire::MAX_DATA as usize;

#[test]
fn a_remote_read_fails_when_the_peer_cannot_read() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.r.handle_detach();
    p.b.fail_io = true;
    p.a.r.handle_app_read(1, 4096, 4096);
    p.settle();
    assert_eq!(p.a.completed, vec![(1, Err(Errno::EIO))]);
    assert_eq!(
        p.b.local_io_errors,
        vec![false],
        "the peer's volume hears of it"
    );
}

#[test]
fn a_diskless_node_without_its_peer_fails_everything() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.r.handle_detach();
    p.a.r.handle_app_read(1, 0, 4096);
    p.drain();
    // In flight at the peer when the link goes: fails.
    p.a.r.handle_link_down();
    p.a.write(2, 0, block(1, 4096));
    p.a.r.handle_app_read(3, 0, 4096);
    p.a.r.handle_app_flush(4);
    p.a.drain(&mut p.a_to_b);
    let mut got = p.a.completed.clone();
    got.sort_by_key(|c| c.0);
    assert_eq!(
        got,
        vec![
            (1, Err(Errno::EIO)),
            (2, Err(Errno::EIO)),
            (3, Err(Errno::EIO)),
            (4, Err(Errno::EIO)),
        ]
    );
}

#[test]
fn reads_for_the_peer_wait_for_the_writes_received_before_them() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.r.handle_detach();
    p.a.write(1, 0, block(9, 4096));
    p.a.r.handle_app_read(2, 0, 4096);
    p.drain();
    // Both are at the peer before its write completes: the read must see the write.
    while let Some(f) = p.a_to_b.pop_front() {
        p.b.receive(p.now, &f);
    }
    p.settle();
    assert_eq!(p.a.read_data[&2], block(9, 4096));
}

/// Delivers every frame in flight, both ways, without completing any local I/O.
fn deliver(p: &mut Pair) {
    loop {
        p.drain();
        if let Some(f) = p.a_to_b.pop_front() {
            p.b.receive(p.now, &f);
        } else if let Some(f) = p.b_to_a.pop_front() {
            p.a.receive(p.now, &f);
        } else {
            return;
        }
    }
}

/// A write the peer acked while its local half still runs is not in the transfer log yet;
/// a link lost before its epoch's BARRIER_ACK marks it out of sync all the same (DRBD's
/// CONNECTION_LOST_WHILE_PENDING clears RQ_NET_OK; simulation seed 0x36723f03ce2a8ee4: the
/// peer crashed and lost it from its cache).
#[test]
fn an_acked_write_whose_local_half_runs_is_marked_when_the_link_drops() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.write(1, 3 * 4096, block(9, 4096));
    deliver(&mut p);
    assert!(p.b.complete_one(p.now), "the peer writes it");
    deliver(&mut p);
    assert!(!p.a.done(1), "the local half still runs");
    p.a.r.handle_link_down();
    deliver(&mut p);
    assert!(p.a.r.bitmap().is_set(3), "not barrier-acked: out of sync");
    assert!(p.a.complete_one(p.now));
    deliver(&mut p);
    assert!(p.a.done(1), "the client sees no error");
}

/// The flush before an AL transaction that evicts an extent failed: the extent's writes
/// may die with the cache, so it stays out of sync (simulation seed 0xc74295ddab409c07).
#[test]
fn a_failed_flush_before_an_eviction_keeps_the_extent_out_of_sync() {
    let mut p = Pair::new(ReplConfig::default());
    p.a.r = Replicator::new(ReplConfig::default(), 2 * SIZE, Bitmap::new(2 * SIZE / 512))
        .with_activity_log(crate::meta::AlWriter::new(1, 0));
    p.a.r.handle_link_up();
    p.a.write(1, 0, block(1, 4096));
    p.settle();
    assert!(p.a.done(1));
    p.a.hold_al = true;
    p.a.r
        .handle_app_write(2, 4 << 20, 4096, WriteKind::Write { fua: false });
    p.a.app.insert(
        2,
        (4 << 20, block(2, 4096), WriteKind::Write { fua: false }),
    );
    let Some(ReplAction::Local {
        id,
        io: LocalIo::Flush,
    }) = p.a.r.poll_action()
    else {
        panic!("a flush first");
    };
    p.a.r
        .handle_local_done(p.now, id, Err(crate::io::Errno::EIO));
    let next = p.a.r.poll_action();
    assert!(
        matches!(&next, Some(ReplAction::WriteAl { evicted, .. }) if evicted == &[0]),
        "{next:?}"
    );
    assert_eq!(p.a.r.bitmap().count(), 1024, "extent 0, 4 MiB, out of sync");
}

/// A SyncSource may take its target for finished once it has answered every block still
/// out of sync here (the acks may still be on the way), not before.
#[test]
fn a_source_knows_when_its_target_may_have_finished() {
    let mut bm = Bitmap::new(SIZE / 512);
    bm.set_range(5, 1).unwrap();
    let mut p = Pair::new(ReplConfig::default());
    p.a.r = Replicator::new(ReplConfig::default(), SIZE, bm.clone());
    p.b.r = Replicator::new(ReplConfig::default(), SIZE, bm);
    p.a.r.handle_link_up();
    p.b.r.handle_link_up();
    assert!(!p.a.r.may_target_have_finished(), "not syncing");
    p.a.r.start_sync(p.now, SyncSide::Source);
    p.b.r.start_sync(p.now, SyncSide::Target);
    assert!(!p.a.r.may_target_have_finished(), "block 5 not answered");
    deliver(&mut p);
    assert!(!p.a.r.may_target_have_finished(), "requested, not read");
    assert!(p.a.complete_one(p.now), "the source reads block 5");
    deliver(&mut p);
    assert!(p.a.r.may_target_have_finished(), "answered, ack pending");
    p.settle();
    assert_eq!(p.b.finished, vec![(SyncSide::Target, 0)]);
    assert_eq!(p.a.finished, vec![(SyncSide::Source, 0)]);
    assert!(
        !p.a.r.may_target_have_finished(),
        "finished: no longer a source"
    );
}
