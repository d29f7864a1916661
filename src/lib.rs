//! urbd: a userspace replicated block device.
//!
//! What DRBD 8.4 does in the kernel, done by a daemon: writes on the Primary are mirrored to
//! the peer over TCP, metadata lives on a meta-disk in DRBD's own v08 format, the device is
//! exported over NBD, and `urbdadm` is a drbdadm-compatible command line.
//!
//! Module map (dependency direction: config/meta -> cli):
//! - [`config`]: the drbd.conf language (lexer, parser, includes, per-host resolved view, dump).
//! - [`meta`]: DRBD v08 on-disk metadata (superblock, activity log, bitmap, layouts).
//! - [`cli`]: the `urbdadm` command tree.

pub mod cli;
pub mod config;
pub mod fuzzing;
pub mod io;
pub mod meta;
pub mod nbd;
