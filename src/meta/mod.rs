//! DRBD v08 on-disk metadata, byte for byte compatible with DRBD 8.4 and `drbdmeta`.
//!
//! A device's metadata is a 4 KiB [`Superblock`], an [`ActivityLog`] ring of 4 KiB
//! transactions and a [`Bitmap`] (one bit per 4 KiB of the replicated device), placed by
//! one of three [`Layout`]s. This module reads, creates and updates them:
//!
//! - [`probe`] says what create-md would overwrite;
//! - [`create_md`] initialises metadata exactly as `drbdmeta create-md` does;
//! - [`read_md`] reads and validates it (never panics on garbage);
//! - [`write_superblock`], [`write_bitmap_range`], [`write_al_transaction`] update it with
//!   single aligned 4 KiB writes, for the daemon;
//! - [`apply_al`] is drbdmeta's `apply-al` on a device; [`Metadata::plan_attach`] and
//!   [`Metadata::recover`] decide and do what attach does first (`recover`);
//! - [`Metadata::dump_md`], [`Metadata::show_gi`], [`Metadata::get_gi`] print what drbdmeta
//!   prints.
//!
//! Files: `codec` (cursor), `superblock`, `layout` (offset arithmetic), `al` (activity
//! log), `bitmap`, `gi` and `dump` (text formats), `probe` (signatures), `recover` (attach
//! after a crash, damaged metadata), `device` (I/O), `error`.

pub mod al;
pub mod bitmap;
pub mod codec;
pub mod device;
pub mod dump;
pub mod error;
pub mod gi;
pub mod layout;
pub mod probe;
pub mod recover;
pub mod superblock;

use std::path::PathBuf;

use serde::Serialize;

pub use al::{ActivityLog, AlBlock, AlTransaction, AlUpdate, AlWriter, Replay, ReplayError};
pub use bitmap::Bitmap;
pub use device::{Access, Disk};
pub use error::MetaError;
pub use layout::{Geometry, Layout, bm_bytes, required_meta_bytes};
pub use probe::Existing;
pub use recover::{AttachPlan, Damage, Recovered, Recovery};
pub use superblock::{
    CREATE_MD_AL_EXTENTS, DEFAULT_AL_EXTENTS, MD_MAGIC_08, MD_MAGIC_84_UNCLEAN, MdFlags,
    Superblock, UUID_JUST_CREATED, Uuids,
};

use al::AL_TRANSACTION_BYTES;
use layout::{DEFAULT_AL_STRIPE_SIZE_4K, DEFAULT_AL_STRIPES, MAX_BITMAP_BYTES, SECTOR_BYTES};
use superblock::{BM_BYTES_PER_BIT, SUPERBLOCK_BYTES};

/// A device holding metadata. For [`Layout::Internal`], `path` is the data disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MetaDevice {
    /// Block device or regular file.
    pub path: PathBuf,
    /// Where on it the metadata is.
    pub layout: Layout,
}

impl MetaDevice {
    /// Shorthand constructor.
    pub fn new(path: impl Into<PathBuf>, layout: Layout) -> Self {
        Self {
            path: path.into(),
            layout,
        }
    }
}

/// Parameters of [`create_md`]. The defaults reproduce `drbdmeta create-md` exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateOptions {
    /// Size of the backing data disk. Used by external layouts to check that the meta
    /// device can hold a bitmap for it (and to zero that bitmap); ignored for
    /// [`Layout::Internal`], where the data disk is the device itself.
    pub data_disk_bytes: u64,
    /// Value of the superblock's `al_nr_extents`. drbdmeta writes
    /// [`CREATE_MD_AL_EXTENTS`] (257) and the kernel replaces it with the configured
    /// `al-extents` ([`DEFAULT_AL_EXTENTS`], 1237) at its first metadata write; pass the
    /// configured value to record it right away. 1..=65534.
    pub al_extents: u32,
    /// `--peer-max-bio-size` of drbdmeta: the initial `la_peer_max_bio_size` (default 0).
    pub peer_max_bio_size: u32,
    /// `--al-stripes` (default 1).
    pub al_stripes: u32,
    /// `--al-stripe-size-kB` / 4 (default 8, i.e. 32 KiB).
    pub al_stripe_size_4k: u32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            data_disk_bytes: 0,
            al_extents: CREATE_MD_AL_EXTENTS,
            peer_max_bio_size: 0,
            al_stripes: DEFAULT_AL_STRIPES,
            al_stripe_size_4k: DEFAULT_AL_STRIPE_SIZE_4K,
        }
    }
}

impl CreateOptions {
    /// drbdmeta's defaults for a data disk of `data_disk_bytes`.
    pub fn new(data_disk_bytes: u64) -> Self {
        Self {
            data_disk_bytes,
            ..Self::default()
        }
    }
}

/// Everything read from (or written to) one device's metadata area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// The device it was read from, for error messages.
    pub path: PathBuf,
    /// The superblock as on disk.
    pub superblock: Superblock,
    /// Where everything is.
    pub geometry: Geometry,
    /// The bitmap for [`Metadata::effective_la_size_sect`] sectors.
    pub bitmap: Bitmap,
    /// The activity-log ring as on disk.
    pub al: ActivityLog,
}

impl Metadata {
    /// The last agreed size, clipped to what this metadata can cover (drbdmeta clips and
    /// warns the same way).
    pub fn effective_la_size_sect(&self) -> u64 {
        self.superblock
            .la_size_sect
            .min(self.geometry.max_usable_sectors())
    }

    /// Largest replicated size, sectors, this metadata supports (for internal metadata:
    /// the data disk minus the metadata area).
    pub fn max_usable_sectors(&self) -> u64 {
        self.geometry.max_usable_sectors()
    }

    /// Is the activity log clean (nothing to apply before attaching)?
    pub fn is_clean(&self) -> bool {
        self.superblock.is_clean()
    }

    /// drbdmeta's `dump-md` text. The three header comment lines differ (drbdmeta prints
    /// date, host and command line there), everything else is identical, except that
    /// the real flags are printed where drbdmeta < 9.33 prints 0 (see [`dump`]).
    pub fn dump_md(&self) -> String {
        dump::dump_md(
            &self.superblock,
            &self.geometry,
            &self.bitmap,
            self.effective_la_size_sect(),
        )
    }

    /// drbdmeta's `show-gi` text.
    pub fn show_gi(&self) -> String {
        gi::show_gi(&self.superblock)
    }

    /// drbdmeta's `get-gi` line.
    pub fn get_gi(&self) -> String {
        gi::get_gi(&self.superblock)
    }

    /// drbdmeta's `dstate` line.
    pub fn dstate(&self) -> String {
        gi::dstate(&self.superblock)
    }

    /// Strict activity-log check: fails on the first block with bad magic or checksum,
    /// naming its index and byte offset. (Replaying tolerates one torn block; this does
    /// not.)
    pub fn verify_al(&self) -> Result<(), MetaError> {
        match self.al.invalid_blocks().next() {
            None => Ok(()),
            Some((index, block)) => {
                let problem = if block.magic != al::AL_MAGIC {
                    format!(
                        "bad magic {:#010x}, expected {:#010x}",
                        block.magic,
                        al::AL_MAGIC
                    )
                } else {
                    format!(
                        "bad checksum: stored {:#010x}, computed {:#010x}",
                        block.stored_crc, block.computed_crc
                    )
                };
                Err(MetaError::BadAlBlock {
                    path: self.path.clone(),
                    index: index as u32,
                    offset: self.geometry.al_byte_offset() + index as u64 * 4096,
                    problem,
                })
            }
        }
    }

    /// Reconstructs the active extents from the ring, as drbdmeta's `apply-al` does.
    pub fn replay_al(&self) -> Result<Replay, MetaError> {
        self.al.replay().map_err(|source| MetaError::AlReplay {
            path: self.path.clone(),
            offset: self.geometry.al_byte_offset(),
            source,
        })
    }

    /// drbdmeta's `apply-al`, in memory: if the node was Primary, every extent active in
    /// the log is marked out of sync; then the log is re-initialised and the metadata
    /// marked clean. Returns the number of newly set bits. Persist with [`write_md`].
    ///
    /// An unreadable log is an error only if the node was Primary, like in drbdmeta.
    pub fn apply_al(&mut self) -> Result<u64, MetaError> {
        self.apply_al_report().map(|r| r.newly_set)
    }

    /// [`Metadata::apply_al`] with what it found and did. Follows drbdmeta's
    /// `meta_apply_al` step by step (v08, DRBD 8.4 ring):
    ///
    /// - replay the ring (`replay_al_84`); if that fails and the node was Primary, fail and
    ///   change nothing (drbdmeta exits 1 or 2); if it fails otherwise, the error is
    ///   ignored ("no need to apply the AL") and the ring re-initialised;
    /// - if the node was Primary, mark every active extent out of sync;
    /// - re-initialise the ring when it held update transactions (a ring of
    ///   "initialized" blocks is left as it is);
    /// - set `MDF_AL_CLEAN` and the clean magic.
    ///
    /// Extents are marked as drbd-utils 9.22's `apply_al` marks them: 128 bitmap bytes
    /// each, clipped to the bitmap (of the last agreed size, rounded up to 4 KiB), extents
    /// past it skipped. (drbd-utils 9.33 rewrote that loop and also skips an extent whose
    /// bytes end exactly at the end of the bitmap, an off-by-one that leaves the last
    /// 4 MiB of a device sized in multiples of 128 MiB in sync; we mark it.)
    pub fn apply_al_report(&mut self) -> Result<AppliedAl, MetaError> {
        let was_primary = self.superblock.flags.is_primary();
        let replay = self.replay_al();
        let (reinitialize, replay) = match replay {
            Err(e) if was_primary => return Err(e),
            Err(_) => (true, None),
            Ok(r) => (r.updates > 0, Some(r)),
        };
        let mut newly_set = 0;
        let mut marked = Vec::new();
        if was_primary && let Some(r) = &replay {
            for &extent in &r.active_extents {
                newly_set += self.bitmap.set_al_extent(extent);
                marked.push(extent);
            }
        }
        if reinitialize {
            self.al =
                ActivityLog::initialized(self.geometry.al_stripes, self.geometry.al_stripe_size_4k);
        }
        // drbdmeta writes the striping it used, the 32 KiB default for 0/0.
        let (stripes, size) = self.superblock.effective_al_striping();
        self.superblock.al_stripes = stripes;
        self.superblock.al_stripe_size_4k = size;
        self.superblock.flags.set(MdFlags::AL_CLEAN, true);
        self.superblock.magic = MD_MAGIC_08;
        Ok(AppliedAl {
            was_primary,
            active_extents: replay.map(|r| r.active_extents).unwrap_or_default(),
            marked,
            newly_set,
            reinitialized: reinitialize,
        })
    }
}

/// What [`Metadata::apply_al_report`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedAl {
    /// `MDF_PRIMARY_IND` was set: the log had to be applied.
    pub was_primary: bool,
    /// Extents active in the log at its newest transaction, ascending.
    pub active_extents: Vec<u32>,
    /// Extents marked out of sync (all active ones if the node was Primary, else none).
    pub marked: Vec<u32>,
    /// Bitmap bits that were clear and are now set.
    pub newly_set: u64,
    /// The ring was re-initialised.
    pub reinitialized: bool,
}

/// What create-md would overwrite on `dev`: valid v08 metadata where the layout puts it,
/// other DRBD metadata, a filesystem/swap/LUKS/LVM signature at the start of the device,
/// or any other non-zero data in its first 68 KiB.
pub fn probe(dev: &MetaDevice) -> Result<Existing, MetaError> {
    let disk = Disk::open(&dev.path, Access::Read)?;
    if let Ok(md_offset) = layout::md_byte_offset(dev.layout, disk.size()) {
        let buf = disk.read_at(md_offset, SUPERBLOCK_BYTES as u64, "superblock")?;
        if let Ok(sb) = Superblock::decode(&buf) {
            if Geometry::from_superblock(dev.layout, disk.size(), &sb).is_ok() {
                return Ok(Existing::ValidMetadata {
                    current_uuid: sb.uuids.current,
                    flags: sb.flags,
                    la_size_sect: sb.la_size_sect,
                    clean: sb.is_clean(),
                });
            }
            if let Some(name) = probe::magic_name(sb.magic) {
                return Ok(Existing::OtherMetadata(name.to_owned()));
            }
        }
    }
    let len = disk.size().min(probe::PROBE_BYTES as u64);
    let head = disk.read_at(0, len, "device start")?;
    if let Some(sig) = probe::signature(&head) {
        return Ok(Existing::FilesystemSignature(sig));
    }
    if head.iter().any(|&b| b != 0) {
        return Ok(Existing::UnrecognisedData);
    }
    Ok(Existing::Nothing)
}

fn layout_error(dev: &MetaDevice, md_offset: u64, e: layout::LayoutError) -> MetaError {
    MetaError::from_layout(dev.path.clone(), dev.layout, md_offset, e)
}

/// Initialises metadata on `dev` as `drbdmeta create-md` does: current UUID
/// [`UUID_JUST_CREATED`], other UUIDs 0, flags `MDF_AL_CLEAN`, last agreed size 0, an
/// activity log of valid "initialized" transactions, a zeroed bitmap; the superblock is
/// written last, then everything is synced.
///
/// Refuses, writing nothing, when the device is read-only, busy (block device in use), or
/// too small for the layout and `opts.data_disk_bytes` ([`MetaError::TooSmall`] gives the
/// size needed). It does not look for existing data: call [`probe`] first.
pub fn create_md(dev: &MetaDevice, opts: &CreateOptions) -> Result<Metadata, MetaError> {
    if opts.al_extents == 0 || opts.al_extents > al::AL_EXTENTS_MAX {
        return Err(MetaError::Invalid {
            path: dev.path.clone(),
            problem: format!("al-extents {} out of range 1..=65534", opts.al_extents),
        });
    }
    let access = match dev.layout {
        Layout::Indexed(_) => Access::Write,
        Layout::Internal | Layout::FlexExternal => Access::WriteExclusive,
    };
    let disk = Disk::open(&dev.path, access)?;
    let size = disk.size();
    let geo = Geometry::for_create(dev.layout, size, opts.al_stripes, opts.al_stripe_size_4k)
        .map_err(|e| layout_error(dev, 0, e))?;
    let data_sectors = match dev.layout {
        Layout::Internal => size / SECTOR_BYTES,
        _ => opts.data_disk_bytes / SECTOR_BYTES,
    };
    // Bitmap space the layout leaves, and what the data disk needs.
    let bm_area = match dev.layout {
        Layout::Internal => {
            (i64::from(geo.al_offset) - i64::from(geo.bm_offset)) as u64 * SECTOR_BYTES
        }
        _ => geo.area_end() - geo.bm_byte_offset(),
    };
    if dev.layout.is_external() {
        let needed_bm = bm_bytes(data_sectors);
        if needed_bm > bm_area {
            let needed = (geo.bm_byte_offset() + needed_bm)
                .max(required_meta_bytes(&dev.layout, opts.data_disk_bytes));
            return Err(MetaError::too_small(
                dev.path.clone(),
                dev.layout,
                needed,
                size,
            ));
        }
    }

    let sb = Superblock {
        la_size_sect: 0,
        uuids: Uuids {
            current: UUID_JUST_CREATED,
            bitmap: 0,
            history: [0, 0],
        },
        device_uuid: 0,
        flags: MdFlags(MdFlags::AL_CLEAN),
        magic: MD_MAGIC_08,
        md_size_sect: geo.md_size_sect,
        al_offset: geo.al_offset,
        al_nr_extents: opts.al_extents,
        bm_offset: geo.bm_offset,
        bm_bytes_per_bit: BM_BYTES_PER_BIT,
        la_peer_max_bio_size: opts.peer_max_bio_size,
        al_stripes: opts.al_stripes,
        al_stripe_size_4k: opts.al_stripe_size_4k,
    };

    // Activity log: every ring position an "initialized" transaction.
    write_initialized_al(&disk, &geo)?;
    const CHUNK: u64 = 1 << 20;

    // Bitmap: zero what drbdmeta zeroes (a bitmap for a device the size of this one) and
    // at least what the data disk needs, within the bitmap area.
    let zero_len = bm_bytes(size / SECTOR_BYTES)
        .max(bm_bytes(data_sectors))
        .min(bm_area);
    let zeros = vec![0u8; CHUNK.min(zero_len) as usize];
    let mut done = 0;
    while done < zero_len {
        let n = (zero_len - done).min(CHUNK);
        disk.write_at(geo.bm_byte_offset() + done, &zeros[..n as usize], "bitmap")?;
        done += n;
    }
    disk.sync()?;

    disk.write_at(geo.md_offset, &sb.encode(), "superblock")?;
    disk.sync()?;

    Ok(Metadata {
        path: dev.path.clone(),
        superblock: sb,
        al: ActivityLog::initialized(geo.al_stripes, geo.al_stripe_size_4k),
        geometry: geo,
        bitmap: Bitmap::new(0),
    })
}

fn read_superblock(disk: &Disk, dev: &MetaDevice) -> Result<(Superblock, Geometry), MetaError> {
    let md_offset =
        layout::md_byte_offset(dev.layout, disk.size()).map_err(|e| layout_error(dev, 0, e))?;
    let buf = disk.read_at(md_offset, SUPERBLOCK_BYTES as u64, "superblock")?;
    let sb = Superblock::decode(&buf).map_err(|_| MetaError::Truncated {
        path: dev.path.clone(),
        what: "superblock",
        offset: md_offset,
        len: SUPERBLOCK_BYTES as u64,
        device_bytes: disk.size(),
    })?;
    if sb.magic != MD_MAGIC_08 && sb.magic != MD_MAGIC_84_UNCLEAN {
        let hint = match probe::magic_name(sb.magic) {
            Some("DRBD 0.7 metadata") => " (DRBD 0.7 metadata)",
            Some("DRBD 9 metadata") => " (DRBD 9 metadata)",
            _ if sb.magic == 0 => " (no metadata; run create-md)",
            _ => "",
        };
        return Err(MetaError::BadMagic {
            path: dev.path.clone(),
            layout: dev.layout,
            field: "magic",
            offset: md_offset + 60,
            found: sb.magic,
            expected: MD_MAGIC_08,
            hint,
        });
    }
    let geo = Geometry::from_superblock(dev.layout, disk.size(), &sb)
        .map_err(|e| layout_error(dev, md_offset, e))?;
    Ok((sb, geo))
}

/// Reads and validates the metadata of `dev` (superblock, bitmap for the last agreed size,
/// activity-log ring), with the checks of drbdmeta and the kernel's attach. Opens the
/// device read-only; never panics and never allocates more than the device holds.
/// Activity-log blocks with a bad checksum are reported in [`Metadata::al`], not as an
/// error (a torn last transaction is expected after a crash): see
/// [`Metadata::verify_al`].
pub fn read_md(dev: &MetaDevice) -> Result<Metadata, MetaError> {
    let disk = Disk::open(&dev.path, Access::Read)?;
    let (sb, geo) = read_superblock(&disk, dev)?;

    let la = sb.la_size_sect.min(geo.max_usable_sectors());
    let bm_len = bm_bytes(la);
    if bm_len > MAX_BITMAP_BYTES {
        return Err(MetaError::Invalid {
            path: dev.path.clone(),
            problem: format!("bitmap of {bm_len} bytes exceeds {MAX_BITMAP_BYTES}"),
        });
    }
    let bytes = disk.read_at(geo.bm_byte_offset(), bm_len, "bitmap")?;
    let bitmap = Bitmap::from_le_bytes(la, &bytes).ok_or_else(|| MetaError::Invalid {
        path: dev.path.clone(),
        problem: "bitmap length mismatch".to_owned(),
    })?;

    let al_len = u64::from(geo.al_blocks()) * AL_TRANSACTION_BYTES as u64;
    let raw = disk.read_at(geo.al_byte_offset(), al_len, "activity log")?;
    let blocks = raw
        .chunks_exact(AL_TRANSACTION_BYTES)
        .map(AlTransaction::decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| MetaError::Truncated {
            path: dev.path.clone(),
            what: "activity log",
            offset: geo.al_byte_offset(),
            len: al_len,
            device_bytes: disk.size(),
        })?;
    Ok(Metadata {
        path: dev.path.clone(),
        al: ActivityLog {
            stripes: geo.al_stripes,
            stripe_size_4k: geo.al_stripe_size_4k,
            blocks,
        },
        superblock: sb,
        geometry: geo,
        bitmap,
    })
}

/// Opens `dev` for writing and checks that `geo` is still what its superblock location
/// and size imply.
fn open_for_update(dev: &MetaDevice, sb: &Superblock) -> Result<(Disk, Geometry), MetaError> {
    let disk = Disk::open(&dev.path, Access::Write)?;
    let md_offset =
        layout::md_byte_offset(dev.layout, disk.size()).map_err(|e| layout_error(dev, 0, e))?;
    let geo = Geometry::from_superblock(dev.layout, disk.size(), sb)
        .map_err(|e| layout_error(dev, md_offset, e))?;
    Ok((disk, geo))
}

/// Writes `sb` to `dev` with one aligned 4 KiB write and syncs. Refuses (writing nothing)
/// a superblock that is not valid for the layout and device size.
pub fn write_superblock(dev: &MetaDevice, sb: &Superblock) -> Result<(), MetaError> {
    let (disk, geo) = open_for_update(dev, sb)?;
    disk.write_at(geo.md_offset, &sb.encode(), "superblock")?;
    disk.sync()
}

/// Writes the 4 KiB bitmap blocks of `md.bitmap` that hold bits `first..first+count` (one
/// aligned 4 KiB write per block) and syncs. Update `md.bitmap` first (e.g.
/// [`Bitmap::set_range`]).
pub fn write_bitmap_range(
    dev: &MetaDevice,
    md: &Metadata,
    first: u64,
    count: u64,
) -> Result<(), MetaError> {
    if first
        .checked_add(count)
        .is_none_or(|end| end > md.bitmap.capacity())
    {
        return Err(MetaError::BitmapRange {
            path: dev.path.clone(),
            source: bitmap::OutOfRange {
                first,
                count,
                capacity: md.bitmap.capacity(),
            },
        });
    }
    write_bitmap_blocks(dev, md, Bitmap::blocks_of(first, count))
}

/// Writes the given 4 KiB bitmap blocks of `md.bitmap` (one aligned 4 KiB write each) and
/// syncs. The blocks must lie within the bitmap (as [`Bitmap::changed_blocks`] gives them).
pub fn write_bitmap_blocks(
    dev: &MetaDevice,
    md: &Metadata,
    blocks: impl IntoIterator<Item = u64>,
) -> Result<(), MetaError> {
    let (disk, geo) = open_for_update(dev, &md.superblock)?;
    if geo != md.geometry {
        return Err(MetaError::Mismatch {
            path: dev.path.clone(),
            problem: format!(
                "device has {} bytes, metadata was read for {}",
                geo.device_bytes, md.geometry.device_bytes
            ),
        });
    }
    let capacity = md.bitmap.capacity();
    let blocks: Vec<u64> = blocks.into_iter().collect();
    // All checked before anything is written.
    if let Some(&bad) = blocks
        .iter()
        .find(|&&b| b.saturating_mul(bitmap::BITS_PER_BLOCK) >= capacity)
    {
        return Err(MetaError::BitmapRange {
            path: dev.path.clone(),
            source: bitmap::OutOfRange {
                first: bad.saturating_mul(bitmap::BITS_PER_BLOCK),
                count: bitmap::BITS_PER_BLOCK,
                capacity,
            },
        });
    }
    for block in blocks {
        disk.write_at(
            geo.bm_byte_offset() + block * 4096,
            &md.bitmap.block_bytes(block),
            "bitmap block",
        )?;
    }
    disk.sync()
}

/// Writes activity-log transaction `tr` into its ring position (by `tr.tr_number`, with
/// striping) with one aligned 4 KiB write, syncs, and records it in `md.al`.
pub fn write_al_transaction(
    dev: &MetaDevice,
    md: &mut Metadata,
    tr: &AlTransaction,
) -> Result<(), MetaError> {
    let (disk, geo) = open_for_update(dev, &md.superblock)?;
    let buf = tr.encode();
    disk.write_at(
        geo.al_block_offset(tr.tr_number),
        &buf,
        "activity log transaction",
    )?;
    disk.sync()?;
    let index = md.al.block_index(tr.tr_number) as usize;
    if let (Some(slot), Ok(block)) = (md.al.blocks.get_mut(index), AlTransaction::decode(&buf)) {
        *slot = block;
    }
    Ok(())
}

/// drbdmeta's `apply-al` on `dev` (see [`Metadata::apply_al_report`]): writes what
/// drbdmeta writes and nothing else — the bitmap if extents were marked, the superblock if
/// it changed, the ring if it is re-initialised — each synced before the next. Returns the
/// metadata as now on disk and what was done. When it fails, nothing was written.
///
/// The order (drbdmeta writes the ring before the superblock; the bytes in the end are the
/// same) is what makes every crash in between attach: once the bitmap holds the extents,
/// the clean superblock says nothing is pending, and a ring torn while it is re-initialised
/// is then merely re-initialised again. The other way round, a torn ring block among
/// re-initialised ones under an unclean Primary superblock cannot be replayed (drbdmeta
/// refuses it) and would cost a full sync (found by `daemon/disk/crash_tests.rs`).
pub fn apply_al(dev: &MetaDevice) -> Result<(Metadata, AppliedAl), MetaError> {
    let mut md = read_md(dev)?;
    let before = md.superblock.encode();
    let applied = md.apply_al_report()?;
    let (disk, geo) = open_for_update(dev, &md.superblock)?;
    if !applied.marked.is_empty() {
        disk.write_at(geo.bm_byte_offset(), &md.bitmap.to_le_bytes(), "bitmap")?;
        disk.sync()?;
    }
    let after = md.superblock.encode();
    if after != before || !applied.marked.is_empty() {
        disk.write_at(geo.md_offset, &after, "superblock")?;
        disk.sync()?;
    }
    if applied.reinitialized {
        write_initialized_al(&disk, &geo)?;
    }
    Ok((md, applied))
}

/// Re-initialises the activity log on `dev` (every block an "initialized" transaction,
/// then synced) and records that in `md.al`: nothing is pending any more. The superblock
/// is not touched.
pub fn initialize_al(dev: &MetaDevice, md: &mut Metadata) -> Result<(), MetaError> {
    let (disk, geo) = open_for_update(dev, &md.superblock)?;
    write_initialized_al(&disk, &geo)?;
    md.al = ActivityLog::initialized(geo.al_stripes, geo.al_stripe_size_4k);
    Ok(())
}

fn write_initialized_al(disk: &Disk, geo: &Geometry) -> Result<(), MetaError> {
    let block = AlTransaction::initialized().encode();
    let al_blocks = u64::from(geo.al_blocks());
    const CHUNK: u64 = 1 << 20;
    let per_chunk = CHUNK / AL_TRANSACTION_BYTES as u64;
    let mut written = 0;
    while written < al_blocks {
        let n = per_chunk.min(al_blocks - written);
        let buf = block.repeat(n as usize);
        disk.write_at(
            geo.al_byte_offset() + written * AL_TRANSACTION_BYTES as u64,
            &buf,
            "activity log",
        )?;
        written += n;
    }
    disk.sync()
}

/// Writes all of `md` back (e.g. after [`Metadata::recover`]), each part synced before the
/// next, so that a crash between any two writes leaves metadata that attaches with every
/// out-of-sync block still marked (checked by `daemon/disk/crash_tests.rs`):
/// - the bitmap first: it may hold bits that only the activity log covered until now (an
///   activity log written in the same flush could reach the disk first and drop them);
/// - then, for a clean superblock, the superblock before the log: nothing is pending once
///   the bitmap is durable, and a log torn while it is rewritten under a clean superblock
///   is only re-initialised at the next attach, where under an unclean one it could not be
///   replayed (a full sync);
/// - for an unclean superblock, the log before the superblock.
pub fn write_md(dev: &MetaDevice, md: &Metadata) -> Result<(), MetaError> {
    let (disk, geo) = open_for_update(dev, &md.superblock)?;
    disk.write_at(geo.bm_byte_offset(), &md.bitmap.to_le_bytes(), "bitmap")?;
    disk.sync()?;
    let write_sb = || -> Result<(), MetaError> {
        disk.write_at(geo.md_offset, &md.superblock.encode(), "superblock")?;
        disk.sync()
    };
    let clean = md.is_clean();
    if clean {
        write_sb()?;
    }
    let mut al = Vec::with_capacity(md.al.blocks.len() * AL_TRANSACTION_BYTES);
    for block in &md.al.blocks {
        let mut buf = block.transaction.encode();
        if !block.is_valid() {
            // Keep a bad block bad rather than silently making it valid.
            buf[0..4].copy_from_slice(&block.magic.to_be_bytes());
            buf[8..12].copy_from_slice(&block.stored_crc.to_be_bytes());
        }
        al.extend_from_slice(&buf);
    }
    disk.write_at(geo.al_byte_offset(), &al, "activity log")?;
    disk.sync()?;
    if !clean {
        write_sb()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A superblock with the right magic and arbitrary other fields, on a small file
        /// with arbitrary activity-log bytes: read_md returns, it never panics.
        #[test]
        fn read_md_never_panics(la in any::<u64>(), md_size in any::<u32>(), al_off in any::<i32>(),
                                bm_off in any::<i32>(), stripes in any::<u32>(), size4k in any::<u32>(),
                                internal in any::<bool>(), noise in proptest::collection::vec(any::<u8>(), 4096),
                                file_kib in 68u64..400) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.img");
            let file = std::fs::File::create(&path).unwrap();
            file.set_len(file_kib * 1024).unwrap();
            let layout = if internal { Layout::Internal } else { Layout::FlexExternal };
            let md_offset = layout::md_byte_offset(layout, file_kib * 1024).unwrap();
            let sb = Superblock {
                la_size_sect: la, uuids: Uuids::default(), device_uuid: 0, flags: MdFlags(0x80),
                magic: MD_MAGIC_08, md_size_sect: md_size, al_offset: al_off, al_nr_extents: 1,
                bm_offset: bm_off, bm_bytes_per_bit: 4096, la_peer_max_bio_size: 0,
                al_stripes: stripes % 4, al_stripe_size_4k: size4k % 32,
            };
            use std::os::unix::fs::FileExt;
            file.write_all_at(&sb.encode(), md_offset).unwrap();
            let al_at = md_offset.saturating_sub(32768).min(4096);
            file.write_all_at(&noise, al_at).unwrap();
            drop(file);
            let dev = MetaDevice::new(&path, layout);
            if let Ok(md) = read_md(&dev) {
                let _ = md.dump_md();
                let _ = md.replay_al();
                prop_assert!(md.bitmap.byte_len() <= file_kib * 1024);
            }
        }
    }

    #[test]
    fn create_then_read_round_trips_on_a_file() {
        let dir = tempfile::tempdir().unwrap();
        for layout in [Layout::Internal, Layout::FlexExternal, Layout::Indexed(0)] {
            let path = dir.path().join(format!("{layout:?}.img"));
            std::fs::File::create(&path)
                .unwrap()
                .set_len(130 << 20)
                .unwrap();
            let dev = MetaDevice::new(&path, layout);
            let created = create_md(&dev, &CreateOptions::new(1 << 30)).unwrap();
            let read = read_md(&dev).unwrap();
            assert_eq!(created, read);
            assert!(read.is_clean());
            assert_eq!(read.replay_al().unwrap().updates, 0);
            assert!(matches!(
                probe(&dev).unwrap(),
                Existing::ValidMetadata {
                    current_uuid: 4,
                    ..
                }
            ));
        }
    }
}
