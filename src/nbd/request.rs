//! Transmission requests: the 28-byte header and the checks the spec prescribes.
//!
//! Decoding only fails on framing (a wrong magic: the stream cannot be resynchronised).
//! Everything else about a request — unknown command or flag, bad range, too long — is a
//! per-request error with the errno the spec names, answered without dropping the client.

use thiserror::Error;

use super::proto::{Command, ErrorCode, REQUEST_MAGIC, cmd_flags, tx_flags};

/// Bytes of a request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Largest READ/WRITE payload accepted (2^25: the spec's portable maximum). Checked before
/// any buffer is allocated for a request.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// A request that breaks framing; the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The request did not start with NBD_REQUEST_MAGIC.
    #[error("bad request magic {0:#010x}")]
    BadRequestMagic(u32),
    /// A reply did not start with a known magic.
    #[error("bad reply magic {0:#010x}")]
    BadReplyMagic(u32),
}

/// One request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`cmd_flags`).
    pub flags: u16,
    /// Command.
    pub cmd: Command,
    /// Opaque cookie echoed in the reply.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub len: u32,
}

/// What the export allows, for [`Request::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Export size.
    pub size: u64,
    /// Transmission flags sent to this client.
    pub flags: u16,
    /// Structured replies negotiated.
    pub structured: bool,
    /// Maximum READ/WRITE payload.
    pub max_payload: u32,
}

impl Request {
    /// Decodes a header.
    pub fn decode(h: &[u8; REQUEST_HEADER_LEN]) -> Result<Request, FramingError> {
        let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        let magic = u32_at(0);
        if magic != REQUEST_MAGIC {
            return Err(FramingError::BadRequestMagic(magic));
        }
        Ok(Request {
            flags: u16_at(4),
            cmd: Command(u16_at(6)),
            cookie: u64_at(8),
            offset: u64_at(16),
            len: u32_at(24),
        })
    }

    /// Encodes a header (the client side).
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut h = [0u8; REQUEST_HEADER_LEN];
        h[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&self.flags.to_be_bytes());
        h[6..8].copy_from_slice(&self.cmd.0.to_be_bytes());
        h[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        h[16..24].copy_from_slice(&self.offset.to_be_bytes());
        h[24..28].copy_from_slice(&self.len.to_be_bytes());
        h
    }

    /// Bytes of payload following the header on the wire (whatever the verdict of
    /// [`check`](Self::check): an invalid write's payload must still be skipped).
    pub fn payload_len(&self) -> u32 {
        if self.cmd == Command::WRITE {
            self.len
        } else {
            0
        }
    }

    /// Whether the request may be executed, or the error to reply with.
    pub fn check(&self, lim: &Limits) -> Result<(), ErrorCode> {
        let advertised = |f: u16| lim.flags & f != 0;
        let mut allowed = if advertised(tx_flags::SEND_FUA) {
            cmd_flags::FUA
        } else {
            0
        };
        match self.cmd {
            Command::READ | Command::WRITE | Command::DISC => {}
            Command::FLUSH if advertised(tx_flags::SEND_FLUSH) => {}
            Command::TRIM if advertised(tx_flags::SEND_TRIM) => {}
            Command::WRITE_ZEROES if advertised(tx_flags::SEND_WRITE_ZEROES) => {}
            _ => return Err(ErrorCode::EINVAL),
        }
        if self.cmd == Command::READ && lim.structured && advertised(tx_flags::SEND_DF) {
            allowed |= cmd_flags::DF;
        }
        if self.cmd == Command::WRITE_ZEROES {
            allowed |= cmd_flags::NO_HOLE;
        }
        if self.flags & !allowed != 0 {
            return Err(ErrorCode::EINVAL);
        }
        match self.cmd {
            Command::DISC => return Ok(()),
            Command::FLUSH => {
                return if self.offset == 0 && self.len == 0 {
                    Ok(())
                } else {
                    Err(ErrorCode::EINVAL)
                };
            }
            _ => {}
        }
        let writes = matches!(
            self.cmd,
            Command::WRITE | Command::TRIM | Command::WRITE_ZEROES
        );
        if writes && advertised(tx_flags::READ_ONLY) {
            return Err(ErrorCode::EPERM);
        }
        if self.len == 0 {
            return Err(ErrorCode::EINVAL);
        }
        if matches!(self.cmd, Command::READ | Command::WRITE) && self.len > lim.max_payload {
            return Err(ErrorCode::EINVAL);
        }
        let in_range = self
            .offset
            .checked_add(u64::from(self.len))
            .is_some_and(|end| end <= lim.size);
        if !in_range {
            return Err(match self.cmd {
                Command::WRITE | Command::WRITE_ZEROES => ErrorCode::ENOSPC,
                _ => ErrorCode::EINVAL,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim() -> Limits {
        Limits {
            size: 1 << 20,
            flags: tx_flags::HAS_FLAGS
                | tx_flags::SEND_FLUSH
                | tx_flags::SEND_FUA
                | tx_flags::SEND_TRIM
                | tx_flags::SEND_WRITE_ZEROES
                | tx_flags::SEND_DF,
            structured: false,
            max_payload: MAX_PAYLOAD,
        }
    }

    fn req(cmd: Command, flags: u16, offset: u64, len: u32) -> Request {
        Request {
            flags,
            cmd,
            cookie: 7,
            offset,
            len,
        }
    }

    #[test]
    fn errors_the_spec_prescribes() {
        let l = lim();
        let ok = |r: Request| r.check(&l);
        assert_eq!(ok(req(Command::READ, 0, 0, 512)), Ok(()));
        assert_eq!(ok(req(Command(42), 0, 0, 0)), Err(ErrorCode::EINVAL));
        assert_eq!(
            ok(req(Command::BLOCK_STATUS, 0, 0, 1)),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(ok(req(Command::READ, 1 << 9, 0, 1)), Err(ErrorCode::EINVAL));
        assert_eq!(
            ok(req(Command::READ, cmd_flags::DF, 0, 1)),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(ok(req(Command::READ, cmd_flags::FUA, 0, 1)), Ok(()));
        assert_eq!(
            ok(req(Command::WRITE, cmd_flags::NO_HOLE, 0, 1)),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            ok(req(
                Command::WRITE_ZEROES,
                cmd_flags::NO_HOLE | cmd_flags::FUA,
                0,
                1
            )),
            Ok(())
        );
        assert_eq!(
            ok(req(Command::READ, 0, (1 << 20) - 1, 2)),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            ok(req(Command::TRIM, 0, 1 << 20, 1)),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(
            ok(req(Command::WRITE, 0, 1 << 20, 1)),
            Err(ErrorCode::ENOSPC)
        );
        assert_eq!(
            ok(req(Command::WRITE_ZEROES, 0, u64::MAX, 1)),
            Err(ErrorCode::ENOSPC)
        );
        assert_eq!(ok(req(Command::READ, 0, 0, 0)), Err(ErrorCode::EINVAL));
        assert_eq!(
            ok(req(Command::READ, 0, 0, MAX_PAYLOAD + 1)),
            Err(ErrorCode::EINVAL)
        );
        assert_eq!(ok(req(Command::FLUSH, 0, 0, 0)), Ok(()));
        assert_eq!(ok(req(Command::FLUSH, 0, 1, 0)), Err(ErrorCode::EINVAL));
        assert_eq!(ok(req(Command::DISC, 0, 5, 5)), Ok(()));
        let ro = Limits {
            flags: l.flags | tx_flags::READ_ONLY,
            ..l
        };
        assert_eq!(
            req(Command::WRITE, 0, 0, 1).check(&ro),
            Err(ErrorCode::EPERM)
        );
        assert_eq!(
            req(Command::TRIM, 0, 0, 1).check(&ro),
            Err(ErrorCode::EPERM)
        );
        assert_eq!(req(Command::READ, 0, 0, 1).check(&ro), Ok(()));
        let sr = Limits {
            structured: true,
            ..l
        };
        assert_eq!(req(Command::READ, cmd_flags::DF, 0, 1).check(&sr), Ok(()));
        let no_trim = Limits {
            flags: l.flags & !tx_flags::SEND_TRIM,
            ..l
        };
        assert_eq!(
            req(Command::TRIM, 0, 0, 1).check(&no_trim),
            Err(ErrorCode::EINVAL)
        );
    }

    #[test]
    fn bad_magic_is_framing() {
        let mut h = req(Command::READ, 0, 0, 1).encode();
        h[0] ^= 1;
        assert!(matches!(
            Request::decode(&h),
            Err(FramingError::BadRequestMagic(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(flags in any::<u16>(), cmd in any::<u16>(), cookie in any::<u64>(),
                      offset in any::<u64>(), len in any::<u32>()) {
            let r = Request { flags, cmd: Command(cmd), cookie, offset, len };
            prop_assert_eq!(Request::decode(&r.encode()), Ok(r));
        }

        #[test]
        fn never_panics(bytes in proptest::array::uniform28(any::<u8>())) {
            if let Ok(r) = Request::decode(&bytes) {
                let _ = r.check(&lim());
                prop_assert_eq!(r.encode(), bytes);
            }
        }
    }
}
