//! Transmission replies: simple replies and structured chunks.

use super::proto::{ChunkType, ErrorCode, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, reply_flags};
use super::request::FramingError;

/// Bytes of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Bytes of a structured chunk header.
pub const CHUNK_HEADER_LEN: usize = 20;
/// Longest error message put in an error chunk.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// A simple reply header; data follows for a successful read.
pub fn simple(cookie: u64, error: Option<ErrorCode>) -> [u8; SIMPLE_REPLY_LEN] {
    let mut h = [0u8; SIMPLE_REPLY_LEN];
    h[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&error.map_or(0, |e| e.0).to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    h
}

/// A structured chunk header.
pub fn chunk_header(flags: u16, ty: ChunkType, cookie: u64, len: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut h = [0u8; CHUNK_HEADER_LEN];
    h[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&flags.to_be_bytes());
    h[6..8].copy_from_slice(&ty.0.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    h[16..20].copy_from_slice(&len.to_be_bytes());
    h
}

/// The final NBD_REPLY_TYPE_NONE chunk of a successful non-read request.
pub fn done_none(cookie: u64) -> [u8; CHUNK_HEADER_LEN] {
    chunk_header(reply_flags::DONE, ChunkType::NONE, cookie, 0)
}

/// Header of a single, final OFFSET_DATA chunk; `data_len` bytes of data follow it.
pub fn read_data_header(cookie: u64, offset: u64, data_len: u32) -> Vec<u8> {
    let mut v = chunk_header(
        reply_flags::DONE,
        ChunkType::OFFSET_DATA,
        cookie,
        data_len.saturating_add(8),
    )
    .to_vec();
    v.extend_from_slice(&offset.to_be_bytes());
    v
}

/// A final ERROR chunk carrying `msg` (truncated to [`MAX_ERROR_MESSAGE`]).
pub fn error_chunk(cookie: u64, error: ErrorCode, msg: &str) -> Vec<u8> {
    let mut end = msg.len().min(MAX_ERROR_MESSAGE);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    let msg = &msg.as_bytes()[..end];
    let mut v = chunk_header(
        reply_flags::DONE,
        ChunkType::ERROR,
        cookie,
        (6 + msg.len()) as u32,
    )
    .to_vec();
    v.extend_from_slice(&error.0.to_be_bytes());
    v.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

/// A decoded reply header (client side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// Simple reply.
    Simple {
        /// Cookie.
        cookie: u64,
        /// Error value (0 = success).
        error: u32,
    },
    /// Structured chunk.
    Chunk {
        /// Flags.
        flags: u16,
        /// Type.
        ty: ChunkType,
        /// Cookie.
        cookie: u64,
        /// Payload length.
        len: u32,
    },
}

/// Length of the header that starts with `magic`, or a framing error.
pub fn header_len(magic: u32) -> Result<usize, FramingError> {
    match magic {
        SIMPLE_REPLY_MAGIC => Ok(SIMPLE_REPLY_LEN),
        STRUCTURED_REPLY_MAGIC => Ok(CHUNK_HEADER_LEN),
        m => Err(FramingError::BadReplyMagic(m)),
    }
}

/// Decodes a reply header (`h` holds exactly [`header_len`] bytes).
pub fn decode_header(h: &[u8]) -> Result<ReplyHeader, FramingError> {
    let u32_at = |i: usize| -> u32 {
        h.get(i..i + 4)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u32::from_be_bytes)
    };
    let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
    let magic = u32_at(0);
    let len = header_len(magic)?;
    if h.len() != len {
        return Err(FramingError::BadReplyMagic(magic));
    }
    Ok(if len == SIMPLE_REPLY_LEN {
        ReplyHeader::Simple {
            error: u32_at(4),
            cookie: u64_at(8),
        }
    } else {
        ReplyHeader::Chunk {
            flags: (u32_at(4) >> 16) as u16,
            ty: ChunkType(u32_at(4) as u16),
            cookie: u64_at(8),
            len: u32_at(16),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn headers_round_trip() {
        let s = simple(9, Some(ErrorCode::ENOSPC));
        assert_eq!(
            decode_header(&s),
            Ok(ReplyHeader::Simple {
                cookie: 9,
                error: 28
            })
        );
        let c = read_data_header(5, 4096, 512);
        assert_eq!(
            decode_header(&c[..20]),
            Ok(ReplyHeader::Chunk {
                flags: 1,
                ty: ChunkType::OFFSET_DATA,
                cookie: 5,
                len: 520
            })
        );
        let e = error_chunk(3, ErrorCode::EIO, "disk on fire");
        assert_eq!(e.len(), 20 + 6 + 12);
        assert_eq!(&e[20..24], &5u32.to_be_bytes());
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        assert!(error_chunk(1, ErrorCode::EIO, &long).len() <= 26 + MAX_ERROR_MESSAGE);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_header(&bytes);
        }
    }
}
