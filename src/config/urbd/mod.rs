//! urbd-only settings: the top-level section `urbd-options NAME { ... }`.
//!
//! drbd-utils' drbdadm refuses any keyword it does not know, anywhere in a file it reads,
//! so settings only urbd understands cannot live in `drbd.conf` or a `.res` file. They
//! live in urbd's own top file, `/etc/urbd.conf`, which urbdadm reads first and which
//! includes `/etc/drbd.conf`; drbdadm never opens it.
//!
//! The section names a resource defined in some file of the configuration (checked once
//! every file is read, so the section may come before or after the include that defines
//! the resource), at most one section per resource. Its settings apply to the resource on
//! every node and reach the daemon through [`super::NodeView`].
//!
//! Options (each at most once):
//! - `nbd-listen [ipv4|ipv6] ADDR:PORT;`: also serve the resource's NBD export on this
//!   TCP address (default: the unix socket only). The address is written like DRBD's
//!   `address`: `0.0.0.0:10809`, `ipv4 10.0.0.1:10809`, `ipv6 [::1]:10809`. IPv6 zone
//!   indexes (`fe80::1%eth0`) are refused: a listen address does not need one.
//! - `tls-cert PATH; tls-key PATH; tls-ca PATH;` (all three or none): the replication link
//!   runs over TLS 1.3 with mutual authentication: this node presents the certificate chain
//!   in `tls-cert` (PEM) with the private key in `tls-key` (PEM), and accepts a peer only
//!   if its certificate chains to a certificate in `tls-ca` (PEM) and names the peer's host
//!   name (a subjectAltName DNS entry equal to the peer's `on` section name). The paths
//!   are the same on every node (each machine holds its own files there).
//! - `nbd-tls off|on|require;` with `nbd-tls-cert PATH; nbd-tls-key PATH;` and optionally
//!   `nbd-tls-ca PATH;`: TLS on the NBD export's TCP address (`nbd-listen`, which it needs;
//!   the unix socket is local and stays in clear). `on`: a client may upgrade with
//!   `NBD_OPT_STARTTLS`; `require`: it must, every other option is refused until it has
//!   (nbdkit's `--tls=on` / `--tls=require`). The server presents `nbd-tls-cert` (PEM
//!   chain, leaf first) with `nbd-tls-key`; with `nbd-tls-ca`, clients must present a
//!   certificate that chains to it. `off` (the default) takes no files; files without
//!   `on`/`require` are refused, so a half-written setting never silently runs in clear.
//! - `control-group NAME;`: members of this group may drive the resource's control socket
//!   besides root (the socket becomes 0660 with that group; default 0600, root only).
//! - `metrics-listen [ipv4|ipv6] ADDR:PORT;`: serve Prometheus metrics (`GET /metrics`:
//!   the /proc/drbd counters, resync progress, ack-latency histogram) on this TCP address
//!   (default: none; a loopback address such as `127.0.0.1:9942` keeps them on the host).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

use super::error::{ConfigError, Location};
use super::model::{Address, AddressFamily, Resource};

/// The section keyword.
pub(crate) const KEYWORD: &str = "urbd-options";

/// The option names the section accepts, for messages.
pub(crate) const OPTION_NAMES: &[&str] = &[
    "nbd-listen",
    "tls-cert",
    "tls-key",
    "tls-ca",
    "nbd-tls",
    "nbd-tls-cert",
    "nbd-tls-key",
    "nbd-tls-ca",
    "control-group",
    "metrics-listen",
];

/// One `urbd-options NAME { ... }` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrbdOptions {
    /// The resource it configures.
    pub resource: String,
    /// Where the resource name is written in the section's head.
    pub at: Location,
    /// `nbd-listen`: the TCP address to serve the NBD export on, besides the unix socket.
    pub nbd_listen: Option<SocketAddr>,
    /// `tls-cert`, `tls-key`, `tls-ca`: TLS for the replication link (all three or none,
    /// checked by the parser).
    pub tls: Option<TlsFiles>,
    /// `nbd-tls`, `nbd-tls-cert`, `nbd-tls-key`, `nbd-tls-ca`: TLS on the NBD export's
    /// TCP address (`None`: `nbd-tls off`, checked by the parser).
    pub nbd_tls: Option<NbdTls>,
    /// `control-group`: the group that may drive the control socket besides root.
    pub control_group: Option<String>,
    /// `metrics-listen`: where to serve Prometheus metrics.
    pub metrics_listen: Option<SocketAddr>,
}

/// Whether a TCP client of the NBD export may, or must, upgrade to TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NbdTlsMode {
    /// `nbd-tls on`: TLS is offered; clients may stay in clear.
    On,
    /// `nbd-tls require`: every option but STARTTLS and ABORT is refused before TLS.
    Require,
}

impl NbdTlsMode {
    /// The word written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            NbdTlsMode::On => "on",
            NbdTlsMode::Require => "require",
        }
    }
}

/// TLS of the NBD export: the mode and the server's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NbdTls {
    /// `on` or `require`.
    pub mode: NbdTlsMode,
    /// `nbd-tls-cert`: the server's certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// `nbd-tls-key`: the leaf's private key (PEM).
    pub key: PathBuf,
    /// `nbd-tls-ca`: when set, clients must present a certificate chaining to it.
    pub ca: Option<PathBuf>,
}

/// The PEM files of a node's TLS identity and of the authority it trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsFiles {
    /// This node's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The certificates a peer's chain must end at.
    pub ca: PathBuf,
}

impl UrbdOptions {
    pub(crate) fn new(resource: String, at: Location) -> UrbdOptions {
        UrbdOptions {
            resource,
            at,
            nbd_listen: None,
            tls: None,
            nbd_tls: None,
            control_group: None,
            metrics_listen: None,
        }
    }
}

/// The socket address of a parsed `[ipv4|ipv6] ADDR:PORT` value written at `at`, for the
/// option `option`. The lexer's address patterns are wider than real addresses
/// (`999.1.1.1`, zone names), so the text is parsed again here.
pub(crate) fn socket_addr(
    a: &Address,
    option: &str,
    at: &Location,
) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidValue {
        at: at.clone(),
        option: option.to_string(),
        value: a.to_string(),
        reason: reason.to_string(),
    };
    let ip: IpAddr = match a.family {
        AddressFamily::Ipv4 => a
            .host
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| invalid("not an IPv4 address"))?
            .into(),
        AddressFamily::Ipv6 if a.host.contains('%') => {
            return Err(invalid("IPv6 zone indexes (%...) are not supported here"));
        }
        AddressFamily::Ipv6 => a
            .host
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| invalid("not an IPv6 address"))?
            .into(),
    };
    Ok(SocketAddr::new(ip, a.port))
}

/// `ipv4 ADDR:PORT` or `ipv6 [ADDR]:PORT`, the way dumps print DRBD addresses.
pub(crate) fn address_text(sa: &SocketAddr) -> String {
    match sa {
        SocketAddr::V4(v4) => format!("ipv4 {}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => format!("ipv6 [{}]:{}", v6.ip(), v6.port()),
    }
}

/// Gives every section to the resource it names. Runs once all files are read.
///
/// Errors: a section naming a resource that no file defines
/// ([`ConfigError::UnknownResource`], at the name in the section's head).
pub(crate) fn attach(
    resources: &mut [Resource],
    sections: Vec<UrbdOptions>,
) -> Result<(), ConfigError> {
    for u in sections {
        let Some(r) = resources.iter_mut().find(|r| r.name == u.resource) else {
            return Err(ConfigError::UnknownResource {
                at: u.at,
                section: KEYWORD,
                name: u.resource,
            });
        };
        // The loader refuses a second section for one resource; this only holds it.
        debug_assert!(r.urbd.is_none(), "duplicate urbd-options passed the loader");
        r.urbd = Some(u);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
