//! cloudwatch-publisher: publishes FinFocus cost-plugin health and projected cost to
//! Amazon CloudWatch on a cron schedule.
//!
//! The data flows like a Vector pipeline: [`source`] collects [`sample::Sample`]s from the
//! plugin fleet, [`transform`] turns them into [`datum::Datum`]s without any I/O, and
//! [`sink`] publishes them (batched by [`batch`], with failures parked in [`queue`]).
//! [`cycle`] runs one pass of that pipeline, [`scheduler`] runs cycles on the cron schedule
//! and [`shutdown`] turns signals into a clean stop.

pub mod basket;
pub mod batch;
pub mod config;
pub mod cycle;
pub mod datum;
pub mod exit;
pub mod health;
pub mod logging;
pub mod plugin;
pub mod queue;
pub mod region_memory;
pub mod sample;
pub mod scheduler;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod stats;
pub mod transform;
pub mod untrusted;
