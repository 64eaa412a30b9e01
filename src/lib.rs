//! cloudwatch-publisher: publishes FinFocus cost-plugin health and projected cost to
//! Amazon CloudWatch on a cron schedule.
//!
//! The data flows like a Vector pipeline: [`source`] collects [`sample::Sample`]s from the
//! plugin fleet, [`transform`] turns them into [`datum::Datum`]s without any I/O, and
//! [`sink`] publishes them (batched by [`batch`], with failures parked in [`queue`]).
//! [`cycle`] runs one pass of that pipeline, [`scheduler`] runs cycles on the cron schedule
//! and [`shutdown`] turns signals into a clean stop. [`run`] wires it all from the
//! environment; the binary only parses its command line and calls it.
//!
//! The modules are private: what the binary and the tests use is re-exported below, so the
//! compiler reports anything nothing uses.

mod basket;
mod batch;
mod config;
mod cycle;
mod datum;
mod exit;
mod health;
mod logging;
mod plugin;
mod queue;
mod region_memory;
pub mod run;
mod sample;
mod scheduler;
mod shutdown;
mod sink;
mod source;
mod stats;
mod transform;
mod untrusted;

pub use config::{VARIABLES, Variable};
pub use exit::Exit;
