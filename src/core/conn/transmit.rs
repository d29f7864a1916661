//! Packets the connection sends, owned ([`Transmit`]), and their wire [`Frame`]s.

use crate::wire::{
    AfterSbCode, AuthChallenge, AuthResponse, Frame, Hello, Packet, ReportParams, Sizes, Socket,
    State, Uuids, WireProtocol,
};

/// An owned [`ReportParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedReportParams {
    /// See [`ReportParams::protocol`].
    pub protocol: WireProtocol,
    /// See [`ReportParams::after_sb_0p`].
    pub after_sb_0p: AfterSbCode,
    /// See [`ReportParams::after_sb_1p`].
    pub after_sb_1p: AfterSbCode,
    /// See [`ReportParams::after_sb_2p`].
    pub after_sb_2p: AfterSbCode,
    /// See [`ReportParams::flags`].
    pub flags: u32,
    /// See [`ReportParams::two_primaries`].
    pub two_primaries: bool,
    /// See [`ReportParams::integrity_alg`].
    pub integrity_alg: String,
    /// See [`ReportParams::csums_alg`].
    pub csums_alg: String,
    /// See [`ReportParams::verify_alg`].
    pub verify_alg: String,
}

/// A packet to send, owned so that the connection keeps no borrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// HELLO.
    Hello(Hello),
    /// AUTH_CHALLENGE.
    AuthChallenge(Vec<u8>),
    /// AUTH_RESPONSE.
    AuthResponse(Vec<u8>),
    /// REPORT_PARAMS.
    ReportParams(OwnedReportParams),
    /// SIZES (volume 0).
    Sizes(Sizes),
    /// UUIDS (volume 0).
    Uuids(Uuids),
    /// STATE (volume 0).
    State(State),
    /// PING.
    Ping,
    /// PING_ACK.
    PingAck,
    /// DISCONNECT.
    Disconnect,
}

impl Transmit {
    /// The frame to encode (volume 0 for the per-volume packets).
    pub fn frame(&self) -> Frame<'_> {
        let packet = match self {
            Transmit::Hello(h) => Packet::Hello(*h),
            Transmit::AuthChallenge(c) => Packet::AuthChallenge(AuthChallenge { challenge: c }),
            Transmit::AuthResponse(r) => Packet::AuthResponse(AuthResponse { response: r }),
            Transmit::ReportParams(p) => Packet::ReportParams(ReportParams {
                protocol: p.protocol,
                after_sb_0p: p.after_sb_0p,
                after_sb_1p: p.after_sb_1p,
                after_sb_2p: p.after_sb_2p,
                flags: p.flags,
                two_primaries: p.two_primaries,
                integrity_alg: &p.integrity_alg,
                csums_alg: &p.csums_alg,
                verify_alg: &p.verify_alg,
            }),
            Transmit::Sizes(s) => Packet::Sizes(*s),
            Transmit::Uuids(u) => Packet::Uuids(*u),
            Transmit::State(s) => Packet::State(*s),
            Transmit::Ping => Packet::Ping,
            Transmit::PingAck => Packet::PingAck,
            Transmit::Disconnect => Packet::Disconnect,
        };
        Frame::new(0, packet)
    }

    /// Which socket it goes on (PING/PING_ACK on the meta socket).
    pub fn socket(&self) -> Socket {
        self.frame().packet.packet_type().socket()
    }

    /// Header and payload, appended to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.frame().encode(out);
    }
}
