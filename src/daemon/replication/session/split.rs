//! Application writes larger than one DATA packet ([`MAX_DATA`], 1 MiB: DRBD's
//! `DRBD_MAX_BIO_SIZE`) are split into parts that replicate as separate writes (NBD allows
//! 32 MiB, and the kernel's client sends what its queue limits allow). The request completes
//! when every part has, with the first error.

use std::collections::HashMap;

use crate::io::{AlignedBuf, Done, Errno, Op};
use crate::wire::MAX_DATA;

/// Part tags carry this bit (the data path's tags are slot numbers, far below).
const PART_BIT: u64 = 1 << 61;

struct Parent {
    left: usize,
    res: Result<(), Errno>,
    op: Op,
}

/// The split requests in flight.
#[derive(Default)]
pub(super) struct Splits {
    parent_of: HashMap<u64, u64>,
    parents: HashMap<u64, Parent>,
    next: u64,
}

impl Splits {
    /// The parts of `op` if it must be split (a write over [`MAX_DATA`]), else `op` back.
    pub(super) fn split(&mut self, tag: u64, op: Op) -> Result<Vec<(u64, Op)>, Op> {
        let (offset, fua) = match &op {
            Op::Write { offset, buf, fua } if buf.len() > MAX_DATA as usize => (*offset, *fua),
            _ => return Err(op),
        };
        let Op::Write { buf, .. } = &op else {
            return Err(op);
        };
        let mut parts = Vec::new();
        for (k, chunk) in buf.as_slice().chunks(MAX_DATA as usize).enumerate() {
            self.next += 1;
            let sub = PART_BIT | self.next;
            self.parent_of.insert(sub, tag);
            parts.push((
                sub,
                Op::Write {
                    offset: offset + (k as u64) * u64::from(MAX_DATA),
                    buf: AlignedBuf::from_slice(chunk),
                    fua,
                },
            ));
        }
        self.parents.insert(
            tag,
            Parent {
                left: parts.len(),
                res: Ok(()),
                op,
            },
        );
        Ok(parts)
    }

    /// Whether `tag` is a part.
    pub(super) fn is_part(tag: u64) -> bool {
        tag & PART_BIT != 0
    }

    /// Part `sub` finished: `None` if it is not a part; `Some(None)` while others are
    /// pending; `Some(Some(done))` with the whole request's answer once all are in.
    pub(super) fn part_done(&mut self, sub: u64, res: Result<(), Errno>) -> Option<Option<Done>> {
        let tag = self.parent_of.remove(&sub)?;
        let Some(p) = self.parents.get_mut(&tag) else {
            return Some(None);
        };
        if p.res.is_ok() {
            p.res = res;
        }
        p.left = p.left.saturating_sub(1);
        if p.left > 0 {
            return Some(None);
        }
        let p = self.parents.remove(&tag)?;
        Some(Some(Done {
            tag,
            res: p.res,
            buf: p.op.into_buf(),
        }))
    }

    /// Every split request fails (the session stops).
    pub(super) fn fail_all(&mut self) -> Vec<Done> {
        self.parent_of.clear();
        self.parents
            .drain()
            .map(|(tag, p)| Done {
                tag,
                res: Err(Errno::EIO),
                buf: p.op.into_buf(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_write_is_split_and_answered_once() {
        let mut s = Splits::default();
        let data: Vec<u8> = (0..(2 * MAX_DATA as usize + 4096))
            .map(|i| i as u8)
            .collect();
        let op = Op::Write {
            offset: 8192,
            buf: AlignedBuf::from_slice(&data),
            fua: true,
        };
        let parts = s.split(7, op).unwrap_or_else(|_| panic!("split"));
        assert_eq!(parts.len(), 3);
        let mut joined = Vec::new();
        for (i, (sub, op)) in parts.iter().enumerate() {
            assert!(Splits::is_part(*sub));
            let Op::Write { offset, buf, fua } = op else {
                panic!("write")
            };
            assert!(*fua);
            assert_eq!(*offset, 8192 + i as u64 * u64::from(MAX_DATA));
            joined.extend_from_slice(buf.as_slice());
        }
        assert_eq!(joined, data);
        assert!(matches!(s.part_done(parts[0].0, Ok(())), Some(None)));
        assert!(matches!(
            s.part_done(parts[2].0, Err(Errno::EIO)),
            Some(None)
        ));
        let done = s.part_done(parts[1].0, Ok(())).flatten().expect("answer");
        assert_eq!((done.tag, done.res), (7, Err(Errno::EIO)));
        assert_eq!(done.buf.map(|b| b.as_slice().to_vec()), Some(data));
        assert!(s.part_done(99, Ok(())).is_none());
        // A small write is not split.
        let small = Op::Write {
            offset: 0,
            buf: AlignedBuf::from_slice(&[1; 4096]),
            fua: false,
        };
        assert!(s.split(8, small).is_err());
        assert!(s.fail_all().is_empty());
    }
}
