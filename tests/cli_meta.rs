//! create-md, dump-md, show-gi and get-gi through the real `urbdadm` binary, with drbdmeta
//! (drbd-utils) as the format oracle, and every refusal checked to leave the disks untouched.

mod util;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use util::{Ran, have_tool, run, urbdadm};

/// A two-node loopback resource `r0` in a temp dir; node `alpha`'s disks are files there.
struct Pair {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

#[derive(Clone, Copy)]
enum Meta {
    Indexed(u32),
    Flexible,
    Internal,
}

impl Pair {
    fn new(meta: Meta, data_bytes: u64, meta_bytes: u64) -> Pair {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display().to_string();
        let meta_stmt = |node: &str| match meta {
            Meta::Indexed(i) => format!("meta-disk {d}/{node}.meta[{i}];"),
            Meta::Flexible => format!("flexible-meta-disk {d}/{node}.meta;"),
            Meta::Internal => "meta-disk internal;".to_string(),
        };
        let text = format!(
            "resource r0 {{\n  protocol C;\n\
             on alpha {{ device minor 0; disk {d}/alpha.img; {} address 127.0.0.1:7789; }}\n\
             on beta {{ device minor 1; disk {d}/beta.img; {} address 127.0.0.1:7790; }}\n}}\n",
            meta_stmt("alpha"),
            meta_stmt("beta")
        );
        let conf = dir.path().join("r0.res");
        std::fs::write(&conf, text).expect("write config");
        let pair = Pair { dir, conf };
        sparse(&pair.data(), data_bytes);
        if !matches!(meta, Meta::Internal) {
            sparse(&pair.meta(), meta_bytes);
        }
        pair
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("alpha.img")
    }

    fn meta(&self) -> PathBuf {
        self.dir.path().join("alpha.meta")
    }

    fn adm(&self, args: &[&str]) -> Ran {
        run(self.cmd(args).stdin(Stdio::null()))
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = urbdadm();
        cmd.arg("-c")
            .arg(&self.conf)
            .args(["--node", "alpha"])
            .args(args);
        cmd
    }

    /// Runs with `answer` typed on stdin.
    fn adm_answer(&self, args: &[&str], answer: &str) -> Ran {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn urbdadm");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(answer.as_bytes())
            .expect("type answer");
        Ran::from_output(child.wait_with_output().expect("wait urbdadm"))
    }
}

fn sparse(path: &Path, bytes: u64) {
    let f = std::fs::File::create(path).expect("create disk file");
    f.set_len(bytes).expect("size disk file");
}

fn hash(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read file")
}

fn drbdmeta(device: &Path, index: &str, args: &[&str]) -> String {
    let out = Command::new("drbdmeta")
        .args(["--force", "-", "v08"])
        .arg(device)
        .arg(index)
        .args(args)
        .output()
        .expect("run drbdmeta");
    assert!(
        out.status.success(),
        "drbdmeta {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// dump-md text from `version` on (drops the header comment with date and command), with
/// the uuid block's flags line elided: drbdmeta before 9.33 prints 0 there whatever the
/// flags are (fixed upstream in 725d989e); flags are compared through get-gi instead.
fn body(dump: &str) -> String {
    dump.lines()
        .skip_while(|l| !l.starts_with("version"))
        .filter(|l| !l.trim_start().starts_with("flags 0x"))
        .collect::<Vec<_>>()
        .join("\n")
}

const MIB: u64 = 1 << 20;

#[test]
fn create_md_matches_drbdmeta_for_every_layout() {
    if !have_tool("drbdmeta") {
        return;
    }
    for (meta, index, data, meta_bytes) in [
        (Meta::Indexed(0), "0", 256 * MIB, 128 * MIB),
        (Meta::Indexed(1), "1", 256 * MIB, 256 * MIB),
        (Meta::Flexible, "flex-external", 512 * MIB, 2 * MIB),
        (Meta::Internal, "internal", 300 * MIB, 0),
    ] {
        let pair = Pair::new(meta, data, meta_bytes);
        let out = pair.adm(&["create-md", "r0"]).ok();
        assert!(
            out.stdout
                .contains("New drbd meta data block successfully created.")
        );
        let device = match meta {
            Meta::Internal => pair.data(),
            _ => pair.meta(),
        };
        let ours = pair.adm(&["dump-md", "r0"]).ok().stdout;
        let theirs = drbdmeta(&device, index, &["dump-md"]);
        assert_eq!(
            body(&ours),
            body(&theirs),
            "dump-md differs for index {index}"
        );
        assert_eq!(
            pair.adm(&["get-gi", "r0"]).ok().stdout,
            drbdmeta(&device, index, &["get-gi"]),
            "get-gi differs for index {index}"
        );
        assert_eq!(
            pair.adm(&["show-gi", "r0"]).ok().stdout,
            drbdmeta(&device, index, &["show-gi"]),
            "show-gi differs for index {index}"
        );
    }
}

#[test]
fn metadata_from_drbdmeta_is_read() {
    if !have_tool("drbdmeta") {
        return;
    }
    let pair = Pair::new(Meta::Indexed(0), 256 * MIB, 128 * MIB);
    drbdmeta(&pair.meta(), "0", &["create-md"]);
    drbdmeta(
        &pair.meta(),
        "0",
        &["set-gi", "0x1234567890ABCDEF:0x0:0x0:0x0:1:1:0:1:0:0:0"],
    );
    let gi = pair.adm(&["get-gi", "r0"]).ok().stdout;
    assert_eq!(gi, drbdmeta(&pair.meta(), "0", &["get-gi"]));
    assert!(gi.starts_with("1234567890ABCDEF:"), "{gi}");
}

#[test]
fn existing_metadata_needs_yes_or_force() {
    let pair = Pair::new(Meta::Indexed(0), 64 * MIB, 128 * MIB);
    pair.adm(&["create-md", "r0"]).ok();
    let before = hash(&pair.meta());

    // No answer, or anything but "yes": cancelled, nothing written.
    for answer in ["", "no\n", "y\n", "YES please\n"] {
        let out = pair.adm_answer(&["create-md", "r0"], answer).code(20);
        assert!(
            out.stderr.contains("[need to type 'yes' to confirm]"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("nothing was written"), "{}", out.stderr);
        assert!(
            hash(&pair.meta()) == before,
            "metadata changed after answer {answer:?}"
        );
    }
    pair.adm_answer(&["create-md", "r0"], "yes\n").ok();
    pair.adm(&["create-md", "--force", "r0"]).ok();
    pair.adm(&["--", "--force", "create-md", "r0"]).ok();
}

#[test]
fn filesystem_signature_needs_confirmation() {
    if !have_tool("mkfs.ext4") {
        return;
    }
    let pair = Pair::new(Meta::Internal, 64 * MIB, 0);
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(pair.data())
        .output()
        .expect("mkfs.ext4");
    assert!(mkfs.status.success());
    let before = hash(&pair.data());
    let out = pair.adm_answer(&["create-md", "r0"], "no\n").code(20);
    assert!(out.stderr.contains("ext4"), "{}", out.stderr);
    assert!(hash(&pair.data()) == before, "data disk changed");
}

#[test]
fn too_small_meta_disk_is_refused_with_the_size_needed() {
    let pair = Pair::new(Meta::Indexed(1), 64 * MIB, 128 * MIB);
    let out = pair.adm(&["create-md", "--force", "r0"]).code(20);
    assert!(
        out.stderr.contains(&pair.meta().display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("MiB"), "{}", out.stderr);
    assert!(
        hash(&pair.meta()).iter().all(|&b| b == 0),
        "meta-disk was written"
    );

    let pair = Pair::new(Meta::Flexible, 8 << 30, 64 << 10);
    let out = pair.adm(&["create-md", "--force", "r0"]).code(20);
    assert!(
        out.stderr.contains("too small") || out.stderr.contains("needs"),
        "{}",
        out.stderr
    );
    assert!(
        hash(&pair.meta()).iter().all(|&b| b == 0),
        "meta-disk was written"
    );
}

#[test]
fn dry_run_prints_and_writes_nothing() {
    let pair = Pair::new(Meta::Indexed(0), 64 * MIB, 128 * MIB);
    let out = pair.adm(&["-d", "create-md", "r0"]).ok();
    assert!(out.stdout.contains("create-md r0/0"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&pair.meta().display().to_string()),
        "{}",
        out.stdout
    );
    assert!(
        hash(&pair.meta()).iter().all(|&b| b == 0),
        "dry run wrote metadata"
    );
}

#[test]
fn bad_metadata_is_reported_with_the_file_and_nothing_written() {
    let pair = Pair::new(Meta::Indexed(0), 64 * MIB, 128 * MIB);
    // No metadata at all.
    let out = pair.adm(&["dump-md", "r0"]).code(20);
    assert!(
        out.stderr.contains(&pair.meta().display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("magic"), "{}", out.stderr);

    pair.adm(&["create-md", "r0"]).ok();
    let good = hash(&pair.meta());

    // Bad AL checksum: flip a byte inside transaction block 3.
    let mut bytes = good.clone();
    bytes[4096 + 3 * 4096 + 100] ^= 0xff;
    std::fs::write(pair.meta(), &bytes).expect("corrupt AL");
    let out = pair.adm(&["dump-md", "r0"]).code(20);
    assert!(
        out.stderr.contains("activity log transaction block 3"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("checksum"), "{}", out.stderr);
    assert!(
        hash(&pair.meta()) == bytes,
        "dump-md wrote to the meta-disk"
    );

    // Wrong magic.
    let mut bytes = good.clone();
    bytes[60] ^= 0xff;
    bytes[61] ^= 0xff;
    std::fs::write(pair.meta(), &bytes).expect("corrupt magic");
    for cmd in ["dump-md", "show-gi", "get-gi"] {
        let out = pair.adm(&[cmd, "r0"]).code(20);
        assert!(out.stderr.contains("magic"), "{cmd}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{cmd} printed: {}", out.stdout);
    }
    assert!(hash(&pair.meta()) == bytes);

    // Truncated meta-disk: the slot's bitmap lies beyond the end of the file.
    std::fs::write(pair.meta(), &good[..40960]).expect("truncate");
    let out = pair.adm(&["dump-md", "r0"]).code(20);
    assert!(
        out.stderr.contains(&pair.meta().display().to_string()),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::metadata(pair.meta()).map(|m| m.len()).ok(),
        Some(40960)
    );
}

#[test]
fn missing_data_disk_is_named() {
    let pair = Pair::new(Meta::Indexed(0), 64 * MIB, 128 * MIB);
    std::fs::remove_file(pair.data()).expect("remove data disk");
    let out = pair.adm(&["create-md", "r0"]).code(20);
    assert!(
        out.stderr.contains(&pair.data().display().to_string()),
        "{}",
        out.stderr
    );
    assert!(hash(&pair.meta()).iter().all(|&b| b == 0));
}

#[test]
fn config_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("bad.res");
    std::fs::write(&conf, "resource r0 {\n  on alpha {\n    disk /x\n  }\n}\n").expect("write");
    let out = run(urbdadm().arg("-c").arg(&conf).args(["dump", "r0"])).code(10);
    let prefix = format!("{}:", conf.display());
    assert!(out.stderr.contains(&prefix), "{}", out.stderr);
    assert!(
        out.stderr.lines().any(|l| l.contains(&prefix)
            && l.split(':')
                .nth(2)
                .is_some_and(|c| c.parse::<u32>().is_ok())),
        "no FILE:LINE:COL in {}",
        out.stderr
    );
    let out = run(urbdadm().args(["-c", "/nonexistent/urbd.conf", "dump"])).code(10);
    assert!(
        out.stderr.contains("/nonexistent/urbd.conf"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_resource_and_host() {
    let pair = Pair::new(Meta::Indexed(0), 64 * MIB, 128 * MIB);
    let out = pair.adm(&["create-md", "nosuch"]).code(1);
    assert!(
        out.stderr.contains("'nosuch' not defined"),
        "{}",
        out.stderr
    );
    // --node on the command line wins over URBD_NODE.
    run(pair.cmd(&["create-md", "r0"]).env("URBD_NODE", "gamma")).ok();
    let out = run(urbdadm()
        .arg("-c")
        .arg(&pair.conf)
        .env("URBD_NODE", "gamma")
        .args(["create-md", "--force", "r0"]))
    .code(10);
    assert!(out.stderr.contains("gamma"), "{}", out.stderr);
    assert!(
        out.stderr.contains("alpha") && out.stderr.contains("beta"),
        "{}",
        out.stderr
    );
}

/// A loop device, detached on drop (also when the test fails).
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn read_only_meta_disk_is_refused() {
    if !util::have_root() || !have_tool("losetup") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let backing = dir.path().join("meta.img");
    sparse(&backing, 128 * MIB);
    let out = Command::new("losetup")
        .args(["-r", "-f", "--show"])
        .arg(&backing)
        .output()
        .expect("losetup");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let d = dir.path().display();
    let conf = dir.path().join("r0.res");
    std::fs::write(
        &conf,
        format!(
            "resource r0 {{ on alpha {{ device minor 0; disk {d}/alpha.img; meta-disk {}[0]; address 127.0.0.1:7789; }}\n\
             on beta {{ device minor 1; disk {d}/beta.img; meta-disk {d}/beta.meta[0]; address 127.0.0.1:7790; }} }}\n",
            dev.0
        ),
    )
    .expect("write config");
    sparse(&dir.path().join("alpha.img"), 64 * MIB);
    let out =
        run(urbdadm()
            .arg("-c")
            .arg(&conf)
            .args(["--node", "alpha", "create-md", "--force", "r0"]))
        .code(20);
    assert!(out.stderr.contains(&dev.0), "{}", out.stderr);
    assert!(out.stderr.contains("read-only"), "{}", out.stderr);
    assert!(
        hash(&backing).iter().all(|&b| b == 0),
        "read-only device was written"
    );
}
