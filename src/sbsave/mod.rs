//! Split-brain saves: before the victim of a split-brain resolution lets the resync
//! overwrite its divergent blocks, the daemon copies them, with their offsets, into a file
//! in the resource's state directory (`/var/lib/urbd/RES/split-brain-TIME-vVOL.blocks`);
//! `urbdadm split-brain-saves` lists those files and `urbdadm restore-split-brain-save`
//! writes one back to a device or file. DRBD throws these blocks away; urbd keeps them
//! because the admin who picked the wrong victim otherwise has no way back.
//!
//! The file format is in [`format`] (and `docs/SPLIT_BRAIN_SAVES.md`). This module does the
//! file work: which blocks to save (from the victim's own bitmap), writing the file
//! durably (temporary file, fsync, rename, fsync of the directory), listing, full
//! validation before a restore, and the restore.

pub mod format;

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::meta::Bitmap;

pub use format::{FormatError, Header, ReadError};

/// Environment variable with the cap on one save (`1G`, `512M`, `unlimited`, `off`).
pub const SAVE_MAX_ENV: &str = "URBD_SPLIT_BRAIN_SAVE_MAX";
/// The default cap on one save: 1 GiB.
pub const DEFAULT_SAVE_MAX: u64 = 1 << 30;

/// How much a victim may save before it lets a resync overwrite its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveLimit {
    /// Save up to this many bytes; more refuses the resync (StandAlone, nothing
    /// overwritten) and tells the admin.
    Max(u64),
    /// Save whatever the size (`unlimited`).
    Unlimited,
    /// Save nothing: the blocks are discarded as DRBD discards them (`off`; logged).
    Off,
}

impl SaveLimit {
    /// Parses the environment's value: a size with DRBD's unit suffixes (`k`, `M`, `G`,
    /// bare numbers are bytes), `unlimited` or `off`.
    pub fn parse(text: &str) -> Result<SaveLimit, String> {
        match text.trim() {
            "unlimited" => Ok(SaveLimit::Unlimited),
            "off" => Ok(SaveLimit::Off),
            t => crate::config::units::parse_scaled(t, crate::config::units::Scale::One)
                .map(SaveLimit::Max)
                .map_err(|e| {
                    format!(
                        "{SAVE_MAX_ENV}={t}: {e} (want a size such as 1G, or unlimited, or off)"
                    )
                }),
        }
    }

    /// `URBD_SPLIT_BRAIN_SAVE_MAX`, or the default 1 GiB.
    pub fn from_env() -> Result<SaveLimit, String> {
        match std::env::var(SAVE_MAX_ENV) {
            Ok(v) if !v.trim().is_empty() => SaveLimit::parse(&v),
            _ => Ok(SaveLimit::Max(DEFAULT_SAVE_MAX)),
        }
    }
}

/// The records to save for the set bits of `bitmap` on a device of `device_bytes`:
/// (offset, length), runs of adjacent blocks cut at [`format::MAX_RECORD_BYTES`], the last
/// block clipped to the device's end.
pub fn plan(bitmap: &Bitmap, device_bytes: u64) -> Vec<(u64, u32)> {
    let block = u64::from(format::BLOCK_SIZE);
    let per_record = u64::from(format::MAX_RECORD_BYTES) / block;
    let bits = bitmap.bits().min(device_bytes.div_ceil(block));
    let mut out = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    let flush = |first: u64, count: u64, out: &mut Vec<(u64, u32)>| {
        let mut b = first;
        while b < first + count {
            let n = per_record.min(first + count - b);
            let off = b * block;
            let len = (n * block).min(device_bytes - off);
            out.push((off, len as u32));
            b += n;
        }
    };
    for (wi, &w) in bitmap.words().iter().enumerate() {
        if w == 0 && run.is_none() {
            continue;
        }
        for i in 0..64 {
            let bit = wi as u64 * 64 + i;
            if bit >= bits {
                break;
            }
            let set = w & (1 << i) != 0;
            run = match (run, set) {
                (None, true) => Some((bit, 1)),
                (Some((f, c)), true) => Some((f, c + 1)),
                (Some((f, c)), false) => {
                    flush(f, c, &mut out);
                    None
                }
                (None, false) => None,
            };
        }
    }
    if let Some((f, c)) = run {
        flush(f, c, &mut out);
    }
    out
}

/// Everything [`write_save`] needs.
#[derive(Debug, Clone)]
pub struct SaveJob {
    /// The resource's state directory (created if missing).
    pub dir: PathBuf,
    /// The data disk to read the blocks from.
    pub disk: PathBuf,
    /// The header (its `records` and `data_bytes` are set from `runs`).
    pub header: Header,
    /// What to save, from [`plan`].
    pub runs: Vec<(u64, u32)>,
}

impl SaveJob {
    /// Bytes the save will hold.
    pub fn data_bytes(&self) -> u64 {
        self.runs.iter().map(|&(_, l)| u64::from(l)).sum()
    }
}

/// A save that is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The file.
    pub path: PathBuf,
    /// 4 KiB blocks in it.
    pub blocks: u64,
    /// Bytes of data in it.
    pub data_bytes: u64,
}

/// Why a save could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SaveError {
    /// What was being done, with the path.
    pub what: String,
    /// The cause.
    pub source: std::io::Error,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SaveError {
    let what = what.into();
    move |source| SaveError { what, source }
}

/// Writes the save durably: a temporary file in `job.dir`, the records read from the data
/// disk, fsync, rename to `split-brain-TIME-vVOL.blocks`, fsync of the directory. Only
/// when this returns `Ok` may the blocks be overwritten. On failure the temporary file is
/// removed.
pub fn write_save(job: &SaveJob) -> Result<Saved, SaveError> {
    fs::create_dir_all(&job.dir).map_err(io_err(format!("creating {}", job.dir.display())))?;
    let mut header = job.header.clone();
    header.records = job.runs.len() as u64;
    header.data_bytes = job.data_bytes();
    let name = free_name(&job.dir, header.created_unix, header.volume);
    let final_path = job.dir.join(&name);
    let tmp_path = job.dir.join(format!(".{name}.tmp"));
    let result = write_tmp(job, &header, &tmp_path).and_then(|()| {
        fs::rename(&tmp_path, &final_path).map_err(io_err(format!(
            "renaming {} to {}",
            tmp_path.display(),
            final_path.display()
        )))?;
        File::open(&job.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(format!(
                "syncing the directory {}",
                job.dir.display()
            )))
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    Ok(Saved {
        path: final_path,
        blocks: header.blocks(),
        data_bytes: header.data_bytes,
    })
}

fn write_tmp(job: &SaveJob, header: &Header, tmp: &Path) -> Result<(), SaveError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_err(format!("creating {}", tmp.display())))?;
    let disk = File::open(&job.disk).map_err(io_err(format!(
        "opening the data disk {}",
        job.disk.display()
    )))?;
    let mut w = format::SaveWriter::new(BufWriter::with_capacity(1 << 20, file), header.clone())
        .map_err(|e| write_err(tmp, e))?;
    let mut buf = vec![0u8; format::MAX_RECORD_BYTES as usize];
    for &(off, len) in &job.runs {
        let b = &mut buf[..len as usize];
        disk.read_exact_at(b, off).map_err(io_err(format!(
            "reading {len} bytes at offset {off} of the data disk {}",
            job.disk.display()
        )))?;
        w.record(off, b).map_err(|e| write_err(tmp, e))?;
    }
    let bw = w.finish().map_err(|e| write_err(tmp, e))?;
    let file = bw
        .into_inner()
        .map_err(|e| io_err(format!("writing {}", tmp.display()))(e.into_error()))?;
    file.sync_all()
        .map_err(io_err(format!("syncing {}", tmp.display())))
}

fn write_err(tmp: &Path, e: format::WriteError) -> SaveError {
    match e {
        format::WriteError::Io(source) => SaveError {
            what: format!("writing {}", tmp.display()),
            source,
        },
        other => SaveError {
            what: format!("writing {}", tmp.display()),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// `split-brain-YYYYMMDDTHHMMSSZ-vVOL.blocks`, with `-N` added if that name is taken.
fn free_name(dir: &Path, unix: u64, volume: u32) -> String {
    let stamp = utc_stamp(unix);
    let base = format!("split-brain-{stamp}-v{volume}");
    (0..1000)
        .map(|i| {
            if i == 0 {
                format!("{base}.blocks")
            } else {
                format!("{base}-{i}.blocks")
            }
        })
        .find(|n| !dir.join(n).exists())
        .unwrap_or_else(|| format!("{base}-{}.blocks", std::process::id()))
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (UTC).
pub fn utc_stamp(unix: u64) -> String {
    let (y, m, d) = civil_from_days((unix / 86_400) as i64);
    let s = unix % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC`, for listings.
pub fn utc_text(unix: u64) -> String {
    let (y, m, d) = civil_from_days((unix / 86_400) as i64);
    let s = unix % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A save file and what its header says (or why it cannot be read).
#[derive(Debug)]
pub struct Listed {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub len: u64,
    /// Its header.
    pub header: Result<Header, ReadError>,
}

impl Listed {
    /// The header is readable and the file has the length it announces (a quick check;
    /// the checksum is verified by [`validate`]).
    pub fn looks_complete(&self) -> bool {
        self.header.as_ref().is_ok_and(|h| h.file_len() == self.len)
    }
}

/// The saves in `dir` (`split-brain-*.blocks`), oldest first; empty if `dir` is missing.
pub fn list(dir: &Path) -> Vec<Listed> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("split-brain-") && n.ends_with(".blocks"))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|path| {
            let (len, header) = match File::open(&path) {
                Ok(f) => {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    let header =
                        format::SaveReader::new(BufReader::new(f)).map(|r| r.header().clone());
                    (len, header)
                }
                Err(e) => (0, Err(ReadError::Io(e))),
            };
            Listed { path, len, header }
        })
        .collect()
}

/// A save file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {err}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub err: ReadError,
}

/// Reads the whole file and checks every field, every record and the checksum. Returns
/// the header and the end of the highest record (the size a restore target needs).
pub fn validate(path: &Path) -> Result<(Header, u64), FileError> {
    let f = File::open(path).map_err(|e| FileError {
        path: path.to_owned(),
        err: ReadError::Io(e),
    })?;
    validate_reader(f).map_err(|err| FileError {
        path: path.to_owned(),
        err,
    })
}

fn validate_reader<R: Read>(r: R) -> Result<(Header, u64), ReadError> {
    let mut rd = format::SaveReader::new(BufReader::with_capacity(1 << 20, r))?;
    let mut buf = Vec::new();
    let mut end = 0;
    while let Some(rec) = rd.next_record(&mut buf)? {
        end = rec.offset + u64::from(rec.len);
    }
    Ok((rd.header().clone(), end))
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The file's header.
    pub header: Header,
    /// Records written.
    pub records: u64,
}

/// Writes the save `path` back onto `target` (at each record's offset), after checking the
/// whole file: a damaged file writes nothing. The file is read twice through one open
/// handle (check, then write); a file that changes in between fails the second read's
/// checks, and the error says how far the restore got. `target` is synced at the end.
pub fn restore(path: &Path, target: &File) -> Result<Restored, RestoreError> {
    let mut f = File::open(path).map_err(|e| {
        RestoreError::Save(FileError {
            path: path.to_owned(),
            err: ReadError::Io(e),
        })
    })?;
    let (header, _) = validate_reader(&mut f).map_err(|err| {
        RestoreError::Save(FileError {
            path: path.to_owned(),
            err,
        })
    })?;
    f.seek(SeekFrom::Start(0)).map_err(|e| {
        RestoreError::Save(FileError {
            path: path.to_owned(),
            err: ReadError::Io(e),
        })
    })?;
    let mut rd = format::SaveReader::new(BufReader::with_capacity(1 << 20, f)).map_err(|err| {
        RestoreError::Save(FileError {
            path: path.to_owned(),
            err,
        })
    })?;
    let mut buf = Vec::new();
    let mut records = 0;
    loop {
        match rd.next_record(&mut buf) {
            Ok(Some(rec)) => {
                target
                    .write_all_at(&buf, rec.offset)
                    .map_err(|source| RestoreError::Target {
                        offset: rec.offset,
                        written: records,
                        source,
                    })?;
                records += 1;
            }
            Ok(None) => break,
            Err(err) => {
                return Err(RestoreError::Changed {
                    written: records,
                    err: FileError {
                        path: path.to_owned(),
                        err,
                    },
                });
            }
        }
    }
    target.sync_all().map_err(|source| RestoreError::Target {
        offset: 0,
        written: records,
        source,
    })?;
    Ok(Restored { header, records })
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The save file is damaged or unreadable: nothing was written.
    #[error("{0}; nothing was written")]
    Save(FileError),
    /// The save file changed between the check and the write.
    #[error("{err} (the file changed during the restore; {written} records were written)")]
    Changed {
        /// Records written before.
        written: u64,
        /// What is wrong.
        err: FileError,
    },
    /// Writing the target failed.
    #[error("writing the target at offset {offset} failed after {written} records: {source}")]
    Target {
        /// Where.
        offset: u64,
        /// Records written before.
        written: u64,
        /// The cause.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests;
