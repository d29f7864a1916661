//! Where the metadata lives: the three v08 layouts and their offset arithmetic.
//!
//! ```text
//! indexed external  (meta-disk DEV[i]): slot i = bytes [i*128MiB, (i+1)*128MiB) of DEV
//!                   [ 4k superblock ][ AL 32k ][ bitmap ..................... ]
//! flexible external (meta-disk DEV):   the whole of DEV, same order
//! internal          (meta-disk internal): the end of the data disk
//!   [ data ...... ][ bitmap ][ AL ][ 4k superblock ]   (last 4k-aligned 4k block)
//! ```
//!
//! All arithmetic follows drbdmeta (`re_initialize_md_offsets`, `max_usable_sectors`,
//! `bm_bytes`, `is_valid_md`) and the 8.4 kernel (`drbd_md_set_sector_offsets`,
//! `check_offsets_and_sizes`), which agree on every layout.

use std::fmt;

use serde::Serialize;

use super::superblock::{BM_BYTES_PER_BIT, MD_MAGIC_08, MD_MAGIC_84_UNCLEAN, Superblock};

/// Sector size of every DRBD offset and size.
pub const SECTOR_BYTES: u64 = 512;
/// One indexed external slot: 128 MiB, in sectors (`MD_128MB_SECT`).
pub const MD_128MB_SECT: u32 = 128 << 11;
/// One indexed external slot in bytes.
pub const INDEXED_SLOT_BYTES: u64 = (MD_128MB_SECT as u64) * SECTOR_BYTES;
/// Offset of the activity log behind the superblock for external layouts, sectors.
pub const MD_AL_OFFSET_SECT: i32 = 8;
/// Highest index drbdmeta accepts for `DEV[i]`.
pub const MAX_INDEX: u32 = 255;
/// drbdmeta refuses any device smaller than this (it inspects the first 68 KiB for
/// existing data: reiserfs' superblock sits at 64 KiB).
pub const MIN_DEVICE_BYTES: u64 = 68 * 1024;
/// Default activity log: one stripe of eight 4 KiB transactions (32 KiB).
pub const DEFAULT_AL_STRIPES: u32 = 1;
/// See [`DEFAULT_AL_STRIPES`].
pub const DEFAULT_AL_STRIPE_SIZE_4K: u32 = 8;
/// The kernel's upper bound on the activity log, in 4 KiB blocks (16 GiB).
pub const MAX_AL_BLOCKS: u64 = 16 * 1024 * 1024 / 4;
/// The kernel's lower bound on the activity log, in 4 KiB blocks (32 KiB).
pub const MIN_AL_BLOCKS: u64 = 8;
/// Largest bitmap drbdmeta creates (`MD_BM_MAX_BYTE_FLEX` on 64-bit: 32 GiB, i.e. 1 PiB of
/// storage). Also the cap on what we allocate when reading a bitmap.
pub const MAX_BITMAP_BYTES: u64 = 1 << 35;

/// Where the metadata lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Layout {
    /// `meta-disk internal`: at the end of the data disk (DRBD 8's flexible internal layout).
    Internal,
    /// `flexible-meta-disk DEV`: the whole meta device, sized by the device.
    FlexExternal,
    /// `meta-disk DEV[i]`: fixed 128 MiB slot `i` of the meta device.
    Indexed(u32),
}

impl Layout {
    /// The index argument drbdmeta takes for this layout: `internal`, `flex-external` or
    /// the slot number.
    pub fn drbdmeta_index(&self) -> String {
        match self {
            Self::Internal => "internal".to_owned(),
            Self::FlexExternal => "flex-external".to_owned(),
            Self::Indexed(i) => i.to_string(),
        }
    }

    /// Is the metadata on its own device (not carved out of the data disk)?
    pub fn is_external(&self) -> bool {
        !matches!(self, Self::Internal)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Internal => f.write_str("internal"),
            Self::FlexExternal => f.write_str("flexible external"),
            Self::Indexed(i) => write!(f, "indexed external [{i}]"),
        }
    }
}

/// Why a layout does not fit a device or a superblock does not fit its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// `DEV[i]` with `i` above [`MAX_INDEX`].
    IndexOutOfRange(u32),
    /// The device cannot hold the metadata.
    TooSmall {
        /// Bytes the device must have.
        needed: u64,
        /// Bytes it has.
        available: u64,
    },
    /// A superblock field disagrees with the layout.
    Field {
        /// Name of the field as in DRBD's struct.
        field: &'static str,
        /// Value found on disk.
        found: i64,
        /// Value the layout requires.
        expected: i64,
    },
    /// Activity-log striping outside what the kernel accepts.
    AlStriping {
        /// `al_stripes`.
        stripes: u32,
        /// `al_stripe_size_4k`.
        stripe_size_4k: u32,
    },
    /// The bitmap for a device of this size would exceed [`MAX_BITMAP_BYTES`] or the
    /// 32-bit `md_size_sect` field.
    TooLarge {
        /// Size of the device, bytes.
        device_bytes: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IndexOutOfRange(i) => {
                write!(f, "meta-disk index {i} out of range 0..={MAX_INDEX}")
            }
            Self::TooSmall { needed, available } => write!(
                f,
                "meta-disk too small: needs {needed} bytes ({} MiB), has {available} bytes ({} MiB)",
                needed.div_ceil(1 << 20),
                available >> 20
            ),
            Self::Field {
                field,
                found,
                expected,
            } => {
                write!(f, "{field} is {found}, expected {expected}")
            }
            Self::AlStriping {
                stripes,
                stripe_size_4k,
            } => write!(
                f,
                "invalid activity log striping: al_stripes={stripes}, al_stripe_size_4k={stripe_size_4k}"
            ),
            Self::TooLarge { device_bytes } => {
                write!(
                    f,
                    "a bitmap for {device_bytes} bytes is larger than DRBD supports"
                )
            }
        }
    }
}

impl std::error::Error for LayoutError {}

/// Bytes of on-disk bitmap DRBD uses for `sectors` of storage: one bit per 4 KiB, rounded
/// up to whole 64-bit words, then to whole 4 KiB blocks (drbdmeta's `bm_bytes` with one
/// peer and 4 KiB per bit).
pub fn bm_bytes(sectors: u64) -> u64 {
    let sectors_per_bit = u64::from(BM_BYTES_PER_BIT) / SECTOR_BYTES;
    let bits = sectors.div_ceil(sectors_per_bit).next_multiple_of(64);
    (bits / 8).next_multiple_of(4096)
}

/// Number of bitmap bits covering `sectors` of storage.
pub fn bm_bits(sectors: u64) -> u64 {
    sectors.div_ceil(u64::from(BM_BYTES_PER_BIT) / SECTOR_BYTES)
}

fn checked_al_sectors(stripes: u32, stripe_size_4k: u32) -> Result<u32, LayoutError> {
    let blocks = u64::from(stripes) * u64::from(stripe_size_4k);
    if stripes == 0 || stripe_size_4k == 0 || !(MIN_AL_BLOCKS..=MAX_AL_BLOCKS).contains(&blocks) {
        return Err(LayoutError::AlStriping {
            stripes,
            stripe_size_4k,
        });
    }
    // MAX_AL_BLOCKS * 8 fits easily into u32.
    Ok((blocks * 8) as u32)
}

/// Byte offset of the superblock of `layout` on a device of `device_bytes`, with
/// drbdmeta's minimum-size checks.
pub fn md_byte_offset(layout: Layout, device_bytes: u64) -> Result<u64, LayoutError> {
    if device_bytes < MIN_DEVICE_BYTES {
        return Err(LayoutError::TooSmall {
            needed: MIN_DEVICE_BYTES,
            available: device_bytes,
        });
    }
    let offset = match layout {
        Layout::Indexed(i) if i > MAX_INDEX => return Err(LayoutError::IndexOutOfRange(i)),
        Layout::Indexed(i) => u64::from(i) * INDEXED_SLOT_BYTES,
        Layout::FlexExternal => 0,
        // Last 4k-aligned 4k block of the device.
        Layout::Internal => (device_bytes - 4096) & !4095,
    };
    if offset > device_bytes - 4096 {
        let needed = match layout {
            // Report the whole slot, which is what the kernel requires at attach.
            Layout::Indexed(_) => offset + INDEXED_SLOT_BYTES,
            _ => offset + 4096,
        };
        return Err(LayoutError::TooSmall {
            needed,
            available: device_bytes,
        });
    }
    Ok(offset)
}

/// Size of the internal metadata area (bitmap + AL + superblock) for a data disk of
/// `device_bytes`, in sectors.
fn internal_md_size_sect(device_bytes: u64, al_sect: u32) -> Result<u64, LayoutError> {
    let bm_sect = (bm_bytes(device_bytes / SECTOR_BYTES) / SECTOR_BYTES).next_multiple_of(8);
    if bm_sect > MAX_BITMAP_BYTES / SECTOR_BYTES {
        return Err(LayoutError::TooLarge { device_bytes });
    }
    Ok(bm_sect + 8 + u64::from(al_sect))
}

/// Bytes of metadata `layout` needs for a data disk of `data_disk_bytes` with the default
/// 32 KiB activity log:
/// - `Indexed(i)`: the meta device must reach the end of slot `i`, `(i+1) * 128 MiB`;
/// - `FlexExternal`: superblock + AL + bitmap for the data disk (at least 68 KiB);
/// - `Internal`: the metadata area carved from the end of the data disk itself.
pub fn required_meta_bytes(layout: &Layout, data_disk_bytes: u64) -> u64 {
    let al_sect = u64::from(DEFAULT_AL_STRIPES * DEFAULT_AL_STRIPE_SIZE_4K * 8);
    match *layout {
        Layout::Indexed(i) => (u64::from(i) + 1) * INDEXED_SLOT_BYTES,
        Layout::FlexExternal => {
            let bytes = 4096 + al_sect * SECTOR_BYTES + bm_bytes(data_disk_bytes / SECTOR_BYTES);
            bytes.max(MIN_DEVICE_BYTES)
        }
        Layout::Internal => {
            let bm = bm_bytes(data_disk_bytes / SECTOR_BYTES).next_multiple_of(4096);
            bm + 4096 + al_sect * SECTOR_BYTES
        }
    }
}

/// The metadata area of one device: where superblock, activity log and bitmap are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Geometry {
    /// The layout.
    pub layout: Layout,
    /// Size of the device holding the metadata (the data disk for [`Layout::Internal`]).
    pub device_bytes: u64,
    /// Byte offset of the superblock on that device.
    pub md_offset: u64,
    /// Size of the metadata area, sectors.
    pub md_size_sect: u32,
    /// Activity-log offset relative to the superblock, sectors.
    pub al_offset: i32,
    /// Bitmap offset relative to the superblock, sectors.
    pub bm_offset: i32,
    /// Activity-log stripes.
    pub al_stripes: u32,
    /// Activity-log stripe size, 4 KiB blocks.
    pub al_stripe_size_4k: u32,
}

impl Geometry {
    /// The geometry create-md lays out for `layout` on a device of `device_bytes`
    /// (drbdmeta's `re_initialize_md_offsets`).
    pub fn for_create(
        layout: Layout,
        device_bytes: u64,
        al_stripes: u32,
        al_stripe_size_4k: u32,
    ) -> Result<Self, LayoutError> {
        let al_sect = checked_al_sectors(al_stripes, al_stripe_size_4k)?;
        let md_offset = md_byte_offset(layout, device_bytes)?;
        let al_sect_i = al_sect as i32;
        let (md_size_sect, al_offset, bm_offset) = match layout {
            Layout::Indexed(_) => (
                MD_128MB_SECT,
                MD_AL_OFFSET_SECT,
                MD_AL_OFFSET_SECT + al_sect_i,
            ),
            Layout::FlexExternal => {
                let sect = u32::try_from(device_bytes / SECTOR_BYTES)
                    .map_err(|_| LayoutError::TooLarge { device_bytes })?;
                (sect, MD_AL_OFFSET_SECT, MD_AL_OFFSET_SECT + al_sect_i)
            }
            Layout::Internal => {
                let sect = internal_md_size_sect(device_bytes, al_sect)?;
                let sect32 =
                    u32::try_from(sect).map_err(|_| LayoutError::TooLarge { device_bytes })?;
                let bm = i32::try_from(-(sect as i64) + 8)
                    .map_err(|_| LayoutError::TooLarge { device_bytes })?;
                (sect32, -al_sect_i, bm)
            }
        };
        let geo = Self {
            layout,
            device_bytes,
            md_offset,
            md_size_sect,
            al_offset,
            bm_offset,
            al_stripes,
            al_stripe_size_4k,
        };
        // The metadata area has to be inside the device.
        if geo.area_start().is_none() || geo.area_end() > device_bytes {
            let needed = match layout {
                Layout::Internal => u64::from(md_size_sect) * SECTOR_BYTES,
                _ => geo.area_end(),
            };
            return Err(LayoutError::TooSmall {
                needed: needed.max(MIN_DEVICE_BYTES),
                available: device_bytes,
            });
        }
        Ok(geo)
    }

    /// Checks a superblock read from `layout` on a device of `device_bytes` the way
    /// drbdmeta's `is_valid_md` (v08) and the kernel's `drbd_md_read` do, and returns the
    /// geometry it describes.
    pub fn from_superblock(
        layout: Layout,
        device_bytes: u64,
        sb: &Superblock,
    ) -> Result<Self, LayoutError> {
        let md_offset = md_byte_offset(layout, device_bytes)?;
        let field = |field, found: i64, expected: i64| LayoutError::Field {
            field,
            found,
            expected,
        };
        if sb.magic != MD_MAGIC_08 && sb.magic != MD_MAGIC_84_UNCLEAN {
            return Err(field("magic", sb.magic.into(), MD_MAGIC_08.into()));
        }
        if sb.bm_bytes_per_bit != BM_BYTES_PER_BIT {
            return Err(field(
                "bm_bytes_per_bit",
                sb.bm_bytes_per_bit.into(),
                BM_BYTES_PER_BIT.into(),
            ));
        }
        let (al_stripes, al_stripe_size_4k) = sb.effective_al_striping();
        let al_sect = i64::from(checked_al_sectors(al_stripes, al_stripe_size_4k)?);
        let al_offset = i64::from(sb.al_offset);
        let bm_offset = i64::from(sb.bm_offset);
        let md_size = i64::from(sb.md_size_sect);
        match layout {
            Layout::Indexed(_) | Layout::FlexExternal => {
                if al_offset != i64::from(MD_AL_OFFSET_SECT) {
                    return Err(field("al_offset", al_offset, MD_AL_OFFSET_SECT.into()));
                }
                if bm_offset != i64::from(MD_AL_OFFSET_SECT) + al_sect {
                    return Err(field("bm_offset", bm_offset, 8 + al_sect));
                }
                // drbdmeta does not look at md_size_sect here; without this check a
                // garbage value would wrap the usable-size arithmetic.
                if md_size < bm_offset {
                    return Err(field("md_size_sect", md_size, bm_offset));
                }
            }
            Layout::Internal => {
                if al_offset != -al_sect {
                    return Err(field("al_offset", al_offset, -al_sect));
                }
                let expected = internal_md_size_sect(device_bytes, al_sect as u32)
                    .map_err(|_| LayoutError::TooLarge { device_bytes })?
                    as i64;
                if bm_offset != -expected + 8 {
                    return Err(field("bm_offset", bm_offset, -expected + 8));
                }
                if md_size != expected {
                    return Err(field("md_size_sect", md_size, expected));
                }
            }
        }
        let geo = Self {
            layout,
            device_bytes,
            md_offset,
            md_size_sect: sb.md_size_sect,
            al_offset: sb.al_offset,
            bm_offset: sb.bm_offset,
            al_stripes,
            al_stripe_size_4k,
        };
        if geo.area_start().is_none() {
            return Err(LayoutError::TooSmall {
                needed: u64::from(sb.md_size_sect) * SECTOR_BYTES,
                available: device_bytes,
            });
        }
        Ok(geo)
    }

    fn offset_bytes(&self, sect: i32) -> Option<u64> {
        self.md_offset
            .checked_add_signed(i64::from(sect) * SECTOR_BYTES as i64)
    }

    /// Byte offset of the first byte of the metadata area, if it is inside the device.
    pub fn area_start(&self) -> Option<u64> {
        let a = self.offset_bytes(self.al_offset)?;
        let b = self.offset_bytes(self.bm_offset)?;
        Some(self.md_offset.min(a).min(b))
    }

    /// Byte offset just past the metadata area.
    pub fn area_end(&self) -> u64 {
        match self.layout {
            Layout::Internal => self.md_offset + 4096,
            _ => self.md_offset + u64::from(self.md_size_sect) * SECTOR_BYTES,
        }
    }

    /// Byte offset of the activity log.
    pub fn al_byte_offset(&self) -> u64 {
        self.offset_bytes(self.al_offset).unwrap_or(0)
    }

    /// Byte offset of the bitmap.
    pub fn bm_byte_offset(&self) -> u64 {
        self.offset_bytes(self.bm_offset).unwrap_or(0)
    }

    /// Number of 4 KiB transaction blocks in the activity log ring.
    pub fn al_blocks(&self) -> u32 {
        self.al_stripes * self.al_stripe_size_4k
    }

    /// Largest replicated size (sectors) this metadata can track, drbdmeta's
    /// `max_usable_sectors`: for internal metadata everything in front of the metadata
    /// area, for external metadata what the on-disk bitmap space covers.
    pub fn max_usable_sectors(&self) -> u64 {
        match self.layout {
            Layout::Internal => self.area_start().unwrap_or(0) / SECTOR_BYTES,
            _ => {
                // (md_size_sect - bm_offset) sectors of bitmap, in u32 as drbdmeta does;
                // each bitmap sector covers 4096 bits of 4 KiB = 32768 sectors.
                let bm_sect = self.md_size_sect.wrapping_sub(self.bm_offset as u32);
                u64::from(bm_sect) * 32768
            }
        }
    }

    /// Byte offset of the 4 KiB activity-log block holding transaction `tr_number`
    /// (the kernel's `al_tr_number_to_on_disk_sector`, striping included).
    pub fn al_block_offset(&self, tr_number: u32) -> u64 {
        let slot = al_slot(tr_number, self.al_stripes, self.al_stripe_size_4k);
        self.al_byte_offset() + u64::from(slot) * 4096
    }
}

/// On-disk block index (0-based, in the AL area) of transaction number `tr`: the ring wraps
/// at `stripes * stripe_size_4k`, consecutive transactions go to consecutive stripes.
pub fn al_slot(tr: u32, stripes: u32, stripe_size_4k: u32) -> u32 {
    let mx = stripes.saturating_mul(stripe_size_4k).max(1);
    let stripes = stripes.max(1);
    let t = tr % mx;
    (t % stripes) * stripe_size_4k + t / stripes
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn bm_bytes_rounds_like_drbdmeta() {
        assert_eq!(bm_bytes(0), 0);
        assert_eq!(bm_bytes(1), 4096);
        // 1 GiB = 262144 bits = 32 KiB.
        assert_eq!(bm_bytes(2 * 1024 * 1024), 32768);
        // 130000 sectors -> 16250 bits -> 4096 bytes.
        assert_eq!(bm_bytes(130_000), 4096);
        assert_eq!(bm_bits(130_000), 16250);
    }

    #[test]
    fn indexed_slots() {
        let g = Geometry::for_create(Layout::Indexed(1), 1 << 30, 1, 8).unwrap();
        assert_eq!(g.md_offset, 128 * MIB);
        assert_eq!(g.md_size_sect, 262_144);
        assert_eq!((g.al_offset, g.bm_offset), (8, 72));
        assert_eq!(g.al_byte_offset(), 128 * MIB + 4096);
        assert_eq!(g.bm_byte_offset(), 128 * MIB + 36864);
        // (262144 - 72) * 32768 sectors, ~4 TiB.
        assert_eq!(g.max_usable_sectors(), (262_144 - 72) * 32768);
        assert_eq!(
            Geometry::for_create(Layout::Indexed(1), 200 * MIB, 1, 8),
            Err(LayoutError::TooSmall {
                needed: 256 * MIB,
                available: 200 * MIB
            })
        );
        assert_eq!(
            Geometry::for_create(Layout::Indexed(256), 1 << 40, 1, 8),
            Err(LayoutError::IndexOutOfRange(256))
        );
    }

    #[test]
    fn internal_64mib_matches_drbdmeta() {
        // drbdmeta on a 64 MiB file: md_size_sect 80, md_offset 67104768,
        // al_offset 67072000, bm_offset 67067904.
        let g = Geometry::for_create(Layout::Internal, 64 * MIB, 1, 8).unwrap();
        assert_eq!(g.md_size_sect, 80);
        assert_eq!(g.md_offset, 67_104_768);
        assert_eq!(g.al_byte_offset(), 67_072_000);
        assert_eq!(g.bm_byte_offset(), 67_067_904);
        assert_eq!(g.max_usable_sectors(), 67_067_904 / 512);
        assert_eq!(required_meta_bytes(&Layout::Internal, 64 * MIB), 80 * 512);
    }

    #[test]
    fn flex_external_takes_the_whole_device() {
        let g = Geometry::for_create(Layout::FlexExternal, 10 * MIB, 1, 8).unwrap();
        assert_eq!(g.md_offset, 0);
        assert_eq!(g.md_size_sect, 20480);
        assert_eq!(
            required_meta_bytes(&Layout::FlexExternal, 1 << 30),
            36864 + 32768
        );
        assert_eq!(
            required_meta_bytes(&Layout::FlexExternal, 0),
            MIN_DEVICE_BYTES
        );
    }

    #[test]
    fn al_slots_stripe() {
        assert_eq!(al_slot(0, 1, 8), 0);
        assert_eq!(al_slot(9, 1, 8), 1);
        // Two stripes of 4: 0->0, 1->4, 2->1, 3->5.
        assert_eq!(
            (0..8).map(|t| al_slot(t, 2, 4)).collect::<Vec<_>>(),
            vec![0, 4, 1, 5, 2, 6, 3, 7]
        );
    }

    #[test]
    fn superblock_checks() {
        let g = Geometry::for_create(Layout::Internal, 64 * MIB, 1, 8).unwrap();
        let mut sb = Superblock {
            la_size_sect: 0,
            uuids: Default::default(),
            device_uuid: 0,
            flags: Default::default(),
            magic: MD_MAGIC_08,
            md_size_sect: g.md_size_sect,
            al_offset: g.al_offset,
            al_nr_extents: 257,
            bm_offset: g.bm_offset,
            bm_bytes_per_bit: 4096,
            la_peer_max_bio_size: 0,
            al_stripes: 1,
            al_stripe_size_4k: 8,
        };
        assert_eq!(
            Geometry::from_superblock(Layout::Internal, 64 * MIB, &sb),
            Ok(g)
        );
        sb.bm_offset = -80;
        assert_eq!(
            Geometry::from_superblock(Layout::Internal, 64 * MIB, &sb),
            Err(LayoutError::Field {
                field: "bm_offset",
                found: -80,
                expected: -72
            })
        );
        // The same superblock is not valid external metadata.
        assert!(Geometry::from_superblock(Layout::FlexExternal, 64 * MIB, &sb).is_err());
    }
}
