//! urbd: a userspace replicated block device.
//!
//! What DRBD 8.4 does in the kernel, done by a daemon: writes on the Primary are mirrored to
//! the peer over TCP, metadata lives on a meta-disk in DRBD's own v08 format, the device is
//! exported over NBD, and `urbdadm` is a drbdadm-compatible command line.
//!
//! Module map (dependency direction: config/meta -> core -> daemon -> cli):
//! - [`config`]: the drbd.conf language (lexer, parser, includes, per-host resolved view, dump).
//! - [`meta`]: DRBD v08 on-disk metadata (superblock, activity log, bitmap, layouts).
//! - [`io`]: block backends on io_uring (O_DIRECT files and block devices), in memory, with
//!   injected faults.
//! - [`nbd`]: the NBD server (io_uring loop, handshake, requests, replies) and a small client.
//! - [`wire`]: the peer protocol codec (frames, packets, version negotiation, auth bytes).
//! - [`sbsave`]: split-brain saves: the victim's discarded blocks, kept in a file.
//! - [`core`]: the sans-IO state machine of roles, disk states and generation UUIDs.
//! - [`control`]: the urbdadm <-> urbd request/response protocol on a unix socket.
//! - [`status`]: renderers for /proc/drbd (8.4), `status` (9 style) and JSON.
//! - [`daemon`]: the `urbd` node daemon that wires config, metadata and core together.
//! - [`cli`]: the `urbdadm` command tree.
//! - [`fuzzing`]: the entry points of the fuzz targets.

pub mod cli;
mod code;
pub mod config;
pub mod control;
pub mod core;
pub mod daemon;
pub mod fuzzing;
pub mod io;
pub mod meta;
pub mod nbd;
pub mod sbsave;
pub mod status;
pub mod wire;
