//! `cram-hmac-alg sha256`: the response to a challenge is HMAC-SHA-256 keyed with the
//! shared secret (DRBD's `drbd_do_auth`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of the challenge this node sends (DRBD's `CHALLENGE_LEN`).
pub const CHALLENGE_LEN: usize = 64;

pub(super) fn response(secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(challenge);
    mac.finalize().into_bytes().to_vec()
}

/// Constant-time check of the peer's response to our challenge.
pub(super) fn verify(secret: &[u8], challenge: &[u8], got: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(challenge);
    mac.verify_slice(got).is_ok()
}
