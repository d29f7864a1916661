//! Resync throughput of two real urbd daemons over loopback TCP, beside nbdcopy (nbdkit file
//! to nbdkit file) measured in the same run, on disks of the same size.
//!
//! Scenarios (criterion group `resync`, each a `iter_custom` that times one resync per
//! iteration, from the `urbdadm` command that starts it until `urbdadm proc` shows
//! `cs:Connected ... ds:UpToDate/UpToDate` and `oos:0` on both nodes, polled every 20 ms):
//! - `nbdcopy`, `nbdcopy_flush`: the baseline, `nbdcopy SRC DST` (and with `--flush`) between
//!   two `nbdkit file` exports on unix sockets;
//! - `physical`, `physical_1pct`: the physical limit of the same work on this disk, fio's
//!   io_uring engine with O_DIRECT reading the source while writing a file of the same size
//!   (all of it in 512 KiB requests; every 100th 4 KiB block) and flushing it at the end,
//!   fio's own runtime;
//! - `full_sync`: `invalidate` on beta (Secondary), a full resync without csums;
//! - `dirty_1pct`, `dirty_10pct`: `disconnect` on alpha (Primary), every 100th (10th) 4 KiB
//!   block written through alpha's NBD socket, then `connect`: a bitmap resync;
//! - `csums_identical`: a second pair with `net { csums-alg crc32c; }`, `invalidate` on beta
//!   with identical disks; the bytes that crossed loopback TCP are counted too.
//!
//! Environment: `URBD_BENCH_SIZE` (disk size, default `1G`; `K`/`M`/`G` suffixes),
//! `URBD_BENCH_RATE` (`resync-rate`, default `4096M`, urbd's maximum), `URBD_BENCH_DIR`
//! (parent of the temporary folder, default the system's). A summary table is printed at
//! the end. Every daemon and nbdkit is stopped and the folder removed, also on a panic.
//!
//! Run: `cargo bench --bench resync` (5-10 minutes at 1 GiB on 2 shared vCPUs).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use urbd::nbd::Client;
use urbd::nbd::proto::Command as NbdCommand;

const RES: &str = "rsbench";
const BLOCK: u64 = 4096;
const MIB: f64 = 1024.0 * 1024.0;
/// No single command may take longer than this.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// No resync (or connection) may take longer than this.
const RESYNC_LIMIT: Duration = Duration::from_secs(900);
/// How often `urbdadm proc` is polled while a resync runs.
const POLL: Duration = Duration::from_millis(20);
/// NBD writes in flight while dirtying the disk.
const QUEUE_DEPTH: usize = 32;

/// What one timed run measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    time: Duration,
    /// KiB of resync data alpha sent (`ns:` delta of its proc).
    ns_kib: u64,
    /// Bytes on loopback TCP between the two daemons, both directions (tcp_info), when the
    /// same connections lived from start to end.
    wire_bytes: Option<u64>,
    /// KiB the resync announced ("will sync N KB").
    resynced_kib: Option<u64>,
    /// From "Began resync" to "Resync done" in the SyncTarget's log.
    in_resync: Option<Duration>,
    /// From the command's start to "Began resync as SyncTarget" in beta's log.
    to_began: Option<Duration>,
    /// From "Resync done (SyncTarget)" in beta's log to both nodes seen in sync.
    after_done: Option<Duration>,
    /// The SyncTarget's "% had equal checksums" line (csums only).
    csums_line: Option<String>,
}

/// Every timed run, by scenario, in order (the first one is criterion's warm-up).
static SAMPLES: Mutex<BTreeMap<&'static str, Vec<Sample>>> = Mutex::new(BTreeMap::new());

fn record(name: &'static str, s: Sample) {
    SAMPLES
        .lock()
        .expect("samples lock")
        .entry(name)
        .or_default()
        .push(s);
}

/// Output of a bounded command.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` (stdin null, output collected) for at most `limit`, killing it after that.
fn run_within(cmd: &mut Command, limit: Duration) -> Result<Ran, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(child.stdout.take().map(|p| Box::new(p) as _));
    let err = pipe(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    let ran = Ran {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    match status {
        Some(_) => Ok(ran),
        None => Err(format!(
            "{cmd:?} took longer than {limit:?}\nstderr: {}",
            ran.stderr
        )),
    }
}

/// Runs `cmd` and panics (with its output) unless it exits 0.
fn run_ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let ran = run_within(cmd, COMMAND_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ran.code, 0,
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        ran.stdout, ran.stderr
    );
    ran.stdout
}

fn pid_alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

fn kill9(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// `1G`, `256M`, `65536K` or bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// Deterministic pseudo-random bytes (xorshift64*), different for each seed.
fn fill_random(seed: u64, buf: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// A file of `size` bytes of pseudo-random data (nothing sparse: neither nbdcopy nor a
/// resync can skip holes or zeroes).
fn write_random_file(path: &Path, size: u64, seed: u64) {
    let mut f = fs::File::create(path).expect("create a data file");
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0;
    while done < size {
        let n = (size - done).min(buf.len() as u64) as usize;
        fill_random(seed ^ done, &mut buf[..n]);
        f.write_all(&buf[..n]).expect("write a data file");
        done += n as u64;
    }
    f.sync_all().expect("sync a data file");
}

fn sparse(path: &Path, size: u64) {
    fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .expect("create a sparse file");
}

fn free_port_pair() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let pa = a.local_addr().expect("local addr").port();
    let pb = b.local_addr().expect("local addr").port();
    (pa, pb)
}

/// The bench's environment: size, rate, the folder everything lives in.
struct Env {
    size: u64,
    rate: String,
    dir: tempfile::TempDir,
    /// The random source (alpha's disk of each pair is a copy of it, as is nbdcopy's).
    source: PathBuf,
}

impl Env {
    fn new() -> Self {
        let size = std::env::var("URBD_BENCH_SIZE")
            .ok()
            .map(|s| parse_size(&s).expect("URBD_BENCH_SIZE: a size such as 1G or 256M"))
            .unwrap_or(1 << 30);
        assert!(
            size >= 16 << 20 && size % BLOCK == 0,
            "URBD_BENCH_SIZE must be at least 16M and a multiple of 4K"
        );
        let rate = std::env::var("URBD_BENCH_RATE").unwrap_or_else(|_| "4096M".into());
        let dir = match std::env::var_os("URBD_BENCH_DIR") {
            Some(p) => tempfile::Builder::new()
                .prefix("urbd-resync-bench.")
                .tempdir_in(p),
            None => tempfile::Builder::new()
                .prefix("urbd-resync-bench.")
                .tempdir(),
        }
        .expect("a temporary folder");
        let source = dir.path().join("source.img");
        write_random_file(&source, size, 1);
        Env {
            size,
            rate,
            dir,
            source,
        }
    }
}

/// One node of a pair.
struct Node {
    name: &'static str,
    conf: PathBuf,
    run_dir: PathBuf,
}

impl Node {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_urbdadm"));
        cmd.env_remove("URBD_NODE")
            .env_remove("URBD_LOG")
            .env("URBD_KERNEL_NBD", "0")
            .env("URBD_RUN_DIR", &self.run_dir)
            .arg("-c")
            .arg(&self.conf)
            .args(["--node", self.name])
            .args(args);
        cmd
    }

    /// `urbdadm ... ARGS RES`, which must succeed.
    fn adm(&self, args: &[&str]) -> String {
        let mut a = args.to_vec();
        a.push(RES);
        run_ok(&mut self.cmd(&a))
    }

    /// The state line and the counters line of `proc` (plus any sync progress lines).
    fn proc_lines(&self) -> Vec<String> {
        run_ok(&mut self.cmd(&["proc"]))
            .lines()
            .skip(2)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn counter(lines: &[String], name: &str) -> Option<u64> {
        let prefix = format!("{name}:");
        lines
            .get(1)?
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
    }

    /// alpha's `ns:` counter; retried while the daemon does not answer `proc` (then
    /// `urbdadm proc` prints the headers alone: a daemon blocked in a slow metadata sync).
    fn ns(&self) -> u64 {
        let start = Instant::now();
        loop {
            if let Some(v) = Self::counter(&self.proc_lines(), "ns") {
                return v;
            }
            assert!(
                start.elapsed() < RESYNC_LIMIT,
                "{}: no counters in proc for {RESYNC_LIMIT:?}",
                self.name
            );
            eprintln!(
                "  {}: proc has no status (daemon not answering); retrying",
                self.name
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn cstate(&self) -> String {
        self.adm(&["cstate"]).trim().to_owned()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.run_dir.join(format!("{RES}.log"))).unwrap_or_default()
    }

    fn pid(&self) -> Option<i32> {
        fs::read_to_string(self.run_dir.join(format!("{RES}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn nbd_socket(&self) -> PathBuf {
        self.run_dir.join(format!("{RES}.nbd"))
    }
}

/// Connected and in sync: the state line says so, no progress lines, `oos:0`.
fn synced(lines: &[String], state: &str) -> bool {
    lines.len() == 2 && lines[0].contains(state) && Node::counter(lines, "oos") == Some(0)
}

/// A loopback pair, alpha Primary; `Drop` downs both daemons and kills what is left.
struct Pair {
    nodes: [Node; 2],
    ports: (u16, u16),
    dir: PathBuf,
}

impl Pair {
    /// Creates the pair's files in `env`'s folder (alpha's disk a copy of the random
    /// source, beta's sparse), creates the metadata, brings both up, `primary --force` on
    /// alpha and waits for the initial full sync.
    fn start(env: &Env, tag: &str, net: &str) -> Pair {
        let d = env.dir.path().join(tag);
        fs::create_dir_all(&d).expect("a pair's folder");
        fs::copy(&env.source, d.join("alpha.img")).expect("copy the source to alpha's disk");
        // Nothing of it left dirty in the page cache: the daemons' fsyncs would pay for it.
        fs::File::open(d.join("alpha.img"))
            .and_then(|f| f.sync_all())
            .expect("sync alpha's disk");
        sparse(&d.join("beta.img"), env.size);
        for n in ["alpha", "beta"] {
            sparse(&d.join(format!("{n}.meta")), 128 << 20);
        }
        let (pa, pb) = free_port_pair();
        let conf = d.join("urbd.conf");
        let disk = |n: &str| {
            format!(
                "disk \"{0}/{n}.img\"; meta-disk \"{0}/{n}.meta\" [0];",
                d.display()
            )
        };
        fs::write(
            &conf,
            format!(
                "resource {RES} {{\n  protocol C;\n  disk {{ resync-rate {}; }}\n  \
                 net {{ connect-int 2; {net} }}\n  \
                 on alpha {{ device minor 0; {} address 127.0.0.1:{pa}; }}\n  \
                 on beta {{ device minor 1; {} address 127.0.0.1:{pb}; }}\n}}\n",
                env.rate,
                disk("alpha"),
                disk("beta"),
            ),
        )
        .expect("write the configuration");
        let node = |name| Node {
            name,
            conf: conf.clone(),
            run_dir: d.join(format!("run-{name}")),
        };
        let pair = Pair {
            nodes: [node("alpha"), node("beta")],
            ports: (pa, pb),
            dir: d,
        };
        for n in &pair.nodes {
            n.adm(&["create-md", "--force"]);
        }
        for n in &pair.nodes {
            n.adm(&["up"]);
        }
        for n in &pair.nodes {
            n.adm(&["wait-connect"]);
        }
        let t = Instant::now();
        pair.alpha().adm(&["primary", "--force"]);
        pair.wait_synced();
        eprintln!(
            "resync bench: pair `{tag}` up, initial full sync of {} MiB in {:.2} s",
            env.size >> 20,
            t.elapsed().as_secs_f64()
        );
        pair
    }

    fn alpha(&self) -> &Node {
        &self.nodes[0]
    }

    fn beta(&self) -> &Node {
        &self.nodes[1]
    }

    /// The last lines of both logs and both procs, for a failure message.
    fn report(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let log = n.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(30);
            let proc = run_within(&mut n.cmd(&["proc"]), COMMAND_LIMIT)
                .map(|r| r.stdout)
                .unwrap_or_else(|e| e);
            s.push_str(&format!(
                "--- {} proc ---\n{proc}--- {} log (last {} lines) ---\n{}\n",
                n.name,
                n.name,
                lines.len() - from,
                lines[from..].join("\n")
            ));
        }
        s
    }

    /// Polls `urbdadm proc` (alpha first, then beta) every [`POLL`] until both are
    /// Connected, UpToDate/UpToDate and `oos:0`; returns when that was seen.
    fn wait_synced(&self) -> Instant {
        let start = Instant::now();
        loop {
            if synced(
                &self.alpha().proc_lines(),
                "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate",
            ) && synced(
                &self.beta().proc_lines(),
                "cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate",
            ) {
                return Instant::now();
            }
            assert!(
                start.elapsed() < RESYNC_LIMIT,
                "not in sync after {RESYNC_LIMIT:?}\n{}",
                self.report()
            );
            std::thread::sleep(POLL);
        }
    }

    fn wait_cstate(&self, n: &Node, want: &str) {
        let start = Instant::now();
        while n.cstate() != want {
            assert!(
                start.elapsed() < COMMAND_LIMIT,
                "{} not {want}\n{}",
                n.name,
                self.report()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Loopback TCP connections of this pair (one end on either listening port): the set
    /// of (local, peer) endpoints, and the payload bytes they carried in both directions.
    fn tcp_bytes(&self) -> (BTreeSet<(String, String)>, u64) {
        let out = run_ok(Command::new("ss").args(["-tinH", "state", "established"]));
        let mut conns = BTreeSet::new();
        let mut total = 0;
        let mut current: Option<(String, String)> = None;
        for line in out.lines() {
            if !line.starts_with(char::is_whitespace) {
                // State columns are dropped by the state filter: Recv-Q Send-Q Local Peer.
                let f: Vec<&str> = line.split_whitespace().collect();
                current = (f.len() >= 4).then(|| (f[2].to_owned(), f[3].to_owned()));
                continue;
            }
            let Some((local, peer)) = current.take() else {
                continue;
            };
            let port = local.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
            if port != Some(self.ports.0) && port != Some(self.ports.1) {
                continue;
            }
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            total += field("bytes_sent:") + field("bytes_received:");
            conns.insert((local, peer));
        }
        (conns, total)
    }

    /// Writes every `stride`-th 4 KiB block of alpha's disk through its NBD socket (32 in
    /// flight), then flushes.
    fn dirty(&self, size: u64, stride: u64, seed: u64) -> u64 {
        let mut c = Client::connect_unix(self.alpha().nbd_socket(), RES, true)
            .unwrap_or_else(|e| panic!("NBD connect to alpha: {e}\n{}", self.report()));
        let mut data = vec![0u8; BLOCK as usize];
        fill_random(seed, &mut data);
        let blocks = size / BLOCK;
        let mut in_flight = 0;
        let mut written = 0;
        let mut b = 0;
        while b < blocks || in_flight > 0 {
            if b < blocks && in_flight < QUEUE_DEPTH {
                data[..8].copy_from_slice(&b.to_le_bytes());
                c.send_request(NbdCommand::WRITE, 0, b * BLOCK, BLOCK as u32, &data)
                    .unwrap_or_else(|e| panic!("NBD write: {e}\n{}", self.report()));
                in_flight += 1;
                written += 1;
                b += stride;
                continue;
            }
            let (_, r) = c
                .recv_reply()
                .unwrap_or_else(|e| panic!("NBD reply: {e}\n{}", self.report()));
            r.unwrap_or_else(|e| panic!("NBD write failed: {e}\n{}", self.report()));
            in_flight -= 1;
        }
        c.flush()
            .unwrap_or_else(|e| panic!("NBD flush: {e}\n{}", self.report()));
        c.disconnect()
            .unwrap_or_else(|e| panic!("NBD disconnect: {e}\n{}", self.report()));
        written
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // The daemons' logs outlive the run, for a look afterwards.
        let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("resync-bench-logs");
        if fs::create_dir_all(&keep).is_ok() {
            let tag = self
                .dir
                .file_name()
                .map_or("pair".into(), |s| s.to_string_lossy().into_owned());
            for n in &self.nodes {
                let _ = fs::write(keep.join(format!("{tag}-{}.log", n.name)), n.log());
            }
        }
        for n in &self.nodes {
            let pid = n.pid();
            if let Err(e) = run_within(&mut n.cmd(&["down", RES]), Duration::from_secs(60)) {
                eprintln!(
                    "{}: `down` did not finish ({e}); killing the daemon",
                    n.name
                );
            }
            if let Some(pid) = pid.filter(|&p| pid_alive(p)) {
                kill9(pid);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Seconds of the day of a log line's `2026-11-26T00:54:59.027889Z` timestamp.
fn log_secs(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let time = t.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// What beta's log says about its last resync, from the log text appended since `from`.
struct LogResync {
    kib: Option<u64>,
    began: Option<f64>,
    done: Option<f64>,
    csums: Option<String>,
}

/// Seconds of the (UTC) day now, as the log's timestamps count them.
fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() % 86400.0)
}

/// `b - a` for two seconds-of-day figures (across midnight too).
fn secs_between(a: f64, b: f64) -> Duration {
    let d = b - a;
    Duration::from_secs_f64(if d < -43200.0 {
        d + 86400.0
    } else {
        d.max(0.0)
    })
}

fn last_resync(log: &str, from: usize) -> LogResync {
    let new = log.get(from..).unwrap_or("");
    let began = new
        .lines()
        .rfind(|l| l.contains("Began resync as SyncTarget"));
    let done = new
        .lines()
        .rfind(|l| l.contains("Resync done (SyncTarget)"));
    let kib = began
        .and_then(|l| l.split_once("(will sync ").map(|(_, r)| r))
        .and_then(|r| r.split_once(" KB").and_then(|(k, _)| k.parse().ok()));
    let csums = new
        .lines()
        .rfind(|l| l.contains("% had equal checksums"))
        .and_then(|l| l.split_once("INFO "))
        .map(|(_, r)| r.trim().to_owned());
    LogResync {
        kib,
        began: began.and_then(log_secs),
        done: done.and_then(log_secs),
        csums,
    }
}

/// Times one resync that `start` begins (alpha's `ns:` and the TCP bytes counted around it).
fn timed_resync(pair: &Pair, start: impl FnOnce()) -> Sample {
    let from = pair.beta().log().len();
    let ns0 = pair.alpha().ns();
    let (conns0, bytes0) = pair.tcp_bytes();
    let (t0, w0) = (Instant::now(), now_secs());
    start();
    let t1 = pair.wait_synced();
    let w1 = now_secs();
    let (conns1, bytes1) = pair.tcp_bytes();
    let ns1 = pair.alpha().ns();
    let r = last_resync(&pair.beta().log(), from);
    let s = Sample {
        time: t1 - t0,
        ns_kib: ns1.saturating_sub(ns0),
        wire_bytes: (conns0 == conns1 && !conns0.is_empty()).then(|| bytes1 - bytes0),
        resynced_kib: r.kib,
        in_resync: r.began.zip(r.done).map(|(a, b)| secs_between(a, b)),
        to_began: r.began.map(|b| secs_between(w0, b)),
        after_done: r.done.map(|d| secs_between(d, w1)),
        csums_line: r.csums,
    };
    let f = |d: Option<Duration>| d.map_or("?".into(), |d| format!("{:.3} s", d.as_secs_f64()));
    eprintln!(
        "  run: {:.3} s = command to Began {} + Began to done {} + done to both in sync {} \
         ({} KiB; ns {} KiB)",
        s.time.as_secs_f64(),
        f(s.to_began),
        f(s.in_resync),
        f(s.after_done),
        s.resynced_kib.map_or("?".into(), |k| k.to_string()),
        s.ns_kib
    );
    s
}

/// `nbdkit file` on a unix socket; killed on drop (and `--exit-with-parent`).
struct Nbdkit(Child);

impl Nbdkit {
    fn start(file: &Path, sock: &Path, readonly: bool) -> Nbdkit {
        let mut cmd = Command::new("nbdkit");
        cmd.args(["--exit-with-parent", "-f"]);
        if readonly {
            cmd.arg("-r");
        }
        cmd.arg("-U")
            .arg(sock)
            .arg("file")
            .arg(file)
            .stdin(Stdio::null());
        let child = cmd
            .spawn()
            .expect("start nbdkit (is it installed? apt-get install nbdkit)");
        let kit = Nbdkit(child);
        let t = Instant::now();
        while !sock.exists() {
            assert!(t.elapsed() < COMMAND_LIMIT, "nbdkit did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        kit
    }
}

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The two nbdkit exports of the baseline and the destination file.
struct Baseline {
    src: String,
    dst: String,
    dst_file: PathBuf,
    _kits: [Nbdkit; 2],
}

impl Baseline {
    fn start(env: &Env) -> Baseline {
        let d = env.dir.path();
        let dst = d.join("nbdcopy-dst.img");
        sparse(&dst, env.size);
        let (ss, ds) = (d.join("nbdkit-src.sock"), d.join("nbdkit-dst.sock"));
        let kits = [
            Nbdkit::start(&env.source, &ss, true),
            Nbdkit::start(&dst, &ds, false),
        ];
        Baseline {
            src: format!("nbd+unix:///?socket={}", ss.display()),
            dst: format!("nbd+unix:///?socket={}", ds.display()),
            dst_file: dst,
            _kits: kits,
        }
    }

    fn copy(&self, flush: bool) -> Duration {
        let mut cmd = Command::new("nbdcopy");
        if flush {
            cmd.arg("--flush");
        }
        cmd.args([&self.src, &self.dst]);
        let t = Instant::now();
        run_ok(&mut cmd);
        let took = t.elapsed();
        // Untimed: write back what nbdcopy left in the page cache, so that neither the next
        // copy nor the urbd runs after it pay for it.
        fs::File::open(&self.dst_file)
            .and_then(|f| f.sync_all())
            .expect("sync nbdcopy's destination");
        took
    }
}

/// The physical limit of a resync on this one disk (both nodes' files are on it): fio's
/// io_uring engine with O_DIRECT reading the random source while it writes a file of the
/// same size, the two jobs at once. Full: 512 KiB requests, 16 in flight each (the resync's
/// window at its largest request size); `stride` (in 4 KiB blocks): only every stride-th
/// 4 KiB block, 256 in flight each (the dirty scenarios' pattern). The written file is
/// flushed at the end (`end_fsync`), as a resync flushes its target's disk before it
/// reports the blocks in sync. The time is fio's own (the longer job's runtime, the final
/// flush included), without its start-up.
struct Physical {
    src: PathBuf,
    dst: PathBuf,
    size: u64,
}

impl Physical {
    fn start(env: &Env) -> Physical {
        let dst = env.dir.path().join("physical-dst.img");
        // Allocated and written back first (as the urbd disks are), untimed.
        fs::copy(&env.source, &dst).expect("copy the source for fio");
        fs::File::open(&dst)
            .and_then(|f| f.sync_all())
            .expect("sync fio's destination");
        Physical {
            src: env.source.clone(),
            dst,
            size: env.size,
        }
    }

    fn copy(&self, stride: Option<u64>) -> Duration {
        let (rw_read, rw_write, bs, depth, ios) = match stride {
            None => ("read".to_string(), "write".to_string(), "512k", "16", None),
            Some(n) => {
                let skip = format!(":{}k", (n - 1) * BLOCK / 1024);
                (
                    format!("read{skip}"),
                    format!("write{skip}"),
                    "4k",
                    "256",
                    Some((self.size / BLOCK).div_ceil(n)),
                )
            }
        };
        let mut cmd = Command::new("fio");
        cmd.arg("--output-format=json");
        for (name, file, rw) in [
            ("read", &self.src, &rw_read),
            ("write", &self.dst, &rw_write),
        ] {
            cmd.arg(format!("--name={name}"))
                .arg(format!("--filename={}", file.display()))
                .arg(format!("--rw={rw}"))
                .arg(format!("--bs={bs}"))
                .arg(format!("--iodepth={depth}"))
                .arg(format!("--size={}", self.size))
                .args(["--direct=1", "--ioengine=io_uring"]);
            if let Some(n) = ios {
                cmd.arg(format!("--number_ios={n}"));
            }
            if name == "write" {
                // Durable at the end, as a finished resync is (its runtime includes it).
                cmd.arg("--end_fsync=1");
            }
        }
        let out = run_ok(&mut cmd);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "fio's JSON output: {e}
{out}"
            )
        });
        let ms = json["jobs"]
            .as_array()
            .map(|jobs| {
                jobs.iter()
                    .filter_map(|j| j["job_runtime"].as_u64())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        assert!(ms > 0, "fio reported no runtime:\n{out}");
        Duration::from_millis(ms)
    }
}

/// A scenario without urbd: each iteration is one copy, timed by `run`.
fn bench_copy(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &'static str,
    run: impl Fn() -> Duration,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = run();
                record(
                    name,
                    Sample {
                        time: t,
                        ..Sample::default()
                    },
                );
                total += t;
            }
            total
        })
    });
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The timed runs of a scenario without the first (criterion's warm-up), unless it is the
/// only one.
fn kept(name: &str) -> Vec<Sample> {
    let all = SAMPLES
        .lock()
        .expect("samples lock")
        .get(name)
        .cloned()
        .unwrap_or_default();
    if all.len() > 1 {
        all[1..].to_vec()
    } else {
        all
    }
}

fn summary(size: u64, load_start: &str) {
    let secs = |n: &str| median(kept(n).iter().map(|s| s.time.as_secs_f64()).collect());
    let base = secs("nbdcopy");
    let full = secs("full_sync");
    let mib = size as f64 / MIB;
    println!(
        "\nresync bench summary: disk {} MiB; load average {load_start} at the start, {} at the end",
        size >> 20,
        loadavg()
    );
    println!(
        "MiB/s = disk size / median time (of the timed runs, criterion's warm-up left out); \
         x nbdcopy = MiB/s over nbdcopy's; x physical = fio's time (same pattern, O_DIRECT, this disk) over the scenario's\n"
    );
    println!(
        "| scenario | runs | median time | MiB/s | x nbdcopy | x physical | resynced KiB | Began->done (median) | MiB/s Began->done | command->Began | done->in sync | ns KiB (median) | TCP KiB both ways (median) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for name in [
        "nbdcopy",
        "nbdcopy_flush",
        "physical",
        "physical_1pct",
        "full_sync",
        "dirty_1pct",
        "dirty_10pct",
        "csums_identical",
    ] {
        let runs = kept(name);
        let Some(t) = secs(name) else { continue };
        let rate = mib / t;
        let phase = |f: fn(&Sample) -> Option<Duration>| {
            median(
                runs.iter()
                    .filter_map(|s| f(s).map(|d| d.as_secs_f64()))
                    .collect(),
            )
        };
        let (to_began, after_done) = (phase(|s| s.to_began), phase(|s| s.after_done));
        let ratio = base.map_or("-".into(), |b| format!("{:.2}x", b / t));
        let phys = match name {
            "full_sync" => secs("physical"),
            "dirty_1pct" => secs("physical_1pct"),
            _ => None,
        };
        let phys_ratio = phys.map_or("-".into(), |p| format!("{:.2}x", p / t));
        let kib = runs.last().and_then(|s| s.resynced_kib);
        let span = median(
            runs.iter()
                .filter_map(|s| s.in_resync.map(|d| d.as_secs_f64()))
                .collect(),
        );
        let resync_rate = match (kib, span) {
            (Some(k), Some(s)) if s > 0.0 => format!("{:.0}", k as f64 / 1024.0 / s),
            _ => "-".into(),
        };
        let ns = median(runs.iter().map(|s| s.ns_kib as f64).collect());
        let wire = median(
            runs.iter()
                .filter_map(|s| s.wire_bytes.map(|b| b as f64 / 1024.0))
                .collect(),
        );
        let urbd = !name.starts_with("nbdcopy") && !name.starts_with("physical");
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".into(), f);
        println!(
            "| {name} | {} | {:.3} s | {rate:.1} | {ratio} | {phys_ratio} | {} | {} | {} | {} | {} | {} | {} |",
            runs.len(),
            t,
            kib.map_or("-".into(), |k| k.to_string()),
            opt(span, &|s| format!("{s:.3} s")),
            if urbd { resync_rate } else { "-".into() },
            opt(to_began, &|s| format!("{s:.3} s")),
            opt(after_done, &|s| format!("{s:.3} s")),
            if urbd {
                opt(ns, &|k| format!("{k:.0}"))
            } else {
                "-".into()
            },
            opt(wire, &|k| format!("{k:.0}")),
        );
    }
    println!();
    if let (Some(b), Some(f)) = (base, full) {
        let r = b / f;
        println!(
            "target full sync >= 0.9x nbdcopy: {r:.2}x, {}",
            if r >= 0.9 { "met" } else { "NOT met" }
        );
    }
    let span = |n: &str| {
        median(
            kept(n)
                .iter()
                .filter_map(|s| s.in_resync.map(|d| d.as_secs_f64()))
                .collect(),
        )
    };
    if let (Some(p), Some(f)) = (secs("physical"), span("full_sync")) {
        println!(
            "full sync, Began->done: {:.2}x the physical limit (fio reading and writing the same amount at once on this disk)",
            p / f
        );
    }
    if let (Some(p), Some(d)) = (secs("physical_1pct"), span("dirty_1pct")) {
        println!(
            "1% dirty, Began->done: {:.2}x the physical limit (fio reading and writing every 100th 4 KiB block at once)",
            p / d
        );
    }
    for (name, label) in [("dirty_1pct", "1% dirty"), ("dirty_10pct", "10% dirty")] {
        if let (Some(d), Some(f)) = (span(name), span("full_sync")) {
            println!(
                "{label}, Began->done only (without the reconnect): {:.2}% of the full sync's",
                100.0 * d / f
            );
        }
        if let (Some(d), Some(f)) = (secs(name), full) {
            let pct = 100.0 * d / f;
            let target = if name == "dirty_1pct" {
                if pct <= 2.0 {
                    ", target <= 2%: met"
                } else {
                    ", target <= 2%: NOT met"
                }
            } else {
                ""
            };
            println!("{label}, command to synced: {pct:.2}% of the full sync time{target}");
        }
    }
    let cs = kept("csums_identical");
    if !cs.is_empty() {
        let disk_kib = size as f64 / 1024.0;
        let wire = median(
            cs.iter()
                .filter_map(|s| s.wire_bytes.map(|b| b as f64 / 1024.0))
                .collect(),
        );
        let ns = median(cs.iter().map(|s| s.ns_kib as f64).collect()).unwrap_or(0.0);
        let worst = wire.unwrap_or(ns).max(ns);
        println!(
            "csums of identical disks: ns {ns:.0} KiB, TCP {} KiB = {:.3}% of the disk, target <= 1%: {}",
            wire.map_or("?".into(), |w| format!("{w:.0}")),
            100.0 * worst / disk_kib,
            if worst <= disk_kib / 100.0 {
                "met"
            } else {
                "NOT met"
            }
        );
        if let Some(l) = cs.last().and_then(|s| s.csums_line.clone()) {
            println!("  beta's log, last run: {l}");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        for n in [
            "nbdcopy",
            "nbdcopy_flush",
            "physical",
            "physical_1pct",
            "full_sync",
            "dirty_1pct",
            "dirty_10pct",
            "csums_identical",
        ] {
            println!("resync/{n}: benchmark");
        }
        return;
    }
    let load_start = loadavg();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(100))
        .without_plots()
        .configure_from_args();
    let env = Env::new();
    let size = env.size;
    {
        let mut g = c.benchmark_group("resync");
        g.sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Bytes(size));

        // The baseline first, then the urbd pairs one after the other (never two at once).
        {
            let base = Baseline::start(&env);
            for (name, flush) in [("nbdcopy", false), ("nbdcopy_flush", true)] {
                bench_copy(&mut g, name, || base.copy(flush));
            }
        }

        {
            let phys = Physical::start(&env);
            for (name, stride) in [("physical", None), ("physical_1pct", Some(100))] {
                bench_copy(&mut g, name, || phys.copy(stride));
            }
        }

        let mut pair: Option<Pair> = None;
        g.bench_function("full_sync", |b| {
            let p: &Pair = pair.get_or_insert_with(|| Pair::start(&env, "plain", ""));
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let s = timed_resync(p, || {
                        p.beta().adm(&["invalidate"]);
                    });
                    total += s.time;
                    record("full_sync", s);
                }
                total
            })
        });
        let mut seed = 100;
        for (name, stride) in [("dirty_1pct", 100u64), ("dirty_10pct", 10)] {
            g.bench_function(name, |b| {
                let p: &Pair = pair.get_or_insert_with(|| Pair::start(&env, "plain", ""));
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        p.alpha().adm(&["disconnect"]);
                        p.wait_cstate(p.alpha(), "StandAlone");
                        seed += 1;
                        p.dirty(size, stride, seed);
                        let s = timed_resync(p, || {
                            p.alpha().adm(&["connect"]);
                        });
                        total += s.time;
                        record(name, s);
                    }
                    total
                })
            });
        }
        drop(pair);

        let mut csums: Option<Pair> = None;
        g.bench_function("csums_identical", |b| {
            let p: &Pair =
                csums.get_or_insert_with(|| Pair::start(&env, "csums", "csums-alg crc32c;"));
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let s = timed_resync(p, || {
                        p.beta().adm(&["invalidate"]);
                    });
                    total += s.time;
                    record("csums_identical", s);
                }
                total
            })
        });
        drop(csums);
        g.finish();
    }
    c.final_summary();
    summary(size, &load_start);
}
