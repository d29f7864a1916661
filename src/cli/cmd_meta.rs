//! Metadata commands: create-md, dump-md, show-gi, get-gi, apply-al.

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

/// `urbdadm apply-al RES`: drbdmeta's `apply-al` on each volume's meta-disk, while the
/// resource is down (its lock is held meanwhile, so `up` cannot start in the middle).
///
/// Refused with drbdmeta's "Device '<minor>' is configured!" and exit 20 while the
/// resource's daemon runs: it owns the metadata then. A log that cannot be replayed on a
/// node that was Primary fails as drbdmeta fails (exit 1, nothing written); `up` then
/// marks the whole device out of sync instead.
pub fn apply_al(ctx: &Context, names: &[String]) -> Result<(), CliError> {
    let targets = ctx.targets(names)?;
    if ctx.dry_run {
        for t in &targets {
            let dev = meta_device(t);
            // What drbdadm-84 -d prints.
            print(&format!(
                "drbdmeta {} v08 {} {} apply-al\n",
                t.volume.minor,
                dev.path.display(),
                dev.layout.drbdmeta_index()
            ))?;
        }
        return Ok(());
    }
    let run_dir = crate::control::RunDir::from_env();
    let mut lock: Option<(String, crate::daemon::files::ResourceLock)> = None;
    for t in &targets {
        if lock.as_ref().is_none_or(|(res, _)| *res != t.view.resource) {
            if let Some((_, held)) = lock.take() {
                held.release();
            }
            lock = Some((t.view.resource.clone(), lock_down_resource(&run_dir, t)?));
        }
        apply_al_one(t)?;
    }
    if let Some((_, held)) = lock {
        held.release();
    }
    Ok(())
}

/// Takes the resource's daemon lock, or refuses because its daemon runs.
fn lock_down_resource(
    run_dir: &crate::control::RunDir,
    t: &Target,
) -> Result<crate::daemon::files::ResourceLock, CliError> {
    std::fs::create_dir_all(run_dir.path()).map_err(|e| {
        CliError::exec(
            anyhow::Error::new(e).context(format!("creating {}", run_dir.path().display())),
        )
    })?;
    match crate::daemon::files::ResourceLock::acquire(run_dir, &t.view.resource) {
        Ok(lock) => Ok(lock),
        Err(crate::daemon::DaemonError::AlreadyUp { pid, .. }) => {
            Err(CliError::exec(anyhow::anyhow!(
                "Device '{}' is configured! (resource {} is up, urbd pid {pid} owns its \
                 metadata; `urbdadm down {}` first); nothing was written",
                t.volume.minor,
                t.view.resource,
                t.view.resource
            )))
        }
        Err(e) => Err(CliError::exec(e)),
    }
}

/// `urbdadm outdate RES`: as drbdadm's `adm_outdate`, the running daemon marks the disk
/// Outdated (`drbdsetup outdate`); a resource that is down has its metadata changed in
/// place (`drbdmeta outdate`: `MDF_WAS_UP_TO_DATE` cleared; an inconsistent disk is
/// refused with exit code 5).
pub fn outdate(ctx: &Context, names: &[String]) -> Result<(), CliError> {
    let targets = ctx.targets(names)?;
    let run_dir = crate::control::RunDir::from_env();
    for t in &targets {
        if ctx.dry_run {
            let dev = meta_device(t);
            print(&format!(
                "drbdsetup-84 outdate {} || drbdmeta {} v08 {} {} outdate\n",
                t.volume.minor,
                t.volume.minor,
                dev.path.display(),
                dev.layout.drbdmeta_index()
            ))?;
            continue;
        }
        std::fs::create_dir_all(run_dir.path()).map_err(|e| {
            CliError::exec(
                anyhow::Error::new(e).context(format!("creating {}", run_dir.path().display())),
            )
        })?;
        match crate::daemon::files::ResourceLock::acquire(&run_dir, &t.view.resource) {
            Ok(lock) => {
                let r = outdate_offline(t);
                lock.release();
                r?;
            }
            Err(crate::daemon::DaemonError::AlreadyUp { .. }) => {
                super::cmd_daemon::per_volume(
                    ctx,
                    std::slice::from_ref(&t.view.resource),
                    "outdate",
                    |_| crate::control::Request::Outdate {
                        volume: Some(t.volume.volume),
                    },
                )?;
            }
            Err(e) => return Err(CliError::exec(e)),
        }
    }
    Ok(())
}

/// drbdmeta's `outdate` on metadata nobody uses: clear `MDF_WAS_UP_TO_DATE` of a
/// consistent disk; the superblock is the only block written.
fn outdate_offline(t: &Target) -> Result<(), CliError> {
    let dev = meta_device(t);
    let md = meta::read_md(&dev)?;
    let mut sb = md.superblock.clone();
    if !sb.flags.contains(meta::MdFlags::CONSISTENT) {
        return Err(CliError::with_code(
            5,
            format!(
                "{}: Device is inconsistent. ({}: an Inconsistent disk cannot be Outdated; nothing was written)",
                t.label(),
                dev.path.display()
            ),
        ));
    }
    if !sb.flags.contains(meta::MdFlags::WAS_UP_TO_DATE) {
        return Ok(());
    }
    sb.flags.set(meta::MdFlags::WAS_UP_TO_DATE, false);
    meta::write_superblock(&dev, &sb)?;
    Ok(())
}

fn apply_al_one(t: &Target) -> Result<(), CliError> {
    let dev = meta_device(t);
    let before = meta::read_md(&dev)?;
    for damage in before.damaged_al_blocks() {
        eprintln!("{}: {}: {damage}", t.label(), dev.path.display());
    }
    let (_, applied) = match meta::apply_al(&dev) {
        Ok(done) => done,
        Err(e @ meta::MetaError::AlReplay { .. }) => {
            // drbdmeta exits 1 here (and drbdadm passes it on).
            return Err(CliError::with_code(
                super::error::exit::NOT_DEFINED,
                format!(
                    "apply-al {}: {e}; the node was Primary, so the log must be applied but \
                     cannot be: nothing was written. `urbdadm up {}` marks the whole device \
                     out of sync (full sync) instead",
                    t.label(),
                    t.view.resource
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if applied.was_primary && applied.reinitialized {
        eprintln!(
            "{}: {} active extents in the activity log: {}",
            t.label(),
            applied.active_extents.len(),
            extent_ranges(&applied.active_extents)
        );
        // drbdmeta's line (ppsize of KiB).
        eprintln!(
            "Marked additional {} as out-of-sync based on AL.",
            ppsize_kib(applied.newly_set * 4)
        );
    }
    Ok(())
}

/// `0-3,7,9-10`: ascending extents as ranges.
fn extent_ranges(extents: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < extents.len() {
        let start = extents[i];
        let mut end = start;
        while i + 1 < extents.len() && extents[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = extents[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// drbd-utils' `ppsize()`: KiB scaled to KB/MB/GB/..., rounded at half a unit.
fn ppsize_kib(mut kib: u64) -> String {
    let units = ["KB", "MB", "GB", "TB", "PB", "EB"];
    let mut u = 0;
    while kib >= 10_000 && u + 1 < units.len() {
        kib = (kib >> 10) + u64::from(kib & 512 != 0);
        u += 1;
    }
    format!("{kib} {}", units[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_sizes() {
        assert_eq!(extent_ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(extent_ranges(&[]), "");
        assert_eq!(ppsize_kib(4096), "4096 KB");
        assert_eq!(ppsize_kib(8192 * 4), "32 MB");
    }
}
