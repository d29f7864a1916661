//! NBD wire constants (NetworkBlockDevice/nbd `doc/proto.md`).
//!
//! Codes the peer chooses are newtypes with named values, so an unknown option, command or
//! reply type survives decoding, can be answered (`NBD_REP_ERR_UNSUP`, `NBD_EINVAL`) and
//! prints in hex; flag fields are plain integers with named bits.

use crate::code::wire_code;

/// `NBDMAGIC`, first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second server magic and prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Prefix of every option reply.
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Prefix of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server, 16 bits).
pub mod handshake_flags {
    /// Fixed newstyle negotiation.
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    /// The 124 zero bytes after NBD_OPT_EXPORT_NAME can be skipped.
    pub const NO_ZEROES: u16 = 1 << 1;
}

/// Client flags (32 bits).
pub mod client_flags {
    /// Client speaks fixed newstyle.
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    /// Client wants no 124 zero bytes.
    pub const NO_ZEROES: u32 = 1 << 1;
    /// Every flag a client may set.
    pub const KNOWN: u32 = FIXED_NEWSTYLE | NO_ZEROES;
}

/// Transmission flags (16 bits).
pub mod tx_flags {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// Export is read-only.
    pub const READ_ONLY: u16 = 1 << 1;
    /// NBD_CMD_FLUSH supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// NBD_CMD_FLAG_FUA supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// Rotational media.
    pub const ROTATIONAL: u16 = 1 << 4;
    /// NBD_CMD_TRIM supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// NBD_CMD_WRITE_ZEROES supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// NBD_CMD_FLAG_DF supported (structured replies only).
    pub const SEND_DF: u16 = 1 << 7;
    /// Flush on one connection covers writes of all connections.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// NBD_CMD_RESIZE supported.
    pub const SEND_RESIZE: u16 = 1 << 9;
    /// NBD_CMD_CACHE supported.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// NBD_CMD_FLAG_FAST_ZERO supported.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Command flags (16 bits).
pub mod cmd_flags {
    /// Force unit access.
    pub const FUA: u16 = 1 << 0;
    /// Write-zeroes must not punch a hole.
    pub const NO_HOLE: u16 = 1 << 1;
    /// Read reply in one chunk.
    pub const DF: u16 = 1 << 2;
    /// One extent per block-status reply.
    pub const REQ_ONE: u16 = 1 << 3;
    /// Fail write-zeroes unless fast.
    pub const FAST_ZERO: u16 = 1 << 4;
    /// Extended headers: payload length present.
    pub const PAYLOAD_LEN: u16 = 1 << 5;
}

/// Structured reply flags.
pub mod reply_flags {
    /// Last chunk of a reply.
    pub const DONE: u16 = 1 << 0;
}

wire_code! {
    /// An option sent during negotiation.
    OptionType(u32) {
        /// Choose an export, end negotiation (no error path).
        EXPORT_NAME = 1,
        /// Client gives up.
        ABORT = 2,
        /// List exports.
        LIST = 3,
        /// Old, withdrawn.
        PEEK_EXPORT = 4,
        /// TLS.
        STARTTLS = 5,
        /// Describe an export.
        INFO = 6,
        /// Describe and choose an export.
        GO = 7,
        /// Enable structured replies.
        STRUCTURED_REPLY = 8,
        /// List metadata contexts.
        LIST_META_CONTEXT = 9,
        /// Select metadata contexts.
        SET_META_CONTEXT = 10,
        /// 64-bit headers.
        EXTENDED_HEADERS = 11,
    }
}

wire_code! {
    /// The type of an option reply. Bit 31 marks errors.
    ReplyType(u32) {
        /// Success, final reply.
        ACK = 1,
        /// One export (reply to LIST).
        SERVER = 2,
        /// One info item (reply to INFO/GO).
        INFO = 3,
        /// One metadata context.
        META_CONTEXT = 4,
        /// Unknown option.
        ERR_UNSUP = (1 << 31) + 1,
        /// Forbidden by policy.
        ERR_POLICY = (1 << 31) + 2,
        /// Malformed option.
        ERR_INVALID = (1 << 31) + 3,
        /// Unsupported on this platform.
        ERR_PLATFORM = (1 << 31) + 4,
        /// TLS required.
        ERR_TLS_REQD = (1 << 31) + 5,
        /// No such export (or not available now).
        ERR_UNKNOWN = (1 << 31) + 6,
        /// Server shutting down.
        ERR_SHUTDOWN = (1 << 31) + 7,
        /// Client must request block sizes.
        ERR_BLOCK_SIZE_REQD = (1 << 31) + 8,
        /// Request or reply too large.
        ERR_TOO_BIG = (1 << 31) + 9,
        /// Extended headers required.
        ERR_EXT_HEADER_REQD = (1 << 31) + 10,
    }
}

impl ReplyType {
    /// True for error replies (bit 31).
    pub fn is_error(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

wire_code! {
    /// Information items of NBD_OPT_INFO / NBD_OPT_GO.
    InfoType(u16) {
        /// Size and transmission flags.
        EXPORT = 0,
        /// Canonical name.
        NAME = 1,
        /// Human description.
        DESCRIPTION = 2,
        /// Minimum, preferred, maximum block sizes.
        BLOCK_SIZE = 3,
    }
}

wire_code! {
    /// A transmission-phase command.
    Command(u16) {
        /// Read.
        READ = 0,
        /// Write (has a payload).
        WRITE = 1,
        /// Soft disconnect.
        DISC = 2,
        /// Flush.
        FLUSH = 3,
        /// Discard.
        TRIM = 4,
        /// Prefetch.
        CACHE = 5,
        /// Write zeroes.
        WRITE_ZEROES = 6,
        /// Block status.
        BLOCK_STATUS = 7,
        /// Resize.
        RESIZE = 8,
    }
}

wire_code! {
    /// Structured reply chunk types.
    ChunkType(u16) {
        /// No payload.
        NONE = 0,
        /// Offset + data.
        OFFSET_DATA = 1,
        /// Offset + hole length.
        OFFSET_HOLE = 2,
        /// Block status extents.
        BLOCK_STATUS = 5,
        /// Error + message.
        ERROR = (1 << 15) + 1,
        /// Error at offset + message.
        ERROR_OFFSET = (1 << 15) + 2,
    }
}

wire_code! {
    /// Error values of replies: the spec's restricted errno set.
    ErrorCode(u32) {
        /// Operation not permitted (write to a read-only export).
        EPERM = 1,
        /// Input/output error.
        EIO = 5,
        /// Out of memory.
        ENOMEM = 12,
        /// Invalid argument: bad range, flags, command.
        EINVAL = 22,
        /// Write beyond the end.
        ENOSPC = 28,
        /// Too large (commands without payload beyond the maximum).
        EOVERFLOW = 75,
        /// Not supported (fast zero).
        ENOTSUP = 95,
        /// Server shutting down.
        ESHUTDOWN = 108,
    }
}

impl ErrorCode {
    /// Maps a Linux errno from a backend to the value the spec allows on the wire
    /// (EDQUOT and EFBIG become ENOSPC; anything unlisted becomes EIO).
    pub fn from_errno(errno: i32) -> ErrorCode {
        match errno {
            libc::EPERM | libc::EROFS => Self::EPERM,
            libc::ENOMEM => Self::ENOMEM,
            libc::EINVAL => Self::EINVAL,
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => Self::ENOSPC,
            libc::EOVERFLOW => Self::EOVERFLOW,
            libc::EOPNOTSUPP => Self::ENOTSUP,
            libc::ESHUTDOWN => Self::ESHUTDOWN,
            _ => Self::EIO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_round_trip_and_print_in_hex() {
        assert_eq!(format!("{:?}", OptionType::GO), "GO");
        assert_eq!(format!("{:?}", OptionType(0x42)), "OptionType(0x42)");
        assert_eq!(OptionType(7), OptionType::GO);
        assert!(ReplyType::ERR_UNKNOWN.is_error());
        assert!(!ReplyType::INFO.is_error());
        assert_eq!(Command(99).name(), None);
        assert_eq!(ErrorCode::from_errno(libc::EDQUOT), ErrorCode::ENOSPC);
        assert_eq!(ErrorCode::from_errno(libc::ENXIO), ErrorCode::EIO);
    }
}
