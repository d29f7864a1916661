//! The save format: round trip, every refusal with its byte offset, and caps that hold
//! before any allocation.

use super::*;

fn header(records: u64, data_bytes: u64) -> Header {
    Header {
        resource: "r0".into(),
        volume: 0,
        node: "beta".into(),
        peer: "alpha".into(),
        reason: "--discard-my-data".into(),
        created_unix: 1_700_000_000,
        device_bytes: 64 << 20,
        records,
        data_bytes,
        local_uuids: [1, 2, 3, 4],
        peer_uuids: [5, 6, 7, 8],
    }
}

/// A file with records of 4 KiB at 0 and 8 KiB at 1 MiB.
fn sample() -> Vec<u8> {
    let mut w = SaveWriter::new(Vec::new(), header(2, 12288)).expect("header");
    w.record(0, &[0xAA; 4096]).expect("record");
    w.record(1 << 20, &[0xBB; 8192]).expect("record");
    w.finish().expect("finish")
}

/// The header and each record with its data.
type Parsed = (Header, Vec<(Record, Vec<u8>)>);

fn read_all(bytes: &[u8]) -> Result<Parsed, ReadError> {
    let mut r = SaveReader::new(bytes)?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(rec) = r.next_record(&mut buf)? {
        out.push((rec, buf.clone()));
    }
    Ok((r.header().clone(), out))
}

fn err_of(bytes: &[u8]) -> (u64, FormatError) {
    match read_all(bytes) {
        Err(e) => e.format().expect("a format error"),
        Ok(_) => panic!("accepted a bad file"),
    }
}

#[test]
fn round_trip() {
    let bytes = sample();
    let (h, recs) = read_all(&bytes).expect("valid");
    assert_eq!(h, header(2, 12288));
    assert_eq!(h.file_len(), bytes.len() as u64);
    assert_eq!(h.blocks(), 3);
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs[0].0,
        Record {
            offset: 0,
            len: 4096
        }
    );
    assert!(recs[0].1.iter().all(|&b| b == 0xAA));
    assert_eq!(
        recs[1].0,
        Record {
            offset: 1 << 20,
            len: 8192
        }
    );
    assert!(recs[1].1.iter().all(|&b| b == 0xBB));
}

#[test]
fn every_flipped_byte_is_refused() {
    let good = sample();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        assert!(read_all(&bad).is_err(), "byte {i} flipped was accepted");
    }
}

#[test]
fn every_truncation_is_refused() {
    let good = sample();
    for len in 0..good.len() {
        let e = read_all(&good[..len]).expect_err("truncated accepted");
        assert!(
            matches!(e.format(), Some((_, FormatError::Truncated(_)))),
            "cut at {len}: {e}"
        );
    }
}

#[test]
fn a_flipped_data_byte_is_a_checksum_error_at_the_checksum() {
    let mut bad = sample();
    let h = header(2, 12288);
    let data_at = h.encoded_len() as usize + 12 + 100;
    bad[data_at] ^= 0x40;
    let (at, kind) = err_of(&bad);
    assert!(matches!(kind, FormatError::Checksum { .. }), "{kind}");
    assert_eq!(at, bad.len() as u64 - 4);
}

#[test]
fn trailing_data_is_refused() {
    let mut bad = sample();
    bad.push(0);
    assert_eq!(
        err_of(&bad),
        (bad.len() as u64 - 1, FormatError::TrailingData)
    );
}

#[test]
fn bad_magic_and_version() {
    let mut bad = sample();
    bad[0] = b'X';
    assert_eq!(err_of(&bad), (0, FormatError::BadMagic));
    let mut bad = sample();
    bad[8..12].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(err_of(&bad), (8, FormatError::Version(2)));
}

/// Encodes a header by hand with `records`, `data_bytes` and a first record head, then
/// nothing else: the caps must fire before the reader wants the data.
fn with_record_head(offset: u64, len: u32) -> Vec<u8> {
    let mut b = Vec::new();
    header(1, 1 << 20).encode(&mut b);
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b
}

#[test]
fn record_caps_fire_before_allocation() {
    let at = u64::from(header(1, 1 << 20).encoded_len());
    let (a, k) = err_of(&with_record_head(0, u32::MAX));
    assert_eq!(a, at);
    assert!(
        matches!(
            k,
            FormatError::TooLarge {
                what: "record length",
                ..
            }
        ),
        "{k}"
    );
    let (_, k) = err_of(&with_record_head(100, 4096));
    assert!(matches!(k, FormatError::BadRecord { .. }), "{k}");
    let (_, k) = err_of(&with_record_head(64 << 20, 4096));
    assert!(
        matches!(
            k,
            FormatError::BadRecord {
                why: "reaches past the device",
                ..
            }
        ),
        "{k}"
    );
    let (_, k) = err_of(&with_record_head(u64::MAX - 4095, 4096));
    assert!(matches!(k, FormatError::BadRecord { .. }), "{k}");
}

#[test]
fn header_caps() {
    // A header length over the cap.
    let mut bad = sample();
    bad[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        err_of(&bad),
        (
            12,
            FormatError::TooLarge {
                what: "header length",
                ..
            }
        )
    ));
    // More records than the data could hold.
    let mut b = Vec::new();
    header(u64::MAX, 4096).encode(&mut b);
    assert!(matches!(err_of(&b).1, FormatError::Invalid(_)));
    // More data than the device.
    let mut b = Vec::new();
    header(1, u64::MAX).encode(&mut b);
    assert!(matches!(err_of(&b).1, FormatError::Invalid(_)));
    // A string length over the cap.
    let mut b = Vec::new();
    header(0, 0).encode(&mut b);
    let s = FIXED_HEADER_BYTES as usize;
    b[s..s + 2].copy_from_slice(&1000u16.to_be_bytes());
    assert!(matches!(
        err_of(&b).1,
        FormatError::TooLarge {
            what: "the resource name",
            ..
        }
    ));
}

#[test]
fn overlapping_or_unordered_records_are_refused() {
    let mut h = header(2, 8192);
    h.records = 2;
    let mut b = Vec::new();
    h.encode(&mut b);
    for off in [8192u64, 4096] {
        b.extend_from_slice(&off.to_be_bytes());
        b.extend_from_slice(&4096u32.to_be_bytes());
        b.extend_from_slice(&[0; 4096]);
    }
    let (_, k) = err_of(&b);
    assert!(
        matches!(k, FormatError::BadRecord { offset: 4096, .. }),
        "{k}"
    );
}

#[test]
fn an_empty_save_round_trips() {
    let w = SaveWriter::new(Vec::new(), header(0, 0)).expect("header");
    let bytes = w.finish().expect("finish");
    let (h, recs) = read_all(&bytes).expect("valid");
    assert_eq!(h.records, 0);
    assert!(recs.is_empty());
}

#[test]
fn the_writer_refuses_what_the_header_does_not_announce() {
    let mut w = SaveWriter::new(Vec::new(), header(1, 4096)).expect("header");
    assert!(
        w.record(4096, &[0; 8192]).is_err(),
        "more data than announced"
    );
    assert!(w.record(100, &[0; 4096]).is_err(), "unaligned");
    w.record(0, &[0; 4096]).expect("record");
    assert!(
        w.record(8192, &[0; 4096]).is_err(),
        "more records than announced"
    );
    let w = SaveWriter::new(Vec::new(), header(2, 8192)).expect("header");
    assert!(w.finish().is_err(), "fewer records than announced");
}

#[test]
fn long_strings_are_cut_at_a_char_boundary() {
    let mut h = header(0, 0);
    h.reason = "é".repeat(200);
    let w = SaveWriter::new(Vec::new(), h).expect("header");
    let bytes = w.finish().expect("finish");
    let (got, _) = read_all(&bytes).expect("valid");
    assert_eq!(got.reason, "é".repeat(127));
}
