//! What attaching a disk does with its metadata before using it: apply the activity log
//! after a crash (what `drbdadm attach` has `drbdmeta apply-al` do first), and decide what
//! to do when the activity log or the bitmap cannot be trusted.
//!
//! DRBD 8.4's rules, which we keep: a transaction block with bad magic or checksum is a
//! torn write and is skipped, the newest valid transactions win (drbdmeta's
//! `replay_al_84`, "N corrupt AL transactions found"); only a ring without a single valid
//! transaction, or with valid ones but no update among them and more than the first block
//! bad, is an error — and only for a node that was Primary (drbdmeta exits 1 or 2, so
//! `drbdadm attach` fails). Where DRBD refuses, urbd attaches with every block marked out
//! of sync (full sync) and says so: the disk is never treated as clean, and the operator
//! is not left with a disk that cannot attach.
//!
//! A bitmap is impossible when it has bits set past the 4 MiB extent that holds the end of
//! the device (`apply-al` legitimately sets the padding bits of that last extent; nothing
//! sets bits past it): something else wrote there, so the bits that cover the device
//! cannot be trusted either, and the disk is attached with a full sync.

use std::fmt;

use serde::Serialize;

use super::al::AL_MAGIC;
use super::bitmap::BM_BYTES_PER_AL_EXTENT;
use super::superblock::MD_MAGIC_08;
use super::{ActivityLog, AppliedAl, MdFlags, MetaError, Metadata};

/// A damaged part of the metadata, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Damage {
    /// An activity-log transaction block with bad magic or checksum.
    AlBlock {
        /// Index of the 4 KiB block in the on-disk ring.
        block: u32,
        /// Byte offset of the block on the device.
        offset: u64,
        /// The transaction number it claims (meaningful only when the magic is right).
        tr_number: u32,
        /// What is wrong.
        problem: String,
    },
    /// The ring holds nothing that can be replayed.
    AlUnusable {
        /// Byte offset of the activity log.
        offset: u64,
        /// drbdmeta's reason.
        problem: String,
    },
    /// Bits set past the extent that holds the end of the device.
    BitmapBeyondDevice {
        /// Byte offset of the first bitmap word with such a bit, on the device.
        offset: u64,
        /// That word's index in the bitmap.
        word: u64,
        /// How many such bits are set.
        bits: u64,
        /// Bits that cover the device.
        device_bits: u64,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlBlock {
                block,
                offset,
                tr_number,
                problem,
            } => write!(
                f,
                "activity log block {block} (byte offset {offset}, transaction {tr_number}): {problem}"
            ),
            Self::AlUnusable { offset, problem } => {
                write!(f, "activity log at byte offset {offset}: {problem}")
            }
            Self::BitmapBeyondDevice {
                offset,
                word,
                bits,
                device_bits,
            } => write!(
                f,
                "bitmap word {word} at byte offset {offset}: {bits} bits set past the end of \
                 the device ({device_bits} bits cover it)"
            ),
        }
    }
}

/// What attach does before using the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Recovery {
    /// Clean metadata with an intact log: nothing to do.
    Nothing,
    /// Clean metadata, but blocks of the log are damaged: re-initialise the log so the
    /// next transactions do not mix with them (nothing was pending).
    ReinitializeAl,
    /// The metadata is unclean (crash while attached): `apply-al`, exactly as drbdmeta.
    ApplyAl,
    /// The log (of a node that was Primary) or the bitmap cannot be trusted: mark every
    /// block out of sync.
    FullSync,
}

/// The decision for one device's metadata, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachPlan {
    /// What to do.
    pub recovery: Recovery,
    /// Every damaged part found (also those DRBD tolerates, such as a torn last
    /// transaction), for the log.
    pub damage: Vec<Damage>,
}

/// What [`Metadata::recover`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovered {
    /// The plan carried out.
    pub plan: AttachPlan,
    /// For [`Recovery::ApplyAl`]: what apply-al did.
    pub applied: Option<AppliedAl>,
    /// Bitmap bits newly set (by apply-al or the full sync).
    pub newly_set: u64,
}

impl Recovered {
    /// Did anything change in memory (so the metadata must be written back)?
    pub fn changed(&self) -> bool {
        self.plan.recovery != Recovery::Nothing
    }
}

impl Metadata {
    /// Decides what attach must do with this metadata (see the module documentation).
    /// Reads nothing and changes nothing.
    pub fn plan_attach(&self) -> AttachPlan {
        let mut damage: Vec<Damage> = self.damaged_al_blocks();
        let bitmap_damage = self.bitmap_beyond_device();
        let al_unusable = match self.replay_al() {
            Ok(_) => None,
            Err(MetaError::AlReplay { offset, source, .. }) => Some(Damage::AlUnusable {
                offset,
                problem: source.to_string(),
            }),
            Err(other) => Some(Damage::AlUnusable {
                offset: self.geometry.al_byte_offset(),
                problem: other.to_string(),
            }),
        };
        let primary = self.superblock.flags.is_primary();
        let unclean = !self.is_clean();
        let recovery = if bitmap_damage.is_some() || (unclean && primary && al_unusable.is_some()) {
            Recovery::FullSync
        } else if unclean {
            Recovery::ApplyAl
        } else if !damage.is_empty() {
            Recovery::ReinitializeAl
        } else {
            Recovery::Nothing
        };
        damage.extend(al_unusable);
        damage.extend(bitmap_damage);
        AttachPlan { recovery, damage }
    }

    /// Carries out [`Metadata::plan_attach`] in memory. Persist with
    /// [`write_md`](super::write_md) when [`Recovered::changed`].
    pub fn recover(&mut self) -> Result<Recovered, MetaError> {
        let plan = self.plan_attach();
        let mut applied = None;
        let mut newly_set = 0;
        match plan.recovery {
            Recovery::Nothing => {}
            Recovery::ReinitializeAl => self.reinitialize_al(),
            Recovery::ApplyAl => {
                let a = self.apply_al_report()?;
                newly_set = a.newly_set;
                applied = Some(a);
            }
            Recovery::FullSync => newly_set = self.mark_full_sync(),
        }
        Ok(Recovered {
            plan,
            applied,
            newly_set,
        })
    }

    /// Marks every block of the device out of sync, clears the bits past it, and leaves
    /// the log re-initialised and the metadata clean (what the full sync starts from).
    /// Returns the number of bits newly set.
    pub fn mark_full_sync(&mut self) -> u64 {
        let bits = self.bitmap.bits();
        let capacity = self.bitmap.capacity();
        let newly = self.bitmap.set_range(0, bits).unwrap_or(0);
        let _ = self.bitmap.clear_range(bits, capacity - bits);
        self.reinitialize_al();
        newly
    }

    /// An empty ring of "initialized" blocks and a clean superblock (clean magic,
    /// `MDF_AL_CLEAN`): nothing is pending.
    pub fn reinitialize_al(&mut self) {
        self.al =
            ActivityLog::initialized(self.geometry.al_stripes, self.geometry.al_stripe_size_4k);
        self.superblock.flags.set(MdFlags::AL_CLEAN, true);
        self.superblock.magic = MD_MAGIC_08;
    }

    /// Every ring block with bad magic or checksum, with its location.
    pub fn damaged_al_blocks(&self) -> Vec<Damage> {
        self.al
            .invalid_blocks()
            .map(|(index, block)| {
                let problem = if block.magic != AL_MAGIC {
                    format!("bad magic {:#010x}, expected {AL_MAGIC:#010x}", block.magic)
                } else {
                    format!(
                        "bad checksum: stored {:#010x}, computed {:#010x}",
                        block.stored_crc, block.computed_crc
                    )
                };
                Damage::AlBlock {
                    block: index as u32,
                    offset: self.geometry.al_byte_offset() + index as u64 * 4096,
                    tr_number: block.transaction.tr_number,
                    problem,
                }
            })
            .collect()
    }

    /// Bits set past the 4 MiB extent holding the end of the device, if any.
    pub fn bitmap_beyond_device(&self) -> Option<Damage> {
        let bits_per_extent = BM_BYTES_PER_AL_EXTENT * 8;
        let device_bits = self.bitmap.bits();
        let allowed = device_bits.next_multiple_of(bits_per_extent);
        let capacity = self.bitmap.capacity();
        if allowed >= capacity {
            return None;
        }
        let count = self.bitmap.count_range(allowed, capacity - allowed).ok()?;
        if count == 0 {
            return None;
        }
        let word = (allowed / 64..capacity / 64)
            .find(|&w| self.bitmap.words().get(w as usize).is_some_and(|&v| v != 0))?;
        Some(Damage::BitmapBeyondDevice {
            offset: self.geometry.bm_byte_offset() + word * 8,
            word,
            bits: count,
            device_bits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{AlUpdate, AlWriter, CreateOptions, Layout, MetaDevice, create_md};

    /// Metadata of a 100 MiB + 4 KiB device (26 extents, the last one partial), on a file.
    fn sample() -> (tempfile::TempDir, Metadata) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(130 << 20)
            .unwrap();
        let dev = MetaDevice::new(&path, Layout::Indexed(0));
        let mut md = create_md(&dev, &CreateOptions::new(1 << 30)).unwrap();
        md.superblock.la_size_sect = (100 << 11) + 8;
        md.bitmap = crate::meta::Bitmap::new(md.superblock.la_size_sect);
        (dir, md)
    }

    fn crash_with(md: &mut Metadata, extents: &[u32]) {
        md.superblock.magic = crate::meta::MD_MAGIC_84_UNCLEAN;
        md.superblock.flags = MdFlags(MdFlags::CONSISTENT | MdFlags::PRIMARY_IND);
        let mut w = AlWriter::new(1237, 0);
        for (i, &e) in extents.iter().enumerate() {
            let tr = w
                .record(&[AlUpdate {
                    slot: i as u16,
                    extent: e,
                }])
                .unwrap();
            let idx = md.al.block_index(tr.tr_number) as usize;
            md.al.blocks[idx] = crate::meta::AlTransaction::decode(&tr.encode()).unwrap();
        }
    }

    #[test]
    fn clean_metadata_needs_nothing() {
        let (_d, md) = sample();
        assert_eq!(
            md.plan_attach(),
            AttachPlan {
                recovery: Recovery::Nothing,
                damage: vec![]
            }
        );
    }

    #[test]
    fn crashed_primary_applies_its_extents() {
        let (_d, mut md) = sample();
        crash_with(&mut md, &[3, 25]);
        let r = md.recover().unwrap();
        assert_eq!(r.plan.recovery, Recovery::ApplyAl);
        // Extent 25 holds the device's last 4 KiB: 1 bit of storage, 1023 of padding.
        assert_eq!(r.newly_set, 2048);
        assert_eq!(md.bitmap.count_range(0, md.bitmap.bits()).unwrap(), 1025);
        assert!(md.is_clean());
        assert_eq!(md.replay_al().unwrap().updates, 0);
        // apply-al's padding bits are not "beyond the device".
        assert_eq!(md.plan_attach().recovery, Recovery::Nothing);
    }

    #[test]
    fn a_torn_newest_transaction_is_skipped_and_reported() {
        let (_d, mut md) = sample();
        crash_with(&mut md, &[1, 2, 3]);
        let torn = md.al.block_index(2) as usize;
        md.al.blocks[torn].stored_crc ^= 1;
        let plan = md.plan_attach();
        assert_eq!(plan.recovery, Recovery::ApplyAl);
        assert_eq!(plan.damage.len(), 1);
        let text = plan.damage[0].to_string();
        assert!(
            text.contains("block 2 (byte offset 12288, transaction 2)"),
            "{text}"
        );
        md.recover().unwrap();
        assert_eq!(md.bitmap.count(), 2048);
    }

    #[test]
    fn an_unusable_log_of_a_primary_means_full_sync() {
        let (_d, mut md) = sample();
        crash_with(&mut md, &[]);
        for b in &mut md.al.blocks[2..4] {
            b.magic = 0;
        }
        let plan = md.plan_attach();
        assert_eq!(plan.recovery, Recovery::FullSync);
        assert!(
            plan.damage
                .iter()
                .any(|d| matches!(d, Damage::AlUnusable { offset: 4096, .. })),
            "{plan:?}"
        );
        let r = md.recover().unwrap();
        assert_eq!(r.newly_set, md.bitmap.bits());
        assert!(md.is_clean());
        // A Secondary's unusable log is ignored, as drbdmeta does.
        let (_d, mut md) = sample();
        crash_with(&mut md, &[]);
        md.superblock.flags = MdFlags(MdFlags::CONSISTENT);
        md.al.blocks[5].magic = 0;
        md.al.blocks[6].magic = 0;
        assert_eq!(md.plan_attach().recovery, Recovery::ApplyAl);
        assert_eq!(md.recover().unwrap().newly_set, 0);
        assert_eq!(md.replay_al().unwrap().corrupt, 0, "ring re-initialised");
    }

    #[test]
    fn bits_past_the_last_extent_mean_full_sync() {
        let (_d, mut md) = sample();
        let last = md.bitmap.capacity() - 1;
        md.bitmap.set_range(last, 1).unwrap();
        let plan = md.plan_attach();
        assert_eq!(plan.recovery, Recovery::FullSync);
        let text = plan.damage[0].to_string();
        // Word 511 of the bitmap at 36864 (indexed slot 0: superblock + 32 KiB AL).
        assert!(
            text.contains("bitmap word 511 at byte offset 40952: 1 bits set"),
            "{text}"
        );
        md.recover().unwrap();
        assert_eq!(md.bitmap.count(), md.bitmap.bits());
        assert_eq!(md.plan_attach().recovery, Recovery::Nothing);
    }
}
