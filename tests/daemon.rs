//! The node daemon through the real binaries: two nodes of a loopback pair (`alpha`,
//! `beta`) on one machine, each with its own run directory, file-backed disks in a
//! temporary folder, metadata made by `urbdadm create-md` first.
//!
//! Every test owns a [`Pair`], whose `Drop` runs `down` for both nodes and then kills any
//! daemon still alive, also when the test fails. Every command is bounded in time.

mod util;

use std::fs;

use util::have_tool;
use util::pair::*;

#[test]
fn lifecycle_up_refused_primary_forced_primary_down_up() {
    let pair = Pair::with_metadata();
    let (a, b) = (pair.alpha(), pair.beta());
    // One node: up connects (WFConnection) but the peer never answers.
    a.adm(&["up", "loop"]).ok();

    // Freshly created metadata attaches Inconsistent.
    assert_eq!(
        a.proc_body(),
        [
            " 0: cs:WFConnection ro:Secondary/Unknown ds:Inconsistent/DUnknown C r-----",
            "    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0",
        ]
    );
    let proc_file = fs::read_to_string(a.run_dir.join("proc_drbd")).expect("proc_drbd");
    assert!(
        proc_file.contains(" 0: cs:WFConnection ro:Secondary/Unknown"),
        "{proc_file}"
    );
    assert_eq!(a.adm(&["role", "loop"]).ok().stdout, "Secondary/Unknown\n");
    assert_eq!(a.adm(&["cstate", "loop"]).ok().stdout, "WFConnection\n");
    assert_eq!(
        a.adm(&["dstate", "loop"]).ok().stdout,
        "Inconsistent/DUnknown\n"
    );

    // Promotion of Inconsistent data is refused, as drbdsetup refuses it (exit 17), and
    // nothing changes on disk.
    let gi_before = a.get_gi();
    let out = a.adm(&["primary", "loop"]).code(17);
    assert!(
        out.stderr
            .contains("0: State change failed: (-2) Need access to UpToDate data"),
        "{}",
        out.stderr
    );
    assert_eq!(a.get_gi(), gi_before);
    assert_eq!(a.adm(&["role", "loop"]).ok().stdout, "Secondary/Unknown\n");

    // --force: UpToDate, a new current UUID (Primary bit set), the just-created UUID (4)
    // in the bitmap slot, flags consistent + was-up-to-date + primary.
    a.adm(&["primary", "--force", "loop"]).ok();
    assert_eq!(a.adm(&["role", "loop"]).ok().stdout, "Primary/Unknown\n");
    assert_eq!(
        a.adm(&["dstate", "loop"]).ok().stdout,
        "UpToDate/DUnknown\n"
    );
    assert_eq!(
        a.proc_body()[0],
        " 0: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown C r-----"
    );
    let gi = gi_fields(&a.get_gi());
    assert_ne!(gi[0], "0000000000000004");
    assert!(
        u64::from_str_radix(&gi[0], 16).expect("hex") & 1 == 1,
        "{gi:?}"
    );
    assert_eq!(gi[1], "0000000000000004");
    assert_eq!(
        gi[4..7],
        ["1", "1", "1"],
        "consistent, was up to date, primary: {gi:?}"
    );
    let status = a.adm(&["status", "loop"]).ok().stdout;
    assert!(
        status
            .starts_with("loop role:Primary\n  disk:UpToDate\n    export:nbd+unix:///loop?socket="),
        "{status}"
    );
    assert!(
        status.contains("\n    device:/dev/nbd0 not attached: "),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&a.adm(&["status", "--json", "loop"]).ok().stdout).expect("json");
    assert_eq!(json[0]["volumes"][0]["disk"], "UpToDate");
    // beta is untouched.
    assert!(b.get_gi().starts_with("0000000000000004:0000000000000000:"));

    // down demotes and detaches; the metadata is clean and drbdmeta reads the same UUIDs.
    let pid = a.pid().expect("pid file");
    a.adm(&["down", "loop"]).ok();
    wait_gone(pid);
    assert!(!a.socket().exists());
    assert!(!a.run_dir.join("loop.pid").exists());
    assert!(!a.run_dir.join("loop.lock").exists());
    let gi_down = gi_fields(&a.get_gi());
    assert_eq!(gi_down[1], "0000000000000004");
    assert_eq!(
        u64::from_str_radix(&gi_down[0], 16).expect("hex"),
        u64::from_str_radix(&gi[0], 16).expect("hex") & !1,
        "down clears the Primary bit of the current UUID"
    );
    assert_eq!(gi_down[4..7], ["1", "1", "0"], "{gi_down:?}");
    if have_tool("drbdmeta") {
        assert_eq!(gi_fields(&a.drbdmeta_get_gi()), gi_down);
    }

    // up again: all of it survived; Secondary with UpToDate data.
    a.adm(&["up", "loop"]).ok();
    assert_eq!(a.adm(&["role", "loop"]).ok().stdout, "Secondary/Unknown\n");
    assert_eq!(
        a.adm(&["dstate", "loop"]).ok().stdout,
        "UpToDate/DUnknown\n"
    );
    assert_eq!(gi_fields(&a.get_gi())[..4], gi_down[..4]);
    // Promotion of UpToDate data needs no force and (bitmap UUID set) keeps the UUIDs.
    a.adm(&["primary", "loop"]).ok();
    assert_eq!(gi_fields(&a.get_gi())[1], "0000000000000004");
    a.adm(&["secondary", "loop"]).ok();
    assert_eq!(a.adm(&["role", "loop"]).ok().stdout, "Secondary/Unknown\n");
    a.adm(&["down", "loop"]).ok();

    // beta's minor is 1: DRBD prints a blank line before a minor that does not follow.
    b.adm(&["up", "loop"]).ok();
    assert_eq!(
        b.proc_body()[..2],
        [
            "",
            " 1: cs:WFConnection ro:Secondary/Unknown ds:Inconsistent/DUnknown C r-----"
        ]
    );
}

#[test]
fn second_up_is_refused_by_the_lock() {
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    let pid = a.pid().expect("pid");
    let out = a.adm(&["up", "loop"]).code(10);
    assert!(
        out.stderr.contains(&format!(
            "resource loop is already up (urbd pid {pid} holds"
        )),
        "{}",
        out.stderr
    );
    // The first daemon is unharmed.
    assert!(pid_alive(pid));
    assert_eq!(a.adm(&["cstate", "loop"]).ok().stdout, "WFConnection\n");
}

#[test]
fn commands_on_a_resource_that_is_not_up() {
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    for cmd in [
        "role",
        "cstate",
        "dstate",
        "primary",
        "secondary",
        "attach",
        "detach",
        "status",
    ] {
        let out = a.adm(&[cmd, "loop"]).code(10);
        assert!(
            out.stderr.contains("resource loop is not up"),
            "{cmd}: {}",
            out.stderr
        );
    }
    // down of a resource that is not up is already done.
    a.adm(&["down", "loop"]).ok();
    // status without names lists only what is up: nothing.
    assert_eq!(a.adm(&["status"]).ok().stdout, "");
    assert!(a.proc_body().is_empty());
    // Dry run: says what it would do, starts nothing.
    let out = a.adm(&["-d", "up", "loop"]).ok();
    assert!(out.stdout.contains("--node alpha loop"), "{}", out.stdout);
    assert!(!a.socket().exists());
}

#[test]
fn up_without_create_md_is_refused() {
    let pair = Pair::new();
    let a = pair.alpha();
    let out = a.adm(&["up", "loop"]).code(10);
    assert!(
        out.stderr.contains("run `urbdadm create-md loop` first"),
        "{}",
        out.stderr
    );
    assert!(!a.socket().exists());
    assert!(a.pid().is_none());
    // Nothing was written to the meta-disk.
    let meta = fs::read(&a.meta).expect("meta");
    assert!(meta.iter().all(|&b| b == 0));
}

#[test]
fn size_mismatch_is_refused() {
    // A data disk smaller than the size in use.
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["down", "loop"]).ok();
    fs::File::options()
        .write(true)
        .open(&a.data)
        .and_then(|f| f.set_len(DATA_BYTES / 2))
        .expect("shrink");
    let out = a.adm(&["up", "loop"]).code(10);
    assert!(
        out.stderr.contains("less than the 131072 sectors in use"),
        "{}",
        out.stderr
    );
    assert!(!a.socket().exists());

    // A data disk larger than a (flexible, minimal) meta-disk's bitmap covers.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let conf = d.join("f.conf");
    fs::write(
        &conf,
        format!(
            "resource loop {{\n on alpha {{ device minor 0; disk \"{d}/a.img\"; meta-disk \"{d}/a.meta\"; address 127.0.0.1:7789; }}\n \
             on beta {{ device minor 1; disk \"{d}/b.img\"; meta-disk \"{d}/b.meta\"; address 127.0.0.1:7790; }}\n}}\n",
            d = d.display()
        ),
    )
    .expect("conf");
    sparse(&d.join("a.img"), DATA_BYTES);
    sparse(&d.join("a.meta"), 68 << 10);
    let node = Node {
        name: "alpha",
        conf,
        run_dir: d.join("run"),
        data: d.join("a.img"),
        meta: d.join("a.meta"),
        minor: 0,
    };
    node.adm(&["create-md", "--force", "loop"]).ok();
    sparse(&node.data, 4 << 30);
    let out = node.adm(&["up", "loop"]).code(10);
    assert!(
        out.stderr.contains("is larger than the bitmap on"),
        "{}",
        out.stderr
    );
    assert!(!node.socket().exists());
    assert_eq!(node.minor, 0);
}

#[test]
fn attach_and_detach() {
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["detach", "loop"]).ok();
    // StandAlone and Diskless: what drbdsetup calls Unconfigured.
    assert_eq!(a.adm(&["dstate", "loop"]).ok().stdout, "Unconfigured\n");
    assert_eq!(a.proc_body(), [" 0: cs:Unconfigured"]);
    // Diskless: detach has nothing to do; primary is refused even forced.
    a.adm(&["detach", "loop"]).ok();
    a.adm(&["primary", "--force", "loop"]).code(17);
    // Detach leaves clean metadata.
    if have_tool("drbdmeta") {
        assert_eq!(gi_fields(&a.drbdmeta_get_gi()), gi_fields(&a.get_gi()));
    }
    a.adm(&["attach", "loop"]).ok();
    assert_eq!(
        a.adm(&["dstate", "loop"]).ok().stdout,
        "Inconsistent/DUnknown\n"
    );
    let out = a.adm(&["attach", "loop"]).code(10);
    assert!(
        out.stderr
            .contains("Failure: (124) Device is attached to a disk (use detach first)"),
        "{}",
        out.stderr
    );
    // A StandAlone Primary cannot detach (it would lose access to UpToDate data).
    a.adm(&["primary", "--force", "loop"]).ok();
    let out = a.adm(&["detach", "loop"]).code(17);
    assert!(
        out.stderr.contains("(-2) Need access to UpToDate data"),
        "{}",
        out.stderr
    );
    a.adm(&["secondary", "loop"]).ok();
    a.adm(&["detach", "loop"]).ok();
    a.adm(&["attach", "loop"]).ok();
    assert_eq!(
        a.adm(&["dstate", "loop"]).ok().stdout,
        "UpToDate/DUnknown\n"
    );
}

#[test]
fn kill_9_leaves_a_stale_socket_that_the_next_up_replaces() {
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "--force", "loop"]).ok();
    let gi = gi_fields(&a.get_gi());
    let pid = a.pid().expect("pid");
    let p = rustix::process::Pid::from_raw(pid).expect("pid");
    rustix::process::kill_process(p, rustix::process::Signal::KILL).expect("kill");
    wait_gone(pid);
    assert!(
        a.socket().exists(),
        "the killed daemon's socket stays behind"
    );
    // Nobody answers on it: not up.
    a.adm(&["role", "loop"]).code(10);
    assert!(a.proc_body().is_empty());
    // The kernel released the flock; the next daemon replaces the socket.
    a.adm(&["up", "loop"]).ok();
    assert_ne!(a.pid(), Some(pid));
    // A crashed Primary comes back Secondary with its data UpToDate, flagged as a
    // crashed Primary (MDF_CRASHED_PRIMARY, 0x40) and the same data generation.
    assert_eq!(a.adm(&["role", "loop"]).ok().stdout, "Secondary/Unknown\n");
    assert_eq!(
        a.adm(&["dstate", "loop"]).ok().stdout,
        "UpToDate/DUnknown\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&a.adm(&["status", "--json", "loop"]).ok().stdout).expect("json");
    let flags = json[0]["volumes"][0]["md_flags"].as_u64().expect("flags");
    assert_eq!(flags & 0x40, 0x40, "flags {flags:#x}");
    let now = gi_fields(&a.get_gi());
    assert_eq!(now[1], gi[1]);
    assert_eq!(
        u64::from_str_radix(&now[0], 16).expect("hex"),
        u64::from_str_radix(&gi[0], 16).expect("hex") & !1
    );
}

#[test]
fn sigterm_goes_down_cleanly() {
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "--force", "loop"]).ok();
    let pid = a.pid().expect("pid");
    let p = rustix::process::Pid::from_raw(pid).expect("pid");
    rustix::process::kill_process(p, rustix::process::Signal::TERM).expect("kill");
    wait_gone(pid);
    assert!(!a.socket().exists());
    assert!(!a.run_dir.join("loop.pid").exists());
    // Demoted and detached: Primary bit and flag cleared, metadata clean.
    let gi = gi_fields(&a.get_gi());
    assert_eq!(gi[6], "0", "{gi:?}");
    if have_tool("drbdmeta") {
        assert_eq!(gi_fields(&a.drbdmeta_get_gi()), gi);
    }
    a.adm(&["up", "loop"]).ok();
    assert_eq!(
        a.adm(&["dstate", "loop"]).ok().stdout,
        "UpToDate/DUnknown\n"
    );
}
