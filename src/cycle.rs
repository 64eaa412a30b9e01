//! One cycle of the pipeline: collect from the fleet, transform, publish; and its log line.
//!
//! [`Agent`] owns the pipeline's state (the source's region memory and the sink's queue), so
//! the scheduler only has to hand it a deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tracing::info;

use crate::config::Config;
use crate::sink::{MetricSink, PublishReport, Publisher, RetryPolicy};
use crate::source::Collector;
use crate::transform;

pub struct Agent<S> {
    collector: Collector,
    publisher: Publisher<S>,
}

/// What one cycle did.
#[derive(Debug, Clone)]
pub struct CycleReport {
    pub timestamp: SystemTime,
    pub collected: usize,
    pub publish: PublishReport,
    pub duration: Duration,
}

impl<S: MetricSink> Agent<S> {
    pub fn new(config: &Config, sink: S) -> Self {
        Agent {
            collector: Collector::new(config),
            publisher: Publisher::new(
                sink,
                config.namespace.clone(),
                config.queue_max_datums,
                RetryPolicy::default(),
            ),
        }
    }

    /// Runs one cycle; publishing (retries included) stops trying at `deadline`.
    pub async fn run_cycle(&mut self, deadline: Instant) -> CycleReport {
        let started = Instant::now();
        let timestamp = whole_second(SystemTime::now());
        let collection = self.collector.collect().await;
        let collect_time = started.elapsed();
        let datums = transform::to_datums(&collection.samples, timestamp);
        let collected = datums.len();
        let publish = self.publisher.publish(datums, deadline).await;
        let duration = started.elapsed();
        info!(
            cycle_timestamp = %humantime::format_rfc3339(timestamp),
            targets = collection.targets,
            healthy = collection.healthy,
            unhealthy = collection.unhealthy,
            cost_errors = collection.cost_errors,
            datums = collected,
            published = publish.published,
            calls = publish.calls,
            queued = publish.queued,
            dropped = publish.dropped(),
            collect_ms = collect_time.as_millis() as u64,
            duration_ms = duration.as_millis() as u64,
            "cycle complete"
        );
        CycleReport {
            timestamp,
            collected,
            publish,
            duration,
        }
    }

    /// Sends whatever waits in the queue; used at shutdown.
    pub async fn flush(&mut self, deadline: Instant) -> PublishReport {
        if self.publisher.queued() == 0 {
            return PublishReport::default();
        }
        let report = self.publisher.publish(Vec::new(), deadline).await;
        info!(
            published = report.published,
            calls = report.calls,
            queued = report.queued,
            dropped = report.dropped(),
            "queue flushed"
        );
        report
    }

    pub fn queued(&self) -> usize {
        self.publisher.queued()
    }
}

/// Cycle timestamps fall on whole seconds, so a cron tick at :00 is stamped :00.
fn whole_second(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}
