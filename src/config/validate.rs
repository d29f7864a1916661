//! Checks across resources that drbdadm makes once everything is parsed: unique minors,
//! device names, external meta-disk slots and addresses per host, and references
//! between resources (`resync-after`, `become-primary-on`).
//!
//! Uniqueness keys are drbdadm's (`check_uniq` in `drbdadm_parser.c`): minors, devices
//! and meta-disk slots are unique per host name; an `ip:port` is unique per host name when
//! the IP is a loopback address (two resources of a loopback pair may not share a port
//! on one node name) and unique across the whole configuration otherwise (no two host
//! sections anywhere may use the same non-loopback `ip:port`).

use std::collections::HashMap;
use std::net::IpAddr;

use super::error::{ConfigError, Location};
use super::model::{Host, HostKind, MetaDiskSpec, Resource, Sections};

struct Uniq {
    seen: HashMap<(String, String), Location>,
}

impl Uniq {
    fn check(&mut self, what: &str, key: String, at: &Location) -> Result<(), ConfigError> {
        match self.seen.get(&(what.to_string(), key.clone())) {
            Some(first) => Err(ConfigError::Duplicate {
                at: at.clone(),
                what: what.to_string(),
                name: key,
                first: first.clone(),
            }),
            None => {
                self.seen.insert((what.to_string(), key), at.clone());
                Ok(())
            }
        }
    }
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<IpAddr>()
        .map(|a| a.is_loopback())
        .unwrap_or(false)
}

/// Runs all cross-resource checks over the resources in file order.
pub(crate) fn validate(
    resources: &[Resource],
    common: Option<&Sections>,
) -> Result<(), ConfigError> {
    let mut u = Uniq {
        seen: HashMap::new(),
    };
    for r in resources {
        for h in &r.hosts {
            check_host(&mut u, h)?;
        }
    }
    for r in resources {
        check_references(r, resources, common)?;
    }
    Ok(())
}

fn check_host(u: &mut Uniq, h: &Host) -> Result<(), ConfigError> {
    let names = h.names();
    for v in &h.volumes {
        for n in &names {
            if let Some(m) = v.minor {
                u.check("minor", format!("{n}:{m}"), &v.at)?;
            }
            if let Some(d) = &v.device {
                u.check("device", format!("{n}:{}", d.display()), &v.at)?;
            }
            match &v.meta_disk {
                Some(MetaDiskSpec::Indexed { path, index }) => {
                    u.check(
                        "meta-disk",
                        format!("{n}:{}[{index}]", path.display()),
                        &v.at,
                    )?;
                }
                Some(MetaDiskSpec::Flexible { path }) => {
                    u.check(
                        "meta-disk",
                        format!("{n}:{}[flexible]", path.display()),
                        &v.at,
                    )?;
                }
                Some(MetaDiskSpec::Internal) | None => {}
            }
        }
    }
    if let Some(a) = &h.address {
        let ip = format!("{}:{}", a.host, a.port);
        if matches!(h.kind, HostKind::On(_)) && is_loopback(&a.host) {
            for n in &names {
                u.check("address", format!("{n}:{ip}"), &h.at)?;
            }
        } else {
            u.check("address", ip, &h.at)?;
        }
    }
    Ok(())
}

fn check_references(
    r: &Resource,
    all: &[Resource],
    common: Option<&Sections>,
) -> Result<(), ConfigError> {
    let disk = r
        .sections
        .disk
        .iter()
        .chain(common.into_iter().flat_map(|c| c.disk.iter()));
    for e in disk.filter(|e| e.name == "resync-after") {
        let target = e.value.as_deref().unwrap_or("");
        let name = target.split('/').next().unwrap_or(target);
        if !all.iter().any(|o| o.name == name) {
            return Err(ConfigError::Invalid {
                at: r.at.clone(),
                message: format!(
                    "in resource {}: resource '{target}' mentioned in 'resync-after' option is not known",
                    r.name
                ),
            });
        }
    }
    let bpo = if r.sections.become_primary_on.is_empty() {
        common
            .map(|c| c.become_primary_on.as_slice())
            .unwrap_or_default()
    } else {
        r.sections.become_primary_on.as_slice()
    };
    let hosts: Vec<String> = r.hosts.iter().flat_map(Host::names).collect();
    for b in bpo {
        if b == "both" {
            let two = r.sections.net.contains("allow-two-primaries")
                || common.is_some_and(|c| c.net.contains("allow-two-primaries"));
            if !two {
                return Err(ConfigError::Invalid {
                    at: r.at.clone(),
                    message: format!(
                        "in resource {}: become-primary-on is set to both, but allow-two-primaries is not set",
                        r.name
                    ),
                });
            }
        } else if !hosts.contains(b) {
            return Err(ConfigError::Invalid {
                at: r.at.clone(),
                message: format!(
                    "in resource {}: become-primary-on contains '{b}', which is not named with the 'on' sections ({})",
                    r.name,
                    hosts.join(", ")
                ),
            });
        }
    }
    Ok(())
}
