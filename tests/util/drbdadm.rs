//! drbd-utils' `drbdadm-84` as the configuration oracle: it prints DRBD's own normalized
//! view of a file when the host name is one of the `on` hosts, which a private UTS namespace
//! (`unshare -u`) lets a test set.

use std::path::Path;
use std::process::{Command, Output};

/// drbd-utils' 8.4 front end.
pub const DRBDADM: &str = "/lib/drbd/drbdadm-84";

/// Why drbdadm-84 cannot run here under `unshare -u`, if it cannot.
pub fn oracle_unavailable() -> Option<String> {
    if !Path::new(DRBDADM).exists() {
        return Some(format!(
            "{DRBDADM} not installed (apt-get install drbd-utils)"
        ));
    }
    match Command::new("unshare").args(["-u", "true"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "unshare -u fails: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("unshare not runnable: {e}")),
    }
}

/// `drbdadm-84 -d -c FILE dump all` with the host name set to `host` (`-d` skips drbdadm's
/// check that the address is configured on this machine).
pub fn dump_as(file: &Path, host: &str) -> Output {
    let script = format!("hostname \"$1\" && exec {DRBDADM} -d -c \"$2\" dump all");
    Command::new("unshare")
        .args(["-u", "sh", "-c", &script, "sh", host])
        .arg(file)
        .env("DRBD_DONT_WARN_ON_VERSION_MISMATCH", "1")
        .output()
        .expect("run unshare")
}
