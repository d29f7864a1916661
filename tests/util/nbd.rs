//! Helpers for NBD tests: an in-process data path on a temp unix socket, stopped on drop,
//! and raw-socket helpers for speaking broken protocol on purpose.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use urbd::io::Backend;
use urbd::nbd::{Client, DataPath, ExportConfig, Gate};

/// A running data path on a unix socket in its own temp dir.
pub struct Served {
    pub dp: Option<DataPath>,
    pub gate: Arc<Gate>,
    pub sock: PathBuf,
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Served {
    pub fn start(name: &str, backend: Box<dyn Backend>) -> Self {
        Self::start_with(name, backend, false, Arc::new(Gate::new()))
    }

    pub fn start_with(
        name: &str,
        backend: Box<dyn Backend>,
        read_only: bool,
        gate: Arc<Gate>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("nbd.sock");
        let cfg = ExportConfig {
            name: name.into(),
            unix_socket: Some(sock.clone()),
            tcp: None,
            read_only,
            tls: None,
        };
        let dp = DataPath::start(cfg, backend, gate.clone()).expect("data path starts");
        Self {
            dp: Some(dp),
            gate,
            sock,
            dir,
            name: name.into(),
        }
    }

    pub fn client(&self, structured: bool) -> Client {
        Client::connect_unix(&self.sock, &self.name, structured).expect("client connects")
    }

    pub fn uri(&self) -> String {
        format!("nbd+unix:///{}?socket={}", self.name, self.sock.display())
    }

    pub fn raw(&self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    pub fn stop(mut self) {
        if let Some(dp) = self.dp.take() {
            dp.stop().expect("data path stops cleanly");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(dp) = self.dp.take() {
            let _ = dp.stop();
        }
    }
}

pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;

/// Reads the 18-byte greeting and answers with client flags.
pub fn raw_greet(s: &mut UnixStream, client_flags: u32) {
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(&g[..8], b"NBDMAGIC");
    s.write_all(&client_flags.to_be_bytes()).unwrap();
}

pub fn raw_option(s: &mut UnixStream, opt: u32, data: &[u8]) {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    s.write_all(&v).unwrap();
}

/// Reads one option reply: (option, reply type, data).
pub fn raw_option_reply(s: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).unwrap();
    let u32_at = |i: usize| u32::from_be_bytes(h[i..i + 4].try_into().unwrap());
    let mut d = vec![0u8; u32_at(16) as usize];
    s.read_exact(&mut d).unwrap();
    (u32_at(8), u32_at(12), d)
}

/// GO data for `name` with no info requests.
pub fn go_data(name: &str) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&0u16.to_be_bytes());
    v
}

/// Negotiates with GO on a raw socket (simple replies) and returns it in transmission.
pub fn raw_transmission(served: &Served) -> UnixStream {
    let mut s = served.raw();
    raw_greet(&mut s, 3);
    raw_option(&mut s, 7, &go_data(&served.name));
    loop {
        let (_, ty, _) = raw_option_reply(&mut s);
        if ty == 1 {
            break;
        }
        assert_eq!(ty, 3, "INFO replies then ACK");
    }
    s
}

pub fn raw_request(s: &mut UnixStream, flags: u16, cmd: u16, cookie: u64, offset: u64, len: u32) {
    let mut h = 0x2560_9513u32.to_be_bytes().to_vec();
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&cmd.to_be_bytes());
    h.extend_from_slice(&cookie.to_be_bytes());
    h.extend_from_slice(&offset.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    s.write_all(&h).unwrap();
}

/// Reads a simple reply: (cookie, error).
pub fn raw_simple_reply(s: &mut UnixStream) -> (u64, u32) {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    assert_eq!(&h[..4], &0x6744_6698u32.to_be_bytes());
    (
        u64::from_be_bytes(h[8..16].try_into().unwrap()),
        u32::from_be_bytes(h[4..8].try_into().unwrap()),
    )
}

/// True when the peer closed the connection (EOF) within the read timeout.
pub fn closed_by_peer(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Runs a command to completion within `secs` seconds (killed after that); returns
/// (success, stdout, stderr).
pub fn run_bounded(cmd: &mut std::process::Command, secs: u64) -> (bool, String, String) {
    match super::run_within(cmd, Duration::from_secs(secs)) {
        Ok(r) => (r.code == 0, r.stdout, r.stderr),
        Err(r) => (
            false,
            r.stdout,
            format!("{}\n(killed after {secs}s: {cmd:?})", r.stderr),
        ),
    }
}

/// Like [`run_bounded`] but panics with the output unless the command succeeds.
#[track_caller]
pub fn run_ok(cmd: &mut std::process::Command, secs: u64) -> String {
    let dbg = format!("{cmd:?}");
    let (ok, so, se) = run_bounded(cmd, secs);
    assert!(ok, "{dbg} failed\nstdout:\n{so}\nstderr:\n{se}");
    so
}

/// A child process killed and reaped on drop.
pub struct ChildGuard(pub Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A mount point unmounted on drop.
pub struct MountGuard(pub Option<PathBuf>);

impl MountGuard {
    pub fn unmount(&mut self) {
        if let Some(p) = self.0.take() {
            run_ok(std::process::Command::new("umount").arg(&p), 60);
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = run_bounded(std::process::Command::new("umount").arg("-l").arg(&p), 30);
        }
    }
}

/// A loop device detached on drop.
pub struct LoopGuard(pub Option<String>);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if let Some(dev) = self.0.take() {
            let _ = run_bounded(
                std::process::Command::new("losetup").arg("-d").arg(&dev),
                30,
            );
        }
    }
}

/// An nbdfuse mount: unmounted with fusermount3 and its process reaped on drop.
pub struct FuseGuard {
    pub dir: PathBuf,
    pub child: ChildGuard,
}

impl FuseGuard {
    /// Mounts `uri` at `dir`/nbd and waits (bounded) until nbdfuse is ready.
    pub fn mount(dir: &std::path::Path, uri: &str) -> FuseGuard {
        std::fs::create_dir_all(dir).unwrap();
        let pidfile = dir.with_extension("pid");
        let child = std::process::Command::new("nbdfuse")
            .arg("-P")
            .arg(&pidfile)
            .arg(dir)
            .arg(uri)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("nbdfuse starts");
        let g = FuseGuard {
            dir: dir.to_path_buf(),
            child: ChildGuard(Some(child)),
        };
        let t = std::time::Instant::now();
        while !pidfile.exists() || !dir.join("nbd").exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "nbdfuse did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("nbd")
    }
}

impl Drop for FuseGuard {
    fn drop(&mut self) {
        let _ = run_bounded(
            std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&self.dir),
            30,
        );
        if let Some(mut c) = self.child.0.take() {
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A block device on an NBD export without the kernel nbd module: nbdfuse exposes the
/// export as a file, a loop device makes it a block device. Dropped in that order: the loop
/// device is detached before nbdfuse is unmounted.
pub struct FuseLoop {
    /// The loop device (`/dev/loopN`).
    pub dev: String,
    _loop: LoopGuard,
    _fuse: FuseGuard,
}

impl FuseLoop {
    /// nbdfuse at `dir`, then `losetup` on its file (buffered: the export does its own I/O).
    pub fn attach(dir: &std::path::Path, uri: &str) -> FuseLoop {
        let fuse = FuseGuard::mount(dir, uri);
        let dev = run_ok(
            std::process::Command::new("losetup")
                .args(["-f", "--show", "--direct-io=off"])
                .arg(fuse.file()),
            60,
        )
        .trim()
        .to_string();
        FuseLoop {
            _loop: LoopGuard(Some(dev.clone())),
            dev,
            _fuse: fuse,
        }
    }
}
