//! The per-node view of a resource: which host section is "me", who the peer is, and the
//! effective options after inheritance.
//!
//! Inheritance is drbdadm's `expand_common`, step for step, so that the options and
//! their order equal what `drbdadm -d dump` prints:
//! 1. each `common` section into the resource's section of the same name: options the
//!    resource does not set are put in front, one at a time (so in reverse order);
//!    `stacked-timeouts` and `become-primary-on` are taken from `common` when the
//!    resource has none, and are listed last in `startup`;
//! 2. the resource's (now inherited) `disk` options into every volume of every host
//!    section, the same way;
//! 3. then the `disk { }` options of resource-level `volume N { }` blocks into the host
//!    volumes with the same number (so resource-level `disk` options win over them, a
//!    drbdadm quirk kept on purpose).
//!
//! A volume without a device path gets `/dev/drbd<minor>`, as drbdadm's expansion does.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::error::ConfigError;
use super::model::{Address, Host, MetaDiskSpec, Protocol, Resource, Sections, Volume};
use super::options::Options;
use super::urbd::UrbdOptions;

/// The other host of a two-host resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerView {
    /// Its section's names, joined with a space (`on a b` gives `a b`).
    pub name: String,
    /// Its replication address.
    pub address: Address,
}

/// One volume as this node runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeView {
    /// Volume number (0 for the implicit volume).
    pub volume: u32,
    /// The device node: as written, or `/dev/drbd<minor>` when only a minor was given.
    /// Always `Some` after resolution.
    pub device_path: Option<PathBuf>,
    /// The minor number.
    pub minor: u32,
    /// The backing disk.
    pub disk: PathBuf,
    /// Where the metadata lives.
    pub meta_disk: MetaDiskSpec,
    /// Effective disk options of this volume (resource and common ones inherited).
    pub disk_opts: Options,
}

/// A resource resolved for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// Resource name.
    pub resource: String,
    /// This node's name (the one asked for).
    pub node: String,
    /// The peer, when the resource has exactly two host sections.
    pub peer: Option<PeerView>,
    /// This node's replication address.
    pub address: Address,
    /// Effective protocol (default C).
    pub protocol: Protocol,
    /// This node's volumes, by number.
    pub volumes: Vec<VolumeView>,
    /// Effective `net` options.
    pub net: Options,
    /// Effective resource-level `disk` options.
    pub disk: Options,
    /// Effective `startup` options, `stacked-timeouts`/`become-primary-on` last.
    pub startup: Options,
    /// Effective `options` (resource options).
    pub options: Options,
    /// Effective `handlers`.
    pub handlers: Options,
    /// `nbd-listen` of the resource's `urbd-options` section: also serve the NBD export
    /// on this TCP address. `None` when not set (the unix socket only).
    pub nbd_listen: Option<SocketAddr>,
    /// `tls-cert`/`tls-key`/`tls-ca` of the `urbd-options` section: the replication link
    /// runs over TLS with these files. `None`: in clear.
    pub tls: Option<crate::config::urbd::TlsFiles>,
    /// `nbd-tls*` of the `urbd-options` section: TLS on the NBD export's TCP address.
    /// `None`: `nbd-tls off`.
    pub nbd_tls: Option<crate::config::urbd::NbdTls>,
    /// `control-group` of the `urbd-options` section.
    pub control_group: Option<String>,
    /// `metrics-listen` of the `urbd-options` section: serve Prometheus metrics there.
    pub metrics_listen: Option<SocketAddr>,
}

/// The resource's sections with `common` inherited (step 1).
pub(crate) fn effective_sections(own: &Sections, common: Option<&Sections>) -> Sections {
    let mut s = own.clone();
    if let Some(c) = common {
        s.net.inherit(&c.net);
        s.disk.inherit(&c.disk);
        s.startup.inherit(&c.startup);
        s.handlers.inherit(&c.handlers);
        s.options.inherit(&c.options);
        s.stacked_timeouts |= c.stacked_timeouts;
        if s.become_primary_on.is_empty() {
            s.become_primary_on.clone_from(&c.become_primary_on);
        }
    }
    s
}

/// `startup` as drbdadm prints it: options, then the two statements.
pub(crate) fn startup_with_statements(s: &Sections) -> Options {
    let mut o = s.startup.clone();
    if s.stacked_timeouts {
        o.push("stacked-timeouts", None);
    }
    if !s.become_primary_on.is_empty() {
        o.push("become-primary-on", Some(s.become_primary_on.join(" ")));
    }
    o
}

/// A host volume's effective disk options (steps 2 and 3).
pub(crate) fn volume_disk_options(res: &Resource, effective_disk: &Options, v: &Volume) -> Options {
    let mut o = v.disk_options.clone();
    o.inherit(effective_disk);
    if let Some(rv) = res
        .volumes
        .iter()
        .find(|r| r.number == v.number && !r.implicit)
    {
        o.inherit(&rv.disk_options);
    }
    o
}

/// The device path of a volume after drbdadm's expansion.
pub(crate) fn device_path(v: &Volume) -> Option<PathBuf> {
    v.device
        .clone()
        .or_else(|| v.minor.map(|m| PathBuf::from(format!("/dev/drbd{m}"))))
}

impl Resource {
    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `urbd-options` section, if the configuration has one for it.
    pub fn urbd_options(&self) -> Option<&UrbdOptions> {
        self.urbd.as_ref()
    }

    /// The names of all host sections, in file order (`on a b` contributes `a` and `b`;
    /// a floating section contributes its address).
    pub fn host_names(&self) -> Vec<String> {
        self.hosts.iter().flat_map(Host::names).collect()
    }

    /// The host section for `node`, if exactly one matches.
    pub fn host_for(&self, node: &str) -> Option<&Host> {
        let mut it = self.hosts.iter().filter(|h| h.matches(node));
        let first = it.next()?;
        if it.next().is_some() {
            None
        } else {
            Some(first)
        }
    }

    /// The fully inherited view of this resource as seen from `node`.
    ///
    /// Errors: no host section for `node` ([`ConfigError::NoHostSection`], listing the
    /// hosts), several sections for it, or fewer than two host sections
    /// ([`ConfigError::NeedTwoHosts`]: a node needs its peer).
    pub fn for_node(&self, node: &str) -> Result<NodeView, ConfigError> {
        let mine: Vec<&Host> = self.hosts.iter().filter(|h| h.matches(node)).collect();
        let me = match mine.as_slice() {
            [] => {
                return Err(ConfigError::NoHostSection {
                    at: self.at.clone(),
                    resource: self.name.clone(),
                    node: node.to_string(),
                    hosts: self.host_names(),
                });
            }
            [one] => *one,
            _ => {
                return Err(ConfigError::AmbiguousHost {
                    at: self.at.clone(),
                    resource: self.name.clone(),
                    node: node.to_string(),
                });
            }
        };
        if self.hosts.len() < 2 {
            return Err(ConfigError::NeedTwoHosts {
                at: self.at.clone(),
                resource: self.name.clone(),
                hosts: self.host_names(),
            });
        }
        let peer = match self.hosts.as_slice() {
            [a, b] => {
                let other = if std::ptr::eq(a, me) { b } else { a };
                other.address.clone().map(|address| PeerView {
                    name: other.display_name(),
                    address,
                })
            }
            _ => None,
        };
        let s = effective_sections(&self.sections, self.common.as_ref());
        let invalid = |what: &str| ConfigError::Missing {
            at: me.at.clone(),
            resource: self.name.clone(),
            host: me.display_name(),
            keyword: match what {
                "address" => "address",
                "disk" => "disk",
                "meta-disk" => "meta-disk",
                _ => "device",
            },
        };
        let address = me.address.clone().ok_or_else(|| invalid("address"))?;
        let mut volumes = Vec::with_capacity(me.volumes.len());
        for v in &me.volumes {
            volumes.push(VolumeView {
                volume: v.number,
                device_path: device_path(v),
                minor: v.minor.ok_or_else(|| invalid("device"))?,
                disk: v.disk.clone().ok_or_else(|| invalid("disk"))?,
                meta_disk: v.meta_disk.clone().ok_or_else(|| invalid("meta-disk"))?,
                disk_opts: volume_disk_options(self, &s.disk, v),
            });
        }
        let protocol = match s.net.get("protocol") {
            Some("A") => Protocol::A,
            Some("B") => Protocol::B,
            _ => Protocol::C,
        };
        Ok(NodeView {
            resource: self.name.clone(),
            node: node.to_string(),
            peer,
            address,
            protocol,
            volumes,
            startup: startup_with_statements(&s),
            net: s.net,
            disk: s.disk,
            options: s.options,
            handlers: s.handlers,
            nbd_listen: self.urbd.as_ref().and_then(|u| u.nbd_listen),
            tls: self.urbd.as_ref().and_then(|u| u.tls.clone()),
            nbd_tls: self.urbd.as_ref().and_then(|u| u.nbd_tls.clone()),
            control_group: self.urbd.as_ref().and_then(|u| u.control_group.clone()),
            metrics_listen: self.urbd.as_ref().and_then(|u| u.metrics_listen),
        })
    }
}
