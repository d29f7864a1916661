//! Helpers shared by the integration tests: run the real binaries, own a temp dir, check for
//! external tools (fail loudly under CI=true, skip with a message otherwise).
#![allow(dead_code)]

pub mod drbdadm;
pub mod nbd;
pub mod pair;
pub mod proxy;
pub mod repl;
pub mod tls;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A `urbdadm` invocation with its own environment (no URBD_NODE leaking in from the caller).
/// Daemons it starts leave the kernel's /dev/nbdN alone (`URBD_KERNEL_NBD=0`), so that tests
/// running side by side on a machine with nbd do not fight over /dev/nbd0; the kernel NBD
/// test (tests/kernel_nbd.rs) removes it.
pub fn urbdadm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_urbdadm"));
    cmd.env_remove("URBD_NODE")
        .env_remove("URBD_LOG")
        .env("URBD_KERNEL_NBD", "0")
        .env(
            "URBD_RUN_DIR",
            std::env::temp_dir().join("urbd-test-run-unused"),
        )
        .stdin(Stdio::null());
    // URBD_TEST_LOG=debug: the daemons log at that level (for a post-mortem with
    // URBD_TEST_KEEP=1).
    if let Ok(level) = std::env::var("URBD_TEST_LOG") {
        cmd.env("URBD_LOG", level);
    }
    cmd
}

/// Output of a finished command, decoded for assertions.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn from_output(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "wrong exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs a command to completion.
pub fn run(cmd: &mut Command) -> Ran {
    Ran::from_output(
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")),
    )
}

/// Runs `cmd` (stdin null, output collected) for at most `limit`; kills it after that and
/// returns `Err` with what it printed so far.
pub fn run_within(cmd: &mut Command, limit: std::time::Duration) -> Result<Ran, Ran> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pipe = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    let ran = |code| Ran {
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    match status {
        Some(st) => Ok(ran(st.code().unwrap_or(-1))),
        None => Err(ran(-1)),
    }
}

/// Runs `urbdadm ARGS...`.
pub fn adm(args: &[&str]) -> Ran {
    run(urbdadm().args(args))
}

/// True when the tool is on PATH (or is an absolute path that exists). When it is missing:
/// under CI=true this panics (CI must never skip silently); otherwise it prints why the test
/// is skipped and returns false.
pub fn have_tool(tool: &str) -> bool {
    let found = if tool.contains('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("required tool `{tool}` is missing (CI=true: install it via .ci/run)");
        }
        eprintln!("SKIPPED: `{tool}` is not installed (run .ci/run to install test tools)");
    }
    found
}

/// True when running as root; same loud-under-CI rule as [`have_tool`].
pub fn have_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test needs root (CI runs as root)");
        }
        eprintln!("SKIPPED: needs root");
    }
    root
}

/// The repository's res-examples folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("res-examples")
}

/// Two TCP ports on 127.0.0.1 that were free a moment ago (for a pair's `address` lines;
/// tests run in parallel, so none may use fixed ports).
pub fn free_port_pair() -> (u16, u16) {
    // Below the kernel's ephemeral range (ip_local_port_range, 32768 and up by default):
    // a port taken from that range with bind(0) and released again may be handed out as
    // the source port of any outgoing connection (a daemon's dial, a test proxy's) before
    // the daemon binds it ("Address already in use"). Ports from here are only ever
    // chosen this way; both are checked free, at a random start so that tests running in
    // parallel rarely try the same ones.
    let (lo, hi) = ephemeral_range();
    let (first, last) = if lo > 12_000 {
        (10_000u16, lo - 1)
    } else {
        (hi + 1, 65_000)
    };
    let span = u64::from(last - first);
    let mut seed = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::empty());
    let mut x = u64::from_ne_bytes(seed) ^ u64::from(std::process::id());
    for _ in 0..1000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pa = first + ((x >> 33) % span) as u16;
        let pb = first + (((x >> 17) + 1) % span) as u16;
        if pa == pb {
            continue;
        }
        let a = std::net::TcpListener::bind(("127.0.0.1", pa));
        let b = std::net::TcpListener::bind(("127.0.0.1", pb));
        if a.is_ok() && b.is_ok() {
            return (pa, pb);
        }
    }
    panic!("no two free TCP ports on 127.0.0.1 in {first}..{last}");
}

/// The kernel's ephemeral port range.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|w| w.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}
