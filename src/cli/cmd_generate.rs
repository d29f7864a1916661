//! `urbdadm generate`: files made from the command definitions, so they never drift from
//! the binaries: shell completions and man pages (from the clap tables of `urbdadm` and
//! `urbd`), and the systemd unit (contrib/systemd/urbd@.service with the binaries' paths).
//! The copies committed under contrib/ are checked against these in tests/ops.rs;
//! `scripts/generate-contrib.sh` rewrites them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::{Generator, Shell};

use super::args::{Cli, GenerateWhat};
use super::error::CliError;
use super::output::print;

/// The unit as shipped, with binaries in [`UNIT_BIN_DIR`].
pub const SYSTEMD_UNIT: &str = include_str!("../../contrib/systemd/urbd@.service");
/// Where the shipped unit expects `urbd` and `urbdadm`.
pub const UNIT_BIN_DIR: &str = "/usr/sbin";
/// The unit's file name.
pub const UNIT_FILE: &str = "urbd@.service";

/// Runs `urbdadm generate ...`.
pub fn run(what: &GenerateWhat, dry_run: bool) -> Result<(), CliError> {
    match what {
        GenerateWhat::Completions { shell, dir: None } => {
            print(&String::from_utf8_lossy(&completion(*shell)))
        }
        GenerateWhat::Completions {
            shell,
            dir: Some(dir),
        } => write_files(
            dir,
            &[(shell.file_name("urbdadm"), completion(*shell))],
            dry_run,
        ),
        GenerateWhat::Man { dir } => write_files(dir, &man_pages()?, dry_run),
        GenerateWhat::Systemd { dir, bin_dir } => {
            let bin_dir = match bin_dir {
                Some(d) => d.clone(),
                None => own_dir()?,
            };
            let unit = systemd_unit(&bin_dir);
            write_files(dir, &[(UNIT_FILE.to_owned(), unit.into_bytes())], dry_run)
        }
    }
}

/// The completion script of urbdadm for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "urbdadm", &mut out);
    out
}

/// The man pages, (file name, roff text): `urbdadm.8`, `urbdadm-CMD.8` for every command
/// an operator sees, `urbd.8`. No date in them, so that they only change with the CLI.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>, CliError> {
    let mut pages = Vec::new();
    let mut adm = Cli::command().disable_help_subcommand(true);
    adm.build();
    let mut cmds = vec![adm.clone()];
    cmds.extend(adm.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    cmds.push(crate::daemon::DaemonArgs::command());
    for cmd in cmds {
        let man = clap_mangen::Man::new(cmd)
            .section("8")
            .manual("urbd")
            .source(format!("urbd {}", env!("CARGO_PKG_VERSION")));
        let mut text = Vec::new();
        man.render(&mut text)
            .map_err(|e| CliError::exec(anyhow::Error::new(e).context("rendering a man page")))?;
        pages.push((man.get_filename(), text));
    }
    Ok(pages)
}

/// The systemd unit with `urbd` and `urbdadm` in `bin_dir`.
pub fn systemd_unit(bin_dir: &Path) -> String {
    let dir = bin_dir.display().to_string();
    let dir = dir.trim_end_matches('/');
    SYSTEMD_UNIT
        .replace(&format!("={UNIT_BIN_DIR}/urbd "), &format!("={dir}/urbd "))
        .replace(
            &format!("={UNIT_BIN_DIR}/urbdadm "),
            &format!("={dir}/urbdadm "),
        )
}

/// The folder of the running urbdadm (where `up` also looks for urbd).
fn own_dir() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::exec(anyhow::Error::new(e).context("finding urbdadm's path")))?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| CliError::exec(anyhow::anyhow!("{} has no folder", exe.display())))
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)], dry_run: bool) -> Result<(), CliError> {
    if !dry_run {
        std::fs::create_dir_all(dir).map_err(|e| {
            CliError::exec(anyhow::Error::new(e).context(format!("creating {}", dir.display())))
        })?;
    }
    for (name, bytes) in files {
        let path = dir.join(name);
        if dry_run {
            print(&format!(
                "write {} ({} bytes)\n",
                path.display(),
                bytes.len()
            ))?;
            continue;
        }
        std::fs::write(&path, bytes).map_err(|e| {
            CliError::exec(anyhow::Error::new(e).context(format!("writing {}", path.display())))
        })?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_are_replaced_and_nothing_else() {
        let unit = systemd_unit(Path::new("/opt/urbd/bin/"));
        assert!(unit.contains("\nExecStart=/opt/urbd/bin/urbd --foreground %I\n"));
        assert!(unit.contains("\nExecStop=/opt/urbd/bin/urbdadm down %I\n"));
        assert!(!unit.contains("=/usr/sbin/"));
        assert_eq!(
            unit.lines().count(),
            SYSTEMD_UNIT.lines().count(),
            "only the two paths change"
        );
        assert_eq!(systemd_unit(Path::new(UNIT_BIN_DIR)), SYSTEMD_UNIT);
    }

    #[test]
    fn a_man_page_per_visible_command() {
        let pages = man_pages().expect("man pages");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"urbdadm.8"), "{names:?}");
        assert!(names.contains(&"urbdadm-up.8"), "{names:?}");
        assert!(names.contains(&"urbd.8"), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
    }
}
