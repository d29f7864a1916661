//! The 4 KiB v08 metadata superblock (DRBD's `struct meta_data_on_disk`).
//!
//! On-disk layout, all fields big-endian, zero-padded to 4096 bytes:
//!
//! | offset | field                 | notes                                          |
//! |-------:|-----------------------|------------------------------------------------|
//! |      0 | `la_size_sect` u64    | last agreed size, 512-byte sectors             |
//! |      8 | `uuid[4]` u64         | current, bitmap, history\[0\], history\[1\]    |
//! |     40 | `device_uuid` u64     |                                                |
//! |     48 | reserved u64          | written as 0                                   |
//! |     56 | `flags` u32           | `MDF_*`                                        |
//! |     60 | `magic` u32           | 0x8374026B clean, 0x8374026C unclean (8.4)     |
//! |     64 | `md_size_sect` u32    |                                                |
//! |     68 | `al_offset` s32       | sectors, relative to the superblock            |
//! |     72 | `al_nr_extents` u32   | `al-extents`; informational                    |
//! |     76 | `bm_offset` s32       | sectors, relative to the superblock            |
//! |     80 | `bm_bytes_per_bit` u32| always 4096                                    |
//! |     84 | `la_peer_max_bio_size`|                                                |
//! |     88 | `al_stripes` u32      | 0 together with the next one means 1 x 32 KiB  |
//! |     92 | `al_stripe_size_4k`   |                                                |
//! |     96 | reserved              | zero up to 4096                                |

use serde::Serialize;

use super::codec::{InvalidData, Reader, Writer};

/// Size of the superblock on disk.
pub const SUPERBLOCK_BYTES: usize = 4096;

/// `DRBD_MAGIC`, the base all metadata magics are derived from.
pub const DRBD_MAGIC: u32 = 0x8374_0267;
/// DRBD 0.7 metadata.
pub const MD_MAGIC_07: u32 = DRBD_MAGIC + 3;
/// DRBD 8.x metadata, activity log clean (what drbdmeta and a clean detach write).
pub const MD_MAGIC_08: u32 = DRBD_MAGIC + 4;
/// DRBD 8.4 metadata while attached: the activity log must be applied before the next attach.
pub const MD_MAGIC_84_UNCLEAN: u32 = DRBD_MAGIC + 5;
/// DRBD 9 metadata.
pub const MD_MAGIC_09: u32 = DRBD_MAGIC + 6;

/// The value DRBD's create-md puts into the current UUID slot ("just created").
pub const UUID_JUST_CREATED: u64 = 4;

/// Bytes of storage per bitmap bit: DRBD 8.4 supports exactly 4 KiB.
pub const BM_BYTES_PER_BIT: u32 = 4096;

/// `al_nr_extents` drbdmeta's create-md writes ("arbitrary", the kernel overwrites it with
/// the configured `al-extents` at the first metadata update after attach).
pub const CREATE_MD_AL_EXTENTS: u32 = 257;

/// The `al-extents` default of DRBD 8.4's configuration.
pub const DEFAULT_AL_EXTENTS: u32 = 1237;

/// The metadata flags word (`MDF_*` of DRBD 8.4's `linux/drbd.h`). Unknown bits are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MdFlags(pub u32);

impl MdFlags {
    /// The data is consistent (not in the middle of a resync).
    pub const CONSISTENT: u32 = 1 << 0;
    /// The node was or is Primary.
    pub const PRIMARY_IND: u32 = 1 << 1;
    /// The node was or is connected.
    pub const CONNECTED_IND: u32 = 1 << 2;
    /// A full sync (setting all bitmap bits) was in progress.
    pub const FULL_SYNC: u32 = 1 << 3;
    /// The data was or is UpToDate (cleared by `outdate`).
    pub const WAS_UP_TO_DATE: u32 = 1 << 4;
    /// The peer's disk was outdated or inconsistent.
    pub const PEER_OUT_DATED: u32 = 1 << 5;
    /// The node was a Primary that crashed and has not seen its peer since.
    pub const CRASHED_PRIMARY: u32 = 1 << 6;
    /// The activity log is clean: nothing to apply before attaching.
    pub const AL_CLEAN: u32 = 1 << 7;
    /// Activity-log updates are disabled.
    pub const AL_DISABLED: u32 = 1 << 8;

    /// True if every bit of `mask` is set.
    pub fn contains(self, mask: u32) -> bool {
        self.0 & mask == mask
    }

    /// Sets or clears the bits of `mask`.
    pub fn set(&mut self, mask: u32, on: bool) {
        if on {
            self.0 |= mask;
        } else {
            self.0 &= !mask;
        }
    }

    /// `MDF_CONSISTENT`.
    pub fn is_consistent(self) -> bool {
        self.contains(Self::CONSISTENT)
    }

    /// `MDF_WAS_UP_TO_DATE`.
    pub fn was_up_to_date(self) -> bool {
        self.contains(Self::WAS_UP_TO_DATE)
    }

    /// `MDF_PRIMARY_IND`.
    pub fn is_primary(self) -> bool {
        self.contains(Self::PRIMARY_IND)
    }

    /// `MDF_CRASHED_PRIMARY`.
    pub fn is_crashed_primary(self) -> bool {
        self.contains(Self::CRASHED_PRIMARY)
    }

    /// `MDF_AL_CLEAN`.
    pub fn is_al_clean(self) -> bool {
        self.contains(Self::AL_CLEAN)
    }

    /// The disk state drbdmeta's `dstate` derives from these flags.
    pub fn disk_state(self) -> &'static str {
        if !self.is_consistent() {
            "Inconsistent"
        } else if !self.was_up_to_date() {
            "Outdated"
        } else if self.contains(Self::PEER_OUT_DATED) {
            "UpToDate"
        } else {
            "Consistent"
        }
    }
}

/// The four generation identifiers of DRBD 8.4, in on-disk order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Uuids {
    /// `UI_CURRENT`: the current data generation.
    pub current: u64,
    /// `UI_BITMAP`: the generation the bitmap is based on (0 when no bitmap is tracked).
    pub bitmap: u64,
    /// `UI_HISTORY_START`, `UI_HISTORY_END`: younger, then older history.
    pub history: [u64; 2],
}

/// The decoded v08 superblock. Field names follow DRBD's `struct meta_data_on_disk`.
/// Values are kept exactly as on disk (no defaults applied), so decode/encode round-trips;
/// reserved fields are written as zero, as DRBD and drbdmeta do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Superblock {
    /// Last agreed size of the replicated device, 512-byte sectors.
    pub la_size_sect: u64,
    /// Generation identifiers.
    pub uuids: Uuids,
    /// Random identifier of this backing device (0 until the kernel sets one).
    pub device_uuid: u64,
    /// `MDF_*` flags.
    pub flags: MdFlags,
    /// [`MD_MAGIC_08`] or [`MD_MAGIC_84_UNCLEAN`] for valid 8.4 metadata.
    pub magic: u32,
    /// Size of the whole metadata area, sectors.
    pub md_size_sect: u32,
    /// Activity-log offset from the superblock, sectors (negative for internal metadata).
    pub al_offset: i32,
    /// Number of activity-log extents (`al-extents`).
    pub al_nr_extents: u32,
    /// Bitmap offset from the superblock, sectors (negative for internal metadata).
    pub bm_offset: i32,
    /// Bytes of storage per bitmap bit; DRBD 8.4 requires 4096.
    pub bm_bytes_per_bit: u32,
    /// Last known maximum bio size of the peer, bytes.
    pub la_peer_max_bio_size: u32,
    /// Activity-log stripes (0 together with `al_stripe_size_4k == 0` means 1).
    pub al_stripes: u32,
    /// Activity-log stripe size in 4 KiB blocks (0 together with `al_stripes == 0` means 8).
    pub al_stripe_size_4k: u32,
}

impl Superblock {
    /// Decodes the first [`SUPERBLOCK_BYTES`] of `buf`. Only fails when `buf` is too short;
    /// whether the values make sense is checked against a layout in
    /// [`Geometry::from_superblock`](super::Geometry::from_superblock).
    pub fn decode(buf: &[u8]) -> Result<Self, InvalidData> {
        let mut r = Reader::new(buf);
        let sb = Self::read(&mut r)?;
        // The reserved tail must be there, even if we do not look at it.
        r.skip(SUPERBLOCK_BYTES - r.position(), "superblock padding")?;
        Ok(sb)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, InvalidData> {
        let la_size_sect = r.u64("la_size_sect")?;
        let uuids = Uuids {
            current: r.u64("uuid[UI_CURRENT]")?,
            bitmap: r.u64("uuid[UI_BITMAP]")?,
            history: [
                r.u64("uuid[UI_HISTORY_START]")?,
                r.u64("uuid[UI_HISTORY_END]")?,
            ],
        };
        let device_uuid = r.u64("device_uuid")?;
        r.skip(8, "reserved_u64_1")?;
        Ok(Self {
            la_size_sect,
            uuids,
            device_uuid,
            flags: MdFlags(r.u32("flags")?),
            magic: r.u32("magic")?,
            md_size_sect: r.u32("md_size_sect")?,
            al_offset: r.i32("al_offset")?,
            al_nr_extents: r.u32("al_nr_extents")?,
            bm_offset: r.i32("bm_offset")?,
            bm_bytes_per_bit: r.u32("bm_bytes_per_bit")?,
            la_peer_max_bio_size: r.u32("la_peer_max_bio_size")?,
            al_stripes: r.u32("al_stripes")?,
            al_stripe_size_4k: r.u32("al_stripe_size_4k")?,
        })
    }

    /// Encodes into exactly [`SUPERBLOCK_BYTES`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(SUPERBLOCK_BYTES);
        w.u64(self.la_size_sect);
        w.u64(self.uuids.current);
        w.u64(self.uuids.bitmap);
        w.u64(self.uuids.history[0]);
        w.u64(self.uuids.history[1]);
        w.u64(self.device_uuid);
        w.u64(0);
        w.u32(self.flags.0);
        w.u32(self.magic);
        w.u32(self.md_size_sect);
        w.i32(self.al_offset);
        w.u32(self.al_nr_extents);
        w.i32(self.bm_offset);
        w.u32(self.bm_bytes_per_bit);
        w.u32(self.la_peer_max_bio_size);
        w.u32(self.al_stripes);
        w.u32(self.al_stripe_size_4k);
        w.finish_padded(SUPERBLOCK_BYTES)
    }

    /// Activity-log striping with DRBD's default applied: both fields 0 means the old fixed
    /// 32 KiB log, 1 stripe of 8 blocks.
    pub fn effective_al_striping(&self) -> (u32, u32) {
        if self.al_stripes == 0 && self.al_stripe_size_4k == 0 {
            (1, 8)
        } else {
            (self.al_stripes, self.al_stripe_size_4k)
        }
    }

    /// True if the activity log needs no `apply-al` (drbdmeta's and the kernel's test).
    pub fn is_clean(&self) -> bool {
        self.magic != MD_MAGIC_84_UNCLEAN && self.flags.is_al_clean()
    }

    /// Has the device been created but never seen a peer (`UUID_JUST_CREATED`)?
    pub fn is_just_created(&self) -> bool {
        self.uuids.current == UUID_JUST_CREATED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Superblock {
        Superblock {
            la_size_sect: 130_000,
            uuids: Uuids {
                current: 0x1234_5678_90AB_CDEF,
                bitmap: 0xA1,
                history: [0xB2, 0xC3],
            },
            device_uuid: 0xABC,
            flags: MdFlags(0x93),
            magic: MD_MAGIC_08,
            md_size_sect: 80,
            al_offset: -64,
            al_nr_extents: 257,
            bm_offset: -72,
            bm_bytes_per_bit: 4096,
            la_peer_max_bio_size: 1 << 20,
            al_stripes: 1,
            al_stripe_size_4k: 8,
        }
    }

    #[test]
    fn field_offsets_match_drbd() {
        let buf = sample().encode();
        assert_eq!(buf.len(), SUPERBLOCK_BYTES);
        assert_eq!(&buf[0..8], &130_000u64.to_be_bytes());
        assert_eq!(&buf[8..16], &0x1234_5678_90AB_CDEFu64.to_be_bytes());
        assert_eq!(&buf[56..60], &0x93u32.to_be_bytes());
        assert_eq!(&buf[60..64], &[0x83, 0x74, 0x02, 0x6B]);
        assert_eq!(&buf[64..68], &80u32.to_be_bytes());
        assert_eq!(&buf[68..72], &(-64i32).to_be_bytes());
        assert_eq!(&buf[76..80], &(-72i32).to_be_bytes());
        assert_eq!(&buf[88..96], &[0, 0, 0, 1, 0, 0, 0, 8]);
        assert!(buf[96..].iter().all(|&b| b == 0));
    }

    #[test]
    fn round_trip() {
        let sb = sample();
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }

    #[test]
    fn short_buffer_is_an_error() {
        let buf = sample().encode();
        assert_eq!(
            Superblock::decode(&buf[..4095]),
            Err(InvalidData::MissingData("superblock padding"))
        );
        assert_eq!(
            Superblock::decode(&buf[..3]),
            Err(InvalidData::MissingData("la_size_sect"))
        );
    }

    #[test]
    fn flags_and_states() {
        let mut f = MdFlags::default();
        assert_eq!(f.disk_state(), "Inconsistent");
        f.set(MdFlags::CONSISTENT, true);
        assert_eq!(f.disk_state(), "Outdated");
        f.set(MdFlags::WAS_UP_TO_DATE, true);
        assert_eq!(f.disk_state(), "Consistent");
        f.set(MdFlags::PEER_OUT_DATED, true);
        assert_eq!(f.disk_state(), "UpToDate");
        f.set(MdFlags::CONSISTENT, false);
        assert!(!f.is_consistent());
    }

    #[test]
    fn default_striping() {
        let mut sb = sample();
        sb.al_stripes = 0;
        sb.al_stripe_size_4k = 0;
        assert_eq!(sb.effective_al_striping(), (1, 8));
    }

    proptest! {
        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..4200)) {
            if let Ok(sb) = Superblock::decode(&buf) {
                // Whatever decodes re-encodes to the same meaningful prefix.
                let again = sb.encode();
                prop_assert_eq!(&again[..48], &buf[..48]);
                prop_assert_eq!(&again[56..96], &buf[56..96]);
            }
        }

        #[test]
        fn struct_round_trip(la in any::<u64>(), u in any::<[u64; 4]>(), dev in any::<u64>(),
                             flags in any::<u32>(), magic in any::<u32>(), mds in any::<u32>(),
                             alo in any::<i32>(), ale in any::<u32>(), bmo in any::<i32>(),
                             bpb in any::<u32>(), bio in any::<u32>(), st in any::<u32>(),
                             ss in any::<u32>()) {
            let sb = Superblock {
                la_size_sect: la,
                uuids: Uuids { current: u[0], bitmap: u[1], history: [u[2], u[3]] },
                device_uuid: dev, flags: MdFlags(flags), magic, md_size_sect: mds,
                al_offset: alo, al_nr_extents: ale, bm_offset: bmo, bm_bytes_per_bit: bpb,
                la_peer_max_bio_size: bio, al_stripes: st, al_stripe_size_4k: ss,
            };
            prop_assert_eq!(Superblock::decode(&sb.encode())?, sb);
        }
    }
}
