use super::*;
use proptest::prelude::*;

fn export() -> ExportDesc {
    ExportDesc {
        name: "r0".into(),
        description: "test".into(),
        size: 1 << 20,
        flags: tx_flags::SEND_FLUSH | tx_flags::SEND_FUA,
        min_block: 1,
        preferred_block: 4096,
        max_payload: 32 << 20,
    }
}

fn opt(o: OptionType, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&o.0.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn info_data(name: &str, reqs: &[InfoType]) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
    for r in reqs {
        v.extend_from_slice(&r.0.to_be_bytes());
    }
    v
}

/// Parses option replies: (option, type, data).
fn replies(mut out: &[u8]) -> Vec<(OptionType, ReplyType, Vec<u8>)> {
    let mut v = Vec::new();
    while !out.is_empty() {
        let mut r = Reader::new(out);
        assert_eq!(r.u64("m").unwrap(), OPT_REPLY_MAGIC);
        let o = OptionType(r.u32("o").unwrap());
        let t = ReplyType(r.u32("t").unwrap());
        let len = r.u32("l").unwrap() as usize;
        let d = r.take(len, "d").unwrap().to_vec();
        v.push((o, t, d));
        out = &out[20 + len..];
    }
    v
}

fn started() -> Handshake {
    let mut h = Handshake::new(export());
    let greet = h.take_output();
    assert_eq!(&greet[..8], &NBDMAGIC.to_be_bytes());
    assert_eq!(&greet[8..16], &IHAVEOPT.to_be_bytes());
    assert_eq!(greet.len(), 18);
    assert_eq!(h.handle_input(&3u32.to_be_bytes()), 4);
    h
}

#[test]
fn go_with_block_size_and_structured_replies() {
    let mut h = started();
    let mut input = opt(OptionType::STRUCTURED_REPLY, &[]);
    input.extend(opt(
        OptionType::GO,
        &info_data("r0", &[InfoType::BLOCK_SIZE, InfoType::NAME]),
    ));
    input.extend_from_slice(b"trailing request bytes");
    let used = h.handle_input(&input);
    assert_eq!(used, input.len() - 22, "stops at the end of GO");
    let r = replies(&h.take_output());
    assert_eq!(r[0].1, ReplyType::ACK);
    assert_eq!(r[1].1, ReplyType::INFO);
    assert_eq!(&r[1].2[..2], &[0, 0]);
    assert_eq!(&r[1].2[2..10], &(1u64 << 20).to_be_bytes());
    let flags = u16::from_be_bytes([r[1].2[10], r[1].2[11]]);
    assert_ne!(flags & tx_flags::SEND_DF, 0);
    assert_eq!(r[2].2, [&[0u8, 1][..], b"r0"].concat());
    assert_eq!(
        r[3].2,
        [
            &[0u8, 3][..],
            &1u32.to_be_bytes(),
            &4096u32.to_be_bytes(),
            &(32u32 << 20).to_be_bytes()
        ]
        .concat()
    );
    assert_eq!(r[4].1, ReplyType::ACK);
    assert_eq!(
        h.outcome(),
        &Outcome::Transmission(Negotiated {
            structured_replies: true,
            flags
        })
    );
}

#[test]
fn byte_at_a_time_is_the_same() {
    let mut h = started();
    let input = opt(OptionType::GO, &info_data("", &[]));
    let mut pending = Vec::new();
    for b in input {
        pending.push(b);
        let n = h.handle_input(&pending);
        pending.drain(..n);
    }
    assert!(pending.is_empty());
    assert!(matches!(h.outcome(), Outcome::Transmission(_)));
}

#[test]
fn unknown_and_malformed_options_are_answered_and_negotiation_continues() {
    let mut h = started();
    let mut input = opt(OptionType(0x77), b"whatever");
    input.extend(opt(OptionType::GO, &[0, 0, 0, 9, b'x'])); // name longer than data
    input.extend(opt(OptionType::INFO, &info_data("nope", &[])));
    input.extend(opt(OptionType::LIST, b"x"));
    input.extend(opt(OptionType::SET_META_CONTEXT, b""));
    input.extend(opt(OptionType::LIST, b""));
    assert_eq!(h.handle_input(&input), input.len());
    let r = replies(&h.take_output());
    let types: Vec<_> = r.iter().map(|x| x.1).collect();
    assert_eq!(
        types,
        [
            ReplyType::ERR_UNSUP,
            ReplyType::ERR_INVALID,
            ReplyType::ERR_UNKNOWN,
            ReplyType::ERR_INVALID,
            ReplyType::ERR_UNSUP,
            ReplyType::SERVER,
            ReplyType::ACK
        ]
    );
    assert_eq!(r[0].0, OptionType(0x77));
    assert_eq!(r[5].2, [&2u32.to_be_bytes()[..], b"r0test"].concat());
    assert_eq!(h.outcome(), &Outcome::Negotiating);
}

#[test]
fn refusal_text_reaches_the_client() {
    let mut h = started();
    h.set_refusal(Some("r0 is Secondary".into()));
    let input = opt(OptionType::GO, &info_data("r0", &[]));
    h.handle_input(&input);
    let r = replies(&h.take_output());
    assert_eq!(r[0].1, ReplyType::ERR_UNKNOWN);
    assert_eq!(r[0].2, b"r0 is Secondary");
    assert_eq!(h.outcome(), &Outcome::Negotiating);
    // EXPORT_NAME has no error path: close.
    h.handle_input(&opt(OptionType::EXPORT_NAME, b"r0"));
    assert_eq!(
        h.outcome(),
        &Outcome::Close(CloseReason::ExportRefused("r0 is Secondary".into()))
    );
}

#[test]
fn export_name_sends_size_flags_and_zeroes_unless_no_zeroes() {
    for (cflags, extra) in [(1u32, 124usize), (3, 0)] {
        let mut h = Handshake::new(export());
        h.take_output();
        h.handle_input(&cflags.to_be_bytes());
        h.handle_input(&opt(OptionType::EXPORT_NAME, b"r0"));
        let out = h.take_output();
        assert_eq!(out.len(), 10 + extra);
        assert_eq!(&out[..8], &(1u64 << 20).to_be_bytes());
        assert!(matches!(h.outcome(), Outcome::Transmission(n) if !n.structured_replies));
    }
}

#[test]
fn framing_errors_close() {
    let mut h = Handshake::new(export());
    h.handle_input(&0x8000_0000u32.to_be_bytes());
    assert_eq!(
        h.outcome(),
        &Outcome::Close(CloseReason::BadClientFlags(0x8000_0000))
    );

    let mut h = started();
    h.handle_input(&[0xAA; 16]);
    assert!(matches!(
        h.outcome(),
        Outcome::Close(CloseReason::BadOptionMagic(_))
    ));

    let mut h = started();
    let mut input = Vec::new();
    for _ in 0..=MAX_OPTIONS {
        input.extend(opt(OptionType(0x99), b""));
    }
    h.handle_input(&input);
    assert_eq!(h.outcome(), &Outcome::Close(CloseReason::TooManyOptions));

    let mut h = started();
    h.handle_input(&opt(OptionType::ABORT, b""));
    assert_eq!(replies(&h.take_output())[0].1, ReplyType::ACK);
    assert_eq!(h.outcome(), &Outcome::Close(CloseReason::Aborted));
}

#[test]
fn oversize_option_is_skipped_without_storing_it() {
    let mut h = started();
    let mut hdr = IHAVEOPT.to_be_bytes().to_vec();
    hdr.extend_from_slice(&OptionType::GO.0.to_be_bytes());
    hdr.extend_from_slice(&(MAX_OPTION_LEN + 1_000_000).to_be_bytes());
    assert_eq!(h.handle_input(&hdr), 16);
    let chunk = vec![0u8; 65536];
    let mut left = MAX_OPTION_LEN as usize + 1_000_000;
    while left > 0 {
        let n = h.handle_input(&chunk[..left.min(chunk.len())]);
        assert!(n > 0);
        left -= n;
    }
    let r = replies(&h.take_output());
    assert_eq!(r[0].1, ReplyType::ERR_TOO_BIG);
    assert_eq!(h.outcome(), &Outcome::Negotiating);
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(chunks in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let mut h = Handshake::new(export());
        let mut pending = Vec::new();
        for c in chunks {
            pending.extend(c);
            let n = h.handle_input(&pending);
            prop_assert!(n <= pending.len());
            pending.drain(..n);
            let _ = h.take_output();
            // Whatever is buffered never exceeds one option.
            prop_assert!(pending.len() <= 4000 || matches!(h.outcome(), Outcome::Negotiating));
        }
    }

    #[test]
    fn well_formed_options_always_get_a_final_reply(o in 0u32..20, data in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assume!(o != OptionType::EXPORT_NAME.0 && o != OptionType::GO.0 && o != OptionType::ABORT.0);
        let mut h = started();
        let input = opt(OptionType(o), &data);
        prop_assert_eq!(h.handle_input(&input), input.len());
        let r = replies(&h.take_output());
        let last = r.last().map(|x| x.1);
        prop_assert!(last == Some(ReplyType::ACK) || last.is_some_and(|t| t.is_error()));
    }
}

fn started_tls(mode: TlsMode) -> Handshake {
    let mut h = Handshake::new(export());
    h.set_tls(mode);
    let _ = h.take_output();
    assert_eq!(h.handle_input(&3u32.to_be_bytes()), 4);
    h
}

/// The spec's FORCEDTLS mode ("TLS support"): every option but STARTTLS and ABORT gets
/// NBD_REP_ERR_TLS_REQD; EXPORT_NAME, which cannot fail, closes.
#[test]
fn require_refuses_options_before_tls() {
    let mut h = started_tls(TlsMode::Require);
    let mut input = Vec::new();
    for o in [
        OptionType::LIST,
        OptionType::STRUCTURED_REPLY,
        OptionType::INFO,
        OptionType::GO,
        OptionType(0x77),
    ] {
        let data = if matches!(o, OptionType::INFO | OptionType::GO) {
            info_data("r0", &[])
        } else {
            Vec::new()
        };
        input.extend(opt(o, &data));
    }
    assert_eq!(h.handle_input(&input), input.len());
    let r = replies(&h.take_output());
    assert_eq!(r.len(), 5);
    assert!(r.iter().all(|x| x.1 == ReplyType::ERR_TLS_REQD), "{r:?}");
    assert_eq!(h.outcome(), &Outcome::Negotiating);
    h.handle_input(&opt(OptionType::EXPORT_NAME, b"r0"));
    assert_eq!(h.outcome(), &Outcome::Close(CloseReason::TlsRequired));
    assert!(h.take_output().is_empty(), "EXPORT_NAME gets no reply");
    // ABORT is allowed in clear.
    let mut h = started_tls(TlsMode::Require);
    h.handle_input(&opt(OptionType::ABORT, b""));
    assert_eq!(replies(&h.take_output())[0].1, ReplyType::ACK);
    assert_eq!(h.outcome(), &Outcome::Close(CloseReason::Aborted));
}

/// STARTTLS is acknowledged, nothing after it is consumed until the TLS handshake runs,
/// and negotiation then starts over: structured replies chosen in clear are forgotten.
#[test]
fn starttls_acks_then_negotiation_resumes_inside_tls() {
    for mode in [TlsMode::On, TlsMode::Require] {
        let mut h = started_tls(mode);
        let mut input = if mode == TlsMode::On {
            opt(OptionType::STRUCTURED_REPLY, &[])
        } else {
            Vec::new()
        };
        let before = input.len();
        input.extend(opt(OptionType::STARTTLS, &[]));
        input.extend_from_slice(b"\x16\x03\x01 client hello");
        assert_eq!(h.handle_input(&input), before + OPTION_HEADER_LEN);
        let r = replies(&h.take_output());
        assert_eq!(
            r.last().map(|x| (x.0, x.1)),
            Some((OptionType::STARTTLS, ReplyType::ACK))
        );
        assert_eq!(h.outcome(), &Outcome::StartTls);
        assert_eq!(h.handle_input(b"more"), 0, "nothing consumed before TLS");
        h.tls_started();
        assert!(h.is_tls());
        // A second STARTTLS is invalid; options now work.
        h.handle_input(&opt(OptionType::STARTTLS, &[]));
        assert_eq!(replies(&h.take_output())[0].1, ReplyType::ERR_INVALID);
        h.handle_input(&opt(OptionType::GO, &info_data("r0", &[])));
        let r = replies(&h.take_output());
        assert_eq!(r.last().map(|x| x.1), Some(ReplyType::ACK));
        let Outcome::Transmission(neg) = h.outcome().clone() else {
            panic!("{:?}", h.outcome());
        };
        assert!(!neg.structured_replies, "state from before TLS is reset");
    }
}

#[test]
fn starttls_off_is_unsupported_and_on_allows_clear() {
    let mut h = started();
    h.handle_input(&opt(OptionType::STARTTLS, &[]));
    assert_eq!(replies(&h.take_output())[0].1, ReplyType::ERR_UNSUP);
    assert_eq!(h.outcome(), &Outcome::Negotiating);
    let mut h = started_tls(TlsMode::On);
    h.handle_input(&opt(OptionType::STARTTLS, b"x"));
    assert_eq!(replies(&h.take_output())[0].1, ReplyType::ERR_INVALID);
    h.handle_input(&opt(OptionType::GO, &info_data("", &[])));
    assert!(matches!(h.outcome(), Outcome::Transmission(_)));
}
