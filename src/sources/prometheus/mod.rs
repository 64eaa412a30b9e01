//! The Prometheus source: scrapes the SCRAPE_TARGETS endpoints each cycle, all at once and
//! each within TARGET_TIMEOUT, and turns their families into metrics (docs/prometheus.md).
//!
//! [`scrape`] fetches a body, [`parse`] reads the exposition format, [`convert`] applies the
//! rules with each target's own state (counter baselines, the metrics it holds). One target
//! that is down, hangs or sends garbage costs only itself: it is reported down (`ScrapeUp`
//! 0, and in `/metrics`) while the others publish.
//!
//! The agent runs on one runtime thread, which also answers `/healthz` and signals. So a
//! target's CPU work (gunzip, parse, convert: up to 32 MiB of body) runs on tokio's blocking
//! pool, never on that thread, and checks the target's deadline as it goes: the whole scrape,
//! fetch to metrics, ends within TARGET_TIMEOUT whatever the body.

pub mod config;
pub(crate) mod convert;
pub(crate) mod parse;
pub(crate) mod scrape;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::metric::{Dimensions, Metric, Unit, Value};
use crate::sources::{Collected, TargetStatus};
use config::{PrometheusConfig, ScrapeTarget};
pub use convert::Dropped;
use convert::{Converted, Rules, State};
use parse::Skipped;
use scrape::{ScrapeError, Scraper};

/// 1 when the target answered 200 with a body this cycle, read whole in time, else 0.
pub const SCRAPE_UP: &str = "ScrapeUp";
/// How long the scrape took (fetch, decode, parse, convert), when it succeeded.
pub const SCRAPE_DURATION: &str = "ScrapeDuration";

/// One endpoint and what its conversion remembers.
struct Target {
    config: ScrapeTarget,
    /// Shared with the blocking task that converts the target's body.
    rules: Arc<Rules>,
    /// Handed to that task and back each scrape; a fresh one if the task ever failed.
    state: State,
    /// MAX_SERIES_PER_TARGET was reached and said so; once, not every cycle.
    capped_said: bool,
}

/// What one target's scrape came to.
struct Scraped {
    converted: Converted,
    skipped: Skipped,
}

pub struct PrometheusSource {
    scraper: Scraper,
    targets: Vec<Target>,
    timeout: Duration,
}

impl PrometheusSource {
    pub fn new(config: &PrometheusConfig, timeout: Duration) -> Self {
        let targets = config
            .targets
            .iter()
            .map(|t| Target {
                config: t.clone(),
                rules: Arc::new(Rules {
                    region: t.region.clone(),
                    include: config.include.clone(),
                    exclude: config.exclude.clone(),
                    drop_labels: config.drop_labels.clone(),
                    max_series: config.max_series,
                }),
                state: State::default(),
                capped_said: false,
            })
            .collect();
        PrometheusSource {
            scraper: Scraper::new(),
            targets,
            timeout,
        }
    }

    /// Scrapes every target at once; the whole lasts as long as the slowest target, never
    /// longer than TARGET_TIMEOUT (and the moment a blocking task takes to see it is due).
    pub async fn collect(&mut self, timestamp: SystemTime) -> Collected {
        let deadline = Instant::now() + self.timeout;
        let scraper = &self.scraper;
        let scraped = join_all(
            self.targets
                .iter_mut()
                .map(|t| t.scrape(scraper, deadline, timestamp)),
        )
        .await;
        let mut out = Collected::default();
        out.summary.targets = self.targets.len();
        for (target, (result, latency)) in self.targets.iter_mut().zip(scraped) {
            let up = match result {
                Ok(Scraped { converted, skipped }) => {
                    target.report(&converted, &skipped);
                    out.summary.scrape_dropped.add(&converted.dropped);
                    out.take_metrics(converted.metrics);
                    skipped.stopped.is_none()
                }
                Err(e) => {
                    let url = &target.config.url;
                    warn!(target = %url, error = %e, "scrape failed; the target is reported down");
                    false
                }
            };
            // Published and shown without a password or query values (they may be credentials).
            let url = &crate::untrusted::redact_urls(&target.config.url);
            let region = target.config.region.as_deref();
            let dims = target_dimensions(url, region);
            let latency = latency.filter(|_| up);
            if up {
                out.summary.healthy += 1;
            } else {
                out.summary.unhealthy += 1;
            }
            out.metrics.push(metric(
                SCRAPE_UP,
                &dims,
                Value::Gauge(if up { 1.0 } else { 0.0 }),
                Unit::None,
                timestamp,
            ));
            if let Some(latency) = latency {
                let ms = latency.as_secs_f64() * 1000.0;
                out.metrics.push(metric(
                    SCRAPE_DURATION,
                    &dims,
                    Value::Gauge(ms),
                    Unit::Milliseconds,
                    timestamp,
                ));
            }
            out.statuses.push(TargetStatus {
                base_url: url.to_string(),
                region: region.map(str::to_string),
                up,
                latency,
            });
        }
        out
    }
}

impl Target {
    /// Fetches the body by `deadline`, then decodes, parses and converts it on the blocking
    /// pool by the same deadline: the result, and how long it all took.
    async fn scrape(
        &mut self,
        scraper: &Scraper,
        deadline: Instant,
        timestamp: SystemTime,
    ) -> (Result<Scraped, ScrapeError>, Option<Duration>) {
        let started = Instant::now();
        let fetched = match scraper.fetch(&self.config.url, deadline).await {
            Ok(fetched) => fetched,
            Err(e) => return (Err(e), None),
        };
        let rules = Arc::clone(&self.rules);
        let mut state = std::mem::take(&mut self.state);
        let stop = Stop::new(deadline);
        // Should this future be dropped (the agent stopping), the task stops at its next
        // check instead of running to its deadline.
        let _cancel = stop.cancel_on_drop();
        let task = tokio::task::spawn_blocking(move || {
            let format = fetched.format;
            let result = scrape::decode(fetched, || stop.due()).map(|body| {
                let (converted, skipped) = convert::convert_body_until(
                    &body,
                    format,
                    &rules,
                    &mut state,
                    timestamp,
                    || stop.due(),
                );
                Scraped { converted, skipped }
            });
            (result, state)
        });
        let result = match task.await {
            Ok((result, state)) => {
                self.state = state;
                result
            }
            // A panic in the conversion: the target starts again from no baselines.
            Err(e) => Err(ScrapeError::Internal(e.to_string())),
        };
        (result, Some(started.elapsed()))
    }

    /// The scrape's log lines: lines skipped, samples dropped, the scrape cut short, the cap
    /// reached (once); each names the target, and quotes at most one cut name.
    fn report(&mut self, converted: &Converted, skipped: &Skipped) {
        let url = self.config.url.as_str();
        let dropped = &converted.dropped;
        if let Some((line, why)) = &skipped.first_error {
            warn!(target = %url, malformed = skipped.malformed, line, error = %why, "lines of a scrape were skipped as malformed; the rest is published");
        }
        if let Some((line, not_read)) = skipped.stopped {
            warn!(target = %url, line, not_read, "the scrape was cut at TARGET_TIMEOUT: lines from this one on were not read, nor histograms converted; what was read is published and the target is reported down. Fix: a smaller body (INCLUDE_METRICS does not make it smaller; the exporter's own filters do) or a longer TARGET_TIMEOUT");
        }
        if let Some((reason, name)) = &converted.first_dropped {
            warn!(
                target = %url,
                duplicate = dropped.duplicate,
                negative = dropped.negative,
                reserved_name = dropped.reserved_name,
                too_long = dropped.too_long,
                first = %reason,
                name = %name,
                "samples of a scrape were dropped; the rest is published"
            );
        }
        if dropped.non_finite > 0 {
            debug!(target = %url, dropped = dropped.non_finite, "NaN or infinite samples dropped");
        }
        if dropped.over_cap > 0 && !self.capped_said {
            self.capped_said = true;
            warn!(target = %url, max_series = self.rules.max_series, not_published = dropped.over_cap, "the target reached MAX_SERIES_PER_TARGET; its new series are not published. Fix: raise MAX_SERIES_PER_TARGET, or narrow INCLUDE_METRICS, EXCLUDE_METRICS or DROP_LABELS");
        }
    }
}

/// When a target's blocking work must stop: its deadline, or the scrape being abandoned.
#[derive(Clone)]
struct Stop {
    deadline: std::time::Instant,
    cancelled: Arc<AtomicBool>,
}

impl Stop {
    fn new(deadline: Instant) -> Self {
        Stop {
            deadline: deadline.into_std(),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    fn due(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || std::time::Instant::now() >= self.deadline
    }

    fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Arc::clone(&self.cancelled))
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `Target` (the URL, cut to a dimension value's length) and the target's `Region`;
/// `monitoring` builds the scrape alarms from this.
pub fn target_dimensions(url: &str, region: Option<&str>) -> Dimensions {
    let mut dims = Dimensions::from([("Target".to_string(), url.chars().take(1024).collect())]);
    if let Some(region) = region {
        dims.insert("Region".to_string(), region.to_string());
    }
    dims
}

fn metric(
    name: &str,
    dims: &Dimensions,
    value: Value,
    unit: Unit,
    timestamp: SystemTime,
) -> Metric {
    Metric {
        name: name.to_string(),
        dimensions: dims.clone(),
        unit,
        timestamp,
        value,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves `body` (gzip when `gzip`) to every request, one connection at a time, on a
    /// task of the test's own runtime: the URL.
    async fn serve(body: Vec<u8>, gzip: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
        let body = Arc::new(body);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = Arc::clone(&body);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let encoding = if gzip {
                        "Content-Encoding: gzip\r\n"
                    } else {
                        ""
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n{encoding}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                });
            }
        });
        url
    }

    fn source(url: &str, timeout: Duration, max_series: usize) -> PrometheusSource {
        let config = PrometheusConfig {
            targets: vec![ScrapeTarget {
                url: url.to_string(),
                region: None,
            }],
            max_series,
            ..PrometheusConfig::default()
        };
        PrometheusSource::new(&config, timeout)
    }

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn gauge(c: &Collected, name: &str) -> Vec<f64> {
        c.metrics
            .iter()
            .filter(|m| m.name == name)
            .map(|m| m.value.number())
            .collect()
    }

    /// The freeze: a body whose parse takes seconds on this build, scraped with a 1.5 s
    /// TARGET_TIMEOUT, while another task on the same (current-thread) runtime ticks every
    /// 10 ms, as the health listener and the signal handler wait on it. The scrape ends by
    /// its deadline, the ticks never stop for long, and what was read before the cut is
    /// published with the target reported down.
    #[tokio::test]
    async fn a_body_too_long_to_parse_neither_holds_the_runtime_nor_outlasts_the_deadline() {
        let lines: String = (0..800_000)
            .map(|i| format!("busy{{i=\"{i}\"}} 1\n"))
            .collect();
        let url = serve(lines.into_bytes(), false).await;
        let timeout = Duration::from_millis(1500);
        let mut source = source(&url, timeout, 100);
        let (stop_ticks, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let ticker = tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            let mut every = tokio::time::interval(Duration::from_millis(10));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        longest = longest.max(last.elapsed());
                        last = Instant::now();
                    }
                    _ = &mut stopped => return longest,
                }
            }
        });
        let started = Instant::now();
        let c = source.collect(at()).await;
        let took = started.elapsed();
        let _ = stop_ticks.send(());
        let longest_gap = ticker.await.expect("ticker");
        assert!(took < timeout + Duration::from_millis(800), "{took:?}");
        assert!(
            longest_gap < Duration::from_millis(500),
            "the runtime thread was held for {longest_gap:?}"
        );
        assert_eq!(gauge(&c, SCRAPE_UP), [0.0], "cut at the deadline: down");
        assert_eq!(gauge(&c, "busy").len(), 100, "what was read, up to the cap");
        let dropped = c.summary.scrape_dropped;
        assert!(dropped.not_read > 0 && dropped.over_cap > 0, "{dropped:?}");
        assert_eq!((c.summary.healthy, c.summary.unhealthy), (0, 1));
    }

    #[tokio::test]
    async fn a_gzip_body_is_scraped_whole_and_its_counters_move_between_cycles() {
        let body =
            "# TYPE c counter\nc_total 5\nc_total 9\nPluginHealthy{Region=\"us-east-1\"} 1\ng -1\n";
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(body.as_bytes()).expect("gzip");
        let url = serve(e.finish().expect("gzip"), true).await;
        let mut source = source(&url, Duration::from_secs(5), 100);
        let first = source.collect(at()).await;
        assert_eq!(gauge(&first, SCRAPE_UP), [1.0]);
        assert_eq!(gauge(&first, "g"), [-1.0]);
        // The state came back from the blocking pool: the second scrape has a baseline.
        let second = source.collect(at()).await;
        assert_eq!(gauge(&second, "c_total"), [0.0]);
        assert!(gauge(&second, "PluginHealthy").is_empty());
        assert_eq!(second.summary.healthy, 1);
        let dropped = second.summary.scrape_dropped;
        assert_eq!((dropped.duplicate, dropped.reserved_name), (1, 1));
        assert_eq!(second.statuses.len(), 1);
        assert!(second.statuses[0].up && second.statuses[0].latency.is_some());
    }
}
