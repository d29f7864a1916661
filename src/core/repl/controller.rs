//! DRBD 8.4's dynamic resync-rate controller and its `c-min-rate` throttle, sans I/O.
//!
//! The SyncTarget pulls the resync: every [`SLEEP_TIME`] (100 ms) its resync timer asks
//! how many sectors to request now ([`RateController::plan`], DRBD's
//! `drbd_rs_number_requests` in `drbd/drbd_worker.c`). With `c-plan-ahead 0` the answer is
//! the fixed `resync-rate`. Otherwise the controller (`drbd_rs_controller`) aims at a
//! number of sectors in flight: `c-fill-target`, or, with `c-fill-target 0`, what arrives
//! in `c-delay-target` tenths of a second. The difference between that aim and what is
//! in flight or already planned is spread evenly over the next `c-plan-ahead` steps
//! through a ring of per-step corrections (DRBD's `fifo_buffer`). Each step requests what
//! arrived since the last step plus the correction due now, capped by `c-max-rate`.
//!
//! [`RateController::should_slow_down`] is `drbd_rs_c_min_rate_throttle`
//! (`drbd/drbd_receiver.c`): when the backing disk sees application I/O, the resync
//! yields while its recent speed is above `c-min-rate`.
//!
//! Nothing here reads a clock: the host passes `now`. All arithmetic saturates, so no
//! configuration or counter value can make it panic.

use std::time::{Duration, Instant};

/// How often the SyncTarget makes resync requests: DRBD's `SLEEP_TIME` (`HZ/10`,
/// `drbd/drbd_int.h`).
pub const SLEEP_TIME: Duration = Duration::from_millis(100);

/// Largest `c-plan-ahead` (tenths of a second): `DRBD_C_PLAN_AHEAD_MAX`. DRBD clamps to
/// it when the disk options change (`drbd_adm_disk_opts`, `drbd/drbd_nl.c`); so does
/// [`ControllerConfig::steps`], which also bounds the plan's memory.
const C_PLAN_AHEAD_MAX: u32 = 300;

/// Sectors per bitmap block (4 KiB): DRBD requests resync data in whole bitmap blocks
/// (`number >> (BM_BLOCK_SHIFT - 9)` in `drbd_rs_number_requests`).
const SECT_PER_BLOCK: u64 = 8;

/// Application I/O (sectors) on the backing disk that marks it busy:
/// `curr_events - device->rs_last_events > 64` in `drbd_rs_c_min_rate_throttle`.
const BUSY_EVENTS_SECT: u64 = 64;

/// Number of resync progress marks: `DRBD_SYNC_MARKS` (`drbd/drbd_int.h`).
const SYNC_MARKS: usize = 8;

/// Time between two progress marks: `DRBD_SYNC_MARK_STEP` (`3*HZ`, `drbd/drbd_int.h`).
const SYNC_MARK_STEP: Duration = Duration::from_secs(3);

/// The resync controller's knobs (DRBD's `disk` section). Units as in `drbd.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerConfig {
    /// `resync-rate`, KiB/s: the fixed rate when the controller is off, and the initial
    /// aim when it is on.
    pub resync_rate_kib: u64,
    /// `c-plan-ahead`, tenths of a second: how many [`SLEEP_TIME`] steps a correction is
    /// spread over. 0 turns the controller off (fixed `resync-rate`). Above 300
    /// (`DRBD_C_PLAN_AHEAD_MAX`) counts as 300.
    pub plan_ahead_ds: u32,
    /// `c-delay-target`, tenths of a second: with `c-fill-target 0`, aim at what arrives
    /// in this long being in flight.
    pub delay_target_ds: u32,
    /// `c-fill-target`, sectors: aim at this many sectors in flight; 0 selects
    /// `c-delay-target`.
    pub fill_target_sect: u64,
    /// `c-max-rate`, KiB/s: the controller never requests faster.
    pub max_rate_kib: u64,
    /// `c-min-rate`, KiB/s: the resync yields to application I/O only while faster than
    /// this; 0 never yields.
    pub min_rate_kib: u64,
}

impl Default for ControllerConfig {
    /// DRBD 8.4's defaults (`drbd/linux/drbd_limits.h`, the same in every 8.4 release).
    fn default() -> Self {
        ControllerConfig {
            resync_rate_kib: 250,  // DRBD_RESYNC_RATE_DEF
            plan_ahead_ds: 20,     // DRBD_C_PLAN_AHEAD_DEF
            delay_target_ds: 10,   // DRBD_C_DELAY_TARGET_DEF
            fill_target_sect: 100, // DRBD_C_FILL_TARGET_DEF
            max_rate_kib: 102_400, // DRBD_C_MAX_RATE_DEF
            min_rate_kib: 250,     // DRBD_C_MIN_RATE_DEF
        }
    }
}

impl ControllerConfig {
    /// Steps a correction is spread over: DRBD's plan size,
    /// `c_plan_ahead * 10 * SLEEP_TIME / HZ`, which is `c-plan-ahead` itself since
    /// `SLEEP_TIME` is `HZ/10`. Clamped to 300 (`DRBD_C_PLAN_AHEAD_MAX`).
    pub fn steps(&self) -> usize {
        // A u32 of at most 300 always fits a usize.
        self.plan_ahead_ds.min(C_PLAN_AHEAD_MAX) as usize
    }
}

/// The plan: corrections (sectors) for the coming steps, DRBD's `struct fifo_buffer`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    values: Vec<i64>,
    head: usize,
    /// Sum of `values`, kept up to date as DRBD keeps `fifo_buffer.total`.
    total: i64,
}

impl Plan {
    fn new(steps: usize) -> Self {
        Plan {
            values: vec![0; steps],
            head: 0,
            total: 0,
        }
    }

    /// Forget every planned correction (`fifo_set(plan, 0)` and `total = 0`).
    fn clear(&mut self) {
        self.values.iter_mut().for_each(|v| *v = 0);
        self.total = 0;
    }

    /// Add `cps` to every step (`fifo_add_val`).
    fn add_to_all(&mut self, cps: i64) {
        self.values
            .iter_mut()
            .for_each(|v| *v = v.saturating_add(cps));
        let steps = i64::try_from(self.values.len()).unwrap_or(i64::MAX);
        self.total = self.total.saturating_add(cps.saturating_mul(steps));
    }

    /// Take the correction due now and put `value` at the far end (`fifo_push`).
    fn push(&mut self, value: i64) -> i64 {
        let Some(slot) = self.values.get_mut(self.head) else {
            return 0;
        };
        let due = std::mem::replace(slot, value);
        self.head += 1;
        if self.head >= self.values.len() {
            self.head = 0;
        }
        self.total = self.total.saturating_sub(due).saturating_add(value);
        due
    }
}

/// A point of resync progress: DRBD's `rs_mark_time[i]` / `rs_mark_left[i]`, here with
/// the sectors done so far instead of the bits left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    at: Instant,
    done_sect: u64,
}

/// The resync-rate controller of one SyncTarget, and the `c-min-rate` throttle.
///
/// Call [`RateController::reset`] when a resync starts (DRBD's
/// `drbd_rs_controller_reset` and the sync marks set in `drbd_start_resync`), then
/// [`RateController::plan`] every [`SLEEP_TIME`].
#[derive(Debug, Clone)]
pub struct RateController {
    cfg: ControllerConfig,
    plan: Plan,
    /// The rate the last step aimed at, KiB/s (DRBD's `c_sync_rate`).
    want_kib_s: u64,
    /// Application I/O (sectors) since the disk was last found busy
    /// (`curr_events - rs_last_events`).
    app_sect_pending: u64,
    /// Resync sectors done since the last reset.
    done_sect: u64,
    /// Progress marks, one every [`SYNC_MARK_STEP`] at most; empty until first needed.
    marks: Vec<Mark>,
    last_mark: usize,
}

impl RateController {
    /// A controller with an empty plan (see [`ControllerConfig::steps`]).
    pub fn new(cfg: ControllerConfig) -> Self {
        RateController {
            cfg,
            plan: Plan::new(cfg.steps()),
            want_kib_s: 0,
            app_sect_pending: 0,
            done_sect: 0,
            marks: Vec::new(),
            last_mark: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// New knobs (`drbdadm adjust`, or the peer's sync parameters). As in
    /// `drbd_adm_disk_opts`, the plan starts over empty only if its length changes.
    pub fn reconfigure(&mut self, cfg: ControllerConfig) {
        if cfg.steps() != self.plan.values.len() {
            self.plan = Plan::new(cfg.steps());
        }
        self.cfg = cfg;
    }

    /// A resync starts (or restarts): forget the plan, the application I/O seen and the
    /// progress (DRBD's `drbd_rs_controller_reset`); the progress marks start at `now`.
    pub fn reset(&mut self, now: Instant) {
        self.plan.clear();
        self.app_sect_pending = 0;
        self.done_sect = 0;
        self.start_marks(now);
    }

    /// How many sectors to request now; called every [`SLEEP_TIME`] by the SyncTarget
    /// (DRBD's `drbd_rs_number_requests`, with `drbd_rs_controller` when
    /// `c-plan-ahead` is not 0).
    ///
    /// `in_flight_sect`: sectors requested and not yet answered (DRBD's `rs_in_flight`
    /// after subtracting what arrived). `arrived_sect`: resync data that arrived since the
    /// last call (`rs_sect_in`). The answer is in whole 4 KiB bitmap blocks (a multiple
    /// of 8 sectors), rounded down as DRBD does. The rounding is not carried over: with
    /// the controller off `resync-rate` 250 gives 6 blocks (240 KiB/s); with it on,
    /// corrections under a block per step are lost, so in flight settles up to one
    /// block per plan step below `c-fill-target`.
    ///
    /// The step's length is implied (the host's timer); `now` is not used by the
    /// computation, which, as DRBD's, counts steps rather than time.
    ///
    /// Not applied here: DRBD's further cap of `max-buffers / 2` blocks in flight and its
    /// stop at half a full send buffer; those belong to the caller.
    pub fn plan(&mut self, _now: Instant, in_flight_sect: u64, arrived_sect: u64) -> u64 {
        if self.plan.values.is_empty() {
            // Controller off: `SLEEP_TIME * resync_rate / (4 KiB * HZ)` blocks.
            let blocks = self.cfg.resync_rate_kib / 40;
            self.want_kib_s = self.cfg.resync_rate_kib;
            return blocks.saturating_mul(SECT_PER_BLOCK);
        }
        let req_sect = self.controller(in_flight_sect, arrived_sect);
        let blocks = req_sect / SECT_PER_BLOCK;
        // `number * HZ * (BM_BLOCK_SIZE / 1024) / SLEEP_TIME`.
        self.want_kib_s = blocks.saturating_mul(40);
        blocks.saturating_mul(SECT_PER_BLOCK)
    }

    /// DRBD's `drbd_rs_controller`: sectors to request this step.
    fn controller(&mut self, in_flight_sect: u64, arrived_sect: u64) -> u64 {
        let in_flight = to_i64(in_flight_sect);
        let arrived = to_i64(arrived_sect);
        let steps = to_i64(self.cfg.steps() as u64);

        // Sectors wanted in flight.
        let want = if in_flight_sect == 0 && arrived_sect == 0 {
            // Start of the resync (or an empty pipe): `resync_rate * 2 * SLEEP_TIME / HZ`
            // sectors per step, for every step of the plan.
            to_i64(self.cfg.resync_rate_kib.saturating_mul(2) / 10).saturating_mul(steps)
        } else if self.cfg.fill_target_sect != 0 {
            to_i64(self.cfg.fill_target_sect)
        } else {
            // `sect_in * c_delay_target * HZ / (SLEEP_TIME * 10)`: what arrives in
            // c-delay-target tenths of a second, one step being one tenth.
            arrived.saturating_mul(i64::from(self.cfg.delay_target_ds))
        };

        let correction = want
            .saturating_sub(in_flight)
            .saturating_sub(self.plan.total);
        // C's division truncates toward zero, as Rust's does; steps is not 0 here.
        let cps = correction.checked_div(steps).unwrap_or(0);
        self.plan.add_to_all(cps);
        let due = self.plan.push(0);

        let max_sect = to_i64(self.cfg.max_rate_kib.saturating_mul(2) / 10);
        let req = arrived.saturating_add(due).clamp(0, max_sect.max(0));
        u64::try_from(req).unwrap_or(0)
    }

    /// The rate the last step aimed at, KiB/s (DRBD's `c_sync_rate`, shown as `want:` in
    /// `/proc/drbd`): `resync-rate` with the controller off, else the last step's blocks
    /// per second. 0 before the first step.
    pub fn want_kib_s(&self) -> u64 {
        self.want_kib_s
    }

    /// Should the resync yield to application I/O now? DRBD's
    /// `drbd_rs_c_min_rate_throttle` (`drbd/drbd_receiver.c`), used on the SyncSource
    /// before it serves a resync request and on the SyncTarget before it locks an
    /// extent for resync (`drbd_try_rs_begin_io`).
    ///
    /// `app_sectors_since_last`: application I/O (reads and writes, sectors) on the
    /// backing disk since the last call — DRBD's disk statistics minus its own resync
    /// I/O. `rs_sectors_since_last`: resync sectors completed since the last call (DRBD
    /// counts bitmap bits cleared).
    ///
    /// With `c-min-rate 0`, never. Otherwise, once more than 64 sectors of application
    /// I/O accumulated (the count then starts over), yield if the resync speed since the
    /// mark before the latest one (marks are taken at most every 3 s, so a 3-6 s
    /// average, whole seconds, at least 1) is above `c-min-rate`.
    ///
    /// Left to the caller: DRBD also evaluates when application writes wait for the
    /// activity log (`ap_actlog_cnt`), and `drbd_rs_should_slow_down` does not yield for
    /// an extent application I/O is already waiting for (`BME_PRIORITY`).
    pub fn should_slow_down(
        &mut self,
        now: Instant,
        app_sectors_since_last: u64,
        rs_sectors_since_last: u64,
    ) -> bool {
        if self.marks.is_empty() {
            self.start_marks(now);
        }
        self.done_sect = self.done_sect.saturating_add(rs_sectors_since_last);
        self.advance_marks(now);
        self.app_sect_pending = self.app_sect_pending.saturating_add(app_sectors_since_last);

        if self.cfg.min_rate_kib == 0 || self.app_sect_pending <= BUSY_EVENTS_SECT {
            return false;
        }
        self.app_sect_pending = 0;
        self.recent_rate_kib_s(now) > self.cfg.min_rate_kib
    }

    /// Resync speed, KiB/s, since the mark before the latest (the ~3 s average DRBD's
    /// throttle and `/proc/drbd`'s second speed figure use).
    fn recent_rate_kib_s(&self, now: Instant) -> u64 {
        let i = (self.last_mark + SYNC_MARKS - 1) % SYNC_MARKS;
        let Some(mark) = self.marks.get(i) else {
            return 0;
        };
        let dt = now.saturating_duration_since(mark.at).as_secs().max(1);
        let db_sect = self.done_sect.saturating_sub(mark.done_sect);
        db_sect / 2 / dt
    }

    /// Every mark at `now` with the progress so far (`drbd_start_resync`).
    fn start_marks(&mut self, now: Instant) {
        let mark = Mark {
            at: now,
            done_sect: self.done_sect,
        };
        self.marks = vec![mark; SYNC_MARKS];
        self.last_mark = 0;
    }

    /// A new mark once [`SYNC_MARK_STEP`] passed since the latest and progress was made
    /// (`drbd_advance_rs_marks`, `drbd/drbd_actlog.c`).
    fn advance_marks(&mut self, now: Instant) {
        let Some(last) = self.marks.get(self.last_mark).copied() else {
            return;
        };
        if now.saturating_duration_since(last.at) >= SYNC_MARK_STEP
            && last.done_sect != self.done_sect
        {
            let next = (self.last_mark + 1) % SYNC_MARKS;
            if let Some(slot) = self.marks.get_mut(next) {
                *slot = Mark {
                    at: now,
                    done_sect: self.done_sect,
                };
                self.last_mark = next;
            }
        }
    }
}

/// A counter or configuration value as a signed quantity, saturating.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ControllerConfig {
        ControllerConfig::default()
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// drbd/linux/drbd_limits.h (drbd-8.4 at 27deda96, drbd-8.4.11-6; the defaults have
    /// been these since 9f2363f1 "drbd: Changed some defaults", before drbd-8.4.0):
    ///   DRBD_RESYNC_RATE_DEF 250        (KiB/s)
    ///   DRBD_C_PLAN_AHEAD_DEF 20        (0.1 s)
    ///   DRBD_C_DELAY_TARGET_DEF 10      (0.1 s)
    ///   DRBD_C_FILL_TARGET_DEF 100      (sectors)
    ///   DRBD_C_MAX_RATE_DEF 102400      (KiB/s)
    ///   DRBD_C_MIN_RATE_DEF 250         (KiB/s)
    ///   DRBD_C_PLAN_AHEAD_MAX 300
    #[test]
    fn defaults_are_drbd_limits_h() {
        assert_eq!(
            ControllerConfig::default(),
            ControllerConfig {
                resync_rate_kib: 250,
                plan_ahead_ds: 20,
                delay_target_ds: 10,
                fill_target_sect: 100,
                max_rate_kib: 102_400,
                min_rate_kib: 250,
            }
        );
        assert_eq!(C_PLAN_AHEAD_MAX, 300);
        assert_eq!(SLEEP_TIME, Duration::from_millis(100)); // drbd_int.h: HZ/10
    }

    /// drbd_nl.c / drbd_receiver.c: fifo_size = c_plan_ahead * 10 * SLEEP_TIME / HZ,
    /// c_plan_ahead clamped to DRBD_C_PLAN_AHEAD_MAX by drbd_adm_disk_opts.
    #[test]
    fn plan_length_is_c_plan_ahead() {
        for (plan_ahead_ds, steps) in [(0, 0), (1, 1), (20, 20), (300, 300), (301, 300)] {
            let c = ControllerConfig {
                plan_ahead_ds,
                ..cfg()
            };
            assert_eq!(c.steps(), steps, "c-plan-ahead {plan_ahead_ds}");
            assert_eq!(RateController::new(c).plan.values.len(), steps);
        }
        let big = RateController::new(ControllerConfig {
            plan_ahead_ds: u32::MAX,
            ..cfg()
        });
        assert_eq!(big.plan.values.len(), 300);
    }

    /// drbd_rs_number_requests, controller off (rs_plan_s->size == 0):
    /// number = SLEEP_TIME * resync_rate / (4 * HZ) blocks, c_sync_rate = resync_rate.
    /// In flight, arrivals and c-max-rate do not matter.
    #[test]
    fn fixed_rate_when_plan_ahead_is_zero() {
        // (resync-rate KiB/s, in flight, arrived, sectors requested per step)
        let table: &[(u64, u64, u64, u64)] = &[
            (250, 0, 0, 48), // 6 blocks = 240 KiB/s, not 250: DRBD counts whole blocks
            (250, 100_000, 5, 48),
            (40, 0, 0, 8),
            (39, 0, 0, 0), // below 40 KiB/s DRBD requests nothing
            (0, 0, 0, 0),
            (1000, 0, 0, 200),
            (102_400, 0, 0, 20_480),
            (4_194_304, 0, 0, 838_856), // c-max-rate (102400) does not cap it
            (u64::MAX, u64::MAX, u64::MAX, (u64::MAX / 40) * 8),
        ];
        let t0 = Instant::now();
        for &(rate, in_flight, arrived, want) in table {
            let mut c = RateController::new(ControllerConfig {
                resync_rate_kib: rate,
                plan_ahead_ds: 0,
                ..cfg()
            });
            for step in 0..3 {
                let got = c.plan(ms(t0, step * 100), in_flight, arrived);
                assert_eq!(got, want, "resync-rate {rate}, step {step}");
                assert_eq!(c.want_kib_s(), rate);
            }
        }
    }

    /// drbd_rs_controller, first step (rs_in_flight + sect_in == 0): want =
    /// (resync_rate * 2 * SLEEP_TIME / HZ) * steps; the correction is spread over the
    /// plan by fifo_add_val and each step takes one slot with fifo_push. The peer never
    /// answers here, so what was requested stays in flight and the aim (c-fill-target =
    /// the same 320 sectors) is reached after exactly `steps` steps.
    #[test]
    fn correction_is_spread_over_plan_ahead_steps() {
        let mut c = RateController::new(ControllerConfig {
            resync_rate_kib: 400, // 80 sectors per step
            plan_ahead_ds: 4,     // 4 steps
            fill_target_sect: 320,
            ..cfg()
        });
        let t0 = Instant::now();
        let mut in_flight = 0;
        let mut got = Vec::new();
        for step in 0..7 {
            let n = c.plan(ms(t0, step * 100), in_flight, 0);
            in_flight += n;
            got.push(n);
        }
        assert_eq!(got, [80, 80, 80, 80, 0, 0, 0]);
        assert_eq!(in_flight, 320);
        assert_eq!(c.plan.total, 0);
    }

    /// fifo_add_val / fifo_push / fifo_set (drbd_worker.c), with fifo_buffer.total kept
    /// as DRBD keeps it.
    #[test]
    fn plan_ring() {
        let mut p = Plan::new(3);
        p.add_to_all(5);
        assert_eq!((p.values.clone(), p.total), (vec![5, 5, 5], 15));
        assert_eq!(p.push(0), 5);
        p.add_to_all(-2);
        assert_eq!((p.values.clone(), p.total), (vec![-2, 3, 3], 4));
        assert_eq!([p.push(0), p.push(0), p.push(7)], [3, 3, -2]);
        assert_eq!((p.values.clone(), p.total), (vec![7, 0, 0], 7));
        p.clear();
        assert_eq!((p.values.clone(), p.total), (vec![0, 0, 0], 0));
        let mut empty = Plan::new(0);
        empty.add_to_all(9);
        assert_eq!((empty.push(1), empty.total), (0, 0));
    }

    /// A peer that serves `bw` sectors per step; its answers arrive before the next
    /// step. Returns (sectors requested per step, in flight at each step).
    fn run_against_peer(c: &mut RateController, bw: u64, steps: u64) -> (Vec<u64>, Vec<u64>) {
        let t0 = Instant::now();
        let (mut queued, mut arrived) = (0u64, 0u64);
        let (mut reqs, mut fills) = (Vec::new(), Vec::new());
        for step in 0..steps {
            let n = c.plan(ms(t0, step * 100), queued, arrived);
            queued += n;
            reqs.push(n);
            fills.push(queued);
            arrived = queued.min(bw);
            queued -= arrived;
        }
        (reqs, fills)
    }

    fn mean(v: &[u64]) -> u64 {
        v.iter().sum::<u64>() / v.len().max(1) as u64
    }

    /// drbd_rs_controller with c-fill-target: against a peer slower than c-max-rate,
    /// the data left in flight at each step settles near c-fill-target and the request
    /// rate at the peer's bandwidth. "Near": DRBD requests whole 4 KiB blocks
    /// (`>> (BM_BLOCK_SHIFT - 9)` in drbd_rs_number_requests), which leaves a dead band
    /// below the target of up to one block per step of the plan.
    #[test]
    fn fill_target_is_reached() {
        // (c-fill-target sectors, peer bandwidth sectors per step, c-plan-ahead)
        for (fill, bw, pa) in [
            (100, 400, 20),
            (800, 400, 20),
            (2000, 4000, 20),
            (100, 80, 20),
            (100, 400, 5),
            (800, 400, 5),
            (5000, 400, 20),
            (5000, 400, 1),
            (5000, 1000, 300),
        ] {
            let mut c = RateController::new(ControllerConfig {
                fill_target_sect: fill,
                plan_ahead_ds: pa,
                ..cfg()
            });
            let (reqs, fills) = run_against_peer(&mut c, bw, 4000);
            let tail = 3900..4000;
            // What the peer has not served by the next step: in flight at that step.
            let left: Vec<u64> = fills[tail.clone()].iter().map(|&f| f - f.min(bw)).collect();
            let rate = mean(&reqs[tail]);
            assert!(
                rate.abs_diff(bw) <= 8,
                "fill {fill} bw {bw}: rate {rate} sectors/step"
            );
            let m = mean(&left);
            // Positive corrections under one block per step are rounded away, negative
            // ones rounded up to a block: in flight settles at or below the target, by
            // less than one block per step of the plan.
            let band = 8 * u64::from(pa);
            assert!(
                m <= fill && fill - m < band,
                "fill {fill} bw {bw} c-plan-ahead {pa}: left in flight {m}"
            );
            assert!(left.iter().all(|&l| l == m), "settled: {left:?}");
        }
    }

    /// drbd_rs_controller's `max_sect = c_max_rate * 2 * SLEEP_TIME / HZ`: with
    /// c-delay-target (c-fill-target 0) and a peer that answers at once, in-flight data
    /// never builds up, so the controller asks for more and more until c-max-rate stops
    /// it; c_sync_rate (`want:`) shows that cap.
    #[test]
    fn c_max_rate_caps_the_controller() {
        // (c-max-rate KiB/s, sectors per step at the cap, want: KiB/s)
        for (max_rate, cap, want) in [
            (10_000, 2000, 10_000),
            (102_400, 20_480, 102_400),
            (1001, 200, 1000),
        ] {
            // c-delay-target mode: the aim grows with what arrives.
            let mut c = RateController::new(ControllerConfig {
                max_rate_kib: max_rate,
                fill_target_sect: 0,
                ..cfg()
            });
            let (reqs, _) = run_against_peer(&mut c, u64::MAX, 200);
            assert!(reqs.iter().all(|&n| n <= cap), "c-max-rate {max_rate}");
            assert_eq!(reqs.last(), Some(&cap), "c-max-rate {max_rate}");
            assert_eq!(c.want_kib_s(), want);
        }
    }

    /// drbd_rs_controller, one step from a settled plan: the request is what arrived
    /// plus the correction due now; the more is in flight beyond the aim, the less is
    /// requested (down to nothing).
    #[test]
    fn more_in_flight_means_fewer_requests() {
        // (in flight, arrived, sectors requested) with c-fill-target 100, 20 steps,
        // nothing planned yet: correction (100 - in flight) / 20 per step.
        let table: &[(u64, u64, u64)] = &[
            (0, 400, 400), // +5 -> 405 -> 50 blocks
            (100, 400, 400),
            (500, 400, 376),  // -20 -> 380 -> 47 blocks
            (2100, 400, 296), // -100 -> 300 -> 37 blocks
            (8100, 400, 0),   // -400 -> 0
            (u64::MAX, 400, 0),
            (u64::MAX, u64::MAX, 20_480), // capped by c-max-rate
        ];
        let t0 = Instant::now();
        for &(in_flight, arrived, want) in table {
            let mut c = RateController::new(cfg());
            assert_eq!(
                c.plan(t0, in_flight, arrived),
                want,
                "in flight {in_flight}"
            );
        }
    }

    /// drbd_rs_controller with c-fill-target 0: want = sect_in * c_delay_target (in
    /// steps). Against a peer of fixed bandwidth, in flight settles at c-delay-target
    /// worth of the peer's bandwidth; when the peer slows down (in flight stays high),
    /// the controller requests less, down to the new bandwidth.
    #[test]
    fn delay_target_follows_the_peer() {
        // (c-delay-target 0.1 s, peer bandwidth sectors per step)
        for (delay, bw) in [(10, 400), (5, 800), (20, 160)] {
            let mut c = RateController::new(ControllerConfig {
                fill_target_sect: 0,
                delay_target_ds: delay,
                ..cfg()
            });
            let (reqs, fills) = run_against_peer(&mut c, bw, 600);
            let tail = 500..600;
            let rate = mean(&reqs[tail.clone()]);
            assert!(rate.abs_diff(bw) <= 8, "delay {delay} bw {bw}: rate {rate}");
            let left = mean(
                &fills[tail]
                    .iter()
                    .map(|&f| f - f.min(bw))
                    .collect::<Vec<_>>(),
            );
            let aim = bw * u64::from(delay);
            assert!(
                left.abs_diff(aim) <= aim / 10,
                "delay {delay} bw {bw}: in flight {left}, aim {aim}"
            );
        }

        // The peer drops from 400 to 100 sectors per step: requests fall accordingly.
        let mut c = RateController::new(ControllerConfig {
            fill_target_sect: 0,
            ..cfg()
        });
        let t0 = Instant::now();
        let (mut queued, mut arrived) = (0u64, 0u64);
        let mut reqs = Vec::new();
        for step in 0..1200 {
            let bw = if step < 600 { 400 } else { 100 };
            let n = c.plan(ms(t0, step * 100), queued, arrived);
            reqs.push(n);
            queued += n;
            arrived = queued.min(bw);
            queued -= arrived;
        }
        assert!(mean(&reqs[500..600]).abs_diff(400) <= 8);
        assert!(mean(&reqs[1100..1200]).abs_diff(100) <= 8);
        assert!(
            reqs[601..620].iter().all(|&n| n <= 100),
            "{:?}",
            &reqs[600..620]
        );
    }

    /// drbd_rs_controller_reset: the plan is forgotten.
    #[test]
    fn reset_forgets_the_plan() {
        let t0 = Instant::now();
        let mut c = RateController::new(cfg());
        let first = c.plan(t0, 0, 0);
        c.plan(ms(t0, 100), first, 0);
        assert_ne!(c.plan.total, 0);
        c.reset(ms(t0, 200));
        assert_eq!(c.plan.total, 0);
        assert_eq!(c.plan(ms(t0, 300), 0, 0), first);
    }

    /// drbd_adm_disk_opts: a new plan only if its length changes.
    #[test]
    fn reconfigure_keeps_the_plan_of_the_same_length() {
        let t0 = Instant::now();
        let mut c = RateController::new(cfg());
        c.plan(t0, 0, 0);
        let total = c.plan.total;
        c.reconfigure(ControllerConfig {
            fill_target_sect: 500,
            ..cfg()
        });
        assert_eq!(c.plan.total, total);
        c.reconfigure(ControllerConfig {
            plan_ahead_ds: 0,
            ..cfg()
        });
        assert_eq!(c.plan(t0, 0, 0), 48);
        c.reconfigure(cfg());
        assert_eq!((c.plan.values.len(), c.plan.total), (20, 0));
    }

    /// drbd_rs_c_min_rate_throttle (drbd_receiver.c) with drbd_advance_rs_marks
    /// (drbd_actlog.c): busy = more than 64 sectors of application I/O since the last
    /// time it was found busy; then throttle if the resync speed since the mark before
    /// the latest (marks at most every DRBD_SYNC_MARK_STEP = 3 s, only on progress),
    /// Bit2KB(db / dt) with dt in whole seconds (at least 1), exceeds c-min-rate.
    #[test]
    fn c_min_rate_throttle() {
        struct Case {
            name: &'static str,
            min_rate: u64,
            // (ms since reset, application sectors, resync sectors, slow down?)
            steps: &'static [(u64, u64, u64, bool)],
        }
        let cases = [
            Case {
                name: "busy disk, resync fast then stalled",
                min_rate: 250, // 500 sectors/s
                steps: &[
                    (1000, 100, 2000, true),  // 1000 KiB/s over 1 s
                    (1500, 10, 0, false),     // 10 sectors: not busy
                    (2000, 60, 0, true),      // 70 accumulated: busy; 500 KiB/s over 2 s
                    (2100, 64, 0, false),     // count started over; 64 is not > 64
                    (3000, 100, 0, true),     // mark at 3 s; since t0: 333 KiB/s
                    (9000, 100, 0, false),    // no progress, no mark: 111 KiB/s
                    (12000, 100, 6000, true), // mark; since the 3 s mark: 3000 KiB / 9 s
                    (15000, 100, 0, false),   // no progress, no mark: 3000 KiB / 12 s = 250
                    (16000, 100, 4000, true), // mark; since the 12 s mark: 2000 KiB / 4 s
                    (29000, 100, 0, false),   // no progress, no mark: 2000 KiB / 17 s
                ],
            },
            Case {
                name: "within the first second dt counts as 1",
                min_rate: 250,
                steps: &[(10, 65, 400, false), (20, 65, 200, true)], // 200 then 300 KiB/s
            },
            Case {
                name: "idle disk never throttles",
                min_rate: 250,
                steps: &[(1000, 0, 100_000, false), (1100, 64, 100_000, false)],
            },
            Case {
                name: "c-min-rate 0 never throttles",
                min_rate: 0,
                steps: &[(1000, 10_000, 100_000, false), (1100, 10_000, 0, false)],
            },
            Case {
                name: "high c-min-rate lets the resync go on",
                min_rate: 4096,
                steps: &[
                    (1000, 1000, 2000, false),
                    (1100, 1000, 6000, false),
                    (1200, 1000, 400, true),
                ],
            },
            Case {
                name: "saturating counters",
                min_rate: 1,
                steps: &[
                    (1000, u64::MAX, u64::MAX, true),
                    (1100, u64::MAX, u64::MAX, true),
                ],
            },
        ];
        for case in cases {
            let t0 = Instant::now();
            let mut c = RateController::new(ControllerConfig {
                min_rate_kib: case.min_rate,
                ..cfg()
            });
            c.reset(t0);
            for &(at, app, rs, want) in case.steps {
                assert_eq!(
                    c.should_slow_down(ms(t0, at), app, rs),
                    want,
                    "{}: at {at} ms",
                    case.name
                );
            }
        }
    }

    /// Without reset, the marks start at the first call.
    #[test]
    fn throttle_marks_start_lazily() {
        let t0 = Instant::now();
        let mut c = RateController::new(cfg());
        assert!(c.should_slow_down(t0, 100, 1000)); // 500 KiB over dt 1 s
        let mut c = RateController::new(cfg());
        assert!(!c.should_slow_down(ms(t0, 5000), 0, 0));
        assert!(!c.should_slow_down(ms(t0, 9000), 100, 1000)); // 500 KiB over 4 s
    }

    /// No input panics: extreme counters and configurations.
    #[test]
    fn extreme_inputs() {
        let t0 = Instant::now();
        let extremes = [0, 1, 7, 8, 64, 65, u64::MAX / 2, u64::MAX - 1, u64::MAX];
        for &v in &extremes {
            let c = ControllerConfig {
                resync_rate_kib: v,
                plan_ahead_ds: u32::try_from(v).unwrap_or(u32::MAX),
                delay_target_ds: u32::try_from(v).unwrap_or(u32::MAX),
                fill_target_sect: v,
                max_rate_kib: v,
                min_rate_kib: v,
            };
            let mut rc = RateController::new(c);
            for &a in &extremes {
                for &b in &extremes {
                    let n = rc.plan(t0, a, b);
                    assert_eq!(n % 8, 0);
                    rc.should_slow_down(t0, a, b);
                }
            }
            // Time going backwards does not panic either.
            rc.should_slow_down(ms(t0, 10_000), 100, 100);
            rc.should_slow_down(t0, 100, 100);
            rc.reset(ms(t0, 10_000));
            rc.should_slow_down(t0, 100, 100);
        }
    }
}
