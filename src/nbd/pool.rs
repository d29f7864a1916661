//! Recycled aligned buffers for request payloads.
//!
//! Large allocations go to mmap and come back zero-filled page by page, which costs more
//! than the copy they hold: a 1 MiB write would page-fault 256 times. Buffers are kept per
//! power-of-two size class and reused; a reused buffer is always completely overwritten
//! (by the received payload or by the read) before anyone looks at it.

use crate::io::{AlignedBuf, BUF_ALIGN};

/// Buffers kept per size class.
const PER_CLASS: usize = 64;
/// Bytes kept in all classes together.
const MAX_POOLED_BYTES: usize = 128 << 20;

#[derive(Default)]
pub(crate) struct BufPool {
    classes: Vec<Vec<AlignedBuf>>,
    bytes: usize,
}

fn class_of(cap: usize) -> (usize, usize) {
    let size = cap.max(BUF_ALIGN).next_power_of_two();
    (size.trailing_zeros() as usize, size)
}

impl BufPool {
    /// A buffer of exactly `len` bytes; its contents are unspecified.
    pub(crate) fn get(&mut self, len: usize) -> AlignedBuf {
        let (class, size) = class_of(len);
        let mut b = match self.classes.get_mut(class).and_then(Vec::pop) {
            Some(b) => {
                self.bytes -= b.capacity();
                b
            }
            None => AlignedBuf::zeroed(size),
        };
        b.set_len(len);
        b
    }

    /// Takes a buffer back (dropped if the pool is full or the size is odd).
    pub(crate) fn put(&mut self, b: AlignedBuf) {
        let (class, size) = class_of(b.capacity());
        if size != b.capacity() || self.bytes + size > MAX_POOLED_BYTES {
            return;
        }
        if self.classes.len() <= class {
            self.classes.resize_with(class + 1, Vec::new);
        }
        if self.classes[class].len() < PER_CLASS {
            self.bytes += size;
            self.classes[class].push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_by_class() {
        let mut p = BufPool::default();
        let b = p.get(5000);
        assert_eq!(b.len(), 5000);
        assert_eq!(b.capacity(), 8192);
        let ptr = b.as_ptr();
        p.put(b);
        let c = p.get(8000);
        assert_eq!(c.as_ptr(), ptr);
        assert_eq!(c.len(), 8000);
        let d = p.get(100);
        assert_ne!(d.as_ptr(), ptr);
    }
}
