//! The invariants of every parser of outside input, as functions of raw bytes. The
//! `cargo fuzz` targets in `fuzz/` call them (`make fuzz`), and `tests/fuzz_corpus.rs`
//! replays the committed corpus and every crash found through them on the stable toolchain
//! (`make test`). Not an API, and not used by the agent.
//!
//! Each function runs the agent's own code on the input, the way a cycle runs it, and
//! panics when an invariant breaks: not only "no panic", but the caps respected (datums per
//! target, record and log sizes), every dimension valid for CloudWatch, and the work done
//! bounded by the input's length. Time and memory are checked by libFuzzer itself
//! (`-timeout`, `-rss_limit_mb`, see the Makefile) and by the complexity guards in each
//! parser's unit tests.

pub mod buffer;
pub mod config;
pub mod connect;
pub mod exposition;
pub mod health;

/// What a fuzz target runs on one input.
pub type Target = fn(&[u8]);

/// Every fuzz target: its name (the file in `fuzz/fuzz_targets/` and the corpus folder)
/// and the function it runs.
pub const TARGETS: &[(&str, Target)] = &[
    ("buffer", buffer::run),
    ("config", config::run),
    ("connect", connect::run),
    ("exposition", exposition::run),
    ("health", health::run),
];
