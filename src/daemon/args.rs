//! The `urbd` command line.

use std::path::PathBuf;

use clap::Parser;

/// urbd: the node daemon of one urbd resource.
#[derive(Debug, Clone, Parser)]
#[command(name = "urbd", version, about = "The node daemon of one urbd resource")]
pub struct DaemonArgs {
    /// Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Act as this node (the `on NAME` section); default: the host name.
    #[arg(long, value_name = "NAME", env = "URBD_NODE")]
    pub node: Option<String>,

    /// Stay in the foreground and log to stderr (for systemd). Without it, urbd starts
    /// the daemon in the background, waits until it answers or fails, and exits.
    #[arg(long)]
    pub foreground: bool,

    /// Internal: report readiness on stdout as one line (used by the launcher).
    #[arg(long, hide = true)]
    pub ready_on_stdout: bool,

    /// The resource.
    #[arg(value_name = "RESOURCE")]
    pub resource: String,
}
