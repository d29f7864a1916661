//! The v08 metadata decoders on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| urbd::fuzzing::meta(data));
