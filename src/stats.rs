//! The agent's account of itself: what its cycles did, for `/healthz` and `/metrics`.
//!
//! Cycles write into [`Stats`] and the health listener ([`crate::health`]) reads it; both go
//! through one short-held mutex. Deciding health and writing the Prometheus text are pure
//! functions of the stats and a clock reading, so they are tested without a server.

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::buffer::Gauges;
use crate::schedule::Ticks;
use crate::sinks::cloudwatch::PublishReport;
use crate::sources::TargetStatus;
use crate::sources::prometheus::Dropped;

/// The stats as the cycle and the listener share them.
pub type SharedStats = Arc<Mutex<Stats>>;

#[derive(Debug, Clone)]
pub struct Stats {
    pub started: SystemTime,
    pub cycles: u64,
    /// Cycles whose publish failed (some datums are waiting in the queue for a retry).
    pub cycles_failed: u64,
    /// Ticks skipped because the previous cycle was still running.
    pub ticks_skipped: u64,
    /// Log lines dropped because the log output was not being read; filled in by whoever
    /// renders the stats (the count lives with the log writer).
    pub log_lines_dropped: u64,
    pub datums_collected: u64,
    pub datums_published: u64,
    pub dropped_invalid: u64,
    pub dropped_rejected: u64,
    pub dropped_overflow: u64,
    pub dropped_expired: u64,
    pub dropped_corrupt: u64,
    /// The buffer after the last publish: its datums are the ones queued.
    pub buffer: Gauges,
    /// The age of the oldest datum waiting, when the last publish ended.
    pub buffer_oldest_age: Duration,
    pub put_calls: u64,
    pub put_failures: u64,
    pub last_cycle_duration: Option<Duration>,
    /// When the last cycle whose publish did not fail ended.
    pub last_success: Option<SystemTime>,
    /// That cycle's timestamp: the tick it ran for (or the start, for the first cycle).
    pub last_success_cycle: Option<SystemTime>,
    pub targets: Vec<TargetStatus>,
    /// What scrape targets sent that was not published, by reason, since the start.
    pub scrape_dropped: Dropped,
}

/// The answer to `GET /healthz`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub healthy: bool,
    /// A JSON object: status, reason and the times it was decided on.
    pub body: String,
}

impl Stats {
    pub fn new(started: SystemTime) -> Self {
        Stats {
            started,
            cycles: 0,
            cycles_failed: 0,
            ticks_skipped: 0,
            log_lines_dropped: 0,
            datums_collected: 0,
            datums_published: 0,
            dropped_invalid: 0,
            dropped_rejected: 0,
            dropped_overflow: 0,
            dropped_expired: 0,
            dropped_corrupt: 0,
            buffer: Gauges::default(),
            buffer_oldest_age: Duration::ZERO,
            put_calls: 0,
            put_failures: 0,
            last_cycle_duration: None,
            last_success: None,
            last_success_cycle: None,
            targets: Vec::new(),
            scrape_dropped: Dropped::default(),
        }
    }

    pub fn shared(started: SystemTime) -> SharedStats {
        Arc::new(Mutex::new(Stats::new(started)))
    }

    /// Counts one publish: a cycle's, or the shutdown flush.
    pub fn record_publish(&mut self, report: &PublishReport, buffer: Gauges) {
        self.buffer = buffer;
        self.buffer_oldest_age = buffer.oldest.map_or(Duration::ZERO, |t| {
            SystemTime::now().duration_since(t).unwrap_or_default()
        });
        self.datums_published += report.published as u64;
        self.dropped_invalid += report.dropped_invalid as u64;
        self.dropped_rejected += report.dropped_rejected as u64;
        self.dropped_overflow += report.dropped_overflow as u64;
        self.dropped_expired += report.dropped_expired as u64;
        self.dropped_corrupt += report.dropped_corrupt as u64;
        self.put_calls += report.calls as u64;
        self.put_failures += report.failed_calls as u64;
    }

    /// Counts one finished cycle, stamped `stamp`, that ended at `now`.
    pub fn record_cycle(
        &mut self,
        collected: usize,
        targets: Vec<TargetStatus>,
        duration: Duration,
        report: &PublishReport,
        buffer: Gauges,
        (stamp, now): (SystemTime, SystemTime),
    ) {
        self.cycles += 1;
        self.datums_collected += collected as u64;
        self.record_publish(report, buffer);
        self.last_cycle_duration = Some(duration);
        self.targets = targets;
        if report.failed {
            self.cycles_failed += 1;
        } else {
            self.last_success = Some(now);
            self.last_success_cycle = Some(stamp);
        }
    }

    /// Healthy when the cycle of the last tick that was due, or a later one, has published.
    /// The tick that is due is the one before the latest tick (whose cycle may still run), so
    /// one failed cycle turns the agent unhealthy only when the next tick's cycle is due too,
    /// and a schedule's gaps (nights, weekends) count for nothing: with
    /// `0 0 9 * * MON-FRI` a Friday success stays healthy until Monday's cycle is due.
    /// Before any tick has been due since the start, the agent is healthy as starting.
    pub fn verdict(&self, ticks: &Ticks) -> Verdict {
        // A cycle is stamped with the whole second it started in; allow for a tick fired a
        // moment early.
        let slack = Duration::from_secs(1);
        let covers = |t: SystemTime, due: SystemTime| t + slack > due;
        let (healthy, reason) = match (ticks.before_last, self.last_success_cycle) {
            (None, _) => (true, "no tick of the schedule has been due yet".to_string()),
            (Some(due), Some(stamp)) if covers(stamp, due) => (
                true,
                "the cycle of the last tick that was due, or a later one, has published"
                    .to_string(),
            ),
            (Some(due), _) if covers(self.started, due) => (
                true,
                "starting: no tick has been due since the agent started".to_string(),
            ),
            (Some(due), last) => (
                false,
                format!(
                    "no cycle since the tick at {} has published ({}); see the PutMetricData errors in the agent's log",
                    rfc3339(due),
                    match last {
                        Some(t) => format!("the last that did ran for {}", rfc3339(t)),
                        None => format!(
                            "none has since the agent started at {}",
                            rfc3339(self.started)
                        ),
                    }
                ),
            ),
        };
        let body = serde_json::json!({
            "status": if healthy { "ok" } else { "unhealthy" },
            "reason": reason,
            "last_success": self.last_success.map(rfc3339),
            "started": rfc3339(self.started),
            "due_tick": ticks.before_last.map(rfc3339),
            "next_tick": ticks.next.map(rfc3339),
            "cycles": self.cycles,
            "cycles_failed": self.cycles_failed,
            "queued": self.buffer.datums,
        });
        Verdict {
            healthy,
            body: body.to_string(),
        }
    }

    /// The stats in the Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP cloudwatch_publisher_{name} {help}");
            let _ = writeln!(out, "# TYPE cloudwatch_publisher_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "cloudwatch_publisher_{name}{labels} {value}");
            }
        };
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };

        metric(
            "build_info",
            "gauge",
            "The agent's version.",
            &[(labels(&[("version", env!("CARGO_PKG_VERSION"))]), 1.0)],
        );
        // The families without labels: one sample each.
        let (counter, gauge) = ("counter", "gauge");
        let scalars = [
            (
                "start_time_seconds",
                gauge,
                "When the agent started, in seconds since the Unix epoch.",
                secs(self.started),
            ),
            ("cycles_total", counter, "Cycles run.", self.cycles as f64),
            (
                "cycles_failed_total",
                counter,
                "Cycles whose publish failed; their datums wait in the queue.",
                self.cycles_failed as f64,
            ),
            (
                "ticks_skipped_total",
                counter,
                "Schedule ticks skipped because the previous cycle was still running.",
                self.ticks_skipped as f64,
            ),
            (
                "log_lines_dropped_total",
                counter,
                "Log lines dropped because the log output (stdout) was not being read.",
                self.log_lines_dropped as f64,
            ),
            (
                "last_cycle_duration_seconds",
                gauge,
                "How long the last cycle took: collection and publishing.",
                self.last_cycle_duration.map_or(0.0, |d| d.as_secs_f64()),
            ),
            (
                "last_success_timestamp_seconds",
                gauge,
                "When a cycle last published, in seconds since the Unix epoch; 0 if none has.",
                self.last_success.map_or(0.0, secs),
            ),
            (
                "datums_collected_total",
                counter,
                "Datums made from what the plugins answered.",
                self.datums_collected as f64,
            ),
            (
                "datums_published_total",
                counter,
                "Datums CloudWatch accepted.",
                self.datums_published as f64,
            ),
            (
                "datums_queued",
                gauge,
                "Datums waiting in the buffer (memory or BUFFER_DIR) to be delivered.",
                self.buffer.datums as f64,
            ),
            (
                "buffer_bytes",
                gauge,
                "Bytes of the records waiting in the buffer.",
                self.buffer.bytes as f64,
            ),
            (
                "buffer_oldest_age_seconds",
                gauge,
                "Age of the oldest datum waiting when the last publish ended; 0 if none.",
                self.buffer_oldest_age.as_secs_f64(),
            ),
            (
                "buffer_corrupt_records_total",
                counter,
                "Torn or corrupt records skipped in BUFFER_DIR.",
                self.buffer.corrupt_total as f64,
            ),
            (
                "put_metric_data_calls_total",
                counter,
                "PutMetricData requests, retries included.",
                self.put_calls as f64,
            ),
            (
                "put_metric_data_failures_total",
                counter,
                "PutMetricData requests that failed.",
                self.put_failures as f64,
            ),
        ];
        for (name, kind, help, value) in scalars {
            metric(name, kind, help, &[(String::new(), value)]);
        }
        metric(
            "datums_dropped_total",
            "counter",
            "Datums given up on, by reason.",
            &[
                ("invalid", self.dropped_invalid),
                ("rejected", self.dropped_rejected),
                ("overflow", self.dropped_overflow),
                ("expired", self.dropped_expired),
                ("corrupt", self.dropped_corrupt),
            ]
            .map(|(reason, n)| (labels(&[("reason", reason)]), n as f64)),
        );
        metric(
            "scrape_samples_dropped_total",
            "counter",
            "Lines and samples scrape targets sent that were not published, by reason (docs/prometheus.md).",
            &self
                .scrape_dropped
                .by_reason()
                .map(|(reason, n)| (labels(&[("reason", reason)]), n as f64)),
        );
        if let Some(ok) = self.buffer.disk_ok {
            metric(
                "buffer_disk_writable",
                "gauge",
                "1 if the last write to BUFFER_DIR succeeded; 0 while cycles are kept in memory instead.",
                &[(String::new(), if ok { 1.0 } else { 0.0 })],
            );
        }
        let target_labels = |t: &TargetStatus| {
            labels(&[
                ("target", &t.base_url),
                ("region", t.region.as_deref().unwrap_or("")),
            ])
        };
        metric(
            "target_up",
            "gauge",
            "1 if the plugin target answered /healthz with 200 in the last cycle.",
            &self
                .targets
                .iter()
                .map(|t| (target_labels(t), if t.up { 1.0 } else { 0.0 }))
                .collect::<Vec<_>>(),
        );
        metric(
            "target_health_latency_seconds",
            "gauge",
            "How long the target's /healthz took in the last cycle; absent if it did not answer.",
            &self
                .targets
                .iter()
                .filter_map(|t| Some((target_labels(t), t.latency?.as_secs_f64())))
                .collect::<Vec<_>>(),
        );
        out
    }
}

/// `{a="x",b="y"}` with label values escaped as the exposition format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn report(published: usize, failed: bool) -> PublishReport {
        PublishReport {
            published,
            calls: 1,
            failed,
            ..PublishReport::default()
        }
    }

    /// Records a cycle stamped `stamp` that ended at `end`, published or not.
    fn record(s: &mut Stats, failed: bool, stamp: u64, end: u64) {
        let published = if failed { 0 } else { 10 };
        let r = report(published, failed);
        s.record_cycle(
            10,
            Vec::new(),
            MINUTE / 60,
            &r,
            Gauges::default(),
            (at(stamp), at(end)),
        );
    }

    fn after_cycle(end: u64, failed: bool) -> Stats {
        let mut s = Stats::new(at(0));
        record(&mut s, failed, 0, end);
        s
    }

    fn body(v: &Verdict) -> serde_json::Value {
        serde_json::from_str(&v.body).expect("JSON body")
    }

    /// `* * * * *`-style ticks every minute at 1_800_000_000 + 60k (the agent starts at 0).
    fn minutely(now: u64) -> Ticks {
        let schedule = crate::schedule::Schedule::parse("0 * * * * *").unwrap();
        schedule.ticks_around(at(now))
    }

    fn verdict(s: &Stats, now: u64) -> Verdict {
        s.verdict(&minutely(now))
    }

    #[test]
    fn healthy_while_starting_before_any_cycle() {
        // 1_800_000_000 falls on a whole minute: ticks at 0, 60, 120, ...
        let s = Stats::new(at(0));
        for now in [0, 59, 60, 119] {
            let v = verdict(&s, now);
            assert!(v.healthy, "{now}");
            assert!(body(&v)["reason"].as_str().unwrap().contains("starting"));
        }
    }

    #[test]
    fn unhealthy_once_a_tick_after_the_start_is_due_without_a_publish() {
        let v = verdict(&after_cycle(5, true), 120);
        assert!(!v.healthy);
        let b = body(&v);
        assert_eq!(b["status"], "unhealthy");
        assert_eq!(b["cycles_failed"], 1);
        assert_eq!(b["due_tick"], "2027-01-15T08:01:00Z");
        let reason = b["reason"].as_str().unwrap();
        assert!(
            reason.contains("none has since the agent started"),
            "{reason}"
        );
    }

    #[test]
    fn a_publish_keeps_the_agent_healthy_until_the_next_tick_after_it_is_due() {
        let mut s = Stats::new(at(0));
        record(&mut s, false, 60, 65);
        // The tick at 120 may still run at 120..180; at 180 the tick at 120 is due.
        assert!(verdict(&s, 179).healthy);
        let v = verdict(&s, 180);
        assert!(!v.healthy);
        let b = body(&v);
        assert!(
            b["reason"]
                .as_str()
                .unwrap()
                .contains("ran for 2027-01-15T08:01:00Z"),
            "{b}"
        );
        assert_eq!(b["last_success"], "2027-01-15T08:01:05Z");
    }

    #[test]
    fn one_failed_cycle_after_a_success_keeps_the_earlier_success() {
        let mut s = Stats::new(at(0));
        record(&mut s, false, 60, 65);
        record(&mut s, true, 120, 125);
        assert_eq!(s.last_success, Some(at(65)));
        assert_eq!((s.cycles, s.cycles_failed), (2, 1));
        assert!(verdict(&s, 130).healthy);
    }

    #[test]
    fn a_weekday_schedule_stays_healthy_over_the_weekend() {
        let schedule = crate::schedule::Schedule::parse("0 0 9 * * MON-FRI").unwrap();
        let at = |text: &str| SystemTime::from(chrono::DateTime::parse_from_rfc3339(text).unwrap());
        let mut s = Stats::new(at("2026-11-16T08:00:00Z"));
        // Friday 2026-11-20's cycle published.
        s.record_cycle(
            10,
            Vec::new(),
            MINUTE / 60,
            &report(10, false),
            Gauges::default(),
            (at("2026-11-20T09:00:00Z"), at("2026-11-20T09:00:02Z")),
        );
        for now in [
            "2026-11-21T09:00:00Z",
            "2026-11-22T09:00:01Z",
            "2026-11-23T09:00:30Z",
            "2026-11-24T08:59:59Z",
        ] {
            let v = s.verdict(&schedule.ticks_around(at(now)));
            assert!(v.healthy, "{now}: {}", v.body);
        }
        // Monday's cycle never published: due from Tuesday 09:00.
        let now = at("2026-11-24T09:00:00Z");
        assert!(!s.verdict(&schedule.ticks_around(now)).healthy);
    }

    #[test]
    fn a_schedule_with_no_tick_due_yet_is_healthy() {
        let ticks = Ticks {
            before_last: None,
            last: None,
            next: Some(at(1000)),
        };
        assert!(after_cycle(5, true).verdict(&ticks).healthy);
    }

    #[test]
    fn publishes_add_up() {
        let mut s = Stats::new(at(0));
        let r = PublishReport {
            published: 7,
            calls: 3,
            failed_calls: 2,
            queued: 4,
            dropped_invalid: 1,
            dropped_rejected: 2,
            dropped_overflow: 3,
            dropped_expired: 4,
            dropped_corrupt: 5,
            failed: false,
        };
        let buffer = Gauges {
            datums: 4,
            ..Gauges::default()
        };
        s.record_publish(&r, buffer);
        s.record_publish(&r, buffer);
        assert_eq!(
            (s.datums_published, s.put_calls, s.put_failures),
            (14, 6, 4)
        );
        assert_eq!(
            (
                s.dropped_invalid,
                s.dropped_rejected,
                s.dropped_overflow,
                s.dropped_expired,
                s.dropped_corrupt
            ),
            (2, 4, 6, 8, 10)
        );
        assert_eq!(s.buffer.datums, 4, "a gauge, not a sum");
    }

    #[test]
    fn prometheus_text_has_help_type_and_every_sample() {
        let mut s = after_cycle(5, false);
        s.targets = vec![
            TargetStatus {
                base_url: "http://127.0.0.1:8001".into(),
                region: Some("us-east-1".into()),
                up: true,
                latency: Some(Duration::from_millis(3)),
            },
            TargetStatus {
                base_url: "http://127.0.0.1:8011".into(),
                region: None,
                up: false,
                latency: None,
            },
        ];
        let text = s.prometheus();
        for line in [
            "# TYPE cloudwatch_publisher_cycles_total counter",
            "cloudwatch_publisher_cycles_total 1",
            "cloudwatch_publisher_datums_published_total 10",
            "cloudwatch_publisher_datums_dropped_total{reason=\"expired\"} 0",
            "cloudwatch_publisher_last_success_timestamp_seconds 1800000005",
            "cloudwatch_publisher_target_up{target=\"http://127.0.0.1:8001\",region=\"us-east-1\"} 1",
            "cloudwatch_publisher_target_up{target=\"http://127.0.0.1:8011\",region=\"\"} 0",
            "cloudwatch_publisher_target_health_latency_seconds{target=\"http://127.0.0.1:8001\",region=\"us-east-1\"} 0.003",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("latency_seconds{target=\"http://127.0.0.1:8011\""));
        // Every sample line belongs to a declared family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{l}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("a", "x\"y\\z\nw"), ("b", "")]),
            r#"{a="x\"y\\z\nw",b=""}"#
        );
    }
}
