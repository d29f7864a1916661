//! Caps on everything the input controls. A configuration that hits one is refused with
//! [`super::ConfigError::Limit`], never with a panic or an unbounded allocation.

/// Largest configuration file read (drbd.conf files are a few KiB).
pub const MAX_FILE_SIZE: u64 = 1 << 20;
/// Most files read through includes, the top file included.
pub const MAX_FILES: usize = 1024;
/// Deepest include chain (flex's old compatibility stack held 10 buffers).
pub const MAX_INCLUDE_DEPTH: usize = 10;
/// Most tokens in one file.
pub const MAX_TOKENS: usize = 200_000;
/// Longest unquoted word (drbd-utils' scanner: `[a-zA-Z0-9/._-]{1,128}`).
pub const MAX_WORD_LEN: usize = 128;
/// Longest double-quoted string, in characters between the quotes (drbd-utils: 255).
pub const MAX_QUOTED_LEN: usize = 255;
/// Deepest `{` nesting inside a `skip { ... }` block.
pub const MAX_SKIP_NESTING: usize = 64;
/// Most resources in one configuration.
pub const MAX_RESOURCES: usize = 4096;
/// Most volumes in one section (DRBD_VOLUME_MAX is 65535; this is far above real use).
pub const MAX_VOLUMES: usize = 1024;
/// Most host sections in one resource.
pub const MAX_HOSTS: usize = 64;
