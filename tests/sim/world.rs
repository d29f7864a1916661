//! One simulated run: two nodes, the network, simulated time and a seeded schedule of
//! application I/O, faults and operator actions (a safety phase), then a liveness phase in
//! which the faults heal and the pair must converge. The oracle checks after every step.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use urbd::core::{AdminCmd, ConnAdmin, ConnState, DiskState, Role};
use urbd::meta::{Bitmap, MdFlags, Uuids};
use urbd::wire::Socket;

use crate::check::{BeforeCrash, Oracle, Rule, View, Violation, WriteRec};
use crate::disk::{BLOCK, DurableMeta, SimDisk, block_data};
use crate::net::{Delivery, Net};
use crate::node::{AL_EXTENTS, Mutation, Node, Note, Out, SIZE};
use crate::rng::Rng;

/// The fault mix and pacing of one run, drawn from its seed (TigerBeetle's
/// `options_swarm`): some runs crash a lot, some never; some cut links, some partition.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Steps of the safety phase.
    pub steps: u64,
    /// Weight of an application write.
    pub write: u32,
    /// Weight of a crash.
    pub crash: u32,
    /// Weight of a link cut.
    pub cut: u32,
    /// Weight of a partition.
    pub partition: u32,
    /// Weight of an EIO episode.
    pub eio: u32,
    /// Weight of a delay spike (may trip the ping timeout).
    pub spike: u32,
    /// Weight of an operator action.
    pub admin: u32,
    /// Per mille of crashes that tear the unflushed cache (rather than drop it).
    pub tear: u32,
    /// Largest one-way network delay, microseconds.
    pub delay_us: u64,
}

impl Options {
    /// Turns off the fault kinds named in `off` (comma-separated: crash, cut, partition,
    /// eio, spike, admin).
    pub fn without(mut self, off: &str) -> Options {
        for k in off.split(',').map(str::trim) {
            match k {
                "crash" => self.crash = 0,
                "cut" => self.cut = 0,
                "partition" => self.partition = 0,
                "eio" => self.eio = 0,
                "spike" => self.spike = 0,
                "admin" => self.admin = 0,
                _ => {}
            }
        }
        self
    }

    /// The options of `seed`.
    pub fn swarm(rng: &mut Rng, steps: u64) -> Options {
        // Weights against 1,000 for delivering a frame or completing an I/O.
        let pick = |rng: &mut Rng, max: u64| {
            if rng.chance(250) {
                0
            } else {
                rng.range(1, max) as u32
            }
        };
        Options {
            steps,
            write: rng.range(50, 400) as u32,
            crash: pick(rng, 12),
            cut: pick(rng, 12),
            partition: pick(rng, 6),
            eio: pick(rng, 8),
            spike: pick(rng, 6),
            admin: pick(rng, 20),
            tear: rng.range(0, 1000) as u32,
            delay_us: rng.range(20, 3000),
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Application writes issued.
    pub writes: u64,
    /// Crashes.
    pub crashes: u64,
    /// Healthy points reached.
    pub heals: u64,
    /// Frames sent.
    pub frames: u64,
    /// Resyncs started.
    pub resyncs: u64,
    /// Split-brain refusals.
    pub split_brains: u64,
}

/// One run.
pub struct World {
    rng: Rng,
    opts: Options,
    now: Instant,
    step: u64,
    nodes: [Node; 2],
    net: Net,
    /// The transport each node holds, as the network knows it.
    held: [Option<u64>; 2],
    oracle: Oracle,
    next_tag: u64,
    establish_at: Option<Instant>,
    partitioned_until: Option<Instant>,
    down_until: [Option<Instant>; 2],
    /// The node crashed as Primary and has not decided a handshake with its peer since:
    /// the fail-over promotes its peer rather than it (see `fail_over`).
    crashed_primary: [bool; 2],
    eio_until: [Option<Instant>; 2],
    /// The node whose disk has EIO episodes in this seed: one failing disk (two would be
    /// a double failure, which `on-io-error` does not promise to survive: both disks
    /// Inconsistent).
    eio_node: usize,
    spike_until: Option<Instant>,
    split_brain: bool,
    /// A handshake found no common data generation ("Unrelated data"): the node the
    /// operator recreates the metadata of.
    unrelated_victim: Option<usize>,
    stats: Stats,
    trace: Option<Vec<String>>,
    pending_violation: Option<Violation>,
    watched: Option<Vec<(u64, bool, bool)>>,
    watched_states: [String; 2],
}

fn initial_meta() -> DurableMeta {
    let mut flags = MdFlags::default();
    flags.set(
        MdFlags::CONSISTENT | MdFlags::WAS_UP_TO_DATE | MdFlags::AL_CLEAN,
        true,
    );
    DurableMeta {
        sb: urbd::core::MdUpdate {
            uuids: Uuids {
                current: 0x5EED_0000_0000_1000,
                bitmap: 0,
                history: [0, 0],
            },
            flags,
            la_size_sect: SIZE / 512,
            clean: true,
        },
        bitmap: Bitmap::new(SIZE / 512),
        al_slots: vec![urbd::meta::al::LC_FREE; usize::from(AL_EXTENTS)],
    }
}

/// What `drbdmeta create-md` writes (`meta::create_md`): the just-created UUID, no
/// other, flags `MDF_AL_CLEAN` only (the disk attaches Inconsistent), an empty bitmap.
fn created_meta() -> DurableMeta {
    let mut m = initial_meta();
    m.sb.uuids = Uuids {
        current: urbd::meta::UUID_JUST_CREATED,
        bitmap: 0,
        history: [0, 0],
    };
    m.sb.flags = MdFlags(MdFlags::AL_CLEAN);
    m.sb.la_size_sect = 0;
    m
}

impl World {
    /// A run of `seed` (both nodes start UpToDate with the same data generation, as after
    /// an initial sync, and connect).
    pub fn new(seed: u64, steps: u64, off: &str, mutation: Option<Mutation>, trace: bool) -> World {
        let mut rng = Rng::new(seed);
        let opts = Options::swarm(&mut rng, steps).without(off);
        let now = Instant::now();
        let mk = |id: usize, rng: &mut Rng| {
            Node::new(id, SimDisk::new(SIZE), initial_meta(), rng.fork(), mutation)
        };
        let nodes = [mk(0, &mut rng), mk(1, &mut rng)];
        let mut w = World {
            rng,
            opts,
            now,
            step: 0,
            nodes,
            net: Net::default(),
            held: [None; 2],
            oracle: Oracle::new((SIZE / BLOCK) as usize),
            next_tag: 1,
            establish_at: None,
            partitioned_until: None,
            down_until: [None; 2],
            crashed_primary: [false; 2],
            eio_until: [None; 2],
            eio_node: (seed >> 17) as usize & 1,
            spike_until: None,
            split_brain: false,
            unrelated_victim: None,
            stats: Stats::default(),
            trace: trace.then(Vec::new),
            pending_violation: None,
            watched: None,
            watched_states: Default::default(),
        };
        for n in &mut w.nodes {
            n.start(now);
        }
        w
    }

    /// The options drawn from the seed.
    pub fn options(&self) -> Options {
        self.opts
    }

    fn log(&mut self, what: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            let s = what();
            t.push(s);
        }
    }

    /// The trace so far (replay mode only).
    pub fn trace(&self) -> &[String] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// Runs the safety phase, then the liveness phase.
    pub fn run(&mut self) -> Result<Stats, Violation> {
        for _ in 0..self.opts.steps {
            self.step_safety()?;
        }
        self.liveness()?;
        self.stats.heals = self.oracle.heals;
        self.stats.frames = self.net.sent;
        Ok(self.stats.clone())
    }

    fn violation(&self, rule: Rule, detail: String) -> Violation {
        Violation {
            rule,
            step: self.step,
            detail,
        }
    }

    // ----- the safety phase -----------------------------------------------------------

    fn step_safety(&mut self) -> Result<(), Violation> {
        self.step += 1;
        let o = self.opts;
        let primary = (0..2).find(|&i| self.nodes[i].serving());
        let can_write = primary.is_some_and(|p| self.nodes[p].app_in_flight() < 8);
        let choices: [(u32, u8); 12] = [
            (
                if self.net.due(self.now).is_empty() {
                    0
                } else {
                    1000
                },
                0,
            ),
            (if self.any_pending() { 800 } else { 0 }, 1),
            (if can_write { o.write } else { 0 }, 2),
            (if primary.is_some() { 10 } else { 0 }, 3),
            (300, 4),
            (o.crash, 5),
            (o.cut, 6),
            (o.partition, 7),
            (o.eio, 8),
            (o.spike, 9),
            (o.admin, 10),
            (if primary.is_none() { 30 } else { 0 }, 11),
        ];
        let total: u32 = choices.iter().map(|c| c.0).sum();
        let mut x = self.rng.below(u64::from(total)) as u32;
        let mut pick = 4;
        for (w, c) in choices {
            if x < w {
                pick = c;
                break;
            }
            x -= w;
        }
        match pick {
            0 => self.deliver_one(),
            1 => self.complete_one(),
            2 => self.write(primary.unwrap_or(0), false),
            3 => self.flush(primary.unwrap_or(0)),
            5 => self.crash_one(),
            6 => self.cut(),
            7 => self.partition(),
            8 => self.eio(),
            9 => {
                let d = Duration::from_millis(self.rng.range(100, 1500));
                self.log(|| format!("delay spike {d:?}"));
                self.spike_until = Some(self.now + d);
            }
            10 => self.operator(),
            11 => self.fail_over(),
            _ => self.advance(),
        }
        self.after_step()
    }

    fn any_pending(&self) -> bool {
        self.nodes.iter().any(|n| n.up && !n.pending.is_empty())
    }

    /// Time moves: to the next thing due, or a little.
    fn advance(&mut self) {
        let mut next = self.net.next_due(self.now);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        for n in &self.nodes {
            if n.up {
                consider(n.next_timer());
            }
        }
        consider(self.establish_at);
        consider(self.partitioned_until);
        consider(self.spike_until);
        for i in 0..2 {
            consider(self.down_until[i]);
            consider(self.eio_until[i]);
        }
        let small = self.now + Duration::from_micros(self.rng.range(1, 2000));
        self.now = match next {
            Some(t) if t > self.now && self.rng.chance(500) => t,
            _ => small,
        };
    }

    fn deliver_one(&mut self) {
        let due = self.net.due(self.now);
        if due.is_empty() {
            return;
        }
        let (from, socket) = due[self.rng.below(due.len() as u64) as usize];
        match self.net.take(from, socket) {
            Some(Delivery::Frame { to, bytes }) => {
                if self.trace.is_some() {
                    let what = urbd::wire::Frame::decode(&bytes)
                        .ok()
                        .flatten()
                        .map(|(f, _)| format!("{}", f.packet.packet_type()))
                        .unwrap_or_default();
                    let t = self.now;
                    self.log(|| format!("{t:?} deliver to node{to}: {what}"));
                }
                if self.nodes[to].up {
                    self.nodes[to].receive(self.now, &bytes);
                }
            }
            Some(Delivery::End { to }) => {
                self.log(|| format!("node{to} sees the end of the transport"));
                self.held[to] = None;
                if self.nodes[to].up {
                    self.nodes[to].transport_lost(self.now);
                }
            }
            None => {}
        }
    }

    fn complete_one(&mut self) {
        let up: Vec<usize> = (0..2)
            .filter(|&i| self.nodes[i].up && !self.nodes[i].pending.is_empty())
            .collect();
        if up.is_empty() {
            return;
        }
        let i = up[self.rng.below(up.len() as u64) as usize];
        let k = self.rng.below(self.nodes[i].pending.len() as u64) as usize;
        self.nodes[i].complete_io(self.now, k);
    }

    fn write(&mut self, node: usize, _liveness: bool) {
        let tag = self.next_tag;
        self.next_tag += 1;
        let extent = self.rng.below(2);
        let blocks = self.rng.range(1, 4);
        let first = extent * 1024 + self.rng.below(32);
        let mut data = Vec::with_capacity((blocks * BLOCK) as usize);
        for b in first..first + blocks {
            data.extend_from_slice(&block_data(tag, b));
        }
        let fua = self.rng.chance(50);
        self.oracle.issue(
            tag,
            WriteRec {
                node,
                first,
                blocks,
                issued: self.step,
                completed: None,
            },
        );
        self.stats.writes += 1;
        self.log(|| format!("node{node} write {tag} blocks {first}+{blocks} fua={fua}"));
        self.nodes[node].app_write(self.now, tag, first * BLOCK, data, fua);
    }

    fn flush(&mut self, node: usize) {
        if self.nodes[node].app_in_flight() > 0 {
            return;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        self.log(|| format!("node{node} flush {tag}"));
        self.nodes[node].app_flush(self.now, tag);
    }

    fn crash_one(&mut self) {
        let i = self.rng.below(2) as usize;
        if !self.nodes[i].up || !self.nodes[1 - i].up {
            return;
        }
        self.crash(i);
    }

    fn crash(&mut self, i: usize) {
        let before = BeforeCrash {
            node: i,
            role: self.nodes[i].role(),
            disk: self.nodes[i].disk_state(),
            cstate: self.nodes[i].cstate(),
            peer_primary: self.nodes[1 - i].up && self.nodes[1 - i].role() == Role::Primary,
        };
        let tear = self.rng.chance(self.opts.tear).then(|| self.rng.next_u64());
        self.log(|| format!("CRASH node{i} ({before:?}) tear={}", tear.is_some()));
        self.stats.crashes += 1;
        self.crashed_primary[i] |= before.role == Role::Primary;
        self.nodes[i].crash(tear);
        self.held[i] = None;
        if self.held[1 - i].is_some() && self.net.cut() {
            self.held[1 - i] = None;
            self.nodes[1 - i].transport_lost(self.now);
        }
        self.down_until[i] = Some(self.now + Duration::from_millis(self.rng.range(5, 800)));
        self.eio_until[i] = None;
        let v0 = self.nodes[0].disk.versions().to_vec();
        let v1 = self.nodes[1].disk.versions().to_vec();
        let views = [
            View {
                up: self.nodes[0].up,
                disk: self.nodes[0].disk_state(),
                versions: &v0,
            },
            View {
                up: self.nodes[1].up,
                disk: self.nodes[1].disk_state(),
                versions: &v1,
            },
        ];
        let step = self.step;
        if let Err(v) = self.oracle.crashed(before, &views, step) {
            self.pending_violation = Some(v);
        }
    }

    fn cut(&mut self) {
        if self.net.cut() {
            self.log(|| "link cut".into());
            self.oracle.fault();
            for i in 0..2 {
                if self.held[i].take().is_some() && self.nodes[i].up {
                    self.nodes[i].transport_lost(self.now);
                }
            }
        }
    }

    fn partition(&mut self) {
        let d = Duration::from_millis(self.rng.range(20, 3000));
        self.log(|| format!("partition for {d:?}"));
        self.oracle.fault();
        self.partitioned_until = Some(self.now + d);
        self.cut();
    }

    fn eio(&mut self) {
        let _ = self.rng.below(2);
        let i = self.eio_node;
        // A single failure: the disk fails while its data is also on the other node
        // (both Connected and UpToDate, no resync running). An error on the only good
        // copy (a SyncSource's, say) leaves no UpToDate disk under `on-io-error`, in DRBD
        // as here: that is a double failure, for the operator.
        if !self.nodes[i].up
            || !self.nodes.iter().all(|n| {
                n.up && n.cstate() == ConnState::Connected && n.disk_state() == DiskState::UpToDate
            })
        {
            return;
        }
        let extent = self.rng.below(2);
        let sector = (extent * 1024 + self.rng.below(32)) * (BLOCK / 512);
        let count = self.rng.range(1, 8) * (BLOCK / 512);
        let f = self.nodes[i].disk.faults().clone();
        let kind = self.rng.below(4);
        match kind {
            0 => f.fail_reads(sector, count),
            1 => f.fail_flushes(true),
            _ => f.fail_writes(sector, count),
        }
        self.log(|| format!("EIO on node{i} kind {kind} sector {sector}+{count}"));
        self.oracle.fault();
        self.eio_until[i] = Some(self.now + Duration::from_millis(self.rng.range(1, 500)));
    }

    /// An operator's command on a random node.
    fn operator(&mut self) {
        let i = self.rng.below(2) as usize;
        if !self.nodes[i].up {
            return;
        }
        let now = self.now;
        match self.rng.below(6) {
            0 => {
                // Promote only where a cluster manager would: the peer is not Primary as
                // far as we can tell, unless (rarely) the operator forces a split brain.
                let peer_primary =
                    self.nodes[1 - i].up && self.nodes[1 - i].role() == Role::Primary;
                if peer_primary && !self.rng.chance(100) {
                    return;
                }
                let r = self.nodes[i].admin(now, AdminCmd::Primary { force: false });
                self.log(|| format!("node{i} primary: {r:?}"));
                if r.is_ok() && peer_primary {
                    self.oracle.fault();
                }
            }
            1 => {
                let r = self.nodes[i].admin(now, AdminCmd::Secondary);
                self.log(|| format!("node{i} secondary: {r:?}"));
            }
            2 => {
                self.log(|| format!("node{i} disconnect"));
                self.oracle.fault();
                self.nodes[i].conn_admin(now, ConnAdmin::Disconnect);
            }
            _ => self.connect(i),
        }
    }

    fn connect(&mut self, i: usize) {
        if self.nodes[i].conn.state() != ConnState::StandAlone {
            return;
        }
        // At most one side discards (both asking is refused, as DRBD does).
        let discard = self.split_brain
            && !self.nodes[1 - i].conn.is_discard_my_data()
            && self.rng.chance(500);
        if discard {
            self.oracle.discard_requested(i);
        }
        self.log(|| format!("node{i} connect discard_my_data={discard}"));
        self.nodes[i].conn_admin(
            self.now,
            ConnAdmin::Connect {
                discard_my_data: discard,
            },
        );
    }

    /// Pacemaker's move: no Primary, promote an UpToDate node. Not a node that crashed as
    /// Primary and has not reconnected since, while its peer is a candidate: the cluster
    /// promoted the survivor while the crashed node was down (the simulation reboots in
    /// milliseconds what takes minutes), and a rejoining node does not take the role from
    /// a live peer. Promoted anyway (an operator's choice), it would make its own disk the
    /// data, without the writes its volatile cache lost and its peer holds, as in DRBD.
    /// Alone, it is still promoted.
    fn fail_over(&mut self) {
        let mut candidates: Vec<usize> = (0..2)
            .filter(|&i| self.nodes[i].up && self.nodes[i].disk_state() == DiskState::UpToDate)
            .collect();
        if candidates.len() == 2 && self.crashed_primary[0] != self.crashed_primary[1] {
            candidates.retain(|&i| !self.crashed_primary[i]);
        }
        if candidates.is_empty() || self.nodes.iter().any(|n| n.up && n.role() == Role::Primary) {
            return;
        }
        let i = candidates[self.rng.below(candidates.len() as u64) as usize];
        let r = self.nodes[i].admin(self.now, AdminCmd::Primary { force: false });
        self.log(|| format!("fail-over: node{i} primary: {r:?}"));
    }

    // ----- after every step -----------------------------------------------------------

    fn after_step(&mut self) -> Result<(), Violation> {
        if let Some(v) = self.pending_violation.take() {
            return Err(v);
        }
        self.watch();
        self.scheduled();
        for _ in 0..4 {
            for i in 0..2 {
                if self.nodes[i].up {
                    self.nodes[i].tick(self.now);
                }
            }
            let moved = self.flush_outboxes();
            self.notes()?;
            if !moved {
                break;
            }
        }
        if let Some(v) = self.pending_violation.take() {
            return Err(v);
        }
        self.check()
    }

    /// Replay aid: `URBD_SIM_WATCH=block` logs every change of that block's version and
    /// bitmap bit on either node; `URBD_SIM_STATES=1` every change of a node's state and
    /// UUIDs.
    fn watch(&mut self) {
        if self.trace.is_some() && std::env::var_os("URBD_SIM_STATES").is_some() {
            for i in 0..2 {
                let now = format!(
                    "{:?} {:x?}",
                    self.nodes[i].vol.state(),
                    self.nodes[i].vol.uuids()
                );
                if self.watched_states[i] != now {
                    self.log(|| format!("node{i} state {now}"));
                    self.watched_states[i] = now;
                }
            }
        }
        let Some(b) = self
            .trace
            .as_ref()
            .and(std::env::var("URBD_SIM_WATCH").ok())
        else {
            return;
        };
        let Ok(b) = b.parse::<usize>() else {
            return;
        };
        let now: Vec<(u64, bool, bool)> = self
            .nodes
            .iter()
            .map(|n| {
                (
                    n.disk.versions()[b],
                    n.bitmap().is_set(b as u64),
                    n.meta.bitmap.is_set(b as u64),
                )
            })
            .collect();
        if self.watched.as_ref() != Some(&now) {
            self.log(|| format!("watch block {b}: (version, bit, durable bit) per node {now:?}"));
            self.watched = Some(now);
        }
    }

    /// Time-driven events: restarts, healed partitions, EIO ending, new transports.
    fn scheduled(&mut self) {
        let now = self.now;
        for i in 0..2 {
            if self.down_until[i].is_some_and(|t| t <= now) {
                self.down_until[i] = None;
                self.log(|| format!("node{i} boots"));
                self.nodes[i].start(now);
            }
            // An EIO episode ends when its time is up, or as soon as the other copy is
            // not in reach and current (a single failure; see `eio`).
            let other = &self.nodes[1 - i];
            let other_good = other.up
                && other.cstate() == ConnState::Connected
                && other.disk_state() == DiskState::UpToDate;
            if self.eio_until[i].is_some_and(|t| t <= now || !other_good) {
                self.eio_until[i] = None;
                self.nodes[i].disk.faults().clear();
            }
        }
        if self.partitioned_until.is_some_and(|t| t <= now) {
            self.partitioned_until = None;
        }
        if self.spike_until.is_some_and(|t| t <= now) {
            self.spike_until = None;
        }
        let ready = self.net.generation().is_none()
            && self.partitioned_until.is_none()
            && self
                .nodes
                .iter()
                .all(|n| n.up && n.connecting && n.conn.state() == ConnState::WFConnection);
        match self.establish_at {
            None if ready => {
                self.establish_at = Some(now + Duration::from_micros(self.rng.range(10, 5000)));
            }
            Some(t) if t <= now => {
                self.establish_at = None;
                if ready {
                    let g = self.net.open();
                    let accepted = self.rng.below(2) as usize;
                    self.log(|| format!("transport {g} up"));
                    for i in 0..2 {
                        self.held[i] = Some(g);
                        self.nodes[i].transport_up(now, g, i == accepted);
                    }
                }
            }
            _ => {}
        }
    }

    /// Moves what the nodes sent into the network. Returns whether anything moved.
    fn flush_outboxes(&mut self) -> bool {
        let mut moved = false;
        for i in 0..2 {
            let out = std::mem::take(&mut self.nodes[i].outbox);
            for o in out {
                moved = true;
                match o {
                    Out::Frame(socket, bytes) => {
                        if self.held[i].is_some() && self.held[i] == self.net.generation() {
                            let at = self.now + self.delay(socket);
                            self.net.send(i, socket, bytes, at);
                        }
                    }
                    Out::Close => {
                        if self.held[i].is_some() && self.held[i] == self.net.generation() {
                            self.net.close(i);
                        }
                        self.held[i] = None;
                    }
                }
            }
        }
        moved
    }

    fn delay(&mut self, _socket: Socket) -> Duration {
        let mut us = self.rng.range(1, self.opts.delay_us);
        if self.spike_until.is_some() && self.rng.chance(300) {
            us += self.rng.range(100_000, 1_200_000);
        }
        Duration::from_micros(us)
    }

    fn notes(&mut self) -> Result<(), Violation> {
        for i in 0..2 {
            let notes = std::mem::take(&mut self.nodes[i].notes);
            for n in notes {
                match n {
                    Note::Completed {
                        tag,
                        ok,
                        linked,
                        issued_unlinked,
                    } => {
                        self.log(|| format!("node{i} completed {tag} ok={ok} linked={linked}"));
                        self.oracle
                            .completed(i, tag, ok, linked, issued_unlinked, self.step);
                    }
                    Note::Decided(outcome, generation, why) => {
                        self.log(|| {
                            format!("node{i} decided {outcome:?} on transport {generation}: {why}")
                        });
                        if matches!(
                            outcome,
                            urbd::core::Handshake::Connected
                                | urbd::core::Handshake::SyncSource { .. }
                                | urbd::core::Handshake::SyncTarget { .. }
                        ) {
                            self.crashed_primary[i] = false;
                        }
                        if matches!(
                            outcome,
                            urbd::core::Handshake::SyncSource { .. }
                                | urbd::core::Handshake::SyncTarget { .. }
                        ) {
                            self.stats.resyncs += 1;
                        }
                        let consistent = self
                            .nodes
                            .iter()
                            .all(|n| n.disk_state() >= DiskState::Outdated);
                        self.oracle
                            .decided(i, outcome, generation, consistent, self.step)?;
                        if outcome
                            == urbd::core::Handshake::Refuse(
                                urbd::core::HandshakeRefusal::Unrelated,
                            )
                            && self.unrelated_victim.is_none()
                        {
                            // The victim: an Inconsistent disk if one is, else the one that
                            // is not Primary (the newer data is the Primary's).
                            let d = [self.nodes[0].disk_state(), self.nodes[1].disk_state()];
                            let v = if d[0] != d[1] {
                                usize::from(d[1] < d[0])
                            } else {
                                usize::from(self.nodes[1].role() != Role::Primary)
                            };
                            self.log(|| format!("unrelated data: node{v} is the victim"));
                            self.unrelated_victim = Some(v);
                        }
                    }
                    Note::SplitBrain => {
                        self.log(|| format!("node{i} refused: split brain"));
                        self.split_brain = true;
                        self.stats.split_brains += 1;
                    }
                    Note::ProtocolError(what) => {
                        return Err(self.violation(Rule::ProtocolError, format!("node{i}: {what}")));
                    }
                }
            }
        }
        Ok(())
    }

    fn healthy_now(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.up && n.cstate() == ConnState::Connected
                && n.disk_state() == DiskState::UpToDate
                && n.is_idle()
                && n.bitmap().count() == 0
        }) && self.net.in_flight() == 0
    }

    fn check(&mut self) -> Result<(), Violation> {
        let views = [
            View {
                up: self.nodes[0].up,
                disk: self.nodes[0].disk_state(),
                versions: self.nodes[0].disk.versions(),
            },
            View {
                up: self.nodes[1].up,
                disk: self.nodes[1].disk_state(),
                versions: self.nodes[1].disk.versions(),
            },
        ];
        self.oracle.check_up_to_date(&views, self.step)?;
        if self.healthy_now() {
            if self.oracle.failures > 0 {
                self.split_brain = false;
            }
            let before = self.oracle.failures;
            self.oracle.healthy(&views, self.step)?;
            if before > 0 {
                self.log(|| format!("healthy (after {before} failures)"));
            }
            // A disk fault still armed outlives the healthy point: the next write it fails
            // (a Secondary's NEG_ACK leaves the block on the Primary alone) is a failure
            // of the new period, so a crash after it is the second one.
            for i in 0..2 {
                if self.eio_until[i].is_some() {
                    self.oracle.fault();
                }
            }
        }
        Ok(())
    }

    // ----- the liveness phase ---------------------------------------------------------

    fn liveness(&mut self) -> Result<(), Violation> {
        self.log(|| "---- liveness: faults heal".into());
        self.partitioned_until = None;
        self.spike_until = None;
        for i in 0..2 {
            self.eio_until[i] = None;
            self.nodes[i].disk.faults().clear();
            if !self.nodes[i].up {
                self.down_until[i] = Some(self.now);
            }
        }
        let mut kicks = 0;
        let mut idle_since = self.step;
        let mut progress = self.progress();
        for _ in 0..40_000 {
            self.step += 1;
            if self.healthy_now() {
                self.after_step()?;
                return self.final_check();
            }
            for i in 0..2 {
                if self.nodes[i].up
                    && self.nodes[i].conn.state() == ConnState::StandAlone
                    && self.nodes[i].role() == Role::Primary
                    && self.nodes[i].app_in_flight() == 0
                    && self.nodes[1 - i].up
                {
                    // A refused handshake (split brain, or "I am Primary but would be
                    // SyncTarget"): the cluster manager stops the resource here first.
                    let r = self.nodes[i].admin(self.now, AdminCmd::Secondary);
                    self.log(|| format!("liveness: node{i} secondary: {r:?}"));
                }
                if self.unrelated_victim == Some(i)
                    && self.nodes[i].up
                    && self.nodes[i].conn.state() == ConnState::StandAlone
                    && self.nodes[i].role() == Role::Secondary
                {
                    self.create_md(i);
                }
                if self.nodes[i].up && self.nodes[i].conn.state() == ConnState::StandAlone {
                    let victim = self.split_brain
                        && !self.nodes[1 - i].conn.is_discard_my_data()
                        && (i == 1 || self.nodes[i].conn.is_discard_my_data());
                    if victim {
                        self.oracle.discard_requested(i);
                    }
                    self.log(|| format!("liveness: node{i} connect discard_my_data={victim}"));
                    self.nodes[i].conn_admin(
                        self.now,
                        ConnAdmin::Connect {
                            discard_my_data: victim,
                        },
                    );
                }
            }
            let busy = !self.net.due(self.now).is_empty() || self.any_pending();
            // Progress is a change of what converging means (states, bitmaps, requests in
            // flight), not traffic: pings alone keep the network busy forever.
            let now_progress = self.progress();
            if now_progress != progress {
                progress = now_progress;
                idle_since = self.step;
            }
            if busy {
                if !self.net.due(self.now).is_empty() && self.rng.chance(500) || !self.any_pending()
                {
                    self.deliver_one();
                } else {
                    self.complete_one();
                }
            } else {
                self.advance();
            }
            if self.step - idle_since > 2_000 && kicks < 3 {
                // Stuck (a resync that finished with failed blocks leaves the SyncTarget
                // Connected and Inconsistent, as DRBD 8.4's `drbd_resync_finished` does
                // when `rs_failed`): retry, as an operator would, with disconnect and
                // connect.
                kicks += 1;
                idle_since = self.step;
                self.log(|| "liveness: disconnect/connect to retry".into());
                self.nodes[1].conn_admin(self.now, ConnAdmin::Disconnect);
            }
            self.after_step()?;
        }
        let mut s = String::new();
        for n in &self.nodes {
            let _ = write!(
                s,
                "node{}: up={} {:?} {:?} {:?} oos={} idle={}; ",
                n.id,
                n.up,
                n.role(),
                n.cstate(),
                n.disk_state(),
                n.bitmap().count(),
                n.is_idle()
            );
        }
        let _ = write!(
            s,
            "net in flight {} due {:?}",
            self.net.in_flight(),
            self.net.due(self.now)
        );
        Err(self.violation(Rule::Liveness, s))
    }

    /// "Unrelated data, aborting!" (DRBD 8.4's `drbd_sync_handshake`, rule -1000) is
    /// final for DRBD: neither `invalidate` nor `--discard-my-data` gets past it (both
    /// act after the UUID comparison). DRBD's answer is the operator's: `down`,
    /// `create-md` and `up` on the node whose data is to go, which then attaches
    /// Inconsistent with the just-created UUID and becomes a full SyncTarget (rule 20).
    /// What only the victim held is thrown away, as with `--discard-my-data`.
    fn create_md(&mut self, i: usize) {
        self.unrelated_victim = None;
        self.log(|| format!("liveness: node{i} down, create-md, up"));
        self.oracle.discard_requested(i);
        let n = &mut self.nodes[i];
        n.conn_admin(self.now, ConnAdmin::Disconnect);
        // `down` flushes the data disk, so the restart below loses nothing of it.
        let _ = n.disk.flush();
        n.meta = created_meta();
        n.crash(None);
        n.start(self.now);
        self.held[i] = None;
    }

    /// What changes while the pair converges (the liveness phase's notion of progress).
    fn progress(&self) -> Vec<u64> {
        let mut p = Vec::new();
        for n in &self.nodes {
            p.extend([
                u64::from(n.up),
                n.role() as u64,
                n.cstate() as u64,
                n.disk_state() as u64,
                n.bitmap().count(),
                n.app_in_flight() as u64,
                n.pending.len() as u64,
            ]);
        }
        p
    }

    /// At the end: the replicas hold the same versions everywhere, and for the blocks
    /// the application writes, the bytes on both disks are what the bookkeeping says
    /// (reading all 8 MiB twice per seed would cost more than the whole run).
    fn final_check(&mut self) -> Result<(), Violation> {
        if self.nodes[0].disk.versions() != self.nodes[1].disk.versions() {
            return Err(self.violation(Rule::ReplicasDiffer, "final versions differ".into()));
        }
        for n in &self.nodes {
            for extent in 0..2 {
                let first = extent * 1024;
                let bytes = n.disk.read_raw(first * BLOCK, 40 * BLOCK);
                for (i, d) in bytes.chunks(BLOCK as usize).enumerate() {
                    let b = first + i as u64;
                    if crate::disk::version_of(b, d) != n.disk.versions()[b as usize] {
                        return Err(self.violation(
                            Rule::CorruptBlock,
                            format!("node{}: block {b} differs from the harness's record", n.id),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
