//! The split-brain save file reader (header, records, trailer and checksum).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| urbd::fuzzing::sbsave(data));
