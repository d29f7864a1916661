//! The command tree, close to the flags (ripgrep's "low args"): no syscalls here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// urbdadm: administer urbd resources the way drbdadm administers DRBD 8.4 ones.
#[derive(Debug, Parser)]
#[command(
    name = "urbdadm",
    version,
    about = "Administer urbd replicated block devices (drbdadm-compatible)",
    after_help = "drbdadm's `urbdadm -- --discard-my-data connect RES` form is accepted, as is \
                  `urbdadm connect --discard-my-data RES`.\n\
                  Exit codes: 0 ok, 1 resource not defined for this host, 2 syntax, 3 usage, 10 invalid configuration, \
                  20 command failed or refused (drbdadm's E_exec_error)."
)]
pub struct Cli {
    /// Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf).
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Print the steps a command would take; change nothing.
    #[arg(short = 'd', long = "dry-run", global = true)]
    pub dry_run: bool,

    /// Act as this node (the `on NAME` section); default: the host name.
    #[arg(long, value_name = "NAME", env = "URBD_NODE", global = true)]
    pub node: Option<String>,

    /// More log output (repeat for more).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// One or more resources, or `all`. `RES/VOL` selects one volume.
#[derive(Debug, Clone, Args)]
pub struct Resources {
    /// Resource name(s), `RES/VOLUME`, or `all`.
    #[arg(value_name = "RESOURCE", required = true)]
    pub names: Vec<String>,
}

/// `inject-fault`'s options: ranges are `SECTOR+COUNT` in 512-byte sectors of the data
/// disk.
#[derive(Debug, Clone, Args)]
pub struct InjectFault {
    /// The resource(s).
    #[command(flatten)]
    pub res: Resources,
    /// Reads touching these sectors fail with EIO.
    #[arg(long = "read-error", value_name = "SECTOR+COUNT", value_parser = parse_range)]
    pub read_errors: Vec<(u64, u64)>,
    /// Writes touching these sectors fail with EIO.
    #[arg(long = "write-error", value_name = "SECTOR+COUNT", value_parser = parse_range)]
    pub write_errors: Vec<(u64, u64)>,
    /// Flushes fail with EIO.
    #[arg(long)]
    pub flush_error: bool,
    /// Every operation fails with EIO (the disk is gone).
    #[arg(long)]
    pub dead: bool,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('+')
        .ok_or_else(|| format!("{s:?}: expected SECTOR+COUNT"))?;
    let sector = a
        .parse()
        .map_err(|e| format!("{s:?}: bad sector {a:?}: {e}"))?;
    let count = b
        .parse()
        .map_err(|e| format!("{s:?}: bad count {b:?}: {e}"))?;
    Ok((sector, count))
}

/// An optional resource selection (absent means all).
#[derive(Debug, Clone, Args)]
pub struct MaybeResources {
    /// Resource name(s) or `all` (default: all).
    #[arg(value_name = "RESOURCE")]
    pub names: Vec<String>,
}

/// Every command drbdadm 8.4 has that urbd serves.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Initialise the metadata (v08 format) on the meta-disk.
    CreateMd {
        /// Overwrite existing metadata or a filesystem signature without asking.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        res: Resources,
    },
    /// Start the node daemon: attach the disks and connect to the peer.
    Up(Resources),
    /// Flush, disconnect, detach and stop the node daemon.
    Down(Resources),
    /// Attach the local backing disk to a running resource.
    Attach(Resources),
    /// Detach the local backing disk (the resource goes Diskless).
    Detach(Resources),
    /// Connect to the peer.
    Connect {
        /// Mark the local data as the split-brain victim (discarded in favour of the peer's).
        #[arg(long = "discard-my-data")]
        discard_my_data: bool,
        #[command(flatten)]
        res: Resources,
    },
    /// Disconnect from the peer (StandAlone).
    Disconnect(Resources),
    /// Promote to Primary.
    Primary {
        /// Promote even an Inconsistent or Outdated disk (makes it UpToDate).
        #[arg(long, alias = "overwrite-data-of-peer")]
        force: bool,
        #[command(flatten)]
        res: Resources,
    },
    /// Demote to Secondary.
    Secondary(Resources),
    /// Print the local and peer role (e.g. Primary/Secondary).
    Role(Resources),
    /// Print the connection state (e.g. Connected).
    Cstate(Resources),
    /// Print the local and peer disk state (e.g. UpToDate/UpToDate).
    Dstate(Resources),
    /// Print the state of resources (DRBD 9 style, or JSON).
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        res: MaybeResources,
    },
    /// Print the normalized configuration, like `drbdadm dump`.
    Dump(MaybeResources),
    /// Print the metadata in drbdmeta's dump-md text form.
    DumpMd(Resources),
    /// Print the generation identifiers with their meaning.
    ShowGi(Resources),
    /// Print the generation identifiers in one line.
    GetGi(Resources),
    /// Apply the activity log to the bitmap (after a crash of a Primary).
    ApplyAl(Resources),
    /// Discard the local data and resync it from the peer.
    Invalidate(Resources),
    /// Discard the peer's data and resync it from this node.
    InvalidateRemote(Resources),
    /// Start an online verify of both replicas.
    Verify(Resources),
    /// Pause a running resync.
    PauseSync(Resources),
    /// Resume a paused resync.
    ResumeSync(Resources),
    /// Mark the local disk Outdated (offline, in the metadata, when the resource is down).
    Outdate(Resources),
    /// Resume I/O frozen by fencing (resource-and-stonith) without waiting for the
    /// fence-peer handler.
    ResumeIo(Resources),
    /// Make the data disk fail from now on (a testing aid: the daemon must run with
    /// URBD_FAULT_INJECTION=1). No option heals it.
    #[command(hide = true)]
    InjectFault(InjectFault),
    /// Wait until the resource is connected.
    WaitConnect(Resources),
    /// Bring a running resource in line with the configuration file.
    Adjust(Resources),
    /// Print the state of all resources in /proc/drbd's format.
    Proc {
        /// Machine-readable output (the same fields, as `status --json` gives them).
        #[arg(long)]
        json: bool,
    },
    /// Stream state changes, as `drbdsetup events2` prints them.
    Events {
        /// Print the current state (`exists` lines, then `exists -`) and exit.
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        res: MaybeResources,
    },
    /// List the split-brain saves: what a split-brain victim saved of its own changes before
    /// the resync overwrote them (in /var/lib/urbd/RES, or $URBD_STATE_DIR/RES).
    SplitBrainSaves {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        res: MaybeResources,
    },
    /// Write a split-brain save back, each block at its offset, onto a device or file
    /// (created if missing). The whole file is checked first: a damaged one writes nothing.
    RestoreSplitBrainSave {
        /// The save file (from `split-brain-saves`).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The device or file to write the blocks onto.
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
        /// Write even onto the disk or device of a resource that is up.
        #[arg(long)]
        force: bool,
    },
    /// Run the two-node demo on loopback with file-backed disks in a temporary folder.
    Demo(DemoArgs),
    /// Install the Pacemaker resource agents ocf:urbd:urbd (the stand-in for
    /// ocf:linbit:drbd) and ocf:urbd:nbdfuse-loop (a /dev/nbd0 stand-in without kernel nbd).
    InstallOcf {
        /// The OCF provider directory to install `urbd` into.
        #[arg(long, default_value = "/usr/lib/ocf/resource.d/urbd")]
        dir: std::path::PathBuf,
    },
    /// Write generated files: shell completions, man pages, the systemd unit.
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: GenerateWhat,
    },
}

/// What `urbdadm generate` writes (the files under contrib/ come from here).
#[derive(Debug, Clone, Subcommand)]
pub enum GenerateWhat {
    /// A shell's completion script for urbdadm, on stdout or into DIR.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
        /// Write `urbdadm.bash` / `_urbdadm` / `urbdadm.fish` into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// The man pages (section 8): urbdadm, one per urbdadm command, urbd.
    Man {
        /// Folder to write them into.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// The systemd unit `urbd@.service`, pointing at these binaries.
    Systemd {
        /// Folder to write it into (e.g. /etc/systemd/system).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Where urbd and urbdadm are (default: the folder of this urbdadm).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
}

/// Options of `urbdadm demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Size of each node's data disk (with k/M/G suffix).
    #[arg(long, default_value = "256M")]
    pub size: String,
    /// Keep the demo's folder (and print where it is) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

impl Command {
    /// The drbdadm name of this command, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateMd { .. } => "create-md",
            Command::Up(_) => "up",
            Command::Down(_) => "down",
            Command::Attach(_) => "attach",
            Command::Detach(_) => "detach",
            Command::Connect { .. } => "connect",
            Command::Disconnect(_) => "disconnect",
            Command::Primary { .. } => "primary",
            Command::Secondary(_) => "secondary",
            Command::Role(_) => "role",
            Command::Cstate(_) => "cstate",
            Command::Dstate(_) => "dstate",
            Command::Status { .. } => "status",
            Command::Dump(_) => "dump",
            Command::DumpMd(_) => "dump-md",
            Command::ShowGi(_) => "show-gi",
            Command::GetGi(_) => "get-gi",
            Command::ApplyAl(_) => "apply-al",
            Command::Invalidate(_) => "invalidate",
            Command::InvalidateRemote(_) => "invalidate-remote",
            Command::Verify(_) => "verify",
            Command::PauseSync(_) => "pause-sync",
            Command::ResumeSync(_) => "resume-sync",
            Command::Outdate(_) => "outdate",
            Command::ResumeIo(_) => "resume-io",
            Command::InjectFault(_) => "inject-fault",
            Command::WaitConnect(_) => "wait-connect",
            Command::Adjust(_) => "adjust",
            Command::Proc { .. } => "proc",
            Command::Events { .. } => "events",
            Command::SplitBrainSaves { .. } => "split-brain-saves",
            Command::RestoreSplitBrainSave { .. } => "restore-split-brain-save",
            Command::Demo(_) => "demo",
            Command::Generate { .. } => "generate",
            Command::InstallOcf { .. } => "install-ocf",
        }
    }

    /// The command line this command stands for, options after the command word.
    pub fn describe(&self) -> String {
        let mut words = vec![self.name().to_string()];
        match self {
            Command::CreateMd { force: true, .. } | Command::Primary { force: true, .. } => {
                words.push("--force".into())
            }
            Command::Connect {
                discard_my_data: true,
                ..
            } => words.push("--discard-my-data".into()),
            Command::Status { json: true, .. }
            | Command::Proc { json: true }
            | Command::SplitBrainSaves { json: true, .. } => words.push("--json".into()),
            Command::Events { now: true, .. } => words.push("--now".into()),
            Command::RestoreSplitBrainSave { file, to, force } => {
                words.push(file.display().to_string());
                words.push("--to".into());
                words.push(to.display().to_string());
                if *force {
                    words.push("--force".into());
                }
            }
            _ => {}
        }
        words.extend(self.resource_names().iter().cloned());
        words.join(" ")
    }

    /// The resource names given on the command line (empty when none were).
    pub fn resource_names(&self) -> &[String] {
        match self {
            Command::CreateMd { res, .. }
            | Command::Connect { res, .. }
            | Command::Primary { res, .. }
            | Command::Up(res)
            | Command::Down(res)
            | Command::Attach(res)
            | Command::Detach(res)
            | Command::Disconnect(res)
            | Command::Secondary(res)
            | Command::Role(res)
            | Command::Cstate(res)
            | Command::Dstate(res)
            | Command::DumpMd(res)
            | Command::ShowGi(res)
            | Command::GetGi(res)
            | Command::ApplyAl(res)
            | Command::Invalidate(res)
            | Command::InvalidateRemote(res)
            | Command::Verify(res)
            | Command::PauseSync(res)
            | Command::ResumeSync(res)
            | Command::Outdate(res)
            | Command::ResumeIo(res)
            | Command::InjectFault(InjectFault { res, .. })
            | Command::WaitConnect(res)
            | Command::Adjust(res) => &res.names,
            Command::Status { res, .. }
            | Command::Dump(res)
            | Command::Events { res, .. }
            | Command::SplitBrainSaves { res, .. } => &res.names,
            Command::Proc { .. }
            | Command::Demo(_)
            | Command::RestoreSplitBrainSave { .. }
            | Command::Generate { .. }
            | Command::InstallOcf { .. } => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_name_matches_clap() {
        let cmd = Cli::command();
        let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
        for name in [
            "create-md",
            "up",
            "down",
            "attach",
            "detach",
            "connect",
            "disconnect",
            "primary",
            "secondary",
            "role",
            "cstate",
            "dstate",
            "status",
            "dump",
            "dump-md",
            "show-gi",
            "get-gi",
            "apply-al",
            "invalidate",
            "invalidate-remote",
            "verify",
            "pause-sync",
            "resume-sync",
            "outdate",
            "resume-io",
            "wait-connect",
            "adjust",
            "proc",
            "events",
            "split-brain-saves",
            "restore-split-brain-save",
            "demo",
            "install-ocf",
        ] {
            assert!(names.contains(&name), "missing subcommand {name}");
            let parsed = Cli::try_parse_from(match name {
                "proc" | "demo" | "dump" | "status" | "events" | "split-brain-saves"
                | "install-ocf" => {
                    vec!["urbdadm", name]
                }
                "restore-split-brain-save" => vec!["urbdadm", name, "F", "--to", "P"],
                _ => vec!["urbdadm", name, "r0"],
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed.command.name(), name);
        }
    }
}
