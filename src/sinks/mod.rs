//! Where metrics go: CloudWatch through the SDK, or stdout with `--dry-run`. Both receive
//! the same PutMetricData requests from the CloudWatch sink's [`cloudwatch::Publisher`].

pub mod cloudwatch;
pub mod dry_run;

use crate::metric::Metric;
use cloudwatch::sdk::CloudWatchSink;
use cloudwatch::{MetricSink, PutError};
use dry_run::DryRunSink;

/// The agent's sink, chosen at start by `--dry-run`.
pub enum Sink {
    CloudWatch(CloudWatchSink),
    DryRun(DryRunSink),
}

impl MetricSink for Sink {
    async fn put(&self, namespace: &str, batch: &[Metric]) -> Result<(), PutError> {
        match self {
            Sink::CloudWatch(s) => s.put(namespace, batch).await,
            Sink::DryRun(s) => s.put(namespace, batch).await,
        }
    }
}
