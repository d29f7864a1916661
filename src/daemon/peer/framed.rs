//! Blocking frame I/O on a peer socket: read one frame into a reusable buffer, write one
//! frame, write a data frame without copying its block.
//!
//! Decoding the packet stays the caller's: [`FrameReader::read`] returns the checked
//! header and the raw payload, and `Packet::decode(header.ty, payload)` does the rest.
//!
//! The streams must be blocking (a read timeout is fine: it surfaces as
//! [`FrameError::Io`]). After any error the stream is out of step (a frame may be half
//! read or half written): drop the connection.

use std::io::{self, IoSlice, Read, Write};

use thiserror::Error;

use crate::wire::{Frame, FrameHeader, HEADER_LEN, MAX_DATA, Packet, WireError, flags};

/// Why a frame could not be read.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The socket failed (including a read timeout set on it).
    #[error("peer socket: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection between two frames.
    #[error("the peer closed the connection")]
    Closed,
    /// The header broke the protocol (bad magic, version, flags, or a length over its
    /// type's cap); nothing after the header was read.
    #[error("bad frame from the peer: {0}")]
    Wire(#[from] WireError),
    /// The peer closed the connection inside a frame.
    #[error("the peer closed the connection inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes of the frame received, header included.
        got: usize,
        /// Bytes the frame needed, header included (the header's size while the header
        /// itself is incomplete).
        expected: usize,
    },
}

/// Reads frames from a stream into one buffer, reused from frame to frame. The buffer
/// grows to the largest payload seen, at most [`MAX_PAYLOAD`](crate::wire::MAX_PAYLOAD).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// A reader with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads exactly one frame and returns its header and payload (borrowed from the
    /// internal buffer until the next call).
    ///
    /// The header is checked completely, and its length bounded by the packet type's cap,
    /// before any payload byte is read: a frame announcing too much fails with
    /// [`FrameError::Wire`] at once. End of file before the first header byte is
    /// [`FrameError::Closed`]; anywhere later it is [`FrameError::Truncated`].
    pub fn read<'a>(
        &'a mut self,
        s: &mut impl Read,
    ) -> Result<(FrameHeader, &'a [u8]), FrameError> {
        let mut head = [0u8; HEADER_LEN];
        match fill(s, &mut head)? {
            0 => return Err(FrameError::Closed),
            HEADER_LEN => {}
            got => {
                return Err(FrameError::Truncated {
                    got,
                    expected: HEADER_LEN,
                });
            }
        }
        let header = FrameHeader::decode(&head)?;
        // Bounded by the type's cap (at most MAX_PAYLOAD) by FrameHeader::decode.
        let len = header.len as usize;
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let payload = &mut self.buf[..len];
        let got = fill(s, payload)?;
        if got < len {
            return Err(FrameError::Truncated {
                got: HEADER_LEN + got,
                expected: HEADER_LEN + len,
            });
        }
        Ok((header, &self.buf[..len]))
    }
}

/// Reads until `buf` is full or end of file; returns the bytes read.
fn fill(s: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Writes one frame. `scratch` is the encoding buffer, reused across calls (cleared
/// first).
///
/// A `DATA` or `RS_DATA_REPLY` frame is written without copying its block: the header and
/// fixed fields go into `scratch`, and both are written with one vectored write (looping
/// on partial writes). Every other packet is encoded whole into `scratch`.
///
/// # Panics
/// As [`Frame::encode`]: when a payload exceeds its cap or `frame.flags` has unknown bits
/// (a caller bug; the packet types' constructors keep within their caps).
pub fn write_frame(s: &mut impl Write, frame: &Frame<'_>, scratch: &mut Vec<u8>) -> io::Result<()> {
    scratch.clear();
    let block = match frame.packet {
        Packet::Data(d) | Packet::RsDataReply(d) | Packet::DataReply(d) => d.payload,
        _ => {
            frame.encode(scratch);
            return s.write_all(scratch);
        }
    };
    assert!(block.len() <= MAX_DATA as usize, "data block too long");
    assert!(frame.flags & !flags::KNOWN == 0, "unknown frame flags");
    let fixed = match frame.packet {
        Packet::Data(d) => Packet::Data(crate::wire::Data { payload: &[], ..d }),
        Packet::RsDataReply(d) => Packet::RsDataReply(crate::wire::Data { payload: &[], ..d }),
        Packet::DataReply(d) => Packet::DataReply(crate::wire::Data { payload: &[], ..d }),
        _ => unreachable!("matched above"),
    };
    scratch.resize(HEADER_LEN, 0);
    fixed.encode_payload(scratch);
    let ty = frame.packet.packet_type();
    let len = scratch.len() - HEADER_LEN + block.len();
    assert!(
        len <= ty.max_payload() as usize,
        "{ty} payload of {len} bytes exceeds its cap"
    );
    let mut head = Vec::with_capacity(HEADER_LEN);
    FrameHeader {
        flags: frame.flags,
        ty,
        volume: frame.volume,
        len: len as u32,
    }
    .encode(&mut head);
    scratch[..HEADER_LEN].copy_from_slice(&head);
    write_all_vectored(s, &mut [IoSlice::new(scratch), IoSlice::new(block)])
}

/// `write_all` for several buffers: loops on partial writes and `Interrupted`.
fn write_all_vectored(s: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match s.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the peer socket accepted no bytes",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BlockAck, Data, PacketType, dp_flags};
    use std::io::Cursor;

    /// Hands out at most `step` bytes per read, and counts what it handed out.
    struct Trickle<'a> {
        data: &'a [u8],
        pos: usize,
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// Takes at most `step` bytes per write, only from the first non-empty buffer of a
    /// vectored write, and now and then reports `Interrupted`.
    struct Choppy {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Choppy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn data_frame(block: &[u8]) -> Frame<'_> {
        Frame::new(
            3,
            Packet::Data(Data {
                sector: 2048,
                block_id: 77,
                seq: 5,
                dp_flags: dp_flags::SEND_WRITE_ACK,
                digest: &[0xaa; 32],
                payload: block,
            }),
        )
    }

    #[test]
    fn data_frames_write_as_the_codec_encodes_them() {
        let block: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let frame = data_frame(&block);
        let mut expected = Vec::new();
        frame.encode(&mut expected);

        let mut out = Vec::new();
        let mut scratch = Vec::new();
        write_frame(&mut out, &frame, &mut scratch).expect("write");
        assert_eq!(out, expected);
        assert!(scratch.len() < 100, "the block was not copied into scratch");

        let mut choppy = Choppy {
            out: Vec::new(),
            step: 1000,
            calls: 0,
        };
        write_frame(&mut choppy, &frame, &mut scratch).expect("write");
        assert_eq!(choppy.out, expected);

        let mut empty = Vec::new();
        let discard = data_frame(&[]);
        write_frame(&mut empty, &discard, &mut scratch).expect("write");
        let mut want = Vec::new();
        discard.encode(&mut want);
        assert_eq!(empty, want);
    }

    #[test]
    fn frames_round_trip_through_the_reader_in_small_pieces() {
        let block = vec![0x5a; 4096];
        let ack = Frame::new(
            1,
            Packet::WriteAck(BlockAck {
                sector: 8,
                block_id: 9,
                size: 4096,
                seq: 1,
            }),
        );
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        write_frame(&mut wire, &ack, &mut scratch).expect("write");
        write_frame(&mut wire, &data_frame(&block), &mut scratch).expect("write");
        write_frame(&mut wire, &Frame::new(0, Packet::Ping), &mut scratch).expect("write");

        let mut src = Trickle {
            data: &wire,
            pos: 0,
            step: 5,
        };
        let mut reader = FrameReader::new();
        let (h, p) = reader.read(&mut src).expect("ack");
        assert_eq!((h.ty, h.volume), (PacketType::WRITE_ACK, 1));
        assert_eq!(Packet::decode(h.ty, p), Ok(ack.packet));
        let (h, p) = reader.read(&mut src).expect("data");
        assert_eq!(h.volume, 3);
        assert_eq!(Packet::decode(h.ty, p), Ok(data_frame(&block).packet));
        let (h, p) = reader.read(&mut src).expect("ping");
        assert_eq!((h.ty, p.len()), (PacketType::PING, 0));
        assert!(matches!(reader.read(&mut src), Err(FrameError::Closed)));
    }

    #[test]
    fn end_of_file_inside_a_frame_is_truncated() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &data_frame(&[1; 512]), &mut Vec::new()).expect("write");
        let total = wire.len();
        for cut in [1, HEADER_LEN - 1, HEADER_LEN, total - 1] {
            let mut reader = FrameReader::new();
            let err = reader.read(&mut Cursor::new(&wire[..cut])).unwrap_err();
            let expected = if cut < HEADER_LEN { HEADER_LEN } else { total };
            assert!(
                matches!(err, FrameError::Truncated { got, expected: e } if got == cut && e == expected),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn an_oversize_length_fails_before_the_payload_is_read() {
        let mut head = Vec::new();
        FrameHeader {
            flags: 0,
            ty: PacketType::PING,
            volume: 0,
            len: 0,
        }
        .encode(&mut head);
        head[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        head.extend_from_slice(&[0; 64]);
        let mut src = Trickle {
            data: &head,
            pos: 0,
            step: usize::MAX,
        };
        let mut reader = FrameReader::new();
        let err = reader.read(&mut src).unwrap_err();
        assert!(
            matches!(err, FrameError::Wire(WireError::TooLong { .. })),
            "{err:?}"
        );
        assert_eq!(src.pos, HEADER_LEN, "nothing after the header was read");
        assert!(reader.buf.is_empty(), "nothing was allocated");

        let mut bad_magic = head.clone();
        bad_magic[0] = b'X';
        let err = reader.read(&mut Cursor::new(bad_magic)).unwrap_err();
        assert!(matches!(err, FrameError::Wire(WireError::BadMagic(_))));
    }
}
