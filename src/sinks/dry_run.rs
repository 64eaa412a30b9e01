//! The `--dry-run` sink: prints each datum as a JSON line on stdout instead of sending it.

use crate::logging::LineWriter;
use crate::metric::{Metric, Value};
use crate::sinks::cloudwatch::{MetricSink, PutError};

/// Prints datums as JSON lines on stdout instead of sending them; needs no AWS access.
///
/// Like the log, it never blocks on a stdout nobody reads: a batch whose lines could not all
/// be queued counts as a failed put, so its datums wait in the queue as they would for an
/// unreachable CloudWatch (lines that did get out are printed again with them).
pub struct DryRunSink {
    out: LineWriter,
}

impl DryRunSink {
    pub fn stdout() -> Self {
        DryRunSink {
            out: LineWriter::stdout(),
        }
    }
}

impl MetricSink for DryRunSink {
    async fn put(&self, namespace: &str, batch: &[Metric]) -> Result<(), PutError> {
        let mut dropped = 0;
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
                Value::Distribution { values, counts } => {
                    line["values"] = serde_json::json!(values);
                    line["counts"] = serde_json::json!(counts);
                }
            }
            dropped += usize::from(!self.out.line(&format!("{line}\n")));
        }
        if dropped > 0 {
            return Err(PutError::Failed(format!(
                "stdout is not being read: {dropped} of {} datum lines dropped",
                batch.len()
            )));
        }
        Ok(())
    }
}
