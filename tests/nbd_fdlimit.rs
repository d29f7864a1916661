//! Running out of file descriptors: the server backs off instead of spinning on accept, and
//! accepts the waiting client once fds are available again. Its own test binary because it
//! changes the process-wide RLIMIT_NOFILE.

mod util;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use util::nbd as nbdutil;

use nbdutil::Served;
use urbd::io::MemDisk;

#[test]
fn accept_backs_off_on_emfile_and_recovers() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("urbd=warn")
        .with_test_writer()
        .try_init();
    let disk = MemDisk::new(1 << 20);
    let srv = Served::start("r0", Box::new(disk.backend()));
    // A socket made while fds are plenty, connected once they are not.
    // SAFETY: plain socket(2); the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0);
    // SAFETY: fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads the limit into `old`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    // Highest fd in use + 1: no new fd can be created.
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let tight = libc::rlimit {
        rlim_cur: highest, // fds 0..highest-1 allowed; fd numbers >= highest refused
        rlim_max: old.rlim_max,
    };
    // SAFETY: lowers the soft limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) }, 0);
    // Fill every free fd number below the limit.
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    let mut stream = UnixStream::from(sock);
    let connected = {
        use std::os::unix::ffi::OsStrExt;
        let path = srv.sock.as_os_str().as_bytes();
        // SAFETY: sockaddr_un filled within bounds; connect(2) on our socket.
        unsafe {
            let mut sa: libc::sockaddr_un = std::mem::zeroed();
            sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in sa.sun_path.iter_mut().zip(path) {
                *d = *s as libc::c_char;
            }
            libc::connect(
                std::os::fd::AsRawFd::as_raw_fd(&stream),
                &sa as *const libc::sockaddr_un as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        }
    };
    assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
    // The server cannot accept now; give it a few backoff rounds.
    std::thread::sleep(Duration::from_millis(350));
    // SAFETY: restores the limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    drop(fillers);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 18];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    drop(stream);
    let mut c = srv.client(false);
    c.write(0, b"ok", false).unwrap();
    srv.stop();
}
