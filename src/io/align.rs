//! Any byte range on a backend that needs aligned ones.
//!
//! An O_DIRECT backend only takes offsets and lengths that are multiples of its logical
//! block size. NBD clients may send anything (we advertise a minimum block size of 1), so
//! [`Aligned`] turns each request into aligned inner ops:
//!
//! - an unaligned read reads the covering aligned span into a bounce buffer and copies out;
//! - an unaligned write reads the partial head and tail blocks, merges the new bytes into an
//!   aligned bounce buffer and writes the whole span (read-modify-write);
//! - an unaligned write-zeroes is an RMW of zeroes for the partial blocks and an aligned
//!   zero for the interior; an unaligned trim (advisory) trims only the whole blocks inside.
//!
//! Two writes whose aligned spans overlap, at least one of them an RMW, never run at the
//! same time: the RMW's read would otherwise see stale data and its write would undo the
//! other write's bytes in a shared block. Such a write waits, in arrival order, until the
//! conflicting one has completed. Aligned writes never wait for each other (NBD does not
//! order overlapping writes in flight, and neither does io_uring).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::{AlignedBuf, Backend, BackendInfo, Done, Errno, IoCtx, Op, check_op};

/// Hashes the wrapper's own ids (sequential u64s, never peer-controlled) with one multiply
/// instead of SipHash: the maps are touched several times per request on the data path.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// What an inner op is part of.
#[derive(Debug)]
enum Child {
    /// The user's op passed through, or a slice of it.
    Pass { pid: u64 },
    /// An aligned read into a bounce buffer; copy `skip..skip+len` to the user buffer.
    ReadBounce { pid: u64, skip: usize },
    /// The head or tail block read of an RMW; copy its uncovered bytes into the bounce.
    RmwRead { rmw: u64, at: usize },
    /// The RMW's write of its whole span.
    RmwWrite { pid: u64 },
}

#[derive(Debug)]
struct Rmw {
    pid: u64,
    a0: u64,
    bounce: AlignedBuf,
    /// Bytes of the bounce that hold new data; the rest comes from the reads.
    covered: (usize, usize),
    reads_left: usize,
    fua: bool,
    err: Option<Errno>,
}

/// An RMW to start: the aligned span, its bounce buffer with the new bytes at `covered`.
#[derive(Debug)]
struct RmwPlan {
    a0: u64,
    a1: u64,
    bounce: AlignedBuf,
    covered: (usize, usize),
    fua: bool,
}

#[derive(Debug)]
struct Parent {
    tag: u64,
    pending: usize,
    err: Option<Errno>,
    buf: Option<AlignedBuf>,
    lock: Option<Lock>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lock {
    a0: u64,
    a1: u64,
    rmw: bool,
}

impl Lock {
    fn conflicts(&self, other: &Lock) -> bool {
        (self.rmw || other.rmw) && self.a0 < other.a1 && other.a0 < self.a1
    }
}

/// A wrapper accepting any byte range; see the module doc.
pub struct Aligned<B> {
    inner: B,
    bs: u64,
    next_id: u64,
    parents: IdMap<Parent>,
    children: IdMap<Child>,
    rmws: IdMap<Rmw>,
    blocked: VecDeque<(u64, Op, Lock)>,
    /// Read-modify-write locks held by parents or waiting in `blocked`: while there are
    /// none, an aligned write cannot conflict with anything and skips the scan.
    rmw_locks: usize,
    inner_done: Vec<Done>,
}

impl<B: Backend> Aligned<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        let bs = u64::from(inner.info().block_size.max(1));
        Self {
            inner,
            bs,
            next_id: 0,
            parents: IdMap::default(),
            children: IdMap::default(),
            rmws: IdMap::default(),
            blocked: VecDeque::new(),
            rmw_locks: 0,
            inner_done: Vec::new(),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn down(&self, x: u64) -> u64 {
        x - x % self.bs
    }

    fn up(&self, x: u64) -> u64 {
        x.div_ceil(self.bs) * self.bs
    }

    fn lock_for(&self, op: &Op) -> Option<Lock> {
        if !op.is_write() {
            return None;
        }
        let (off, len) = op.range()?;
        let (a0, a1) = (self.down(off), self.up(off + len));
        let aligned = off % self.bs == 0 && len % self.bs == 0;
        let rmw = !aligned && !matches!(op, Op::Trim { .. });
        Some(Lock { a0, a1, rmw })
    }

    fn is_blocked(&self, lock: &Lock, upto: usize) -> bool {
        if !lock.rmw && self.rmw_locks == 0 {
            // Only an RMW conflicts with an aligned write, and none exists.
            return false;
        }
        self.parents
            .values()
            .filter_map(|p| p.lock.as_ref())
            .any(|l| l.conflicts(lock))
            || self
                .blocked
                .iter()
                .take(upto)
                .any(|(_, _, l)| l.conflicts(lock))
    }

    fn inner_submit(&mut self, ctx: &mut IoCtx<'_>, child: Child, op: Op) {
        let key = self.id();
        self.children.insert(key, child);
        let mut done = std::mem::take(&mut self.inner_done);
        self.inner.submit(&mut ctx.reborrow(&mut done), key, op);
        self.inner_done = done;
    }

    /// Handles inner completions until none are left (a synchronous inner backend may
    /// complete ops submitted while handling others).
    fn pump(&mut self, ctx: &mut IoCtx<'_>) {
        while let Some(d) = self.inner_done.pop() {
            self.handle_inner(ctx, d);
        }
    }

    fn start(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op, lock: Option<Lock>) {
        let pid = self.id();
        let bs = self.bs;
        let mut parent = Parent {
            tag,
            pending: 0,
            err: None,
            buf: None,
            lock,
        };
        // Build the children first, then register the parent, then submit (a child may
        // complete synchronously and must find its parent).
        let mut plan: Vec<(Child, Op)> = Vec::new();
        let mut rmw_plans: Vec<RmwPlan> = Vec::new();
        match op {
            Op::Flush => plan.push((Child::Pass { pid }, Op::Flush)),
            Op::Read { offset, buf } => {
                if offset % bs == 0 && buf.len() as u64 % bs == 0 {
                    plan.push((Child::Pass { pid }, Op::Read { offset, buf }));
                } else {
                    let (a0, a1) = (self.down(offset), self.up(offset + buf.len() as u64));
                    let skip = (offset - a0) as usize;
                    parent.buf = Some(buf);
                    plan.push((
                        Child::ReadBounce { pid, skip },
                        Op::Read {
                            offset: a0,
                            buf: AlignedBuf::zeroed((a1 - a0) as usize),
                        },
                    ));
                }
            }
            Op::Write { offset, buf, fua } => {
                if offset % bs == 0 && buf.len() as u64 % bs == 0 {
                    plan.push((Child::Pass { pid }, Op::Write { offset, buf, fua }));
                } else {
                    let end = offset + buf.len() as u64;
                    let (a0, a1) = (self.down(offset), self.up(end));
                    let mut bounce = AlignedBuf::zeroed((a1 - a0) as usize);
                    let from = (offset - a0) as usize;
                    bounce.as_mut_slice()[from..from + buf.len()].copy_from_slice(buf.as_slice());
                    parent.buf = Some(buf);
                    rmw_plans.push(RmwPlan {
                        a0,
                        a1,
                        bounce,
                        covered: (from, from + (end - offset) as usize),
                        fua,
                    });
                }
            }
            Op::Trim { offset, len } => {
                let (i0, i1) = (self.up(offset), self.down(offset + len));
                if i1 > i0 {
                    plan.push((
                        Child::Pass { pid },
                        Op::Trim {
                            offset: i0,
                            len: i1 - i0,
                        },
                    ));
                }
            }
            Op::Zero {
                offset,
                len,
                may_trim,
            } => {
                let end = offset + len;
                let (i0, i1) = (self.up(offset), self.down(end));
                if i1 > i0 {
                    plan.push((
                        Child::Pass { pid },
                        Op::Zero {
                            offset: i0,
                            len: i1 - i0,
                            may_trim,
                        },
                    ));
                }
                // Partial blocks at either end (possibly one block holding both ends).
                let mut partial = |s: u64, e: u64| {
                    if e > s {
                        let (a0, a1) = (s - s % bs, e.div_ceil(bs) * bs);
                        let from = (s - a0) as usize;
                        let to = (e - a0) as usize;
                        rmw_plans.push(RmwPlan {
                            a0,
                            a1,
                            bounce: AlignedBuf::zeroed((a1 - a0) as usize),
                            covered: (from, to),
                            fua: false,
                        });
                    }
                };
                if i1 <= i0 {
                    partial(offset, end);
                } else {
                    partial(offset, i0);
                    partial(i1, end);
                }
            }
        }
        parent.pending = plan.len() + rmw_plans.len();
        if parent.pending == 0 {
            let rmw = parent.lock.is_some_and(|l| l.rmw);
            self.finish_parent(ctx, parent);
            if rmw {
                self.rmw_locks -= 1;
            }
            return;
        }
        self.parents.insert(pid, parent);
        for (child, op) in plan {
            self.inner_submit(ctx, child, op);
        }
        for rp in rmw_plans {
            self.start_rmw(ctx, pid, rp);
        }
    }

    fn start_rmw(&mut self, ctx: &mut IoCtx<'_>, pid: u64, plan: RmwPlan) {
        let RmwPlan {
            a0,
            a1,
            bounce,
            covered,
            fua,
        } = plan;
        let bs = self.bs as usize;
        let span = (a1 - a0) as usize;
        let mut reads = Vec::new();
        if covered.0 % bs != 0 {
            reads.push(covered.0 - covered.0 % bs);
        }
        if covered.1 % bs != 0 {
            let tail = covered.1 - covered.1 % bs;
            if reads.last() != Some(&tail) {
                reads.push(tail);
            }
        }
        debug_assert!(reads.iter().all(|&at| at + bs <= span));
        let rid = self.id();
        self.rmws.insert(
            rid,
            Rmw {
                pid,
                a0,
                bounce,
                covered,
                reads_left: reads.len(),
                fua,
                err: None,
            },
        );
        if reads.is_empty() {
            self.rmw_write(ctx, rid);
            return;
        }
        for at in reads {
            self.inner_submit(
                ctx,
                Child::RmwRead { rmw: rid, at },
                Op::Read {
                    offset: a0 + at as u64,
                    buf: AlignedBuf::zeroed(bs),
                },
            );
        }
    }

    fn rmw_write(&mut self, ctx: &mut IoCtx<'_>, rid: u64) {
        let Some(rmw) = self.rmws.remove(&rid) else {
            return;
        };
        if let Some(e) = rmw.err {
            self.child_done(ctx, rmw.pid, Err(e), None);
            return;
        }
        self.inner_submit(
            ctx,
            Child::RmwWrite { pid: rmw.pid },
            Op::Write {
                offset: rmw.a0,
                buf: rmw.bounce,
                fua: rmw.fua,
            },
        );
    }

    fn handle_inner(&mut self, ctx: &mut IoCtx<'_>, d: Done) {
        let Some(child) = self.children.remove(&d.tag) else {
            tracing::warn!(tag = d.tag, "completion for an unknown inner op");
            return;
        };
        match child {
            Child::Pass { pid } => self.child_done(ctx, pid, d.res, d.buf),
            Child::ReadBounce { pid, skip } => {
                if let (Ok(()), Some(bounce), Some(p)) = (d.res, &d.buf, self.parents.get_mut(&pid))
                    && let Some(user) = p.buf.as_mut()
                {
                    let n = user.len();
                    user.as_mut_slice()
                        .copy_from_slice(&bounce.as_slice()[skip..skip + n]);
                }
                self.child_done(ctx, pid, d.res, None);
            }
            Child::RmwRead { rmw: rid, at } => {
                let Some(rmw) = self.rmws.get_mut(&rid) else {
                    return;
                };
                match (d.res, d.buf) {
                    (Ok(()), Some(block)) => {
                        let (c0, c1) = rmw.covered;
                        let dst = rmw.bounce.as_mut_slice();
                        for (i, &b) in block.as_slice().iter().enumerate() {
                            let pos = at + i;
                            if pos < c0 || pos >= c1 {
                                dst[pos] = b;
                            }
                        }
                    }
                    (Err(e), _) => rmw.err = rmw.err.or(Some(e)),
                    (Ok(()), None) => rmw.err = rmw.err.or(Some(Errno::EIO)),
                }
                rmw.reads_left -= 1;
                if rmw.reads_left == 0 {
                    self.rmw_write(ctx, rid);
                }
            }
            Child::RmwWrite { pid } => self.child_done(ctx, pid, d.res, None),
        }
    }

    fn child_done(
        &mut self,
        ctx: &mut IoCtx<'_>,
        pid: u64,
        res: Result<(), Errno>,
        buf: Option<AlignedBuf>,
    ) {
        let Some(p) = self.parents.get_mut(&pid) else {
            return;
        };
        if let Err(e) = res {
            p.err = p.err.or(Some(e));
        }
        if buf.is_some() {
            p.buf = buf;
        }
        p.pending -= 1;
        if p.pending == 0
            && let Some(p) = self.parents.remove(&pid)
        {
            let had_lock = p.lock.is_some();
            if p.lock.is_some_and(|l| l.rmw) {
                self.rmw_locks -= 1;
            }
            self.finish_parent(ctx, p);
            if had_lock {
                self.unblock(ctx);
            }
        }
    }

    fn finish_parent(&mut self, ctx: &mut IoCtx<'_>, p: Parent) {
        ctx.complete(Done {
            tag: p.tag,
            res: p.err.map_or(Ok(()), Err),
            buf: p.buf,
        });
    }

    /// Starts every blocked op that no longer conflicts, in arrival order.
    fn unblock(&mut self, ctx: &mut IoCtx<'_>) {
        let mut i = 0;
        while i < self.blocked.len() {
            let lock = self.blocked[i].2;
            if self.is_blocked(&lock, i) {
                i += 1;
                continue;
            }
            if let Some((tag, op, lock)) = self.blocked.remove(i) {
                self.start(ctx, tag, op, Some(lock));
            }
        }
    }
}

impl<B: Backend> Backend for Aligned<B> {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            block_size: 1,
            ..self.inner.info()
        }
    }

    fn submit(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op) {
        if let Err(e) = check_op(&self.info(), &op) {
            ctx.complete(Done {
                tag,
                res: Err(e),
                buf: op.into_buf(),
            });
            return;
        }
        let lock = self.lock_for(&op);
        if lock.is_some_and(|l| l.rmw) {
            self.rmw_locks += 1;
        }
        if let Some(l) = lock
            && self.is_blocked(&l, self.blocked.len())
        {
            self.blocked.push_back((tag, op, l));
            return;
        }
        self.start(ctx, tag, op, lock);
        self.pump(ctx);
    }

    fn complete(&mut self, ctx: &mut IoCtx<'_>, key: u64, res: i32) {
        let mut done = std::mem::take(&mut self.inner_done);
        self.inner.complete(&mut ctx.reborrow(&mut done), key, res);
        self.inner_done = done;
        self.pump(ctx);
    }

    fn in_flight(&self) -> usize {
        self.parents.len() + self.blocked.len()
    }

    fn has_room(&self) -> bool {
        self.inner.has_room()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{BackendSpec, MemDisk, SyncDriver, UringBackend};
    use proptest::prelude::*;

    /// A memory backend that insists on 512-byte alignment, to exercise the wrapper
    /// deterministically.
    struct Strict(crate::io::MemBackend);

    impl Backend for Strict {
        fn info(&self) -> BackendInfo {
            BackendInfo {
                block_size: 512,
                ..self.0.info()
            }
        }
        fn submit(&mut self, ctx: &mut IoCtx<'_>, tag: u64, op: Op) {
            if let Err(e) = check_op(&self.info(), &op) {
                panic!("misaligned op reached the strict backend: {op:?} {e}");
            }
            self.0.submit(ctx, tag, op)
        }
        fn complete(&mut self, ctx: &mut IoCtx<'_>, key: u64, res: i32) {
            self.0.complete(ctx, key, res)
        }
        fn in_flight(&self) -> usize {
            0
        }
    }

    proptest! {
        #[test]
        fn unaligned_ops_match_a_byte_model(
            ops in proptest::collection::vec((0u8..4, 0u64..8000, 1u64..3000, any::<u8>()), 1..40)
        ) {
            let size = 8192u64;
            let disk = MemDisk::new(size);
            let mut be = Aligned::new(Strict(disk.backend()));
            let mut d = SyncDriver::new().unwrap();
            let mut model = vec![0u8; size as usize];
            for (kind, off, len, fill) in ops {
                let len = len.min(size - off).max(1);
                if off + len > size { continue; }
                let (o, l) = (off as usize, len as usize);
                match kind {
                    0 => {
                        let data = vec![fill; l];
                        d.write(&mut be, off, &data, fill % 2 == 0).unwrap().unwrap();
                        model[o..o + l].copy_from_slice(&data);
                    }
                    1 => {
                        let r = d.run(&mut be, Op::Zero { offset: off, len, may_trim: fill % 2 == 0 }).unwrap();
                        r.res.unwrap();
                        model[o..o + l].fill(0);
                    }
                    2 => {
                        // Trim: content unspecified afterwards; the memory disk zeroes the
                        // whole blocks inside the range.
                        let r = d.run(&mut be, Op::Trim { offset: off, len }).unwrap();
                        r.res.unwrap();
                        let (i0, i1) = (off.div_ceil(512) * 512, (off + len) / 512 * 512);
                        if i1 > i0 { model[i0 as usize..i1 as usize].fill(0); }
                    }
                    _ => {
                        let got = d.read(&mut be, off, l).unwrap().unwrap();
                        prop_assert_eq!(&got[..], &model[o..o + l]);
                    }
                }
            }
            prop_assert_eq!(disk.read(0, size as usize), model);
        }
    }

    #[test]
    fn overlapping_rmw_writes_both_survive_on_a_real_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        let mut be = Aligned::new(UringBackend::open(&BackendSpec::new(f.path())).unwrap());
        let mut d = SyncDriver::new().unwrap();
        // Many unaligned writes into the same blocks, in flight at once: disjoint bytes of
        // shared blocks must all survive.
        let mut expect = vec![0u8; 3 * 4096];
        for i in 0..90u64 {
            let off = 100 + i * 127;
            let data = vec![(i as u8) | 1; 127];
            expect[off as usize..off as usize + 127].copy_from_slice(&data);
            d.submit(
                &mut be,
                i,
                Op::Write {
                    offset: off,
                    buf: AlignedBuf::from_slice(&data),
                    fua: false,
                },
            );
        }
        while let Some(done) = d.next(&mut be).unwrap() {
            done.res.unwrap();
        }
        assert_eq!(d.read(&mut be, 0, 3 * 4096).unwrap().unwrap(), expect);
        // Unaligned zero spanning blocks.
        d.run(
            &mut be,
            Op::Zero {
                offset: 50,
                len: 9000,
                may_trim: true,
            },
        )
        .unwrap()
        .res
        .unwrap();
        expect[50..9050].fill(0);
        assert_eq!(d.read(&mut be, 0, 3 * 4096).unwrap().unwrap(), expect);
    }
}
