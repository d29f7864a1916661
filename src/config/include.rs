//! Reading files and following `include "glob";`.
//!
//! drbdadm's rules (`include_stmt` in `drbdadm_parser.c`): the pattern is a shell glob,
//! relative to the directory of the file that contains the statement; matches are read in
//! sorted order; a pattern with wildcards that matches nothing is fine, a plain path that
//! does not exist is an error; a file already read (by canonical path) is silently
//! skipped, which is what makes `include "*.conf"` safe inside one of those files.
//! urbd adds two refusals: a plain (wildcard-free) include of a file that is still being
//! read is an include cycle, and chains deeper than [`MAX_INCLUDE_DEPTH`] are refused.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location};
use super::limits::{MAX_FILE_SIZE, MAX_FILES, MAX_INCLUDE_DEPTH, MAX_RESOURCES};
use super::model::{Common, Global, Resource};
use super::parser::Parser;
use super::urbd::{KEYWORD as URBD_OPTIONS, UrbdOptions};

/// Accumulates what the files of one configuration define.
#[derive(Debug, Default)]
pub(crate) struct Loader {
    pub global: Option<(Global, Location)>,
    pub common: Option<Common>,
    pub resources: Vec<Resource>,
    /// `urbd-options` sections in reading order, matched to resources once all is read.
    pub urbd: Vec<UrbdOptions>,
    /// Every file read, canonical paths, in reading order.
    pub files: Vec<PathBuf>,
    seen: HashSet<PathBuf>,
    stack: Vec<PathBuf>,
    names: Vec<(String, Location)>,
    /// Refuse `include` statements instead of reading files (fuzzing, untrusted text).
    pub no_includes: bool,
}

/// The file's identity for "already read" checks: all symlinks resolved (drbdadm uses
/// `realpath`).
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The file's name for messages and dumps, as drbdadm's `canonify_path` makes it: the
/// directory made absolute and resolved, the file name kept (a symlinked file keeps its
/// own name).
pub(crate) fn canonify(p: &Path) -> PathBuf {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match (std::fs::canonicalize(&dir), p.file_name()) {
        (Ok(d), Some(f)) => d.join(f),
        _ => p.to_path_buf(),
    }
}

impl Loader {
    /// Reads and parses `path`, shown in messages as `display`.
    pub(crate) fn load_file(
        &mut self,
        path: &Path,
        display: &str,
        at: Option<&Location>,
    ) -> Result<(), ConfigError> {
        let io_err = |e: std::io::Error| ConfigError::Io {
            at: at.cloned(),
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            return Err(ConfigError::Io {
                at: at.cloned(),
                path: path.to_path_buf(),
                message: "is a directory".into(),
            });
        }
        if meta.len() > MAX_FILE_SIZE {
            return Err(ConfigError::Limit {
                at: at.cloned().unwrap_or_else(|| Location::new(display, 1, 1)),
                what: "file size",
                limit: MAX_FILE_SIZE,
            });
        }
        let bytes = std::fs::read(path).map_err(io_err)?;
        let text = String::from_utf8_lossy(&bytes);
        self.parse_text(&text, display, canonify(path), at)
    }

    /// Parses `text` as the file `display` (canonical path `canon`).
    pub(crate) fn parse_text(
        &mut self,
        text: &str,
        display: &str,
        canon: PathBuf,
        at: Option<&Location>,
    ) -> Result<(), ConfigError> {
        let here = || at.cloned().unwrap_or_else(|| Location::new(display, 1, 1));
        if text.len() as u64 > MAX_FILE_SIZE {
            return Err(ConfigError::Limit {
                at: here(),
                what: "file size",
                limit: MAX_FILE_SIZE,
            });
        }
        if self.files.len() >= MAX_FILES {
            return Err(ConfigError::Limit {
                at: here(),
                what: "number of files",
                limit: MAX_FILES as u64,
            });
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(ConfigError::Limit {
                at: here(),
                what: "include depth",
                limit: MAX_INCLUDE_DEPTH as u64,
            });
        }
        let identity = canonical(&canon);
        self.seen.insert(identity.clone());
        self.files.push(canon.clone());
        self.stack.push(identity);
        let r = Parser::new(text, display, canon, self).and_then(Parser::parse_file);
        self.stack.pop();
        r
    }

    /// Handles `include "pattern";` found in a file whose directory is `dir` (canonical)
    /// and `display_dir` (as named).
    pub(crate) fn include(
        &mut self,
        pattern: &str,
        dir: &Path,
        display_dir: &Path,
        at: &Location,
    ) -> Result<(), ConfigError> {
        if self.no_includes {
            return Err(ConfigError::InvalidValue {
                at: at.clone(),
                option: "include".into(),
                value: pattern.to_string(),
                reason: "includes are not followed when parsing text without files".into(),
            });
        }
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            dir.join(pattern)
        };
        let has_wildcard = pattern.contains(['*', '?', '[']);
        let Some(full_str) = full.to_str() else {
            return Err(ConfigError::Io {
                at: Some(at.clone()),
                path: full,
                message: "path is not UTF-8".into(),
            });
        };
        let paths = glob::glob(full_str).map_err(|e| ConfigError::InvalidValue {
            at: at.clone(),
            option: "include".into(),
            value: pattern.to_string(),
            reason: e.to_string(),
        })?;
        let mut matches: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        matches.sort();
        if matches.is_empty() && !has_wildcard {
            return Err(ConfigError::Io {
                at: Some(at.clone()),
                path: full,
                message: "failed to open include file".into(),
            });
        }
        for m in matches {
            let canon = canonical(&m);
            if self.stack.contains(&canon) && !has_wildcard {
                return Err(ConfigError::IncludeCycle {
                    at: at.clone(),
                    path: m,
                });
            }
            if self.seen.contains(&canon) {
                continue;
            }
            let shown = match m.strip_prefix(dir) {
                Ok(rel) if !Path::new(pattern).is_absolute() => display_dir.join(rel),
                _ => m.clone(),
            };
            let shown = shown.to_string_lossy().into_owned();
            self.load_file(&m, &shown, Some(at))?;
        }
        Ok(())
    }

    pub(crate) fn set_global(&mut self, g: Global, at: Location) -> Result<(), ConfigError> {
        if let Some((_, first)) = &self.global {
            return Err(ConfigError::Duplicate {
                at,
                what: "section".into(),
                name: "global".into(),
                first: first.clone(),
            });
        }
        self.global = Some((g, at));
        Ok(())
    }

    pub(crate) fn set_common(&mut self, c: Common) -> Result<(), ConfigError> {
        self.claim_resource_name("common", &c.at)?;
        self.common = Some(c);
        Ok(())
    }

    /// drbdadm registers resource names (and `common`) in one table.
    pub(crate) fn claim_resource_name(
        &mut self,
        name: &str,
        at: &Location,
    ) -> Result<(), ConfigError> {
        if let Some((_, first)) = self.names.iter().find(|(n, _)| n == name) {
            let what = if name == "common" {
                "section"
            } else {
                "resource"
            };
            return Err(ConfigError::Duplicate {
                at: at.clone(),
                what: what.into(),
                name: name.into(),
                first: first.clone(),
            });
        }
        if self.names.len() > MAX_RESOURCES {
            return Err(ConfigError::Limit {
                at: at.clone(),
                what: "number of resources",
                limit: MAX_RESOURCES as u64,
            });
        }
        self.names.push((name.to_string(), at.clone()));
        Ok(())
    }

    /// Keeps an `urbd-options` section; a second one for the same resource is refused
    /// here, whether or not the resource exists (that is checked after all files).
    pub(crate) fn add_urbd_options(&mut self, u: UrbdOptions) -> Result<(), ConfigError> {
        if let Some(first) = self.urbd.iter().find(|o| o.resource == u.resource) {
            return Err(ConfigError::Duplicate {
                at: u.at,
                what: format!("{URBD_OPTIONS} section for resource"),
                name: u.resource,
                first: first.at.clone(),
            });
        }
        if self.urbd.len() >= MAX_RESOURCES {
            return Err(ConfigError::Limit {
                at: u.at,
                what: "number of urbd-options sections",
                limit: MAX_RESOURCES as u64,
            });
        }
        self.urbd.push(u);
        Ok(())
    }

    pub(crate) fn add_resource(&mut self, r: Resource) -> Result<(), ConfigError> {
        self.resources.push(r);
        Ok(())
    }
}
