//! systemd's readiness protocol (`sd_notify(3)`), without libsystemd: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for
//! the abstract namespace). Under `Type=notify` systemd counts the unit started only when
//! `READY=1` arrives, so `systemctl start urbd@RES` returns once the control socket answers,
//! as `urbdadm up` does.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1\nSTATUS=..."`) to systemd. Without `$NOTIFY_SOCKET` (not
/// started by systemd) it does nothing and returns `Ok(false)`.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET_ENV).filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    send(&path, state)?;
    Ok(true)
}

fn send(path: &OsString, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), std::path::Path::new(path))?;
        }
    }
    Ok(())
}

/// [`notify`], logging a failure instead of returning it: readiness is best effort (a unit
/// without `Type=notify` has no socket to fail on).
pub fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        send(&path.clone().into_os_string(), "READY=1\nSTATUS=up").expect("send");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("urbd-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract addr");
        let server = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send(&OsString::from(format!("@{name}")), "STOPPING=1").expect("send");
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(send(&dir.path().join("none").into_os_string(), "READY=1").is_err());
    }
}
