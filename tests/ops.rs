//! Operations (issue 9 point 5) through the real binaries: `up all` / `down all` and `all`
//! for the other commands, the `startup` section, shell completions and man pages, and
//! `urbdadm events`.
//!
//! The multi-resource tests own a [`Cluster`]: two nodes (`alpha`, `beta`) of two resources
//! (`r0`, `r1`) on loopback, plus a resource of two other hosts that `all` must skip. Its
//! `Drop` runs `down all` on both nodes and kills any daemon still alive.

mod util;

use std::fs;
use std::path::PathBuf;

use util::Ran;
use util::pair::{DROP_DOWN_TIMEOUT, pid_alive, run_bounded, sparse, wait_gone};

const RESOURCES: [&str; 2] = ["r0", "r1"];
const DATA_BYTES: u64 = 16 << 20;
const META_BYTES: u64 = 128 << 20;

/// One node of a [`Cluster`].
struct Node {
    name: &'static str,
    conf: PathBuf,
    run_dir: PathBuf,
}

impl Node {
    fn adm(&self, args: &[&str]) -> Ran {
        let mut cmd = util::urbdadm();
        cmd.env("URBD_RUN_DIR", &self.run_dir)
            .env("URBD_STATE_DIR", self.run_dir.join("state"))
            .arg("-c")
            .arg(&self.conf)
            .args(["--node", self.name])
            .args(args);
        run_bounded(&mut cmd)
    }

    fn pid(&self, res: &str) -> Option<i32> {
        fs::read_to_string(self.run_dir.join(format!("{res}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

/// Two nodes, two resources each, metadata created.
struct Cluster {
    _dir: tempfile::TempDir,
    nodes: [Node; 2],
}

impl Cluster {
    /// `startup` is put in a `startup { ... }` section of every resource (empty: none).
    fn new(startup: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut text = String::new();
        for (minor, res) in RESOURCES.iter().enumerate() {
            let (pa, pb) = util::free_port_pair();
            for n in ["alpha", "beta"] {
                sparse(&d.join(format!("{res}-{n}.img")), DATA_BYTES);
                sparse(&d.join(format!("{res}-{n}.meta")), META_BYTES);
            }
            let startup = if startup.is_empty() {
                String::new()
            } else {
                format!("  startup {{ {startup} }}\n")
            };
            text.push_str(&format!(
                "resource {res} {{\n  disk {{ resync-rate 1000M; }}\n{startup}\
                 on alpha {{ device minor {minor}; disk \"{d}/{res}-alpha.img\"; \
                 meta-disk \"{d}/{res}-alpha.meta\" [0]; address 127.0.0.1:{pa}; }}\n\
                 on beta {{ device minor {minor}; disk \"{d}/{res}-beta.img\"; \
                 meta-disk \"{d}/{res}-beta.meta\" [0]; address 127.0.0.1:{pb}; }}\n}}\n",
                d = d.display()
            ));
        }
        // A resource of two other hosts: `all` on alpha or beta must leave it alone (its
        // disks do not even exist).
        text.push_str(
            "resource elsewhere {\n\
             on gamma { device minor 9; disk /nonexistent/g; meta-disk internal; address 127.0.0.1:1; }\n\
             on delta { device minor 9; disk /nonexistent/d; meta-disk internal; address 127.0.0.1:2; }\n}\n",
        );
        let conf = d.join("urbd.conf");
        fs::write(&conf, text).expect("write conf");
        let node = |name| Node {
            name,
            conf: conf.clone(),
            run_dir: d.join(format!("run-{name}")),
        };
        let cluster = Cluster {
            nodes: [node("alpha"), node("beta")],
            _dir: dir,
        };
        for n in &cluster.nodes {
            n.adm(&["create-md", "--force", "all"]).ok();
        }
        cluster
    }

    fn alpha(&self) -> &Node {
        &self.nodes[0]
    }

    fn beta(&self) -> &Node {
        &self.nodes[1]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            let pids: Vec<i32> = RESOURCES.iter().filter_map(|r| n.pid(r)).collect();
            let mut cmd = util::urbdadm();
            cmd.env("URBD_RUN_DIR", &n.run_dir)
                .arg("-c")
                .arg(&n.conf)
                .args(["--node", n.name, "down", "all"]);
            if let Err(r) = util::run_within(&mut cmd, DROP_DOWN_TIMEOUT) {
                eprintln!("{}: `down all` hung; killing\n{}", n.name, r.stderr);
            }
            for pid in pids {
                if pid_alive(pid) {
                    if let Some(p) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                    }
                }
            }
        }
    }
}

#[test]
fn up_all_and_down_all_take_the_resources_of_this_node() {
    let c = Cluster::new("");
    let (a, b) = (c.alpha(), c.beta());

    // Dry run: one daemon per resource of this node, none for `elsewhere`.
    let dry = a.adm(&["-d", "up", "all"]).ok().stdout;
    assert_eq!(dry.lines().count(), 2, "{dry}");
    assert!(
        dry.lines()
            .next()
            .is_some_and(|l| l.ends_with("--node alpha r0")),
        "{dry}"
    );
    assert!(dry.contains("--node alpha r1"), "{dry}");
    assert!(!dry.contains("elsewhere"), "{dry}");

    a.adm(&["up", "all"]).ok();
    b.adm(&["up", "all"]).ok();
    for n in [a, b] {
        for r in RESOURCES {
            assert!(
                n.pid(r).is_some_and(pid_alive),
                "{} {r} not running",
                n.name
            );
        }
    }
    a.adm(&["wait-connect", "all"]).ok();
    assert_eq!(
        a.adm(&["cstate", "all"]).ok().stdout,
        "Connected\nConnected\n"
    );
    assert_eq!(
        b.adm(&["role", "all"]).ok().stdout,
        "Secondary/Secondary\nSecondary/Secondary\n"
    );
    // status without names: both resources, not `elsewhere`.
    let status = a.adm(&["status"]).ok().stdout;
    assert!(status.contains("r0 role:Secondary"), "{status}");
    assert!(status.contains("r1 role:Secondary"), "{status}");

    // `primary --force all`, then `secondary all`.
    a.adm(&["primary", "--force", "all"]).ok();
    assert_eq!(
        a.adm(&["role", "all"]).ok().stdout,
        "Primary/Secondary\nPrimary/Secondary\n"
    );
    a.adm(&["secondary", "all"]).ok();

    // `up all` again: every resource is already up; each is reported, the daemons are
    // unharmed, and the exit code is the first failure's.
    let pids: Vec<i32> = RESOURCES.iter().filter_map(|r| a.pid(r)).collect();
    let again = a.adm(&["up", "all"]).code(10);
    assert!(
        again.stderr.contains("up r0: resource r0 is already up"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("up r1: resource r1 is already up"),
        "{}",
        again.stderr
    );
    assert!(pids.iter().all(|&p| pid_alive(p)));

    // `down all` stops both daemons; a second one has nothing to do.
    a.adm(&["down", "all"]).ok();
    for p in pids {
        wait_gone(p);
    }
    let out = a.adm(&["down", "all"]).ok();
    assert!(
        out.stderr.contains("resource r0 is not up; nothing to do"),
        "{}",
        out.stderr
    );
    assert_eq!(
        b.adm(&["cstate", "all"]).ok().stdout,
        "WFConnection\nWFConnection\n"
    );
}

#[test]
fn all_with_a_resource_that_cannot_start_starts_the_others() {
    let c = Cluster::new("");
    let a = c.alpha();
    // r0's metadata is gone: its `up` fails, r1's still starts.
    let r0_meta = c._dir.path().join("r0-alpha.meta");
    sparse(&r0_meta, 0);
    sparse(&r0_meta, META_BYTES);
    let out = a.adm(&["up", "all"]).code(10);
    assert!(out.stderr.contains("up r0: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("some resources failed"),
        "{}",
        out.stderr
    );
    assert!(a.pid("r0").is_none());
    assert!(a.pid("r1").is_some_and(pid_alive));
    // Named resources stop at the first failure, as drbdadm does.
    a.adm(&["down", "r1"]).ok();
    let out = a.adm(&["up", "r0", "r1"]).code(10);
    assert!(
        !out.stderr.contains("some resources failed"),
        "{}",
        out.stderr
    );
    assert!(a.pid("r1").is_none());
}

/// The repository's `contrib/` folder.
fn contrib() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib")
}

/// Every command an operator sees, from `urbdadm --help`.
fn visible_commands() -> Vec<String> {
    let help = util::adm(&["--help"]).ok().stdout;
    let cmds: Vec<String> = help
        .split("Commands:")
        .nth(1)
        .and_then(|s| s.split("Options:").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    assert!(cmds.len() > 20, "{help}");
    cmds
}

#[test]
fn committed_completions_and_man_pages_are_current_and_complete() {
    let stale = "stale: run scripts/generate-contrib.sh and commit contrib/";
    for (shell, file) in [
        ("bash", "urbdadm.bash"),
        ("zsh", "_urbdadm"),
        ("fish", "urbdadm.fish"),
    ] {
        let generated = util::adm(&["generate", "completions", shell]).ok().stdout;
        let committed = fs::read_to_string(contrib().join("completions").join(file))
            .unwrap_or_else(|e| panic!("contrib/completions/{file}: {e}"));
        assert!(
            generated == committed,
            "contrib/completions/{file} is {stale}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    util::adm(&["generate", "man", &dir.path().display().to_string()]).ok();
    let list = |d: &std::path::Path| {
        let mut v: Vec<String> = fs::read_dir(d)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let generated = list(dir.path());
    assert_eq!(
        generated,
        list(&contrib().join("man")),
        "contrib/man is {stale}"
    );
    for name in &generated {
        let a = fs::read(dir.path().join(name)).expect("generated page");
        let b = fs::read(contrib().join("man").join(name)).expect("committed page");
        assert!(a == b, "contrib/man/{name} is {stale}");
    }

    let bash = fs::read_to_string(contrib().join("completions/urbdadm.bash")).expect("bash");
    let top = fs::read_to_string(contrib().join("man/urbdadm.8")).expect("urbdadm.8");
    for cmd in visible_commands() {
        assert!(
            bash.contains(&format!("\n            urbdadm,{cmd})\n")),
            "`{cmd}` missing from the bash completion"
        );
        assert!(
            generated.contains(&format!("urbdadm-{cmd}.8")),
            "no man page for `{cmd}`"
        );
        // roff escapes the hyphens of command names.
        assert!(
            top.contains(&cmd.replace('-', "\\-")),
            "`{cmd}` missing from urbdadm.8"
        );
    }
    assert!(generated.contains(&"urbd.8".to_owned()));
}

#[test]
fn the_systemd_unit_verifies_with_the_real_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_urbdadm"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    util::adm(&[
        "generate",
        "systemd",
        &dir.path().display().to_string(),
        "--bin-dir",
        &bin_dir.display().to_string(),
    ])
    .ok();
    let unit = fs::read_to_string(dir.path().join("urbd@.service")).expect("unit");
    assert!(unit.contains(&format!(
        "\nExecStart={}/urbd --foreground %I\n",
        bin_dir.display()
    )));
    assert!(unit.contains(&format!(
        "\nExecStop={}/urbdadm down %I\n",
        bin_dir.display()
    )));
    assert!(unit.contains("\nType=notify\n"), "{unit}");
    if !util::have_tool("systemd-analyze") {
        return;
    }
    // A template verifies as one of its instances.
    let instance = dir.path().join("urbd@r0.service");
    fs::write(&instance, &unit).expect("write instance");
    let mut cmd = std::process::Command::new("systemd-analyze");
    cmd.args(["verify", "--man=no"]).arg(&instance);
    let out = run_bounded(&mut cmd);
    // Warnings (an unknown Type=, a misspelt key) exit 0 too: there must be none.
    assert!(
        out.code == 0 && out.stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.code,
        out.stderr
    );
}

/// Kills the child on drop (a test that fails must not leave a daemon behind).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_foreground_daemon_tells_systemd_when_it_is_ready_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    let c = Cluster::new("");
    let a = c.alpha();
    let notify_path = c._dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    fs::create_dir_all(&a.run_dir).expect("run dir");
    let log = fs::File::create(c._dir.path().join("foreground.log")).expect("log");
    // As the unit runs it: `urbd --foreground RES`, with NOTIFY_SOCKET.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_urbd"))
        .arg("-c")
        .arg(&a.conf)
        .args(["--node", "alpha", "--foreground", "r0"])
        .env("URBD_RUN_DIR", &a.run_dir)
        .env("URBD_STATE_DIR", a.run_dir.join("state"))
        .env("URBD_KERNEL_NBD", "0")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start urbd");
    let mut child = ChildGuard(child);
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("READY=1\nSTATUS=serving r0 on "), "{msg}");
    // Ready means it answers.
    assert_eq!(a.adm(&["cstate", "r0"]).ok().stdout, "WFConnection\n");
    assert_eq!(a.pid("r0"), i32::try_from(child.0.id()).ok());

    // ExecStop: `urbdadm down r0`; the daemon says it is stopping and exits 0.
    a.adm(&["down", "r0"]).ok();
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("wait") {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "urbd does not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// Polls `urbdadm ARGS` on `n` until it prints `want`, for at most `limit`.
#[track_caller]
fn wait_for_output(n: &Node, args: &[&str], want: &str, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    loop {
        let out = n.adm(args);
        if out.code == 0 && out.stdout == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{} {args:?}: still {:?} (exit {}) after {limit:?}, want {want:?}\n{}",
            n.name,
            out.stdout,
            out.code,
            out.stderr
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn kill_9(pid: i32) {
    let p = rustix::process::Pid::from_raw(pid).expect("pid");
    rustix::process::kill_process(p, rustix::process::Signal::KILL).expect("kill -9");
    wait_gone(pid);
}

/// `startup { wfc-timeout; degr-wfc-timeout; }` (DRBD 8.4's drbdsetup `wait-connect` and
/// its `choose_timeout()`): a node whose peer was there waits wfc-timeout; a Primary that
/// had lost its peer and crashed waits only degr-wfc-timeout when it comes back.
#[test]
fn wait_connect_honours_wfc_timeout_and_degr_wfc_timeout() {
    use std::time::{Duration, Instant};
    let c = Cluster::new("wfc-timeout 4; degr-wfc-timeout 1;");
    let (a, b) = (c.alpha(), c.beta());
    a.adm(&["up", "r0"]).ok();

    // Not degraded: the full wfc-timeout, then exit 10 naming it.
    let start = Instant::now();
    let out = a.adm(&["wait-connect", "r0"]).code(10);
    let waited = start.elapsed();
    assert!(
        out.stderr
            .contains("r0: not connected after wfc-timeout (4 s)"),
        "{}",
        out.stderr
    );
    assert!(waited >= Duration::from_secs(4), "{waited:?}");

    // A Primary without its peer crashes: it comes back degraded.
    a.adm(&["primary", "--force", "r0"]).ok();
    kill_9(a.pid("r0").expect("pid"));
    a.adm(&["up", "r0"]).ok();
    let json: serde_json::Value =
        serde_json::from_str(&a.adm(&["status", "--json", "r0"]).ok().stdout).expect("json");
    assert_eq!(json[0]["volumes"][0]["wfc_degraded"], true, "{json}");
    let start = Instant::now();
    let out = a.adm(&["wait-connect", "r0"]).code(10);
    let waited = start.elapsed();
    assert!(
        out.stderr
            .contains("r0: not connected after degr-wfc-timeout (1 s)"),
        "{}",
        out.stderr
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // With the peer: wait-connect returns once connected, and the degraded mark is gone.
    b.adm(&["up", "r0"]).ok();
    a.adm(&["wait-connect", "r0"]).ok();
    let json: serde_json::Value =
        serde_json::from_str(&a.adm(&["status", "--json", "r0"]).ok().stdout).expect("json");
    assert_eq!(json[0]["volumes"][0]["wfc_degraded"], false, "{json}");

    // StandAlone ends the wait at once (drbdsetup's w_connected_state).
    a.adm(&["disconnect", "r0"]).ok();
    wait_for_output(
        a,
        &["cstate", "r0"],
        "StandAlone\n",
        Duration::from_secs(10),
    );
    let out = a.adm(&["wait-connect", "r0"]).code(10);
    assert!(out.stderr.contains("r0: StandAlone"), "{}", out.stderr);
    // `connect` then `wait-connect` at once (the seed's procedure): the StandAlone that the
    // connect has not yet left does not end the wait.
    a.adm(&["connect", "r0"]).ok();
    a.adm(&["wait-connect", "r0"]).ok();
}

/// `become-primary-on alpha`: alpha's daemon promotes itself once connected (drbdadm's
/// `sh-b-pri` after `wait-con-int`), waits for ever for the peer with wfc-timeout 0, and
/// promotes alone once a set wfc-timeout has passed. beta never promotes.
#[test]
fn become_primary_on_promotes_this_node_after_the_wait() {
    use std::time::Duration;
    let c = Cluster::new("become-primary-on alpha;");
    let (a, b) = (c.alpha(), c.beta());
    // UpToDate data on both first (the promotion does not force).
    a.adm(&["up", "r0"]).ok();
    b.adm(&["up", "r0"]).ok();
    a.adm(&["wait-connect", "r0"]).ok();
    a.adm(&["primary", "--force", "r0"]).ok();
    wait_for_output(
        a,
        &["dstate", "r0"],
        "UpToDate/UpToDate\n",
        Duration::from_secs(60),
    );
    // Let the daemon's own become-primary-on step (which found Inconsistent data and was
    // refused) finish its tries before the next start.
    a.adm(&["secondary", "r0"]).ok();
    a.adm(&["down", "r0"]).ok();
    b.adm(&["down", "r0"]).ok();

    // alpha alone, wfc-timeout 0: waits for ever, stays Secondary.
    a.adm(&["up", "r0"]).ok();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.adm(&["role", "r0"]).ok().stdout, "Secondary/Unknown\n");
    // The peer comes: alpha becomes Primary, beta stays Secondary.
    b.adm(&["up", "r0"]).ok();
    wait_for_output(
        a,
        &["role", "r0"],
        "Primary/Secondary\n",
        Duration::from_secs(30),
    );
    assert_eq!(b.adm(&["role", "r0"]).ok().stdout, "Secondary/Primary\n");
    assert!(
        a.adm(&["status", "r0"])
            .ok()
            .stdout
            .contains("role:Primary")
    );
    a.adm(&["down", "r0"]).ok();
    b.adm(&["down", "r0"]).ok();

    // wfc-timeout 2: alpha alone promotes after it.
    let conf = fs::read_to_string(&a.conf).expect("conf");
    fs::write(
        &a.conf,
        conf.replace(
            "become-primary-on alpha;",
            "become-primary-on alpha; wfc-timeout 2;",
        ),
    )
    .expect("conf");
    a.adm(&["up", "r0"]).ok();
    assert_eq!(a.adm(&["role", "r0"]).ok().stdout, "Secondary/Unknown\n");
    wait_for_output(
        a,
        &["role", "r0"],
        "Primary/Unknown\n",
        Duration::from_secs(20),
    );
    // beta, not named, comes up and stays Secondary.
    b.adm(&["up", "r0"]).ok();
    b.adm(&["wait-connect", "r0"]).ok();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(b.adm(&["role", "r0"]).ok().stdout, "Secondary/Primary\n");
}

/// A running `urbdadm events` and the lines it printed so far.
struct EventStream {
    child: ChildGuard,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl EventStream {
    fn start(n: &Node, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut cmd = util::urbdadm();
        cmd.env("URBD_RUN_DIR", &n.run_dir)
            .arg("-c")
            .arg(&n.conf)
            .args(["--node", n.name, "events"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("start urbdadm events");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child: ChildGuard(child),
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one equals `want` (within 30 s); returns the lines read before it.
    #[track_caller]
    fn expect(&mut self, want: &str) -> Vec<String> {
        self.expect_with(want, |l| l == want)
    }

    /// Reads lines until `matches` one (within 30 s); returns the lines read before it.
    #[track_caller]
    fn expect_with(&mut self, want: &str, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return before;
                    }
                    before.push(line);
                }
                Err(_) => panic!(
                    "no line {want:?} within 30 s; the stream so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// `urbdadm events`: events2's `exists` lines, then `create`, `change` and `destroy`
/// through up, connect, promote, disconnect, connect and down, with real daemons.
#[test]
fn events_streams_the_state_changes_of_real_daemons() {
    let c = Cluster::new("");
    let (a, b) = (c.alpha(), c.beta());
    let mut ev = EventStream::start(a, &["r0"]);
    // Nothing up yet: the state is empty.
    assert!(ev.expect("exists -").is_empty());

    a.adm(&["up", "r0"]).ok();
    ev.expect("create resource name:r0 role:Secondary suspended:no");
    ev.expect("create device name:r0 volume:0 minor:0 disk:Inconsistent client:no open:no");
    // Connecting, or StandAlone for a moment when the status was published before the
    // replication session started connecting (a change to Connecting follows then).
    ev.expect_with("create connection ... connection:Connecting", |l| {
        [
            "create connection name:r0 peer-node-id:1 conn-name:beta connection:Connecting role:Unknown",
            "create connection name:r0 peer-node-id:1 conn-name:beta connection:StandAlone role:Unknown",
        ]
        .contains(&l)
    });
    ev.expect(
        "create peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:Off \
         peer-disk:DUnknown peer-client:no resync-suspended:no",
    );

    b.adm(&["up", "r0"]).ok();
    ev.expect("change connection name:r0 peer-node-id:1 conn-name:beta connection:Connected role:Secondary");

    a.adm(&["primary", "--force", "r0"]).ok();
    ev.expect("change resource name:r0 role:Primary");
    ev.expect("change device name:r0 volume:0 minor:0 disk:UpToDate");
    // The sync may be too quick to sample (then only the peer's disk changes, the
    // replication having been Established before); its end is not.
    let before = ev.expect_with("... peer-disk:UpToDate", |l| {
        [
            "change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 \
             replication:Established peer-disk:UpToDate",
            "change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 \
             peer-disk:UpToDate",
        ]
        .contains(&l)
    });
    assert!(
        before.iter().all(|l| !l.contains("replication:SyncTarget")),
        "{before:#?}"
    );

    a.adm(&["disconnect", "r0"]).ok();
    // (Disconnecting may be sampled on the way, with the peer's role already Unknown.)
    ev.expect_with("connection:StandAlone", |l| {
        l.starts_with(
            "change connection name:r0 peer-node-id:1 conn-name:beta connection:StandAlone",
        )
    });
    a.adm(&["connect", "r0"]).ok();
    ev.expect("change connection name:r0 peer-node-id:1 conn-name:beta connection:Connected role:Secondary");

    a.adm(&["secondary", "r0"]).ok();
    ev.expect("change resource name:r0 role:Secondary");
    a.adm(&["down", "r0"]).ok();
    ev.expect("destroy peer-device name:r0 peer-node-id:1 conn-name:beta volume:0");
    ev.expect("destroy connection name:r0 peer-node-id:1 conn-name:beta");
    ev.expect("destroy device name:r0 volume:0 minor:0");
    ev.expect("destroy resource name:r0");
    // Only r0 was asked for: r1 never shows, even when it comes up.
    a.adm(&["up", "r1"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(500));
    while let Ok(line) = ev.lines.try_recv() {
        assert!(!line.contains("name:r1"), "{line}");
    }
    drop(ev.child);

    // beta sees alpha from the other side; --now prints the state and exits.
    let out = b.adm(&["events", "--now"]).ok().stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"exists resource name:r0 role:Secondary suspended:no"),
        "{out}"
    );
    assert!(
        out.contains("exists connection name:r0 peer-node-id:0 conn-name:alpha connection:Connecting role:Unknown\n"),
        "{out}"
    );
    // r1 is up on alpha only.
    assert!(!out.contains("name:r1"), "{out}");
    assert_eq!(lines.last(), Some(&"exists -"), "{out}");
}
