//! Connection setup: version and feature negotiation ([`Hello`]), the HMAC challenge and
//! response ([`AuthChallenge`], [`AuthResponse`]), and the connection parameters both sides
//! must agree on ([`ReportParams`]).

use super::codec::{Codec, Reader, WireError, put_u8_prefixed, put_u32, put_u64, read_u8_prefixed};
use super::frame::wire_code;

/// The lowest protocol version this implementation speaks.
pub const PROTOCOL_VERSION_MIN: u32 = 1;
/// The highest protocol version this implementation speaks.
pub const PROTOCOL_VERSION_MAX: u32 = 1;

/// Feature bits of [`Hello::features`]. Bits 0-3 mean what DRBD's `DRBD_FF_*` bits mean;
/// the agreed set is the intersection of both sides' sets.
pub mod features {
    /// TRIM/discard travels as its own request.
    pub const TRIM: u64 = 1 << 0;
    /// All-zero blocks are trimmed rather than written during resync.
    pub const THIN_RESYNC: u64 = 1 << 1;
    /// DRBD's `DRBD_FF_WSAME`; also "knows rule 41 of the UUID comparison".
    pub const WSAME: u64 = 1 << 2;
    /// WRITE_ZEROES travels as its own request.
    pub const WZEROES: u64 = 1 << 3;
    /// COMPRESSED_BITMAP may be sent instead of BITMAP.
    pub const COMPRESSED_BITMAP: u64 = 1 << 8;
    /// CSUM_RS_REQUEST (checksum-based resync) may be sent.
    pub const CSUM_RESYNC: u64 = 1 << 9;
    /// Every feature this implementation offers.
    pub const SUPPORTED: u64 = WSAME | COMPRESSED_BITMAP | CSUM_RESYNC;
}

/// Bytes of a [`Hello`] this version writes; a reader ignores bytes after them (fields a
/// later version appends), within the control cap.
pub const HELLO_LEN: usize = 16;
/// Largest auth challenge: DRBD sends 64 random bytes and accepts up to twice that.
pub const MAX_CHALLENGE: u32 = 128;
/// Largest auth response: an HMAC of up to 512 bits.
pub const MAX_AUTH_RESPONSE: u32 = 64;
/// Longest integrity-algorithm name (DRBD's `SHARED_SECRET_MAX` less its NUL).
pub const MAX_ALG_NAME: u32 = 63;

/// The first packet on each socket: which protocol versions and features the sender
/// speaks (DRBD's P_CONNECTION_FEATURES).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the sender speaks.
    pub min_version: u32,
    /// Highest protocol version the sender speaks.
    pub max_version: u32,
    /// Features the sender supports ([`features`]).
    pub features: u64,
}

impl Hello {
    /// What this implementation sends.
    pub const OURS: Hello = Hello {
        min_version: PROTOCOL_VERSION_MIN,
        max_version: PROTOCOL_VERSION_MAX,
        features: features::SUPPORTED,
    };
}

impl Codec<'_> for Hello {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.min_version);
        put_u32(out, self.max_version);
        put_u64(out, self.features);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let hello = Hello {
            min_version: r.u32("hello min_version")?,
            max_version: r.u32("hello max_version")?,
            features: r.u64("hello features")?,
        };
        // Later versions may append fields.
        r.rest();
        if hello.min_version > hello.max_version || hello.min_version == 0 {
            return Err(WireError::InvalidValue("hello version range"));
        }
        Ok(hello)
    }
}

/// The outcome of a successful [`negotiate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The protocol version both speak: the highest common one.
    pub version: u32,
    /// The features both support.
    pub features: u64,
}

/// The two version ranges do not overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "incompatible protocol versions: we speak {ours_min}-{ours_max}, the peer {peer_min}-{peer_max}"
)]
pub struct Incompatible {
    /// Our lowest version.
    pub ours_min: u32,
    /// Our highest version.
    pub ours_max: u32,
    /// The peer's lowest version.
    pub peer_min: u32,
    /// The peer's highest version.
    pub peer_max: u32,
}

/// Picks the highest version in both ranges and the common features (DRBD's
/// `drbd_do_features`). Symmetric: both sides reach the same [`Agreed`].
pub fn negotiate(ours: &Hello, peer: &Hello) -> Result<Agreed, Incompatible> {
    let version = ours.max_version.min(peer.max_version);
    if version < ours.min_version.max(peer.min_version) {
        return Err(Incompatible {
            ours_min: ours.min_version,
            ours_max: ours.max_version,
            peer_min: peer.min_version,
            peer_max: peer.max_version,
        });
    }
    Ok(Agreed {
        version,
        features: ours.features & peer.features,
    })
}

/// Random bytes the receiver must answer with an HMAC keyed by the shared secret
/// (`cram-hmac-alg`, `shared-secret`). The codec carries the bytes; the connection checks
/// their length (at least 64) and that the peer did not echo our own challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthChallenge<'a> {
    /// The challenge, 1 to [`MAX_CHALLENGE`] bytes.
    pub challenge: &'a [u8],
}

impl<'a> Codec<'a> for AuthChallenge<'a> {
    /// # Panics
    /// If the challenge is empty or longer than [`MAX_CHALLENGE`] (a caller bug).
    fn encode(&self, out: &mut Vec<u8>) {
        assert!(!self.challenge.is_empty() && self.challenge.len() <= MAX_CHALLENGE as usize);
        out.extend_from_slice(self.challenge);
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let challenge = r.rest();
        if challenge.len() > MAX_CHALLENGE as usize {
            return Err(WireError::TooLong {
                what: "auth challenge",
                max: MAX_CHALLENGE,
            });
        }
        if challenge.is_empty() {
            return Err(WireError::InvalidValue("empty auth challenge"));
        }
        Ok(AuthChallenge { challenge })
    }
}

/// `HMAC(shared-secret, peer's challenge)` with the configured algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthResponse<'a> {
    /// The digest, 1 to [`MAX_AUTH_RESPONSE`] bytes.
    pub response: &'a [u8],
}

impl<'a> Codec<'a> for AuthResponse<'a> {
    /// # Panics
    /// If the response is empty or longer than [`MAX_AUTH_RESPONSE`] (a caller bug).
    fn encode(&self, out: &mut Vec<u8>) {
        assert!(!self.response.is_empty() && self.response.len() <= MAX_AUTH_RESPONSE as usize);
        out.extend_from_slice(self.response);
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let response = r.rest();
        if response.len() > MAX_AUTH_RESPONSE as usize {
            return Err(WireError::TooLong {
                what: "auth response",
                max: MAX_AUTH_RESPONSE,
            });
        }
        if response.is_empty() {
            return Err(WireError::InvalidValue("empty auth response"));
        }
        Ok(AuthResponse { response })
    }
}

wire_code! {
    /// The replication protocol (`protocol A|B|C`), DRBD's numbers.
    WireProtocol(u32) {
        /// A write completes once it is on the local disk and sent.
        A = 1,
        /// ... once the peer has received it (RECV_ACK).
        B = 2,
        /// ... once the peer has written it (WRITE_ACK).
        C = 3,
    }
}

wire_code! {
    /// An after-split-brain policy or rr-conflict value (`enum drbd_after_sb_p`).
    AfterSbCode(u32) {
        /// `disconnect`.
        DISCONNECT = 0,
        /// `discard-younger-primary`.
        DISCARD_YOUNGER_PRI = 1,
        /// `discard-older-primary`.
        DISCARD_OLDER_PRI = 2,
        /// `discard-zero-changes`.
        DISCARD_ZERO_CHG = 3,
        /// `discard-least-changes`.
        DISCARD_LEAST_CHG = 4,
        /// `discard-local`.
        DISCARD_LOCAL = 5,
        /// `discard-remote`.
        DISCARD_REMOTE = 6,
        /// `consensus`.
        CONSENSUS = 7,
        /// `discard-secondary`.
        DISCARD_SECONDARY = 8,
        /// `call-pri-lost-after-sb`.
        CALL_HELPER = 9,
        /// `violently-as0p`.
        VIOLENTLY = 10,
    }
}

impl AfterSbCode {
    /// The value the peer must have configured for the two sides to agree
    /// (DRBD's `convert_after_sb`: discard-local here is discard-remote there).
    pub fn peer_equivalent(self) -> AfterSbCode {
        match self {
            AfterSbCode::DISCARD_LOCAL => AfterSbCode::DISCARD_REMOTE,
            AfterSbCode::DISCARD_REMOTE => AfterSbCode::DISCARD_LOCAL,
            other => other,
        }
    }
}

/// Bits of [`ReportParams::flags`] (DRBD's `enum drbd_conn_flags`).
pub mod conn_flags {
    /// The sender was told `--discard-my-data`.
    pub const DISCARD_MY_DATA: u32 = 1;
    /// `connect --dry-run`: report what the handshake would do, then disconnect.
    pub const DRY_RUN: u32 = 2;
}

/// The `net` options both sides must agree on (DRBD's P_PROTOCOL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportParams<'a> {
    /// Replication protocol.
    pub protocol: WireProtocol,
    /// `after-sb-0pri`.
    pub after_sb_0p: AfterSbCode,
    /// `after-sb-1pri`.
    pub after_sb_1p: AfterSbCode,
    /// `after-sb-2pri`.
    pub after_sb_2p: AfterSbCode,
    /// [`conn_flags`]; unknown bits are kept.
    pub flags: u32,
    /// `allow-two-primaries`.
    pub two_primaries: bool,
    /// `data-integrity-alg` (empty: none): printable ASCII, at most [`MAX_ALG_NAME`] bytes.
    pub integrity_alg: &'a str,
    /// `csums-alg` (empty: none), as [`ReportParams::integrity_alg`].
    pub csums_alg: &'a str,
    /// `verify-alg` (empty: none), as [`ReportParams::integrity_alg`].
    pub verify_alg: &'a str,
}

impl ReportParams<'_> {
    /// The `--discard-my-data` bit.
    pub fn discard_my_data(&self) -> bool {
        self.flags & conn_flags::DISCARD_MY_DATA != 0
    }
}

/// An algorithm name: printable ASCII without spaces, at most [`MAX_ALG_NAME`] bytes.
pub(crate) fn read_alg_name<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
) -> Result<&'a str, WireError> {
    let bytes = read_u8_prefixed(r, MAX_ALG_NAME, what)?;
    if !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(WireError::InvalidValue(what));
    }
    std::str::from_utf8(bytes).map_err(|_| WireError::InvalidValue(what))
}

/// # Panics
/// If `name` is longer than [`MAX_ALG_NAME`] (a caller bug).
pub(crate) fn put_alg_name(out: &mut Vec<u8>, name: &str) {
    assert!(
        name.len() <= MAX_ALG_NAME as usize,
        "algorithm name too long"
    );
    put_u8_prefixed(out, name.as_bytes());
}

impl<'a> Codec<'a> for ReportParams<'a> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.protocol.0);
        put_u32(out, self.after_sb_0p.0);
        put_u32(out, self.after_sb_1p.0);
        put_u32(out, self.after_sb_2p.0);
        put_u32(out, self.flags);
        put_u32(out, u32::from(self.two_primaries));
        put_alg_name(out, self.integrity_alg);
        put_alg_name(out, self.csums_alg);
        put_alg_name(out, self.verify_alg);
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let protocol = WireProtocol(r.u32("protocol")?);
        let after_sb_0p = AfterSbCode(r.u32("after_sb_0p")?);
        let after_sb_1p = AfterSbCode(r.u32("after_sb_1p")?);
        let after_sb_2p = AfterSbCode(r.u32("after_sb_2p")?);
        let flags = r.u32("conn_flags")?;
        let two_primaries = match r.u32("two_primaries")? {
            0 => false,
            1 => true,
            _ => return Err(WireError::InvalidValue("two_primaries")),
        };
        let integrity_alg = read_alg_name(r, "integrity_alg")?;
        let csums_alg = read_alg_name(r, "csums_alg")?;
        let verify_alg = read_alg_name(r, "verify_alg")?;
        Ok(ReportParams {
            protocol,
            after_sb_0p,
            after_sb_1p,
            after_sb_2p,
            flags,
            two_primaries,
            integrity_alg,
            csums_alg,
            verify_alg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let a = Hello {
            min_version: 1,
            max_version: 3,
            features: 0b1011,
        };
        let b = Hello {
            min_version: 2,
            max_version: 5,
            features: 0b0110,
        };
        let want = Agreed {
            version: 3,
            features: 0b0010,
        };
        assert_eq!(negotiate(&a, &b), Ok(want));
        assert_eq!(negotiate(&b, &a), Ok(want));
        let old = Hello {
            min_version: 1,
            max_version: 1,
            features: 0,
        };
        let err = negotiate(&old, &b).unwrap_err();
        assert_eq!(
            err.to_string(),
            "incompatible protocol versions: we speak 1-1, the peer 2-5"
        );
        assert_eq!(
            negotiate(&Hello::OURS, &Hello::OURS),
            Ok(Agreed {
                version: PROTOCOL_VERSION_MAX,
                features: features::SUPPORTED
            })
        );
    }

    #[test]
    fn hello_ignores_appended_fields_but_not_a_bad_range() {
        let mut bytes = Hello::OURS.to_vec();
        assert_eq!(bytes.len(), HELLO_LEN);
        bytes.extend_from_slice(&[0xAB; 40]);
        assert_eq!(Hello::read_exact(&bytes, "hello"), Ok(Hello::OURS));
        let bad = Hello {
            min_version: 3,
            max_version: 2,
            features: 0,
        };
        assert_eq!(
            Hello::read_exact(&bad.to_vec(), "hello"),
            Err(WireError::InvalidValue("hello version range"))
        );
    }

    #[test]
    fn codes_print_by_name() {
        assert_eq!(format!("{:?}", WireProtocol::C), "C");
        assert_eq!(format!("{:?}", WireProtocol(9)), "WireProtocol(0x9)");
        assert_eq!(
            AfterSbCode::DISCARD_LOCAL.peer_equivalent(),
            AfterSbCode::DISCARD_REMOTE
        );
        // The codes are the ones core::AfterSb uses.
        for code in AfterSbCode::ALL {
            assert_eq!(
                crate::core::AfterSb::from_code(code.0).map(|p| p as u32),
                Some(code.0)
            );
        }
    }

    #[test]
    fn alg_names_are_printable_ascii() {
        let mut p = ReportParams {
            protocol: WireProtocol::C,
            after_sb_0p: AfterSbCode::DISCONNECT,
            after_sb_1p: AfterSbCode::DISCONNECT,
            after_sb_2p: AfterSbCode::DISCONNECT,
            flags: conn_flags::DISCARD_MY_DATA,
            two_primaries: false,
            integrity_alg: "crc32c",
            csums_alg: "crc32c",
            verify_alg: "",
        };
        assert!(p.discard_my_data());
        let bytes = p.to_vec();
        assert_eq!(ReportParams::read_exact(&bytes, "p"), Ok(p));
        p.integrity_alg = "crc 32";
        assert_eq!(
            ReportParams::read_exact(&p.to_vec(), "p"),
            Err(WireError::InvalidValue("integrity_alg"))
        );
        let mut long = bytes[..24].to_vec();
        long.push(200);
        long.extend_from_slice(&[b'a'; 200]);
        assert_eq!(
            ReportParams::read_exact(&long, "p"),
            Err(WireError::TooLong {
                what: "integrity_alg",
                max: MAX_ALG_NAME
            })
        );
    }
}
