//! The DRBD 8.4 activity log: a ring of 4 KiB transactions (`struct
//! al_transaction_on_disk`), all fields big-endian:
//!
//! | offset | field                          |
//! |-------:|--------------------------------|
//! |      0 | magic u32 = 0x69CB65A2         |
//! |      4 | tr_number u32                  |
//! |      8 | crc32c u32 (of the block with this field 0) |
//! |     12 | transaction_type u16 (0 update, 0xFFFF initialized) |
//! |     14 | n_updates u16                  |
//! |     16 | context_size u16 (`al-extents`) |
//! |     18 | context_start_slot_nr u16      |
//! |     20 | reserved u32 x 4               |
//! |     36 | update_slot_nr u16 x 64        |
//! |    164 | update_extent_nr u32 x 64      |
//! |    420 | context u32 x 919              |
//!
//! The checksum is the raw Castagnoli CRC of the kernel's `crc32c(0, buf, 4096)`: seed 0,
//! no final inversion (not the "standard" CRC-32C check value).
//!
//! Reading the ring and deciding which extents were active follows drbdmeta's
//! `replay_al_84`, which is what DRBD 8.4 runs (`drbdadm apply-al`) before every attach.

use std::fmt;

use serde::Serialize;

use super::codec::{InvalidData, Reader, Writer};
use super::layout::al_slot;

/// `DRBD_AL_MAGIC` ("actlog==" base64-decoded).
pub const AL_MAGIC: u32 = 0x69CB_65A2;
/// Size of one transaction block.
pub const AL_TRANSACTION_BYTES: usize = 4096;
/// Slot updates per transaction.
pub const AL_UPDATES_PER_TRANSACTION: usize = 64;
/// Context entries per transaction: (4096 - 36 - 6 * 64) / 4.
pub const AL_CONTEXT_PER_TRANSACTION: usize = 919;
/// `AL_TR_UPDATE`.
pub const AL_TR_UPDATE: u16 = 0;
/// `AL_TR_INITIALIZED`: written by create-md and apply-al, carries no extents.
pub const AL_TR_INITIALIZED: u16 = 0xFFFF;
/// Extent number of an empty slot (`LC_FREE`).
pub const LC_FREE: u32 = u32::MAX;
/// Slot number of an unused update entry.
pub const SLOT_UNUSED: u16 = u16::MAX;
/// Highest number of AL extents (`DRBD_AL_EXTENTS_MAX`); slots at or above are ignored.
pub const AL_EXTENTS_MAX: u32 = 65534;
/// Bytes of storage covered by one activity-log extent.
pub const AL_EXTENT_BYTES: u64 = 4 << 20;

const CRC_OFFSET: usize = 8;

/// DRBD's `crc32c(0, data, len)`: CRC-32C with seed 0 and no final inversion.
pub fn drbd_crc32c(data: &[u8]) -> u32 {
    // The crc32c crate inverts on entry and exit; undo both.
    !crc32c::crc32c_append(!0, data)
}

/// One slot update: activity-log slot `slot` now holds extent `extent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AlUpdate {
    /// Slot number, `0..al_extents`.
    pub slot: u16,
    /// Extent number (4 MiB units of the replicated device), or [`LC_FREE`].
    pub extent: u32,
}

/// One decoded activity-log transaction. The update and context arrays always have their
/// full on-disk length (64 and 919 entries), so encode(decode(x)) reproduces x.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlTransaction {
    /// Transaction number; the newest transaction has the highest (wrapping) number.
    pub tr_number: u32,
    /// [`AL_TR_UPDATE`] or [`AL_TR_INITIALIZED`].
    pub transaction_type: u16,
    /// Number of meaningful entries in the update arrays.
    pub n_updates: u16,
    /// Number of slots of the active set (`al-extents`).
    pub context_size: u16,
    /// Slot the context array starts with.
    pub context_start_slot_nr: u16,
    /// Reserved words, kept as found.
    pub reserved: [u32; 4],
    update_slot_nr: Vec<u16>,
    update_extent_nr: Vec<u32>,
    context: Vec<u32>,
}

/// A transaction block as found on disk, with what is needed to judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlBlock {
    /// Magic found.
    pub magic: u32,
    /// Checksum stored in the block.
    pub stored_crc: u32,
    /// Checksum computed over the block.
    pub computed_crc: u32,
    /// The decoded fields (meaningless unless [`AlBlock::is_valid`]).
    pub transaction: AlTransaction,
}

impl AlBlock {
    /// drbdmeta's validity test: right magic and right checksum.
    pub fn is_valid(&self) -> bool {
        self.magic == AL_MAGIC && self.stored_crc == self.computed_crc
    }
}

impl AlTransaction {
    /// The block create-md and apply-al write into every ring position: valid magic and
    /// checksum, type [`AL_TR_INITIALIZED`], everything else zero.
    pub fn initialized() -> Self {
        Self {
            tr_number: 0,
            transaction_type: AL_TR_INITIALIZED,
            n_updates: 0,
            context_size: 0,
            context_start_slot_nr: 0,
            reserved: [0; 4],
            update_slot_nr: vec![0; AL_UPDATES_PER_TRANSACTION],
            update_extent_nr: vec![0; AL_UPDATES_PER_TRANSACTION],
            context: vec![0; AL_CONTEXT_PER_TRANSACTION],
        }
    }

    /// An update transaction as the kernel's `__al_write_transaction` builds it: `updates`
    /// (at most 64) followed by unused entries, then `context` (at most 919 entries of the
    /// active set, starting at slot `context_start`) padded with [`LC_FREE`].
    ///
    /// Returns `None` if `updates` or `context` are too long.
    pub fn update(
        tr_number: u32,
        updates: &[AlUpdate],
        context_size: u16,
        context_start: u16,
        context: &[u32],
    ) -> Option<Self> {
        if updates.len() > AL_UPDATES_PER_TRANSACTION || context.len() > AL_CONTEXT_PER_TRANSACTION
        {
            return None;
        }
        let mut update_slot_nr = vec![SLOT_UNUSED; AL_UPDATES_PER_TRANSACTION];
        let mut update_extent_nr = vec![LC_FREE; AL_UPDATES_PER_TRANSACTION];
        for (i, u) in updates.iter().enumerate() {
            update_slot_nr[i] = u.slot;
            update_extent_nr[i] = u.extent;
        }
        let mut ctx = vec![LC_FREE; AL_CONTEXT_PER_TRANSACTION];
        ctx[..context.len()].copy_from_slice(context);
        Some(Self {
            tr_number,
            transaction_type: AL_TR_UPDATE,
            n_updates: updates.len() as u16,
            context_size,
            context_start_slot_nr: context_start,
            reserved: [0; 4],
            update_slot_nr,
            update_extent_nr,
            context: ctx,
        })
    }

    /// The 64 update entries as on disk (unused ones included).
    pub fn updates(&self) -> impl Iterator<Item = AlUpdate> + '_ {
        self.update_slot_nr
            .iter()
            .zip(&self.update_extent_nr)
            .map(|(&slot, &extent)| AlUpdate { slot, extent })
    }

    /// The 919 context entries as on disk.
    pub fn context(&self) -> &[u32] {
        &self.context
    }

    /// Encodes into one 4 KiB block with a correct checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(AL_TRANSACTION_BYTES);
        w.u32(AL_MAGIC);
        w.u32(self.tr_number);
        w.u32(0);
        w.u16(self.transaction_type);
        w.u16(self.n_updates);
        w.u16(self.context_size);
        w.u16(self.context_start_slot_nr);
        for r in self.reserved {
            w.u32(r);
        }
        for i in 0..AL_UPDATES_PER_TRANSACTION {
            w.u16(self.update_slot_nr.get(i).copied().unwrap_or(SLOT_UNUSED));
        }
        for i in 0..AL_UPDATES_PER_TRANSACTION {
            w.u32(self.update_extent_nr.get(i).copied().unwrap_or(LC_FREE));
        }
        for i in 0..AL_CONTEXT_PER_TRANSACTION {
            w.u32(self.context.get(i).copied().unwrap_or(LC_FREE));
        }
        let mut buf = w.finish_padded(AL_TRANSACTION_BYTES);
        let crc = drbd_crc32c(&buf);
        buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        buf
    }

    /// Decodes one block. Fails only if `buf` is not exactly 4096 bytes; magic and checksum
    /// are reported in the returned [`AlBlock`], not judged here.
    pub fn decode(buf: &[u8]) -> Result<AlBlock, InvalidData> {
        let mut r = Reader::new(buf);
        let magic = r.u32("al magic")?;
        let tr_number = r.u32("tr_number")?;
        let stored_crc = r.u32("crc32c")?;
        let transaction_type = r.u16("transaction_type")?;
        let n_updates = r.u16("n_updates")?;
        let context_size = r.u16("context_size")?;
        let context_start_slot_nr = r.u16("context_start_slot_nr")?;
        let mut reserved = [0u32; 4];
        for v in &mut reserved {
            *v = r.u32("al reserved")?;
        }
        let update_slot_nr = (0..AL_UPDATES_PER_TRANSACTION)
            .map(|_| r.u16("update_slot_nr"))
            .collect::<Result<_, _>>()?;
        let update_extent_nr = (0..AL_UPDATES_PER_TRANSACTION)
            .map(|_| r.u32("update_extent_nr"))
            .collect::<Result<_, _>>()?;
        let context = (0..AL_CONTEXT_PER_TRANSACTION)
            .map(|_| r.u32("context"))
            .collect::<Result<_, _>>()?;
        r.expect_end("al transaction")?;
        let mut zeroed = [0u8; AL_TRANSACTION_BYTES];
        zeroed.copy_from_slice(buf);
        zeroed[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
        Ok(AlBlock {
            magic,
            stored_crc,
            computed_crc: drbd_crc32c(&zeroed),
            transaction: Self {
                tr_number,
                transaction_type,
                n_updates,
                context_size,
                context_start_slot_nr,
                reserved,
                update_slot_nr,
                update_extent_nr,
                context,
            },
        })
    }
}

/// Why the ring holds nothing usable (drbdmeta's `-ENODATA` / `-EINVAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ReplayError {
    /// Not a single block has valid magic and checksum: never initialized (or not a
    /// DRBD 8.4 activity log). drbdmeta: "No usable activity log found".
    NoValidTransaction,
    /// Some blocks are valid but none is an update, and more than the first block is bad.
    /// drbdmeta: "No valid AL update transaction found".
    NoValidUpdate {
        /// Number of invalid blocks.
        corrupt: u32,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoValidTransaction => f.write_str("no usable activity log found"),
            Self::NoValidUpdate { corrupt } => write!(
                f,
                "no valid activity-log update transaction found ({corrupt} corrupt blocks)"
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

/// What reading the ring found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// Valid update transactions found (0: the log is clean, nothing to apply).
    pub updates: u32,
    /// Blocks with bad magic or checksum (at most one is expected, after a torn write).
    pub corrupt: u32,
    /// Newest valid update transaction number, if any.
    pub newest_tr_number: Option<u32>,
    /// Extent per slot at the newest transaction ([`LC_FREE`] when empty), indexed by slot.
    pub slots: Vec<u32>,
    /// The distinct extents that were active, ascending: what must be resynced.
    pub active_extents: Vec<u32>,
}

/// The activity-log area as read from disk: one entry per 4 KiB block, in on-disk order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivityLog {
    /// Stripes of the ring.
    pub stripes: u32,
    /// Blocks per stripe.
    pub stripe_size_4k: u32,
    /// The blocks in on-disk order.
    pub blocks: Vec<AlBlock>,
}

impl ActivityLog {
    /// A freshly initialized ring (what create-md writes).
    pub fn initialized(stripes: u32, stripe_size_4k: u32) -> Self {
        let block = AlTransaction::decode(&AlTransaction::initialized().encode())
            .expect("an encoded block is 4096 bytes");
        Self {
            stripes,
            stripe_size_4k,
            blocks: vec![block; (stripes * stripe_size_4k) as usize],
        }
    }

    /// Ring positions whose block has bad magic or checksum: (on-disk block index, block).
    pub fn invalid_blocks(&self) -> impl Iterator<Item = (usize, &AlBlock)> {
        self.blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.is_valid())
    }

    /// On-disk block index of transaction number `tr`.
    pub fn block_index(&self, tr: u32) -> u32 {
        al_slot(tr, self.stripes, self.stripe_size_4k)
    }

    /// Reconstructs the active set at the newest transaction, exactly as drbdmeta's
    /// `replay_al_84`: find the oldest and newest valid update transactions by (wrapping)
    /// transaction number, then apply context and updates of every valid update
    /// transaction from oldest to newest.
    pub fn replay(&self) -> Result<Replay, ReplayError> {
        let mx = self.blocks.len() as u32;
        // Transactions in ring order (logical position b -> on-disk block).
        let ring: Vec<&AlBlock> = (0..mx)
            .filter_map(|b| self.blocks.get(self.block_index(b) as usize))
            .collect();
        let mut valid = 0u32;
        let mut updates = 0u32;
        let mut oldest = (0usize, 0u32);
        let mut newest = (0usize, 0u32);
        for (b, block) in ring.iter().enumerate() {
            if !block.is_valid() {
                continue;
            }
            valid += 1;
            let t = &block.transaction;
            if t.transaction_type == AL_TR_INITIALIZED {
                continue;
            }
            updates += 1;
            if updates == 1 {
                oldest = (b, t.tr_number);
                newest = oldest;
                continue;
            }
            if (t.tr_number as i32).wrapping_sub(oldest.1 as i32) < 0 {
                oldest = (b, t.tr_number);
            }
            if (t.tr_number as i32).wrapping_sub(newest.1 as i32) > 0 {
                newest = (b, t.tr_number);
            }
        }
        let corrupt = mx - valid;
        if valid == 0 {
            return Err(ReplayError::NoValidTransaction);
        }
        if updates == 0 {
            let first_valid = ring.first().is_some_and(|b| b.is_valid());
            if valid == mx || (!first_valid && valid == mx - 1) {
                return Ok(Replay {
                    updates: 0,
                    corrupt,
                    newest_tr_number: None,
                    slots: Vec::new(),
                    active_extents: Vec::new(),
                });
            }
            return Err(ReplayError::NoValidUpdate { corrupt });
        }
        let mut slots: Vec<u32> = Vec::new();
        let mut put = |slot: u32, extent: u32| {
            if slot >= AL_EXTENTS_MAX {
                return;
            }
            let slot = slot as usize;
            if slots.len() <= slot {
                slots.resize(slot + 1, LC_FREE);
            }
            slots[slot] = extent;
        };
        let last = if newest.0 < oldest.0 {
            newest.0 + mx as usize
        } else {
            newest.0
        };
        for b in oldest.0..=last {
            let block = ring[b % mx as usize];
            let t = &block.transaction;
            if !block.is_valid() || t.transaction_type == AL_TR_INITIALIZED {
                continue;
            }
            for (i, &extent) in t.context.iter().enumerate() {
                let slot = u32::from(t.context_start_slot_nr) + i as u32;
                if extent == LC_FREE && slot >= u32::from(t.context_size) {
                    continue;
                }
                put(slot, extent);
            }
            for (i, u) in t.updates().enumerate() {
                if i >= usize::from(t.n_updates) && u.slot == SLOT_UNUSED {
                    continue;
                }
                put(u32::from(u.slot), u.extent);
            }
        }
        let mut active_extents: Vec<u32> =
            slots.iter().copied().filter(|&e| e != LC_FREE).collect();
        active_extents.sort_unstable();
        active_extents.dedup();
        Ok(Replay {
            updates,
            corrupt,
            newest_tr_number: Some(newest.1),
            slots,
            active_extents,
        })
    }
}

/// Builds successive update transactions the way the kernel does, for a daemon that keeps
/// an activity log: it owns the slot table (extent per slot), the next transaction number
/// and the context cycle (each transaction carries the next 919 slots of the active set, so
/// that a ring of at least `ceil(al_extents / 919)` transactions always describes all of
/// it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlWriter {
    slots: Vec<u32>,
    next_tr_number: u32,
    tr_cycle: u16,
}

impl AlWriter {
    /// A writer for an empty active set of `al_extents` slots (1..=65534).
    pub fn new(al_extents: u16, next_tr_number: u32) -> Self {
        Self {
            slots: vec![LC_FREE; usize::from(al_extents.max(1))],
            next_tr_number,
            tr_cycle: 0,
        }
    }

    /// Continues after a replayed ring: same active set, next transaction number.
    pub fn resume(al_extents: u16, replay: &Replay) -> Self {
        let mut w = Self::new(
            al_extents,
            replay.newest_tr_number.map_or(0, |t| t.wrapping_add(1)),
        );
        for (slot, &e) in w.slots.iter_mut().zip(&replay.slots) {
            *slot = e;
        }
        w
    }

    /// Extent per slot.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// Number the next transaction gets.
    pub fn next_tr_number(&self) -> u32 {
        self.next_tr_number
    }

    /// Applies `updates` (at most 64, slots below `al_extents`) to the slot table and
    /// returns the transaction that records them. Returns `None` (and changes nothing) if
    /// there are too many updates or a slot is out of range.
    pub fn record(&mut self, updates: &[AlUpdate]) -> Option<AlTransaction> {
        if updates.len() > AL_UPDATES_PER_TRANSACTION
            || updates
                .iter()
                .any(|u| usize::from(u.slot) >= self.slots.len())
        {
            return None;
        }
        for u in updates {
            self.slots[usize::from(u.slot)] = u.extent;
        }
        let n = self.slots.len();
        let start = usize::from(self.tr_cycle);
        let end = (start + AL_CONTEXT_PER_TRANSACTION).min(n);
        let tr = AlTransaction::update(
            self.next_tr_number,
            updates,
            n as u16,
            self.tr_cycle,
            &self.slots[start..end],
        )?;
        let next_cycle = start + AL_CONTEXT_PER_TRANSACTION;
        self.tr_cycle = if next_cycle >= n {
            0
        } else {
            next_cycle as u16
        };
        self.next_tr_number = self.next_tr_number.wrapping_add(1);
        Some(tr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn initialized_block_matches_drbdmeta() {
        // Bytes 0..16 of every AL block drbdmeta's create-md writes.
        let buf = AlTransaction::initialized().encode();
        assert_eq!(
            &buf[..16],
            &[
                0x69, 0xcb, 0x65, 0xa2, 0, 0, 0, 0, 0x70, 0x9c, 0xc6, 0x51, 0xff, 0xff, 0, 0
            ]
        );
        assert!(buf[16..].iter().all(|&b| b == 0));
        let block = AlTransaction::decode(&buf).unwrap();
        assert!(block.is_valid());
        assert_eq!(block.transaction, AlTransaction::initialized());
    }

    #[test]
    fn crc_detects_corruption() {
        let tr = AlTransaction::update(
            7,
            &[AlUpdate {
                slot: 3,
                extent: 42,
            }],
            257,
            0,
            &[1, 2],
        )
        .unwrap();
        let mut buf = tr.encode();
        assert_eq!(AlTransaction::decode(&buf).unwrap().transaction, tr);
        buf[500] ^= 1;
        let block = AlTransaction::decode(&buf).unwrap();
        assert!(!block.is_valid());
        assert_ne!(block.stored_crc, block.computed_crc);
    }

    #[test]
    fn update_layout() {
        let tr = AlTransaction::update(9, &[AlUpdate { slot: 1, extent: 5 }], 257, 0, &[]).unwrap();
        let buf = tr.encode();
        assert_eq!(&buf[4..8], &9u32.to_be_bytes());
        assert_eq!(&buf[12..20], &[0, 0, 0, 1, 1, 1, 0, 0]);
        assert_eq!(&buf[36..40], &[0, 1, 0xff, 0xff]);
        assert_eq!(&buf[164..172], &[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&buf[420..424], &[0xff; 4]);
    }

    fn ring_with(trs: &[AlTransaction], stripes: u32, size: u32) -> ActivityLog {
        let mut al = ActivityLog::initialized(stripes, size);
        for tr in trs {
            let i = al.block_index(tr.tr_number) as usize;
            al.blocks[i] = AlTransaction::decode(&tr.encode()).unwrap();
        }
        al
    }

    #[test]
    fn replay_of_clean_ring_is_empty() {
        let r = ActivityLog::initialized(1, 8).replay().unwrap();
        assert_eq!(r.updates, 0);
        assert!(r.active_extents.is_empty());
    }

    #[test]
    fn replay_follows_the_writer() {
        let mut w = AlWriter::new(257, 0);
        let mut trs = Vec::new();
        // 20 transactions wrap the 8-block ring twice; later slots overwrite earlier ones.
        for i in 0..20u32 {
            trs.push(
                w.record(&[AlUpdate {
                    slot: (i % 5) as u16,
                    extent: 100 + i,
                }])
                .unwrap(),
            );
        }
        let al = ring_with(&trs, 1, 8);
        let r = al.replay().unwrap();
        assert_eq!(r.newest_tr_number, Some(19));
        assert_eq!(r.active_extents, vec![115, 116, 117, 118, 119]);
        assert_eq!(&r.slots[..5], w.slots().get(..5).unwrap());
        let w2 = AlWriter::resume(257, &r);
        assert_eq!(w2.next_tr_number(), 20);
        assert_eq!(w2.slots(), w.slots());
    }

    #[test]
    fn replay_with_stripes_and_a_torn_block() {
        let mut w = AlWriter::new(1237, 0);
        let trs: Vec<_> = (0..6u32)
            .map(|i| {
                w.record(&[AlUpdate {
                    slot: i as u16,
                    extent: i * 3,
                }])
                .unwrap()
            })
            .collect();
        let mut al = ring_with(&trs, 2, 4);
        // Tear the newest one: its update is lost, the rest survives.
        let torn = al.block_index(5) as usize;
        al.blocks[torn].stored_crc ^= 1;
        let r = al.replay().unwrap();
        assert_eq!(r.corrupt, 1);
        assert_eq!(r.newest_tr_number, Some(4));
        assert_eq!(r.active_extents, vec![0, 3, 6, 9, 12]);
    }

    #[test]
    fn replay_errors() {
        let mut al = ActivityLog::initialized(1, 8);
        for b in &mut al.blocks {
            b.magic = 0;
        }
        assert_eq!(al.replay(), Err(ReplayError::NoValidTransaction));
        let mut al = ActivityLog::initialized(1, 8);
        al.blocks[0].magic = 0;
        assert_eq!(al.replay().unwrap().updates, 0);
        al.blocks[3].magic = 0;
        assert_eq!(al.replay(), Err(ReplayError::NoValidUpdate { corrupt: 2 }));
    }

    #[test]
    fn writer_refuses_bad_updates() {
        let mut w = AlWriter::new(10, 0);
        assert!(
            w.record(&[AlUpdate {
                slot: 10,
                extent: 1
            }])
            .is_none()
        );
        let many = vec![AlUpdate { slot: 0, extent: 1 }; 65];
        assert!(w.record(&many).is_none());
        assert_eq!(w.next_tr_number(), 0);
    }

    proptest! {
        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..4200)) {
            if let Ok(block) = AlTransaction::decode(&buf) {
                if block.is_valid() {
                    prop_assert_eq!(block.transaction.encode(), buf);
                }
            }
        }

        #[test]
        fn replay_never_panics(blocks in proptest::collection::vec(
                (any::<u32>(), any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>(),
                 proptest::collection::vec((any::<u16>(), any::<u32>()), 0..64),
                 proptest::collection::vec(any::<u32>(), 0..50)), 8)) {
            let mut al = ActivityLog::initialized(1, 8);
            for (i, (tr, ty, n, cs, cst, ups, ctx)) in blocks.into_iter().enumerate() {
                let updates: Vec<_> = ups.into_iter().map(|(slot, extent)| AlUpdate { slot, extent }).collect();
                let mut t = AlTransaction::update(tr, &updates, cs, cst, &ctx).unwrap();
                t.transaction_type = ty;
                t.n_updates = n;
                al.blocks[i] = AlTransaction::decode(&t.encode()).unwrap();
            }
            let _ = al.replay();
        }

        #[test]
        fn round_trip(tr in any::<u32>(), ups in proptest::collection::vec((any::<u16>(), any::<u32>()), 0..=64),
                      cs in any::<u16>(), cst in any::<u16>(), ctx in proptest::collection::vec(any::<u32>(), 0..=919)) {
            let updates: Vec<_> = ups.into_iter().map(|(slot, extent)| AlUpdate { slot, extent }).collect();
            let t = AlTransaction::update(tr, &updates, cs, cst, &ctx).unwrap();
            let block = AlTransaction::decode(&t.encode())?;
            prop_assert!(block.is_valid());
            prop_assert_eq!(block.transaction, t);
        }
    }
}
