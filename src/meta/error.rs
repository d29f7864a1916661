//! Errors of the metadata module. Every variant names the file it is about, and where it
//! applies the field and byte offset, so that a message alone tells an operator what to
//! look at.

use std::io;
use std::path::PathBuf;

use super::layout::Layout;

/// Everything that can go wrong reading or writing DRBD metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The device could not be opened.
    #[error("{path}: cannot open: {source}")]
    Open {
        /// The device.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The device is read-only (read-only block device, read-only mount, no permission).
    /// Nothing was written.
    #[error("{path}: device is read-only, refusing to write metadata ({source})")]
    ReadOnly {
        /// The device.
        path: PathBuf,
        /// The OS error from opening it for writing (EROFS, EACCES or EPERM).
        #[source]
        source: io::Error,
    },

    /// The device is in exclusive use (mounted, or held by another program).
    #[error("{path}: device is busy (mounted or in use), refusing to write metadata")]
    Busy {
        /// The device.
        path: PathBuf,
    },

    /// A read or write failed.
    #[error("{path}: {op} of {len} bytes at offset {offset} failed: {source}")]
    Io {
        /// The device.
        path: PathBuf,
        /// "read" or "write" plus what was being accessed.
        op: &'static str,
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The device ends before a structure that must be there.
    #[error(
        "{path}: truncated metadata: {what} at offset {offset} needs {len} bytes, but the device has only {device_bytes} bytes"
    )]
    Truncated {
        /// The device.
        path: PathBuf,
        /// The structure.
        what: &'static str,
        /// Its byte offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// Size of the device.
        device_bytes: u64,
    },

    /// No DRBD v08 metadata where the layout puts it.
    #[error(
        "{path}: no v08 metadata ({layout}): {field} at offset {offset} is {found:#010x}, expected {expected:#010x}{hint}"
    )]
    BadMagic {
        /// The device.
        path: PathBuf,
        /// The layout looked at.
        layout: Layout,
        /// Field name.
        field: &'static str,
        /// Byte offset of the field.
        offset: u64,
        /// Value found.
        found: u32,
        /// Value expected.
        expected: u32,
        /// A hint about what was found instead (e.g. " (DRBD 0.7 metadata)").
        hint: &'static str,
    },

    /// A superblock field contradicts the layout.
    #[error(
        "{path}: invalid metadata ({layout}) at offset {offset}: {field} is {found}, expected {expected}"
    )]
    BadField {
        /// The device.
        path: PathBuf,
        /// The layout.
        layout: Layout,
        /// Field name, as in DRBD's struct.
        field: &'static str,
        /// Byte offset of the superblock.
        offset: u64,
        /// Value found.
        found: i64,
        /// Value expected.
        expected: i64,
    },

    /// An activity-log block has bad magic or a bad checksum.
    #[error("{path}: activity log transaction block {index} at offset {offset}: {problem}")]
    BadAlBlock {
        /// The device.
        path: PathBuf,
        /// Block index in the on-disk ring.
        index: u32,
        /// Byte offset of the block.
        offset: u64,
        /// What is wrong ("bad checksum: stored 0x..., computed 0x...").
        problem: String,
    },

    /// The activity log holds nothing that can be replayed.
    #[error("{path}: activity log at offset {offset}: {source}")]
    AlReplay {
        /// The device.
        path: PathBuf,
        /// Byte offset of the activity log.
        offset: u64,
        /// What drbdmeta would have said.
        #[source]
        source: super::al::ReplayError,
    },

    /// The meta device (for internal metadata: the data disk) is too small. Nothing was
    /// written.
    #[error(
        "{path}: meta-disk too small for {layout} metadata: needs {needed} bytes ({needed_mib} MiB), has {available} bytes ({available_mib} MiB)"
    )]
    TooSmall {
        /// The device.
        path: PathBuf,
        /// The layout.
        layout: Layout,
        /// Bytes needed.
        needed: u64,
        /// Bytes needed, MiB rounded up.
        needed_mib: u64,
        /// Bytes available.
        available: u64,
        /// Bytes available, MiB rounded down.
        available_mib: u64,
    },

    /// The request itself is invalid (index out of range, bad striping, device too large).
    #[error("{path}: {problem}")]
    Invalid {
        /// The device.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// A bitmap range outside the bitmap.
    #[error("{path}: {source}")]
    BitmapRange {
        /// The device.
        path: PathBuf,
        /// The range.
        #[source]
        source: super::bitmap::OutOfRange,
    },

    /// The in-memory metadata does not belong to this device (different geometry).
    #[error("{path}: metadata geometry does not match the device ({problem})")]
    Mismatch {
        /// The device.
        path: PathBuf,
        /// What differs.
        problem: String,
    },
}

impl MetaError {
    /// Builds [`MetaError::TooSmall`].
    pub fn too_small(path: PathBuf, layout: Layout, needed: u64, available: u64) -> Self {
        Self::TooSmall {
            path,
            layout,
            needed,
            needed_mib: needed.div_ceil(1 << 20),
            available,
            available_mib: available >> 20,
        }
    }

    /// The device this error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Open { path, .. }
            | Self::ReadOnly { path, .. }
            | Self::Busy { path }
            | Self::Io { path, .. }
            | Self::Truncated { path, .. }
            | Self::BadMagic { path, .. }
            | Self::BadField { path, .. }
            | Self::BadAlBlock { path, .. }
            | Self::AlReplay { path, .. }
            | Self::TooSmall { path, .. }
            | Self::Invalid { path, .. }
            | Self::BitmapRange { path, .. }
            | Self::Mismatch { path, .. } => path,
        }
    }

    /// Converts a layout error about `path`.
    pub(crate) fn from_layout(
        path: PathBuf,
        layout: Layout,
        md_offset: u64,
        e: super::layout::LayoutError,
    ) -> Self {
        use super::layout::LayoutError as L;
        match e {
            L::TooSmall { needed, available } => Self::too_small(path, layout, needed, available),
            L::Field {
                field,
                found,
                expected,
            } => Self::BadField {
                path,
                layout,
                field,
                offset: md_offset,
                found,
                expected,
            },
            other => Self::Invalid {
                path,
                problem: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_and_sizes() {
        let e = MetaError::too_small("/dev/vdc1".into(), Layout::Indexed(1), 256 << 20, 100 << 20);
        let s = e.to_string();
        assert!(s.contains("/dev/vdc1"), "{s}");
        assert!(s.contains("268435456 bytes (256 MiB)"), "{s}");
        assert!(s.contains("has 104857600 bytes (100 MiB)"), "{s}");
        let e = MetaError::BadMagic {
            path: "m.img".into(),
            layout: Layout::FlexExternal,
            field: "magic",
            offset: 60,
            found: 0,
            expected: 0x8374_026B,
            hint: "",
        };
        assert!(e.to_string().contains("is 0x00000000, expected 0x8374026b"));
        assert_eq!(e.path(), std::path::Path::new("m.img"));
    }
}
