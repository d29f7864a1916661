//! The drbd.conf configuration language, as drbd-utils 8.4's drbdadm reads it.
//!
//! [`Config::load`] reads a file and its includes into a [`Config`]: `global`, `common`
//! and the resources in file order, checked the way drbdadm checks a configuration
//! before it does anything (grammar, unknown options, values, duplicate resources,
//! minors, addresses and meta-disk slots, incomplete host sections). What depends on the
//! node that runs, which host section is "me", is decided later by
//! [`Resource::for_node`], which returns the fully inherited [`NodeView`].
//! [`dump`] prints a configuration the way `drbdadm dump` does.
//!
//! One extension is urbd's own: the top-level section `urbd-options NAME { ... }`
//! ([`UrbdOptions`], module `urbd`), for settings drbd-utils does not know. drbdadm
//! refuses unknown keywords, so the section belongs only in urbd's top file
//! (`/etc/urbd.conf`, which includes `/etc/drbd.conf`), never in a file drbdadm reads.
//!
//! Module map: `lexer` (tokens) → `parser` (one file) → `include` (globs, files) →
//! `validate` (cross-resource rules) → `urbd` (urbd-options attached to resources) →
//! `resolve` (per node) → `dump`.
//! Option names, value kinds and units are in [`options`]; number suffixes in [`units`];
//! every cap on input size in [`limits`].

mod dump;
mod error;
mod include;
mod lexer;
pub mod limits;
mod model;
pub mod options;
mod parser;
mod resolve;
pub mod units;
mod urbd;
mod validate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use dump::{DumpOptions, dump, dump_with, esc};
pub use error::{ConfigError, E_CONFIG_INVALID, E_USAGE, Location};
pub use model::{
    Address, AddressFamily, Common, Global, Host, HostKind, MetaDiskSpec, Protocol, Resource,
    Sections, UsageCount, Volume,
};
pub use options::{OptionEntry, Options};
pub use resolve::{NodeView, PeerView, VolumeView};
pub use urbd::{NbdTls, NbdTlsMode, TlsFiles, UrbdOptions};

use include::Loader;

/// A whole configuration: the top file and everything it includes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The top file (absolute when it was read from disk), printed in dump headers.
    pub path: PathBuf,
    /// `global { }` (defaults when absent).
    pub global: Global,
    /// `common { }`, if present.
    pub common: Option<Common>,
    resources: Vec<Resource>,
    /// Every file read, in reading order (absolute paths).
    pub files: Vec<PathBuf>,
}

/// The configuration file urbdadm reads without `-c`: `/etc/urbd.conf` if it exists,
/// else `/etc/drbd.conf`.
pub fn default_config_path() -> PathBuf {
    let urbd = PathBuf::from("/etc/urbd.conf");
    if urbd.exists() {
        urbd
    } else {
        PathBuf::from("/etc/drbd.conf")
    }
}

impl Config {
    /// Reads `path` and every file it includes (globs relative to the including file's
    /// directory), and checks the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut loader = Loader::default();
        let display = path.to_string_lossy().into_owned();
        loader.load_file(path, &display, None)?;
        Config::finish(loader, include::canonify(path))
    }

    /// Parses `text` as if it were the file `file_name`; includes are resolved relative
    /// to `file_name`'s directory (the current directory for a bare name).
    pub fn parse_str(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let mut loader = Loader::default();
        let path = PathBuf::from(file_name);
        let canon = if path.is_absolute() {
            path.clone()
        } else {
            std::env::current_dir()
                .map(|d| d.join(&path))
                .unwrap_or_else(|_| path.clone())
        };
        loader.parse_text(text, file_name, canon.clone(), None)?;
        Config::finish(loader, canon)
    }

    /// Parses `text` as the file `file_name` without reading any file: an `include`
    /// statement is an error. For untrusted text (the fuzz targets).
    pub fn parse_str_no_includes(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let mut loader = Loader::default();
        loader.no_includes = true;
        let path = PathBuf::from(file_name);
        loader.parse_text(text, file_name, path.clone(), None)?;
        Config::finish(loader, path)
    }

    fn finish(loader: Loader, path: PathBuf) -> Result<Config, ConfigError> {
        let common_sections = loader.common.as_ref().map(|c| c.sections.clone());
        validate::validate(&loader.resources, common_sections.as_ref())?;
        let mut resources: Vec<Resource> = loader
            .resources
            .into_iter()
            .map(|mut r| {
                r.common.clone_from(&common_sections);
                r
            })
            .collect();
        urbd::attach(&mut resources, loader.urbd)?;
        Ok(Config {
            path,
            global: loader.global.map(|(g, _)| g).unwrap_or_default(),
            common: loader.common,
            resources,
            files: loader.files,
        })
    }

    /// The resources in file order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter()
    }

    /// The resource called `name`.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name() == name)
    }

    /// The `urbd-options` section of `resource`, if the resource exists and has one.
    pub fn urbd_options(&self, resource: &str) -> Option<&UrbdOptions> {
        self.resource(resource)?.urbd_options()
    }

    /// All resource names in file order.
    pub fn resource_names(&self) -> Vec<String> {
        self.resources
            .iter()
            .map(|r| r.name().to_string())
            .collect()
    }
}
