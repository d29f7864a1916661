//! Who may drive the control socket: root, the daemon's own user, and the members of the
//! resource's `control-group` (`urbd-options`), nobody else.
//!
//! Two locks, as for `/dev/drbd*` and drbdsetup: the socket file is 0600 (owner only) or,
//! with a `control-group`, 0660 with that group, so the kernel refuses everyone else at
//! `connect`; and the daemon checks each connection's credentials (SO_PEERCRED for the
//! user and primary group, SO_PEERGROUPS for the supplementary groups, both as they were at
//! `connect`) and answers a refusal naming the rule. The second check also covers the
//! moment between `bind` and `chmod`, when the file has the umask's mode.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::error::DaemonError;

/// SO_PEERGROUPS (Linux 4.13; the same number on every architecture but alpha, mips,
/// parisc and sparc, which urbd does not build for).
const SO_PEERGROUPS: libc::c_int = 59;

/// Supplementary groups read from a peer at most (NGROUPS_MAX is 65536).
const MAX_PEER_GROUPS: usize = 65_536;

/// The access rule of one resource's control socket.
#[derive(Debug, Clone)]
pub struct ControlAccess {
    /// `control-group`: its name and id.
    group: Option<(String, u32)>,
    /// The daemon's effective user (root in production; the test user otherwise).
    owner: u32,
    resource: String,
}

/// A peer that may not drive the socket, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The peer's user id.
    pub uid: u32,
    /// The message for the operator.
    pub message: String,
}

impl ControlAccess {
    /// The rule for `resource`, resolving `group` (a `control-group` that names no group
    /// is a configuration error).
    pub fn new(resource: &str, group: Option<&str>) -> Result<ControlAccess, DaemonError> {
        let group = match group {
            None => None,
            Some(name) => match group_id(name) {
                Ok(Some(gid)) => Some((name.to_owned(), gid)),
                Ok(None) => {
                    return Err(DaemonError::Config(format!(
                        "urbd-options {resource}: control-group {name}: no such group"
                    )));
                }
                Err(e) => {
                    return Err(DaemonError::io(
                        format!("urbd-options {resource}: looking up control-group {name}"),
                        e,
                    ));
                }
            },
        };
        Ok(ControlAccess {
            group,
            owner: rustix::process::geteuid().as_raw(),
            resource: resource.to_owned(),
        })
    }

    /// Gives the bound socket file its mode: 0600, or 0660 with the control group.
    pub fn secure_socket(&self, path: &Path) -> io::Result<()> {
        match &self.group {
            None => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)),
            Some((_, gid)) => {
                std::os::unix::fs::chown(path, None, Some(*gid))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            }
        }
    }

    /// Whether the process at the other end of `stream` may drive the resource.
    pub fn check(&self, stream: &UnixStream) -> Result<(), Denied> {
        let cred = match peer_cred(stream) {
            Ok(c) => c,
            Err(e) => {
                return Err(Denied {
                    uid: u32::MAX,
                    message: format!("cannot read the client's credentials: {e}"),
                });
            }
        };
        if cred.uid == 0 || cred.uid == self.owner {
            return Ok(());
        }
        if let Some((name, gid)) = &self.group {
            if cred.gid == *gid {
                return Ok(());
            }
            match peer_groups(stream) {
                Ok(groups) if groups.contains(gid) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(uid = cred.uid, error = %e, "cannot read the client's groups")
                }
            }
            return Err(Denied {
                uid: cred.uid,
                message: format!(
                    "permission denied: uid {} is neither root nor in group {name} (control-group of resource {})",
                    cred.uid, self.resource
                ),
            });
        }
        Err(Denied {
            uid: cred.uid,
            message: format!(
                "permission denied: only root may drive resource {} (uid {}; urbd-options control-group lets a group in)",
                self.resource, cred.uid
            ),
        })
    }
}

fn peer_cred(s: &UnixStream) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the buffer is a live ucred of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}

fn peer_groups(s: &UnixStream) -> io::Result<Vec<libc::gid_t>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is a live array of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // ERANGE: `len` now says how much is needed.
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= MAX_PEER_GROUPS {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// The id of group `name`, `None` when there is no such group.
fn group_id(name: &str) -> io::Result<Option<u32>> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `group` is plain old data; all zeroes is a valid value.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is live for the call; `buf` is `buf.len()` bytes.
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok((!result.is_null()).then_some(grp.gr_gid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_group_resolves_and_nonsense_does_not() {
        assert_eq!(group_id("root").expect("lookup"), Some(0));
        assert_eq!(group_id("no-such-group-urbd-x").expect("lookup"), None);
        assert!(ControlAccess::new("r", Some("no-such-group-urbd-x")).is_err());
    }

    #[test]
    fn own_process_is_allowed_and_sees_its_groups() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let access = ControlAccess::new("r", None).expect("access");
        assert_eq!(access.check(&a), Ok(()));
        let cred = peer_cred(&a).expect("cred");
        assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
        // The supplementary groups of this process, as the kernel reports them.
        peer_groups(&a).expect("groups");
    }
}
