//! What the peers tell each other about their disks and state: [`Sizes`], [`Uuids`],
//! [`State`], [`SyncUuid`], and cluster-wide state changes ([`StateChangeRequest`],
//! [`StateChangeReply`]).

use super::codec::{Codec, Reader, WireError, put_i32, put_u32, put_u64};

/// Disk sizes (DRBD's P_SIZES), all in 512-byte sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sizes {
    /// The backing disk's usable size (`d_size`).
    pub backing: u64,
    /// The size the user configured (`disk { size }`), 0 if none (`u_size`).
    pub user: u64,
    /// The size the device currently exports (`c_size`).
    pub current: u64,
    /// Largest request the sender accepts, bytes (`max_bio_size`).
    pub max_bio_size: u32,
    /// [`sizes_flags`]; unknown bits are kept.
    pub flags: u32,
}

/// Bits of [`Sizes::flags`] (DRBD's `enum dds_flags`).
pub mod sizes_flags {
    /// The user asked to resize past what the peer has (`resize --assume-peer-has-space`).
    pub const FORCED: u32 = 1;
    /// Resize without resyncing the new area (`resize --assume-clean`).
    pub const NO_RESYNC: u32 = 2;
}

impl Codec<'_> for Sizes {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.backing);
        put_u64(out, self.user);
        put_u64(out, self.current);
        put_u32(out, self.max_bio_size);
        put_u32(out, self.flags);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Sizes {
            backing: r.u64("d_size")?,
            user: r.u64("u_size")?,
            current: r.u64("c_size")?,
            max_bio_size: r.u32("max_bio_size")?,
            flags: r.u32("dds_flags")?,
        })
    }
}

/// Generation UUIDs (DRBD's P_UUIDS: six big-endian u64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uuids {
    /// `UI_CURRENT`, bit 0 set while the sender is Primary.
    pub current: u64,
    /// `UI_BITMAP`.
    pub bitmap: u64,
    /// `UI_HISTORY_START`, `UI_HISTORY_END`.
    pub history: [u64; 2],
    /// Bits set in the sender's bitmap (DRBD's `UI_SIZE` slot, "changes" for after-sb).
    pub bitmap_bits: u64,
    /// [`uuid_flags`](crate::core::uuid_flags): discard-my-data 1, crashed primary 2,
    /// inconsistent 4, skip initial sync 8. Unknown bits are kept.
    pub flags: u64,
}

impl Codec<'_> for Uuids {
    fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.current,
            self.bitmap,
            self.history[0],
            self.history[1],
            self.bitmap_bits,
            self.flags,
        ] {
            put_u64(out, v);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Uuids {
            current: r.u64("uuid current")?,
            bitmap: r.u64("uuid bitmap")?,
            history: [r.u64("uuid history[0]")?, r.u64("uuid history[1]")?],
            bitmap_bits: r.u64("uuid bitmap bits")?,
            flags: r.u64("uuid flags")?,
        })
    }
}

/// A node's state (DRBD's P_STATE), one byte per field. Roles, connection and disk states
/// are DRBD's enum numbers (`enum drbd_role`, `drbd_conns`, `drbd_disk_state`; the same
/// order as `core::Role`, `core::ConnState`, `core::DiskState`, whose `as u8` gives them).
/// Values are not range-checked here: the connection state machine maps them and treats an
/// unknown one as a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    /// The sender's role.
    pub role: u8,
    /// The sender's view of our role.
    pub peer: u8,
    /// Connection state.
    pub conn: u8,
    /// The sender's disk state.
    pub disk: u8,
    /// The sender's view of our disk state.
    pub pdsk: u8,
    /// [`state_flags`].
    pub flags: u8,
}

/// Bits of [`State::flags`] (the one-bit fields of DRBD's `union drbd_state`).
pub mod state_flags {
    /// I/O suspended (`susp`).
    pub const SUSP: u8 = 1 << 0;
    /// Resync paused by resync-after (`aftr_isp`).
    pub const AFTR_ISP: u8 = 1 << 1;
    /// Resync paused by the peer (`peer_isp`).
    pub const PEER_ISP: u8 = 1 << 2;
    /// Resync paused by the user (`user_isp`).
    pub const USER_ISP: u8 = 1 << 3;
    /// I/O suspended: no data (`susp_nod`).
    pub const SUSP_NOD: u8 = 1 << 4;
    /// I/O suspended by fencing (`susp_fen`).
    pub const SUSP_FEN: u8 = 1 << 5;
}

impl Codec<'_> for State {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            self.role, self.peer, self.conn, self.disk, self.pdsk, self.flags, 0, 0,
        ]);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let [role, peer, conn, disk, pdsk, flags, r0, r1] = r.take_array::<8>("state")?;
        if r0 != 0 || r1 != 0 {
            return Err(WireError::InvalidValue("state reserved"));
        }
        Ok(State {
            role,
            peer,
            conn,
            disk,
            pdsk,
            flags,
        })
    }
}

/// A state change that must hold on both nodes (DRBD's P_STATE_CHG_REQ): the fields set in
/// `mask` (0xff per field) take their values from `val`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateChangeRequest {
    /// Which fields change.
    pub mask: State,
    /// Their new values.
    pub val: State,
}

impl Codec<'_> for StateChangeRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        self.mask.encode(out);
        self.val.encode(out);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(StateChangeRequest {
            mask: State::read(r)?,
            val: State::read(r)?,
        })
    }
}

/// The answer to a [`StateChangeRequest`]: DRBD's `enum drbd_state_rv` (1 = success,
/// negative = the refusal, e.g. -2 "Need access to UpToDate data").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChangeReply {
    /// `SS_*` code.
    pub retcode: i32,
}

impl Codec<'_> for StateChangeReply {
    fn encode(&self, out: &mut Vec<u8>) {
        put_i32(out, self.retcode);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(StateChangeReply {
            retcode: r.i32("state change retcode")?,
        })
    }
}

/// The SyncSource's new bitmap UUID, which the SyncTarget takes as its current UUID when
/// the resync starts (DRBD's P_SYNC_UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncUuid {
    /// The UUID.
    pub uuid: u64,
}

impl Codec<'_> for SyncUuid {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.uuid);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(SyncUuid {
            uuid: r.u64("sync uuid")?,
        })
    }
}
