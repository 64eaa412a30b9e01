#![no_main]
// The invariants live in the library (src/fuzzing/buffer.rs), so make test replays the corpus
// through the same code on stable.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudwatch_publisher::fuzzing::buffer::run(data));
