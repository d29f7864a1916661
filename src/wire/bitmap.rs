//! Bitmap exchange before a resync: plain chunks of bitmap words ([`Bitmap`]) or
//! run-length encoded chunks ([`CompressedBitmap`]). Each chunk names where it starts, so a
//! receiver can check that chunks arrive in order and cover the bitmap exactly.

use super::codec::{Codec, Reader, WireError, put_u64};
use super::frame::MAX_CONTROL_PAYLOAD;

/// Largest run of bitmap words in one [`Bitmap`] chunk, bytes (511 words: the chunk and its
/// 8-byte offset fill the control cap).
pub const MAX_BITMAP_WORDS_BYTES: u32 = MAX_CONTROL_PAYLOAD - 8;
/// Largest run-length code in one [`CompressedBitmap`] chunk, bytes.
pub const MAX_BITMAP_CODE: u32 = MAX_CONTROL_PAYLOAD - 9;
/// Longest VLI: a `u64` in 7-bit groups.
pub const MAX_VLI_BYTES: usize = 10;

/// A chunk of the bitmap as 64-bit little-endian words (DRBD's P_BITMAP; the on-disk word
/// format), one bit per 4 KiB block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitmap<'a> {
    /// Index of the first word of the chunk in the whole bitmap.
    pub start_word: u64,
    /// The words, little-endian; a multiple of 8 bytes, at most
    /// [`MAX_BITMAP_WORDS_BYTES`].
    pub words: &'a [u8],
}

impl Bitmap<'_> {
    /// The words.
    pub fn words(&self) -> impl Iterator<Item = u64> + '_ {
        self.words
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("chunks of 8")))
    }
}

impl<'a> Codec<'a> for Bitmap<'a> {
    /// # Panics
    /// If `words` is not a multiple of 8 bytes or exceeds the cap (a caller bug).
    fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.words.len() % 8 == 0 && self.words.len() <= MAX_BITMAP_WORDS_BYTES as usize);
        put_u64(out, self.start_word);
        out.extend_from_slice(self.words);
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let start_word = r.u64("bitmap start_word")?;
        let words = r.rest();
        if words.len() > MAX_BITMAP_WORDS_BYTES as usize {
            return Err(WireError::TooLong {
                what: "bitmap words",
                max: MAX_BITMAP_WORDS_BYTES,
            });
        }
        if words.len() % 8 != 0 {
            return Err(WireError::InvalidValue("bitmap words (not whole words)"));
        }
        Ok(Bitmap { start_word, words })
    }
}

/// A chunk of the bitmap as alternating runs of clear and set bits (DRBD's
/// P_COMPRESSED_BITMAP). Each run length is an unsigned LEB128 VLI (7 bits per byte, low
/// group first, high bit = more bytes follow), minimal, never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressedBitmap<'a> {
    /// Index of the first bit the chunk describes.
    pub start_bit: u64,
    /// Whether the first run is of set bits.
    pub first_set: bool,
    /// The VLI-coded runs, 1 to [`MAX_BITMAP_CODE`] bytes.
    pub code: &'a [u8],
}

/// One run of equal bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Set or clear bits.
    pub set: bool,
    /// How many (never 0).
    pub len: u64,
}

impl<'a> CompressedBitmap<'a> {
    /// The runs, in order; decoding stops at the first malformed VLI.
    pub fn runs(&self) -> Runs<'a> {
        Runs {
            r: Reader::new(self.code),
            set: self.first_set,
            failed: false,
        }
    }
}

/// Iterator over the runs of a [`CompressedBitmap`].
#[derive(Debug, Clone)]
pub struct Runs<'a> {
    r: Reader<'a>,
    set: bool,
    failed: bool,
}

impl Iterator for Runs<'_> {
    type Item = Result<Run, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.left() == 0 {
            return None;
        }
        let item = read_vli(&mut self.r).map(|len| Run { set: self.set, len });
        self.failed = item.is_err();
        self.set = !self.set;
        Some(item)
    }
}

/// Reads one run length.
fn read_vli(r: &mut Reader<'_>) -> Result<u64, WireError> {
    let mut value = 0u64;
    for i in 0..MAX_VLI_BYTES {
        let byte = r.u8("bitmap run length")?;
        let group = u64::from(byte & 0x7f);
        // The tenth byte may only hold the top bit of a u64.
        if i == MAX_VLI_BYTES - 1 && byte > 1 {
            return Err(WireError::InvalidValue("bitmap run length (overflow)"));
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(WireError::InvalidValue("bitmap run length (not minimal)"));
            }
            if value == 0 {
                return Err(WireError::InvalidValue("bitmap run length (zero)"));
            }
            return Ok(value);
        }
    }
    Err(WireError::InvalidValue("bitmap run length (overflow)"))
}

/// Appends one run length as a minimal VLI.
///
/// # Panics
/// If `len` is 0: runs are never empty (a caller bug).
pub fn put_run(out: &mut Vec<u8>, mut len: u64) {
    assert!(len > 0, "empty bitmap run");
    loop {
        let group = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(group);
            return;
        }
        out.push(group | 0x80);
    }
}

impl<'a> Codec<'a> for CompressedBitmap<'a> {
    /// # Panics
    /// If `code` is empty or exceeds [`MAX_BITMAP_CODE`] (a caller bug).
    fn encode(&self, out: &mut Vec<u8>) {
        assert!(!self.code.is_empty() && self.code.len() <= MAX_BITMAP_CODE as usize);
        put_u64(out, self.start_bit);
        out.push(u8::from(self.first_set));
        out.extend_from_slice(self.code);
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let start_bit = r.u64("compressed bitmap start_bit")?;
        let first_set = r.bool("compressed bitmap first_set")?;
        let code = r.rest();
        if code.len() > MAX_BITMAP_CODE as usize {
            return Err(WireError::TooLong {
                what: "compressed bitmap code",
                max: MAX_BITMAP_CODE,
            });
        }
        if code.is_empty() {
            return Err(WireError::InvalidValue("empty compressed bitmap"));
        }
        Ok(CompressedBitmap {
            start_bit,
            first_set,
            code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vli_edges() {
        let cases: &[(u64, &[u8])] = &[
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(v, bytes) in cases {
            let mut out = Vec::new();
            put_run(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(read_vli(&mut Reader::new(bytes)), Ok(v));
        }
        let bad: &[(&[u8], WireError)] = &[
            (&[0x00], WireError::InvalidValue("bitmap run length (zero)")),
            (
                &[0x80, 0x00],
                WireError::InvalidValue("bitmap run length (not minimal)"),
            ),
            (&[0x80], WireError::Truncated("bitmap run length")),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                WireError::InvalidValue("bitmap run length (overflow)"),
            ),
            (
                &[0xff; 11],
                WireError::InvalidValue("bitmap run length (overflow)"),
            ),
        ];
        for (bytes, err) in bad {
            assert_eq!(read_vli(&mut Reader::new(bytes)), Err(*err), "{bytes:x?}");
        }
    }

    #[test]
    fn runs_alternate_and_stop_at_the_first_error() {
        let mut code = Vec::new();
        for len in [5, 1000, 3] {
            put_run(&mut code, len);
        }
        code.push(0x80);
        let bm = CompressedBitmap {
            start_bit: 0,
            first_set: true,
            code: &code,
        };
        let runs: Vec<_> = bm.runs().collect();
        assert_eq!(
            runs,
            vec![
                Ok(Run { set: true, len: 5 }),
                Ok(Run {
                    set: false,
                    len: 1000
                }),
                Ok(Run { set: true, len: 3 }),
                Err(WireError::Truncated("bitmap run length")),
            ]
        );
    }

    proptest! {
        #[test]
        fn runs_round_trip(first_set in any::<bool>(), lens in proptest::collection::vec(1u64.., 1..200)) {
            let mut code = Vec::new();
            for &len in &lens {
                put_run(&mut code, len);
            }
            prop_assume!(code.len() <= MAX_BITMAP_CODE as usize);
            let bm = CompressedBitmap { start_bit: 7, first_set, code: &code };
            let bytes = bm.to_vec();
            let back = CompressedBitmap::read_exact(&bytes, "cbm").unwrap();
            let runs: Vec<Run> = back.runs().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(runs.len(), lens.len());
            for (i, (run, len)) in runs.iter().zip(&lens).enumerate() {
                prop_assert_eq!(run.len, *len);
                prop_assert_eq!(run.set, first_set ^ (i % 2 == 1));
            }
        }
    }
}
