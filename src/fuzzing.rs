//! Entry points of the fuzz targets in `fuzz/`, kept in the library so that
//! `tests/fuzz_corpus.rs` replays the committed corpus as an ordinary test.
//!
//! Each function feeds untrusted bytes to one decoder family. The contract under test: any
//! input returns (an error or a value); nothing panics, nothing allocates from an unchecked
//! length.

use crate::meta::{self, ActivityLog, AlTransaction, Bitmap, Geometry, Layout, Superblock};

/// The size of one metadata block.
const BLOCK: usize = 4096;

/// Largest input the metadata target looks at (the fuzzer keeps inputs far smaller).
const MAX_META_INPUT: usize = 1 << 20;

/// Largest input the wire target looks at: two largest frames.
const MAX_WIRE_INPUT: usize = 2 * (1 << 21);

/// Feeds `data` to the drbd.conf parser. Includes are not followed, so a run never reads
/// files outside its input.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse_str_no_includes(text, "fuzz.conf");
    }
}

/// Feeds `data` to the v08 metadata decoders: the first block as a superblock, every block
/// as an activity-log transaction, then the geometry, bitmap and AL replay the superblock
/// describes, for every layout.
pub fn meta(data: &[u8]) {
    let data = &data[..data.len().min(MAX_META_INPUT)];
    let blocks: Vec<[u8; BLOCK]> = data.chunks(BLOCK).map(padded).collect();
    let al_blocks: Vec<_> = blocks
        .iter()
        .filter_map(|b| AlTransaction::decode(b).ok())
        .collect();
    let Some(first) = blocks.first() else { return };
    let Ok(sb) = Superblock::decode(first) else {
        return;
    };
    let device_bytes = (data.len() as u64).max(u64::from(sb.md_size_sect) * 512);
    for layout in [
        Layout::Indexed(0),
        Layout::Indexed(1),
        Layout::FlexExternal,
        Layout::Internal,
    ] {
        let Ok(geometry) = Geometry::from_superblock(layout, device_bytes, &sb) else {
            continue;
        };
        let _ = geometry.max_usable_sectors();
        let bm_bytes = meta::bm_bytes(sb.la_size_sect);
        if let Some(start) = usize::try_from(geometry.bm_byte_offset()).ok()
            && let Some(end) = usize::try_from(bm_bytes)
                .ok()
                .and_then(|n| start.checked_add(n))
            && let Some(bytes) = data.get(start..end)
            && let Some(bitmap) = Bitmap::from_le_bytes(sb.la_size_sect, bytes)
        {
            let _ = bitmap.count();
        }
    }
    if sb.al_stripes.checked_mul(sb.al_stripe_size_4k) == Some(al_blocks.len() as u32) {
        let al = ActivityLog {
            stripes: sb.al_stripes,
            stripe_size_4k: sb.al_stripe_size_4k,
            blocks: al_blocks,
        };
        let _ = al.replay();
    }
}

/// Feeds `data` to the NBD server's option negotiation, in chunks whose sizes the data picks.
pub fn nbd_handshake(data: &[u8]) {
    crate::nbd::fuzz::fuzz_negotiation(data);
}

/// Feeds `data` to the NBD request-header decoder and checks, and to the reply decoder.
pub fn nbd_request(data: &[u8]) {
    crate::nbd::fuzz::fuzz_request(data);
}

/// Feeds `data` to the peer-protocol decoders as a stream of frames, the way a receive
/// buffer fills: the streaming decoder on every prefix length the data picks, then frames
/// split off the front until the input runs out or is rejected. Every decoded frame is
/// re-encoded and must decode to itself.
pub fn wire(data: &[u8]) {
    use crate::wire::{Frame, Packet, Reader};
    let data = &data[..data.len().min(MAX_WIRE_INPUT)];
    let mut rest = data;
    while !rest.is_empty() {
        match Frame::decode(rest) {
            Ok(Some((frame, used))) => {
                let mut again = Vec::new();
                frame.encode(&mut again);
                assert_eq!(
                    Frame::decode(&again),
                    Ok(Some((frame, again.len()))),
                    "re-encoded frame decodes differently"
                );
                if let Packet::CompressedBitmap(bm) = frame.packet {
                    for run in bm.runs() {
                        if run.is_err() {
                            break;
                        }
                    }
                }
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The whole-buffer decoder agrees with the streaming one on the first frame.
    let whole = Frame::read(&mut Reader::new(data));
    match Frame::decode(data) {
        Ok(Some((frame, _))) => assert_eq!(whole, Ok(frame)),
        Ok(None) => assert!(whole.is_err()),
        Err(e) => assert_eq!(whole, Err(e)),
    }
}

/// Feeds `data` to the bitmap exchange's decoders: the first 4 bytes pick the bitmap's size
/// (up to 2^20 bits), the rest is the payload of a `COMPRESSED_BITMAP` chunk and of a plain
/// `BITMAP` chunk, each merged into a bitmap of that size as the session does. Whatever the
/// runs say, bits past the bitmap are refused, never written; and a bitmap survives its own
/// run-length coding unchanged.
pub fn bitmap(data: &[u8]) {
    use crate::core::repl::{ReplConfig, Replicator, encode_runs};
    use crate::wire::{Codec, CompressedBitmap, MAX_BITMAP_CODE};
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let bits = u64::from(u32::from_le_bytes(*head) % (1 << 20)) + 1;
    let sectors = bits * 8;
    let mut repl = Replicator::new(
        ReplConfig::default(),
        sectors * 512,
        meta::Bitmap::new(sectors),
    );
    if let Ok(c) = CompressedBitmap::read_exact(rest, "fuzz") {
        if let Some(covered) = repl.merge_peer_runs(c.start_bit, c.runs().map(|r| r.ok())) {
            assert!(
                c.start_bit + covered <= repl.bitmap().bits(),
                "runs past the end"
            );
        }
    }
    if let Ok(b) = crate::wire::Bitmap::read_exact(rest, "fuzz") {
        let words: Vec<u64> = b.words().collect();
        repl.merge_peer_words(b.start_word, &words);
    }
    assert!(repl.bitmap().count() <= repl.bitmap().bits());
    // Round trip of whatever the bitmap holds now.
    let chunks = encode_runs(repl.bitmap(), MAX_BITMAP_CODE as usize);
    let mut copy = Replicator::new(
        ReplConfig::default(),
        sectors * 512,
        meta::Bitmap::new(sectors),
    );
    for c in &chunks {
        let cb = CompressedBitmap {
            start_bit: c.start_bit,
            first_set: c.first_set,
            code: &c.code,
        };
        assert!(
            copy.merge_peer_runs(c.start_bit, cb.runs().map(|r| r.ok()))
                .is_some(),
            "our own chunk refused"
        );
    }
    assert_eq!(
        copy.bitmap().words(),
        repl.bitmap().words(),
        "run-length round trip"
    );
}

/// Feeds `data` to the split-brain save reader as `urbdadm restore-split-brain-save` and
/// `split-brain-saves` read a file: the header, then every record until the trailer or the
/// first error. Whatever the bytes, the reader never hands out more data than the file
/// holds, and a file that reads to the end has exactly the records and bytes its header
/// announces.
pub fn sbsave(data: &[u8]) {
    let Ok(mut r) = crate::sbsave::format::SaveReader::new(data) else {
        return;
    };
    let header = r.header().clone();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        match r.next_record(&mut buf) {
            Ok(Some(rec)) => {
                records += 1;
                bytes += buf.len() as u64;
                assert_eq!(buf.len() as u64, u64::from(rec.len), "record length");
                assert!(bytes <= data.len() as u64, "more data than the file");
                assert!(records <= header.records, "more records than announced");
            }
            Ok(None) => {
                assert_eq!(records, header.records, "records announced");
                assert_eq!(bytes, header.data_bytes, "bytes announced");
                return;
            }
            Err(_) => return,
        }
    }
}

/// A valid save file (two records), the seed of the `sbsave` corpus.
pub fn sbsave_sample() -> Vec<u8> {
    use crate::sbsave::format::{Header, SaveWriter};
    let header = Header {
        resource: "r0".into(),
        volume: 0,
        node: "beta".into(),
        peer: "alpha".into(),
        reason: "--discard-my-data".into(),
        created_unix: 1_700_000_000,
        device_bytes: 64 << 20,
        records: 2,
        data_bytes: 12288,
        local_uuids: [1, 2, 3, 4],
        peer_uuids: [5, 6, 7, 8],
    };
    let write = || -> Result<Vec<u8>, crate::sbsave::format::WriteError> {
        let mut w = SaveWriter::new(Vec::new(), header)?;
        w.record(0, &[0xAA; 4096])?;
        w.record(1 << 20, &[0xBB; 8192])?;
        w.finish()
    };
    write().unwrap_or_default()
}

fn padded(chunk: &[u8]) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    block[..chunk.len()].copy_from_slice(chunk);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed meta corpus starts from metadata that drbdmeta wrote, so the fuzz target
    /// reaches past the superblock into geometry, bitmap and AL replay.
    #[test]
    fn corpus_seed_reaches_the_deep_decoders() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/meta/indexed0-created"
        );
        let data = std::fs::read(path).expect("corpus file");
        let sb = Superblock::decode(&data[..BLOCK]).expect("drbdmeta's superblock decodes");
        let geometry = Geometry::from_superblock(Layout::Indexed(0), 256 << 20, &sb)
            .expect("drbdmeta's geometry is accepted");
        assert_eq!(geometry.al_byte_offset(), 4096);
        let al_blocks = data[BLOCK..]
            .chunks(BLOCK)
            .take((sb.al_stripes * sb.al_stripe_size_4k) as usize)
            .filter_map(|b| AlTransaction::decode(b).ok())
            .filter(|b| b.is_valid())
            .count();
        assert_eq!(al_blocks, 8, "create-md writes 8 valid AL blocks");
        meta(&data);
    }

    /// The committed wire corpus is made of valid frames (written by hand from
    /// docs/PROTOCOL.md), so the wire target starts from every packet type's decoder.
    #[test]
    fn wire_corpus_seeds_decode_to_the_end() {
        use crate::wire::{Frame, Packet, PacketType, WireError};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/wire/");
        let mut seen = std::collections::BTreeSet::new();
        for (file, frames) in [
            ("handshake", 8),
            ("data-acks-barriers", 9),
            ("resync-bitmap-state", 16),
            ("diskless-reads", 3),
        ] {
            let data = std::fs::read(format!("{dir}{file}")).expect("corpus file");
            let mut rest = &data[..];
            let mut n = 0;
            while let Some((frame, used)) = Frame::decode(rest).expect(file) {
                seen.insert(frame.packet.packet_type());
                assert!(!matches!(frame.packet, Packet::Unknown { .. }), "{file}");
                rest = &rest[used..];
                n += 1;
            }
            assert!(rest.is_empty(), "{file}: {} bytes left", rest.len());
            assert_eq!(n, frames, "{file}");
            wire(&data);
        }
        let all: std::collections::BTreeSet<_> = PacketType::ALL.iter().copied().collect();
        assert_eq!(seen, all, "the seeds hold every known packet type");
        let data = std::fs::read(format!("{dir}unknown-and-oversize")).expect("corpus file");
        let (frame, used) = Frame::decode(&data).unwrap().unwrap();
        assert!(matches!(frame.packet, Packet::Unknown { .. }));
        assert!(matches!(
            Frame::decode(&data[used..]),
            Err(WireError::TooLong { .. })
        ));
    }
}
