//! cloudwatch-publisher: publishes FinFocus cost-plugin health and projected cost to
//! Amazon CloudWatch on a cron schedule.
//!
//! The data flows like a Vector pipeline, a folder per stage: [`sources`] collect (the
//! plugin fleet today; each source owns its client, syntax and pure conversion), [`buffer`]
//! holds what has not been delivered, and [`sinks`] deliver (CloudWatch's rules and request
//! sizing live in `sinks::cloudwatch`). [`agent`] runs one pass of that pipeline,
//! [`scheduler`] runs passes on the cron schedule and [`shutdown`] turns signals into a clean
//! stop. [`run`] wires it all from the environment; the binary only parses its command line
//! and calls it. [`monitoring`] turns what the agent publishes into alarms and a dashboard.
//!
//! The modules are private: what the binary and the tests use is re-exported below, so the
//! compiler reports anything nothing uses.

mod agent;
#[doc(hidden)]
pub mod bench;
mod buffer;
#[cfg(test)]
mod complexity;
mod config;
mod exit;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod logging;
mod metric;
mod monitoring;
pub mod run;
mod schedule;
mod scheduler;
mod self_metrics;
mod shutdown;
mod sinks;
mod sources;
mod splay;
mod stats;
mod untrusted;

pub use config::{VARIABLES, Variable};
pub use exit::Exit;
pub use monitoring::{Output as MonitoringOutput, Settings as MonitoringSettings};
