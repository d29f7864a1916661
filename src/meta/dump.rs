//! The `dump-md` text format of drbdmeta for v08 metadata, byte for byte (apart from the
//! header comment with date, host and command line). drbdmeta's `restore-md` reads it back.
//!
//! One deliberate difference: drbdmeta releases before 9.33 print `flags 0x00000000;` in
//! the `uuid` block whatever the flags are (they print an unused field; fixed upstream in
//! drbd-utils commit 725d989e, "v08 dump-md: dump actual flags, not 0x0"). We print the
//! real flags, like fixed drbdmeta does, so that a dump restores what was dumped.

use std::fmt::Write as _;

use super::bitmap::Bitmap;
use super::layout::Geometry;
use super::superblock::Superblock;

/// Words per output line of the bitmap (32-bit words, printed in pairs).
const WPL: usize = 8;

/// Renders the whole dump. `la_size_sect` is the size the bitmap was read for (the on-disk
/// value clipped to what the metadata can cover).
pub fn dump_md(sb: &Superblock, geo: &Geometry, bitmap: &Bitmap, effective_la: u64) -> String {
    let mut s = String::new();
    if effective_la != sb.la_size_sect {
        // drbdmeta prints this while opening the device, before the dump header.
        let _ = writeln!(
            s,
            "# la-size-sect was too big ({}), truncated ({effective_la})!",
            sb.la_size_sect
        );
    }
    s.push_str("# DRBD meta data dump\n");
    let _ = writeln!(s, "# urbd {}", env!("CARGO_PKG_VERSION"));
    s.push_str("# urbd> dump-md\n#\n\n");
    s.push_str("version \"v08\";\n\n");
    if !sb.is_clean() {
        s.push_str(concat!(
            "This_is_an_unclean_meta_data_dump._Don't_trust_the_bitmap.\n",
            "# You should \"apply-al\" first, if you plan to restore this.\n\n"
        ));
    }
    let _ = writeln!(s, "# md_size_sect {}", sb.md_size_sect);
    let _ = writeln!(s, "# md_offset {}", geo.md_offset);
    let _ = writeln!(s, "# al_offset {}", geo.al_byte_offset());
    let _ = writeln!(s, "# bm_offset {}", geo.bm_byte_offset());
    s.push('\n');
    s.push_str("uuid {\n");
    let _ = writeln!(
        s,
        "    0x{:016X}; 0x{:016X}; 0x{:016X}; 0x{:016X};",
        sb.uuids.current, sb.uuids.bitmap, sb.uuids.history[0], sb.uuids.history[1]
    );
    let _ = writeln!(s, "    flags 0x{:08X};", sb.flags.0);
    s.push_str("}\n");
    let _ = writeln!(s, "# al-extents {};", sb.al_nr_extents);
    let _ = writeln!(s, "la-size-sect {effective_la};");
    let _ = writeln!(s, "bm-byte-per-bit {};", sb.bm_bytes_per_bit);
    let _ = writeln!(s, "device-uuid 0x{:016X};", sb.device_uuid);
    let _ = writeln!(
        s,
        "la-peer-max-bio-size {};",
        sb.la_peer_max_bio_size as i32
    );
    let (stripes, stripe_size) = sb.effective_al_striping();
    let _ = writeln!(s, "al-stripes {stripes};");
    let _ = writeln!(s, "al-stripe-size-4k {stripe_size};");
    let _ = writeln!(s, "# bm-bytes {};", bitmap.byte_len());
    s.push_str("bm ");
    let bits_set = write_bitmap(&mut s, bitmap);
    let _ = writeln!(s, "# bits-set {bits_set};");
    s
}

fn eol(s: &mut String, word: usize) {
    if word & 63 == 0 {
        let _ = write!(s, "\n   # at {}kB\n   ", 128 * word as u64);
    } else {
        s.push_str("\n   ");
    }
}

/// drbdmeta's `fprintf_bm` for one peer: 64-bit words in hex, four per line, a comment with
/// the position every 64 32-bit words, and runs of at least 16 equal 32-bit words that
/// start on a line boundary written as `N times 0x...;`. Returns the number of set bits.
fn write_bitmap(s: &mut String, bitmap: &Bitmap) -> u64 {
    // drbdmeta walks the bitmap as little-endian 32-bit words.
    let bm: Vec<u32> = bitmap
        .words()
        .iter()
        .flat_map(|w| [*w as u32, (*w >> 32) as u32])
        .collect();
    let n = bm.len();
    let mut bits_set = 0u64;
    let mut i = 0usize;
    let mut count = 0usize;
    let mut cw = 0u32;
    let mut lw = 0u32;
    s.push('{');
    while i < n {
        if count == 0 {
            cw = bm[i];
        }
        if i % WPL == 0 {
            if count == 0 {
                eol(s, i);
            }
            let run = bm[i..].iter().take_while(|&&w| w == cw).count();
            let tmp = run / WPL * WPL;
            if tmp > WPL {
                count += tmp;
                i += tmp;
            }
            if count > 0 {
                let _ = write!(s, " {} times 0x{cw:08X}{cw:08X};", count / 2);
                bits_set += count as u64 * u64::from(cw.count_ones());
                count = 0;
                if i >= n {
                    break;
                }
                continue;
            }
        }
        if i & 1 == 0 {
            lw = bm[i];
        } else {
            let _ = write!(s, " 0x{:08X}{lw:08X};", bm[i]);
        }
        bits_set += u64::from(bm[i].count_ones());
        i += 1;
    }
    s.push_str("\n}\n");
    bits_set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bm_text(bitmap: &Bitmap) -> (String, u64) {
        let mut s = String::new();
        let n = write_bitmap(&mut s, bitmap);
        (s, n)
    }

    #[test]
    fn empty_bitmap() {
        assert_eq!(bm_text(&Bitmap::new(0)), ("{\n}\n".to_owned(), 0));
    }

    #[test]
    fn matches_drbdmeta_sample() {
        // The bitmap drbdmeta restored from a dump and printed back (130000 sectors).
        let mut bm = Bitmap::new(130_000);
        bm.set_range(0, 1).unwrap();
        bm.set_range(64, 64).unwrap();
        bm.set_range(191, 1).unwrap();
        bm.set_range(256, 12 * 64).unwrap();
        bm.set_range(1024 + 4, 4).unwrap();
        let (text, bits) = bm_text(&bm);
        assert_eq!(
            text,
            "{\n   # at 0kB\n    0x0000000000000001; 0xFFFFFFFFFFFFFFFF; 0x8000000000000000; 0x0000000000000000;\n    12 times 0xFFFFFFFFFFFFFFFF;\n    0x00000000000000F0; 0x0000000000000000; 0x0000000000000000; 0x0000000000000000;\n    492 times 0x0000000000000000;\n}\n"
        );
        assert_eq!(bits, 838);
    }

    #[test]
    fn position_comment_every_64_words() {
        let mut bm = Bitmap::new(8 * 4096 * 8); // 4096 bytes = 1024 words
        // A non-run pattern everywhere: alternate bits so no 16-word run forms.
        for w in 0..512u64 {
            bm.set_range(w * 64 + (w % 7), 1).unwrap();
        }
        let (text, _) = bm_text(&bm);
        assert!(text.contains("\n   # at 0kB\n"));
        assert!(text.contains("\n   # at 8192kB\n"));
        assert_eq!(text.matches("# at").count(), 16);
    }
}
