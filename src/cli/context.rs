//! Resolving a command line against the configuration ("high args"): which file, which node,
//! which resources and volumes.

use std::path::PathBuf;

use crate::config::{self, Config, NodeView, VolumeView};

use super::args::Cli;
use super::error::CliError;

/// The configuration and node a command acts on.
#[derive(Debug)]
pub struct Context {
    /// The configuration file that was read.
    pub config_path: PathBuf,
    /// The parsed configuration.
    pub config: Config,
    /// This node's name: `--node`, `URBD_NODE`, or the host name.
    pub node: String,
    /// `-d`: print the steps, change nothing.
    pub dry_run: bool,
}

/// One volume of one resource, as seen from this node.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved resource.
    pub view: NodeView,
    /// The selected volume.
    pub volume: VolumeView,
}

impl Target {
    /// `RES/VOL`, as drbdadm names a volume in messages.
    pub fn label(&self) -> String {
        format!("{}/{}", self.view.resource, self.volume.volume)
    }
}

impl Context {
    /// Reads the configuration named by `-c` (or the default) and settles the node name.
    pub fn load(cli: &Cli) -> Result<Self, CliError> {
        let config_path = cli
            .config
            .clone()
            .unwrap_or_else(config::default_config_path);
        let config = Config::load(&config_path)?;
        let node = match &cli.node {
            Some(n) if !n.is_empty() => n.clone(),
            _ => host_name(),
        };
        Ok(Self {
            config_path,
            config,
            node,
            dry_run: cli.dry_run,
        })
    }

    /// The resources of the configuration that have an `on` section for this node, in
    /// configuration order: what `all` stands for.
    pub fn all_resources(&self) -> Vec<String> {
        self.config
            .resource_names()
            .into_iter()
            .filter(|n| {
                self.config
                    .resource(n)
                    .is_some_and(|r| r.host_for(&self.node).is_some())
            })
            .collect()
    }

    /// Expands the resource arguments (`all`, `RES`, `RES/VOL`) into the volumes to act on, in
    /// configuration order. A name that is not defined is refused as drbdadm refuses it.
    /// `all` (or no name) means every resource with an `on` section for this node, as
    /// drbdadm's `all` skips the resources it "ignores" on this host.
    pub fn targets(&self, names: &[String]) -> Result<Vec<Target>, CliError> {
        let mut out = Vec::new();
        let wanted: Vec<(String, Option<u32>)> = if is_all(names) {
            self.all_resources()
                .into_iter()
                .map(|n| (n, None))
                .collect()
        } else {
            names
                .iter()
                .map(|n| split_volume(n))
                .collect::<Result<_, _>>()?
        };
        for (name, volume) in wanted {
            let resource = self.config.resource(&name).ok_or_else(|| {
                CliError::not_defined(format!(
                    "'{name}' not defined in your config (for this host)."
                ))
            })?;
            let view = resource.for_node(&self.node)?;
            let mut matched = false;
            for v in &view.volumes {
                if volume.is_none_or(|want| want == v.volume) {
                    matched = true;
                    out.push(Target {
                        view: view.clone(),
                        volume: v.clone(),
                    });
                }
            }
            if !matched {
                return Err(CliError::not_defined(format!(
                    "'{name}/{}' not defined in your config (for this host).",
                    volume.unwrap_or_default()
                )));
            }
        }
        Ok(out)
    }
}

/// Whether the resource arguments select every resource of this node: none, or `all`.
pub fn is_all(names: &[String]) -> bool {
    names.is_empty() || names.iter().any(|n| n == "all")
}

/// `RES/VOL` -> (RES, Some(VOL)); `RES` -> (RES, None).
fn split_volume(arg: &str) -> Result<(String, Option<u32>), CliError> {
    match arg.split_once('/') {
        None => Ok((arg.to_string(), None)),
        Some((res, vol)) => {
            let v = vol.parse::<u32>().map_err(|_| {
                CliError::usage(format!("'{arg}': the volume after '/' must be a number"))
            })?;
            Ok((res.to_string(), Some(v)))
        }
    }
}

/// The host name as drbdadm matches it against `on NAME`: `uname -n`.
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::split_volume;

    #[test]
    fn volume_syntax() {
        assert_eq!(split_volume("r0").ok(), Some(("r0".into(), None)));
        assert_eq!(split_volume("r0/1").ok(), Some(("r0".into(), Some(1))));
        assert!(split_volume("r0/x").is_err());
    }
}
