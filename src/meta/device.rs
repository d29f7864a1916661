//! Opening the device that holds the metadata and doing positioned, 4 KiB-aligned I/O on
//! it. This is plain `std::fs` plus two ioctls; the io_uring data path lives elsewhere.
//!
//! Writes go through the page cache and are made durable with `fdatasync` before a write
//! function returns, so a reader that uses `O_DIRECT` (drbdmeta) sees them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::MetaError;

/// How to open a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only (probe, read_md).
    Read,
    /// Read and write; fails with [`MetaError::ReadOnly`] on a read-only device.
    Write,
    /// Read and write with `O_EXCL` on block devices, so that a mounted filesystem or a
    /// device held by another program is refused with [`MetaError::Busy`] (drbdmeta opens
    /// flexible and internal metadata this way).
    WriteExclusive,
}

/// An open metadata device.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
    size: u64,
    is_block: bool,
}

// `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: rustix::ioctl::Opcode = rustix::ioctl::opcode::read::<u64>(0x12, 114);

// `_IO(0x12, 94)`; despite the encoding it writes an int through its argument.
const BLKROGET: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0x12, 94);

fn block_device_read_only(file: &File) -> io::Result<bool> {
    // SAFETY: BLKROGET is a getter ioctl that writes one C int.
    let ctl = unsafe { rustix::ioctl::Getter::<BLKROGET, std::ffi::c_int>::new() };
    // SAFETY: the opcode and output type match the kernel's definition.
    unsafe { rustix::ioctl::ioctl(file, ctl) }
        .map(|ro| ro != 0)
        .map_err(io::Error::from)
}

fn block_device_size(file: &File) -> io::Result<u64> {
    // SAFETY: BLKGETSIZE64 is a getter ioctl that writes one u64 (size_t on 64-bit Linux).
    let ctl = unsafe { rustix::ioctl::Getter::<BLKGETSIZE64, u64>::new() };
    // SAFETY: the opcode and output type match the kernel's definition.
    unsafe { rustix::ioctl::ioctl(file, ctl) }.map_err(io::Error::from)
}

impl Disk {
    /// Opens `path`. Block devices are sized with `BLKGETSIZE64`, files by their length.
    pub fn open(path: &Path, access: Access) -> Result<Self, MetaError> {
        let is_block = std::fs::metadata(path)
            .map(|m| m.file_type().is_block_device())
            .map_err(|source| MetaError::Open {
                path: path.to_owned(),
                source,
            })?;
        let mut opts = OpenOptions::new();
        opts.read(true);
        if access != Access::Read {
            opts.write(true);
        }
        if access == Access::WriteExclusive && is_block {
            opts.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
        }
        let file = opts.open(path).map_err(|source| {
            let read_only = matches!(
                source.raw_os_error(),
                Some(code) if code == rustix::io::Errno::ROFS.raw_os_error()
                    || code == rustix::io::Errno::ACCESS.raw_os_error()
                    || code == rustix::io::Errno::PERM.raw_os_error()
            );
            let busy = source.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error());
            if access != Access::Read && read_only {
                MetaError::ReadOnly {
                    path: path.to_owned(),
                    source,
                }
            } else if access == Access::WriteExclusive && busy {
                MetaError::Busy {
                    path: path.to_owned(),
                }
            } else {
                MetaError::Open {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        // A read-only block device (`losetup -r`, `blockdev --setro`) may still be opened
        // O_RDWR; only the write fails (EPERM). Ask before writing anything.
        if access != Access::Read && is_block {
            let ro = block_device_read_only(&file).map_err(|source| MetaError::Io {
                path: path.to_owned(),
                op: "read-only query (BLKROGET)",
                offset: 0,
                len: 0,
                source,
            })?;
            if ro {
                return Err(MetaError::ReadOnly {
                    path: path.to_owned(),
                    source: io::Error::from_raw_os_error(rustix::io::Errno::ROFS.raw_os_error()),
                });
            }
        }
        let size = if is_block {
            block_device_size(&file)
        } else {
            file.metadata().map(|m| m.len())
        }
        .map_err(|source| MetaError::Io {
            path: path.to_owned(),
            op: "size query",
            offset: 0,
            len: 0,
            source,
        })?;
        Ok(Self {
            file,
            path: path.to_owned(),
            size,
            is_block,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path it was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Is it a block device (as opposed to a regular file)?
    pub fn is_block_device(&self) -> bool {
        self.is_block
    }

    /// Reads exactly `len` bytes at `offset`; fails with [`MetaError::Truncated`] if the
    /// device ends first. `len` must already be checked against a cap by the caller; it is
    /// checked against the device size here before anything is allocated.
    pub fn read_at(&self, offset: u64, len: u64, what: &'static str) -> Result<Vec<u8>, MetaError> {
        let truncated = || MetaError::Truncated {
            path: self.path.clone(),
            what,
            offset,
            len,
            device_bytes: self.size,
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {}
            _ => return Err(truncated()),
        }
        let len_usize = usize::try_from(len).map_err(|_| truncated())?;
        let mut buf = vec![0u8; len_usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::UnexpectedEof {
                    truncated()
                } else {
                    self.io_error("read", offset, len, source)
                }
            })?;
        Ok(buf)
    }

    /// Writes all of `buf` at `offset`. Nothing is written past the end of a block
    /// device; a regular file is not extended either (callers size-check first).
    pub fn write_at(&self, offset: u64, buf: &[u8], what: &'static str) -> Result<(), MetaError> {
        let len = buf.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {}
            _ => {
                return Err(MetaError::Truncated {
                    path: self.path.clone(),
                    what,
                    offset,
                    len,
                    device_bytes: self.size,
                });
            }
        }
        #[cfg(test)]
        trace::note(
            &self.path,
            trace::Event::Write {
                offset,
                bytes: buf.to_vec(),
            },
        );
        self.file
            .write_all_at(buf, offset)
            .map_err(|source| self.io_error("write", offset, len, source))
    }

    /// Makes every write so far durable.
    pub fn sync(&self) -> Result<(), MetaError> {
        #[cfg(test)]
        trace::note(&self.path, trace::Event::Sync);
        self.file
            .sync_data()
            .map_err(|source| self.io_error("fdatasync", 0, 0, source))
    }

    fn io_error(&self, op: &'static str, offset: u64, len: u64, source: io::Error) -> MetaError {
        let code = source.raw_os_error();
        if code == Some(rustix::io::Errno::ROFS.raw_os_error())
            || (op == "write" && code == Some(rustix::io::Errno::PERM.raw_os_error()))
        {
            return MetaError::ReadOnly {
                path: self.path.clone(),
                source,
            };
        }
        MetaError::Io {
            path: self.path.clone(),
            op,
            offset,
            len,
            source,
        }
    }
}

/// Test support: records the writes and syncs this thread makes on metadata devices, in
/// order, so that a test can replay any prefix of them onto an earlier image (the crash
/// ordering test, `daemon/disk/crash_tests.rs`).
#[cfg(test)]
pub(crate) mod trace {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    /// One recorded operation.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Event {
        /// `bytes` written at `offset`.
        Write { offset: u64, bytes: Vec<u8> },
        /// fdatasync: everything before it is durable.
        Sync,
    }

    thread_local! {
        static RECORDING: RefCell<Option<(PathBuf, Vec<Event>)>> = const { RefCell::new(None) };
    }

    /// Starts recording what this thread does to `path` (nothing else is recorded).
    pub(crate) fn start(path: &Path) {
        RECORDING.with(|r| *r.borrow_mut() = Some((path.to_owned(), Vec::new())));
    }

    /// Stops recording and returns the events.
    pub(crate) fn stop() -> Vec<Event> {
        RECORDING.with(|r| r.borrow_mut().take().map(|(_, e)| e).unwrap_or_default())
    }

    pub(super) fn note(path: &Path, event: Event) {
        RECORDING.with(|r| {
            if let Some((p, events)) = r.borrow_mut().as_mut()
                && p == path
            {
                events.push(event);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_io_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.img");
        let f = File::create(&p).unwrap();
        f.set_len(8192).unwrap();
        drop(f);
        let d = Disk::open(&p, Access::Write).unwrap();
        assert_eq!(d.size(), 8192);
        assert!(!d.is_block_device());
        d.write_at(4096, &[7u8; 4096], "block").unwrap();
        d.sync().unwrap();
        assert_eq!(d.read_at(4096, 4096, "block").unwrap(), vec![7u8; 4096]);
        let e = d.read_at(8000, 4096, "superblock").unwrap_err();
        assert!(
            matches!(e, MetaError::Truncated { offset: 8000, .. }),
            "{e}"
        );
        assert!(d.write_at(u64::MAX, &[0], "x").is_err());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 8192);
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = Disk::open(Path::new("/nonexistent/urbd-meta"), Access::Read).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/urbd-meta"));
    }
}
