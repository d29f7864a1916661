//! Split-brain saves: `split-brain-saves [RES...]` lists what split-brain victims saved
//! before their blocks were overwritten, `restore-split-brain-save FILE --to PATH` writes
//! one back. Neither needs the daemon; both read the state directory
//! (`/var/lib/urbd`, or `URBD_STATE_DIR`).

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::control::{self, ControlError, Request, RunDir, StateDir};
use crate::sbsave::{self, Listed};

use super::args::Cli;
use super::context::Context;
use super::error::CliError;
use super::output::print;

/// `urbdadm split-brain-saves [--json] [RES...]`: the saves of the named resources (all
/// resources with a folder in the state directory by default), oldest first.
pub fn list(names: &[String], json: bool) -> Result<(), CliError> {
    let state = StateDir::from_env();
    let resources: Vec<String> = if names.is_empty() || names.iter().any(|n| n == "all") {
        let mut v: Vec<String> = fs::read_dir(state.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    } else {
        // `RES/VOL` lists the resource's saves (the volume is in each file's header).
        names
            .iter()
            .map(|n| n.split('/').next().unwrap_or(n).to_owned())
            .collect()
    };
    let mut saves: Vec<(String, Listed)> = Vec::new();
    for r in &resources {
        if r.is_empty() || r.contains("..") {
            return Err(CliError::usage(format!("'{r}' is not a resource name")));
        }
        for l in sbsave::list(&state.resource(r)) {
            saves.push((r.clone(), l));
        }
    }
    if json {
        let v: Vec<serde_json::Value> = saves.iter().map(|(r, l)| to_json(r, l)).collect();
        let text = serde_json::to_string_pretty(&v).map_err(CliError::exec)?;
        return print(&format!("{text}\n"));
    }
    if saves.is_empty() {
        let which = if resources.len() == 1 {
            format!("for {} ", resources[0])
        } else {
            String::new()
        };
        return print(&format!(
            "No split-brain saves {which}in {}.\n",
            state.path().display()
        ));
    }
    let mut out = String::new();
    for (r, l) in &saves {
        out.push_str(&line(r, l));
        out.push('\n');
    }
    print(&out)
}

/// One save in one line: file, time, volume, peer, blocks, KiB, why; or what is wrong.
fn line(resource: &str, l: &Listed) -> String {
    let file = l.path.display();
    match &l.header {
        Ok(h) => {
            let state = if l.looks_complete() {
                String::new()
            } else {
                format!(
                    " INCOMPLETE: {} bytes, the header announces {}",
                    l.len,
                    h.file_len()
                )
            };
            format!(
                "{file}  {}  {resource}/{}  node:{} peer:{}  blocks:{}  {} KiB  ({}){state}",
                sbsave::utc_text(h.created_unix),
                h.volume,
                h.node,
                h.peer,
                h.blocks(),
                h.data_bytes / 1024,
                h.reason
            )
        }
        Err(e) => format!("{file}  {resource}  DAMAGED: {e}"),
    }
}

fn to_json(resource: &str, l: &Listed) -> serde_json::Value {
    let file = l.path.display().to_string();
    match &l.header {
        Ok(h) => serde_json::json!({
            "resource": resource,
            "file": file,
            "volume": h.volume,
            "time_unix": h.created_unix,
            "time": sbsave::utc_text(h.created_unix),
            "node": h.node,
            "peer": h.peer,
            "reason": h.reason,
            "blocks": h.blocks(),
            "kib": h.data_bytes / 1024,
            "records": h.records,
            "complete": l.looks_complete(),
        }),
        Err(e) => serde_json::json!({
            "resource": resource,
            "file": file,
            "error": e.to_string(),
        }),
    }
}

/// `urbdadm restore-split-brain-save FILE --to PATH [--force]`: checks the whole file,
/// then writes every saved block at its offset on PATH (a device, or a file, created if
/// missing). Refuses a damaged file before writing anything, and the disk or device of a
/// resource that is up unless `--force`.
pub fn restore(cli: &Cli, file: &Path, to: &Path, force: bool) -> Result<(), CliError> {
    let (header, end) = sbsave::validate(file).map_err(|e| {
        CliError::exec(anyhow::anyhow!(
            "refusing to restore: {e}; nothing was written to {}",
            to.display()
        ))
    })?;
    if !force && let Some(why) = in_use(cli, to)? {
        return Err(CliError::exec(anyhow::anyhow!(
            "refusing to write onto {}: {why}. Writing under a running resource bypasses its \
             replication and bitmap (the replicas silently differ) and corrupts a filesystem \
             mounted on it. Restore onto a copy (or a scratch file) and copy what you need \
             from there, or take the resource down; --force writes anyway. Nothing was written.",
            to.display()
        )));
    }
    let kib = header.data_bytes / 1024;
    if cli.dry_run {
        return print(&format!(
            "restore-split-brain-save: would write {} records ({kib} KiB) of {}'s save from {} at their offsets onto {}\n",
            header.records,
            header.node,
            file.display(),
            to.display()
        ));
    }
    let existed = to.exists();
    let mut target = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(to)
        .map_err(|e| {
            CliError::exec(anyhow::Error::new(e).context(format!("opening {}", to.display())))
        })?;
    let meta = target.metadata().map_err(|e| {
        CliError::exec(anyhow::Error::new(e).context(format!("stat {}", to.display())))
    })?;
    if meta.file_type().is_block_device() {
        let size = target.seek(SeekFrom::End(0)).map_err(|e| {
            CliError::exec(anyhow::Error::new(e).context(format!("sizing {}", to.display())))
        })?;
        if size < end {
            return Err(CliError::exec(anyhow::anyhow!(
                "{} has {size} bytes; the save reaches byte {end}: nothing was written",
                to.display()
            )));
        }
    } else if !existed {
        // A new file: as large as the device the blocks came from (sparse).
        target.set_len(header.device_bytes).map_err(|e| {
            CliError::exec(anyhow::Error::new(e).context(format!("sizing {}", to.display())))
        })?;
    }
    let r = sbsave::restore(file, &target).map_err(|e| CliError::exec(anyhow::anyhow!("{e}")))?;
    print(&format!(
        "Restored {} records ({} blocks, {kib} KiB) saved by {} (peer {}, {}) onto {}{}.\n",
        r.records,
        header.blocks(),
        header.node,
        header.peer,
        sbsave::utc_text(header.created_unix),
        to.display(),
        if existed { "" } else { " (a new sparse file)" }
    ))
}

/// Why `to` belongs to a resource that is up (its backing disk, its device or its NBD
/// socket), or `None`.
fn in_use(cli: &Cli, to: &Path) -> Result<Option<String>, CliError> {
    let run_dir = RunDir::from_env();
    let up: Vec<String> = run_dir
        .resources_with_sockets()
        .into_iter()
        .filter(|r| {
            // A socket left by a daemon that was killed is not up.
            !matches!(
                control::call(&run_dir, r, Request::Status),
                Err(ControlError::NotUp { .. })
            )
        })
        .collect();
    if up.is_empty() {
        return Ok(None);
    }
    let ctx = match Context::load(cli) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Some(format!(
                "resources are up ({}) and the configuration cannot be read to tell whether \
                 this is one of their disks ({e})",
                up.join(", ")
            )));
        }
    };
    for r in &up {
        let Ok(targets) = ctx.targets(std::slice::from_ref(r)) else {
            continue;
        };
        for t in targets {
            let v = &t.volume;
            let mut paths: Vec<(PathBuf, &str)> = vec![
                (v.disk.clone(), "the backing disk"),
                (run_dir.path().join(format!("{r}.nbd")), "the NBD export"),
                (
                    PathBuf::from(format!("/dev/nbd{}", nbd_index(v))),
                    "the kernel NBD device",
                ),
            ];
            if let Some(d) = &v.device_path {
                paths.push((d.clone(), "the device"));
            }
            for (p, what) in paths {
                if same_file(&p, to) {
                    return Ok(Some(format!(
                        "it is {what} of {} ({}), which is up",
                        t.label(),
                        p.display()
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// `/dev/nbdN` of a volume: as `device` names it (`/dev/nbdN`, `/dev/drbdN`), else its minor.
fn nbd_index(v: &crate::config::VolumeView) -> u32 {
    v.device_path
        .as_ref()
        .and_then(|p| p.to_str())
        .and_then(|p| {
            p.strip_prefix("/dev/nbd")
                .or_else(|| p.strip_prefix("/dev/drbd"))
                .and_then(|n| n.parse::<u32>().ok())
        })
        .unwrap_or(v.minor)
}

/// The same file (inode) or the same block device (rdev).
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            (x.dev() == y.dev() && x.ino() == y.ino())
                || (x.file_type().is_block_device()
                    && y.file_type().is_block_device()
                    && x.rdev() == y.rdev())
        }
        _ => false,
    }
}
