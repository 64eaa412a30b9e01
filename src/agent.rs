//! One cycle of the pipeline: collect from the fleet, transform, publish; its log line, its
//! entry in the agent's [`Stats`] and, with SELF_METRICS, the agent's own datums.
//!
//! [`Agent`] owns the pipeline's state (the source's region memory, the sink's queue and the
//! self datums waiting to go out), so the scheduler only has to hand it a deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tracing::info;

use crate::config::Config;
use crate::logging;
use crate::metric::Metric;
use crate::sinks::cloudwatch::{MetricSink, PublishReport, Publisher, RetryPolicy};
use crate::sources::plugins::Collector;
use crate::sources::plugins::sample::Sample;
use crate::sources::plugins::transform;
use crate::stats::{SharedStats, Stats};

pub struct Agent<S> {
    collector: Collector,
    publisher: Publisher<S>,
    stats: SharedStats,
    /// The Agent dimension, when SELF_METRICS is on.
    self_metrics: Option<String>,
    /// The last cycle's self datums: they go out with the next publish.
    self_datums: Vec<Metric>,
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
            stats: Stats::shared(SystemTime::now()),
            self_metrics: config.self_metrics.clone(),
            self_datums: Vec::new(),
        }
    }

    /// What the health listener reads.
    pub fn stats(&self) -> SharedStats {
        self.stats.clone()
    }

    /// Runs one cycle; publishing (retries included) stops trying at `deadline`.
    /// What it returns is the cycle's publish; the rest of what it did is in the stats and
    /// its log line.
    pub async fn run_cycle(&mut self, deadline: Instant) -> PublishReport {
        let started = Instant::now();
        let timestamp = whole_second(SystemTime::now());
        let mut collection = self.collector.collect().await;
        let collect_time = started.elapsed();
        let mut datums = transform::to_datums(&collection.samples, timestamp);
        let collected = datums.len();
        datums.append(&mut self.self_datums);
        let publish = self.publisher.publish(datums, deadline).await;
        let duration = started.elapsed();
        // Counted before it is logged, so whoever reads the log line finds it in /metrics.
        self.stats.lock().expect("stats lock").record_cycle(
            collected,
            std::mem::take(&mut collection.statuses),
            duration,
            &publish,
            (timestamp, SystemTime::now()),
        );
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
        logging::report_dropped();
        if let Some(agent) = &self.self_metrics {
            let cycle = Sample::Cycle {
                agent: agent.clone(),
                duration,
                published: publish.published,
                queued: publish.queued,
                failed_calls: publish.failed_calls,
            };
            self.self_datums = transform::to_datums(&[cycle], timestamp);
        }
        publish
    }

    /// Sends whatever waits: the queue and the last cycle's self datums. Used at shutdown
    /// and after `--once`.
    pub async fn flush(&mut self, deadline: Instant) -> PublishReport {
        if self.queued() == 0 {
            return PublishReport::default();
        }
        let self_datums = std::mem::take(&mut self.self_datums);
        let report = self.publisher.publish(self_datums, deadline).await;
        self.stats
            .lock()
            .expect("stats lock")
            .record_publish(&report);
        info!(
            published = report.published,
            calls = report.calls,
            queued = report.queued,
            dropped = report.dropped(),
            "queue flushed"
        );
        report
    }

    /// Datums not yet delivered: the retry queue and the self datums of the last cycle.
    pub fn queued(&self) -> usize {
        self.publisher.queued() + self.self_datums.len()
    }
}

/// Cycle timestamps fall on whole seconds, so a cron tick at :00 is stamped :00.
fn whole_second(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}
