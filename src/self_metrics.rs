//! The agent's own metrics (SELF_METRICS): how each cycle went, under the single dimension
//! `Agent=AGENT_NAME`. Pure: a cycle's figures in, metrics out.
//!
//! A cycle's outcome is known only after it has published, so its self metrics wait in the
//! buffer for the next publish (or the shutdown flush), stamped with their own cycle's time.

use std::time::{Duration, SystemTime};

use crate::buffer::Gauges;
use crate::metric::{Dimensions, Metric, Unit, Value};
use crate::sinks::cloudwatch::PublishReport;

pub const CYCLE_DURATION: &str = "CycleDuration";
pub const DATUMS_PUBLISHED: &str = "DatumsPublished";
pub const QUEUE_DEPTH: &str = "QueueDepth";
pub const PUBLISH_FAILURES: &str = "PublishFailures";
pub const QUEUE_BYTES: &str = "QueueBytes";
pub const QUEUE_OLDEST_AGE: &str = "QueueOldestAge";
pub const DATUMS_DROPPED: &str = "DatumsDropped";
pub const CORRUPT_RECORDS: &str = "BufferCorruptRecords";

/// One dimension only: each self metric is one custom metric per agent. `monitoring`
/// builds the agent's alarms from this.
pub fn agent_dims(agent: &str) -> Dimensions {
    Dimensions::from([("Agent".to_string(), agent.to_string())])
}

/// The self metrics of one cycle that took `duration`, published as `report` says and left
/// the buffer as `buffer` says; `corrupt` is how many corrupt records were found since the
/// last cycle.
pub fn of_cycle(
    agent: &str,
    duration: Duration,
    report: &PublishReport,
    buffer: &Gauges,
    corrupt: u64,
    timestamp: SystemTime,
) -> Vec<Metric> {
    let dims = agent_dims(agent);
    let metric = |name: &str, value: Value, unit: Unit| Metric {
        name: name.to_string(),
        dimensions: dims.clone(),
        unit,
        timestamp,
        value,
    };
    vec![
        metric(
            CYCLE_DURATION,
            Value::Gauge(duration.as_secs_f64() * 1000.0),
            Unit::Milliseconds,
        ),
        metric(
            DATUMS_PUBLISHED,
            Value::Counter(report.published as f64),
            Unit::Count,
        ),
        metric(QUEUE_DEPTH, Value::Gauge(report.queued as f64), Unit::Count),
        metric(
            PUBLISH_FAILURES,
            Value::Counter(report.failed_calls as f64),
            Unit::Count,
        ),
        metric(QUEUE_BYTES, Value::Gauge(buffer.bytes as f64), Unit::Bytes),
        metric(
            QUEUE_OLDEST_AGE,
            Value::Gauge(buffer.oldest.map_or(0.0, |t| {
                timestamp
                    .duration_since(t)
                    .unwrap_or_default()
                    .as_secs_f64()
            })),
            Unit::Seconds,
        ),
        metric(
            DATUMS_DROPPED,
            Value::Counter(report.dropped() as f64),
            Unit::Count,
        ),
        metric(CORRUPT_RECORDS, Value::Counter(corrupt as f64), Unit::Count),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::cloudwatch::rules::check;

    fn ts() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn a_cycle_gives_eight_self_metrics_under_the_agent_dimension_only() {
        let report = PublishReport {
            published: 97,
            queued: 3,
            failed_calls: 2,
            dropped_overflow: 5,
            dropped_invalid: 1,
            ..PublishReport::default()
        };
        let buffer = Gauges {
            datums: 3,
            bytes: 150,
            oldest: Some(ts() - Duration::from_secs(120)),
            ..Gauges::default()
        };
        let out = of_cycle(
            "prod-eu",
            Duration::from_micros(812_500),
            &report,
            &buffer,
            2,
            ts(),
        );
        let got: Vec<_> = out
            .iter()
            .map(|m| (m.name.as_str(), m.value.clone(), m.unit))
            .collect();
        assert_eq!(
            got,
            [
                (CYCLE_DURATION, Value::Gauge(812.5), Unit::Milliseconds),
                (DATUMS_PUBLISHED, Value::Counter(97.0), Unit::Count),
                (QUEUE_DEPTH, Value::Gauge(3.0), Unit::Count),
                (PUBLISH_FAILURES, Value::Counter(2.0), Unit::Count),
                (QUEUE_BYTES, Value::Gauge(150.0), Unit::Bytes),
                (QUEUE_OLDEST_AGE, Value::Gauge(120.0), Unit::Seconds),
                (DATUMS_DROPPED, Value::Counter(6.0), Unit::Count),
                (CORRUPT_RECORDS, Value::Counter(2.0), Unit::Count),
            ]
        );
        let dims = Dimensions::from([("Agent".to_string(), "prod-eu".to_string())]);
        assert!(
            out.iter()
                .all(|m| m.dimensions == dims && m.timestamp == ts())
        );
    }

    #[test]
    fn a_quiet_cycle_still_reports_its_zeros() {
        let out = of_cycle(
            "a",
            Duration::ZERO,
            &PublishReport::default(),
            &Gauges::default(),
            0,
            ts(),
        );
        assert_eq!(out.len(), 8);
        assert!(
            out.iter()
                .all(|m| m.value.number() == 0.0 && check(m, ts()).is_ok())
        );
    }
}
