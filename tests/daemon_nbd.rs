//! The node daemon's NBD export, end to end: `urbdadm up` / `primary` / `secondary` / `down`
//! on a real daemon, clients on `<run dir>/<resource>.nbd` (urbd's own client, nbdinfo, and
//! ext4 on nbdfuse + loop standing in for /opt/zimbra on /dev/nbd0).

mod util;

use util::nbd as nbdutil;

use std::process::Command;

use nbdutil::{FuseLoop, MountGuard, run_ok};
use urbd::nbd::{Client, ClientError};
use util::have_tool;
use util::pair::*;

impl Node {
    fn nbd_socket(&self) -> std::path::PathBuf {
        self.run_dir.join("loop.nbd")
    }

    fn client(&self) -> Result<Client, ClientError> {
        Client::connect_unix(self.nbd_socket(), "loop", true)
    }

    fn uri(&self) -> String {
        format!("nbd+unix:///loop?socket={}", self.nbd_socket().display())
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn secondary_refuses_clients_with_the_resource_name() {
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    match a.client() {
        Err(ClientError::OptionRefused { msg, .. }) => {
            assert!(msg.contains("loop is Secondary"), "refusal text: {msg}")
        }
        Err(e) => panic!("expected a refusal naming the role, got {e}"),
        Ok(_) => panic!("a Secondary served a client"),
    }
    // Still refused after a failed (non-forced) promotion of the Inconsistent disk.
    a.adm(&["primary", "loop"]).code(17);
    assert!(a.client().is_err());
}

#[test]
fn primary_serves_and_secondary_is_refused_while_held_open() {
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "--force", "loop"]).ok();
    let mut c = a.client().expect("a Primary serves");
    assert_eq!(c.info().size, DATA_BYTES, "exported size");
    let data = pattern(7, 1 << 20);
    c.write(4096, &data, false).expect("write");
    c.flush().expect("flush");
    assert_eq!(c.read(4096, data.len() as u32).expect("read"), data);

    // DRBD refuses to demote a device someone holds open.
    let out = a.adm(&["secondary", "loop"]).code(11);
    assert!(
        out.stderr.contains("(-12) Device is held open by someone"),
        "{}",
        out.stderr
    );
    assert_eq!(
        a.adm(&["role", "loop"]).ok().stdout.trim(),
        "Primary/Unknown"
    );
    let out = a.adm(&["down", "loop"]).code(11);
    assert!(out.stderr.contains("held open"), "{}", out.stderr);

    // The counters move: 1 MiB written, 1 MiB read.
    let proc = a.adm(&["proc"]).ok().stdout;
    assert!(proc.contains(" dw:1024 dr:1024 "), "{proc}");
    let json: serde_json::Value =
        serde_json::from_str(&a.adm(&["proc", "--json"]).ok().stdout).expect("proc --json");
    let vol = &json[0]["volumes"][0];
    assert_eq!(vol["counters"]["dw"], 1024, "{json}");
    assert_eq!(vol["open_clients"], 1, "{json}");
    assert_eq!(vol["role"], "Primary", "{json}");

    c.disconnect().expect("disconnect");
    // The server notices the disconnect asynchronously; give it a bounded moment.
    let mut demoted = false;
    for _ in 0..100 {
        if a.adm(&["secondary", "loop"]).code == 0 {
            demoted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(demoted, "secondary still refused after the client left");
    assert!(a.client().is_err(), "a Secondary served a client");

    // Data written through NBD is on the backing disk, and survives down/up.
    a.adm(&["down", "loop"]).ok();
    let disk = std::fs::read(&a.data).expect("read data disk");
    assert!(
        disk[4096..4096 + data.len()] == data[..],
        "data not on the disk"
    );
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "loop"]).ok();
    let mut c = a.client().expect("serves again");
    assert_eq!(c.read(4096, data.len() as u32).expect("read"), data);
    c.disconnect().expect("disconnect");
}

#[test]
fn internal_metadata_is_not_exported() {
    let pair = Pair::with_internal_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "--force", "loop"]).ok();
    let c = a.client().expect("serves");
    let size = c.info().size;
    assert!(
        size < DATA_BYTES,
        "export of {size} bytes covers the internal metadata"
    );
    let status = a.adm(&["status", "--json", "loop"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    let sect = v[0]["volumes"][0]["size_sect"].as_u64().expect("size_sect");
    assert_eq!(sect * 512, size, "export size differs from the device size");
    c.disconnect().expect("disconnect");
    // The metadata is still valid after the export was used and the node went down.
    a.adm(&["down", "loop"]).ok();
    a.adm(&["get-gi", "loop"]).ok();
}

#[test]
fn nbdinfo_sees_the_export() {
    if !have_tool("nbdinfo") {
        return;
    }
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "--force", "loop"]).ok();
    // Status names the export, and says plainly why there is no /dev/nbd0 here.
    let status = a.adm(&["status", "loop"]).ok().stdout;
    assert!(
        status.contains(&format!("    export:{}", a.uri())),
        "{status}"
    );
    let no_nbd = !std::path::Path::new("/sys/module/nbd").exists();
    if no_nbd {
        assert!(
            status.contains("device:/dev/nbd0 not attached: this kernel has no nbd module"),
            "{status}"
        );
    }
    let out = run_ok(Command::new("nbdinfo").arg("--json").arg(a.uri()), 60);
    let v: serde_json::Value = serde_json::from_str(&out).expect("nbdinfo json");
    let export = &v["exports"][0];
    assert_eq!(export["export-size"].as_u64(), Some(DATA_BYTES), "{out}");
    assert_eq!(export["can_flush"].as_bool(), Some(true), "{out}");
    assert_eq!(export["can_fua"].as_bool(), Some(true), "{out}");
    assert_eq!(export["is_read_only"].as_bool(), Some(false), "{out}");
}

/// The seed mounts /dev/drbd0 at /opt/zimbra; here the kernel has no nbd module, so
/// nbdfuse + a loop device stand in for /dev/nbd0.
#[test]
fn ext4_on_the_export_survives_down_and_up() {
    let tools = [
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount",
    ];
    if !tools.iter().all(|t| have_tool(t)) || !util::have_root() {
        return;
    }
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "--force", "loop"]).ok();
    let work = tempfile::tempdir().expect("tempdir");
    let mnt = work.path().join("opt-zimbra");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let payload = pattern(3, 2_000_000);
    {
        let block = FuseLoop::attach(&work.path().join("fuse"), &a.uri());
        let dev = block.dev.clone();
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F", &dev]), 120);
        let mut m = MountGuard(None);
        run_ok(Command::new("mount").arg(&dev).arg(&mnt), 60);
        m.0 = Some(mnt.clone());
        for i in 0..10 {
            std::fs::write(mnt.join(format!("mail{i}")), &payload[i * 1000..]).expect("write file");
        }
        run_ok(&mut Command::new("sync"), 60);
        m.unmount();
    }
    // Everything (loop, fuse) is released: the node may go down and come back.
    a.adm(&["secondary", "loop"]).ok();
    a.adm(&["down", "loop"]).ok();
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "loop"]).ok();
    let block = FuseLoop::attach(&work.path().join("fuse2"), &a.uri());
    let dev = block.dev.clone();
    let fsck = run_ok(Command::new("e2fsck").args(["-f", "-n", &dev]), 120);
    assert!(fsck.contains("files"), "{fsck}");
    let mut m = MountGuard(None);
    run_ok(Command::new("mount").arg(&dev).arg(&mnt), 60);
    m.0 = Some(mnt.clone());
    for i in 0..10 {
        let got = std::fs::read(mnt.join(format!("mail{i}"))).expect("read file");
        assert!(got == payload[i * 1000..], "mail{i} differs after down/up");
    }
    m.unmount();
}

#[test]
fn tcp_export_only_when_urbd_options_ask() {
    if !have_tool("nbdinfo") {
        return;
    }
    let pair = Pair::with_metadata();
    let a = pair.alpha();
    // A free loopback port (bound and released; the daemon binds it right after).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let text = std::fs::read_to_string(&a.conf).expect("conf");
    std::fs::write(
        &a.conf,
        format!("{text}urbd-options loop {{ nbd-listen 127.0.0.1:{port}; }}\n"),
    )
    .expect("write conf");
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "--force", "loop"]).ok();
    let uri = format!("nbd://127.0.0.1:{port}/loop");
    let out = run_ok(Command::new("nbdinfo").arg("--size").arg(&uri), 60);
    assert_eq!(out.trim(), DATA_BYTES.to_string());
    let status = a.adm(&["status", "loop"]).ok().stdout;
    assert!(status.contains(&uri), "{status}");
    a.adm(&["down", "loop"]).ok();

    // Without the option nothing listens on TCP.
    std::fs::write(&a.conf, text).expect("restore conf");
    a.adm(&["up", "loop"]).ok();
    a.adm(&["primary", "loop"]).ok();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "TCP port open"
    );
}
