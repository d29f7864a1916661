//! Cross-cutting codec tests: every packet round-trips through a frame, every prefix of a
//! frame is an error (never a panic, never a different frame), caps are enforced before any
//! payload byte is needed, and the header's bytes are exactly what docs/PROTOCOL.md says.

use proptest::prelude::*;

use super::*;

/// Fixed-width parts every generated packet draws from.
#[derive(Debug, Clone)]
struct Parts {
    n: [u64; 6],
    w: [u32; 4],
    b: bool,
    blob: Vec<u8>,
    small: Vec<u8>,
    name: String,
    runs: Vec<u64>,
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        any::<[u64; 6]>(),
        any::<[u32; 4]>(),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..2048),
        proptest::collection::vec(any::<u8>(), 1..=64),
        "[!-~]{0,63}",
        proptest::collection::vec(1u64.., 1..64),
    )
        .prop_map(|(n, w, b, blob, small, name, runs)| Parts {
            n,
            w,
            b,
            blob,
            small,
            name,
            runs,
        })
}

/// Number of packet shapes [`build`] knows (every known type, plus an unknown one).
const KINDS: u8 = 37;

/// Packet number `kind` built from `p`; `code` holds the VLI runs for COMPRESSED_BITMAP.
fn build<'a>(kind: u8, p: &'a Parts, code: &'a [u8]) -> Packet<'a> {
    let [n0, n1, n2, n3, n4, n5] = p.n;
    let [w0, w1, w2, w3] = p.w;
    let size = w0 % (MAX_DATA + 1);
    let ack = BlockAck {
        sector: n0,
        block_id: n1,
        size: w0,
        seq: w1,
    };
    let req = BlockRequest {
        sector: n0,
        block_id: n1,
        size,
    };
    let dreq = DigestRequest {
        sector: n0,
        block_id: n1,
        size,
        digest: &p.small,
    };
    let data = Data {
        sector: n0,
        block_id: n1,
        seq: w0,
        dp_flags: w1,
        digest: if p.b { &p.small } else { &[] },
        payload: &p.blob,
    };
    let state = State {
        role: n0 as u8,
        peer: (n0 >> 8) as u8,
        conn: (n0 >> 16) as u8,
        disk: (n0 >> 24) as u8,
        pdsk: (n0 >> 32) as u8,
        flags: (n0 >> 40) as u8,
    };
    let state2 = State {
        role: n1 as u8,
        flags: (n1 >> 8) as u8,
        ..State::default()
    };
    match kind {
        0 => Packet::Hello(Hello {
            min_version: w0.max(1).min(w1.max(1)),
            max_version: w0.max(1).max(w1.max(1)),
            features: n0,
        }),
        1 => Packet::InitialData,
        2 => Packet::InitialMeta,
        3 => Packet::AuthChallenge(AuthChallenge {
            challenge: &p.small,
        }),
        4 => Packet::AuthResponse(AuthResponse { response: &p.small }),
        5 => Packet::ReportParams(ReportParams {
            protocol: WireProtocol(w0 % 4),
            after_sb_0p: AfterSbCode(w1 % 12),
            after_sb_1p: AfterSbCode(w2),
            after_sb_2p: AfterSbCode(w3),
            flags: n0 as u32,
            two_primaries: p.b,
            integrity_alg: &p.name,
            csums_alg: "",
            verify_alg: &p.name,
        }),
        6 => Packet::Sizes(Sizes {
            backing: n0,
            user: n1,
            current: n2,
            max_bio_size: w0,
            flags: w1,
        }),
        7 => Packet::Uuids(Uuids {
            current: n0,
            bitmap: n1,
            history: [n2, n3],
            bitmap_bits: n4,
            flags: n5,
        }),
        8 => Packet::State(state),
        9 => Packet::SyncUuid(SyncUuid { uuid: n0 }),
        10 => Packet::StateChangeRequest(StateChangeRequest {
            mask: state,
            val: state2,
        }),
        11 => Packet::StateChangeReply(StateChangeReply { retcode: w0 as i32 }),
        12 => Packet::Data(data),
        13 => Packet::RsDataReply(data),
        14 => Packet::RecvAck(ack),
        15 => Packet::WriteAck(ack),
        16 => Packet::RsWriteAck(ack),
        17 => Packet::NegAck(ack),
        18 => Packet::NegRsDReply(ack),
        19 => Packet::RsIsInSync(ack),
        20 => Packet::OvResult(ack),
        21 => Packet::Barrier(Barrier { epoch: w0 }),
        22 => Packet::BarrierAck(BarrierAck {
            epoch: w0,
            set_size: w1,
        }),
        23 => Packet::Ping,
        24 => Packet::PingAck,
        25 => Packet::RsDataRequest(req),
        26 => Packet::OvRequest(req),
        27 => Packet::CsumRsRequest(dreq),
        28 => Packet::OvReply(dreq),
        29 => Packet::Bitmap(Bitmap {
            start_word: n0,
            words: &p.blob[..p.blob.len() / 8 * 8],
        }),
        30 => Packet::CompressedBitmap(CompressedBitmap {
            start_bit: n0,
            first_set: p.b,
            code,
        }),
        31 => Packet::OutOfSync(OutOfSync {
            sector: n0,
            size: w0,
        }),
        32 => Packet::Disconnect,
        33 => Packet::DataReply(data),
        34 => Packet::DataRequest(req),
        35 => Packet::NegDReply(ack),
        _ => Packet::Unknown {
            // 0x0100 and up are unused by DRBD 8.4 and by urbd.
            ty: PacketType(0x0100 | (w0 as u16 & 0x0fff)),
            payload: &p.blob,
        },
    }
}

fn runs_code(p: &Parts) -> Vec<u8> {
    let mut code = Vec::new();
    for &len in &p.runs {
        put_run(&mut code, len);
    }
    code
}

fn frame_bytes(frame: &Frame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    frame.encode(&mut out);
    out
}

/// Types whose payload has one fixed length: any shorter payload must fail to decode.
fn fixed_len(ty: PacketType) -> bool {
    !matches!(
        ty,
        PacketType::DATA
            | PacketType::RS_DATA_REPLY
            | PacketType::DATA_REPLY
            | PacketType::BITMAP
            | PacketType::COMPRESSED_BITMAP
            | PacketType::AUTH_CHALLENGE
            | PacketType::AUTH_RESPONSE
            | PacketType::HELLO
    ) && PacketType::ALL.contains(&ty)
}

#[test]
fn build_covers_every_known_type() {
    let p = Parts {
        n: [1; 6],
        w: [1; 4],
        b: true,
        blob: vec![0; 16],
        small: vec![1],
        name: String::new(),
        runs: vec![1],
    };
    let code = runs_code(&p);
    let mut seen: Vec<PacketType> = (0..KINDS)
        .map(|k| build(k, &p, &code).packet_type())
        .filter(|t| t.name().is_some())
        .collect();
    seen.sort();
    let mut all = PacketType::ALL.to_vec();
    all.sort();
    assert_eq!(seen, all);
}

proptest! {
    /// Every packet survives encode -> decode, through both decoders, and re-encodes to
    /// the same bytes.
    #[test]
    fn every_packet_round_trips(kind in 0..KINDS, p in parts(), volume in any::<u16>(), ignore in any::<bool>()) {
        let code = runs_code(&p);
        let frame = Frame {
            flags: if ignore { flags::MAY_IGNORE } else { 0 },
            volume,
            packet: build(kind, &p, &code),
        };
        let bytes = frame_bytes(&frame);
        prop_assert_eq!(Frame::decode(&bytes), Ok(Some((frame, bytes.len()))));
        let mut r = Reader::new(&bytes);
        prop_assert_eq!(Frame::read(&mut r), Ok(frame));
        prop_assert_eq!(r.left(), 0);
        prop_assert_eq!(frame_bytes(&Frame::decode(&bytes).unwrap().unwrap().0), bytes);
    }

    /// Every proper prefix of a frame is "need more bytes" to the streaming decoder and an
    /// error to the whole-buffer decoder; a fixed-size body cut anywhere is an error.
    #[test]
    fn truncation_at_every_offset_is_an_error(kind in 0..KINDS, p in parts()) {
        let code = runs_code(&p);
        let packet = build(kind, &p, &code);
        let bytes = frame_bytes(&Frame::new(0, packet));
        for cut in 0..bytes.len() {
            prop_assert_eq!(Frame::decode(&bytes[..cut]), Ok(None), "cut at {}", cut);
            prop_assert!(Frame::read(&mut Reader::new(&bytes[..cut])).is_err());
        }
        let ty = packet.packet_type();
        if fixed_len(ty) {
            let payload = &bytes[HEADER_LEN..];
            for cut in 0..payload.len() {
                prop_assert!(Packet::decode(ty, &payload[..cut]).is_err(), "{} cut at {}", ty, cut);
            }
            let mut longer = payload.to_vec();
            longer.push(0);
            prop_assert!(matches!(Packet::decode(ty, &longer), Err(WireError::TrailingData(_))));
        }
    }

    /// Arbitrary bytes, as one buffer or a stream of frames: an error or a value, no panic.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), ty in any::<u16>()) {
        let _ = Packet::decode(PacketType(ty), &bytes);
        let mut framed = Vec::new();
        FrameHeader { flags: 0, ty: PacketType(ty), volume: 0, len: bytes.len() as u32 }.encode(&mut framed);
        framed.extend_from_slice(&bytes);
        let _ = Frame::decode(&framed);
        crate::fuzzing::wire(&bytes);
        crate::fuzzing::wire(&framed);
    }
}

fn header(ty: PacketType, len: u32) -> [u8; HEADER_LEN] {
    let mut out = Vec::new();
    FrameHeader {
        flags: 0,
        ty,
        volume: 0,
        len,
    }
    .encode(&mut out);
    out.try_into().unwrap()
}

/// A header announcing more than its type's cap fails on the header alone: the receiver
/// never waits for, or allocates, the announced bytes.
#[test]
fn oversize_is_rejected_before_the_payload() {
    let cases = [
        (PacketType::DATA, MAX_DATA_PAYLOAD + 1, MAX_DATA_PAYLOAD),
        (PacketType::RS_DATA_REPLY, u32::MAX, MAX_DATA_PAYLOAD),
        (
            PacketType::PING,
            MAX_CONTROL_PAYLOAD + 1,
            MAX_CONTROL_PAYLOAD,
        ),
        (PacketType::BITMAP, u32::MAX, MAX_CONTROL_PAYLOAD),
        (
            PacketType(0x4242),
            MAX_CONTROL_PAYLOAD + 1,
            MAX_CONTROL_PAYLOAD,
        ),
    ];
    for (ty, len, max) in cases {
        let h = header(ty, len);
        let err = WireError::TooLong {
            what: "payload",
            max,
        };
        assert_eq!(FrameHeader::decode(&h), Err(err), "{ty}");
        assert_eq!(split_frame(&h).map(|_| ()), Err(err), "{ty}");
        assert_eq!(Frame::decode(&h).map(|_| ()), Err(err), "{ty}");
    }
    // At the cap the header is fine and the decoder waits for the bytes.
    assert_eq!(
        Frame::decode(&header(PacketType::DATA, MAX_DATA_PAYLOAD)),
        Ok(None)
    );
    assert_eq!(MAX_PAYLOAD, MAX_DATA_PAYLOAD);
}

/// The largest write goes through; one byte more of data is refused even though the frame
/// itself is within its cap.
#[test]
fn data_is_capped_at_one_mib() {
    let payload = vec![0x5a; MAX_DATA as usize];
    let digest = [7u8; MAX_DIGEST as usize];
    let data = Data {
        sector: 8,
        block_id: 9,
        seq: 1,
        dp_flags: dp_flags::FUA | dp_flags::SEND_WRITE_ACK,
        digest: &digest,
        payload: &payload,
    };
    let bytes = frame_bytes(&Frame::new(0, Packet::Data(data)));
    assert_eq!(bytes.len(), HEADER_LEN + MAX_DATA_PAYLOAD as usize);
    assert_eq!(
        Frame::decode(&bytes),
        Ok(Some((Frame::new(0, Packet::Data(data)), bytes.len())))
    );
    let mut body = Vec::new();
    Data {
        digest: &[],
        payload: &[],
        ..data
    }
    .encode(&mut body);
    body.resize(body.len() + MAX_DATA as usize + 1, 0);
    assert_eq!(
        Packet::decode(PacketType::DATA, &body),
        Err(WireError::TooLong {
            what: "data",
            max: MAX_DATA
        })
    );
    // A digest length byte above the cap is refused before the digest is looked at.
    let mut body = Vec::new();
    Data {
        digest: &[],
        payload: &[],
        ..data
    }
    .encode(&mut body);
    body[24] = MAX_DIGEST as u8 + 1;
    assert_eq!(
        Packet::decode(PacketType::DATA, &body),
        Err(WireError::TooLong {
            what: "data digest",
            max: MAX_DIGEST
        })
    );
    // Resync requests cannot ask for more than a data packet carries.
    let mut req = Vec::new();
    BlockRequest {
        sector: 0,
        block_id: 0,
        size: MAX_DATA,
    }
    .encode(&mut req);
    req[16..20].copy_from_slice(&(MAX_DATA + 1).to_be_bytes());
    assert_eq!(
        Packet::decode(PacketType::RS_DATA_REQUEST, &req),
        Err(WireError::TooLong {
            what: "requested block",
            max: MAX_DATA
        })
    );
}

/// Control packets other than bitmaps fit easily in the control cap; bitmap chunks fill it.
#[test]
fn caps_of_variable_packets() {
    let words = vec![0xffu8; MAX_BITMAP_WORDS_BYTES as usize];
    let bm = Bitmap {
        start_word: 0,
        words: &words,
    };
    let bytes = frame_bytes(&Frame::new(0, Packet::Bitmap(bm)));
    assert_eq!(bytes.len(), HEADER_LEN + MAX_CONTROL_PAYLOAD as usize);
    assert_eq!(bm.words().count(), 511);
    let odd = [0u8; 12];
    assert_eq!(
        Packet::decode(PacketType::BITMAP, &odd),
        Err(WireError::InvalidValue("bitmap words (not whole words)"))
    );
    let challenge = [1u8; MAX_CHALLENGE as usize + 1];
    assert_eq!(
        Packet::decode(PacketType::AUTH_CHALLENGE, &challenge),
        Err(WireError::TooLong {
            what: "auth challenge",
            max: MAX_CHALLENGE
        })
    );
    assert_eq!(
        Packet::decode(PacketType::AUTH_RESPONSE, &[]),
        Err(WireError::InvalidValue("empty auth response"))
    );
}

/// Unknown types are data: decoded with their payload, re-encoded identically, and the
/// MAY_IGNORE flag travels with them.
#[test]
fn unknown_types_are_kept() {
    let frame = Frame {
        flags: flags::MAY_IGNORE,
        volume: 3,
        packet: Packet::Unknown {
            ty: PacketType(0x0123),
            payload: b"hint",
        },
    };
    let bytes = frame_bytes(&frame);
    assert_eq!(Frame::decode(&bytes), Ok(Some((frame, bytes.len()))));
    assert_eq!(format!("{}", PacketType(0x123)), "PacketType(0x123)");
    assert_eq!(format!("{}", PacketType::WRITE_ACK), "WRITE_ACK");
}

#[test]
fn header_errors() {
    let good = header(PacketType::PING, 0);
    assert_eq!(
        Frame::decode(&good),
        Ok(Some((Frame::new(0, Packet::Ping), 16)))
    );
    let mut h = good;
    h[0] = b'X';
    assert_eq!(
        FrameHeader::decode(&h),
        Err(WireError::BadMagic(0x5852_4244))
    );
    let mut h = good;
    h[4] = 2;
    assert_eq!(FrameHeader::decode(&h), Err(WireError::UnknownVersion(2)));
    let mut h = good;
    h[5] = 0x80;
    assert_eq!(FrameHeader::decode(&h), Err(WireError::UnknownFlags(0x80)));
    let mut h = good;
    h[11] = 1;
    assert_eq!(
        FrameHeader::decode(&h),
        Err(WireError::InvalidValue("frame reserved"))
    );
    // An empty packet with a payload.
    let mut bytes = header(PacketType::PING, 1).to_vec();
    bytes.push(0);
    assert_eq!(Frame::decode(&bytes), Err(WireError::TrailingData("ping")));
}

/// The bytes docs/PROTOCOL.md shows.
#[test]
fn golden_bytes() {
    let bytes = frame_bytes(&Frame::new(
        1,
        Packet::BarrierAck(BarrierAck {
            epoch: 0x0102_0304,
            set_size: 5,
        }),
    ));
    assert_eq!(
        bytes,
        [
            0x55, 0x52, 0x42, 0x44, // "URBD"
            0x01, 0x00, // version 1, no flags
            0x00, 0x1c, // BARRIER_ACK
            0x00, 0x01, // volume 1
            0x00, 0x00, // reserved
            0x00, 0x00, 0x00, 0x08, // payload length
            0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x05,
        ]
    );
    let hello = frame_bytes(&Frame::new(0, Packet::Hello(Hello::OURS)));
    assert_eq!(
        hello,
        [
            0x55, 0x52, 0x42, 0x44, 0x01, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x10, // header: HELLO, 16 bytes
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, // versions 1-1
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x04, // WSAME | COMPRESSED | CSUM
        ]
    );
}

#[test]
fn sockets() {
    assert_eq!(PacketType::DATA.socket(), Socket::Data);
    assert_eq!(PacketType::WRITE_ACK.socket(), Socket::Meta);
    assert_eq!(PacketType::BARRIER.socket(), Socket::Data);
    assert_eq!(PacketType::BARRIER_ACK.socket(), Socket::Meta);
    assert_eq!(PacketType::INITIAL_META.socket(), Socket::Meta);
    assert_eq!(PacketType::HELLO.socket(), Socket::Data);
}
