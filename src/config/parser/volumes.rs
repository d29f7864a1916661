//! Volume statements: `volume N { }`, `device`, `meta-disk`, and drbdadm's rules for
//! implicit volumes, inheritance into host sections and equal volume sets.

use std::path::PathBuf;

use super::{Parser, Result, internal};
use crate::config::error::{ConfigError, Location};
use crate::config::lexer::TokenKind;
use crate::config::limits::MAX_VOLUMES;
use crate::config::model::{Host, MetaDiskSpec, Volume};
use crate::config::options::Section;

/// Largest minor number (DRBD_MINOR_NUMBER_MAX).
const MINOR_MAX: u64 = (1 << 20) - 1;
/// Largest volume number (DRBD_VOLUME_MAX).
const VOLUME_MAX: u64 = 65535;

impl Parser<'_> {
    pub(super) fn parse_volume(&mut self, at: &Location) -> Result<Volume> {
        let (n, _) = self.integer("volume number", 0, VOLUME_MAX)?;
        let number = u32::try_from(n).map_err(|_| internal(at))?;
        let mut v = Volume::new(number, false, at.clone());
        self.punct('{')?;
        let ctx = format!("volume {number}");
        loop {
            let (kind, sat) = self.bump();
            match kind {
                TokenKind::Punct('}') => return Ok(v),
                TokenKind::Word(w) if w == "disk" => {
                    if self.is_punct('{') {
                        self.bump();
                        v.disk_options = self.parse_options(Section::Disk, &ctx)?;
                    } else {
                        let (p, _) = self.string("a disk path or '{'")?;
                        self.punct(';')?;
                        v.disk = Some(PathBuf::from(p));
                    }
                }
                TokenKind::Word(w) if w == "device" => self.parse_device(&mut v)?,
                TokenKind::Word(w) if w == "meta-disk" || w == "flexible-meta-disk" => {
                    v.meta_disk = Some(self.parse_meta_disk(w == "flexible-meta-disk")?);
                }
                other => {
                    return Err(ConfigError::Syntax {
                        at: sat,
                        expected: "device | disk | meta-disk | flexible-meta-disk | '}'".into(),
                        found: other.describe(),
                    });
                }
            }
        }
    }

    /// `device PATH;`, `device PATH minor N;`, `device minor N;`.
    ///
    /// DRBD's rules: a path must start with `/dev/drbd` (`drbd` alone gets `/dev/`
    /// prepended); without `minor` the path must be `/dev/drbd<digits>`; with both, a
    /// `/dev/drbd<digits>` path must agree with the minor, and `/dev/drbd_<name>` takes
    /// any minor. urbd extension (drbdadm-84 refuses it): `/dev/nbd<N>` is accepted too,
    /// its minor is N unless `minor M` says otherwise.
    pub(super) fn parse_device(&mut self, v: &mut Volume) -> Result<()> {
        if self.is_word("minor") {
            self.bump();
            let (m, _) = self.integer("minor", 0, MINOR_MAX)?;
            self.punct(';')?;
            v.minor = u32::try_from(m).ok();
            return Ok(());
        }
        let (raw, at) = self.string("a device path or 'minor'")?;
        let path = if raw.starts_with("drbd") {
            format!("/dev/{raw}")
        } else {
            raw
        };
        let digits_after = |prefix: &str| -> Option<u32> {
            let rest = path.strip_prefix(prefix)?;
            if !rest.is_empty() && rest.len() <= 7 && rest.bytes().all(|b| b.is_ascii_digit()) {
                rest.parse().ok()
            } else {
                None
            }
        };
        let is_nbd = path.starts_with("/dev/nbd");
        if !path.starts_with("/dev/drbd") && !is_nbd {
            return Err(ConfigError::InvalidValue {
                at,
                option: "device".into(),
                value: path,
                reason: "device name must start with /dev/drbd (urbd also accepts /dev/nbd<N>)"
                    .into(),
            });
        }
        let from_name = digits_after("/dev/drbd").or_else(|| digits_after("/dev/nbd"));
        if self.is_word("minor") {
            self.bump();
            let (m, mat) = self.integer("minor", 0, MINOR_MAX)?;
            self.punct(';')?;
            let m = u32::try_from(m).map_err(|_| internal(&mat))?;
            if !is_nbd {
                match from_name {
                    Some(n) if n != m => {
                        return Err(ConfigError::Invalid {
                            at: mat,
                            message: format!(
                                "explicit minor number must match with device name: \
                                 try \"device /dev/drbd{m} minor {m};\", or leave off either \
                                 device name or explicit minor"
                            ),
                        });
                    }
                    Some(_) => {}
                    None if path.starts_with("/dev/drbd_") => {}
                    None => {
                        return Err(ConfigError::Invalid {
                            at,
                            message:
                                "explicit device names should be of the form /dev/drbd<minor> \
                                      (or /dev/drbd_<name>)"
                                    .into(),
                        });
                    }
                }
            }
            v.minor = Some(m);
        } else {
            self.punct(';')?;
            match from_name {
                Some(n) if u64::from(n) <= MINOR_MAX => v.minor = Some(n),
                _ => {
                    return Err(ConfigError::Invalid {
                        at,
                        message: format!(
                            "device {path}: no minor given nor device name contains a minor number"
                        ),
                    });
                }
            }
        }
        v.device = Some(PathBuf::from(path));
        Ok(())
    }

    /// `meta-disk internal;`, `meta-disk PATH;`, `meta-disk PATH[N];`,
    /// `meta-disk PATH [N];`, `flexible-meta-disk PATH|internal;`.
    pub(super) fn parse_meta_disk(&mut self, flexible_keyword: bool) -> Result<MetaDiskSpec> {
        let (p, _) = self.string("internal or a meta-disk path")?;
        if p == "internal" {
            self.punct(';')?;
            return Ok(MetaDiskSpec::Internal);
        }
        let path = PathBuf::from(p);
        if flexible_keyword {
            self.punct(';')?;
            return Ok(MetaDiskSpec::Flexible { path });
        }
        if self.is_punct('[') {
            self.bump();
            let (i, iat) = self.integer("meta-disk index", 0, u64::from(u32::MAX))?;
            self.punct(']')?;
            self.punct(';')?;
            let index = u32::try_from(i).map_err(|_| internal(&iat))?;
            Ok(MetaDiskSpec::Indexed { path, index })
        } else if self.is_punct(';') {
            self.bump();
            Ok(MetaDiskSpec::Flexible { path })
        } else {
            Err(self.expected("'[' or ';'"))
        }
    }
}

/// drbdadm's `volume0()`: the implicit volume 0, created on first use; an error when
/// explicit volumes exist.
pub(super) fn vol0<'v>(volumes: &'v mut Vec<Volume>, at: &Location) -> Result<&'v mut Volume> {
    if volumes.is_empty() {
        volumes.push(Volume::new(0, true, at.clone()));
    }
    match volumes.as_mut_slice() {
        [v] if v.implicit => Ok(v),
        _ => Err(ConfigError::Invalid {
            at: at.clone(),
            message: "mixing explicit and implicit volumes is not allowed".into(),
        }),
    }
}

pub(super) fn insert_volume(volumes: &mut Vec<Volume>, v: Volume) -> Result<()> {
    if volumes.iter().any(|x| x.implicit) {
        return Err(ConfigError::Invalid {
            at: v.at,
            message: "mixing explicit and implicit volumes is not allowed".into(),
        });
    }
    if let Some(first) = volumes.iter().find(|x| x.number == v.number) {
        return Err(ConfigError::Duplicate {
            at: v.at.clone(),
            what: "volume".into(),
            name: v.number.to_string(),
            first: first.at.clone(),
        });
    }
    if volumes.len() >= MAX_VOLUMES {
        return Err(ConfigError::Limit {
            at: v.at,
            what: "volumes in one section",
            limit: MAX_VOLUMES as u64,
        });
    }
    let i = volumes
        .iter()
        .position(|x| x.number > v.number)
        .unwrap_or(volumes.len());
    volumes.insert(i, v);
    Ok(())
}

/// drbdadm's `inherit_volumes`: resource-level volume statements fill what the host
/// section left out (disk options are inherited later, in resolution).
pub(super) fn inherit_volumes(from: &[Volume], host: &mut Host) {
    for s in from {
        let i = match host.volumes.iter().position(|t| t.number == s.number) {
            Some(i) => i,
            None => {
                let mut t = Volume::new(s.number, s.implicit, s.at.clone());
                t.implicit = s.implicit;
                let i = host
                    .volumes
                    .iter()
                    .position(|x| x.number > s.number)
                    .unwrap_or(host.volumes.len());
                host.volumes.insert(i, t);
                i
            }
        };
        let Some(t) = host.volumes.get_mut(i) else {
            continue;
        };
        if t.disk.is_none() {
            t.disk.clone_from(&s.disk);
        }
        if t.device.is_none() {
            t.device.clone_from(&s.device);
        }
        if t.minor.is_none() {
            t.minor = s.minor;
        }
        if t.meta_disk.is_none() {
            t.meta_disk.clone_from(&s.meta_disk);
        }
    }
}

/// drbdadm's `check_volumes_hosts`: every host section has the same volumes, explicit or
/// implicit alike.
pub(super) fn check_volume_sets(res: &str, hosts: &[Host], end: &Location) -> Result<()> {
    let Some((first, rest)) = hosts.split_first() else {
        return Ok(());
    };
    for h in rest {
        let a: Vec<(u32, bool)> = first
            .volumes
            .iter()
            .map(|v| (v.number, v.implicit))
            .collect();
        let b: Vec<(u32, bool)> = h.volumes.iter().map(|v| (v.number, v.implicit)).collect();
        if a != b {
            let list = |v: &[(u32, bool)]| {
                v.iter()
                    .map(|(n, _)| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(ConfigError::Invalid {
                at: end.clone(),
                message: format!(
                    "in resource {res}: on {} has volumes [{}] but on {} has volumes [{}] \
                     (all host sections must define the same volumes, explicit or implicit alike)",
                    first.display_name(),
                    list(&a),
                    h.display_name(),
                    list(&b)
                ),
            });
        }
    }
    Ok(())
}
