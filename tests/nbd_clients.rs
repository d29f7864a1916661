//! The NBD server against real clients: nbdinfo, qemu-io, nbdcopy, fio's nbd engine and a
//! filesystem through nbdfuse + loop + mkfs.ext4 + mount. Each tool is checked first (a
//! missing tool fails under CI=true, else the test is skipped); every process, mount and
//! loop device is cleaned up by a guard, also on failure; every command is time-bounded.

mod util;

use util::nbd as nbdutil;

use std::process::Command;

use nbdutil::*;
use urbd::io::{BackendSpec, CacheMode, open_backend};

fn tools(names: &[&str]) -> bool {
    names.iter().all(|t| util::have_tool(t))
}

/// A sparse file of `size` bytes served over O_DIRECT io_uring.
fn serve_file(name: &str, size: u64) -> (tempfile::NamedTempFile, Served) {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(size).unwrap();
    let srv = Served::start(name, open_backend(&BackendSpec::new(f.path())).unwrap());
    (f, srv)
}

#[test]
fn nbdinfo_sees_size_flags_and_block_sizes() {
    if !tools(&["nbdinfo"]) {
        return;
    }
    let (_f, srv) = serve_file("r0", 64 << 20);
    let out = run_ok(Command::new("nbdinfo").arg("--json").arg(srv.uri()), 60);
    let v: serde_json::Value = serde_json::from_str(&out).expect("nbdinfo prints JSON");
    let e = &v["exports"][0];
    assert_eq!(e["export-size"], 64 << 20, "{out}");
    assert_eq!(e["export-name"], "r0");
    assert_eq!(v["structured"], true);
    for (k, want) in [
        ("is_read_only", false),
        ("can_flush", true),
        ("can_fua", true),
        ("can_trim", true),
        ("can_zero", true),
        ("can_multi_conn", true),
        ("can_df", true),
        ("can_cache", false),
        ("can_fast_zero", false),
    ] {
        assert_eq!(e[k], want, "{k} in {out}");
    }
    assert_eq!(e["block_size_minimum"], 1, "{out}");
    assert_eq!(e["block_size_preferred"], 4096, "{out}");
    assert_eq!(e["block_size_maximum"], 32 << 20, "{out}");
    // --list goes through NBD_OPT_LIST.
    let list = run_ok(
        Command::new("nbdinfo")
            .arg("--list")
            .arg(format!("nbd+unix://?socket={}", srv.sock.display())),
        60,
    );
    assert!(list.contains("r0"), "{list}");
    srv.stop();
}

#[test]
fn nbdinfo_shows_the_gate_refusal() {
    if !tools(&["nbdinfo"]) {
        return;
    }
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(1 << 20).unwrap();
    let gate = std::sync::Arc::new(urbd::nbd::Gate::refusing("optzimbra is Secondary"));
    let srv = Served::start_with(
        "optzimbra",
        open_backend(&BackendSpec::new(f.path())).unwrap(),
        false,
        gate,
    );
    // libnbd prints the server's text in its debug output.
    let (ok, so, se) = run_bounded(
        Command::new("nbdinfo")
            .env("LIBNBD_DEBUG", "1")
            .arg(srv.uri()),
        60,
    );
    assert!(!ok, "nbdinfo must fail: {so}");
    assert!(se.contains("opt_go"), "stderr: {se}");
    assert!(se.contains("optzimbra is Secondary"), "stderr: {se}");
    srv.stop();
}

#[test]
fn qemu_io_pattern_write_read_back() {
    if !tools(&["qemu-io"]) {
        return;
    }
    let (_f, srv) = serve_file("r0", 64 << 20);
    let uri = srv.uri();
    let out = run_ok(
        Command::new("qemu-io")
            .arg("--image-opts")
            .arg(format!("driver=raw,file.driver=nbd,file.server.type=unix,file.server.path={},file.export=r0", srv.sock.display()))
            .args(["-c", "write -P 0xab 0 4M"])
            .args(["-c", "write -P 0xcd 1000 3000"]) // unaligned
            .args(["-c", "write -z 8M 1M"])
            .args(["-c", "flush"])
            .args(["-c", "read -P 0xab 0 1000"])
            .args(["-c", "read -P 0xcd 1000 3000"])
            .args(["-c", "read -P 0xab 4000 4190304"])
            .args(["-c", "read -P 0 8M 1M"]),
        120,
    );
    assert!(!out.contains("failed") && !out.contains("Pattern"), "{out}");
    assert_eq!(out.matches("read ").count(), 4, "{out}");
    // The URI form as well.
    let out = run_ok(
        Command::new("qemu-io").args(["-f", "raw", &uri, "-c", "read -P 0xab 0 1000"]),
        60,
    );
    assert!(!out.contains("Pattern"), "{out}");
    srv.stop();
}

fn crc_file(path: &std::path::Path) -> u32 {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let mut crc = 0u32;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return crc;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

#[test]
fn nbdcopy_one_gib_in_and_out() {
    if !tools(&["nbdcopy"]) {
        return;
    }
    const GIB: u64 = 1 << 30;
    let dir = tempfile::tempdir().unwrap();
    // A sparse 1 GiB source with data scattered through it (32 MiB allocated).
    let src = dir.path().join("src.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(GIB).unwrap();
        let mut x = 0x1234_5678u32;
        let mut chunk = vec![0u8; 1 << 20];
        for i in 0..32u64 {
            for b in chunk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            f.write_all_at(&chunk, i * (GIB / 32) + i * 4096 + 123)
                .unwrap();
        }
    }
    let (_backing, srv) = serve_file("r0", GIB);
    run_ok(Command::new("nbdcopy").arg(&src).arg(srv.uri()), 300);
    let out = dir.path().join("out.img");
    run_ok(Command::new("nbdcopy").arg(srv.uri()).arg(&out), 300);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), GIB);
    assert_eq!(crc_file(&src), crc_file(&out), "1 GiB round trip differs");
    srv.stop();
}

#[test]
fn fio_nbd_engine_verifies_crc32c() {
    if !tools(&["fio"]) {
        return;
    }
    for mode in [CacheMode::Direct, CacheMode::Cached] {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(128 << 20).unwrap();
        let mut spec = BackendSpec::new(f.path());
        spec.cache = mode;
        let srv = Served::start("r0", open_backend(&spec).unwrap());
        let out = run_ok(
            Command::new("fio")
                // fio drops verify state files in its working directory.
                .current_dir(srv.dir.path())
                .args([
                    "--verify_state_save=0",
                    "--name=verify",
                    "--ioengine=nbd",
                    "--rw=randwrite",
                    "--bs=4k",
                    "--bsrange=512-64k",
                    "--size=64m",
                    "--iodepth=32",
                    "--verify=crc32c",
                    "--do_verify=1",
                    "--verify_fatal=1",
                    "--runtime=60",
                    "--output-format=normal",
                ])
                .arg(format!("--uri={}", srv.uri())),
            180,
        );
        assert!(out.contains("verify"), "{out}");
        assert!(!out.contains("verify: bad"), "{out}");
        assert!(out.contains("err= 0"), "{out}");
        srv.stop();
    }
}

#[test]
fn ext4_through_nbdfuse_loop_survives_remount_and_fsck() {
    if !tools(&[
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount",
    ]) || !util::have_root()
    {
        return;
    }
    let (_backing, srv) = serve_file("r0", 256 << 20);
    let work = tempfile::tempdir().unwrap();
    let block = FuseLoop::attach(&work.path().join("fuse"), &srv.uri());
    let dev = block.dev.clone();
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", &dev]), 120);
    let mnt = work.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut m = MountGuard(None);
    run_ok(Command::new("mount").arg(&dev).arg(&mnt), 60);
    m.0 = Some(mnt.clone());
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    for i in 0..20 {
        std::fs::write(
            mnt.join(format!("f{i}")),
            &payload[..payload.len() - i * 1000],
        )
        .unwrap();
    }
    std::fs::create_dir(mnt.join("dir")).unwrap();
    std::fs::write(mnt.join("dir/small"), b"hello urbd").unwrap();
    run_ok(&mut Command::new("sync"), 60);
    m.unmount();
    run_ok(Command::new("mount").arg(&dev).arg(&mnt), 60);
    m.0 = Some(mnt.clone());
    for i in 0..20 {
        let got = std::fs::read(mnt.join(format!("f{i}"))).unwrap();
        assert!(
            got == payload[..payload.len() - i * 1000],
            "file f{i} differs after remount"
        );
    }
    assert_eq!(std::fs::read(mnt.join("dir/small")).unwrap(), b"hello urbd");
    m.unmount();
    let out = run_ok(Command::new("e2fsck").args(["-f", "-n", &dev]), 120);
    assert!(out.contains("clean") || out.contains("files"), "{out}");
    drop(block);
    srv.stop();
}

#[test]
fn block_device_backend_on_a_loop_device() {
    if !tools(&["losetup"]) || !util::have_root() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(64 << 20).unwrap();
    f.as_file().write_all_at(&[0x11u8; 1 << 20], 0).unwrap();
    let dev = run_ok(
        Command::new("losetup")
            .args(["-f", "--show", "--direct-io=on"])
            .arg(f.path()),
        60,
    )
    .trim()
    .to_string();
    let _loop = LoopGuard(Some(dev.clone()));
    let be = open_backend(&BackendSpec::new(&dev)).unwrap();
    assert_eq!(be.info().size, 64 << 20);
    let srv = Served::start("blk", be);
    let mut c = srv.client(true);
    c.write(513, b"unaligned on a block device", true).unwrap();
    assert_eq!(c.read(513, 27).unwrap(), b"unaligned on a block device");
    c.write_zeroes(4096, 8192, true).unwrap();
    assert_eq!(c.read(4096, 8192).unwrap(), vec![0u8; 8192]);
    c.trim(1 << 20, 1 << 20).unwrap();
    c.flush().unwrap();
    drop(c);
    srv.stop();
    let mut back = vec![0u8; 16384];
    f.as_file().read_exact_at(&mut back, 0).unwrap();
    assert_eq!(&back[513..540], b"unaligned on a block device");
    assert!(back[4096..12288].iter().all(|&b| b == 0));
    assert!(back[12288..].iter().all(|&b| b == 0x11));
}
