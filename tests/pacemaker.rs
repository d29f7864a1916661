//! A real two-node Pacemaker + corosync cluster on this machine moves the urbd Primary and
//! its mounted filesystem (issue 9 point 3; the seed's sections 7.5 and 7.7).
//!
//! Each node (`nodea`, `nodeb`) is PID 1 of its own mount, UTS, network and PID namespaces
//! (tests/pacemaker/node.sh): its own host name (urbd and Pacemaker find their node by it,
//! as DRBD does), private /run, /dev/shm, /var/lib/pacemaker, /var/lib/corosync,
//! /etc/corosync, /etc/hosts and OCF agent tree. corosync 3 (knet, two_node) runs over a veth
//! pair (10.99.0.1 and 10.99.0.2), Pacemaker 2.1 on top, configured with crmsh as the seed
//! does: stonith-enabled=false, no-quorum-policy=ignore, resource-stickiness=100, the agent
//! ocf:urbd:urbd as a promotable clone (`ms`), and an ocf:heartbeat:Filesystem (ext4)
//! colocated with the Primary and ordered after the promotion.
//!
//! This kernel has no nbd module, so /dev/nbd0 has a stand-in: ocf:urbd:nbdfuse-loop
//! (contrib/ocf/nbdfuse-loop) attaches a loop device to nbdfuse's file of the Primary's NBD
//! export; it is grouped before the Filesystem, which mounts it.
//!
//! The flow: create-md and the initial sync by hand (the seed's section 7.3), mkfs on the
//! Primary, hand over to the cluster; files written on nodea; `crm node standby nodea`
//! moves the Primary and the mount to nodeb with all files intact; `crm node online nodea`
//! brings nodea back as a resynced Secondary and the resources stay on nodeb (stickiness)
//! until an explicit `crm resource move`.
//!
//! Needs root and the cluster stack (.ci/run installs it); skips with a message otherwise,
//! fails under CI=true. Every wait is bounded; [`Cluster`]'s `Drop` kills both namespaces'
//! PID 1 (and so every process in them), detaches the loop devices and removes the veth,
//! also when the test fails. URBD_TEST_KEEP=1 keeps a failed run's folder (logs of
//! corosync, Pacemaker, urbd) for a post-mortem.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::Ran;

const RES: &str = "r0";
const NODES: [&str; 2] = ["nodea", "nodeb"];
const ADDRS: [&str; 2] = ["10.99.0.1", "10.99.0.2"];
const DATA_BYTES: u64 = 64 << 20;
const META_BYTES: u64 = 128 << 20;
/// The stand-in for /dev/nbd0 (a link to the loop device), in each node's private /run.
const DEVICE: &str = "/run/urbd-nbd0";
/// Any one command.
const COMMAND_LIMIT: Duration = Duration::from_secs(90);
/// The cluster forming (corosync membership, Pacemaker's DC election: dc-deadtime 20 s).
const FORM_LIMIT: Duration = Duration::from_secs(90);
/// A resource move.
const MOVE_LIMIT: Duration = Duration::from_secs(90);

const TOOLS: [&str; 18] = [
    "corosync",
    "corosync-cfgtool",
    "pacemakerd",
    "crm",
    "crm_mon",
    "crm_attribute",
    "crm_resource",
    "nbdfuse",
    "fusermount3",
    "losetup",
    "mkfs.ext4",
    "unshare",
    "nsenter",
    "modprobe",
    "ip",
    "ping",
    "findmnt",
    "cmp",
];

/// One node: the `unshare` process and the PID (in this namespace) of its PID 1.
struct NodeNs {
    name: &'static str,
    dir: PathBuf,
    unshare: Option<Child>,
    pid: i32,
}

impl NodeNs {
    /// `nsenter` into all of the node's namespaces.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "-u", "-n", "-p", "--"])
            .arg(program)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("URBD_KERNEL_NBD", "0")
            .env_remove("URBD_NODE")
            .env_remove("URBD_RUN_DIR")
            .env_remove("URBD_STATE_DIR");
        c
    }

    /// Runs `program args...` in the node; bounded; does not check the exit code.
    fn run(&self, program: &str, args: &[&str]) -> Ran {
        let mut c = self.cmd(program);
        c.args(args);
        util::run_within(&mut c, COMMAND_LIMIT).unwrap_or_else(|r| {
            panic!(
                "{}: {program} {args:?} took longer than {COMMAND_LIMIT:?}\n{}{}",
                self.name, r.stdout, r.stderr
            )
        })
    }

    #[track_caller]
    fn ok(&self, program: &str, args: &[&str]) -> String {
        let r = self.run(program, args);
        assert_eq!(
            r.code, 0,
            "{}: {program} {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            self.name, r.stdout, r.stderr
        );
        r.stdout
    }

    fn adm(&self, args: &[&str]) -> String {
        let conf = self.dir.parent().expect("node dir").join("urbd.conf");
        let mut all = vec!["-c", conf.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        self.ok(env!("CARGO_BIN_EXE_urbdadm"), &all)
    }

    /// The first line of `urbdadm proc`'s device entry (`cs:... ro:... ds:...`), or "".
    fn state(&self) -> String {
        let conf = self.dir.parent().expect("node dir").join("urbd.conf");
        let r = self.run(
            env!("CARGO_BIN_EXE_urbdadm"),
            &["-c", conf.to_str().expect("utf-8 path"), "proc"],
        );
        r.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("0: "))
            .unwrap_or_default()
            .to_string()
    }

    /// What is mounted at `dir` in this node (`findmnt`'s source), or None.
    fn mounted(&self, dir: &Path) -> Option<String> {
        let r = self.run(
            "findmnt",
            &["-n", "-o", "SOURCE", dir.to_str().expect("utf-8 path")],
        );
        (r.code == 0).then(|| r.stdout.trim().to_string())
    }

    /// Loop devices whose backing file is under `prefix`, as this node sees them.
    fn loops_under(&self, prefix: &Path) -> Vec<String> {
        let script = format!(
            "for f in /sys/block/loop*/loop/backing_file; do \
             case \"$(cat \"$f\" 2>/dev/null)\" in '{}'*) d=${{f%/loop/backing_file}}; \
             echo /dev/${{d##*/}};; esac; done",
            prefix.display()
        );
        let mut c = self.cmd("sh");
        c.args(["-c", &script]);
        util::run_within(&mut c, Duration::from_secs(10))
            .map(|r| r.stdout.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

/// The two nodes, their folder and the veth pair; all torn down on drop.
struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<NodeNs>,
    veth: [String; 2],
}

impl Cluster {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn a(&self) -> &NodeNs {
        &self.nodes[0]
    }

    fn b(&self) -> &NodeNs {
        &self.nodes[1]
    }

    fn mnt(&self) -> PathBuf {
        self.path().join("mnt")
    }

    fn fuse_dir(&self) -> PathBuf {
        self.path().join("fuse")
    }

    /// Folder, configurations, agents; both nodes started and linked; corosync and
    /// Pacemaker started in both.
    fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("urbd-pcmk-")
            .tempdir()
            .expect("tempdir");
        // Pacemaker's daemons (user hacluster) write their logs under it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        let tag = std::process::id() % 100_000;
        let mut cluster = Cluster {
            veth: [format!("upk{tag}a"), format!("upk{tag}b")],
            dir,
            nodes: Vec::new(),
        };
        write_files(d);
        fs::create_dir_all(d.join("mnt")).expect("mnt");
        for name in NODES {
            let ndir = d.join(name);
            let child = Command::new("unshare")
                .args([
                    "--mount",
                    "--uts",
                    "--net",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--kill-child",
                    "--propagation",
                    "private",
                    "bash",
                ])
                .arg(d.join("node.sh"))
                .arg(name)
                .arg(&ndir)
                .arg(d.join("ocf"))
                .stdin(Stdio::null())
                .stdout(fs::File::create(ndir.join("init.log")).expect("init.log"))
                .stderr(fs::File::create(ndir.join("init.err")).expect("init.err"))
                .spawn()
                .expect("run unshare");
            let upid = child.id() as i32;
            cluster.nodes.push(NodeNs {
                name,
                dir: ndir.clone(),
                unshare: Some(child),
                pid: 0,
            });
            let pid = wait_for(&format!("{name}'s PID 1"), Duration::from_secs(20), || {
                child_of(upid)
            });
            cluster.nodes.last_mut().expect("node").pid = pid;
            wait_for(&format!("{name}'s mounts"), Duration::from_secs(20), || {
                ndir.join("ready").exists().then_some(())
            });
        }
        // The link: a veth pair, one end in each node's network namespace.
        let [va, vb] = cluster.veth.clone();
        host_ok(
            "ip",
            &["link", "add", &va, "type", "veth", "peer", "name", &vb],
        );
        for (i, v) in [&va, &vb].into_iter().enumerate() {
            let pid = cluster.nodes[i].pid.to_string();
            host_ok("ip", &["link", "set", v, "netns", &pid]);
            let n = &cluster.nodes[i];
            let cidr = format!("{}/24", ADDRS[i]);
            n.ok("ip", &["addr", "add", &cidr, "dev", v]);
            n.ok("ip", &["link", "set", v, "up"]);
            n.ok("ip", &["link", "set", "lo", "up"]);
        }
        cluster.a().ok("ping", &["-c", "1", "-W", "5", ADDRS[1]]);
        for n in &cluster.nodes {
            assert_eq!(n.ok("hostname", &[]).trim(), n.name);
            fs::write(n.dir.join("go"), "").expect("go");
        }
        cluster
    }

    /// `crm_mon -1 -r` on `n`.
    fn status(&self, n: &NodeNs) -> String {
        n.run("crm_mon", &["-1", "-r"]).stdout
    }

    /// Waits until `crm_mon` on `n` shows every line of `want` (each a substring of one
    /// line), and returns that status.
    #[track_caller]
    fn wait_status(&self, n: &NodeNs, what: &str, limit: Duration, want: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let s = self.status(n);
            if want.iter().all(|w| s.lines().any(|l| l.contains(w))) {
                eprintln!("{what}: after {:?}", start.elapsed());
                return s;
            }
            if start.elapsed() > limit {
                panic!(
                    "{what}: not within {limit:?}; crm_mon on {}:\n{s}\n{}",
                    n.name,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The tails of each node's logs, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            for f in ["log/pacemaker.log", "log/corosync.log", "init.err"] {
                let text = fs::read_to_string(n.dir.join(f)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                out += &format!("--- {} {f} (last 40 lines)\n{}\n", n.name, tail.join("\n"));
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("URBD_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("URBD_TEST_KEEP: kept {}", self.dir.path().display());
        }
        // Loop devices are not namespaced: find ours while the nodes' mounts still name
        // their files, unmount the filesystem, then end the namespaces (SIGKILL to PID 1
        // kills every process in it: corosync, Pacemaker, urbd, nbdfuse) and detach.
        let fuse = self.fuse_dir();
        let mnt = self.mnt();
        let mut loops = Vec::new();
        for n in &self.nodes {
            if n.pid <= 0 {
                continue;
            }
            let mut c = n.cmd("umount");
            c.arg("-l").arg(&mnt);
            let _ = util::run_within(&mut c, Duration::from_secs(10));
            loops.extend(n.loops_under(&fuse));
        }
        for n in &mut self.nodes {
            if n.pid > 0 {
                if let Some(p) = rustix::process::Pid::from_raw(n.pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            if let Some(mut c) = n.unshare.take() {
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(20) {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for dev in loops {
            let _ = util::run_within(
                Command::new("losetup").arg("-d").arg(&dev),
                Duration::from_secs(20),
            );
        }
        // The veth pair went with the network namespaces; it is still here only when
        // setting it up failed half way.
        for v in &self.veth {
            let _ = util::run_within(
                Command::new("ip")
                    .args(["link", "del", v])
                    .stderr(Stdio::null()),
                Duration::from_secs(10),
            );
        }
    }
}

/// The test's files: node init script, urbd configuration and disks, corosync.conf,
/// /etc/hosts, the OCF agents, crmsh configuration.
fn write_files(d: &Path) {
    fs::write(d.join("node.sh"), include_str!("pacemaker/node.sh")).expect("node.sh");
    let on = |i: usize| {
        format!(
            "  on {n} {{ device minor 0; disk \"{d}/{n}.img\"; meta-disk \"{d}/{n}.meta\" [0]; \
             address {a}:7789; }}\n",
            n = NODES[i],
            a = ADDRS[i],
            d = d.display()
        )
    };
    fs::write(
        d.join("urbd.conf"),
        format!(
            "resource {RES} {{\n  protocol C;\n  disk {{ resync-rate 1000M; }}\n{}{}}}\n",
            on(0),
            on(1)
        ),
    )
    .expect("urbd.conf");
    let mut hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut nodelist = String::new();
    for (i, name) in NODES.iter().enumerate() {
        let (n, a) = (name, ADDRS[i]);
        hosts += &format!("{a} {n}\n");
        nodelist += &format!(
            "  node {{\n    ring0_addr: {a}\n    name: {n}\n    nodeid: {}\n  }}\n",
            i + 1
        );
        let ndir = d.join(n);
        fs::create_dir_all(ndir.join("corosync")).expect("node dir");
        for (f, size) in [("img", DATA_BYTES), ("meta", META_BYTES)] {
            fs::File::create(d.join(format!("{n}.{f}")))
                .and_then(|file| file.set_len(size))
                .expect("disk");
        }
    }
    fs::write(d.join("hosts"), hosts).expect("hosts");
    for n in NODES {
        let ndir = d.join(n);
        fs::create_dir_all(ndir.join("log")).expect("log dir");
        fs::copy(d.join("hosts"), ndir.join("hosts")).expect("hosts");
        fs::write(
            ndir.join("corosync/corosync.conf"),
            format!(
                "totem {{\n  version: 2\n  cluster_name: urbdtest\n  transport: knet\n  \
                 crypto_cipher: none\n  crypto_hash: none\n  token: 3000\n}}\n\
                 nodelist {{\n{nodelist}}}\n\
                 quorum {{\n  provider: corosync_votequorum\n  two_node: 1\n}}\n\
                 logging {{\n  to_logfile: yes\n  logfile: {}\n  to_syslog: no\n  \
                 to_stderr: no\n  timestamp: on\n}}\n",
                ndir.join("log/corosync.log").display()
            ),
        )
        .expect("corosync.conf");
    }
    // The agents as `urbdadm install-ocf` installs them: ocf:urbd:urbd and the stand-in for
    // /dev/nbd0, ocf:urbd:nbdfuse-loop. node.sh binds the system's providers next to them.
    let ocf = d.join("ocf");
    let out = util::urbdadm()
        .args(["install-ocf", "--dir"])
        .arg(ocf.join("urbd"))
        .output()
        .expect("run urbdadm install-ocf");
    assert!(out.status.success(), "install-ocf: {out:?}");
    let standin = ocf.join("urbd/nbdfuse-loop");
    assert_eq!(
        fs::read(&standin).expect("nbdfuse-loop installed"),
        fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ocf/nbdfuse-loop"))
            .expect("contrib/ocf/nbdfuse-loop"),
    );
    assert_eq!(
        fs::metadata(&standin).expect("stat").permissions().mode() & 0o777,
        0o755
    );
    // The seed's section 7.5, with urbd's agent in place of ocf:linbit:drbd and the
    // stand-in grouped before the Filesystem.
    fs::write(
        d.join("cluster.crm"),
        format!(
            "property stonith-enabled=false no-quorum-policy=ignore\n\
             rsc_defaults resource-stickiness=100\n\
             primitive urbd ocf:urbd:urbd \\\n  params drbd_resource={RES} drbdconf={conf} \
             urbdadm={adm} state_dir=/run/urbd-state \\\n  \
             op monitor role=Master interval=5s timeout=20s \\\n  \
             op monitor role=Slave interval=6s timeout=20s \\\n  \
             op start interval=0 timeout=240s op stop interval=0 timeout=100s \\\n  \
             op promote interval=0 timeout=90s op demote interval=0 timeout=90s\n\
             ms urbd_ms urbd meta master-max=1 master-node-max=1 clone-max=2 \
             clone-node-max=1 notify=true\n\
             primitive nbd0 ocf:urbd:nbdfuse-loop \\\n  params socket=/run/urbd/{RES}.nbd \
             export={RES} device={DEVICE} fuse_dir={fuse} \\\n  \
             op monitor interval=10s timeout=20s \\\n  \
             op start interval=0 timeout=60s op stop interval=0 timeout=60s\n\
             primitive zcs_fs ocf:heartbeat:Filesystem \\\n  params device={DEVICE} \
             directory={mnt} fstype=ext4 \\\n  \
             op monitor interval=10s timeout=40s \\\n  \
             op start interval=0 timeout=60s op stop interval=0 timeout=60s\n\
             group zcsgroup nbd0 zcs_fs\n\
             colocation zcsgroup-with-urbd_ms-Master inf: zcsgroup urbd_ms:Master\n\
             order zcsgroup-after-urbd_ms-promote Mandatory: urbd_ms:promote zcsgroup:start\n",
            conf = d.join("urbd.conf").display(),
            adm = env!("CARGO_BIN_EXE_urbdadm"),
            fuse = d.join("fuse").display(),
            mnt = d.join("mnt").display(),
        ),
    )
    .expect("cluster.crm");
}

/// Runs a command in this (the host's) namespaces; bounded; must succeed.
#[track_caller]
fn host_ok(program: &str, args: &[&str]) {
    let r = util::run_within(Command::new(program).args(args), COMMAND_LIMIT)
        .unwrap_or_else(|_| panic!("{program} {args:?} took longer than {COMMAND_LIMIT:?}"));
    assert_eq!(r.code, 0, "{program} {args:?}: {}{}", r.stdout, r.stderr);
}

/// The first child process of `pid` (from /proc), if it has one yet.
fn child_of(pid: i32) -> Option<i32> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[track_caller]
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deterministic file contents.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `files` (name, seed) into the mounted filesystem on `n` and syncs.
fn write_files_on(c: &Cluster, n: &NodeNs, files: &[(&str, u64)]) {
    for (name, seed) in files {
        let src = c.path().join(format!("src-{name}"));
        fs::write(&src, content(*seed, 3 << 20)).expect("write source");
        n.ok(
            "cp",
            &[
                src.to_str().expect("utf-8 path"),
                c.mnt().join(name).to_str().expect("utf-8 path"),
            ],
        );
    }
    n.ok("sync", &[]);
}

/// Every file in `files` reads back on `n` as written (`cmp` with the source file).
#[track_caller]
fn check_files_on(c: &Cluster, n: &NodeNs, files: &[(&str, u64)]) {
    for (name, _) in files {
        let src = c.path().join(format!("src-{name}"));
        let path = c.mnt().join(name);
        let r = n.run(
            "cmp",
            &[
                src.to_str().expect("utf-8 path"),
                path.to_str().expect("utf-8 path"),
            ],
        );
        assert_eq!(
            r.code, 0,
            "{}: {name} differs from what was written: {}{}",
            n.name, r.stdout, r.stderr
        );
    }
}

fn can_run() -> bool {
    if !util::have_root() {
        return false;
    }
    for t in TOOLS {
        if !util::have_tool(t) {
            return false;
        }
    }
    util::have_tool("/usr/lib/ocf/resource.d/heartbeat/Filesystem") && util::have_tool("/dev/fuse")
}

#[test]
fn pacemaker_moves_primary_and_filesystem() {
    if !can_run() {
        return;
    }
    let test_start = Instant::now();
    let c = Cluster::start();
    let (a, b) = (c.a(), c.b());
    let mnt = c.mnt();
    let fuse = c.fuse_dir().display().to_string();

    // While the cluster forms: the seed's initial setup by hand (create-md on both, up on
    // both, `primary --force` on the first node, full sync), and mkfs through the stand-in
    // on the Primary. No --node: each node finds itself by its host name.
    for n in [a, b] {
        n.adm(&["create-md", "--force", RES]);
        n.adm(&["up", RES]);
    }
    a.adm(&["wait-connect", RES]);
    a.adm(&["primary", "--force", RES]);
    wait_for("initial sync", Duration::from_secs(60), || {
        b.state()
            .contains("cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate")
            .then_some(())
    });
    let standin = "/usr/lib/ocf/resource.d/urbd/nbdfuse-loop";
    let socket = format!("OCF_RESKEY_socket=/run/urbd/{RES}.nbd");
    let export = format!("OCF_RESKEY_export={RES}");
    let device = format!("OCF_RESKEY_device={DEVICE}");
    let fuse_env = format!("OCF_RESKEY_fuse_dir={fuse}");
    let by_hand = |action: &str| {
        a.ok(
            "env",
            &[
                "OCF_ROOT=/usr/lib/ocf",
                &socket,
                &export,
                &device,
                &fuse_env,
                standin,
                action,
            ],
        );
    };
    by_hand("start");
    a.ok("mkfs.ext4", &["-q", "-F", DEVICE]);
    by_hand("stop");
    assert!(
        a.loops_under(&c.fuse_dir()).is_empty(),
        "stand-in left a loop"
    );

    // The cluster: both nodes online with a DC, then the seed's configuration.
    c.wait_status(
        a,
        "cluster formed",
        FORM_LIMIT,
        &["Online: [ nodea nodeb ]", "Current DC: node"],
    );
    a.ok(
        "crm",
        &[
            "configure",
            "load",
            "update",
            c.path().join("cluster.crm").to_str().expect("utf-8 path"),
        ],
    );
    let s = c.wait_status(
        a,
        "Pacemaker runs the Primary and the mount on nodea",
        MOVE_LIMIT,
        &[
            "Promoted: [ nodea ]",
            "Unpromoted: [ nodeb ]",
            "zcs_fs\t(ocf:heartbeat:Filesystem):\t Started nodea",
        ],
    );
    eprintln!("{s}");
    let src = a.mounted(&mnt).expect("the filesystem is mounted on nodea");
    assert!(src.starts_with("/dev/loop"), "mounted from {src}");
    assert_eq!(b.mounted(&mnt), None, "mounted on nodeb too");

    let first = [("f1", 1), ("f2", 2), ("f3", 3)];
    write_files_on(&c, a, &first);
    check_files_on(&c, a, &first);

    // Failover: the seed's section 7.7, `crm node standby` on the Primary's node.
    let t = Instant::now();
    a.ok("crm", &["node", "standby", "nodea"]);
    let s = c.wait_status(
        b,
        "standby nodea moves the Primary and the mount to nodeb",
        MOVE_LIMIT,
        &[
            "Node nodea: standby",
            "Promoted: [ nodeb ]",
            "Stopped: [ nodea ]",
            "zcs_fs\t(ocf:heartbeat:Filesystem):\t Started nodeb",
        ],
    );
    eprintln!("failover in {:?}\n{s}", t.elapsed());
    assert!(b.mounted(&mnt).is_some(), "not mounted on nodeb");
    assert_eq!(a.mounted(&mnt), None, "still mounted on nodea");
    assert_eq!(a.state(), "", "urbd still up on nodea in standby");
    assert!(
        b.state()
            .starts_with("cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown"),
        "nodeb: {}",
        b.state()
    );
    check_files_on(&c, b, &first);
    let second = [("f4", 4), ("f5", 5)];
    write_files_on(&c, b, &second);

    // nodea back online: a resynced Secondary; with stickiness 100 nothing moves back.
    a.ok("crm", &["node", "online", "nodea"]);
    c.wait_status(
        b,
        "nodea online as Secondary",
        MOVE_LIMIT,
        &["Online: [ nodea nodeb ]", "Unpromoted: [ nodea ]"],
    );
    wait_for("nodea resynced", MOVE_LIMIT, || {
        a.state()
            .starts_with("cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate")
            .then_some(())
    });
    // Both promotion scores are the best (10000) now: what keeps the Primary on nodeb is
    // stickiness. Let the cluster settle (nodea's monitor has set its score) and look again.
    wait_for("nodea's promotion score", MOVE_LIMIT, || {
        let r = a.run(
            "crm_attribute",
            &[
                "-N",
                "nodea",
                "-n",
                "master-urbd",
                "-l",
                "reboot",
                "-G",
                "-q",
            ],
        );
        (r.stdout.trim() == "10000").then_some(())
    });
    a.ok("crm_resource", &["--wait", "--timeout=60s"]);
    std::thread::sleep(Duration::from_secs(7));
    a.ok("crm_resource", &["--wait", "--timeout=60s"]);
    let s = c.wait_status(
        a,
        "resources stay on nodeb",
        Duration::from_secs(5),
        &[
            "Promoted: [ nodeb ]",
            "Unpromoted: [ nodea ]",
            "zcs_fs\t(ocf:heartbeat:Filesystem):\t Started nodeb",
        ],
    );
    eprintln!("{s}");
    assert!(b.mounted(&mnt).is_some(), "not mounted on nodeb");
    assert_eq!(a.mounted(&mnt), None, "mounted on nodea");

    // Until an explicit move: the group (and with it the Primary) back to nodea.
    a.ok("crm", &["resource", "move", "zcsgroup", "nodea"]);
    c.wait_status(
        a,
        "crm resource move brings everything back to nodea",
        MOVE_LIMIT,
        &[
            "Promoted: [ nodea ]",
            "Unpromoted: [ nodeb ]",
            "zcs_fs\t(ocf:heartbeat:Filesystem):\t Started nodea",
        ],
    );
    a.ok("crm", &["resource", "clear", "zcsgroup"]);
    check_files_on(&c, a, &first);
    check_files_on(&c, a, &second);
    assert_eq!(b.mounted(&mnt), None, "still mounted on nodeb");
    eprintln!("whole test: {:?}", test_start.elapsed());
}
