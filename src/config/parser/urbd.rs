//! `urbd-options NAME { ... }`, urbd's own top-level section (see [`crate::config::urbd`]).
//! drbdadm has no such section; this is the only place that parses it.

use super::{Parser, Result};
use crate::config::error::{ConfigError, Location};
use crate::config::lexer::TokenKind;
use crate::config::urbd::{
    KEYWORD, NbdTls, NbdTlsMode, OPTION_NAMES, TlsFiles, UrbdOptions, socket_addr,
};

impl Parser<'_> {
    /// The rest of the section after its keyword: the resource name, then the options up
    /// to the closing brace. Whether the resource exists is checked after all files.
    pub(super) fn parse_urbd_options(&mut self) -> Result<UrbdOptions> {
        let (name, name_at) = self.string("a resource name")?;
        self.punct('{')?;
        let ctx = format!(
            "{KEYWORD} section of resource {name} (urbd options: {})",
            OPTION_NAMES.join(", ")
        );
        let mut u = UrbdOptions::new(name, name_at);
        // Where each option was first written, to refuse a second one.
        let mut seen: Vec<(&'static str, Location)> = Vec::new();
        let mut tls: [Option<(std::path::PathBuf, Location)>; 3] = [None, None, None];
        let mut nbd = NbdTlsParts::default();
        loop {
            let (kind, at) = self.bump();
            let w = match kind {
                TokenKind::Punct('}') => {
                    u.tls = tls_files(&u.resource, tls, &at)?;
                    u.nbd_tls = nbd.finish(&u.resource, u.nbd_listen.is_some(), &at)?;
                    return Ok(u);
                }
                TokenKind::Word(w) => w,
                other => {
                    return Err(ConfigError::Syntax {
                        at,
                        expected: format!("an option of the {KEYWORD} section or '}}'"),
                        found: other.describe(),
                    });
                }
            };
            let Some(&name) = OPTION_NAMES.iter().find(|n| **n == w) else {
                return Err(ConfigError::Unknown {
                    at,
                    what: "option",
                    word: w,
                    section: ctx,
                });
            };
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                return Err(ConfigError::Duplicate {
                    at,
                    what: "option".into(),
                    name: format!("{}: {name}", u.resource),
                    first: first.clone(),
                });
            }
            seen.push((name, at.clone()));
            match name {
                "nbd-listen" | "metrics-listen" => {
                    let value_at = self.here();
                    let addr = self.parse_address_value()?;
                    self.punct(';')?;
                    let sa = Some(socket_addr(&addr, name, &value_at)?);
                    if name == "nbd-listen" {
                        u.nbd_listen = sa;
                    } else {
                        u.metrics_listen = sa;
                    }
                }
                "tls-cert" | "tls-key" | "tls-ca" => {
                    let (path, value_at) = self.string("a file name")?;
                    self.punct(';')?;
                    if path.is_empty() {
                        return Err(ConfigError::InvalidValue {
                            at: value_at,
                            option: name.to_string(),
                            value: path,
                            reason: "a file name is needed".into(),
                        });
                    }
                    let slot = match name {
                        "tls-cert" => 0,
                        "tls-key" => 1,
                        _ => 2,
                    };
                    tls[slot] = Some((path.into(), at));
                }
                "nbd-tls" => {
                    // `on` is a keyword of the language, so the value is read as any word.
                    let (kind, value_at) = self.bump();
                    let word = match kind {
                        TokenKind::Word(w) | TokenKind::Quoted(w) => w,
                        other => {
                            return Err(ConfigError::Syntax {
                                at: value_at,
                                expected: "off, on or require".into(),
                                found: other.describe(),
                            });
                        }
                    };
                    self.punct(';')?;
                    nbd.mode = match word.as_str() {
                        "off" => None,
                        "on" => Some(NbdTlsMode::On),
                        "require" => Some(NbdTlsMode::Require),
                        _ => {
                            return Err(ConfigError::InvalidValue {
                                at: value_at,
                                option: name.to_string(),
                                value: word,
                                reason: "expected off, on or require".into(),
                            });
                        }
                    };
                    nbd.mode_at = Some(at);
                }
                "nbd-tls-cert" | "nbd-tls-key" | "nbd-tls-ca" => {
                    let (path, value_at) = self.string("a file name")?;
                    self.punct(';')?;
                    if path.is_empty() {
                        return Err(ConfigError::InvalidValue {
                            at: value_at,
                            option: name.to_string(),
                            value: path,
                            reason: "a file name is needed".into(),
                        });
                    }
                    let slot = match name {
                        "nbd-tls-cert" => &mut nbd.cert,
                        "nbd-tls-key" => &mut nbd.key,
                        _ => &mut nbd.ca,
                    };
                    *slot = Some((path.into(), at));
                }
                "control-group" => {
                    let (group, value_at) = self.string("a group name")?;
                    self.punct(';')?;
                    if !is_group_name(&group) {
                        return Err(ConfigError::InvalidValue {
                            at: value_at,
                            option: name.to_string(),
                            value: group,
                            reason: "not a group name (letters, digits, '_', '-', '.'; not starting with '-')".into(),
                        });
                    }
                    u.control_group = Some(group);
                }
                _ => unreachable!("every name of OPTION_NAMES has an arm"),
            }
        }
    }
}

/// The TLS files of a section: all three of `tls-cert`, `tls-key`, `tls-ca`, or none (a
/// half-configured TLS must not silently run in clear).
fn tls_files(
    resource: &str,
    [cert, key, ca]: [Option<(std::path::PathBuf, Location)>; 3],
    close: &Location,
) -> Result<Option<TlsFiles>> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some((cert, _)), Some((key, _)), Some((ca, _))) => Ok(Some(TlsFiles { cert, key, ca })),
        (cert, key, ca) => {
            let at = [&cert, &key, &ca]
                .into_iter()
                .flatten()
                .map(|(_, at)| at.clone())
                .next()
                .unwrap_or_else(|| close.clone());
            let missing: Vec<&str> = [("tls-cert", &cert), ("tls-key", &key), ("tls-ca", &ca)]
                .into_iter()
                .filter(|(_, v)| v.is_none())
                .map(|(n, _)| n)
                .collect();
            Err(ConfigError::Invalid {
                at,
                message: format!(
                    "{KEYWORD} {resource}: TLS needs tls-cert, tls-key and tls-ca together; missing: {}",
                    missing.join(", ")
                ),
            })
        }
    }
}

/// The `nbd-tls*` options of a section as written, checked together at its end.
#[derive(Default)]
struct NbdTlsParts {
    mode: Option<NbdTlsMode>,
    mode_at: Option<Location>,
    cert: Option<(std::path::PathBuf, Location)>,
    key: Option<(std::path::PathBuf, Location)>,
    ca: Option<(std::path::PathBuf, Location)>,
}

impl NbdTlsParts {
    /// `on`/`require` need a certificate, its key and `nbd-listen` (TLS runs on TCP only);
    /// files without `on`/`require` are refused rather than ignored.
    fn finish(self, resource: &str, listens: bool, close: &Location) -> Result<Option<NbdTls>> {
        let invalid = |at: Location, message: String| ConfigError::Invalid { at, message };
        let Some(mode) = self.mode else {
            let stray = [&self.cert, &self.key, &self.ca]
                .into_iter()
                .flatten()
                .next();
            return match stray {
                None => Ok(None),
                Some((_, at)) => Err(invalid(
                    at.clone(),
                    format!(
                        "{KEYWORD} {resource}: nbd-tls-cert, nbd-tls-key and nbd-tls-ca take effect only with nbd-tls on or require"
                    ),
                )),
            };
        };
        let at = self.mode_at.unwrap_or_else(|| close.clone());
        let (Some((cert, _)), Some((key, _))) = (self.cert, self.key) else {
            return Err(invalid(
                at,
                format!(
                    "{KEYWORD} {resource}: nbd-tls {} needs nbd-tls-cert and nbd-tls-key",
                    mode.as_str()
                ),
            ));
        };
        if !listens {
            return Err(invalid(
                at,
                format!(
                    "{KEYWORD} {resource}: nbd-tls {} needs nbd-listen (TLS is served on the TCP address; the unix socket stays local and in clear)",
                    mode.as_str()
                ),
            ));
        }
        Ok(Some(NbdTls {
            mode,
            cert,
            key,
            ca: self.ca.map(|(p, _)| p),
        }))
    }
}

/// A POSIX-portable group name (what `groupadd` accepts by default, less '$').
fn is_group_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
