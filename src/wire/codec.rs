//! The cursor every wire decoder reads through, the error it returns, and the [`Codec`]
//! trait every packet body implements (rustls' `msgs/codec.rs` shape).
//!
//! A decoder never indexes a slice: it asks the [`Reader`] for the bytes it needs and gets a
//! [`WireError`] naming the field when they are not there. Decoded packets borrow from the
//! input (payloads, digests, names), so decoding allocates nothing at all; a length read
//! from the wire is compared with a named cap before the bytes it announces are taken.
//! Integers are big-endian (network order) except bitmap words, which are little-endian as
//! on DRBD's disk.

use thiserror::Error;

/// Why bytes from the peer could not be decoded. Small and `Copy`, with `&'static str`
/// context, like rustls' `InvalidMessage`. Every variant means the peer broke the protocol
/// (or the stream is corrupt): the connection state machine drops the connection
/// (DRBD's C_PROTOCOL_ERROR), except for `Truncated` on a buffer that is still filling,
/// which [`split_frame`](super::split_frame) reports as "need more bytes" instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended inside the named field.
    #[error("input ends inside {0}")]
    Truncated(&'static str),
    /// Bytes were left after the named structure.
    #[error("unexpected bytes after {0}")]
    TrailingData(&'static str),
    /// A length field announced more than the named cap allows.
    #[error("{what} longer than {max} bytes")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The cap, bytes.
        max: u32,
    },
    /// A frame did not start with [`FRAME_MAGIC`](super::FRAME_MAGIC).
    #[error("bad frame magic {0:#010x}")]
    BadMagic(u32),
    /// A frame header version this implementation does not know.
    #[error("unknown frame version {0}")]
    UnknownVersion(u8),
    /// Frame flag bits this version does not define.
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// A field holds a value its type forbids (the field is named).
    #[error("invalid {0}")]
    InvalidValue(&'static str),
}

/// A read cursor over a borrowed byte slice.
#[derive(Debug, Clone)]
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

    /// Takes the next `len` bytes, or fails naming `what` (consuming nothing).
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let (head, _) = self.buf[self.pos..]
            .split_at_checked(len)
            .ok_or(WireError::Truncated(what))?;
        self.pos += len;
        Ok(head)
    }

    /// Takes `len` bytes after checking `len <= max`: the check comes first, so a huge
    /// announced length fails as [`WireError::TooLong`] whatever the input holds.
    pub fn take_capped(
        &mut self,
        len: usize,
        max: u32,
        what: &'static str,
    ) -> Result<&'a [u8], WireError> {
        if len > max as usize {
            return Err(WireError::TooLong { what, max });
        }
        self.take(len, what)
    }

    /// Takes the next `N` bytes as an array.
    pub fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// Everything not yet consumed.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        self.pos = self.buf.len();
        rest
    }

    /// A `u8`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        self.take_array::<1>(what).map(|[b]| b)
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.take_array(what).map(u16::from_be_bytes)
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.take_array(what).map(u32::from_be_bytes)
    }

    /// A big-endian `i32`.
    pub fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        self.take_array(what).map(i32::from_be_bytes)
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.take_array(what).map(u64::from_be_bytes)
    }

    /// A boolean byte: 0 or 1, anything else is invalid.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::InvalidValue(what)),
        }
    }

    /// Fails unless every byte has been consumed.
    pub fn expect_end(&self, what: &'static str) -> Result<(), WireError> {
        if self.left() == 0 {
            Ok(())
        } else {
            Err(WireError::TrailingData(what))
        }
    }
}

/// A packet body: an infallible encoder and a decoder that never panics.
pub trait Codec<'a>: Sized {
    /// Appends the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes one value from the reader (which may hold more after it).
    fn read(r: &mut Reader<'a>) -> Result<Self, WireError>;

    /// Decodes a value that must fill `buf` exactly.
    fn read_exact(buf: &'a [u8], what: &'static str) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let v = Self::read(&mut r)?;
        r.expect_end(what)?;
        Ok(v)
    }

    /// The encoding as a new vector.
    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends a big-endian `u16`.
pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `u32`.
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `i32`.
pub(crate) fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian `u64`.
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a length byte and the bytes.
///
/// # Panics
/// If `bytes` is longer than 255: the callers' types cap their fields far below that, so
/// this is a bug in the caller, never a property of peer input.
pub(crate) fn put_u8_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u8::try_from(bytes.len()).expect("u8-prefixed field longer than 255 bytes");
    out.push(len);
    out.extend_from_slice(bytes);
}

/// Reads a length byte, checks it against `max`, then takes the bytes.
pub(crate) fn read_u8_prefixed<'a>(
    r: &mut Reader<'a>,
    max: u32,
    what: &'static str,
) -> Result<&'a [u8], WireError> {
    let len = r.u8(what)?;
    r.take_capped(usize::from(len), max, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_names_the_missing_field_and_consumes_nothing() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32("magic"), Err(WireError::Truncated("magic")));
        assert_eq!(r.position(), 0);
        assert_eq!(r.u16("x"), Ok(0x0102));
        assert_eq!(r.expect_end("s"), Err(WireError::TrailingData("s")));
        assert_eq!(r.bool("b"), Err(WireError::InvalidValue("b")));
    }

    #[test]
    fn cap_is_checked_before_the_bytes() {
        let mut r = Reader::new(&[0; 4]);
        assert_eq!(
            r.take_capped(usize::MAX, 16, "digest"),
            Err(WireError::TooLong {
                what: "digest",
                max: 16
            })
        );
        assert_eq!(
            r.take_capped(8, 16, "digest"),
            Err(WireError::Truncated("digest"))
        );
        assert_eq!(r.take_capped(4, 16, "digest"), Ok(&[0u8; 4][..]));
    }

    #[test]
    fn errors_are_small_and_readable() {
        assert!(std::mem::size_of::<WireError>() <= 24);
        assert_eq!(
            WireError::TooLong {
                what: "payload",
                max: 4096
            }
            .to_string(),
            "payload longer than 4096 bytes"
        );
        assert_eq!(
            WireError::BadMagic(0x1234).to_string(),
            "bad frame magic 0x00001234"
        );
    }
}
