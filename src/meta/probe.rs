//! What create-md would overwrite: DRBD metadata where the layout puts it, or a known
//! signature (filesystem, swap, LUKS, LVM) at the start of the device, or any non-zero
//! data in the first 68 KiB (what drbdmeta's `check_for_existing_data` inspects).

use serde::Serialize;

use super::superblock::{MD_MAGIC_07, MD_MAGIC_08, MD_MAGIC_09, MD_MAGIC_84_UNCLEAN, MdFlags};

/// Bytes at the start of a device that [`signature`] looks at (drbdmeta's `SO_MUCH`).
pub const PROBE_BYTES: usize = 68 * 1024;

/// What is on a device before create-md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Existing {
    /// The first 68 KiB are zero and there is no metadata.
    Nothing,
    /// Valid v08 metadata for this layout.
    ValidMetadata {
        /// Current generation UUID.
        current_uuid: u64,
        /// `MDF_*` flags.
        flags: MdFlags,
        /// Last agreed size, sectors.
        la_size_sect: u64,
        /// False if the activity log must be applied first (crashed Primary).
        clean: bool,
    },
    /// DRBD metadata of another version, or v08 metadata that does not fit this layout.
    OtherMetadata(String),
    /// A filesystem or other known signature, e.g. "ext4", "xfs", "swap", "LUKS", "LVM2".
    FilesystemSignature(String),
    /// Non-zero data without a known signature.
    UnrecognisedData,
}

fn at(data: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    data.get(offset..offset.checked_add(len)?)
}

fn le16(data: &[u8], offset: usize) -> Option<u16> {
    at(data, offset, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn le32(data: &[u8], offset: usize) -> Option<u32> {
    at(data, offset, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn has(data: &[u8], offset: usize, magic: &[u8]) -> bool {
    at(data, offset, magic.len()) == Some(magic)
}

/// Names the signature at the start of a device, given (up to) its first 68 KiB.
pub fn signature(data: &[u8]) -> Option<String> {
    let name = |s: &str| Some(s.to_owned());
    for off in [4096 - 10, 8192 - 10] {
        if has(data, off, b"SWAP-SPACE") || has(data, off, b"SWAPSPACE2") {
            return name("swap");
        }
    }
    if has(data, 0, b"LUKS\xba\xbe") {
        return name("LUKS");
    }
    if has(data, 0x218, b"LVM2") {
        return name("LVM2");
    }
    if le16(data, 0x438) == Some(0xEF53) {
        // s_feature_compat (0x45c), s_feature_incompat (0x460) of the superblock at 1 KiB.
        let compat = le32(data, 0x45c).unwrap_or(0);
        let incompat = le32(data, 0x460).unwrap_or(0);
        // extents, 64bit, flex_bg, mmp, inline_data... anything ext4-only.
        let ext4_incompat = 0x0040 | 0x0080 | 0x0100 | 0x0200 | 0x8000;
        return if incompat & ext4_incompat != 0 {
            name("ext4")
        } else if compat & 0x0004 != 0 {
            name("ext3")
        } else {
            name("ext2")
        };
    }
    if has(data, 0, b"XFSB") {
        return name("xfs");
    }
    if has(data, 0x10040, b"_BHRfS_M") {
        return name("btrfs");
    }
    if has(data, 0x10034, b"ReIsErFs")
        || has(data, 0x10034, b"ReIsEr2Fs")
        || has(data, 0x10034, b"ReIsEr3Fs")
    {
        return name("reiserfs");
    }
    if has(data, 0x8000, b"JFS1") {
        return name("jfs");
    }
    None
}

/// Describes a superblock magic that is not valid v08 metadata.
pub fn magic_name(magic: u32) -> Option<&'static str> {
    match magic {
        MD_MAGIC_07 => Some("DRBD 0.7 metadata"),
        MD_MAGIC_08 | MD_MAGIC_84_UNCLEAN => Some("DRBD v08 metadata"),
        MD_MAGIC_09 => Some("DRBD 9 metadata"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let mut d = vec![0u8; PROBE_BYTES];
        assert_eq!(signature(&d), None);
        d[0x438] = 0x53;
        d[0x439] = 0xEF;
        assert_eq!(signature(&d).as_deref(), Some("ext2"));
        d[0x45c] = 4;
        assert_eq!(signature(&d).as_deref(), Some("ext3"));
        d[0x460] = 0x40;
        assert_eq!(signature(&d).as_deref(), Some("ext4"));
        let mut d = vec![0u8; PROBE_BYTES];
        d[4086..4096].copy_from_slice(b"SWAPSPACE2");
        assert_eq!(signature(&d).as_deref(), Some("swap"));
        let mut d = vec![0u8; 512];
        d[..4].copy_from_slice(b"XFSB");
        assert_eq!(signature(&d).as_deref(), Some("xfs"));
        d[..6].copy_from_slice(b"LUKS\xba\xbe");
        assert_eq!(signature(&d).as_deref(), Some("LUKS"));
        // Short input never panics.
        assert_eq!(signature(&[1, 2, 3]), None);
    }
}
