//! The frame: a 16-byte header (magic, version, flags, packet type, volume, payload length)
//! followed by the payload. Every packet on both sockets is one frame.
//!
//! The header is checked completely — magic, version, flags, and the announced length
//! against the cap of its packet type — before any payload byte is looked at.

use super::codec::{Reader, WireError, put_u16, put_u32};

/// First four bytes of every frame: "URBD".
pub const FRAME_MAGIC: u32 = 0x5552_4244;
/// The frame-header version this implementation writes and reads. The header layout of
/// version 1 is frozen for [`PacketType::HELLO`], so a future version can still say so.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 16;

/// Largest block of data one packet carries (DRBD's `DRBD_MAX_BIO_SIZE`, 1 MiB).
pub const MAX_DATA: u32 = 1 << 20;
/// Largest digest (integrity, checksum-based resync, online verify): 128 bytes, the
/// per-block CRC32Cs of a 32-block (128 KiB) checksum or verify request.
pub const MAX_DIGEST: u32 = 128;
/// Largest payload of a packet that carries data ([`PacketType::carries_data`]): the data
/// plus its fixed fields (24 bytes), the digest length byte and the largest digest.
pub const MAX_DATA_PAYLOAD: u32 = MAX_DATA + 24 + 1 + MAX_DIGEST;
/// Largest payload of every other packet, unknown types included. Bitmap chunks fill it
/// (DRBD keeps bitmap packets within 4 KiB as well).
pub const MAX_CONTROL_PAYLOAD: u32 = 4096;
/// Largest payload of any frame.
pub const MAX_PAYLOAD: u32 = MAX_DATA_PAYLOAD;

/// Frame flags.
pub mod flags {
    /// A receiver that does not know this packet type may skip it instead of dropping the
    /// connection (DRBD's `P_MAY_IGNORE` range). Set on packets a newer peer sends only as
    /// hints.
    pub const MAY_IGNORE: u8 = 1 << 0;
    /// Every flag version 1 defines.
    pub const KNOWN: u8 = MAY_IGNORE;
}

pub(crate) use crate::code::wire_code;

wire_code! {
    /// A packet type. The numbers are DRBD 8.4's (`enum drbd_packet`) where DRBD has the
    /// packet; urbd's own packets use 0x0080 and up.
    PacketType(u16) {
        /// Replicated write (data socket).
        DATA = 0x00,
        /// Data read for a Diskless peer, answer to DATA_REQUEST (data socket).
        DATA_REPLY = 0x01,
        /// Resync data, answer to RS_DATA_REQUEST (data socket).
        RS_DATA_REPLY = 0x02,
        /// End of a write epoch (data socket).
        BARRIER = 0x03,
        /// Plain bitmap chunk (data socket).
        BITMAP = 0x04,
        /// Read request of a peer whose own disk cannot serve it (data socket).
        DATA_REQUEST = 0x08,
        /// Resync read request (data socket).
        RS_DATA_REQUEST = 0x09,
        /// Connection parameters: DRBD's P_PROTOCOL (data socket).
        REPORT_PARAMS = 0x0b,
        /// Generation UUIDs (data socket).
        UUIDS = 0x0c,
        /// Disk sizes (data socket).
        SIZES = 0x0d,
        /// Node state (data socket).
        STATE = 0x0e,
        /// The SyncSource's new bitmap UUID (data socket).
        SYNC_UUID = 0x0f,
        /// HMAC challenge (data socket).
        AUTH_CHALLENGE = 0x10,
        /// HMAC response (data socket).
        AUTH_RESPONSE = 0x11,
        /// Cluster-wide state change request (data socket).
        STATE_CHG_REQ = 0x12,
        /// Keep-alive (meta socket).
        PING = 0x13,
        /// Keep-alive answer (meta socket).
        PING_ACK = 0x14,
        /// Protocol B: the write was received (meta socket).
        RECV_ACK = 0x15,
        /// Protocol C: the write is on disk (meta socket).
        WRITE_ACK = 0x16,
        /// Resync write done: a WRITE_ACK that also marks the range in sync (meta socket).
        RS_WRITE_ACK = 0x17,
        /// The write failed on the peer's disk (meta socket).
        NEG_ACK = 0x19,
        /// The read for DATA_REQUEST failed (meta socket).
        NEG_DREPLY = 0x1a,
        /// The resync read failed on the SyncSource (meta socket).
        NEG_RS_DREPLY = 0x1b,
        /// Epoch written and flushed (meta socket).
        BARRIER_ACK = 0x1c,
        /// Answer to STATE_CHG_REQ (meta socket).
        STATE_CHG_REPLY = 0x1d,
        /// Online-verify request (data socket).
        OV_REQUEST = 0x1e,
        /// Online-verify digest (data socket).
        OV_REPLY = 0x1f,
        /// Online-verify verdict (meta socket).
        OV_RESULT = 0x20,
        /// Checksum-based resync request (data socket).
        CSUM_RS_REQUEST = 0x21,
        /// Checksums matched: no data needed (meta socket).
        RS_IS_IN_SYNC = 0x22,
        /// Run-length encoded bitmap chunk (data socket).
        COMPRESSED_BITMAP = 0x24,
        /// Mark a range out of sync (data socket; Ahead/Behind).
        OUT_OF_SYNC = 0x28,
        /// Orderly disconnect (data socket; DRBD uses a state change for this).
        DISCONNECT = 0x80,
        /// First packet on the meta socket (DRBD's P_INITIAL_META).
        INITIAL_META = 0xfff1,
        /// First packet on the data socket (DRBD's P_INITIAL_DATA).
        INITIAL_DATA = 0xfff2,
        /// Version and feature negotiation (DRBD's P_CONNECTION_FEATURES).
        HELLO = 0xfffe,
    }
}

impl PacketType {
    /// True for the types whose payload holds a block of data.
    pub fn carries_data(self) -> bool {
        matches!(
            self,
            PacketType::DATA | PacketType::RS_DATA_REPLY | PacketType::DATA_REPLY
        )
    }

    /// The largest payload a frame of this type may announce.
    pub fn max_payload(self) -> u32 {
        if self.carries_data() {
            MAX_DATA_PAYLOAD
        } else {
            MAX_CONTROL_PAYLOAD
        }
    }

    /// The socket the packet travels on.
    pub fn socket(self) -> Socket {
        match self {
            PacketType::PING
            | PacketType::PING_ACK
            | PacketType::RECV_ACK
            | PacketType::WRITE_ACK
            | PacketType::RS_WRITE_ACK
            | PacketType::NEG_ACK
            | PacketType::NEG_RS_DREPLY
            | PacketType::NEG_DREPLY
            | PacketType::BARRIER_ACK
            | PacketType::STATE_CHG_REPLY
            | PacketType::OV_RESULT
            | PacketType::RS_IS_IN_SYNC
            | PacketType::INITIAL_META => Socket::Meta,
            _ => Socket::Data,
        }
    }
}

/// The two TCP connections between peers, as in DRBD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Socket {
    /// Handshake, writes, resync data, bitmaps, state changes.
    Data,
    /// Acks and pings, so that a large write never delays them.
    Meta,
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Frame flags ([`flags`]).
    pub flags: u8,
    /// Packet type.
    pub ty: PacketType,
    /// Volume number within the resource (0 for connection-wide packets).
    pub volume: u16,
    /// Payload bytes after the header; never more than `ty.max_payload()`.
    pub len: u32,
}

impl FrameHeader {
    /// Decodes and checks a header: magic, version, known flags, reserved zero, and the
    /// length against the type's cap.
    pub fn read(r: &mut Reader<'_>) -> Result<FrameHeader, WireError> {
        let magic = r.u32("frame magic")?;
        if magic != FRAME_MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = r.u8("frame version")?;
        if version != FRAME_VERSION {
            return Err(WireError::UnknownVersion(version));
        }
        let flags = r.u8("frame flags")?;
        if flags & !flags::KNOWN != 0 {
            return Err(WireError::UnknownFlags(flags));
        }
        let ty = PacketType(r.u16("packet type")?);
        let volume = r.u16("volume")?;
        if r.u16("frame reserved")? != 0 {
            return Err(WireError::InvalidValue("frame reserved"));
        }
        let len = r.u32("payload length")?;
        let max = ty.max_payload();
        if len > max {
            return Err(WireError::TooLong {
                what: "payload",
                max,
            });
        }
        Ok(FrameHeader {
            flags,
            ty,
            volume,
            len,
        })
    }

    /// Decodes a header from exactly [`HEADER_LEN`] bytes.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, WireError> {
        Self::read(&mut Reader::new(bytes))
    }

    /// Appends the header.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, FRAME_MAGIC);
        out.push(FRAME_VERSION);
        out.push(self.flags);
        put_u16(out, self.ty.0);
        put_u16(out, self.volume);
        put_u16(out, 0);
        put_u32(out, self.len);
    }
}

/// A frame split off a receive buffer, its payload not yet decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The checked header.
    pub header: FrameHeader,
    /// Exactly `header.len` bytes.
    pub payload: &'a [u8],
}

impl RawFrame<'_> {
    /// Bytes of the whole frame, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Splits one frame off the front of a receive buffer. `Ok(None)`: the buffer does not hold
/// a whole frame yet (read more; once the header is complete it has already been checked,
/// so the caller can size its buffer from `len` safely). `Ok(Some(raw))`: one frame,
/// `raw.frame_len()` bytes long.
pub fn split_frame(buf: &[u8]) -> Result<Option<RawFrame<'_>>, WireError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = FrameHeader::decode(head)?;
    let end = HEADER_LEN + header.len as usize;
    Ok(buf
        .get(HEADER_LEN..end)
        .map(|payload| RawFrame { header, payload }))
}
