//! The NBD server's handshake decoder on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| urbd::fuzzing::nbd_handshake(data));
