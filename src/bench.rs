//! The pipeline's pure stages, reachable from `benches/pipeline.rs`: not an API, and not
//! used by the agent. Each function runs one stage the way a cycle runs it, so the
//! benchmarks measure the code the agent runs, not a copy of it.

use std::time::SystemTime;

pub use crate::metric::Metric;
pub use crate::sources::prometheus::convert::{Converted, Rules, State, convert};
pub use crate::sources::prometheus::parse::{Format, Scrape, parse};

use crate::buffer::record;
use crate::sinks::cloudwatch::{batch, rules, sdk};

/// Checks every datum against the PutMetricData rules and cuts the valid ones into
/// requests, as a publish does: the number of requests.
pub fn validate_and_batch(metrics: &[Metric], namespace: &str, now: SystemTime) -> usize {
    let valid: Vec<Metric> = metrics
        .iter()
        .filter(|m| rules::check(m, now).is_ok())
        .cloned()
        .collect();
    batch::split(&valid, namespace).len()
}

/// The SDK's `MetricDatum` of every metric, as the CloudWatch sink builds them.
pub fn to_datums(metrics: &[Metric]) -> usize {
    metrics.iter().map(sdk::to_metric_datum).count()
}

/// One buffer record holding `metrics`, framed as it is written to memory or disk.
pub fn encode(metrics: &[Metric]) -> Vec<u8> {
    record::frame(&record::data(1, metrics))
}

/// The metrics of a framed record, as a publish reads them back.
pub fn decode(frame: &[u8]) -> Vec<Metric> {
    record::metrics(&frame[record::HEADER..]).expect("a record this module encoded")
}
