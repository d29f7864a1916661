//! The oracle: what the application was promised, and the correctness rules of
//! `DESIGN.md` checked against what the disks hold.
//!
//! Failure accounting follows "after any single failure": `failures` counts faults (a
//! crash, a broken or cut link, a disconnect, EIO, a write answered without the peer)
//! since the system was last seen healthy (Connected, UpToDate/UpToDate, bitmaps empty,
//! nothing in flight), which is where the count restarts. The strict rules apply while it
//! is zero; past one failure, a crash may legitimately lose what only one cache held, and
//! those blocks are forgotten (any content is accepted until the next acknowledged write).

use std::collections::HashMap;
use std::fmt;

use urbd::core::{ConnState, DiskState, Handshake, Role};

use crate::disk::{CORRUPT, INITIAL};

/// A correctness rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// DESIGN rule 1: a write acknowledged under protocol C survives any single failure
    /// (the peer of a crashed Primary holds it).
    AckedWriteLost,
    /// DESIGN rule 3: the Secondary's disk is crash-consistent with the Primary's
    /// completion order.
    SecondaryNotCrashConsistent,
    /// Connected, UpToDate/UpToDate, nothing in flight: the replicas are byte-identical.
    ReplicasDiffer,
    /// A split brain was resolved without a policy or `--discard-my-data`.
    SplitBrainResolved,
    /// A node claims UpToDate while it misses an acknowledged write.
    UpToDateMissesAckedWrite,
    /// A block holds bytes no write produced.
    CorruptBlock,
    /// The core rejected what a correct peer sent, or lost a buffer.
    ProtocolError,
    /// Faults healed, the pair did not converge within the bound.
    Liveness,
}

impl Rule {
    /// A short name for messages and for the tests that expect a rule.
    pub fn name(self) -> &'static str {
        match self {
            Rule::AckedWriteLost => "rule 1: acknowledged write lost after a single failure",
            Rule::SecondaryNotCrashConsistent => {
                "rule 3: Secondary disk not crash-consistent with the Primary's completion order"
            }
            Rule::ReplicasDiffer => "replicas differ while Connected UpToDate/UpToDate and idle",
            Rule::SplitBrainResolved => "split brain resolved without a policy or the operator",
            Rule::UpToDateMissesAckedWrite => {
                "a node claims UpToDate but misses an acknowledged write"
            }
            Rule::CorruptBlock => "a block holds bytes no write produced",
            Rule::ProtocolError => "protocol error between two correct nodes",
            Rule::Liveness => "liveness: no convergence after the faults healed",
        }
    }
}

/// A broken rule.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which rule.
    pub rule: Rule,
    /// The step it was found at.
    pub step: u64,
    /// What exactly.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {}: {}: {}",
            self.step,
            self.rule.name(),
            self.detail
        )
    }
}

/// One application write.
#[derive(Debug, Clone, Copy)]
pub struct WriteRec {
    /// The node it was written on.
    pub node: usize,
    /// First block.
    pub first: u64,
    /// Blocks.
    pub blocks: u64,
    /// Step it was issued at.
    pub issued: u64,
    /// Step it completed successfully at.
    pub completed: Option<u64>,
}

/// What a node looked like just before it crashed.
#[derive(Debug, Clone, Copy)]
pub struct BeforeCrash {
    /// The node.
    pub node: usize,
    /// Its role.
    pub role: Role,
    /// Its disk.
    pub disk: DiskState,
    /// Its connection state.
    pub cstate: ConnState,
    /// The other node was up and Primary.
    pub peer_primary: bool,
}

/// A node as the checks see it.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Running.
    pub up: bool,
    /// Disk state.
    pub disk: DiskState,
    /// Version of each block now.
    pub versions: &'a [u64],
}

/// The oracle.
#[derive(Debug, Default)]
pub struct Oracle {
    writes: HashMap<u64, WriteRec>,
    /// Per block: acknowledged writes still owed, in acknowledgement order.
    acked: Vec<Vec<u64>>,
    /// Blocks that ever had an acknowledged write (the only ones with something owed).
    touched: std::collections::BTreeSet<usize>,
    /// Faults since the last healthy point.
    pub failures: u32,
    /// Node answered a write without its peer since the last healthy point, one that no
    /// resync it was SyncSource of carries.
    diverged: [bool; 2],
    /// Node answered a write without its peer since the last healthy point.
    alone: [bool; 2],
    /// The operator asked node `i` to discard its data since the last healthy point.
    discard: [bool; 2],
    /// Healthy points seen.
    pub heals: u64,
    /// A node's handshake decision whose peer has not decided on that transport yet:
    /// (transport, outcome, both disks at least Outdated).
    pending_decision: [Option<(u64, Handshake, bool)>; 2],
    /// The step at which node `i` last became SyncSource with its peer's agreement.
    synced_from: [Option<u64>; 2],
}

impl Oracle {
    /// An oracle for `blocks` blocks.
    pub fn new(blocks: usize) -> Oracle {
        Oracle {
            acked: vec![Vec::new(); blocks],
            ..Oracle::default()
        }
    }

    /// Write `id` was issued.
    pub fn issue(&mut self, id: u64, rec: WriteRec) {
        self.writes.insert(id, rec);
    }

    /// A fault happened.
    pub fn fault(&mut self) {
        self.failures += 1;
    }

    /// The operator used `--discard-my-data` on `node`.
    pub fn discard_requested(&mut self, node: usize) {
        self.discard[node] = true;
        self.failures += 1;
    }

    /// What block `b` must hold at least.
    fn required(&self, b: usize) -> u64 {
        self.acked[b].last().copied().unwrap_or(INITIAL)
    }

    /// Request `tag` of `node` was answered; `linked`: replicated to the peer;
    /// `issued_unlinked`: issued while the data side was not linked.
    pub fn completed(
        &mut self,
        node: usize,
        tag: u64,
        ok: bool,
        linked: bool,
        issued_unlinked: bool,
        step: u64,
    ) {
        let Some(rec) = self.writes.get_mut(&tag) else {
            return; // a flush
        };
        if !ok {
            return;
        }
        rec.completed = Some(step);
        let rec = *rec;
        for b in rec.first..rec.first + rec.blocks {
            self.acked[b as usize].push(tag);
            self.touched.insert(b as usize);
        }
        // A write issued while unlinked marked its blocks out of sync when it started; if
        // this node became SyncSource after that (both sides agreed), the resync carries
        // it to the peer even when its answer comes after the handshake.
        let covered = issued_unlinked && self.synced_from[node].is_some_and(|s| rec.issued <= s);
        if !linked {
            // The peer lacks it for now (a fault for the strict checks) ...
            if !self.alone[node] {
                self.failures += 1;
            }
            self.alone[node] = true;
            // ... but only a write no resync carries makes this node's data its own.
            if !covered {
                self.diverged[node] = true;
            }
        }
    }

    /// Every up node claiming UpToDate holds every acknowledged write (while no failure
    /// has happened since the last healthy point).
    pub fn check_up_to_date(&self, nodes: &[View<'_>; 2], step: u64) -> Result<(), Violation> {
        if self.failures > 0 {
            return Ok(());
        }
        for (i, n) in nodes.iter().enumerate() {
            if !n.up || n.disk != DiskState::UpToDate {
                continue;
            }
            for &b in &self.touched {
                let r = self.required(b);
                let v = n.versions[b];
                if v == CORRUPT || v < r {
                    return Err(Violation {
                        rule: Rule::UpToDateMissesAckedWrite,
                        step,
                        detail: format!(
                            "node{i} is UpToDate, block {b} holds version {v}, write {r} was acknowledged (failures before: {}, heals {})",
                            self.failures, self.heals
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// A node crashed (`nodes` shows the disks after the crash). Checks rule 1 and, for a
    /// Secondary, rule 3; then forgets what the crash legitimately lost.
    pub fn crashed(
        &mut self,
        before: BeforeCrash,
        nodes: &[View<'_>; 2],
        step: u64,
    ) -> Result<(), Violation> {
        let single = self.failures == 0;
        self.failures += 1;
        let survivor = &nodes[1 - before.node];
        let crashed = &nodes[before.node];
        for b in 0..self.acked.len() {
            let r = self.required(b);
            if r == INITIAL {
                continue;
            }
            let held = |v: u64| v != CORRUPT && v >= r;
            if single && survivor.up && !held(survivor.versions[b]) {
                return Err(Violation {
                    rule: Rule::AckedWriteLost,
                    step,
                    detail: format!(
                        "node{} crashed; node{} holds version {} of block {b}, write {r} was acknowledged",
                        before.node,
                        1 - before.node,
                        survivor.versions[b]
                    ),
                });
            }
            if !held(survivor.versions[b]) && !held(crashed.versions[b]) {
                // Lost with the second failure: nothing is owed for this block any more.
                self.acked[b].clear();
            }
        }
        if single
            && before.role == Role::Secondary
            && before.disk == DiskState::UpToDate
            && before.cstate == ConnState::Connected
            && before.peer_primary
        {
            self.check_crash_consistent(before.node, crashed.versions, step)?;
        }
        Ok(())
    }

    /// Rule 3 on a crashed Secondary's disk: if it holds a write issued at step `t`, it
    /// holds every write that completed before `t` (or something newer of its blocks).
    fn check_crash_consistent(
        &self,
        node: usize,
        disk: &[u64],
        step: u64,
    ) -> Result<(), Violation> {
        let mut newest: Option<(u64, u64, usize)> = None; // (issued, write, block)
        for (b, &v) in disk.iter().enumerate() {
            if v == INITIAL || v == CORRUPT {
                continue;
            }
            if let Some(w) = self.writes.get(&v)
                && newest.is_none_or(|(t, _, _)| w.issued > t)
            {
                newest = Some((w.issued, v, b));
            }
        }
        let Some((t, bw, bb)) = newest else {
            return Ok(());
        };
        for (b, acked) in self.acked.iter().enumerate() {
            let owed = acked
                .iter()
                .copied()
                .filter(|a| {
                    self.writes
                        .get(a)
                        .and_then(|w| w.completed)
                        .is_some_and(|c| c < t)
                })
                .max();
            if let Some(a) = owed
                && disk[b] < a
            {
                return Err(Violation {
                    rule: Rule::SecondaryNotCrashConsistent,
                    step,
                    detail: format!(
                        "crashed Secondary node{node} has write {bw} (block {bb}, issued at step {t}) \
                         but block {b} holds version {} older than write {a}, completed before it",
                        disk[b]
                    ),
                });
            }
        }
        Ok(())
    }

    /// A handshake on transport `generation` decided `outcome` on `node`.
    /// `consistent`: both disks were at least Outdated (an Inconsistent disk's writes
    /// give it no claim: DRBD syncs it from the other without a split brain).
    ///
    /// A decision takes effect only when the peer decided on the same transport too: each
    /// side decides on the UUIDs the other sent, and a side whose UUIDs changed after it
    /// sent them (a promotion while WFReportParams takes a new current UUID) drops the
    /// transport instead of deciding (`LostReason::LocalChanged`), so the other side's
    /// decision on the stale UUIDs is void: no bitmap is exchanged, no block moves. DRBD
    /// 8.4 has the same window (`drbd_set_role` sends the new UUIDs only when forced); the
    /// retry on the next transport sees the new UUIDs and refuses the split brain.
    pub fn decided(
        &mut self,
        node: usize,
        outcome: Handshake,
        generation: u64,
        consistent: bool,
        step: u64,
    ) -> Result<(), Violation> {
        let peer = 1 - node;
        match self.pending_decision[peer] {
            Some((g, peer_outcome, peer_consistent)) if g == generation => {
                self.pending_decision[peer] = None;
                self.both_decided(
                    [(node, outcome), (peer, peer_outcome)],
                    consistent && peer_consistent,
                    step,
                )
            }
            _ => {
                self.pending_decision[node] = Some((generation, outcome, consistent));
                Ok(())
            }
        }
    }

    /// Both sides decided on one transport (`outcomes`, the later decider first).
    fn both_decided(
        &mut self,
        outcomes: [(usize, Handshake); 2],
        consistent: bool,
        step: u64,
    ) -> Result<(), Violation> {
        let resolved = |o: Handshake| {
            matches!(
                o,
                Handshake::Connected | Handshake::SyncSource { .. } | Handshake::SyncTarget { .. }
            )
        };
        if outcomes.iter().all(|&(_, o)| resolved(o))
            && consistent
            && self.diverged[0]
            && self.diverged[1]
            && !self.discard[0]
            && !self.discard[1]
        {
            return Err(Violation {
                rule: Rule::SplitBrainResolved,
                step,
                detail: format!(
                    "both nodes answered writes without the other, then decided {outcomes:?}"
                ),
            });
        }
        for (node, outcome) in outcomes {
            if let Handshake::SyncSource { .. } = outcome {
                // Its data becomes the peer's: nothing of it is unique any more.
                self.diverged[node] = false;
                self.synced_from[node] = Some(step);
            }
            if let Handshake::SyncTarget { .. } = outcome
                && self.discard[node]
            {
                // The victim's writes made without its peer are thrown away, as asked.
                if self.diverged[node] {
                    let writes = &self.writes;
                    for list in &mut self.acked {
                        list.retain(|a| writes.get(a).is_none_or(|w| w.node != node));
                    }
                }
                self.diverged[node] = false;
            }
        }
        Ok(())
    }

    /// The pair is healthy: Connected, UpToDate/UpToDate, bitmaps empty, nothing in
    /// flight. The replicas must be identical and, after at most one failure, hold every
    /// acknowledged write; the failure count restarts and what the replicas hold is
    /// owed from now on.
    pub fn healthy(&mut self, nodes: &[View<'_>; 2], step: u64) -> Result<(), Violation> {
        for b in 0..self.acked.len() {
            let (a, c) = (nodes[0].versions[b], nodes[1].versions[b]);
            if a != c {
                return Err(Violation {
                    rule: Rule::ReplicasDiffer,
                    step,
                    detail: format!("block {b}: node0 holds version {a}, node1 holds {c}"),
                });
            }
        }
        if self.failures <= 1 {
            // After a single failure every acknowledged write is still owed; past that,
            // DRBD without fencing may lose some (a failover to a peer that missed them).
            let saved = self.failures;
            self.failures = 0;
            let r = self.check_up_to_date(nodes, step);
            self.failures = saved;
            r?;
        }
        // The new baseline: what both replicas hold (after one failure at most this is
        // at least every acknowledged write; past that, what survived).
        for (b, list) in self.acked.iter_mut().enumerate() {
            list.clear();
            if nodes[0].versions[b] != INITIAL {
                list.push(nodes[0].versions[b]);
            }
        }
        self.failures = 0;
        self.diverged = [false; 2];
        self.alone = [false; 2];
        self.discard = [false; 2];
        self.heals += 1;
        Ok(())
    }
}
