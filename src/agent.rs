//! One cycle of the pipeline: the source collects, the cycle's metrics go into the buffer,
//! the sink publishes what the buffer holds; the cycle's log line, its entry in the agent's
//! [`Stats`] and, with SELF_METRICS, the agent's own metrics.
//!
//! [`Agent`] owns the pipeline's state (the source, the buffer and the self metrics waiting
//! to go out), so the scheduler only has to hand it a deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::buffer::Buffer;
use crate::config::Config;
use crate::logging;
use crate::self_metrics;
use crate::sinks::cloudwatch::{MetricSink, PublishReport, Publisher, RetryPolicy};
use crate::sources::plugins::Collector;
use crate::sources::prometheus::PrometheusSource;
use crate::sources::{Collected, Source};
use crate::splay::{self, Splay};
use crate::stats::{SharedStats, Stats};

pub struct Agent<S> {
    /// Collected from all at once each cycle.
    sources: Vec<Source>,
    /// What has been collected and not yet delivered; every cycle passes through it.
    buffer: Buffer,
    publisher: Publisher<S>,
    stats: SharedStats,
    /// The Agent dimension, when SELF_METRICS is on.
    self_metrics: Option<String>,
    /// Corrupt records the self metrics have counted so far.
    corrupt_reported: u64,
    splay: Splay,
    /// This agent's place in the splay, from its identity.
    splay_fraction: f64,
    /// Turns true when the agent is stopping: a cycle waiting for its send time sends now.
    stopping: Option<watch::Receiver<bool>>,
}

impl<S: MetricSink> Agent<S> {
    pub fn new(config: &Config, sink: S, buffer: Buffer) -> Self {
        let publisher = Publisher::new(sink, config.namespace.clone(), RetryPolicy::default());
        let mut sources = vec![Source::Plugins(Box::new(Collector::new(config)))];
        if !config.prometheus.targets.is_empty() {
            sources.push(Source::Prometheus(Box::new(PrometheusSource::new(
                &config.prometheus,
                config.target_timeout,
            ))));
        }
        let mut agent = Self::from_parts(sources, buffer, publisher, config.self_metrics.clone());
        agent.splay = config.publish_splay;
        agent.splay_fraction = splay::fraction(&config.agent_name, &splay::host_name());
        agent
    }

    fn from_parts(
        sources: Vec<Source>,
        buffer: Buffer,
        publisher: Publisher<S>,
        self_metrics: Option<String>,
    ) -> Self {
        Agent {
            sources,
            buffer,
            publisher,
            stats: Stats::shared(SystemTime::now()),
            self_metrics,
            corrupt_reported: 0,
            splay: Splay::Fixed(Duration::ZERO),
            splay_fraction: 0.0,
            stopping: None,
        }
    }

    /// How long after its tick this agent sends, in an interval of `interval` of which
    /// `room` is left to send in.
    pub fn publish_offset(&self, interval: Duration, room: Duration) -> Duration {
        self.splay.offset(self.splay_fraction, interval, room)
    }

    /// From now on, a cycle waiting for its send time sends as soon as `stopping` is true.
    pub fn stop_waits_on(&mut self, stopping: watch::Receiver<bool>) {
        self.stopping = Some(stopping);
    }

    /// Waits until `at`, or until the agent is stopping: what it waited.
    async fn wait_to_send(&mut self, at: Instant) -> Duration {
        let started = Instant::now();
        // A send time already passed (no splay, or collection outlasted it) is no wait: the
        // timer would still yield once and report the scheduler's delay as `splay_ms`.
        if at <= started {
            return Duration::ZERO;
        }
        let stop = async {
            match self.stopping.as_mut() {
                Some(rx) => {
                    let _ = rx.wait_for(|stopping| *stopping).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop => {}
        }
        started.elapsed()
    }

    /// What the health listener reads.
    pub fn stats(&self) -> SharedStats {
        self.stats.clone()
    }

    /// Runs one cycle: collects now, sends at `send_at` (the splay; None: at once), and
    /// stops trying to publish (retries included) at `deadline`. What it returns is the
    /// cycle's publish; the rest of what it did is in the stats and its log line.
    pub async fn run_cycle(
        &mut self,
        deadline: Instant,
        send_at: Option<Instant>,
    ) -> PublishReport {
        let started = Instant::now();
        let timestamp = whole_second(SystemTime::now());
        let Collected {
            metrics: datums,
            statuses,
            summary,
        } = self.collect(timestamp).await;
        let collect_time = started.elapsed();
        let collected = datums.len();
        // Written ahead: in the buffer (and, with BUFFER_DIR, synced to disk) before the
        // first PutMetricData of the cycle, so no crash from here on loses the cycle.
        let write_started = Instant::now();
        self.buffer.push(&datums, true);
        let write_time = write_started.elapsed();
        drop(datums);
        // Said once the write-ahead has returned, so a reader of a killed agent's output
        // knows which cycles no crash could lose (tests/e2e/test_reliability.py does).
        debug!(
            cycle_timestamp = %humantime::format_rfc3339(timestamp),
            datums = collected,
            healthy = summary.healthy,
            cost_errors = summary.errors,
            durable = self.buffer.durable(),
            "cycle written ahead"
        );
        // The data is safe in the buffer meanwhile, and keeps the tick's timestamp.
        let waited = match send_at {
            Some(at) => self.wait_to_send(at).await,
            None => Duration::ZERO,
        };
        let mut publish = self.publisher.publish(&mut self.buffer, deadline).await;
        self.trim(&mut publish);
        // The agent's own work; the splay's wait is not cycle time.
        let duration = started.elapsed().saturating_sub(waited);
        let gauges = self.buffer.gauges();
        // Counted before it is logged, so whoever reads the log line finds it in /metrics.
        {
            let mut stats = self.stats.lock().expect("stats lock");
            stats.record_cycle(
                collected,
                statuses,
                duration,
                &publish,
                gauges,
                (timestamp, SystemTime::now()),
            );
            stats.scrape_dropped.add(&summary.scrape_dropped);
        }
        info!(
            cycle_timestamp = %humantime::format_rfc3339(timestamp),
            targets = summary.targets,
            healthy = summary.healthy,
            unhealthy = summary.unhealthy,
            cost_errors = summary.errors,
            datums = collected,
            published = publish.published,
            calls = publish.calls,
            queued = publish.queued,
            dropped = publish.dropped(),
            scrape_dropped = summary.scrape_dropped.total(),
            collect_ms = collect_time.as_millis() as u64,
            buffer_write_us = write_time.as_micros() as u64,
            splay_ms = waited.as_millis() as u64,
            duration_ms = duration.as_millis() as u64,
            "cycle complete"
        );
        logging::report_dropped();
        if let Some(agent) = &self.self_metrics {
            // A cycle's own figures are known only now; they wait in the buffer (written,
            // synced with the next cycle's push) and go out with the next publish.
            let corrupt = gauges.corrupt_total - self.corrupt_reported;
            self.corrupt_reported = gauges.corrupt_total;
            let own =
                self_metrics::of_cycle(agent, duration, &publish, &gauges, corrupt, timestamp);
            self.buffer.push(&own, false);
        }
        publish
    }

    /// Applies the buffer's bounds after a publish, and reports what they dropped.
    fn trim(&mut self, publish: &mut PublishReport) {
        let dropped = self.buffer.trim();
        if dropped > 0 {
            warn!(
                dropped,
                "buffer full (QUEUE_MAX_DATUMS in memory, BUFFER_MAX_BYTES on disk); oldest datums dropped"
            );
        }
        publish.dropped_overflow += dropped;
        publish.queued = self.buffer.len();
    }

    /// Every source at once, their collections merged in source order.
    async fn collect(&mut self, timestamp: SystemTime) -> Collected {
        let all = join_all(self.sources.iter_mut().map(|s| s.collect(timestamp))).await;
        let mut merged = Collected::default();
        for collected in all {
            merged.merge(collected);
        }
        merged
    }

    /// Sends whatever waits: the queue and the last cycle's self datums. Used at shutdown
    /// and after `--once`.
    pub async fn flush(&mut self, deadline: Instant) -> PublishReport {
        if self.buffer.is_empty() {
            return PublishReport::default();
        }
        let mut report = self.publisher.publish(&mut self.buffer, deadline).await;
        self.trim(&mut report);
        self.stats
            .lock()
            .expect("stats lock")
            .record_publish(&report, self.buffer.gauges());
        info!(
            published = report.published,
            calls = report.calls,
            queued = report.queued,
            dropped = report.dropped(),
            "queue flushed"
        );
        report
    }

    /// Datums not yet delivered (the last cycle's self metrics included).
    pub fn queued(&self) -> usize {
        self.buffer.len()
    }

    /// Whether what is not delivered at exit is kept on disk for the next start.
    pub fn keeps_on_disk(&self) -> bool {
        self.buffer.on_disk()
    }
}

/// Cycle timestamps fall on whole seconds, so a cron tick at :00 is stamped :00.
fn whole_second(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::metric::Metric;
    use crate::sinks::cloudwatch::PutError;
    use crate::sinks::cloudwatch::tests::{FakeSink, data, fast};
    use crate::sources::{Summary, TargetStatus};

    pub(crate) fn collected(range: std::ops::Range<usize>) -> Collected {
        Collected {
            metrics: data(range),
            statuses: vec![TargetStatus {
                base_url: "http://127.0.0.1:8001".into(),
                region: Some("us-east-1".into()),
                up: true,
                latency: Some(Duration::from_millis(2)),
            }],
            summary: Summary {
                targets: 1,
                healthy: 1,
                ..Summary::default()
            },
        }
    }

    /// An agent over a fake source that hands out `cycles` and a fake sink the test keeps.
    pub(crate) fn fake_agent(
        cycles: Vec<Collected>,
        sink: FakeSink,
        self_metrics: Option<&str>,
    ) -> (Agent<Arc<FakeSink>>, Arc<FakeSink>) {
        fake_agent_on(cycles, sink, self_metrics, Buffer::memory(100))
    }

    fn fake_agent_on(
        cycles: Vec<Collected>,
        sink: FakeSink,
        self_metrics: Option<&str>,
        buffer: Buffer,
    ) -> (Agent<Arc<FakeSink>>, Arc<FakeSink>) {
        let sink = Arc::new(sink);
        let publisher = Publisher::new(sink.clone(), "Test/Agent".into(), fast());
        let source = Source::Fake(VecDeque::from(cycles));
        let agent = Agent::from_parts(
            vec![source],
            buffer,
            publisher,
            self_metrics.map(str::to_string),
        );
        (agent, sink)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn accepted(sink: &FakeSink) -> Vec<Metric> {
        sink.accepted.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn a_splayed_cycle_collects_on_the_tick_and_sends_at_its_time() {
        let (mut agent, sink) = fake_agent(vec![collected(0..3)], FakeSink::default(), Some("a"));
        let tick = SystemTime::now();
        let send_at = Instant::now() + Duration::from_secs(20);
        let cycle = tokio::spawn(async move {
            let report = agent
                .run_cycle(Instant::now() + Duration::from_secs(50), Some(send_at))
                .await;
            (report, agent)
        });
        tokio::time::sleep(Duration::from_secs(19)).await;
        assert_eq!(sink.calls.load(std::sync::atomic::Ordering::Relaxed), 0);
        let (report, agent) = cycle.await.unwrap();
        assert!(Instant::now() >= send_at);
        assert_eq!(report.published, 3);
        let got = accepted(&sink);
        // The tick's timestamp, not the send time's.
        assert!(got.iter().all(|m| m.timestamp <= tick));
        // The wait is not cycle time.
        let stats = agent.stats().lock().unwrap().clone();
        let duration = stats.last_cycle_duration.unwrap();
        assert!(duration < Duration::from_secs(1), "{duration:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_cuts_the_splay_short() {
        let (mut agent, sink) = fake_agent(vec![collected(0..3)], FakeSink::default(), None);
        let (stop, rx) = watch::channel(false);
        agent.stop_waits_on(rx);
        let started = Instant::now();
        let cycle = tokio::spawn(async move {
            agent
                .run_cycle(
                    started + Duration::from_secs(50),
                    Some(started + Duration::from_secs(40)),
                )
                .await
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.send(true).unwrap();
        let report = cycle.await.unwrap();
        assert_eq!(report.published, 3);
        assert_eq!(accepted(&sink).len(), 3);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_offset_follows_the_splay_and_the_identity() {
        let (mut agent, _) = fake_agent(vec![], FakeSink::default(), None);
        agent.splay = Splay::Share(0.5);
        agent.splay_fraction = 0.25;
        assert_eq!(
            agent.publish_offset(Duration::from_secs(60), Duration::from_secs(60)),
            Duration::from_millis(7500)
        );
        agent.splay = Splay::Fixed(Duration::ZERO);
        assert_eq!(
            agent.publish_offset(Duration::from_secs(60), Duration::from_secs(60)),
            Duration::ZERO
        );
    }

    #[tokio::test]
    async fn a_cycle_publishes_what_the_source_collected_stamped_with_the_cycle() {
        let (mut agent, sink) = fake_agent(vec![collected(0..3)], FakeSink::default(), None);
        let before = SystemTime::now();
        let report = agent.run_cycle(soon(), None).await;
        let after = SystemTime::now();
        assert_eq!((report.published, report.calls, report.queued), (3, 1, 0));
        let got = accepted(&sink);
        assert_eq!(got.len(), 3);
        let stamp = got[0].timestamp;
        assert!(got.iter().all(|m| m.timestamp == stamp));
        // The whole second the cycle started in.
        assert!(stamp + Duration::from_secs(1) > before && stamp <= after);
        let stats = agent.stats().lock().unwrap().clone();
        assert_eq!(
            (stats.cycles, stats.datums_collected, stats.datums_published),
            (1, 3, 3)
        );
        assert_eq!(stats.targets.len(), 1);
        assert_eq!(stats.last_success_cycle, Some(stamp));
    }

    #[tokio::test]
    async fn self_metrics_ride_with_the_next_publish_under_their_own_cycles_time() {
        let (mut agent, sink) = fake_agent(
            vec![collected(0..2), collected(2..4)],
            FakeSink::default(),
            Some("a"),
        );
        agent.run_cycle(soon(), None).await;
        let first_stamp = accepted(&sink)[0].timestamp;
        assert_eq!(agent.queued(), 8, "the first cycle's self metrics wait");
        let report = agent.run_cycle(soon(), None).await;
        assert_eq!(report.published, 2 + 8);
        let own: Vec<Metric> = accepted(&sink)
            .into_iter()
            .filter(|m| m.dimensions.contains_key("Agent"))
            .collect();
        assert_eq!(own.len(), 8);
        assert!(own.iter().all(|m| m.timestamp == first_stamp));
        // The second cycle's wait for the flush.
        let flushed = agent.flush(soon()).await;
        assert_eq!((flushed.published, agent.queued()), (8, 0));
    }

    #[tokio::test]
    async fn a_failed_publish_is_sent_first_next_cycle_with_its_timestamps() {
        let sink = FakeSink::scripted(vec![Err(PutError::Failed("AccessDenied".into()))]);
        let (mut agent, sink) = fake_agent(vec![collected(0..2), collected(10..12)], sink, None);
        let first = agent.run_cycle(soon(), None).await;
        assert!(first.failed);
        assert_eq!((first.published, first.queued, agent.queued()), (0, 2, 2));
        let stats = agent.stats().lock().unwrap().clone();
        assert_eq!((stats.cycles_failed, stats.last_success_cycle), (1, None));
        let second = agent.run_cycle(soon(), None).await;
        assert_eq!((second.published, second.queued), (4, 0));
        let values: Vec<f64> = accepted(&sink).iter().map(|m| m.value.number()).collect();
        assert_eq!(values, [0.0, 1.0, 10.0, 11.0]);
    }

    #[tokio::test]
    async fn a_cycle_is_on_disk_before_its_first_put_and_its_self_metrics_after_it() {
        let dir = crate::buffer::tests::TempDir::new("write-ahead");
        let open = || Buffer::open(dir.path(), 1 << 20, 1000).unwrap();
        let (mut agent, _) = fake_agent_on(
            vec![collected(0..3)],
            FakeSink::hanging(),
            Some("a"),
            open(),
        );
        // The put never answers and the process dies there, as under kill -9.
        let cut =
            tokio::time::timeout(Duration::from_millis(300), agent.run_cycle(soon(), None)).await;
        assert!(cut.is_err(), "the put hangs");
        drop(agent);
        let mut left = open();
        let kept = left.peek(100);
        let values: Vec<f64> = kept.iter().map(|m| m.value.number()).collect();
        assert_eq!(values, [0.0, 1.0, 2.0]);

        // A cycle that ends leaves its self metrics on disk too.
        let (mut agent, _) = fake_agent_on(
            vec![collected(10..12)],
            FakeSink::always_failing(),
            Some("a"),
            left,
        );
        agent.run_cycle(soon(), None).await;
        drop(agent);
        let names: Vec<String> = open().peek(100).into_iter().map(|m| m.name).collect();
        assert_eq!(names.len(), 3 + 2 + 8, "{names:?}");
        assert_eq!(names.iter().filter(|n| *n == "CycleDuration").count(), 1);
    }

    #[tokio::test]
    async fn flush_with_nothing_waiting_sends_nothing() {
        let (mut agent, sink) = fake_agent(vec![], FakeSink::default(), None);
        let report = agent.flush(soon()).await;
        assert_eq!(report.calls, 0);
        assert!(accepted(&sink).is_empty());
    }
}
