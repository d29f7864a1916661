//! The bitmap exchange's run-length form (DRBD's P_COMPRESSED_BITMAP): a bitmap becomes
//! chunks of alternating clear/set runs, each chunk at most a packet's worth of VLI code
//! and naming the bit it starts at; the receiver ORs the set runs into its own bitmap. A
//! mostly clean or mostly dirty bitmap of 1 GiB (262,144 bits) travels in a few bytes
//! instead of 32 KiB.

use crate::meta::Bitmap;
use crate::wire::{Run, put_run};

/// One chunk to send: [`crate::wire::CompressedBitmap`]'s fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunChunk {
    /// The first bit it describes.
    pub start_bit: u64,
    /// Whether its first run is of set bits.
    pub first_set: bool,
    /// The VLI-coded runs.
    pub code: Vec<u8>,
}

/// Runs of `bm` over its `bits()`: (set, length), alternating, none empty.
fn runs(bm: &Bitmap) -> impl Iterator<Item = (bool, u64)> + '_ {
    let bits = bm.bits();
    let mut at = 0u64;
    std::iter::from_fn(move || {
        if at >= bits {
            return None;
        }
        let set = bm.is_set(at);
        let start = at;
        while at < bits {
            // Whole words of the same value at once.
            if at % 64 == 0 && at + 64 <= bits {
                let w = bm.words()[(at / 64) as usize];
                if (set && w == u64::MAX) || (!set && w == 0) {
                    at += 64;
                    continue;
                }
            }
            if bm.is_set(at) != set {
                break;
            }
            at += 1;
        }
        Some((set, at - start))
    })
}

/// The chunks for `bm`, each with at most `max_code` bytes of code (at least
/// [`crate::wire::MAX_VLI_BYTES`]).
pub fn encode_runs(bm: &Bitmap, max_code: usize) -> Vec<RunChunk> {
    let max_code = max_code.max(crate::wire::MAX_VLI_BYTES);
    let mut chunks = Vec::new();
    let mut cur: Option<RunChunk> = None;
    let mut at = 0u64;
    let mut vli = Vec::with_capacity(crate::wire::MAX_VLI_BYTES);
    for (set, len) in runs(bm) {
        vli.clear();
        put_run(&mut vli, len);
        if cur
            .as_ref()
            .is_some_and(|c| c.code.len() + vli.len() > max_code)
            && let Some(c) = cur.take()
        {
            chunks.push(c);
        }
        let c = cur.get_or_insert_with(|| RunChunk {
            start_bit: at,
            first_set: set,
            code: Vec::new(),
        });
        c.code.extend_from_slice(&vli);
        at += len;
    }
    chunks.extend(cur);
    chunks
}

/// ORs a received chunk's set runs into `bm`; returns the bits it covered, or `None` if a
/// run is malformed or reaches past the bitmap (a peer error: nothing beyond the last good
/// run was applied).
pub fn apply_runs(
    bm: &mut Bitmap,
    start_bit: u64,
    runs: impl Iterator<Item = Option<Run>>,
) -> Option<u64> {
    let bits = bm.bits();
    let mut at = start_bit;
    for run in runs {
        let run = run?;
        let end = at.checked_add(run.len)?;
        if end > bits {
            return None;
        }
        if run.set {
            bm.set_range(at, run.len).ok()?;
        }
        at = end;
    }
    Some(at - start_bit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CompressedBitmap;

    fn roundtrip(bm: &Bitmap, max_code: usize) -> (Bitmap, usize) {
        let chunks = encode_runs(bm, max_code);
        let mut out = Bitmap::new(bm.bits() * 8);
        let mut covered = 0;
        for c in &chunks {
            assert!(c.code.len() <= max_code.max(crate::wire::MAX_VLI_BYTES));
            assert_eq!(c.start_bit, covered, "chunks are contiguous");
            let cb = CompressedBitmap {
                start_bit: c.start_bit,
                first_set: c.first_set,
                code: &c.code,
            };
            covered +=
                apply_runs(&mut out, c.start_bit, cb.runs().map(|r| r.ok())).expect("valid runs");
        }
        assert_eq!(covered, bm.bits());
        (out, chunks.iter().map(|c| c.code.len()).sum())
    }

    #[test]
    fn round_trips_and_compresses() {
        // 1 GiB: 262,144 bits.
        let mut bm = Bitmap::new(2 << 20);
        let (out, bytes) = roundtrip(&bm, 4000);
        assert_eq!(out.words(), bm.words());
        assert!(bytes <= 3, "an empty bitmap is one run ({bytes} bytes)");
        bm.set_range(0, bm.bits()).expect("set");
        let (out, bytes) = roundtrip(&bm, 4000);
        assert_eq!(out.words(), bm.words());
        assert!(bytes <= 3, "a full bitmap is one run ({bytes} bytes)");
        // 1% dirty in 64 runs.
        let mut bm = Bitmap::new(2 << 20);
        for i in 0..64u64 {
            bm.set_range(i * 4000 + 7, 41).expect("set");
        }
        let (out, bytes) = roundtrip(&bm, 4000);
        assert_eq!(out.words(), bm.words());
        assert!(bytes < 300, "{bytes} bytes for 129 runs");
    }

    #[test]
    fn random_bitmaps_round_trip_in_small_chunks() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for round in 0..50 {
            let bits_sect = ((round * 7919) % 5000 + 1) * 8;
            let mut bm = Bitmap::new(bits_sect);
            for _ in 0..(round % 20) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let first = x % bm.bits();
                let len = (x >> 32) % 200 + 1;
                let len = len.min(bm.bits() - first);
                bm.set_range(first, len).expect("set");
            }
            let (out, _) = roundtrip(&bm, 12);
            assert_eq!(out.words(), bm.words(), "round {round}");
        }
    }

    #[test]
    fn a_run_past_the_end_is_refused() {
        let mut bm = Bitmap::new(8 * 100);
        let mut code = Vec::new();
        put_run(&mut code, 150);
        let cb = CompressedBitmap {
            start_bit: 0,
            first_set: true,
            code: &code,
        };
        assert_eq!(apply_runs(&mut bm, 0, cb.runs().map(|r| r.ok())), None);
        assert_eq!(bm.count(), 0, "nothing applied");
    }
}
