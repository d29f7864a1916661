//! Metadata commands: create-md, dump-md, show-gi, get-gi.

use std::io::{BufRead, Write};

use crate::meta::{self, Access, CreateOptions, Disk, Existing, Layout, MetaDevice};

use super::context::{Context, Target};
use super::error::CliError;
use super::output::print;

/// Where a volume's metadata lives (the daemon's mapping, so both always agree).
pub(crate) fn meta_device(target: &Target) -> MetaDevice {
    crate::daemon::disk::meta_device(&target.volume)
}

/// How `create-md` settles an existing signature on the meta-disk.
pub(crate) enum Confirm {
    /// `--force`: overwrite without asking.
    Force,
    /// Ask on the terminal; only `yes` proceeds.
    Ask,
}

/// `urbdadm create-md RES`.
pub fn create_md(ctx: &Context, names: &[String], force: bool) -> Result<(), CliError> {
    let confirm = if force { Confirm::Force } else { Confirm::Ask };
    for target in ctx.targets(names)? {
        create_one(&target, &confirm, ctx.dry_run)?;
    }
    Ok(())
}

/// Initialises one volume's metadata. Shared by `create-md` and the demo.
pub(crate) fn create_one(
    target: &Target,
    confirm: &Confirm,
    dry_run: bool,
) -> Result<(), CliError> {
    let dev = meta_device(target);
    let data_disk_bytes = Disk::open(&target.volume.disk, Access::Read)?.size();
    // Exactly what `drbdmeta create-md` writes (al-extents 257 included: the configured
    // al-extents is recorded when the disk is attached, as DRBD's kernel does).
    let opts = CreateOptions::new(data_disk_bytes);
    if dry_run {
        print(&format!(
            "create-md {}: write v08 metadata ({}) on {} for data disk {} ({} bytes)\n",
            target.label(),
            layout_name(&dev.layout),
            dev.path.display(),
            target.volume.disk.display(),
            data_disk_bytes,
        ))?;
        return Ok(());
    }
    let existing = meta::probe(&dev)?;
    let question = match &existing {
        Existing::Nothing | Existing::UnrecognisedData => None,
        Existing::ValidMetadata { .. } => Some(format!(
            "There appears to be valid v08 metadata already in place on {} ({}).\n\
             Do you really want to overwrite the existing meta-data?",
            dev.path.display(),
            layout_name(&dev.layout)
        )),
        Existing::OtherMetadata(what) => Some(format!(
            "There appears to be {what} on {} where the v08 metadata would go.\n\
             Do you really want to overwrite it?",
            dev.path.display()
        )),
        Existing::FilesystemSignature(fs) => Some(format!(
            "{} holds a {fs} filesystem signature where the metadata would go.\n\
             Do you really want to overwrite it with meta-data?",
            dev.path.display()
        )),
    };
    if let Some(question) = question {
        match confirm {
            Confirm::Force => {}
            Confirm::Ask => {
                if !ask_yes(&question)? {
                    return Err(CliError::exec(anyhow::anyhow!(
                        "create-md {}: operation cancelled; nothing was written to {}",
                        target.label(),
                        dev.path.display()
                    )));
                }
            }
        }
    }
    meta::create_md(&dev, &opts)?;
    print("New drbd meta data block successfully created.\n")
}

fn layout_name(layout: &Layout) -> String {
    match layout {
        Layout::Internal => "internal".into(),
        Layout::FlexExternal => "flexible external".into(),
        Layout::Indexed(i) => format!("indexed external, slot {i}"),
    }
}

/// Asks on stderr, reads one line from stdin; true only for `yes`.
fn ask_yes(question: &str) -> Result<bool, CliError> {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{question}\n[need to type 'yes' to confirm] ");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        CliError::exec(anyhow::Error::new(e).context("reading the answer from stdin"))
    })?;
    Ok(line.trim() == "yes")
}

/// `urbdadm dump-md RES`. The dump is printed even when the activity log has a damaged
/// transaction block (it is what an operator needs then), but the command fails naming
/// the block and its offset, so a corrupt log is never taken for a clean one.
pub fn dump_md(ctx: &Context, names: &[String]) -> Result<(), CliError> {
    let mut damaged = None;
    for_each_md(ctx, names, |md| {
        if damaged.is_none() {
            damaged = md.verify_al().err();
        }
        md.dump_md()
    })?;
    match damaged {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `urbdadm show-gi RES`.
pub fn show_gi(ctx: &Context, names: &[String]) -> Result<(), CliError> {
    for_each_md(ctx, names, |md| md.show_gi())
}

/// `urbdadm get-gi RES`.
pub fn get_gi(ctx: &Context, names: &[String]) -> Result<(), CliError> {
    for_each_md(ctx, names, |md| md.get_gi())
}

fn for_each_md(
    ctx: &Context,
    names: &[String],
    mut render: impl FnMut(&meta::Metadata) -> String,
) -> Result<(), CliError> {
    for target in ctx.targets(names)? {
        let dev = meta_device(&target);
        if ctx.dry_run {
            print(&format!(
                "read v08 metadata of {} from {} ({})\n",
                target.label(),
                dev.path.display(),
                layout_name(&dev.layout)
            ))?;
            continue;
        }
        let md = meta::read_md(&dev)?;
        print(&render(&md))?;
    }
    Ok(())
}
