//! Two nodes of a loopback pair (`alpha`, `beta`) on one machine, driven through the real
//! `urbdadm`: each with its own run directory and file-backed disks in a temporary folder.
//! [`Pair`]'s `Drop` runs `down` for both nodes and then kills any daemon still alive, also
//! when the test fails. Every command is bounded in time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Ran;

/// No single command may take longer than this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`Pair`]'s `Drop` lets `down` run before it kills the daemon.
pub const DROP_DOWN_TIMEOUT: Duration = Duration::from_secs(5);

pub const DATA_BYTES: u64 = 64 << 20;
pub const META_SLOT_BYTES: u64 = 128 << 20;

/// Runs `cmd` with a time limit; kills it and fails the test when the limit passes.
pub fn run_bounded(cmd: &mut Command) -> Ran {
    super::run_within(cmd, COMMAND_TIMEOUT).unwrap_or_else(|r| {
        panic!(
            "{cmd:?} took longer than {COMMAND_TIMEOUT:?}\nstderr: {}",
            r.stderr
        )
    })
}

pub fn pid_alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

pub fn wait_gone(pid: i32) {
    let start = Instant::now();
    while pid_alive(pid) {
        assert!(
            start.elapsed() < COMMAND_TIMEOUT,
            "daemon {pid} does not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One node of the pair.
pub struct Node {
    pub name: &'static str,
    pub conf: PathBuf,
    pub run_dir: PathBuf,
    pub data: PathBuf,
    pub meta: PathBuf,
    pub minor: u32,
}

impl Node {
    /// `urbdadm -c CONF --node NAME ARGS...` with this node's run and state directories.
    pub fn adm(&self, args: &[&str]) -> Ran {
        self.adm_env(&[], args)
    }

    /// [`Node::adm`] with more environment (which a daemon started by `up` inherits).
    pub fn adm_env(&self, env: &[(&str, &str)], args: &[&str]) -> Ran {
        let mut cmd = super::urbdadm();
        cmd.env("URBD_RUN_DIR", &self.run_dir)
            .env("URBD_STATE_DIR", self.state_dir())
            .envs(env.iter().copied())
            .arg("-c")
            .arg(&self.conf)
            .args(["--node", self.name])
            .args(args);
        run_bounded(&mut cmd)
    }

    /// The node's state directory (split-brain saves): inside its run directory, so each
    /// test and node has its own.
    pub fn state_dir(&self) -> PathBuf {
        self.run_dir.join("state")
    }

    /// Size of the data disk file.
    pub fn data_bytes(&self) -> u64 {
        fs::metadata(&self.data).expect("stat data disk").len()
    }

    /// The daemon's log (`<run dir>/loop.log`), or an empty string.
    pub fn log(&self) -> String {
        fs::read_to_string(self.run_dir.join("loop.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<i32> {
        fs::read_to_string(self.run_dir.join("loop.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("loop.ctl")
    }

    pub fn get_gi(&self) -> String {
        self.adm(&["get-gi", "loop"]).ok().stdout
    }

    /// The proc text, one line per entry (headers dropped).
    pub fn proc_body(&self) -> Vec<String> {
        let out = self.adm(&["proc"]).ok().stdout;
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("version: 8.4.11 (api:1/proto:86-101)"));
        assert!(
            lines
                .next()
                .is_some_and(|l| l.starts_with("GIT-hash: urbd-"))
        );
        lines.map(str::to_owned).collect()
    }

    /// The line of `drbdmeta get-gi` for this node's metadata (the oracle).
    pub fn drbdmeta_get_gi(&self) -> String {
        let out = Command::new("drbdmeta")
            .args(["--force", "-", "v08"])
            .arg(&self.meta)
            .args(["0", "get-gi"])
            .output()
            .expect("run drbdmeta");
        assert!(
            out.status.success(),
            "drbdmeta: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// What [`Pair::build`] varies; `[alpha, beta]` where the nodes may differ.
#[derive(Clone, Debug)]
pub struct PairOpts {
    /// `meta-disk internal` instead of an external meta file per node.
    pub internal: bool,
    /// Size of each data disk.
    pub data_bytes: u64,
    /// The `protocol` letter of each node's configuration.
    pub protocol: [char; 2],
    /// `disk { resync-rate R; }`.
    pub resync_rate: String,
    /// More text inside that `disk` section (both nodes), e.g. `fencing resource-only;`.
    pub disk: String,
    /// More text inside `resource loop { ... }` for each node, e.g.
    /// `net { cram-hmac-alg sha256; shared-secret "x"; }`.
    pub extra: [String; 2],
    /// More text after the resource for each node, e.g. an `urbd-options loop { ... }`
    /// section.
    pub after: [String; 2],
}

impl Default for PairOpts {
    fn default() -> Self {
        Self {
            internal: false,
            data_bytes: DATA_BYTES,
            protocol: ['C', 'C'],
            resync_rate: "1000M".into(),
            disk: String::new(),
            extra: [String::new(), String::new()],
            after: [String::new(), String::new()],
        }
    }
}

impl PairOpts {
    /// The same extra text for both nodes.
    pub fn both(mut self, extra: &str) -> Self {
        self.extra = [extra.to_string(), extra.to_string()];
        self
    }
}

/// Two nodes, their files and their daemons.
pub struct Pair {
    pub _dir: tempfile::TempDir,
    pub nodes: [Node; 2],
}

impl Pair {
    /// A configuration for `alpha` (minor 0) and `beta` (minor 1); disks created, metadata
    /// not yet.
    pub fn new() -> Self {
        Self::new_with(false)
    }

    /// [`Pair::new`], with `meta-disk internal` when `internal`.
    pub fn new_with(internal: bool) -> Self {
        Self::build(&PairOpts {
            internal,
            ..PairOpts::default()
        })
    }

    /// A pair as `opts` describes it; disks created, metadata not yet. When the two nodes'
    /// settings differ, each node gets its own configuration file (`alpha.conf`,
    /// `beta.conf`), else both share `urbd.conf`.
    pub fn build(opts: &PairOpts) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let meta = |name: &str| {
            if opts.internal {
                "meta-disk internal;".to_string()
            } else {
                format!("meta-disk \"{}/{name}.meta\" [0];", d.display())
            }
        };
        let (pa, pb) = super::free_port_pair();
        let text = |i: usize| {
            format!(
                "resource loop {{\n  protocol {};\n  disk {{ resync-rate {}; {} }}\n{}\
                 on alpha {{ device minor 0; disk \"{d}/alpha.img\"; {} address 127.0.0.1:{pa}; }}\n\
                 on beta {{ device minor 1; disk \"{d}/beta.img\"; {} address 127.0.0.1:{pb}; }}\n}}\n{}",
                opts.protocol[i],
                opts.resync_rate,
                opts.disk,
                opts.extra[i],
                meta("alpha"),
                meta("beta"),
                opts.after[i],
                d = d.display()
            )
        };
        let (ta, tb) = (text(0), text(1));
        let confs = if ta == tb {
            let conf = d.join("urbd.conf");
            fs::write(&conf, ta).expect("write conf");
            [conf.clone(), conf]
        } else {
            let (ca, cb) = (d.join("alpha.conf"), d.join("beta.conf"));
            fs::write(&ca, ta).expect("write conf");
            fs::write(&cb, tb).expect("write conf");
            [ca, cb]
        };
        let node = |name: &'static str, minor: u32| {
            let data = d.join(format!("{name}.img"));
            let meta = d.join(format!("{name}.meta"));
            sparse(&data, opts.data_bytes);
            sparse(&meta, META_SLOT_BYTES);
            Node {
                name,
                conf: confs[minor as usize].clone(),
                run_dir: d.join(format!("run-{name}")),
                data,
                meta,
                minor,
            }
        };
        let nodes = [node("alpha", 0), node("beta", 1)];
        Pair { _dir: dir, nodes }
    }

    /// [`Pair::build`] plus create-md on both nodes.
    pub fn with_metadata_opts(opts: &PairOpts) -> Self {
        Self::created(Self::build(opts))
    }

    /// [`Pair::new`] plus create-md on both nodes.
    pub fn with_metadata() -> Self {
        Self::created(Self::new())
    }

    /// Internal metadata (at the end of the data disk), created on both nodes.
    pub fn with_internal_metadata() -> Self {
        Self::created(Self::new_with(true))
    }

    fn created(pair: Self) -> Self {
        for n in &pair.nodes {
            n.adm(&["create-md", "--force", "loop"]).ok();
        }
        pair
    }

    pub fn alpha(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn beta(&self) -> &Node {
        &self.nodes[1]
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // URBD_TEST_KEEP=1 keeps a failed test's folder (configuration, disks, run dirs with
        // loop.log) for a post-mortem.
        if std::thread::panicking() && std::env::var_os("URBD_TEST_KEEP").is_some() {
            self._dir.disable_cleanup(true);
            eprintln!("URBD_TEST_KEEP: kept {}", self._dir.path().display());
        }
        for n in &self.nodes {
            let pid = n.pid();
            // Not `Node::adm`: a `down` that hangs must not panic here (a panic while the test
            // is already panicking aborts, and the daemons would outlive the test).
            let mut cmd = super::urbdadm();
            cmd.env("URBD_RUN_DIR", &n.run_dir)
                .env("URBD_STATE_DIR", n.state_dir())
                .arg("-c")
                .arg(&n.conf)
                .args(["--node", n.name, "down", "loop"]);
            if let Err(r) = super::run_within(&mut cmd, DROP_DOWN_TIMEOUT) {
                eprintln!(
                    "{}: `down` took longer than {DROP_DOWN_TIMEOUT:?}; killing the daemon\n{}",
                    n.name, r.stderr
                );
            }
            if let Some(pid) = pid {
                if pid_alive(pid) {
                    if let Some(p) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                    }
                }
            }
        }
    }
}

pub fn sparse(path: &Path, size: u64) {
    fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .expect("create sparse file");
}

/// The UUID fields of a get-gi line.
pub fn gi_fields(line: &str) -> Vec<String> {
    line.trim().split(':').map(str::to_owned).collect()
}
