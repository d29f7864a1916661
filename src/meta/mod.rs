//! DRBD v08 on-disk metadata.
