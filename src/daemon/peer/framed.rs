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

/// Bytes a [`FrameReader`] asks the stream for beyond the frame it needs: small frames
/// (acks, requests, 4 KiB blocks) that arrive together are then read with one call.
const READ_AHEAD: usize = 64 << 10;

/// Reads frames from a stream into one buffer, reused from frame to frame. Each read asks
/// for as much as fits (up to [`READ_AHEAD`] past the frame in hand), so frames that
/// arrived together cost one system call, not two each (header, then payload). The buffer
/// is [`READ_AHEAD`] bytes, grown only for a frame whose checked header announces more
/// (at most [`MAX_PAYLOAD`](crate::wire::MAX_PAYLOAD) plus the header).
///
/// Bytes read ahead belong to this reader: once it has read from a stream, nothing else
/// may read frames from that stream.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
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
    /// before the buffer grows for the payload: a frame announcing too much fails with
    /// [`FrameError::Wire`] at once. End of file before the first header byte is
    /// [`FrameError::Closed`]; anywhere later it is [`FrameError::Truncated`].
    pub fn read<'a>(
        &'a mut self,
        s: &mut impl Read,
    ) -> Result<(FrameHeader, &'a [u8]), FrameError> {
        let (header, at) = loop {
            match self.next_buffered() {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            match s.read(self.space()) {
                Ok(0) => return Err(self.ended()),
                Ok(n) => self.filled(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.reset();
                    return Err(e.into());
                }
            }
        };
        Ok((header, self.payload(&header, at)))
    }

    /// The next frame if it is buffered whole: its header and where its payload starts
    /// (for [`payload`](Self::payload)); `None` if more bytes are needed. A bad header fails
    /// at once (and the reader is reset: the stream is out of step).
    pub fn next_buffered(&mut self) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        let have = self.end - self.start;
        if have < HEADER_LEN {
            return Ok(None);
        }
        let header = match self.header() {
            Ok(h) => h,
            Err(e) => {
                self.reset();
                return Err(e.into());
            }
        };
        // Bounded by the type's cap (at most MAX_PAYLOAD) by FrameHeader::decode.
        let total = HEADER_LEN + header.len as usize;
        if have < total {
            return Ok(None);
        }
        let at = self.start + HEADER_LEN;
        self.start += total;
        Ok(Some((header, at)))
    }

    /// The payload of a frame [`next_buffered`](Self::next_buffered) returned (valid
    /// until the next [`space`](Self::space)).
    pub fn payload(&self, header: &FrameHeader, at: usize) -> &[u8] {
        &self.buf[at..at + header.len as usize]
    }

    /// Where the next read from the stream goes: room for the frame in hand (its header
    /// first, then as much as the checked header announces) plus up to [`READ_AHEAD`]
    /// bytes. Consumed frames are dropped from the buffer here, so frames returned before
    /// are no longer valid. Never empty.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        let have = self.end - self.start;
        // A header that is buffered was checked by `next_buffered` (which returned None
        // because the payload is incomplete); an unchecked one only asks for its own size.
        let need = match self.header() {
            Ok(h) if have >= HEADER_LEN => HEADER_LEN + h.len as usize,
            _ => HEADER_LEN,
        }
        .max(have + 1);
        if self.start + need > self.buf.len() {
            // Move the unread bytes to the front, and grow for a large frame.
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, have);
            let want = need.max(READ_AHEAD);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
        }
        let room = (self.start + need + READ_AHEAD).min(self.buf.len());
        &mut self.buf[self.end..room]
    }

    /// `n` bytes were read into [`space`](Self::space).
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// The stream ended: the error that says where (and the reader is reset).
    pub fn ended(&mut self) -> FrameError {
        let got = self.end - self.start;
        let e = if got == 0 {
            FrameError::Closed
        } else if got < HEADER_LEN {
            FrameError::Truncated {
                got,
                expected: HEADER_LEN,
            }
        } else {
            let expected = self
                .header()
                .map_or(HEADER_LEN, |h| HEADER_LEN + h.len as usize);
            FrameError::Truncated { got, expected }
        };
        self.reset();
        e
    }

    /// Forgets what is buffered (after an error the stream is out of step).
    fn reset(&mut self) {
        (self.start, self.end) = (0, 0);
    }

    /// The buffered header of the next frame, checked (the caller made sure it is there).
    fn header(&self) -> Result<FrameHeader, WireError> {
        let mut head = [0u8; HEADER_LEN];
        match self.buf.get(self.start..self.start + HEADER_LEN) {
            Some(b) if self.end - self.start >= HEADER_LEN => head.copy_from_slice(b),
            _ => return Err(WireError::Truncated("frame header")),
        }
        FrameHeader::decode(&head)
    }
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

    /// The calls a caller with its own reads makes (the session's ring): space, filled,
    /// next_buffered, ended. Bytes arrive in pieces of every size from 1 to 9.
    #[test]
    fn frames_come_out_of_bytes_filled_in_by_the_caller() {
        let block: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        let frames = [
            Frame::new(0, Packet::Ping),
            data_frame(&block),
            Frame::new(0, Packet::PingAck),
        ];
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f, &mut scratch).expect("write");
        }
        for step in 1..10 {
            let mut reader = FrameReader::new();
            let (mut pos, mut got) = (0, Vec::new());
            while got.len() < frames.len() {
                while let Some((h, at)) = reader.next_buffered().expect("good frames") {
                    let p = reader.payload(&h, at).to_vec();
                    got.push((h.ty, p));
                }
                if got.len() == frames.len() {
                    break;
                }
                let space = reader.space();
                assert!(!space.is_empty());
                let n = step.min(space.len()).min(wire.len() - pos);
                assert!(n > 0, "the reader wants bytes past the last frame");
                space[..n].copy_from_slice(&wire[pos..pos + n]);
                pos += n;
                reader.filled(n);
            }
            assert_eq!(pos, wire.len());
            for (f, (ty, p)) in frames.iter().zip(&got) {
                assert_eq!(Packet::decode(*ty, p), Ok(f.packet));
            }
            assert!(matches!(reader.ended(), FrameError::Closed));
        }

        // End of file inside a frame, and a bad header, are errors that say so.
        let mut reader = FrameReader::new();
        let space = reader.space();
        space[..20].copy_from_slice(&wire[HEADER_LEN..HEADER_LEN + 20]);
        reader.filled(20);
        assert!(matches!(
            reader.ended(),
            FrameError::Truncated { got: 20, .. }
        ));
        let space = reader.space();
        let bad = [0xffu8; 64];
        space[..64].copy_from_slice(&bad);
        reader.filled(64);
        assert!(matches!(reader.next_buffered(), Err(FrameError::Wire(_))));
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

    /// Counts the reads it serves from `data`, each at most `step` bytes.
    struct Counting<'a> {
        inner: Trickle<'a>,
        reads: usize,
    }

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            self.inner.read(buf)
        }
    }

    #[test]
    fn frames_that_arrive_together_are_read_together() {
        // 200 acks and small blocks, then a block larger than the read-ahead, then more.
        let small = vec![0x11; 4096];
        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut frames = Vec::new();
        for i in 0..200u64 {
            frames.push(if i % 2 == 0 {
                Frame::new(
                    0,
                    Packet::RsWriteAck(BlockAck {
                        sector: i,
                        block_id: i,
                        size: 4096,
                        seq: 0,
                    }),
                )
            } else {
                data_frame(&small)
            });
        }
        frames.push(data_frame(&large));
        frames.push(Frame::new(0, Packet::Ping));
        frames.push(data_frame(&small));
        let mut wire = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f, &mut Vec::new()).expect("write");
        }
        let mut src = Counting {
            inner: Trickle {
                data: &wire,
                pos: 0,
                step: usize::MAX,
            },
            reads: 0,
        };
        let mut reader = FrameReader::new();
        for f in &frames {
            let (h, p) = reader.read(&mut src).expect("frame");
            assert_eq!(Packet::decode(h.ty, p), Ok(f.packet));
        }
        assert!(matches!(reader.read(&mut src), Err(FrameError::Closed)));
        // Two reads a frame before; now about one per READ_AHEAD bytes.
        let bound = wire.len() / READ_AHEAD + 8;
        assert!(
            src.reads <= bound,
            "{} reads for {} frames of {} bytes (bound {bound})",
            src.reads,
            frames.len(),
            wire.len()
        );
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
    fn an_oversize_length_fails_before_the_buffer_grows() {
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
        assert!(
            reader.buf.len() <= READ_AHEAD,
            "nothing was allocated from the announced length"
        );

        let mut bad_magic = head.clone();
        bad_magic[0] = b'X';
        let err = reader.read(&mut Cursor::new(bad_magic)).unwrap_err();
        assert!(matches!(err, FrameError::Wire(WireError::BadMagic(_))));
    }
}
