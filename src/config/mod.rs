//! The drbd.conf configuration language.
