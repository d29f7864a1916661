//! Every packet, one enum: [`Packet`] maps packet types to bodies, [`Frame`] adds the header.

use super::bitmap::{Bitmap, CompressedBitmap};
use super::codec::{Codec, Reader, WireError};
use super::data::{Barrier, BarrierAck, BlockAck, BlockRequest, Data, DigestRequest, OutOfSync};
use super::frame::{FrameHeader, HEADER_LEN, PacketType, split_frame};
use super::handshake::{AuthChallenge, AuthResponse, Hello, ReportParams};
use super::params::{Sizes, State, StateChangeReply, StateChangeRequest, SyncUuid, Uuids};

/// A decoded packet. Bodies borrow from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// HELLO.
    Hello(Hello),
    /// INITIAL_DATA (empty): "this socket is the data socket".
    InitialData,
    /// INITIAL_META (empty): "this socket is the meta socket".
    InitialMeta,
    /// AUTH_CHALLENGE.
    AuthChallenge(AuthChallenge<'a>),
    /// AUTH_RESPONSE.
    AuthResponse(AuthResponse<'a>),
    /// REPORT_PARAMS.
    ReportParams(ReportParams<'a>),
    /// SIZES.
    Sizes(Sizes),
    /// UUIDS.
    Uuids(Uuids),
    /// STATE.
    State(State),
    /// SYNC_UUID.
    SyncUuid(SyncUuid),
    /// STATE_CHG_REQ.
    StateChangeRequest(StateChangeRequest),
    /// STATE_CHG_REPLY.
    StateChangeReply(StateChangeReply),
    /// DATA: a replicated write.
    Data(Data<'a>),
    /// RS_DATA_REPLY: resync data.
    RsDataReply(Data<'a>),
    /// DATA_REPLY: data read for a Diskless peer.
    DataReply(Data<'a>),
    /// DATA_REQUEST: a read of a peer whose disk cannot serve it.
    DataRequest(BlockRequest),
    /// NEG_DREPLY: the read for DATA_REQUEST failed.
    NegDReply(BlockAck),
    /// RECV_ACK (protocol B).
    RecvAck(BlockAck),
    /// WRITE_ACK (protocol C).
    WriteAck(BlockAck),
    /// RS_WRITE_ACK.
    RsWriteAck(BlockAck),
    /// NEG_ACK.
    NegAck(BlockAck),
    /// NEG_RS_DREPLY.
    NegRsDReply(BlockAck),
    /// RS_IS_IN_SYNC.
    RsIsInSync(BlockAck),
    /// OV_RESULT.
    OvResult(BlockAck),
    /// BARRIER.
    Barrier(Barrier),
    /// BARRIER_ACK.
    BarrierAck(BarrierAck),
    /// PING (empty).
    Ping,
    /// PING_ACK (empty).
    PingAck,
    /// RS_DATA_REQUEST.
    RsDataRequest(BlockRequest),
    /// OV_REQUEST.
    OvRequest(BlockRequest),
    /// CSUM_RS_REQUEST.
    CsumRsRequest(DigestRequest<'a>),
    /// OV_REPLY.
    OvReply(DigestRequest<'a>),
    /// BITMAP.
    Bitmap(Bitmap<'a>),
    /// COMPRESSED_BITMAP.
    CompressedBitmap(CompressedBitmap<'a>),
    /// OUT_OF_SYNC.
    OutOfSync(OutOfSync),
    /// DISCONNECT (empty).
    Disconnect,
    /// A type this implementation does not know, with its payload (within
    /// [`MAX_CONTROL_PAYLOAD`](super::MAX_CONTROL_PAYLOAD)). The connection decides: skip
    /// it if the frame has [`flags::MAY_IGNORE`](super::flags::MAY_IGNORE), else drop the
    /// connection. Encoding it with a known type produces that type's packet.
    Unknown {
        /// The type.
        ty: PacketType,
        /// The payload.
        payload: &'a [u8],
    },
}

impl<'a> Packet<'a> {
    /// The packet type on the wire.
    pub fn packet_type(&self) -> PacketType {
        use Packet::*;
        match self {
            Hello(_) => PacketType::HELLO,
            InitialData => PacketType::INITIAL_DATA,
            InitialMeta => PacketType::INITIAL_META,
            AuthChallenge(_) => PacketType::AUTH_CHALLENGE,
            AuthResponse(_) => PacketType::AUTH_RESPONSE,
            ReportParams(_) => PacketType::REPORT_PARAMS,
            Sizes(_) => PacketType::SIZES,
            Uuids(_) => PacketType::UUIDS,
            State(_) => PacketType::STATE,
            SyncUuid(_) => PacketType::SYNC_UUID,
            StateChangeRequest(_) => PacketType::STATE_CHG_REQ,
            StateChangeReply(_) => PacketType::STATE_CHG_REPLY,
            Data(_) => PacketType::DATA,
            RsDataReply(_) => PacketType::RS_DATA_REPLY,
            DataReply(_) => PacketType::DATA_REPLY,
            DataRequest(_) => PacketType::DATA_REQUEST,
            NegDReply(_) => PacketType::NEG_DREPLY,
            RecvAck(_) => PacketType::RECV_ACK,
            WriteAck(_) => PacketType::WRITE_ACK,
            RsWriteAck(_) => PacketType::RS_WRITE_ACK,
            NegAck(_) => PacketType::NEG_ACK,
            NegRsDReply(_) => PacketType::NEG_RS_DREPLY,
            RsIsInSync(_) => PacketType::RS_IS_IN_SYNC,
            OvResult(_) => PacketType::OV_RESULT,
            Barrier(_) => PacketType::BARRIER,
            BarrierAck(_) => PacketType::BARRIER_ACK,
            Ping => PacketType::PING,
            PingAck => PacketType::PING_ACK,
            RsDataRequest(_) => PacketType::RS_DATA_REQUEST,
            OvRequest(_) => PacketType::OV_REQUEST,
            CsumRsRequest(_) => PacketType::CSUM_RS_REQUEST,
            OvReply(_) => PacketType::OV_REPLY,
            Bitmap(_) => PacketType::BITMAP,
            CompressedBitmap(_) => PacketType::COMPRESSED_BITMAP,
            OutOfSync(_) => PacketType::OUT_OF_SYNC,
            Disconnect => PacketType::DISCONNECT,
            Unknown { ty, .. } => *ty,
        }
    }

    /// Appends the payload (no header).
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        use Packet::*;
        match self {
            Hello(p) => p.encode(out),
            AuthChallenge(p) => p.encode(out),
            AuthResponse(p) => p.encode(out),
            ReportParams(p) => p.encode(out),
            Sizes(p) => p.encode(out),
            Uuids(p) => p.encode(out),
            State(p) => p.encode(out),
            SyncUuid(p) => p.encode(out),
            StateChangeRequest(p) => p.encode(out),
            StateChangeReply(p) => p.encode(out),
            Data(p) | RsDataReply(p) | DataReply(p) => p.encode(out),
            RecvAck(p) | WriteAck(p) | RsWriteAck(p) | NegAck(p) | NegRsDReply(p)
            | NegDReply(p) | RsIsInSync(p) | OvResult(p) => p.encode(out),
            Barrier(p) => p.encode(out),
            BarrierAck(p) => p.encode(out),
            RsDataRequest(p) | OvRequest(p) | DataRequest(p) => p.encode(out),
            CsumRsRequest(p) | OvReply(p) => p.encode(out),
            Bitmap(p) => p.encode(out),
            CompressedBitmap(p) => p.encode(out),
            OutOfSync(p) => p.encode(out),
            InitialData | InitialMeta | Ping | PingAck | Disconnect => {}
            Unknown { payload, .. } => out.extend_from_slice(payload),
        }
    }

    /// Decodes the payload of a packet of type `ty`; the payload must be consumed exactly.
    pub fn decode(ty: PacketType, payload: &'a [u8]) -> Result<Packet<'a>, WireError> {
        fn exact<'a, T: Codec<'a>>(payload: &'a [u8], what: &'static str) -> Result<T, WireError> {
            T::read_exact(payload, what)
        }
        fn empty<'a>(
            payload: &[u8],
            p: Packet<'a>,
            what: &'static str,
        ) -> Result<Packet<'a>, WireError> {
            if payload.is_empty() {
                Ok(p)
            } else {
                Err(WireError::TrailingData(what))
            }
        }
        Ok(match ty {
            PacketType::HELLO => Packet::Hello(exact(payload, "hello")?),
            PacketType::INITIAL_DATA => return empty(payload, Packet::InitialData, "initial_data"),
            PacketType::INITIAL_META => return empty(payload, Packet::InitialMeta, "initial_meta"),
            PacketType::AUTH_CHALLENGE => Packet::AuthChallenge(exact(payload, "auth challenge")?),
            PacketType::AUTH_RESPONSE => Packet::AuthResponse(exact(payload, "auth response")?),
            PacketType::REPORT_PARAMS => Packet::ReportParams(exact(payload, "report_params")?),
            PacketType::SIZES => Packet::Sizes(exact(payload, "sizes")?),
            PacketType::UUIDS => Packet::Uuids(exact(payload, "uuids")?),
            PacketType::STATE => Packet::State(exact(payload, "state")?),
            PacketType::SYNC_UUID => Packet::SyncUuid(exact(payload, "sync_uuid")?),
            PacketType::STATE_CHG_REQ => {
                Packet::StateChangeRequest(exact(payload, "state change request")?)
            }
            PacketType::STATE_CHG_REPLY => {
                Packet::StateChangeReply(exact(payload, "state change reply")?)
            }
            PacketType::DATA => Packet::Data(exact(payload, "data")?),
            PacketType::RS_DATA_REPLY => Packet::RsDataReply(exact(payload, "rs_data_reply")?),
            PacketType::DATA_REPLY => Packet::DataReply(exact(payload, "data_reply")?),
            PacketType::DATA_REQUEST => Packet::DataRequest(exact(payload, "data_request")?),
            PacketType::NEG_DREPLY => Packet::NegDReply(exact(payload, "neg_dreply")?),
            PacketType::RECV_ACK => Packet::RecvAck(exact(payload, "recv_ack")?),
            PacketType::WRITE_ACK => Packet::WriteAck(exact(payload, "write_ack")?),
            PacketType::RS_WRITE_ACK => Packet::RsWriteAck(exact(payload, "rs_write_ack")?),
            PacketType::NEG_ACK => Packet::NegAck(exact(payload, "neg_ack")?),
            PacketType::NEG_RS_DREPLY => Packet::NegRsDReply(exact(payload, "neg_rs_dreply")?),
            PacketType::RS_IS_IN_SYNC => Packet::RsIsInSync(exact(payload, "rs_is_in_sync")?),
            PacketType::OV_RESULT => Packet::OvResult(exact(payload, "ov_result")?),
            PacketType::BARRIER => Packet::Barrier(exact(payload, "barrier")?),
            PacketType::BARRIER_ACK => Packet::BarrierAck(exact(payload, "barrier_ack")?),
            PacketType::PING => return empty(payload, Packet::Ping, "ping"),
            PacketType::PING_ACK => return empty(payload, Packet::PingAck, "ping_ack"),
            PacketType::RS_DATA_REQUEST => {
                Packet::RsDataRequest(exact(payload, "rs_data_request")?)
            }
            PacketType::OV_REQUEST => Packet::OvRequest(exact(payload, "ov_request")?),
            PacketType::CSUM_RS_REQUEST => {
                Packet::CsumRsRequest(exact(payload, "csum_rs_request")?)
            }
            PacketType::OV_REPLY => Packet::OvReply(exact(payload, "ov_reply")?),
            PacketType::BITMAP => Packet::Bitmap(exact(payload, "bitmap")?),
            PacketType::COMPRESSED_BITMAP => {
                Packet::CompressedBitmap(exact(payload, "compressed bitmap")?)
            }
            PacketType::OUT_OF_SYNC => Packet::OutOfSync(exact(payload, "out_of_sync")?),
            PacketType::DISCONNECT => return empty(payload, Packet::Disconnect, "disconnect"),
            ty => Packet::Unknown { ty, payload },
        })
    }
}

/// A packet with its frame header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Frame flags ([`flags`](super::flags)).
    pub flags: u8,
    /// Volume number (0 for connection-wide packets).
    pub volume: u16,
    /// The packet.
    pub packet: Packet<'a>,
}

impl<'a> Frame<'a> {
    /// A frame with no flags.
    pub fn new(volume: u16, packet: Packet<'a>) -> Frame<'a> {
        Frame {
            flags: 0,
            volume,
            packet,
        }
    }

    /// Appends header and payload, in one pass (the length is patched in after the payload
    /// is written).
    ///
    /// # Panics
    /// If the payload exceeds its type's cap or `flags` has bits version 1 does not define:
    /// the packet types' own encoders keep within their caps, so only an oversized
    /// [`Packet::Unknown`] can get here (a caller bug).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let ty = self.packet.packet_type();
        let start = out.len();
        FrameHeader {
            flags: self.flags,
            ty,
            volume: self.volume,
            len: 0,
        }
        .encode(out);
        self.packet.encode_payload(out);
        let len = out.len() - start - HEADER_LEN;
        assert!(
            len <= ty.max_payload() as usize,
            "{ty} payload of {len} bytes exceeds its cap"
        );
        assert!(
            self.flags & !super::flags::KNOWN == 0,
            "unknown frame flags"
        );
        out[start + 12..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    }

    /// Decodes one whole frame from the reader (which may hold more after it).
    pub fn read(r: &mut Reader<'a>) -> Result<Frame<'a>, WireError> {
        let header = FrameHeader::read(r)?;
        let payload = r.take(header.len as usize, "payload")?;
        Ok(Frame {
            flags: header.flags,
            volume: header.volume,
            packet: Packet::decode(header.ty, payload)?,
        })
    }

    /// Decodes the frame at the front of a receive buffer: `Ok(None)` if the buffer does
    /// not hold all of it yet, else the frame and the bytes it used.
    pub fn decode(buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, WireError> {
        let Some(raw) = split_frame(buf)? else {
            return Ok(None);
        };
        let frame = Frame {
            flags: raw.header.flags,
            volume: raw.header.volume,
            packet: Packet::decode(raw.header.ty, raw.payload)?,
        };
        Ok(Some((frame, raw.frame_len())))
    }
}
