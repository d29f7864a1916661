//! The resync progress lines of /proc/drbd (`drbd_syncer_progress` in drbd-8.4's
//! `drbd_proc.c`), as a pure function of a [`SyncProgress`].

use std::fmt::Write;

use crate::core::ConnState;

use super::model::SyncProgress;

/// Seconds without progress after which DRBD adds ` (stalled)`.
const STALLED_AFTER_SECS: u64 = 180;

/// Per mille done, as `drbd_get_syncer_progress` computes it (shifts included, so the
/// rounding is DRBD's).
pub fn per_mil_done(total_bits: u64, left_bits: u64) -> u64 {
    if left_bits > total_bits {
        return if total_bits == 0 { 1000 } else { 0 };
    }
    let shift = if total_bits > u64::from(u32::MAX) {
        16
    } else {
        10
    };
    let left = left_bits >> shift;
    let total = 1 + (total_bits >> shift);
    1000 - left * 1000 / total
}

/// `seq_printf_with_thousands_grouping`: 1234567 -> `1,234,567`.
pub fn thousands(v: u64) -> String {
    if v >= 1_000_000 {
        format!(
            "{},{:03},{:03}",
            v / 1_000_000,
            (v % 1_000_000) / 1000,
            v % 1000
        )
    } else if v >= 1000 {
        format!("{},{:03}", v / 1000, v % 1000)
    } else {
        v.to_string()
    }
}

/// 4 KiB bitmap bits to KiB (DRBD's `Bit2KB`).
fn bit2kb(bits: u64) -> u64 {
    bits << 2
}

/// The two progress lines (each ending in `\n`) for a volume in `cstate`.
pub fn render(p: &SyncProgress, cstate: ConnState) -> String {
    let mut out = String::new();
    let left = p.left_bits.min(p.total_bits);
    let res = per_mil_done(p.total_bits, p.left_bits);
    let x = (res / 50) as usize;
    let y = 20usize.saturating_sub(x);
    out.push_str("\t[");
    for _ in 1..x.max(1) {
        out.push('=');
    }
    out.push('>');
    for _ in 0..y {
        out.push('.');
    }
    out.push_str("] ");
    let verify = matches!(cstate, ConnState::VerifyS | ConnState::VerifyT);
    out.push_str(if verify { "verified:" } else { "sync'ed:" });
    let _ = write!(out, "{:>3}.{}% ", res / 10, res % 10);
    // More than 4 GiB to sync: MiB, else KiB.
    if p.total_bits > (4 << (30 - 12)) {
        let _ = write!(
            out,
            "({}/{})M",
            bit2kb(left >> 10),
            bit2kb(p.total_bits >> 10)
        );
    } else {
        let _ = write!(out, "({}/{})K", bit2kb(left), bit2kb(p.total_bits));
    }
    out.push_str("\n\t");

    // Short-term estimate from the rolling mark.
    let stalled = p.mark_age_secs > STALLED_AFTER_SECS;
    let dt = p.mark_age_secs.max(1);
    let db = p.mark_left_bits.saturating_sub(left);
    let rt = dt * (left / (db / 100 + 1)) / 100;
    let _ = write!(
        out,
        "finish: {}:{:02}:{:02}",
        rt / 3600,
        (rt % 3600) / 60,
        rt % 60
    );
    let _ = write!(out, " speed: {}", thousands(bit2kb(db / dt)));
    // Long-term average since the start.
    let dt = p.elapsed_secs.max(1);
    let db = p.total_bits - left;
    let _ = write!(out, " ({})", thousands(bit2kb(db / dt)));
    if matches!(cstate, ConnState::SyncTarget | ConnState::VerifyS) {
        let _ = write!(out, " want: {}", thousands(p.want_kib_per_sec));
    }
    out.push_str(" K/sec");
    if stalled {
        out.push_str(" (stalled)");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(total: u64, left: u64) -> SyncProgress {
        SyncProgress {
            total_bits: total,
            left_bits: left,
            mark_age_secs: 18,
            mark_left_bits: left,
            elapsed_secs: 10,
            want_kib_per_sec: 250_000,
        }
    }

    #[test]
    fn thousands_grouping() {
        for (v, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (118_000, "118,000"),
            (1_000_000, "1,000,000"),
            (12_345_678, "12,345,678"),
        ] {
            assert_eq!(thousands(v), s);
        }
    }

    #[test]
    fn per_mil_matches_drbd_rounding() {
        assert_eq!(per_mil_done(0, 0), 1000);
        assert_eq!(per_mil_done(100, 200), 0);
        // 8 GiB, 7 GiB left: 2097152 bits, 1835008 left; >>10: 2048 total+1, 1792 left.
        assert_eq!(
            per_mil_done(2_097_152, 1_835_008),
            1000 - 1792 * 1000 / 2049
        );
        assert_eq!(per_mil_done(1024, 0), 1000);
    }

    /// 8 GiB to sync, 7 GiB left, 118,000 K/sec short-term, 110,000 average, SyncTarget.
    #[test]
    fn sync_target_line() {
        let total = 8u64 << 18; // 8 GiB in 4 KiB bits
        let left = 7u64 << 18;
        let mut s = p(total, left);
        s.mark_age_secs = 2;
        s.mark_left_bits = left + 2 * 118_000 / 4;
        s.elapsed_secs = 10;
        let text = render(&s, ConnState::SyncTarget);
        let res = per_mil_done(total, left);
        assert_eq!(res, 126);
        assert_eq!(
            text,
            "\t[=>..................] sync'ed: 12.6% (7168/8192)M\n\
             \tfinish: 0:01:02 speed: 118,000 (104,856) want: 250,000 K/sec\n"
        );
    }

    #[test]
    fn small_resync_in_kib_and_verify_and_stall() {
        let mut s = p(1_000_000, 500_000);
        s.mark_age_secs = 200;
        let text = render(&s, ConnState::VerifyT);
        assert!(
            text.starts_with("\t[=========>..........] verified: 50.1% (2000000/4000000)K\n"),
            "{text}"
        );
        assert!(text.ends_with(" K/sec (stalled)\n"), "{text}");
        assert!(!text.contains("want:"));
        // Nothing done yet: the bar is a lone '>' and 20 dots.
        let text = render(&p(1_000_000, 1_000_000), ConnState::SyncSource);
        assert!(
            text.starts_with("\t[>....................] sync'ed:  0.2% "),
            "{text}"
        );
        // Below 1024 bits DRBD's shifted arithmetic reports 100% at once; so do we.
        assert_eq!(per_mil_done(1000, 500), 1000);
    }
}
