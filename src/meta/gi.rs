//! Generation identifiers as drbdmeta prints them: `get-gi` (one line), `show-gi` (the
//! annotated picture plus size lines) and `dstate`.

use super::superblock::{MdFlags, Superblock};

/// drbdmeta's `ppsize`: a size in KiB as "N KB/MB/GB/...", rounding at each step.
pub fn ppsize(kib: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    let mut size = kib;
    let mut base = 0;
    while size >= 10000 && base < UNITS.len() - 1 {
        size = (size >> 10) + u64::from(size & (1 << 9) != 0);
        base += 1;
    }
    format!("{} {}B", size as u32, UNITS[base])
}

/// The `get-gi` line: four UUIDs then seven flag bits, newline-terminated.
pub fn get_gi(sb: &Superblock) -> String {
    let f = sb.flags;
    let bit = |m: u32| u8::from(f.contains(m));
    format!(
        "{:016X}:{:016X}:{:016X}:{:016X}:{}:{}:{}:{}:{}:{}:{}\n",
        sb.uuids.current,
        sb.uuids.bitmap,
        sb.uuids.history[0],
        sb.uuids.history[1],
        bit(MdFlags::CONSISTENT),
        bit(MdFlags::WAS_UP_TO_DATE),
        bit(MdFlags::PRIMARY_IND),
        bit(MdFlags::CONNECTED_IND),
        bit(MdFlags::FULL_SYNC),
        bit(MdFlags::PEER_OUT_DATED),
        bit(MdFlags::CRASHED_PRIMARY),
    )
}

/// The `show-gi` output.
pub fn show_gi(sb: &Superblock) -> String {
    let f = sb.flags;
    let mut s = String::from(concat!(
        "\n",
        "       +--<  Current data generation UUID  >-\n",
        "       |               +--<  Bitmap's base data generation UUID  >-\n",
        "       |               |                 +--<  younger history UUID  >-\n",
        "       |               |                 |         +-<  older history  >-\n",
        "       V               V                 V         V\n",
    ));
    s.push_str(&get_gi(sb));
    s.push_str(concat!(
        "                                                                    ^ ^ ^ ^ ^ ^ ^\n",
        "                                      -<  Data consistency flag  >--+ | | | | | |\n",
        "                             -<  Data was/is currently up-to-date  >--+ | | | | |\n",
        "                                  -<  Node was/is currently primary  >--+ | | | |\n",
        "                                  -<  Node was/is currently connected  >--+ | | |\n",
        "         -<  Node was in the progress of setting all bits in the bitmap  >--+ | |\n",
        "                        -<  The peer's disk was out-dated or inconsistent  >--+ |\n",
        "      -<  This node was a crashed primary, and has not seen its peer since   >--+\n",
        "\n",
    ));
    let state = if f.is_consistent() {
        if f.was_up_to_date() {
            "UpToDate"
        } else {
            "Outdated"
        }
    } else {
        "Inconsistent"
    };
    s.push_str(&format!(
        "flags:{} {}, {}, {}{}{}\n",
        if f.is_crashed_primary() {
            " crashed"
        } else {
            ""
        },
        if f.is_primary() {
            "Primary"
        } else {
            "Secondary"
        },
        if f.contains(MdFlags::CONNECTED_IND) {
            "Connected"
        } else {
            "StandAlone"
        },
        state,
        if f.contains(MdFlags::FULL_SYNC) {
            ", need full sync"
        } else {
            ""
        },
        if f.contains(MdFlags::PEER_OUT_DATED) {
            ", peer Outdated"
        } else {
            ""
        },
    ));
    s.push_str(&format!(
        "meta-data: {}\n",
        if f.is_al_clean() {
            "clean"
        } else {
            "need apply-al"
        }
    ));
    if sb.la_size_sect != 0 {
        s.push_str(&format!(
            "last agreed size: {} ({} sectors)\n",
            ppsize(sb.la_size_sect >> 1),
            sb.la_size_sect
        ));
        s.push_str(&format!(
            "last agreed max bio size: {} Byte\n",
            sb.la_peer_max_bio_size
        ));
    } else {
        s.push_str("zero size device -- never seen peer yet?\n");
    }
    s
}

/// The `dstate` line.
pub fn dstate(sb: &Superblock) -> String {
    format!("{}\n", sb.flags.disk_state())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::superblock::{MD_MAGIC_08, Uuids};

    fn sb(flags: u32, la: u64) -> Superblock {
        Superblock {
            la_size_sect: la,
            uuids: Uuids {
                current: 0x1234_5678_90AB_CDEF,
                bitmap: 0xA1,
                history: [0xB2, 0xC3],
            },
            device_uuid: 0,
            flags: MdFlags(flags),
            magic: MD_MAGIC_08,
            md_size_sect: 0,
            al_offset: 8,
            al_nr_extents: 257,
            bm_offset: 72,
            bm_bytes_per_bit: 4096,
            la_peer_max_bio_size: 1 << 20,
            al_stripes: 1,
            al_stripe_size_4k: 8,
        }
    }

    #[test]
    fn get_gi_line() {
        assert_eq!(
            get_gi(&sb(0x93, 0)),
            "1234567890ABCDEF:00000000000000A1:00000000000000B2:00000000000000C3:1:1:1:0:0:0:0\n"
        );
    }

    #[test]
    fn show_gi_tail() {
        let s = show_gi(&sb(0x93, 130_000));
        assert!(s.ends_with(
            "flags: Primary, StandAlone, UpToDate\nmeta-data: clean\nlast agreed size: 63 MB (130000 sectors)\nlast agreed max bio size: 1048576 Byte\n"
        ), "{s}");
        let s = show_gi(&sb(0x4c, 0));
        assert!(s.contains("flags: crashed Secondary, Connected, Inconsistent, need full sync\nmeta-data: need apply-al\nzero size device"), "{s}");
    }

    #[test]
    fn ppsize_rounds() {
        assert_eq!(ppsize(65000), "63 MB");
        assert_eq!(ppsize(9999), "9999 KB");
        assert_eq!(ppsize(3 << 20), "3072 MB");
        assert_eq!(ppsize(u64::MAX), "16384 EB");
    }
}
