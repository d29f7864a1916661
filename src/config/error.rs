//! Configuration errors.
//!
//! Every error that comes from a place in a file prints as `FILE:LINE:COL: message`, the
//! shape compilers and drbdadm (`FILE:LINE: ...`) use, so editors can jump to it.
//!
//! # Exit codes
//!
//! drbdadm (drbd-utils `user/shared/shared_main.h`) exits with:
//! - `1` `E_USAGE`: bad command line, unknown resource name, no resource for this host;
//! - `2` `E_SYNTAX`: reserved for yacc-style syntax errors (the 8.4 hand-written parser
//!   reports parse errors as `E_CONFIG_INVALID` instead);
//! - `10` `E_CONFIG_INVALID`: anything wrong in the configuration (parse errors,
//!   conflicts, missing keywords, values out of range);
//! - `20` `E_EXEC_ERROR`: a helper (drbdsetup, drbdmeta) failed, or a number that is not a
//!   number (drbdadm's `m_strtoll` exits 20 there; urbd reports 10, it is a config error);
//! - `30` `E_NO_MEM`, `42` `E_THINKO` (internal error).
//!
//! [`ConfigError::exit_code`] maps every configuration error to 10 except
//! [`ConfigError::ResourceNotFound`], which drbdadm treats as a usage error (1).

use std::fmt;
use std::path::PathBuf;

/// drbdadm's `E_USAGE`.
pub const E_USAGE: u8 = 1;
/// drbdadm's `E_CONFIG_INVALID`.
pub const E_CONFIG_INVALID: u8 = 10;

/// A place in a configuration file: the file as it was named (relative names stay
/// relative, as drbdadm prints them), 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Location {
    /// The file name as read (the `-c` argument or the include glob's match).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
}

impl Location {
    /// A location in `file`.
    pub fn new(file: impl Into<String>, line: u32, col: u32) -> Location {
        Location {
            file: file.into(),
            line,
            col,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A token that the grammar does not allow here.
    #[error("{at}: syntax error: expected {expected}, found {found}")]
    Syntax {
        /// Where the unexpected token starts.
        at: Location,
        /// What the grammar allows here.
        expected: String,
        /// The token found (quoted), or `end of file`.
        found: String,
    },
    /// A malformed token (too long, unterminated string).
    #[error("{at}: {message}")]
    Lexical {
        /// Where the token starts.
        at: Location,
        /// What is wrong with it.
        message: String,
    },
    /// A keyword or option name that does not exist in this section.
    #[error("{at}: unknown {what} '{word}' in {section}")]
    Unknown {
        /// Where the word is.
        at: Location,
        /// `option` or `keyword`.
        what: &'static str,
        /// The word.
        word: String,
        /// The section, e.g. `net section of resource r0`.
        section: String,
    },
    /// A value that the option does not accept.
    #[error("{at}: invalid value '{value}' for {option}: {reason}")]
    InvalidValue {
        /// Where the value is.
        at: Location,
        /// The option or statement.
        option: String,
        /// The value as written.
        value: String,
        /// Why it is refused (range, allowed words, unit).
        reason: String,
    },
    /// Something defined twice that must be unique (resource, minor, address, section...).
    #[error("{at}: {what} '{name}' already used at {first}")]
    Duplicate {
        /// The second definition.
        at: Location,
        /// What kind of thing, e.g. `resource`, `minor`, `address`.
        what: String,
        /// Its name or value, e.g. `astapor:0`.
        name: String,
        /// The first definition.
        first: Location,
    },
    /// A host section lacks a mandatory statement.
    #[error("{at}: in resource {resource}, on {host}: '{keyword}' statement missing")]
    Missing {
        /// The host section.
        at: Location,
        /// The resource.
        resource: String,
        /// The host section's names.
        host: String,
        /// The missing keyword (`disk`, `meta-disk`, `device`, `address`).
        keyword: &'static str,
    },
    /// Any other semantic rule of drbdadm (volume sets, device names, ...).
    #[error("{at}: {message}")]
    Invalid {
        /// Where the offending statement is.
        at: Location,
        /// The rule broken.
        message: String,
    },
    /// The resource has no `on` section for the node asked for.
    #[error(
        "{at}: resource {resource} has no 'on {node} {{ ... }}' section (hosts: {})",
        hosts.join(", ")
    )]
    NoHostSection {
        /// The resource's definition.
        at: Location,
        /// The resource.
        resource: String,
        /// The node asked for.
        node: String,
        /// The host sections that exist.
        hosts: Vec<String>,
    },
    /// The node matches more than one host section.
    #[error("{at}: resource {resource}: node {node} matches more than one host section")]
    AmbiguousHost {
        /// The resource's definition.
        at: Location,
        /// The resource.
        resource: String,
        /// The node asked for.
        node: String,
    },
    /// A resource needs its peer's host section.
    #[error(
        "{at}: resource {resource} needs two host sections, found {} ({})",
        hosts.len(),
        hosts.join(", ")
    )]
    NeedTwoHosts {
        /// The resource's definition.
        at: Location,
        /// The resource.
        resource: String,
        /// The host sections that exist.
        hosts: Vec<String>,
    },
    /// A file could not be read.
    #[error("{}cannot read {}: {message}", at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default(), path.display())]
    Io {
        /// The include statement that named it, if any.
        at: Option<Location>,
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// A limit of [`super::limits`] was exceeded.
    #[error("{at}: {what} exceeds the limit of {limit}")]
    Limit {
        /// Where it was exceeded.
        at: Location,
        /// What grew too large (file size, include depth, nesting, ...).
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// An include chain leads back to a file that is still being read.
    #[error("{at}: include cycle: {} is already being read", path.display())]
    IncludeCycle {
        /// The include statement.
        at: Location,
        /// The file included again.
        path: PathBuf,
    },
    /// A section of the configuration names a resource that no file defines (urbd's
    /// `urbd-options NAME { }`).
    #[error("{at}: {section} names resource '{name}', which is not defined in any file read")]
    UnknownResource {
        /// Where the name is written.
        at: Location,
        /// The section that names it, e.g. `urbd-options`.
        section: &'static str,
        /// The name.
        name: String,
    },
    /// A resource name given on the command line is not in the configuration.
    #[error("'{name}' not defined in your config")]
    ResourceNotFound {
        /// The name asked for.
        name: String,
    },
}

impl ConfigError {
    /// The process exit status drbdadm uses for this error: 10 (`E_CONFIG_INVALID`) for
    /// every configuration error, 1 (`E_USAGE`) for [`ConfigError::ResourceNotFound`].
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::ResourceNotFound { .. } => E_USAGE,
            _ => E_CONFIG_INVALID,
        }
    }

    /// Where in which file the error is, when it comes from a file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { at, .. }
            | ConfigError::Lexical { at, .. }
            | ConfigError::Unknown { at, .. }
            | ConfigError::InvalidValue { at, .. }
            | ConfigError::Duplicate { at, .. }
            | ConfigError::Missing { at, .. }
            | ConfigError::Invalid { at, .. }
            | ConfigError::NoHostSection { at, .. }
            | ConfigError::AmbiguousHost { at, .. }
            | ConfigError::NeedTwoHosts { at, .. }
            | ConfigError::Limit { at, .. }
            | ConfigError::IncludeCycle { at, .. }
            | ConfigError::UnknownResource { at, .. } => Some(at),
            ConfigError::Io { at, .. } => at.as_ref(),
            ConfigError::ResourceNotFound { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_starts_with_file_line_col() {
        let e = ConfigError::Syntax {
            at: Location::new("r.res", 3, 7),
            expected: "';'".into(),
            found: "'}'".into(),
        };
        assert_eq!(
            e.to_string(),
            "r.res:3:7: syntax error: expected ';', found '}'"
        );
        assert_eq!(e.exit_code(), 10);
    }

    #[test]
    fn not_found_is_a_usage_error() {
        let e = ConfigError::ResourceNotFound { name: "x".into() };
        assert_eq!(e.exit_code(), 1);
        assert!(e.location().is_none());
    }

    #[test]
    fn io_error_names_the_file() {
        let e = ConfigError::Io {
            at: None,
            path: "/nope/x.res".into(),
            message: "No such file or directory".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot read /nope/x.res: No such file or directory"
        );
    }
}
