//! The parsed configuration, as drbdadm holds it after parsing and before resolving it for
//! one node: `global`, `common`, and resources with their host sections.
//!
//! Resource-level `device`/`disk`/`meta-disk` statements and `volume` blocks are copied
//! into each host section while parsing, at the end of that host section (so only those
//! written before the `on` block count), exactly as drbdadm's `inherit_volumes` does.
//! Option inheritance (`common` into resources, resource `disk` options into volumes)
//! happens later, in [`super::resolve`].

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::error::Location;
use super::options::Options;
use super::urbd::UrbdOptions;

/// `usage-count` in the global section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UsageCount {
    /// `yes`
    Yes,
    /// `no`
    No,
    /// `ask` (drbdadm's default).
    Ask,
}

/// The `global { }` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Global {
    /// `usage-count`, if given.
    pub usage_count: Option<UsageCount>,
    /// `minor-count N` (1..=255).
    pub minor_count: Option<u32>,
    /// `dialog-refresh N` (0..=600 seconds).
    pub dialog_refresh: Option<u32>,
    /// `disable-ip-verification;`
    pub disable_ip_verification: bool,
    /// `udev-always-use-vnr;`
    pub udev_always_use_vnr: bool,
    /// `cmd-timeout-short N` (0..=900 seconds).
    pub cmd_timeout_short: Option<u32>,
    /// `cmd-timeout-medium N` (0..=900 seconds).
    pub cmd_timeout_medium: Option<u32>,
    /// `cmd-timeout-long N` (0..=900 seconds).
    pub cmd_timeout_long: Option<u32>,
}

/// The option sections of `common` or of a resource, normalized: 8.3 `syncer` options
/// distributed into `disk`/`net`/`options`, aliases renamed, `no-x` flags as `x no`,
/// resource-level `protocol` as a `net` option.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sections {
    /// `options { }`
    pub options: Options,
    /// `net { }` (plus `protocol` and syncer's net options)
    pub net: Options,
    /// `disk { }` (plus syncer's disk options)
    pub disk: Options,
    /// `startup { }` without `stacked-timeouts` and `become-primary-on`.
    pub startup: Options,
    /// `handlers { }`
    pub handlers: Options,
    /// `stacked-timeouts;` in `startup`.
    pub stacked_timeouts: bool,
    /// `become-primary-on NAME...;` in `startup`.
    pub become_primary_on: Vec<String>,
}

/// Address family of an `address` statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AddressFamily {
    /// `ipv4` (the default when no family is written).
    Ipv4,
    /// `ipv6`, written `address ipv6 [ADDR]:PORT;`
    Ipv6,
}

/// `address [ipv4|ipv6] HOST:PORT`. Displays the way drbdadm dumps it:
/// `ipv4 10.0.0.1:7788` or `ipv6 [fd00::1]:7788`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Address {
    /// The family.
    pub family: AddressFamily,
    /// The IP address as written (without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            AddressFamily::Ipv4 => write!(f, "ipv4 {}:{}", self.host, self.port),
            AddressFamily::Ipv6 => write!(f, "ipv6 [{}]:{}", self.host, self.port),
        }
    }
}

/// Replication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Protocol {
    /// Asynchronous: a write completes when it is on the local disk and sent.
    A,
    /// Memory synchronous: ... and the peer received it.
    B,
    /// Synchronous: ... and the peer wrote it. DRBD's default.
    #[default]
    C,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::A => "A",
            Protocol::B => "B",
            Protocol::C => "C",
        })
    }
}

/// Where the DRBD metadata of a volume lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MetaDiskSpec {
    /// `meta-disk internal;`: at the end of the data disk.
    Internal,
    /// `meta-disk PATH[i];`: the i-th 128 MiB slot of an external device.
    Indexed {
        /// The external meta-disk.
        path: PathBuf,
        /// The slot.
        index: u32,
    },
    /// `meta-disk PATH;` or `flexible-meta-disk PATH;`: the whole external device.
    Flexible {
        /// The external meta-disk.
        path: PathBuf,
    },
}

/// A volume as written (in a host section after inheritance, or at resource level).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// The volume number (0 for the implicit volume).
    pub number: u32,
    /// Written without a `volume N { }` block.
    pub implicit: bool,
    /// `device PATH`, if a path was given (or inherited).
    pub device: Option<PathBuf>,
    /// The minor, given or derived from `/dev/drbdN` (or `/dev/nbdN`).
    pub minor: Option<u32>,
    /// `disk PATH`.
    pub disk: Option<PathBuf>,
    /// `meta-disk ...`.
    pub meta_disk: Option<MetaDiskSpec>,
    /// `disk { }` inside the volume.
    pub disk_options: Options,
    /// Where the volume (or its first statement) is.
    pub at: Location,
}

impl Volume {
    pub(crate) fn new(number: u32, implicit: bool, at: Location) -> Volume {
        Volume {
            number,
            implicit,
            device: None,
            minor: None,
            disk: None,
            meta_disk: None,
            disk_options: Options::new(),
            at,
        }
    }
}

/// How a host section is selected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HostKind {
    /// `on NAME [NAME...] { }`: selected by node name.
    On(Vec<String>),
    /// `floating [ipv4|ipv6] ADDR:PORT { }`: selected by owning the address; its name is
    /// `ADDR:PORT` (or `ipv6 [ADDR]:PORT`), as drbdadm names it.
    Floating,
}

/// One host section of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// `on` or `floating`.
    pub kind: HostKind,
    /// The replication address (for `floating`, the section's own address).
    pub address: Option<Address>,
    /// Volumes, sorted by number, with resource-level volume statements inherited.
    pub volumes: Vec<Volume>,
    /// `options { }` inside the host section (kept and dumped, not merged).
    pub options: Options,
    /// Where the section starts.
    pub at: Location,
}

impl Host {
    /// The names this section answers to: the `on` names, or the floating address.
    pub fn names(&self) -> Vec<String> {
        match &self.kind {
            HostKind::On(names) => names.clone(),
            HostKind::Floating => vec![self.floating_name()],
        }
    }

    /// The section's names as drbdadm prints them in messages (`a b`).
    pub fn display_name(&self) -> String {
        self.names().join(" ")
    }

    fn floating_name(&self) -> String {
        match &self.address {
            Some(a) if a.family == AddressFamily::Ipv6 => format!("ipv6 [{}]:{}", a.host, a.port),
            Some(a) => format!("{}:{}", a.host, a.port),
            None => String::new(),
        }
    }

    /// Whether this section is the one for `node`.
    pub fn matches(&self, node: &str) -> bool {
        match &self.kind {
            HostKind::On(names) => names.iter().any(|n| n == node),
            // drbdadm picks a floating section when the host owns its IP; the node name
            // may name it by address (drbdadm's __DRBD_NODE__ debugging rule).
            HostKind::Floating => {
                self.address.as_ref().is_some_and(|a| a.host == node)
                    || self.floating_name() == node
            }
        }
    }
}

/// `common { }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Common {
    /// Its option sections.
    pub sections: Sections,
    /// Where it starts.
    pub at: Location,
}

/// One `resource NAME { }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub(crate) name: String,
    /// Where it is defined (the file and line of its opening brace, as drbdadm reports).
    pub at: Location,
    /// The canonical path of the file that defines it (`# defined at` in dumps).
    pub file: PathBuf,
    /// Its own option sections (without `common`).
    pub sections: Sections,
    /// Resource-level volume statements (already copied into the host sections).
    pub volumes: Vec<Volume>,
    /// Host sections in file order.
    pub hosts: Vec<Host>,
    /// The configuration's `common` sections, copied in at load time so that the
    /// resource can be resolved on its own.
    #[serde(skip)]
    pub(crate) common: Option<Sections>,
    /// Its `urbd-options` section (in urbd's own top file), attached at load time.
    pub(crate) urbd: Option<UrbdOptions>,
}
