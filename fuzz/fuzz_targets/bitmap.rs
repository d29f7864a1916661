//! The bitmap exchange's decoders (plain and run-length chunks) merged into a bitmap.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| urbd::fuzzing::bitmap(data));
