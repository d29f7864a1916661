//! The peer protocol: how two urbd nodes talk over their data and meta sockets.
//!
//! This module is a codec and nothing more: it turns bytes into typed packets and back. It
//! opens no sockets, keeps no connection state and reads no clock; the connection state
//! machine (in `core`, next) decides what to send and what a packet means. The format is
//! urbd's own, documented byte by byte in `docs/PROTOCOL.md`, but its packet set and
//! semantics are DRBD 8.4's (`drbd/drbd_protocol.h`), and packet types keep DRBD's numbers.
//!
//! - [`codec`]: [`Reader`], [`WireError`], the [`Codec`] trait.
//! - [`frame`](self::frame): the 16-byte header, [`PacketType`], the caps, [`split_frame`].
//! - `handshake`: [`Hello`] and [`negotiate`], [`AuthChallenge`]/[`AuthResponse`],
//!   [`ReportParams`].
//! - `params`: [`Sizes`], [`Uuids`], [`State`], [`SyncUuid`], state changes.
//! - `data`: [`Data`], [`BlockAck`], [`Barrier`]/[`BarrierAck`], resync and verify requests,
//!   [`OutOfSync`].
//! - `bitmap`: [`Bitmap`], [`CompressedBitmap`] and its VLI runs.
//! - `packet`: [`Packet`] (every type) and [`Frame`] (a packet with its header).
//!
//! Decoders never panic and never allocate: packets borrow from the input, and every length
//! the peer announces is checked against a named cap before it is used. Encoders are
//! infallible; they panic only when the caller breaks a cap (documented per type).

pub mod codec;
pub mod frame;

mod bitmap;
mod data;
mod handshake;
mod packet;
mod params;

#[cfg(test)]
mod tests;

pub use bitmap::{
    Bitmap, CompressedBitmap, MAX_BITMAP_CODE, MAX_BITMAP_WORDS_BYTES, MAX_VLI_BYTES, Run, Runs,
    put_run,
};
pub use codec::{Codec, Reader, WireError};
pub use data::{
    Barrier, BarrierAck, BlockAck, BlockRequest, Data, DigestRequest, OutOfSync, dp_flags,
};
pub use frame::{
    FRAME_MAGIC, FRAME_VERSION, FrameHeader, HEADER_LEN, MAX_CONTROL_PAYLOAD, MAX_DATA,
    MAX_DATA_PAYLOAD, MAX_DIGEST, MAX_PAYLOAD, PacketType, RawFrame, Socket, flags, split_frame,
};
pub use handshake::{
    AfterSbCode, Agreed, AuthChallenge, AuthResponse, HELLO_LEN, Hello, Incompatible, MAX_ALG_NAME,
    MAX_AUTH_RESPONSE, MAX_CHALLENGE, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, ReportParams,
    WireProtocol, conn_flags, features, negotiate,
};
pub use packet::{Frame, Packet};
pub use params::{
    Sizes, State, StateChangeReply, StateChangeRequest, SyncUuid, Uuids, sizes_flags, state_flags,
};
