//! Where metrics come from. Each source owns its kind of input end to end (its client, its
//! syntax, its pure conversion into [`Metric`]s) and hands the agent what any source can:
//! metrics, how each of its targets answered, and counts for the cycle's log line.

pub mod plugins;
pub mod prometheus;

use std::time::{Duration, SystemTime};

use crate::metric::Metric;

/// How one target answered this cycle; the agent's /metrics shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    /// Where the target is (its base URL).
    pub base_url: String,
    /// The region it serves; None while no plugin has said.
    pub region: Option<String>,
    pub up: bool,
    pub latency: Option<Duration>,
}

/// What a source collected in one cycle.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Collected {
    /// Stamped with the cycle's timestamp.
    pub metrics: Vec<Metric>,
    /// One per target, in configuration order.
    pub statuses: Vec<TargetStatus>,
    pub summary: Summary,
}

/// The counts the cycle's log line reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub targets: usize,
    /// Targets that answered and were published as healthy.
    pub healthy: usize,
    /// Targets published as unhealthy.
    pub unhealthy: usize,
    /// Queries that failed on targets that were up (a plugin's cost queries).
    pub errors: u32,
    /// What scrape targets sent that was not published, by reason.
    pub scrape_dropped: prometheus::Dropped,
}

impl Collected {
    /// Adds `metrics`, moving the larger vector instead of copying it: a 100k-series
    /// scrape's metrics are 13 MB, and two copies at once would be the cycle's peak. The
    /// order between the two is not kept; nothing downstream depends on it.
    pub fn take_metrics(&mut self, mut metrics: Vec<Metric>) {
        if metrics.len() > self.metrics.len() {
            std::mem::swap(&mut self.metrics, &mut metrics);
        }
        self.metrics.append(&mut metrics);
    }

    /// Adds another source's collection to this one.
    pub fn merge(&mut self, other: Collected) {
        self.take_metrics(other.metrics);
        self.statuses.extend(other.statuses);
        self.summary.targets += other.summary.targets;
        self.summary.healthy += other.summary.healthy;
        self.summary.unhealthy += other.summary.unhealthy;
        self.summary.errors += other.summary.errors;
        self.summary
            .scrape_dropped
            .add(&other.summary.scrape_dropped);
    }
}

/// One of the agent's sources, chosen at start from the configuration.
pub enum Source {
    /// Boxed: the sources hold clients and state, and the enum is moved.
    Plugins(Box<plugins::Collector>),
    Prometheus(Box<prometheus::PrometheusSource>),
    /// Hands out prepared collections, one a cycle, stamped with the cycle's time (tests).
    #[cfg(test)]
    Fake(std::collections::VecDeque<Collected>),
}

impl Source {
    /// Collects one cycle's metrics, stamped `timestamp`.
    pub async fn collect(&mut self, timestamp: SystemTime) -> Collected {
        match self {
            Source::Plugins(collector) => collector.collect(timestamp).await,
            Source::Prometheus(source) => source.collect(timestamp).await,
            #[cfg(test)]
            Source::Fake(script) => {
                let mut next = script.pop_front().unwrap_or_default();
                for m in &mut next.metrics {
                    m.timestamp = timestamp;
                }
                next
            }
        }
    }
}
