//! The Prometheus source: scrapes the SCRAPE_TARGETS endpoints each cycle, all at once and
//! each within TARGET_TIMEOUT, and turns their families into metrics (docs/prometheus.md).
//!
//! [`scrape`] fetches a body, [`parse`] reads the exposition format, [`convert`] applies the
//! rules with each target's own state (counter baselines, the series it has created). One
//! target that is down, hangs or sends garbage costs only itself: it is reported down
//! (`ScrapeUp` 0, and in `/metrics`) while the others publish.

pub mod config;
pub(crate) mod convert;
pub(crate) mod parse;
mod scrape;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::metric::{Dimensions, Metric, Unit, Value};
use crate::sources::{Collected, TargetStatus};
use config::{PrometheusConfig, ScrapeTarget};
use convert::{Rules, State};
use scrape::Scraper;

/// 1 when the target answered 200 with a body this cycle, else 0.
pub const SCRAPE_UP: &str = "ScrapeUp";
/// How long the scrape took, when it answered.
pub const SCRAPE_DURATION: &str = "ScrapeDuration";

/// One endpoint and what its conversion remembers.
struct Target {
    config: ScrapeTarget,
    rules: Rules,
    state: State,
    /// MAX_SERIES_PER_TARGET was reached and said so; once, not every cycle.
    capped_said: bool,
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
                rules: Rules {
                    region: t.region.clone(),
                    include: config.include.clone(),
                    exclude: config.exclude.clone(),
                    drop_labels: config.drop_labels.clone(),
                    max_series: config.max_series,
                },
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
    /// longer than TARGET_TIMEOUT.
    pub async fn collect(&mut self, timestamp: SystemTime) -> Collected {
        let deadline = Instant::now() + self.timeout;
        let scraper = &self.scraper;
        let fetched = join_all(
            self.targets
                .iter()
                .map(|t| scraper.fetch(&t.config.url, deadline)),
        )
        .await;
        let mut out = Collected::default();
        out.summary.targets = self.targets.len();
        for (target, result) in self.targets.iter_mut().zip(fetched) {
            let url = target.config.url.as_str();
            let region = target.config.region.as_deref();
            let dims = target_dimensions(url, region);
            let (up, latency) = match result {
                Ok(fetched) => {
                    let (converted, skipped) = convert::convert_body(
                        &fetched.body,
                        fetched.format,
                        &target.rules,
                        &mut target.state,
                        timestamp,
                    );
                    drop(fetched.body);
                    if let Some((line, why)) = &skipped.first_error {
                        warn!(target = %url, malformed = skipped.malformed, line, error = %why, "lines of a scrape were skipped as malformed; the rest is published");
                    }
                    if converted.non_finite > 0 {
                        debug!(target = %url, dropped = converted.non_finite, "NaN or infinite samples dropped");
                    }
                    if converted.over_cap > 0 && !target.capped_said {
                        target.capped_said = true;
                        warn!(target = %url, max_series = target.rules.max_series, not_published = converted.over_cap, "the target reached MAX_SERIES_PER_TARGET; its new series are not published. Fix: raise MAX_SERIES_PER_TARGET, or narrow INCLUDE_METRICS, EXCLUDE_METRICS or DROP_LABELS");
                    }
                    out.take_metrics(converted.metrics);
                    out.summary.healthy += 1;
                    (true, Some(fetched.latency))
                }
                Err(e) => {
                    warn!(target = %url, error = %e, "scrape failed; the target is reported down");
                    out.summary.unhealthy += 1;
                    (false, None)
                }
            };
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
