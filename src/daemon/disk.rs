//! Attaching a volume's backing disk: open the data disk (checking that O_DIRECT works),
//! read the metadata, apply the activity log if the metadata is unclean (what `drbdadm
//! attach` does with `drbdmeta apply-al` first), and check that the sizes agree.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use crate::config::{MetaDiskSpec, NodeView, VolumeView};
use crate::core::AttachInfo;
use crate::meta::{
    self, Access, DEFAULT_AL_EXTENTS, Disk, Layout, MD_MAGIC_08, MD_MAGIC_84_UNCLEAN, MetaDevice,
    Superblock,
};

use super::error::DaemonError;

/// An attached backing disk.
#[derive(Debug)]
pub struct AttachedDisk {
    /// Where the metadata is.
    pub meta: MetaDevice,
    /// The superblock as last written; the core's fields are merged in before each write.
    pub superblock: Superblock,
    /// The data disk, held open while attached (opened with O_DIRECT when the file system
    /// supports it).
    pub data: File,
    /// Was O_DIRECT accepted?
    pub direct: bool,
    /// The metadata as read at attach (geometry and bitmap), after recovery.
    pub metadata: meta::Metadata,
    /// What attach had to do with the metadata, for the operator (activity log applied
    /// after a crash, damage found, full sync); empty when it was clean.
    pub notes: Vec<String>,
}

/// Where a volume's metadata lives.
pub fn meta_device(volume: &VolumeView) -> MetaDevice {
    match &volume.meta_disk {
        MetaDiskSpec::Internal => MetaDevice::new(&volume.disk, Layout::Internal),
        MetaDiskSpec::Indexed { path, index } => MetaDevice::new(path, Layout::Indexed(*index)),
        MetaDiskSpec::Flexible { path } => MetaDevice::new(path, Layout::FlexExternal),
    }
}

/// `RES/VOL`.
pub fn label(view: &NodeView, volume: &VolumeView) -> String {
    format!("{}/{}", view.resource, volume.volume)
}

/// Opens and checks a volume's disks. Returns the disk and what the core needs.
pub fn open(
    view: &NodeView,
    volume: &VolumeView,
) -> Result<(AttachedDisk, AttachInfo), DaemonError> {
    let label = label(view, volume);
    let (data, direct) = open_data(&volume.disk)?;
    let data_bytes = Disk::open(&volume.disk, Access::Read)
        .map_err(|source| DaemonError::Meta {
            label: label.clone(),
            source,
        })?
        .size();
    let dev = meta_device(volume);
    let mut md = meta::read_md(&dev).map_err(|e| read_error(view, &label, &dev, e))?;
    let notes = recover(&label, &dev, &mut md)?;

    let data_sect = data_bytes / 512;
    let max = md.max_usable_sectors();
    let capacity_sect = if dev.layout.is_external() {
        if data_sect > max {
            return Err(DaemonError::SizeMismatch {
                label,
                detail: format!(
                    "the data disk {} ({data_sect} sectors) is larger than the bitmap on {} \
                     covers ({max} sectors); use a larger meta-disk and run create-md again",
                    volume.disk.display(),
                    dev.path.display()
                ),
            });
        }
        data_sect
    } else {
        max
    };
    let la = md.superblock.la_size_sect;
    if la > capacity_sect {
        return Err(DaemonError::SizeMismatch {
            label,
            detail: format!(
                "the data disk {} offers {capacity_sect} sectors, less than the {la} sectors \
                 in use (last agreed size in the metadata); refusing to shrink the device",
                volume.disk.display()
            ),
        });
    }
    let mut superblock = md.superblock.clone();
    superblock.al_nr_extents = volume
        .disk_opts
        .get("al-extents")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_AL_EXTENTS);
    let info = AttachInfo {
        uuids: md.superblock.uuids,
        flags: md.superblock.flags,
        la_size_sect: la,
        capacity_sect,
        // Only bits that cover the device: apply-al also sets the padding bits of the
        // last extent, which the session's bitmap drops.
        oos_bits: md.bitmap.count_range(0, md.bitmap.bits()).unwrap_or(0),
    };
    Ok((
        AttachedDisk {
            meta: dev,
            superblock,
            data,
            direct,
            metadata: md,
            notes,
        },
        info,
    ))
}

/// Why the metadata could not be read: "no metadata" (run create-md) only when there is
/// none where the layout puts it; a bitmap or activity log that cannot be read is reported
/// as it is (file, offset), never with advice to overwrite it.
fn read_error(view: &NodeView, label: &str, dev: &MetaDevice, e: meta::MetaError) -> DaemonError {
    use meta::MetaError as M;
    match e {
        M::BadMagic { .. }
        | M::BadField { .. }
        | M::TooSmall { .. }
        | M::Truncated {
            what: "superblock", ..
        } => DaemonError::NoMetadata {
            label: label.to_owned(),
            resource: view.resource.clone(),
            meta: dev.path.clone(),
            detail: e.to_string(),
        },
        source => DaemonError::Meta {
            label: label.to_owned(),
            source,
        },
    }
}

/// Does what attach must do with the metadata before using it ([`meta::Recovery`]):
/// apply the activity log after a crash, as `drbdmeta apply-al` does, or mark everything
/// out of sync when the log or the bitmap cannot be trusted; writes the result back
/// (bitmap, ring, then superblock, each synced). Every damaged part is logged with its
/// location. Returns the notes for the operator.
fn recover(
    label: &str,
    dev: &MetaDevice,
    md: &mut meta::Metadata,
) -> Result<Vec<String>, DaemonError> {
    let meta_err = |source| DaemonError::Meta {
        label: label.to_owned(),
        source,
    };
    let recovered = md.recover().map_err(meta_err)?;
    for damage in &recovered.plan.damage {
        tracing::warn!(%label, meta = %dev.path.display(), "{damage}");
    }
    if let Some(a) = &recovered.applied {
        tracing::info!(%label, extents = ?a.marked, "activity-log extents marked out of sync");
    }
    let notes = recovery_notes(label, dev, &recovered, md.bitmap.bits());
    for note in &notes {
        match recovered.plan.recovery {
            meta::Recovery::FullSync => tracing::error!(%label, "{note}"),
            _ => tracing::warn!(%label, "{note}"),
        }
    }
    if recovered.changed() {
        meta::write_md(dev, md).map_err(meta_err)?;
    }
    Ok(notes)
}

/// What [`meta::Metadata::recover`] did, in sentences for the operator (the daemon's log,
/// `urbdadm attach` and `up`). `device_bits` is the bitmap's size in bits.
pub fn recovery_notes(
    label: &str,
    dev: &MetaDevice,
    recovered: &meta::Recovered,
    device_bits: u64,
) -> Vec<String> {
    let path = dev.path.display();
    let mut notes = Vec::new();
    let kib = |bits: u64| bits * 4;
    match recovered.plan.recovery {
        meta::Recovery::Nothing => {}
        meta::Recovery::ReinitializeAl => {
            for damage in &recovered.plan.damage {
                notes.push(format!(
                    "{label}: {path}: {damage}; the metadata was clean (nothing pending), \
                     the activity log was re-initialised"
                ));
            }
        }
        meta::Recovery::ApplyAl => {
            for damage in &recovered.plan.damage {
                notes.push(format!(
                    "{label}: {path}: {damage}; skipped as a torn write (the newest valid \
                     transactions count, as in DRBD)"
                ));
            }
            if let Some(a) = &recovered.applied {
                notes.push(if a.was_primary {
                    format!(
                        "{label}: crash of a Primary: activity log applied, {} extents \
                         ({} KiB) newly marked out of sync",
                        a.marked.len(),
                        kib(recovered.newly_set)
                    )
                } else {
                    format!(
                        "{label}: unclean metadata of a Secondary: nothing to apply, activity \
                         log re-initialised"
                    )
                });
            }
        }
        meta::Recovery::FullSync => {
            let why: Vec<String> = recovered
                .plan
                .damage
                .iter()
                .filter(|d| !matches!(d, meta::Damage::AlBlock { .. }))
                .map(ToString::to_string)
                .collect();
            notes.push(format!(
                "{label}: {path}: {}: the metadata cannot be trusted; all {} KiB marked out \
                 of sync (full sync)",
                why.join("; "),
                kib(device_bits)
            ));
        }
    }
    notes
}

/// Opens the data disk read-write, with O_DIRECT when possible (tmpfs, for one, refuses
/// it; the data path then falls back to buffered I/O).
fn open_data(path: &std::path::Path) -> Result<(File, bool), DaemonError> {
    let direct = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path);
    match direct {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
            tracing::warn!(disk = %path.display(), "O_DIRECT not supported; buffered I/O");
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map(|f| (f, false))
                .map_err(|e| DaemonError::io(format!("opening data disk {}", path.display()), e))
        }
        Err(e) => Err(DaemonError::io(
            format!("opening data disk {}", path.display()),
            e,
        )),
    }
}

/// Merges the core's fields into `disk.superblock` and writes it (one aligned 4 KiB write,
/// synced).
pub fn persist(
    disk: &mut AttachedDisk,
    update: &crate::core::MdUpdate,
) -> Result<(), crate::meta::MetaError> {
    let mut sb = disk.superblock.clone();
    sb.uuids = update.uuids;
    sb.flags = update.flags;
    sb.la_size_sect = update.la_size_sect;
    sb.magic = if update.clean {
        MD_MAGIC_08
    } else {
        MD_MAGIC_84_UNCLEAN
    };
    meta::write_superblock(&disk.meta, &sb)?;
    disk.superblock = sb;
    if update.clean {
        // A clean detach: nothing is pending (the bitmap was written back first), so the
        // clean superblock goes first and the ring is emptied after it. A crash in between
        // leaves a clean superblock over the old ring (attach takes it as it is: at worst
        // a superset of extents stays in the log), or over a ring torn while it was
        // rewritten (attach re-initialises it). Emptying the ring first, under the unclean
        // superblock of a Primary, a torn block among the re-initialised ones cannot be
        // replayed and costs a full sync (found by `disk/crash_tests.rs`).
        meta::initialize_al(&disk.meta, &mut disk.metadata)?;
    }
    Ok(())
}

/// The bitmap for a device of `size_sect` sectors, with the bits the metadata holds.
pub fn bitmap_for(disk: &AttachedDisk, size_sect: u64) -> meta::Bitmap {
    let mut b = meta::Bitmap::new(size_sect);
    b.or_words(0, disk.metadata.bitmap.words());
    b
}

/// Writes `bitmap` to the metadata's bitmap area (whole, then synced).
pub fn persist_bitmap(
    disk: &mut AttachedDisk,
    bitmap: &meta::Bitmap,
) -> Result<(), crate::meta::MetaError> {
    let mut md = disk.metadata.clone();
    md.superblock = disk.superblock.clone();
    md.bitmap = bitmap.clone();
    let capacity = md.bitmap.capacity();
    meta::write_bitmap_range(&disk.meta, &md, 0, capacity)?;
    disk.metadata.bitmap = md.bitmap;
    Ok(())
}

#[cfg(test)]
mod crash_tests;
