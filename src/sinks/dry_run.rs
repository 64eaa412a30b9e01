//! The `--dry-run` sink: prints each datum as a JSON line on stdout instead of sending it.

use crate::logging::LineWriter;
use crate::metric::{Metric, Value};
use crate::sinks::cloudwatch::{MetricSink, PutError};

/// Batches (of up to 1000 lines, about 200 KB) that may wait for a slow stdout: a few MB at
/// most, and a stalled stdout shows within a few cycles.
const QUEUED_BATCHES: usize = 16;

/// Prints datums as JSON lines on stdout instead of sending them; needs no AWS access.
///
/// Like the log, it never blocks on a stdout nobody reads: a batch that could not be queued
/// counts as a failed put, so its datums wait in the queue as they would for an unreachable
/// CloudWatch.
pub struct DryRunSink {
    out: LineWriter,
}

impl DryRunSink {
    pub fn stdout() -> Self {
        DryRunSink {
            out: LineWriter::stdout(QUEUED_BATCHES),
        }
    }
}

impl MetricSink for DryRunSink {
    async fn put(&self, namespace: &str, batch: &[Metric]) -> Result<(), PutError> {
        // One queued write per batch, not per line: a 1000-datum batch then takes one place
        // in the writer's queue, and it is printed whole or not at all.
        let mut text = String::with_capacity(batch.len() * 200);
        for d in batch {
            let mut line = serde_json::json!({
                "namespace": namespace,
                "metric_name": d.name,
                "dimensions": d.dimensions,
                "unit": d.unit.as_str(),
                "timestamp": humantime::format_rfc3339_millis(d.timestamp).to_string(),
            });
            // The fields PutMetricData would carry: Value, or Values and Counts.
            match &d.value {
                Value::Gauge(v) | Value::Counter(v) => line["value"] = serde_json::json!(v),
                Value::Distribution(d) => {
                    line["values"] = serde_json::json!(d.values);
                    line["counts"] = serde_json::json!(d.counts);
                }
            }
            text.push_str(&line.to_string());
            text.push('\n');
        }
        if !self.out.line(&text) {
            return Err(PutError::Failed(format!(
                "stdout is not being read: a batch of {} datum lines was not printed",
                batch.len()
            )));
        }
        Ok(())
    }
}
