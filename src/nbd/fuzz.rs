//! Entry points for fuzz targets (cargo-fuzz wires them in `fuzz/`): each decodes arbitrary
//! bytes the way the server does and must never panic.

use super::handshake::{ExportDesc, Handshake};
use super::proto::tx_flags;
use super::reply::decode_header;
use super::request::{Limits, MAX_PAYLOAD, REQUEST_HEADER_LEN, Request};

/// Feeds `data` to a negotiation in chunks whose sizes come from the data itself.
pub fn fuzz_negotiation(data: &[u8]) {
    let mut hs = Handshake::new(ExportDesc {
        name: "r0".into(),
        description: String::new(),
        size: 1 << 30,
        flags: tx_flags::SEND_FLUSH | tx_flags::SEND_FUA,
        min_block: 1,
        preferred_block: 4096,
        max_payload: MAX_PAYLOAD,
    });
    let mut pending: Vec<u8> = Vec::new();
    for chunk in data.chunks(data.first().map_or(1, |&b| usize::from(b).max(1))) {
        pending.extend_from_slice(chunk);
        let n = hs.handle_input(&pending);
        pending.drain(..n.min(pending.len()));
        let _ = hs.take_output();
    }
}

/// Decodes and checks every 28-byte request header in `data`, and every reply header.
pub fn fuzz_request(data: &[u8]) {
    let lim = Limits {
        size: 1 << 30,
        flags: 0xFFFF,
        structured: data.first().is_some_and(|b| b & 1 == 1),
        max_payload: MAX_PAYLOAD,
    };
    for h in data.chunks_exact(REQUEST_HEADER_LEN) {
        if let Ok(h) = <&[u8; REQUEST_HEADER_LEN]>::try_from(h)
            && let Ok(r) = Request::decode(h)
        {
            let _ = r.check(&lim);
        }
    }
    for n in [16usize, 20] {
        for h in data.chunks_exact(n) {
            let _ = decode_header(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fuzz_entry_points_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            super::fuzz_negotiation(&data);
            super::fuzz_request(&data);
        }
    }
}
