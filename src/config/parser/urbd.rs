//! `urbd-options NAME { ... }`, urbd's own top-level section (see [`crate::config::urbd`]).
//! drbdadm has no such section; this is the only place that parses it.

use super::{Parser, Result};
use crate::config::error::{ConfigError, Location};
use crate::config::lexer::TokenKind;
use crate::config::urbd::{KEYWORD, OPTION_NAMES, UrbdOptions, socket_addr};

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
        let mut nbd_listen_at: Option<Location> = None;
        loop {
            let (kind, at) = self.bump();
            let w = match kind {
                TokenKind::Punct('}') => return Ok(u),
                TokenKind::Word(w) => w,
                other => {
                    return Err(ConfigError::Syntax {
                        at,
                        expected: format!("an option of the {KEYWORD} section or '}}'"),
                        found: other.describe(),
                    });
                }
            };
            match w.as_str() {
                "nbd-listen" => {
                    if let Some(first) = &nbd_listen_at {
                        return Err(ConfigError::Duplicate {
                            at,
                            what: "option".into(),
                            name: format!("{}: nbd-listen", u.resource),
                            first: first.clone(),
                        });
                    }
                    let value_at = self.here();
                    let addr = self.parse_address_value()?;
                    self.punct(';')?;
                    u.nbd_listen = Some(socket_addr(&addr, "nbd-listen", &value_at)?);
                    nbd_listen_at = Some(at);
                }
                _ => {
                    return Err(ConfigError::Unknown {
                        at,
                        what: "option",
                        word: w,
                        section: ctx,
                    });
                }
            }
        }
    }
}
