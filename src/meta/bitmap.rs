//! The on-disk bitmap: one bit per 4 KiB block of the replicated device, set = out of sync.
//!
//! On disk the bitmap is an array of little-endian 64-bit words (bit `n` is bit `n % 64` of
//! word `n / 64`), rounded up to whole 4 KiB blocks. [`Bitmap`] holds the words covering the
//! last agreed size, padding words included, exactly as drbdmeta's dump-md shows them.

use std::fmt;

use serde::Serialize;

use super::layout::{MAX_BITMAP_BYTES, bm_bits, bm_bytes};

/// Bitmap bytes covering one 4 MiB activity-log extent (1024 bits).
pub const BM_BYTES_PER_AL_EXTENT: u64 = 128;
/// Bits per 4 KiB bitmap block.
pub const BITS_PER_BLOCK: u64 = 4096 * 8;

/// A bit range outside the bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// First bit asked for.
    pub first: u64,
    /// Number of bits asked for.
    pub count: u64,
    /// Bits the bitmap has room for (including the padding up to the 4 KiB block).
    pub capacity: u64,
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bits {}..{} are outside a bitmap of {} bits",
            self.first,
            self.first.saturating_add(self.count),
            self.capacity
        )
    }
}

impl std::error::Error for OutOfRange {}

/// The bitmap of one device, in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bitmap {
    /// Bits that correspond to storage (`ceil(la_size_sect / 8)`).
    bits: u64,
    /// Words as on disk, including padding up to a whole 4 KiB block.
    words: Vec<u64>,
    /// Set bits in `words`, kept by every change (the resync asks for it on every event;
    /// counting a large bitmap each time is what DRBD's `bm_set` avoids too).
    #[serde(skip)]
    set: u64,
}

impl Bitmap {
    /// An all-clear bitmap for a device of `la_size_sect` sectors.
    ///
    /// # Panics
    /// If the bitmap would exceed [`MAX_BITMAP_BYTES`] (1 PiB of storage); callers size it
    /// from a validated geometry.
    pub fn new(la_size_sect: u64) -> Self {
        let bytes = bm_bytes(la_size_sect);
        assert!(bytes <= MAX_BITMAP_BYTES, "bitmap of {bytes} bytes");
        Self {
            bits: bm_bits(la_size_sect),
            words: vec![0; (bytes / 8) as usize],
            set: 0,
        }
    }

    /// Decodes the on-disk bytes of a bitmap for `la_size_sect` sectors. `bytes` must be
    /// exactly [`bm_bytes`]`(la_size_sect)` long; returns `None` otherwise.
    pub fn from_le_bytes(la_size_sect: u64, bytes: &[u8]) -> Option<Self> {
        if bytes.len() as u64 != bm_bytes(la_size_sect) {
            return None;
        }
        let words = bytes
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect::<Vec<u64>>();
        let set = words.iter().map(|w| u64::from(w.count_ones())).sum();
        Some(Self {
            bits: bm_bits(la_size_sect),
            words,
            set,
        })
    }

    /// The on-disk bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// The on-disk bytes of 4 KiB block `block` (zero-filled past the end).
    pub fn block_bytes(&self, block: u64) -> [u8; 4096] {
        let mut out = [0u8; 4096];
        let first = (block * 512) as usize;
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            if let Some(w) = self.words.get(first + i) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Bits that correspond to storage.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Bits including the padding up to the 4 KiB block (drbdmeta counts and prints those).
    pub fn capacity(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    /// Size on disk.
    pub fn byte_len(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    /// The words as on disk (little-endian values already converted).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    fn check(&self, first: u64, count: u64) -> Result<(), OutOfRange> {
        match first.checked_add(count) {
            Some(end) if end <= self.capacity() => Ok(()),
            _ => Err(OutOfRange {
                first,
                count,
                capacity: self.capacity(),
            }),
        }
    }

    /// ORs `words` in, from word `start_word`: the bits they set that cover storage are set
    /// (bits past [`Bitmap::bits`] and words past the end are ignored). Returns how many were
    /// clear before.
    pub fn or_words(&mut self, start_word: u64, words: &[u64]) -> u64 {
        let mut changed = 0;
        for (i, &w) in words.iter().enumerate() {
            let index = start_word.saturating_add(i as u64);
            let base = index.saturating_mul(64);
            if w == 0 || base >= self.bits {
                continue;
            }
            let valid = self.bits - base;
            let mask = if valid >= 64 {
                u64::MAX
            } else {
                (1u64 << valid) - 1
            };
            let Some(slot) = self.words.get_mut(index as usize) else {
                continue;
            };
            let add = w & mask & !*slot;
            changed += u64::from(add.count_ones());
            *slot |= add;
        }
        self.set += changed;
        changed
    }

    /// Is bit `bit` set? Bits past the end read as clear.
    pub fn is_set(&self, bit: u64) -> bool {
        self.words
            .get((bit / 64) as usize)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }

    /// Applies `f(word, mask)` to every word touched by `first..first+count`.
    fn for_range(&mut self, first: u64, count: u64, mut f: impl FnMut(&mut u64, u64)) {
        let end = first + count;
        let mut bit = first;
        while bit < end {
            let word = (bit / 64) as usize;
            let lo = bit % 64;
            let hi = (end - (bit - lo)).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            f(&mut self.words[word], mask);
            bit = bit - lo + 64;
        }
    }

    /// Sets `count` bits from `first`; returns how many were clear before.
    pub fn set_range(&mut self, first: u64, count: u64) -> Result<u64, OutOfRange> {
        self.check(first, count)?;
        let mut changed = 0;
        self.for_range(first, count, |w, m| {
            changed += u64::from((!*w & m).count_ones());
            *w |= m;
        });
        self.set += changed;
        Ok(changed)
    }

    /// Clears `count` bits from `first`; returns how many were set before.
    pub fn clear_range(&mut self, first: u64, count: u64) -> Result<u64, OutOfRange> {
        self.check(first, count)?;
        let mut changed = 0;
        self.for_range(first, count, |w, m| {
            changed += u64::from((*w & m).count_ones());
            *w &= !m;
        });
        self.set -= changed;
        Ok(changed)
    }

    /// Number of set bits in `count` bits from `first`.
    pub fn count_range(&self, first: u64, count: u64) -> Result<u64, OutOfRange> {
        self.check(first, count)?;
        let mut n = 0;
        // for_range needs &mut; count on a scratch copy of the touched words instead.
        let end = first + count;
        let mut bit = first;
        while bit < end {
            let lo = bit % 64;
            let hi = (end - (bit - lo)).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            n += u64::from((self.words[(bit / 64) as usize] & mask).count_ones());
            bit = bit - lo + 64;
        }
        Ok(n)
    }

    /// Number of set bits, padding included (drbdmeta's `# bits-set`).
    pub fn count(&self) -> u64 {
        self.set
    }

    /// The bits `(first, count)` of 4 MiB activity-log extent `extent` that this bitmap
    /// holds (clamped to its capacity); `None` when the extent lies past it. These are the
    /// bits whose blocks are written back before the extent leaves the activity log.
    pub fn al_extent_bits(&self, extent: u32) -> Option<(u64, u64)> {
        let per = BM_BYTES_PER_AL_EXTENT * 8;
        let first = u64::from(extent) * per;
        let capacity = self.capacity();
        (first < capacity).then(|| (first, per.min(capacity - first)))
    }

    /// Marks activity-log extent `extent` (4 MiB, 1024 bits) out of sync the way
    /// drbdmeta's `apply-al` does: the extent's 128 bitmap bytes, clipped to the bitmap's
    /// 4 KiB-rounded end. Returns the number of newly set bits; an extent past the end is
    /// skipped (drbdmeta warns and skips it too).
    pub fn set_al_extent(&mut self, extent: u32) -> u64 {
        let first = u64::from(extent) * BM_BYTES_PER_AL_EXTENT * 8;
        if first >= self.capacity() {
            return 0;
        }
        let count = (BM_BYTES_PER_AL_EXTENT * 8).min(self.capacity() - first);
        self.set_range(first, count).unwrap_or(0)
    }

    /// The 4 KiB blocks (relative to the bitmap start) whose bits differ from `other`'s
    /// (every block where the two bitmaps differ in size).
    pub fn changed_blocks(&self, other: &Bitmap) -> Vec<u64> {
        let words_per_block = (BITS_PER_BLOCK / 64) as usize;
        let blocks = self.words.len().div_ceil(words_per_block);
        if self.words.len() != other.words.len() {
            return (0..blocks as u64).collect();
        }
        self.words
            .chunks(words_per_block)
            .zip(other.words.chunks(words_per_block))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u64)
            .collect()
    }

    /// Sets in 4 KiB block `block` the bits `other` has set there (nothing if `other`
    /// lacks it). Returns how many were clear before.
    pub fn or_block_from(&mut self, other: &Bitmap, block: u64) -> u64 {
        let words_per_block = BITS_PER_BLOCK / 64;
        let Ok(from) = usize::try_from(block.saturating_mul(words_per_block)) else {
            return 0;
        };
        let to = from
            .saturating_add(words_per_block as usize)
            .min(other.words.len());
        match other.words.get(from..to) {
            Some(words) => self.or_words(from as u64, words),
            None => 0,
        }
    }

    /// 4 KiB blocks (relative to the bitmap start) touched by `first..first+count`.
    pub fn blocks_of(first: u64, count: u64) -> std::ops::Range<u64> {
        if count == 0 {
            return 0..0;
        }
        first / BITS_PER_BLOCK..(first + count - 1) / BITS_PER_BLOCK + 1
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn changed_blocks_and_or_blocks_make_two_bitmaps_equal() {
        // Three 4 KiB blocks and a bit.
        let sect = (BITS_PER_BLOCK * 3 + 1) * 8;
        let mut disk = super::Bitmap::new(sect);
        let mut mem = super::Bitmap::new(sect);
        assert!(mem.changed_blocks(&disk).is_empty());
        mem.set_range(5, 3).expect("range");
        mem.set_range(BITS_PER_BLOCK * 3, 1).expect("range");
        disk.set_range(7, 1).expect("range");
        let changed = mem.changed_blocks(&disk);
        assert_eq!(changed, vec![0, 3]);
        for b in changed {
            disk.or_block_from(&mem, b);
        }
        assert_eq!(disk, mem);
        assert_eq!(disk.count(), 4);
        // OR-ing a block in keeps the bits set on the other side.
        let mut older = super::Bitmap::new(sect);
        older.set_range(BITS_PER_BLOCK + 9, 1).expect("range");
        assert_eq!(older.or_block_from(&mem, 0), 3);
        assert_eq!(older.or_block_from(&mem, 1), 0);
        assert_eq!(older.count(), 4);
        assert!(older.is_set(BITS_PER_BLOCK + 9) && older.is_set(5));
        assert!(mem.changed_blocks(&disk).is_empty());
        // A bitmap of another size differs everywhere.
        let other = super::Bitmap::new(sect * 2);
        assert_eq!(other.changed_blocks(&mem).len(), 7);
    }

    #[test]
    fn or_words_sets_only_bits_that_cover_storage() {
        // 100 bits of storage (800 sectors).
        let mut b = super::Bitmap::new(800);
        assert_eq!(b.or_words(0, &[0b101, u64::MAX, u64::MAX]), 2 + 36);
        assert!(b.is_set(0) && !b.is_set(1) && b.is_set(2));
        assert!(b.is_set(99) && !b.is_set(100));
        assert_eq!(b.count(), 38);
        assert_eq!(b.or_words(0, &[0b111]), 1, "only the clear one counts");
        assert_eq!(b.or_words(u64::MAX, &[1]), 0, "far past the end");
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        let bm = Bitmap::new(130_000);
        assert_eq!(bm.bits(), 16250);
        assert_eq!(bm.byte_len(), 4096);
        assert_eq!(bm.capacity(), 32768);
        assert_eq!(Bitmap::new(0).byte_len(), 0);
    }

    #[test]
    fn set_clear_count() {
        let mut bm = Bitmap::new(1 << 21); // 1 GiB
        assert_eq!(bm.set_range(60, 10), Ok(10));
        assert_eq!(bm.set_range(65, 10), Ok(5));
        assert_eq!(bm.count(), 15);
        assert_eq!(bm.count_range(0, 64), Ok(4));
        assert_eq!(bm.words()[0], 0xF000_0000_0000_0000);
        assert_eq!(bm.words()[1], 0x7FF);
        assert_eq!(bm.clear_range(62, 4), Ok(4));
        assert!(!bm.is_set(63) && bm.is_set(61) && bm.is_set(66));
        assert_eq!(bm.set_range(0, bm.capacity()), Ok(bm.capacity() - 11));
        assert!(bm.set_range(bm.capacity(), 1).is_err());
        assert!(bm.set_range(u64::MAX, 2).is_err());
    }

    #[test]
    fn on_disk_is_little_endian() {
        let mut bm = Bitmap::new(130_000);
        bm.set_range(0, 1).unwrap();
        bm.set_range(71, 1).unwrap();
        let b = bm.to_le_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(b[8], 0x80);
        assert_eq!(Bitmap::from_le_bytes(130_000, &b), Some(bm.clone()));
        assert_eq!(bm.block_bytes(0).to_vec(), b);
        assert!(Bitmap::from_le_bytes(130_000, &b[..8]).is_none());
    }

    #[test]
    fn al_extent_clips_to_bitmap() {
        let mut bm = Bitmap::new(130_000); // 32768 bits of capacity = 32 extents
        assert_eq!(bm.set_al_extent(1), 1024);
        assert!(bm.is_set(1024) && bm.is_set(2047) && !bm.is_set(2048));
        assert_eq!(bm.set_al_extent(31), 1024);
        assert_eq!(bm.set_al_extent(32), 0);
    }

    #[test]
    fn blocks() {
        assert_eq!(Bitmap::blocks_of(0, 1), 0..1);
        assert_eq!(Bitmap::blocks_of(32767, 2), 0..2);
        assert_eq!(Bitmap::blocks_of(5, 0), 0..0);
    }

    proptest! {
        #[test]
        fn ranges_agree_with_bit_by_bit(first in 0u64..40_000, count in 0u64..40_000, clear in any::<bool>()) {
            let mut bm = Bitmap::new(1 << 19);
            bm.set_range(0, 100).unwrap();
            let cap = bm.capacity();
            let res = if clear { bm.clear_range(first, count) } else { bm.set_range(first, count) };
            if first + count > cap {
                prop_assert!(res.is_err());
            } else {
                for b in [first, first + count / 2, (first + count).saturating_sub(1)] {
                    if count > 0 { prop_assert_eq!(bm.is_set(b), !clear); }
                }
                prop_assert_eq!(bm.count_range(first, count)?, if clear { 0 } else { count });
            }
        }

        #[test]
        fn kept_count_is_the_popcount(ops in proptest::collection::vec((0u8..3, 0u64..9_000, 0u64..3_000), 1..40)) {
            let mut bm = Bitmap::new(60_000);
            for (kind, first, count) in ops {
                match kind {
                    0 => { let _ = bm.set_range(first, count); }
                    1 => { let _ = bm.clear_range(first, count); }
                    _ => { bm.or_words(first / 64, &[first.wrapping_mul(0x9e37_79b9_7f4a_7c15), count]); }
                }
                let popcount: u64 = bm.words().iter().map(|w| u64::from(w.count_ones())).sum();
                prop_assert_eq!(bm.count(), popcount);
            }
            let again = Bitmap::from_le_bytes(60_000, &bm.to_le_bytes()).expect("same size");
            prop_assert_eq!(again.count(), bm.count());
        }

        #[test]
        fn from_bytes_never_panics(la in 0u64..300_000, bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            if let Some(bm) = Bitmap::from_le_bytes(la, &bytes) {
                prop_assert_eq!(bm.to_le_bytes(), bytes);
            }
        }
    }
}
