//! A throwaway VM for tests that need a kernel feature this machine lacks (nbd): a Debian
//! kernel extracted by `tests/kernel_nbd/vm-kernel.sh`, an initramfs built here (an
//! uncompressed newc cpio: busybox, our binaries, host tools with the libraries `ldd`
//! names, kernel modules with their dependencies), and qemu with the serial console on a
//! pipe. Every run is bounded in time and qemu is killed when it overruns.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// An initramfs under construction: paths inside the image -> what they are.
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

impl Initramfs {
    pub fn new() -> Self {
        let mut me = Self::default();
        for d in [
            "bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "lib", "lib64", "usr",
        ] {
            me.dir(d);
        }
        me
    }

    /// A directory and its parents.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            self.entries.entry(cur.clone()).or_insert(Entry::Dir);
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((p, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(p);
        }
    }

    /// A file with the given contents.
    pub fn bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.parent(path);
        self.entries.insert(
            path.trim_matches('/').to_owned(),
            Entry::File { data, mode },
        );
    }

    /// A copy of a host file (symlinks followed).
    pub fn file(&mut self, path: &str, src: &Path) {
        let data = fs::read(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        let mode = fs::metadata(src).map_or(0o644, |m| m.permissions().mode() & 0o7777);
        self.bytes(path, data, mode);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parent(path);
        self.entries.insert(
            path.trim_matches('/').to_owned(),
            Entry::Symlink(target.to_owned()),
        );
    }

    /// A host executable at `path`, and every shared library `ldd` lists for it at the
    /// path ldd names (the dynamic loader included). Debug information is left out when
    /// `objcopy` is there (our test binaries carry some 50 MiB of it, which a TCG guest
    /// would spend seconds unpacking).
    pub fn binary(&mut self, path: &str, src: &Path) {
        match stripped(src) {
            Some(data) => {
                let mode = fs::metadata(src).map_or(0o755, |m| m.permissions().mode() & 0o7777);
                self.bytes(path, data, mode);
            }
            None => self.file(path, src),
        }
        for lib in ldd(src) {
            let inside = lib.to_string_lossy().into_owned();
            if !self.entries.contains_key(inside.trim_matches('/')) {
                self.file(&inside, &lib);
            }
        }
    }

    /// Writes the image as an uncompressed newc cpio archive (the kernel unpacks it).
    pub fn write(&self, out: &Path) {
        let f = fs::File::create(out).unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
        let mut w = std::io::BufWriter::new(f);
        for (ino, (name, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data): (u32, &[u8]) = match entry {
                Entry::Dir => (0o040755, &[]),
                Entry::File { data, mode } => (0o100000 | mode, data),
                Entry::Symlink(t) => (0o120777, t.as_bytes()),
            };
            cpio_entry(&mut w, ino, mode, name, data);
        }
        cpio_entry(&mut w, 0, 0, "TRAILER!!!", &[]);
        w.flush().expect("write initramfs");
    }
}

fn cpio_entry(w: &mut impl Write, ino: u32, mode: u32, name: &str, data: &[u8]) {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    );
    let pad = |n: usize| (4 - n % 4) % 4;
    let mut v = header.into_bytes();
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.resize(v.len() + pad(v.len()), 0);
    w.write_all(&v).expect("write initramfs");
    w.write_all(data).expect("write initramfs");
    w.write_all(&vec![0; pad(data.len())])
        .expect("write initramfs");
}

/// `src` without its debug sections, through `objcopy --strip-debug`; `None` when objcopy
/// is missing or fails (the caller copies the file as it is).
fn stripped(src: &Path) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let out = dir.path().join("stripped");
    let ok = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(src)
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok { fs::read(&out).ok() } else { None }
}

/// The shared libraries of a dynamically linked executable, as `ldd` resolves them on this
/// host (none for a static one).
pub fn ldd(exe: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .unwrap_or_else(|e| panic!("running ldd: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vdso has no file.
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    libs
}

/// Kernel modules `names` and everything they depend on, dependencies first, as paths in
/// `tree/lib/modules/<version>/`. Dependencies come from each module's own `.modinfo`
/// (`depends=`), so neither depmod nor modinfo is needed on the host.
pub fn modules_with_deps(tree: &Path, names: &[&str]) -> Vec<PathBuf> {
    let root = fs::read_dir(tree.join("lib/modules"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
        .map(|e| e.path())
        .unwrap_or_else(|| panic!("no lib/modules/<version> in {}", tree.display()));
    let mut index = BTreeMap::new();
    let mut stack = vec![root.join("kernel")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(stem) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                index.insert(stem.replace('-', "_"), p);
            }
        }
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) {
        let key = name.replace('-', "_");
        if !seen.insert(key.clone()) {
            return;
        }
        let path = index
            .get(&key)
            .unwrap_or_else(|| panic!("kernel module {name} not found (built in, or compressed?)"));
        let data = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for dep in modinfo_depends(&data) {
            visit(&dep, index, seen, order);
        }
        order.push(path.clone());
    }
    for n in names {
        visit(n, &index, &mut seen, &mut order);
    }
    order
}

/// The `depends=` list of a module's `.modinfo` section (NUL-separated key=value strings).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(0);
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How qemu runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// KVM when /dev/kvm opens and is a real KVM; the reason when not.
pub fn pick_accel() -> (Accel, String) {
    if Path::new("/sys/module/kvm_pvm").exists() {
        // PVM (a KVM variant without hardware virtualization) only boots kernels built as
        // PVM guests; a stock kernel crawls through its decompressor for minutes.
        return (
            Accel::Tcg,
            "TCG: /dev/kvm here is kvm_pvm, which cannot run a stock Debian kernel".into(),
        );
    }
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => (Accel::Kvm, "KVM".into()),
        Err(e) => (Accel::Tcg, format!("TCG: /dev/kvm is not usable ({e})")),
    }
}

/// What a boot printed and how it ended.
pub struct Boot {
    /// Serial console lines.
    pub lines: Vec<String>,
    /// qemu exited (as opposed to being killed at a deadline).
    pub exited: bool,
    /// Why it was killed, when it was.
    pub killed: Option<String>,
    pub elapsed: Duration,
}

/// Boots `kernel` with `initrd` and collects the serial console until qemu exits, killing
/// it when `first_marker` has not been printed within `boot_limit` or the whole run passes
/// `limit`. Console lines are echoed to stderr as they come.
pub fn boot(
    kernel: &Path,
    initrd: &Path,
    accel: Accel,
    append: &str,
    first_marker: &str,
    boot_limit: Duration,
    limit: Duration,
) -> Boot {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args(["-M", "q35", "-m", "1024", "-smp", "2"])
    .args(["-serial", "stdio"])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", append]);
    match accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start qemu-system-x86_64: {e}"));
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                let s = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_owned();
                if tx.send(s).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let start = Instant::now();
    let mut lines = Vec::new();
    let mut seen_marker = false;
    let mut killed = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                eprintln!("vm| {line}");
                seen_marker |= line.contains(first_marker);
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let why = if !seen_marker && start.elapsed() > boot_limit {
            Some(format!(
                "no `{first_marker}` on the console after {boot_limit:?}"
            ))
        } else if start.elapsed() > limit {
            Some(format!("still running after {limit:?}"))
        } else {
            None
        };
        if let Some(why) = why {
            let _ = child.kill();
            killed = Some(why);
            break;
        }
    }
    let _ = child.wait();
    // Whatever the pipes still hold.
    lines.extend(rx.try_iter());
    Boot {
        lines,
        exited: killed.is_none(),
        killed,
        elapsed: start.elapsed(),
    }
}
