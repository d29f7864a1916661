//! A heap buffer aligned for O_DIRECT.
//!
//! O_DIRECT needs the buffer address, the file offset and the length to be multiples of the
//! device's logical block size. [`AlignedBuf`] always starts on a 4 KiB boundary (enough for
//! every logical block size Linux supports) and owns its memory, so it can be handed to the
//! kernel through io_uring and come back in a completion without borrowing anything.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fmt;
use std::ptr::NonNull;

/// Alignment of every [`AlignedBuf`]: 4 KiB.
pub const BUF_ALIGN: usize = 4096;

/// An owned, zero-initialised, 4 KiB-aligned byte buffer of a fixed length.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: the buffer is uniquely owned heap memory, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes; its capacity is `len` rounded up to 4 KiB (at least
    /// 4 KiB, so the pointer is never dangling).
    ///
    /// # Panics
    /// When the allocation fails or `len` is absurd (above `isize::MAX`); callers cap peer
    /// lengths long before this.
    pub fn zeroed(len: usize) -> Self {
        let cap = len.max(1).div_ceil(BUF_ALIGN) * BUF_ALIGN;
        let layout = Layout::from_size_align(cap, BUF_ALIGN).expect("buffer length overflows");
        // SAFETY: layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self { ptr, len, cap }
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::zeroed(data.len());
        b.as_mut_slice().copy_from_slice(data);
        b
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that can be used without reallocating (a multiple of 4 KiB).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Changes the length within the capacity; new bytes keep whatever was there before.
    ///
    /// # Panics
    /// If `len` exceeds the capacity (a caller bug).
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.cap,
            "set_len {len} beyond capacity {}",
            self.cap
        );
        self.len = len;
    }

    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap >= len initialised bytes (allocated zeroed).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The contents, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer for the kernel. Stays valid while `self` is alive and not moved out of
    /// its heap allocation (moving the `AlignedBuf` value itself does not move the bytes).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Raw const pointer for the kernel.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, BUF_ALIGN),
            )
        }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf(len={})", self.len)
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        Self::from_slice(self.as_slice())
    }
}

/// Buffers smaller than this are not kept by a [`BufPool`] (the allocator reuses small
/// blocks well by itself).
pub const POOL_MIN_BUF: usize = 64 << 10;

/// Large buffers kept for reuse by one thread, up to a byte budget.
///
/// A large aligned allocation is a fresh `mmap` (or a trimmed heap) for the allocator:
/// every new one costs page faults and zeroed pages on first touch, and every free an
/// unmap. Under a stream of same-sized I/O (a resync's 512 KiB blocks) that was a quarter
/// of the session thread's time; a buffer given back here is handed out again as is.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Vec<AlignedBuf>,
    bytes: usize,
    max_bytes: usize,
}

impl BufPool {
    /// A pool that keeps at most `max_bytes` of free buffers.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            free: Vec::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// A buffer of `len` bytes whose contents are unspecified (a reused buffer keeps its
    /// old bytes): for reads that fill it and for copies that overwrite it.
    pub fn take(&mut self, len: usize) -> AlignedBuf {
        let cap = len.max(1).div_ceil(BUF_ALIGN) * BUF_ALIGN;
        if let Some(i) = self.free.iter().rposition(|b| b.cap == cap) {
            let mut b = self.free.swap_remove(i);
            self.bytes -= b.cap;
            b.set_len(len);
            return b;
        }
        AlignedBuf::zeroed(len)
    }

    /// A buffer holding a copy of `data`.
    pub fn copy_of(&mut self, data: &[u8]) -> AlignedBuf {
        let mut b = self.take(data.len());
        b.as_mut_slice().copy_from_slice(data);
        b
    }

    /// Gives a buffer back; kept if it is large and the budget allows, else freed.
    pub fn give(&mut self, buf: AlignedBuf) {
        if buf.cap >= POOL_MIN_BUF && self.bytes + buf.cap <= self.max_bytes {
            self.bytes += buf.cap;
            self.free.push(buf);
        }
    }

    /// Frees every kept buffer.
    pub fn clear(&mut self) {
        self.free.clear();
        self.bytes = 0;
    }

    /// Bytes kept.
    pub fn kept_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_large_buffers_within_its_budget() {
        let mut pool = BufPool::new(1 << 20);
        let a = pool.take(512 << 10);
        let a_ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.kept_bytes(), 512 << 10);
        let b = pool.copy_of(&[7u8; 300 << 10]);
        assert_ne!(b.as_ptr(), a_ptr, "a different capacity is not reused");
        let c = pool.take((512 << 10) - 100);
        assert_eq!(c.as_ptr(), a_ptr, "the same capacity is");
        assert_eq!(c.len(), (512 << 10) - 100);
        assert_eq!(pool.kept_bytes(), 0);
        pool.give(b);
        pool.give(c);
        pool.give(AlignedBuf::zeroed(512 << 10));
        assert_eq!(
            pool.kept_bytes(),
            (300 << 10) + (512 << 10),
            "over budget: freed"
        );
        pool.give(AlignedBuf::zeroed(4096));
        assert_eq!(pool.kept_bytes(), (300 << 10) + (512 << 10), "small: freed");
        let d = pool.copy_of(&[9u8; 300 << 10]);
        assert!(d.as_slice().iter().all(|&x| x == 9));
        pool.clear();
        assert_eq!(pool.kept_bytes(), 0);
    }

    #[test]
    fn aligned_and_zeroed() {
        for len in [0, 1, 511, 4096, 4097, 1 << 20] {
            let b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_ptr() as usize % BUF_ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.capacity() >= len && b.capacity() % BUF_ALIGN == 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn copy_and_resize() {
        let mut b = AlignedBuf::from_slice(b"hello");
        assert_eq!(b.as_slice(), b"hello");
        b.set_len(4096);
        assert_eq!(&b.as_slice()[..5], b"hello");
        let c = b.clone();
        assert_eq!(c.as_slice(), b.as_slice());
    }
}
