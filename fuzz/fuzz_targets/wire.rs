//! The peer-protocol decoders on a stream of arbitrary frames.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| urbd::fuzzing::wire(data));
