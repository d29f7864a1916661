//! The few block-device ioctls the backend needs (linux/fs.h numbers).

use std::io;
use std::os::fd::RawFd;

const BLKSSZGET: libc::c_ulong = 0x1268; // _IO(0x12, 104): logical block size, int
const BLKDISCARD: libc::c_ulong = 0x1277; // _IO(0x12, 119): u64[2] range
const BLKROTATIONAL: libc::c_ulong = 0x127e; // _IO(0x12, 126): unsigned short
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272; // _IOR(0x12, 114, size_t)

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Device size in bytes.
pub(crate) fn size(fd: RawFd) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    check(unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut v as *mut u64) })?;
    Ok(v)
}

/// Logical block size (the O_DIRECT alignment).
pub(crate) fn logical_block_size(fd: RawFd) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int.
    check(unsafe { libc::ioctl(fd, BLKSSZGET, &mut v as *mut libc::c_int) })?;
    u32::try_from(v).map_err(|_| io::Error::other("negative block size"))
}

/// True for spinning media.
pub(crate) fn is_rotational(fd: RawFd) -> bool {
    let mut v: libc::c_ushort = 0;
    // SAFETY: BLKROTATIONAL writes one unsigned short.
    let r = unsafe { libc::ioctl(fd, BLKROTATIONAL, &mut v as *mut libc::c_ushort) };
    r == 0 && v != 0
}

/// Discards a byte range (synchronous: io_uring has no portable discard opcode).
pub(crate) fn discard(fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    // SAFETY: BLKDISCARD reads two u64 through the pointer.
    check(unsafe { libc::ioctl(fd, BLKDISCARD, range.as_ptr()) })
}

/// True when the device advertises discard support (sysfs `discard_max_bytes` > 0).
pub(crate) fn can_discard(rdev: u64) -> bool {
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    std::fs::read_to_string(format!(
        "/sys/dev/block/{maj}:{min}/queue/discard_max_bytes"
    ))
    .ok()
    .and_then(|s| s.trim().parse::<u64>().ok())
    .is_some_and(|n| n > 0)
}
