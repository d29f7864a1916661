//! Option sections (`net`, `disk`, `startup`, `options`, `handlers`) and the 8.3
//! `syncer` section, normalized while parsed as drbdadm does.

use super::{Parser, Result, unknown_option};
use crate::config::error::{ConfigError, Location};
use crate::config::lexer::TokenKind;
use crate::config::limits::MAX_HOSTS;
use crate::config::model::Sections;
use crate::config::options::{self, DEPRECATED, Form, OptionSpec, Options, Section, check_value};

impl Parser<'_> {
    // ---- option sections -----------------------------------------------------------

    /// A `name value;` / `flag [yes|no];` list up to the closing brace.
    pub(super) fn parse_options(&mut self, section: Section, ctx: &str) -> Result<Options> {
        let mut out = Options::new();
        loop {
            let (kind, at) = self.bump();
            let w = match kind {
                TokenKind::Punct('}') => return Ok(out),
                TokenKind::Word(w) => w,
                other => {
                    return Err(ConfigError::Syntax {
                        at,
                        expected: format!(
                            "an option keyword of the {} section or '}}'",
                            section.keyword()
                        ),
                        found: other.describe(),
                    });
                }
            };
            if DEPRECATED.contains(&w.as_str()) {
                self.option_value(&w)?;
                self.punct(';')?;
                continue;
            }
            let Some(spec) = options::lookup(section, &w) else {
                return Err(unknown_option(section, &w, at, ctx));
            };
            self.option_body(spec, &at, &mut out)?;
        }
    }

    /// The rest of one option after its name, pushed normalized into `out`.
    pub(super) fn option_body(
        &mut self,
        spec: &OptionSpec,
        at: &Location,
        out: &mut Options,
    ) -> Result<()> {
        match spec.form {
            Form::Flag => {
                let v = if self.is_word("yes") || self.is_word("no") {
                    let (k, _) = self.bump();
                    if k == TokenKind::Word("yes".into()) {
                        "yes"
                    } else {
                        "no"
                    }
                } else if self.is_punct(';') {
                    "yes"
                } else {
                    return Err(self.expected("yes | no | ;"));
                };
                out.push(spec.name, Some(v.to_string()));
            }
            Form::Negated => out.push(spec.name, Some("no".to_string())),
            Form::Value => {
                let (raw, vat) = self.option_value(spec.word)?;
                let v = check_value(spec, &raw).map_err(|reason| ConfigError::InvalidValue {
                    at: vat,
                    option: spec.word.to_string(),
                    value: raw.clone(),
                    reason,
                })?;
                out.push(spec.name, Some(v));
            }
        }
        let _ = at;
        self.punct(';')?;
        Ok(())
    }

    /// drbdadm's `expect_STRING_or_INT`: a word, quoted string, number, or `on`.
    pub(super) fn option_value(&mut self, name: &str) -> Result<(String, Location)> {
        match self.peek().clone() {
            TokenKind::Number(n) => Ok((n, self.bump().1)),
            TokenKind::Word(w) if w == "on" => Ok((w, self.bump().1)),
            TokenKind::Word(_) | TokenKind::Quoted(_) => {
                self.string(&format!("a value for {name}"))
            }
            _ => Err(self.expected(&format!("a value for {name}"))),
        }
    }

    /// The 8.3 `syncer { }` section: each option goes to the section 8.4 moved it to.
    pub(super) fn parse_syncer(&mut self, s: &mut Sections, ctx: &str) -> Result<()> {
        loop {
            let (kind, at) = self.bump();
            let w = match kind {
                TokenKind::Punct('}') => return Ok(()),
                TokenKind::Word(w) => w,
                other => {
                    return Err(ConfigError::Syntax {
                        at,
                        expected: "a syncer option keyword".into(),
                        found: other.describe(),
                    });
                }
            };
            let Some(spec) = options::lookup_syncer(&w) else {
                return Err(ConfigError::Unknown {
                    at,
                    what: "option",
                    word: w,
                    section: format!(
                        "syncer section of {ctx} (8.3 compatibility accepts: rate, after, \
                                      al-extents, verify-alg, csums-alg, use-rle, cpu-mask, c-*-*, \
                                      on-no-data-accessible)"
                    ),
                });
            };
            let target = match spec.section {
                Section::Net => &mut s.net,
                Section::Disk => &mut s.disk,
                _ => &mut s.options,
            };
            self.option_body(spec, &at, target)?;
        }
    }

    /// `startup { }`: options plus the `stacked-timeouts` and `become-primary-on`
    /// statements, which are kept apart (drbdadm prints them last).
    pub(super) fn parse_startup(&mut self, s: &mut Sections, ctx: &str) -> Result<Options> {
        let mut out = Options::new();
        loop {
            let (kind, at) = self.bump();
            let w = match kind {
                TokenKind::Punct('}') => return Ok(out),
                TokenKind::Word(w) => w,
                other => {
                    return Err(ConfigError::Syntax {
                        at,
                        expected: "a startup option or '}'".into(),
                        found: other.describe(),
                    });
                }
            };
            match w.as_str() {
                "stacked-timeouts" => {
                    s.stacked_timeouts = true;
                    self.punct(';')?;
                }
                "become-primary-on" => {
                    let mut names = Vec::new();
                    while !self.is_punct(';') {
                        names.push(self.string("a host name or ';'")?.0);
                        if names.len() > MAX_HOSTS {
                            return Err(ConfigError::Limit {
                                at,
                                what: "become-primary-on names",
                                limit: MAX_HOSTS as u64,
                            });
                        }
                    }
                    if names.is_empty() {
                        return Err(self.expected("a host name"));
                    }
                    self.bump();
                    s.become_primary_on = names;
                }
                _ if DEPRECATED.contains(&w.as_str()) => {
                    self.option_value(&w)?;
                    self.punct(';')?;
                }
                _ => {
                    let Some(spec) = options::lookup(Section::Startup, &w) else {
                        return Err(unknown_option(Section::Startup, &w, at, ctx));
                    };
                    self.option_body(spec, &at, &mut out)?;
                }
            }
        }
    }
}
