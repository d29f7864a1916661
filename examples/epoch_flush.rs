//! The physical limit of a two-replica write stream on one disk under DRBD's write
//! ordering `flush` (urbd's default): what `benches/repl_compare.sh` reports as `phys2f`.
//!
//! Two threads, one file each (O_DIRECT, io_uring), random aligned writes of `--bs` bytes:
//! - the Secondary's copy works in epochs: it submits `--qd` writes, waits until all have
//!   completed, issues an fdatasync, waits for it, and only then starts the next epoch
//!   (DRBD's `receive_Barrier` with `WO_bdev_flush`: an epoch holds at most the writes in
//!   flight, because the Primary closes it when one of them completes);
//! - the Primary's copy writes each epoch's `--qd` writes while the Secondary flushes the
//!   one before: the Secondary's WRITE_ACKs come when its writes complete, before its
//!   flush, so the application's next writes, and the Primary's local copies of them, start
//!   then. The next epoch waits for both the flush and those writes (the application's
//!   writes complete when both copies have them).
//!
//! It prints one line of JSON: the Secondary's writes per second and the mean time of an
//! epoch's write including its share of the flush (replicated writes complete no faster than
//! the Secondary takes them), and the Primary's writes per second.
//!
//! `cargo run --release --example epoch_flush -- --primary FILE --secondary FILE
//!  [--bs 4096] [--qd 32] [--seconds 5]` (both files must exist, at least 1 MiB each).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};

struct Args {
    primary: String,
    secondary: String,
    bs: usize,
    qd: usize,
    seconds: f64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        primary: String::new(),
        secondary: String::new(),
        bs: 4096,
        qd: 32,
        seconds: 5.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{k} {v}: {e}"));
        match k.as_str() {
            "--primary" => a.primary = v,
            "--secondary" => a.secondary = v,
            "--bs" => a.bs = num(&v)?,
            "--qd" => a.qd = num(&v)?,
            "--seconds" => a.seconds = v.parse().map_err(|e| format!("{k} {v}: {e}"))?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.primary.is_empty() || a.secondary.is_empty() {
        return Err("--primary FILE and --secondary FILE are required".into());
    }
    if a.bs == 0 || a.bs % 4096 != 0 || !(1..=256).contains(&a.qd) {
        return Err("--bs must be a multiple of 4096 and --qd within 1..=256".into());
    }
    Ok(a)
}

/// `n` buffers of `len` bytes, each 4 KiB-aligned (O_DIRECT), carved from `backing`.
fn aligned(backing: &mut Vec<u8>, n: usize, len: usize) -> Vec<*const u8> {
    *backing = (0..n * len + 4096).map(|i| i as u8).collect();
    let base = backing.as_ptr().align_offset(4096);
    (0..n).map(|i| backing[base + i * len..].as_ptr()).collect()
}

/// xorshift64: block numbers.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Which copy a thread writes, and how the two keep step.
enum Side {
    /// Writes one epoch each time the Secondary says its writes completed, and says when.
    Primary(Receiver<()>, SyncSender<()>),
    /// Works in epochs; tells the Primary when an epoch's writes completed, and starts the
    /// next one when its flush and the Primary's writes are done.
    Secondary(SyncSender<()>, Receiver<()>),
}

/// Writes one copy (the Secondary's for `seconds`, the Primary's as long as the Secondary
/// asks); returns the writes completed.
fn run(path: &str, a: &Args, side: Side, seed: u64) -> Result<u64, String> {
    // Declared before the ring, so dropped after it: on an error return the ring goes
    // first, with whatever it still has in flight.
    let mut backing = Vec::new();
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let blocks = file.metadata().map_err(|e| format!("{path}: {e}"))?.len() / a.bs as u64;
    if blocks < 2 {
        return Err(format!("{path}: smaller than two blocks of {} bytes", a.bs));
    }
    let fd = types::Fd(file.as_raw_fd());
    let mut ring = IoUring::new(a.qd as u32 * 2).map_err(|e| format!("io_uring: {e}"))?;
    let bufs = aligned(&mut backing, a.qd, a.bs);
    let mut state = seed | 1;
    let end = Instant::now() + Duration::from_secs_f64(a.seconds);
    let mut done = 0u64;
    let submit = |ring: &mut IoUring, slot: usize, state: &mut u64| -> Result<(), String> {
        let off = (next(state) % blocks) * a.bs as u64;
        let e = opcode::Write::new(fd, bufs[slot], a.bs as u32)
            .offset(off)
            .build()
            .user_data(slot as u64);
        // SAFETY: the buffer (in `backing`) outlives the operation: every epoch waits for
        // its writes, and `backing` is dropped after the ring.
        unsafe { ring.submission().push(&e) }.map_err(|_| "submission queue full".to_string())
    };
    // Submits what is queued, waits for at least `n` completions; returns how many came.
    let wait = |ring: &mut IoUring, n: usize| -> Result<usize, String> {
        ring.submit_and_wait(n)
            .map_err(|e| format!("io_uring_enter: {e}"))?;
        let mut count = 0;
        for c in ring.completion() {
            if c.result() < 0 {
                return Err(format!(
                    "{path}: {}",
                    std::io::Error::from_raw_os_error(-c.result())
                ));
            }
            count += 1;
        }
        Ok(count)
    };
    let mut epoch = |ring: &mut IoUring, state: &mut u64| -> Result<(), String> {
        for slot in 0..a.qd {
            submit(ring, slot, state)?;
        }
        let mut left = a.qd;
        while left > 0 {
            left -= wait(ring, 1)?;
        }
        done += a.qd as u64;
        Ok(())
    };
    match side {
        Side::Primary(go, written) => {
            // Until the Secondary stops (its sender is dropped).
            while go.recv().is_ok() {
                epoch(&mut ring, &mut state)?;
                if written.send(()).is_err() {
                    break;
                }
            }
        }
        Side::Secondary(go, written) => {
            let mut primary_busy = false;
            while Instant::now() < end {
                if primary_busy && written.recv().is_err() {
                    return Err("the Primary's copy stopped".into());
                }
                epoch(&mut ring, &mut state)?;
                primary_busy = go.send(()).is_ok();
                let f = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(u64::MAX);
                // SAFETY: no buffer.
                unsafe { ring.submission().push(&f) }.map_err(|_| "submission queue full")?;
                while wait(&mut ring, 1)? == 0 {}
            }
        }
    }
    Ok(done)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("epoch_flush: {e}");
            std::process::exit(2);
        }
    };
    let result = std::thread::scope(|s| {
        let (go_tx, go_rx) = sync_channel(1);
        let (written_tx, written_rx) = sync_channel(1);
        let p = s.spawn(|| {
            run(
                &a.primary,
                &a,
                Side::Primary(go_rx, written_tx),
                0x9e37_79b9_7f4a_7c15,
            )
        });
        let sec = run(
            &a.secondary,
            &a,
            Side::Secondary(go_tx, written_rx),
            0x2545_f491_4f6c_dd1d,
        );
        let pri = p
            .join()
            .map_err(|_| "the primary thread panicked".to_string())?;
        Ok::<_, String>((pri?, sec?))
    });
    match result {
        Ok((pri, sec)) => {
            let secs = a.seconds;
            let iops = sec as f64 / secs;
            println!(
                "{{\"secondary_iops\": {iops:.1}, \"secondary_write_us\": {:.1}, \"primary_iops\": {:.1}}}",
                a.qd as f64 * 1e6 / iops.max(1e-9),
                pri as f64 / secs
            );
        }
        Err(e) => {
            eprintln!("epoch_flush: {e}");
            std::process::exit(1);
        }
    }
}
