//! Writes, acks, barriers and resync requests: [`Data`], [`BlockAck`], [`Barrier`],
//! [`BarrierAck`], [`BlockRequest`], [`DigestRequest`], [`OutOfSync`].

use super::codec::{Codec, Reader, WireError, put_u8_prefixed, put_u32, put_u64, read_u8_prefixed};
use super::frame::{MAX_DATA, MAX_DIGEST};

/// Bits of [`Data::dp_flags`], DRBD's `DP_*` values. Unknown bits are kept.
pub mod dp_flags {
    /// Synchronous request (`REQ_SYNC`).
    pub const RW_SYNC: u32 = 2;
    /// The receiver may mark the range in sync when it has written it.
    pub const MAY_SET_IN_SYNC: u32 = 4;
    /// Force unit access: durable before the ack.
    pub const FUA: u32 = 16;
    /// Flush the disk before this write (`REQ_PREFLUSH`).
    pub const FLUSH: u32 = 32;
    /// Discard the range (no payload).
    pub const DISCARD: u32 = 64;
    /// Protocol B: answer with RECV_ACK.
    pub const SEND_RECEIVE_ACK: u32 = 128;
    /// Protocol C: answer with WRITE_ACK.
    pub const SEND_WRITE_ACK: u32 = 256;
    /// Write zeroes to the range (no payload).
    pub const ZEROES: u32 = 1024;
}

/// A block of data: a replicated write (DATA) or a resync reply (RS_DATA_REPLY).
///
/// Layout: sector, block_id, seq, dp_flags, digest length (one byte), digest, data to the
/// end of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    /// First 512-byte sector written.
    pub sector: u64,
    /// The sender's request id, echoed in the ack.
    pub block_id: u64,
    /// Sequence number of the write, for conflict detection (DRBD's `seq_num`).
    pub seq: u32,
    /// [`dp_flags`].
    pub dp_flags: u32,
    /// `data-integrity-alg` digest of `payload` (empty when none is configured), at most
    /// [`MAX_DIGEST`] bytes.
    pub digest: &'a [u8],
    /// The data, at most [`MAX_DATA`] bytes.
    pub payload: &'a [u8],
}

impl<'a> Codec<'a> for Data<'a> {
    /// # Panics
    /// If the digest or payload exceeds its cap (a caller bug).
    fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.digest.len() <= MAX_DIGEST as usize, "digest too long");
        assert!(self.payload.len() <= MAX_DATA as usize, "data too long");
        put_u64(out, self.sector);
        put_u64(out, self.block_id);
        put_u32(out, self.seq);
        put_u32(out, self.dp_flags);
        put_u8_prefixed(out, self.digest);
        out.extend_from_slice(self.payload);
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let sector = r.u64("data sector")?;
        let block_id = r.u64("data block_id")?;
        let seq = r.u32("data seq")?;
        let dp_flags = r.u32("data dp_flags")?;
        let digest = read_u8_prefixed(r, MAX_DIGEST, "data digest")?;
        let payload = r.rest();
        if payload.len() > MAX_DATA as usize {
            return Err(WireError::TooLong {
                what: "data",
                max: MAX_DATA,
            });
        }
        Ok(Data {
            sector,
            block_id,
            seq,
            dp_flags,
            digest,
            payload,
        })
    }
}

/// An answer about one block (DRBD's `p_block_ack`): RECV_ACK, WRITE_ACK, RS_WRITE_ACK,
/// NEG_ACK, NEG_RS_DREPLY, RS_IS_IN_SYNC and OV_RESULT share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockAck {
    /// First sector.
    pub sector: u64,
    /// The requester's id, echoed. In OV_RESULT: [`BlockAck::IN_SYNC`] or
    /// [`BlockAck::OUT_OF_SYNC`].
    pub block_id: u64,
    /// Bytes.
    pub size: u32,
    /// The acked write's sequence number.
    pub seq: u32,
}

impl BlockAck {
    /// OV_RESULT: the block matched (DRBD's `ID_IN_SYNC`).
    pub const IN_SYNC: u64 = 4711;
    /// OV_RESULT: the block differs (DRBD's `ID_OUT_OF_SYNC`).
    pub const OUT_OF_SYNC: u64 = 4712;
}

impl Codec<'_> for BlockAck {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.sector);
        put_u64(out, self.block_id);
        put_u32(out, self.size);
        put_u32(out, self.seq);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(BlockAck {
            sector: r.u64("ack sector")?,
            block_id: r.u64("ack block_id")?,
            size: r.u32("ack size")?,
            seq: r.u32("ack seq")?,
        })
    }
}

/// A request for one block (DRBD's `p_block_req`): RS_DATA_REQUEST, OV_REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRequest {
    /// First sector.
    pub sector: u64,
    /// The requester's id, echoed in the reply.
    pub block_id: u64,
    /// Bytes, at most [`MAX_DATA`] (checked: the answer must fit a data packet).
    pub size: u32,
}

fn read_request_size(r: &mut Reader<'_>) -> Result<u32, WireError> {
    let size = r.u32("request size")?;
    if size > MAX_DATA {
        return Err(WireError::TooLong {
            what: "requested block",
            max: MAX_DATA,
        });
    }
    Ok(size)
}

impl Codec<'_> for BlockRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.sector);
        put_u64(out, self.block_id);
        put_u32(out, self.size);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(BlockRequest {
            sector: r.u64("request sector")?,
            block_id: r.u64("request block_id")?,
            size: read_request_size(r)?,
        })
    }
}

/// A block request with the digest of the requester's copy: CSUM_RS_REQUEST (send the
/// data only if it differs) and OV_REPLY (the verify target's digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestRequest<'a> {
    /// First sector.
    pub sector: u64,
    /// The requester's id.
    pub block_id: u64,
    /// Bytes, at most [`MAX_DATA`].
    pub size: u32,
    /// Digest (`csums-alg` or `verify-alg`), 1 to [`MAX_DIGEST`] bytes.
    pub digest: &'a [u8],
}

impl<'a> Codec<'a> for DigestRequest<'a> {
    /// # Panics
    /// If the digest is empty or longer than [`MAX_DIGEST`] (a caller bug).
    fn encode(&self, out: &mut Vec<u8>) {
        assert!(!self.digest.is_empty() && self.digest.len() <= MAX_DIGEST as usize);
        put_u64(out, self.sector);
        put_u64(out, self.block_id);
        put_u32(out, self.size);
        put_u8_prefixed(out, self.digest);
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let sector = r.u64("request sector")?;
        let block_id = r.u64("request block_id")?;
        let size = read_request_size(r)?;
        let digest = read_u8_prefixed(r, MAX_DIGEST, "request digest")?;
        if digest.is_empty() {
            return Err(WireError::InvalidValue("empty request digest"));
        }
        Ok(DigestRequest {
            sector,
            block_id,
            size,
            digest,
        })
    }
}

/// The end of a write epoch (DRBD's P_BARRIER): the receiver answers with BARRIER_ACK once
/// every write of the epoch is on its disk and the disk is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// Epoch number, echoed in the ack.
    pub epoch: u32,
}

impl Codec<'_> for Barrier {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.epoch);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Barrier {
            epoch: r.u32("barrier epoch")?,
        })
    }
}

/// The answer to [`Barrier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierAck {
    /// The epoch.
    pub epoch: u32,
    /// Writes the receiver counted in it (the sender checks it against its own count).
    pub set_size: u32,
}

impl Codec<'_> for BarrierAck {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.epoch);
        put_u32(out, self.set_size);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(BarrierAck {
            epoch: r.u32("barrier_ack epoch")?,
            set_size: r.u32("barrier_ack set_size")?,
        })
    }
}

/// A range the receiver must mark out of sync (DRBD's P_OUT_OF_SYNC, `p_block_desc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfSync {
    /// First sector.
    pub sector: u64,
    /// Bytes.
    pub size: u32,
}

impl Codec<'_> for OutOfSync {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.sector);
        put_u32(out, self.size);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(OutOfSync {
            sector: r.u64("out_of_sync sector")?,
            size: r.u32("out_of_sync size")?,
        })
    }
}
