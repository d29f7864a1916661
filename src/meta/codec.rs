//! Big-endian cursor codecs for DRBD's on-disk structures.
//!
//! Every on-disk structure is decoded through one [`Reader`] over a borrowed slice and
//! encoded through one [`Writer`] into a fixed-size buffer. A decoder never indexes a slice
//! directly: it asks the reader for exactly the bytes it needs and gets a typed error when
//! they are not there, so garbage input can only ever produce an error, never a panic.

use std::fmt;

/// Why a byte slice could not be decoded. Small and `Copy`, like rustls' `InvalidMessage`;
/// the caller adds the file name and offset when it turns this into a
/// [`MetaError`](super::MetaError).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidData {
    /// The input ended before the named field.
    MissingData(&'static str),
    /// Bytes were left over after the named structure.
    TrailingData(&'static str),
}

impl fmt::Display for InvalidData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingData(what) => write!(f, "input ends before {what}"),
            Self::TrailingData(what) => write!(f, "unexpected bytes after {what}"),
        }
    }
}

impl std::error::Error for InvalidData {}

/// A read cursor over a borrowed byte slice. All multi-byte integers are big-endian, as in
/// every DRBD on-disk structure except the bitmap (which is little-endian and has its own
/// decoder in [`super::bitmap`]).
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `len` bytes, or fails naming `what` if fewer are left.
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], InvalidData> {
        let rest = &self.buf[self.pos..];
        let (head, _) = rest
            .split_at_checked(len)
            .ok_or(InvalidData::MissingData(what))?;
        self.pos += len;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    pub fn take_array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], InvalidData> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Skips `len` bytes (reserved or padding fields).
    pub fn skip(&mut self, len: usize, what: &'static str) -> Result<(), InvalidData> {
        self.take(len, what).map(|_| ())
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, InvalidData> {
        self.take_array(what).map(u16::from_be_bytes)
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, InvalidData> {
        self.take_array(what).map(u32::from_be_bytes)
    }

    /// A big-endian `i32` (DRBD's signed sector offsets).
    pub fn i32(&mut self, what: &'static str) -> Result<i32, InvalidData> {
        self.take_array(what).map(i32::from_be_bytes)
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, InvalidData> {
        self.take_array(what).map(u64::from_be_bytes)
    }

    /// Fails unless every byte has been consumed.
    pub fn expect_end(&self, what: &'static str) -> Result<(), InvalidData> {
        if self.left() == 0 {
            Ok(())
        } else {
            Err(InvalidData::TrailingData(what))
        }
    }
}

/// A write cursor that appends big-endian fields to a buffer and pads it to a fixed size.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Appends raw bytes.
    pub fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }

    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    /// Appends a big-endian `i32`.
    pub fn i32(&mut self, v: i32) {
        self.put(&v.to_be_bytes());
    }

    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Zero-pads to exactly `size` bytes and returns the buffer.
    ///
    /// # Panics
    /// If more than `size` bytes were written: that is a bug in an encoder, never a
    /// property of input data.
    pub fn finish_padded(mut self, size: usize) -> Vec<u8> {
        assert!(
            self.buf.len() <= size,
            "encoder wrote {} bytes into a {size}-byte structure",
            self.buf.len()
        );
        self.buf.resize(size, 0);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers_round_trip_big_endian() {
        let mut w = Writer::with_capacity(32);
        w.u16(0x1234);
        w.u32(0x89AB_CDEF);
        w.i32(-72);
        w.u64(0x0102_0304_0506_0708);
        let buf = w.finish_padded(18);
        assert_eq!(&buf[..2], &[0x12, 0x34]);
        assert_eq!(&buf[2..6], &[0x89, 0xAB, 0xCD, 0xEF]);
        let mut r = Reader::new(&buf);
        assert_eq!(r.u16("a"), Ok(0x1234));
        assert_eq!(r.u32("b"), Ok(0x89AB_CDEF));
        assert_eq!(r.i32("c"), Ok(-72));
        assert_eq!(r.u64("d"), Ok(0x0102_0304_0506_0708));
        assert_eq!(r.left(), 0);
        assert_eq!(r.expect_end("x"), Ok(()));
    }

    #[test]
    fn short_input_names_the_field() {
        let buf = [1u8, 2, 3];
        let mut r = Reader::new(&buf);
        assert_eq!(r.u32("magic"), Err(InvalidData::MissingData("magic")));
        // A failed take consumes nothing.
        assert_eq!(r.position(), 0);
        assert_eq!(r.u16("x"), Ok(0x0102));
        assert_eq!(r.expect_end("s"), Err(InvalidData::TrailingData("s")));
    }

    #[test]
    #[should_panic(expected = "encoder wrote")]
    fn overlong_encoder_is_a_bug() {
        let mut w = Writer::default();
        w.u64(0);
        let _ = w.finish_padded(4);
    }

    proptest! {
        #[test]
        fn reader_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64),
                               ops in proptest::collection::vec(0u8..6, 0..32)) {
            let mut r = Reader::new(&buf);
            for op in ops {
                let _ = match op {
                    0 => r.u16("a").map(|_| ()),
                    1 => r.u32("b").map(|_| ()),
                    2 => r.i32("c").map(|_| ()),
                    3 => r.u64("d").map(|_| ()),
                    4 => r.skip(7, "e"),
                    _ => r.take_array::<3>("f").map(|_| ()),
                };
                prop_assert!(r.position() <= buf.len());
            }
        }

        #[test]
        fn u64_round_trip(v in any::<u64>(), w32 in any::<u32>(), s in any::<i32>()) {
            let mut w = Writer::default();
            w.u64(v);
            w.u32(w32);
            w.i32(s);
            let buf = w.finish_padded(16);
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.u64("v")?, v);
            prop_assert_eq!(r.u32("w")?, w32);
            prop_assert_eq!(r.i32("s")?, s);
        }
    }
}
