//! Scraped families to metrics, by the rules in docs/prometheus.md. Pure: the scrape, the
//! rules and the target's [`State`] in; metrics out, the state moved on. No I/O, no clock.
//!
//! - Gauges and untyped samples are gauges.
//! - Counters become the increase since the previous scrape of the same series. The first
//!   scrape of a series is its baseline and publishes nothing: a total since some unknown
//!   start is not an increase over the interval, and publishing it would put a spike on
//!   every dashboard at every restart. A counter that goes down was reset: its increase is
//!   the new value (counted from zero), never negative; a negative total is invalid.
//! - A histogram series becomes ONE metric named as the family, a distribution built from
//!   the buckets' increases: each bucket's new observations sit at the middle of the bucket
//!   (`(lower, le]`; the first bucket's lower bound is 0 when `le` is positive, the `+Inf`
//!   bucket's observations sit at the highest finite bound). `_sum` and `_count` become
//!   their own counter increases.
//! - A summary becomes one gauge per quantile (a `quantile` dimension), and `_sum` and
//!   `_count` counter increases.
//! - Units from the family name: `_seconds` Seconds, `_bytes` Bytes, `_total` Count.
//! - Labels become dimensions: DROP_LABELS never do, empty values are dropped, values keep
//!   printable ASCII (anything else becomes `?`) cut to 1024 characters, and at most 30
//!   dimensions stay, the target's `Region` first and then labels by name.
//! - INCLUDE_METRICS and EXCLUDE_METRICS (globs on family names) choose families.
//! - A CloudWatch metric (name and dimensions) is a *place*: a target holds at most
//!   MAX_SERIES_PER_TARGET of them, taken when first seen, and each gives at most one datum
//!   a scrape (the first sample in the body that lands on it). So a scrape makes at most
//!   MAX_SERIES_PER_TARGET datums whatever its body, and only series holding a place keep a
//!   baseline. The rest are dropped and counted ([`Dropped`]): NaN and infinities, negative
//!   totals, duplicates, names the agent publishes itself ([`RESERVED`]), names CloudWatch
//!   would refuse, and series past the cap.
//! - Baselines not used for [`FORGET_AFTER`] scrapes are forgotten.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};
use std::time::SystemTime;

use super::parse::{Format, Kind, Labels, Line, Sample, Scrape, Skipped, parse_each_until};
use crate::metric::{Dimensions, Metric, Unit, Value};
use crate::self_metrics;
use crate::sources::plugins::transform;
use crate::untrusted;

/// Scrapes a series may be missing before its baseline is forgotten.
pub const FORGET_AFTER: u64 = 5;
/// CloudWatch's limits on one datum's names, dimensions and values.
const MAX_NAME: usize = 255;
const MAX_DIMENSIONS: usize = 30;
const MAX_DIMENSION_VALUE: usize = 1024;
const MAX_VALUES: usize = 150;
/// The longest series name a log line quotes.
const MAX_LOGGED_NAME: usize = 120;

/// Every metric name the agent publishes itself. A scraped series never lands on one of
/// them: an exporter serving `PluginHealthy{Region="us-east-1"} 1` would otherwise be
/// published under the agent's own health metric and keep its PluginDown alarm quiet. The
/// test `every_name_the_agent_publishes_itself_is_reserved` keeps this list whole.
pub const RESERVED: [&str; 16] = [
    transform::PLUGIN_HEALTHY,
    transform::HEALTH_CHECK_LATENCY,
    transform::PROJECTED_MONTHLY_COST,
    transform::UNIT_PRICE,
    transform::CARBON_FOOTPRINT,
    transform::COST_QUERY_ERRORS,
    self_metrics::CYCLE_DURATION,
    self_metrics::DATUMS_PUBLISHED,
    self_metrics::QUEUE_DEPTH,
    self_metrics::PUBLISH_FAILURES,
    self_metrics::QUEUE_BYTES,
    self_metrics::QUEUE_OLDEST_AGE,
    self_metrics::DATUMS_DROPPED,
    self_metrics::CORRUPT_RECORDS,
    super::SCRAPE_UP,
    super::SCRAPE_DURATION,
];

/// How to turn one target's families into metrics.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// The `Region` dimension of everything from this target, when SCRAPE_TARGETS names one.
    pub region: Option<String>,
    /// Family-name globs: when any is given, only matching families are published.
    pub include: Vec<String>,
    /// Family-name globs never published.
    pub exclude: Vec<String>,
    /// Label names never made dimensions.
    pub drop_labels: BTreeSet<String>,
    /// The most CloudWatch metrics (name and dimensions) this target may create.
    pub max_series: usize,
}

/// What one target's conversion remembers between scrapes: its places, at most
/// MAX_SERIES_PER_TARGET, and what each remembers. A series without a place costs nothing.
///
/// Places and series are known by a 64-bit hash of their name and dimensions (or labels),
/// not by the strings: at 100k series the keys cost more than 100 MB, the hashes 1.6 MB.
/// The hasher is SipHash with keys drawn at start, so an exporter cannot aim for a
/// collision, and by chance two of 100k series share a hash once in about 4 billion agents.
#[derive(Debug, Default)]
pub struct State {
    scrapes: u64,
    hasher: RandomState,
    places: HashMap<u64, Place>,
}

impl State {
    fn key(&self, series: impl Hash) -> u64 {
        self.hasher.hash_one(series)
    }

    /// The places held and the baselines kept, for the tests and fuzzing of the bounds.
    pub(crate) fn held(&self) -> (usize, usize) {
        let baselines = self.places.values().filter(|p| p.last.is_some()).count();
        (self.places.len(), baselines)
    }
}

/// One CloudWatch metric this target publishes.
#[derive(Debug)]
struct Place {
    /// The last scrape a sample landed on it: a second one in the same scrape is a duplicate.
    used: u64,
    /// A counter-like series' last total or a histogram series' last buckets.
    last: Option<Last>,
}

#[derive(Debug, Clone)]
struct Last {
    /// The series (name and every label) the baseline is of: series whose labels differ
    /// only in what DROP_LABELS drops share a place, and one's total is no baseline for the
    /// other's.
    series: u64,
    value: LastValue,
}

#[derive(Debug, Clone)]
enum LastValue {
    Total(f64),
    /// Cumulative counts by upper bound, ascending.
    Buckets(Vec<(f64, f64)>),
}

/// What a scrape dropped, by reason; every count is a sample (or, for `malformed` and
/// `not_read`, a line) that published nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Lines the parser refused (or a histogram bucket without a numeric `le`).
    pub malformed: u64,
    /// NaN or infinite values.
    pub non_finite: u64,
    /// Counter totals, `_sum`, `_count` or bucket counts below zero.
    pub negative: u64,
    /// A second sample landing on a metric in one scrape: the same series twice, or series
    /// that differ only in labels that are not made dimensions. The first one is kept.
    pub duplicate: u64,
    /// Series named as a metric the agent publishes itself ([`RESERVED`]).
    pub reserved_name: u64,
    /// A metric or dimension name longer than CloudWatch's 255 characters.
    pub too_long: u64,
    /// Series of new metrics past MAX_SERIES_PER_TARGET.
    pub over_cap: u64,
    /// Lines not read because the scrape's time (TARGET_TIMEOUT) ran out, and histogram
    /// lines held until the end of a scrape that did not get there.
    pub not_read: u64,
}

impl Dropped {
    /// Each reason's name (the `reason` label in `/metrics`) and count.
    pub fn by_reason(&self) -> [(&'static str, u64); 8] {
        [
            ("malformed", self.malformed),
            ("non_finite", self.non_finite),
            ("negative", self.negative),
            ("duplicate", self.duplicate),
            ("reserved_name", self.reserved_name),
            ("too_long", self.too_long),
            ("over_cap", self.over_cap),
            ("not_read", self.not_read),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }

    pub fn add(&mut self, other: &Dropped) {
        self.malformed += other.malformed;
        self.non_finite += other.non_finite;
        self.negative += other.negative;
        self.duplicate += other.duplicate;
        self.reserved_name += other.reserved_name;
        self.too_long += other.too_long;
        self.over_cap += other.over_cap;
        self.not_read += other.not_read;
    }
}

/// What one scrape became.
#[derive(Debug, Default, PartialEq)]
pub struct Converted {
    /// At most one per place, so at most MAX_SERIES_PER_TARGET.
    pub metrics: Vec<Metric>,
    pub dropped: Dropped,
    /// The first sample dropped as a duplicate, a negative total, a reserved or too long
    /// name: why, and its name escaped and cut for the log.
    pub first_dropped: Option<(&'static str, String)>,
}

/// Converts one scrape of one target, stamped `timestamp`.
pub fn convert(
    scrape: &Scrape,
    rules: &Rules,
    state: &mut State,
    timestamp: SystemTime,
) -> Converted {
    let mut conversion = Conversion::start(rules, state, timestamp);
    for family in &scrape.families {
        for sample in &family.samples {
            conversion.sample(family.name, family.kind, sample);
        }
    }
    conversion.finish()
}

/// Parses `body` and converts it as it is read, as the source does with each scrape: the
/// metrics, and the lines skipped as malformed.
pub fn convert_body(
    body: &str,
    format: Format,
    rules: &Rules,
    state: &mut State,
    timestamp: SystemTime,
) -> (Converted, Skipped) {
    convert_body_until(body, format, rules, state, timestamp, || false)
}

/// [`convert_body`] that stops reading when `stop` says so (the parser asks every 64 KiB):
/// what was read is converted, except histograms, whose buckets may not all have been read;
/// those and the lines not read count as `not_read`.
pub fn convert_body_until(
    body: &str,
    format: Format,
    rules: &Rules,
    state: &mut State,
    timestamp: SystemTime,
    stop: impl FnMut() -> bool,
) -> (Converted, Skipped) {
    let mut conversion = Conversion::start(rules, state, timestamp);
    let skipped = parse_each_until(body, format, stop, |line| {
        if let Line::Sample {
            family,
            kind,
            sample,
        } = line
        {
            conversion.sample(family, kind, &sample);
        }
    });
    let mut converted = match skipped.stopped {
        None => conversion.finish(),
        Some((_, not_read)) => {
            let mut cut = conversion.finish_cut();
            cut.dropped.not_read += not_read as u64;
            cut
        }
    };
    converted.dropped.malformed += skipped.malformed as u64;
    (converted, skipped)
}

/// One scrape's conversion, fed a sample at a time as the parser reads them
/// ([`super::parse::parse_each`]). Only histogram buckets are held, until the scrape ends,
/// and only for series that hold a place: a series' distribution needs all of its buckets,
/// and an exporter may split a family's lines.
pub struct Conversion<'a, 'b> {
    out: Output<'a>,
    /// The family of the latest sample, and whether the rules choose it.
    family: Option<(&'b str, bool)>,
    /// Histogram buckets by place: the family, the series they are of, and the buckets in
    /// the order read.
    buckets: HashMap<u64, Held<'b>>,
}

struct Held<'b> {
    family: &'b str,
    series: u64,
    dimensions: Dimensions,
    buckets: Vec<(f64, f64)>,
}

impl<'a, 'b> Conversion<'a, 'b> {
    pub fn start(rules: &'a Rules, state: &'a mut State, timestamp: SystemTime) -> Self {
        state.scrapes += 1;
        Conversion {
            out: Output {
                rules,
                timestamp,
                converted: Converted::default(),
                state,
            },
            family: None,
            buckets: HashMap::new(),
        }
    }

    /// One sample of `family`, a family of type `kind`.
    pub fn sample(&mut self, family: &'b str, kind: Kind, s: &Sample<'b>) {
        if self.family.map(|(name, _)| name) != Some(family) {
            self.family = Some((family, chosen(family, self.out.rules)));
        }
        if !self.family.is_some_and(|(_, chosen)| chosen) {
            return;
        }
        let out = &mut self.out;
        match kind {
            Kind::Gauge | Kind::Untyped | Kind::Info | Kind::StateSet => out.gauge(s.name, s),
            Kind::Counter if !s.name.ends_with("_created") => out.counter(s.name, s),
            Kind::Summary if s.name == family => out.gauge(family, s),
            Kind::Summary if !s.name.ends_with("_created") => out.counter(s.name, s),
            Kind::Histogram | Kind::GaugeHistogram
                if s.name.strip_suffix("_bucket") == Some(family) =>
            {
                self.bucket(family, s)
            }
            Kind::Histogram | Kind::GaugeHistogram if !s.name.ends_with("_created") => {
                out.counter(s.name, s)
            }
            _ => {}
        }
    }

    /// A histogram bucket, held with its series' others if the series holds a place.
    fn bucket(&mut self, family: &'b str, s: &Sample<'b>) {
        let out = &mut self.out;
        let Some(le) = s.label("le").and_then(|le| le.parse::<f64>().ok()) else {
            out.converted.dropped.malformed += 1;
            return;
        };
        if le.is_nan() {
            out.converted.dropped.non_finite += 1;
            return;
        }
        if !out.valid_total(family, s.value) {
            return;
        }
        let labels: Labels = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .cloned()
            .collect();
        let Some(place) = out.place_of(family, &labels) else {
            return;
        };
        let series = out.state.key((family, &labels));
        if let Some(held) = self.buckets.get_mut(&place) {
            if held.series == series {
                held.buckets.push((le, s.value));
            } else {
                out.drop_named(Why::Duplicate, family);
            }
            return;
        }
        if out.take(place, family) {
            self.buckets.insert(
                place,
                Held {
                    family,
                    series,
                    dimensions: dimensions(out.rules, &labels),
                    buckets: vec![(le, s.value)],
                },
            );
        }
    }

    /// The scrape's metrics, each histogram series' distribution last; baselines not used
    /// for [`FORGET_AFTER`] scrapes are forgotten.
    pub fn finish(mut self) -> Converted {
        // In the order of the places, so the same body gives the same order of metrics.
        let mut held: Vec<(u64, Held)> = std::mem::take(&mut self.buckets).into_iter().collect();
        held.sort_unstable_by_key(|(place, _)| *place);
        for (place, held) in held {
            self.out.distribution(place, held);
        }
        self.end()
    }

    /// The scrape's metrics when it was cut short: its histograms are left out (their
    /// buckets may be partial), their baselines untouched.
    pub fn finish_cut(mut self) -> Converted {
        let held: usize = self.buckets.values().map(|h| h.buckets.len()).sum();
        self.out.converted.dropped.not_read += held as u64;
        self.buckets.clear();
        self.end()
    }

    fn end(self) -> Converted {
        let Output {
            converted, state, ..
        } = self.out;
        let now = state.scrapes;
        for place in state.places.values_mut() {
            if now - place.used >= FORGET_AFTER {
                place.last = None;
            }
        }
        converted
    }
}

struct Output<'a> {
    rules: &'a Rules,
    timestamp: SystemTime,
    converted: Converted,
    state: &'a mut State,
}

/// Why a sample with a name worth quoting was dropped.
#[derive(Clone, Copy)]
enum Why {
    Duplicate,
    Negative,
    ReservedName,
    TooLong,
}

impl Output<'_> {
    fn gauge(&mut self, name: &str, s: &Sample) {
        if !s.value.is_finite() {
            self.converted.dropped.non_finite += 1;
            return;
        }
        let Some(place) = self.place_of(name, &s.labels) else {
            return;
        };
        if self.take(place, name) {
            self.emit(name, &s.labels, Value::Gauge(s.value));
        }
    }

    /// A counter-like sample's increase since the last scrape of its series.
    fn counter(&mut self, name: &str, s: &Sample) {
        if !self.valid_total(name, s.value) {
            return;
        }
        let Some(place) = self.place_of(name, &s.labels) else {
            return;
        };
        if !self.take(place, name) {
            return;
        }
        let series = self.state.key((name, &s.labels));
        let Some(held) = self.state.places.get_mut(&place) else {
            return;
        };
        let previous = held.last.replace(Last {
            series,
            value: LastValue::Total(s.value),
        });
        let Some(Last {
            series: before_series,
            value: LastValue::Total(before),
        }) = previous
        else {
            return; // the baseline
        };
        if before_series != series {
            return; // another series' total: this one's baseline
        }
        let increase = if s.value >= before {
            s.value - before
        } else {
            s.value
        };
        self.emit(name, &s.labels, Value::Counter(increase));
    }

    /// A histogram series' distribution of the increases since its last buckets.
    fn distribution(&mut self, place: u64, held: Held) {
        let Held {
            family,
            series,
            dimensions,
            mut buckets,
        } = held;
        // Stable: of a bucket given twice, the first one read is kept.
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let before = buckets.len();
        buckets.dedup_by(|later, first| later.0.total_cmp(&first.0).is_eq());
        if buckets.len() < before {
            self.converted.dropped.duplicate += (before - buckets.len()) as u64;
        }
        let Some(place) = self.state.places.get_mut(&place) else {
            return;
        };
        let previous = place.last.replace(Last {
            series,
            value: LastValue::Buckets(buckets.clone()),
        });
        let Some(Last {
            series: before_series,
            value: LastValue::Buckets(before),
        }) = previous
        else {
            return; // the baseline
        };
        if before_series != series {
            return;
        }
        if let Some(value) = distribution(&before, &buckets) {
            self.converted.metrics.push(Metric {
                name: family.to_string(),
                dimensions,
                unit: unit(family),
                timestamp: self.timestamp,
                value,
            });
        }
    }

    /// Whether `value` can be a counter's total (finite, not negative); counts it if not.
    fn valid_total(&mut self, name: &str, value: f64) -> bool {
        if !value.is_finite() {
            self.converted.dropped.non_finite += 1;
            false
        } else if value < 0.0 {
            self.drop_named(Why::Negative, name);
            false
        } else {
            true
        }
    }

    /// The place (CloudWatch metric) a sample named `name` with `labels` lands on; None,
    /// counted, when it may not be published under that name or those dimensions.
    fn place_of(&mut self, name: &str, labels: &[(&str, Cow<str>)]) -> Option<u64> {
        if name.len() > MAX_NAME {
            self.drop_named(Why::TooLong, name);
            return None;
        }
        if RESERVED.contains(&name) {
            self.drop_named(Why::ReservedName, name);
            return None;
        }
        let chosen = chosen_dimensions(self.rules, labels);
        if chosen.iter().any(|(k, _)| k.len() > MAX_NAME) {
            self.drop_named(Why::TooLong, name);
            return None;
        }
        Some(self.state.key((name, &chosen)))
    }

    /// Takes `place` for this scrape's sample: false, counted, when a sample has already
    /// landed on it this scrape, or when it is new and the target holds its cap of places.
    fn take(&mut self, place: u64, name: &str) -> bool {
        let now = self.state.scrapes;
        if let Some(held) = self.state.places.get_mut(&place) {
            if held.used == now {
                self.drop_named(Why::Duplicate, name);
                return false;
            }
            held.used = now;
            return true;
        }
        if self.state.places.len() >= self.rules.max_series {
            self.converted.dropped.over_cap += 1;
            return false;
        }
        self.state.places.insert(
            place,
            Place {
                used: now,
                last: None,
            },
        );
        true
    }

    fn emit(&mut self, name: &str, labels: &[(&str, Cow<str>)], value: Value) {
        self.converted.metrics.push(Metric {
            name: name.to_string(),
            dimensions: dimensions(self.rules, labels),
            unit: unit(name),
            timestamp: self.timestamp,
            value,
        });
    }

    fn drop_named(&mut self, why: Why, name: &str) {
        let dropped = &mut self.converted.dropped;
        let reason = match why {
            Why::Duplicate => {
                dropped.duplicate += 1;
                "duplicate"
            }
            Why::Negative => {
                dropped.negative += 1;
                "negative"
            }
            Why::ReservedName => {
                dropped.reserved_name += 1;
                "reserved_name"
            }
            Why::TooLong => {
                dropped.too_long += 1;
                "too_long"
            }
        };
        if self.converted.first_dropped.is_none() {
            // A metric name is ASCII letters, digits, `_` and `:` by the grammar: nothing to
            // escape, only to cut.
            let name = untrusted::cut(name, MAX_LOGGED_NAME);
            self.converted.first_dropped = Some((reason, name));
        }
    }
}

/// New observations per bucket between two scrapes, each at its bucket's middle; None when
/// there were none. A bucket that went down means the histogram was reset: its counts are
/// taken from zero.
fn distribution(before: &[(f64, f64)], now: &[(f64, f64)]) -> Option<Value> {
    let previous: HashMap<u64, f64> = before.iter().map(|(le, c)| (le.to_bits(), *c)).collect();
    let reset = now
        .iter()
        .any(|(le, c)| previous.get(&le.to_bits()).is_some_and(|p| c < p));
    let mut values = Vec::new();
    let mut counts = Vec::new();
    let (mut lower, mut cumulative_before, mut cumulative_now) = (None::<f64>, 0.0, 0.0);
    for (le, total) in now {
        let was = if reset {
            0.0
        } else {
            previous.get(&le.to_bits()).copied().unwrap_or(0.0)
        };
        // Per-bucket increase: the cumulative increase here minus the one below.
        let increase = ((total - was) - (cumulative_now - cumulative_before)).max(0.0);
        cumulative_now = *total;
        cumulative_before = was;
        if increase > 0.0 {
            values.push(position(lower, *le));
            counts.push(increase);
        }
        if le.is_finite() {
            lower = Some(*le);
        }
    }
    if values.is_empty() {
        return None;
    }
    merge_to_limit(&mut values, &mut counts);
    Some(Value::distribution(values, counts))
}

/// Where a bucket's observations are put: the middle of `(lower, upper]`.
fn position(lower: Option<f64>, upper: f64) -> f64 {
    match (lower, upper.is_finite()) {
        // Halved first only when the sum would overflow (bounds near f64::MAX), so ordinary
        // middles stay exactly what they always were.
        (Some(l), true) if (l + upper).is_finite() => (l + upper) / 2.0,
        (Some(l), true) => l / 2.0 + upper / 2.0,
        (None, true) if upper > 0.0 => upper / 2.0,
        (None, true) => upper,
        (Some(l), false) => l,
        (None, false) => 0.0,
    }
}

/// More than 150 non-empty buckets: neighbours merge, counts added, at their weighted mean.
fn merge_to_limit(values: &mut Vec<f64>, counts: &mut Vec<f64>) {
    while values.len() > MAX_VALUES {
        let mut v = Vec::with_capacity(values.len() / 2 + 1);
        let mut c = Vec::with_capacity(values.len() / 2 + 1);
        for i in (0..values.len()).step_by(2) {
            match (values.get(i + 1), counts.get(i + 1)) {
                (Some(v2), Some(c2)) => {
                    // Huge counts or values: weights first, and a sum kept finite, so an
                    // exporter's 1e308 makes a big datum, never an infinite one.
                    let n = (counts[i] + c2).min(f64::MAX);
                    let mean = (values[i] * counts[i] + v2 * c2) / n;
                    let mean = if mean.is_finite() {
                        mean
                    } else {
                        let first = 1.0 / (1.0 + c2 / counts[i]);
                        values[i] * first + v2 * (1.0 - first)
                    };
                    v.push(mean);
                    c.push(n);
                }
                _ => {
                    v.push(values[i]);
                    c.push(counts[i]);
                }
            }
        }
        *values = v;
        *counts = c;
    }
}

/// The dimensions of a series: the target's region, then labels by name, by the rules.
fn dimensions(rules: &Rules, labels: &[(&str, Cow<str>)]) -> Dimensions {
    let chosen = chosen_dimensions(rules, labels);
    Dimensions::from_sorted(chosen.iter().map(|(k, v)| (*k, v.as_ref())))
}

/// The dimensions of a series as borrowed pairs, sorted by name: what a place is known by.
fn chosen_dimensions<'l>(
    rules: &'l Rules,
    labels: &'l [(&str, Cow<str>)],
) -> Vec<(&'l str, Cow<'l, str>)> {
    let mut chosen: Vec<(&str, Cow<str>)> =
        Vec::with_capacity(labels.len().min(MAX_DIMENSIONS) + 1);
    if let Some(region) = &rules.region {
        chosen.push(("Region", Cow::Borrowed(region)));
    }
    // The parser has refused a label given twice, so names are unique here.
    let mut labels: Vec<&(&str, Cow<str>)> = labels
        .iter()
        .filter(|(k, v)| {
            let region = rules.region.is_some() && *k == "Region";
            !(v.is_empty() || region || rules.drop_labels.contains(*k))
        })
        .collect();
    labels.sort();
    for (k, v) in labels {
        if chosen.len() >= MAX_DIMENSIONS {
            break;
        }
        chosen.push((k, dimension_value(v)));
    }
    chosen.sort_by(|a, b| a.0.cmp(b.0));
    chosen
}

/// Printable ASCII only (anything else becomes `?`), cut to what CloudWatch takes; borrowed
/// when it is already so, as nearly every label value is.
fn dimension_value(v: &str) -> Cow<'_, str> {
    if v.len() <= MAX_DIMENSION_VALUE && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Cow::Borrowed(v);
    }
    v.chars()
        .take(MAX_DIMENSION_VALUE)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A metric's unit from its name: `_count` is a count; otherwise, past a `_total` or `_sum`
/// suffix, `_seconds` is Seconds and `_bytes` Bytes; any other `_total` is a count.
fn unit(name: &str) -> Unit {
    if name.ends_with("_count") {
        return Unit::Count;
    }
    let base = name
        .strip_suffix("_total")
        .or_else(|| name.strip_suffix("_sum"))
        .unwrap_or(name);
    if base.ends_with("_seconds") {
        Unit::Seconds
    } else if base.ends_with("_bytes") {
        Unit::Bytes
    } else if name.ends_with("_total") {
        Unit::Count
    } else {
        Unit::None
    }
}

fn chosen(family: &str, rules: &Rules) -> bool {
    (rules.include.is_empty() || rules.include.iter().any(|g| glob(g, family)))
        && !rules.exclude.iter().any(|g| glob(g, family))
}

/// `*` any run of characters, `?` one character, everything else itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    fn rules() -> Rules {
        Rules {
            max_series: 500,
            ..Rules::default()
        }
    }

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)
    }

    /// Converts `bodies` one scrape after another, a sample at a time as the source does;
    /// the last scrape's result.
    fn scrapes(bodies: &[&str], rules: &Rules) -> Converted {
        let mut state = State::default();
        let mut last = Converted::default();
        for body in bodies {
            last = convert_body(body, Format::Text, rules, &mut state, at()).0;
        }
        last
    }

    #[test]
    fn a_histogram_whose_lines_are_split_by_another_family_is_converted_whole() {
        let body = |n: f64| {
            format!(
                "# TYPE h histogram\nh_bucket{{le=\"1\"}} {}\nother 1\nh_bucket{{le=\"+Inf\"}} {}\n",
                n,
                2.0 * n
            )
        };
        let c = scrapes(&[&body(1.0), &body(3.0)], &rules());
        let h: Vec<&Value> = c
            .metrics
            .iter()
            .filter(|m| m.name == "h")
            .map(|m| &m.value)
            .collect();
        assert_eq!(
            h,
            [&Value::distribution(vec![0.5, 1.0], vec![2.0, 2.0])],
            "one distribution of both buckets' increases"
        );
    }

    #[test]
    fn a_scrape_converted_sample_by_sample_is_the_scrape_converted_whole() {
        let body = |n: u32| {
            format!(
                "# TYPE g gauge\ng{{a=\"1\"}} {n}\n# TYPE c counter\nc_total {}\n# TYPE h histogram\nh_bucket{{le=\"1\"}} {n}\nh_bucket{{le=\"+Inf\"}} {}\nh_sum {n}\nh_count {}\n# TYPE s summary\ns{{quantile=\"0.5\"}} {n}\ns_count {n}\n",
                n * 10,
                n * 2,
                n * 2
            )
        };
        let bodies: Vec<String> = (1..=3).map(body).collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let streamed = scrapes(&refs, &rules());
        let mut state = State::default();
        let mut whole = Converted::default();
        for b in &bodies {
            whole = convert(&parse(b, Format::Text), &rules(), &mut state, at());
        }
        assert_eq!(streamed, whole);
        assert_eq!(streamed.metrics.len(), 7, "{:?}", values(&streamed));
    }

    fn values(c: &Converted) -> Vec<(String, Value)> {
        c.metrics
            .iter()
            .map(|m| (m.name.clone(), m.value.clone()))
            .collect()
    }

    #[test]
    fn gauges_and_untyped_are_published_as_they_are() {
        let c = scrapes(
            &["# TYPE temp gauge\ntemp{room=\"a\"} 21.5\nplain 3\n"],
            &rules(),
        );
        assert_eq!(
            values(&c),
            [
                ("temp".into(), Value::Gauge(21.5)),
                ("plain".into(), Value::Gauge(3.0))
            ]
        );
        assert_eq!(
            c.metrics[0].dimensions,
            Dimensions::from([("room".into(), "a".into())])
        );
        assert_eq!(c.metrics[0].timestamp, at());
    }

    #[test]
    fn a_counters_first_scrape_is_its_baseline_and_then_its_increases() {
        let t = "# TYPE req_total counter\nreq_total ";
        let first = scrapes(&[&format!("{t}100\n")], &rules());
        assert!(first.metrics.is_empty());
        let later = scrapes(&[&format!("{t}100\n"), &format!("{t}130\n")], &rules());
        assert_eq!(values(&later), [("req_total".into(), Value::Counter(30.0))]);
        assert_eq!(later.metrics[0].unit, Unit::Count);
    }

    #[test]
    fn a_counter_that_goes_down_was_reset_and_never_publishes_a_negative() {
        let t = "# TYPE req_total counter\nreq_total ";
        let c = scrapes(&[&format!("{t}100\n"), &format!("{t}7\n")], &rules());
        assert_eq!(values(&c), [("req_total".into(), Value::Counter(7.0))]);
    }

    #[test]
    fn a_vanished_series_is_forgotten_and_baselined_again() {
        let t = "# TYPE req_total counter\nreq_total ";
        let mut bodies = vec![format!("{t}100\n")];
        bodies.extend((0..FORGET_AFTER).map(|_| "other 1\n".to_string()));
        bodies.push(format!("{t}150\n"));
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let c = scrapes(&refs, &rules());
        assert!(c.metrics.iter().all(|m| m.name != "req_total"), "{c:?}");
        // Missing for fewer scrapes: still remembered.
        let c = scrapes(
            &[&format!("{t}100\n"), "other 1\n", &format!("{t}150\n")],
            &rules(),
        );
        assert!(values(&c).contains(&("req_total".into(), Value::Counter(50.0))));
    }

    const HISTOGRAM: &str = "# TYPE lat_seconds histogram\n";

    fn histogram(b: [f64; 4], sum: f64) -> String {
        format!(
            "{HISTOGRAM}lat_seconds_bucket{{le=\"0.1\"}} {}\nlat_seconds_bucket{{le=\"0.5\"}} {}\nlat_seconds_bucket{{le=\"1\"}} {}\nlat_seconds_bucket{{le=\"+Inf\"}} {}\nlat_seconds_sum {sum}\nlat_seconds_count {}\n",
            b[0], b[1], b[2], b[3], b[3]
        )
    }

    #[test]
    fn a_histogram_is_one_distribution_of_bucket_increases_with_sum_and_count() {
        let c = scrapes(
            &[
                &histogram([1.0, 2.0, 2.0, 3.0], 1.0),
                &histogram([3.0, 7.0, 7.0, 9.0], 4.0),
            ],
            &rules(),
        );
        let dist = c
            .metrics
            .iter()
            .find(|m| m.name == "lat_seconds")
            .expect("one metric");
        // New per bucket: (0,0.1] 2, (0.1,0.5] 3, (0.5,1] 0 (empty, left out), +Inf 1.
        assert_eq!(
            dist.value,
            Value::distribution(vec![0.05, 0.3, 1.0], vec![2.0, 3.0, 1.0])
        );
        assert_eq!(dist.unit, Unit::Seconds);
        assert!(!dist.dimensions.contains_key("le"));
        assert!(values(&c).contains(&("lat_seconds_sum".into(), Value::Counter(3.0))));
        assert!(values(&c).contains(&("lat_seconds_count".into(), Value::Counter(6.0))));
        assert!(c.metrics.iter().all(|m| !m.name.ends_with("_bucket")));
    }

    #[test]
    fn a_histogram_without_new_observations_publishes_no_distribution() {
        let h = histogram([1.0, 2.0, 2.0, 3.0], 1.0);
        let c = scrapes(&[&h, &h], &rules());
        assert!(c.metrics.iter().all(|m| m.name != "lat_seconds"));
        assert!(values(&c).contains(&("lat_seconds_count".into(), Value::Counter(0.0))));
    }

    #[test]
    fn a_reset_histogram_counts_from_zero() {
        let c = scrapes(
            &[
                &histogram([5.0, 9.0, 9.0, 9.0], 9.0),
                &histogram([1.0, 1.0, 1.0, 2.0], 1.0),
            ],
            &rules(),
        );
        let dist = c.metrics.iter().find(|m| m.name == "lat_seconds").unwrap();
        assert_eq!(
            dist.value,
            Value::distribution(vec![0.05, 1.0], vec![1.0, 1.0])
        );
    }

    #[test]
    fn bucket_positions_sit_in_their_buckets() {
        assert_eq!(position(None, 0.1), 0.05);
        assert_eq!(position(Some(0.1), 0.5), 0.3);
        assert_eq!(position(Some(1.0), f64::INFINITY), 1.0);
        assert_eq!(position(None, -2.0), -2.0);
        assert_eq!(position(None, f64::INFINITY), 0.0);
        // The middle is (l + u) / 2 whenever that sum is finite: halving each first would
        // round the smallest doubles differently (1 and 5 units in the last place: 3, not 2).
        assert_eq!(
            position(Some(f64::from_bits(1)), f64::from_bits(5)),
            f64::from_bits(3)
        );
    }

    #[test]
    fn more_than_150_buckets_merge_into_150_values_keeping_every_count() {
        let mut values: Vec<f64> = (0..400).map(f64::from).collect();
        let mut counts = vec![1.0; 400];
        merge_to_limit(&mut values, &mut counts);
        assert!(values.len() <= MAX_VALUES);
        assert_eq!(counts.iter().sum::<f64>(), 400.0);
    }

    #[test]
    fn a_summary_is_a_gauge_per_quantile_and_increases_of_sum_and_count() {
        let s = |sum: f64, count: f64| {
            format!(
                "# TYPE rpc_seconds summary\nrpc_seconds{{quantile=\"0.5\"}} 0.2\nrpc_seconds{{quantile=\"0.99\"}} 0.9\nrpc_seconds_sum {sum}\nrpc_seconds_count {count}\n"
            )
        };
        let c = scrapes(&[&s(10.0, 5.0), &s(12.5, 8.0)], &rules());
        let q: Vec<(String, Value)> = c
            .metrics
            .iter()
            .filter(|m| m.name == "rpc_seconds")
            .map(|m| (m.dimensions["quantile"].to_string(), m.value.clone()))
            .collect();
        assert_eq!(
            q,
            [
                ("0.5".into(), Value::Gauge(0.2)),
                ("0.99".into(), Value::Gauge(0.9))
            ]
        );
        assert!(values(&c).contains(&("rpc_seconds_sum".into(), Value::Counter(2.5))));
        assert!(values(&c).contains(&("rpc_seconds_count".into(), Value::Counter(3.0))));
    }

    #[test]
    fn nan_and_infinities_are_dropped_and_counted() {
        let c = scrapes(&["a NaN\nb +Inf\nc -Inf\nd 1\n"], &rules());
        assert_eq!(values(&c), [("d".into(), Value::Gauge(1.0))]);
        assert_eq!(c.dropped.non_finite, 3);
    }

    /// Each scrape's values, one scrape after another in one state.
    fn each_scrape(bodies: &[String], format: Format) -> Vec<Converted> {
        let mut state = State::default();
        bodies
            .iter()
            .map(|b| convert_body(b, format, &rules(), &mut state, at()).0)
            .collect()
    }

    #[test]
    fn counters_and_histograms_publish_every_scrape_however_many_there_are() {
        // Ten scrapes, well past FORGET_AFTER: a series that is there every time is never
        // forgotten, and every scrape after its baseline publishes its increase.
        let body = |n: f64| {
            format!(
                "# TYPE c counter\nc_total {}\n{HISTOGRAM}lat_seconds_bucket{{le=\"0.1\"}} {n}\nlat_seconds_bucket{{le=\"+Inf\"}} {}\n",
                10.0 * n,
                2.0 * n
            )
        };
        let bodies: Vec<String> = (1..=10).map(|n| body(f64::from(n))).collect();
        let all = each_scrape(&bodies, Format::Text);
        assert_eq!(values(&all[0]), []);
        for c in &all[1..] {
            assert_eq!(
                values(c),
                [
                    ("c_total".into(), Value::Counter(10.0)),
                    (
                        "lat_seconds".into(),
                        Value::distribution(vec![0.05, 0.1], vec![1.0, 1.0])
                    ),
                ]
            );
        }
    }

    #[test]
    fn a_series_first_seen_late_is_forgotten_after_the_same_number_of_scrapes() {
        let t = "# TYPE req_total counter\nreq_total ";
        // First seen at the third scrape, then missing for FORGET_AFTER scrapes: forgotten,
        // so its return is a baseline again.
        let mut bodies = vec![
            "other 1\n".to_string(),
            "other 1\n".to_string(),
            format!("{t}100\n"),
        ];
        bodies.extend((0..FORGET_AFTER).map(|_| "other 1\n".to_string()));
        bodies.push(format!("{t}150\n"));
        let all = each_scrape(&bodies, Format::Text);
        assert!(
            all.iter()
                .all(|c| c.metrics.iter().all(|m| m.name != "req_total"))
        );
        // Missing for one scrape fewer: remembered, so its return publishes the increase.
        bodies.remove(3);
        let all = each_scrape(&bodies, Format::Text);
        assert_eq!(
            values(all.last().unwrap())[0],
            ("req_total".into(), Value::Counter(50.0))
        );
    }

    #[test]
    fn openmetrics_created_samples_are_never_published() {
        // A `_created` sample is a timestamp, not a count: published as a counter it would
        // be a paid metric of zeros.
        let body = |n: u32| {
            format!(
                "# TYPE c counter\nc_total {n}\nc_created 1.7e9\n# TYPE s summary\ns_sum {n}\ns_count {n}\ns_created 1.7e9\n# TYPE h histogram\nh_bucket{{le=\"1\"}} {n}\nh_bucket{{le=\"+Inf\"}} {n}\nh_sum {n}\nh_count {n}\nh_created 1.7e9\n# EOF\n"
            )
        };
        let all = each_scrape(&[body(1), body(2)], Format::OpenMetrics);
        let names: Vec<String> = all[1].metrics.iter().map(|m| m.name.clone()).collect();
        assert_eq!(
            names,
            ["c_total", "s_sum", "s_count", "h_sum", "h_count", "h"]
        );
        assert_eq!(all[1].dropped.total(), 0);
        assert_eq!(
            all[0].metrics.len(),
            0,
            "the first scrape is every series' baseline"
        );
    }

    #[test]
    fn nan_in_a_counter_a_bucket_or_a_bound_is_dropped_and_counted() {
        let body = "# TYPE c counter\nc_total NaN\nd_total 1\n# TYPE h histogram\nh_bucket{le=\"1\"} NaN\nh_bucket{le=\"NaN\"} 1\nh_bucket{le=\"+Inf\"} 2\n";
        let all = each_scrape(&[body.to_string()], Format::Text);
        assert_eq!(all[0].dropped.non_finite, 3);
        assert_eq!(all[0].dropped.total(), 3);
    }

    #[test]
    fn up_to_150_buckets_are_kept_and_151_merge_in_neighbouring_pairs() {
        let (mut values, mut counts): (Vec<f64>, Vec<f64>) =
            (1..=150).map(|i| (f64::from(i), 1.0)).unzip();
        let (v0, c0) = (values.clone(), counts.clone());
        merge_to_limit(&mut values, &mut counts);
        assert_eq!((values, counts), (v0, c0), "150 is within the limit");
        // 151: pairs merge at their count-weighted mean, the odd one out stays.
        let mut values: Vec<f64> = (1..=151).map(f64::from).collect();
        let mut counts: Vec<f64> = (1..=151)
            .map(|i| if i % 2 == 0 { 3.0 } else { 2.0 })
            .collect();
        merge_to_limit(&mut values, &mut counts);
        assert_eq!(values.len(), 76);
        assert_eq!((values[0], counts[0]), ((1.0 * 2.0 + 2.0 * 3.0) / 5.0, 5.0));
        assert_eq!(
            (values[74], counts[74]),
            ((149.0 * 2.0 + 150.0 * 3.0) / 5.0, 5.0)
        );
        assert_eq!((values[75], counts[75]), (151.0, 2.0));
    }

    #[test]
    fn units_come_from_the_family_name() {
        assert_eq!(unit("process_cpu_seconds"), Unit::Seconds);
        assert_eq!(unit("node_memory_MemFree_bytes"), Unit::Bytes);
        assert_eq!(unit("http_requests_total"), Unit::Count);
        assert_eq!(unit("temperature_celsius"), Unit::None);
        assert_eq!(unit("process_cpu_seconds_total"), Unit::Seconds);
        assert_eq!(unit("lat_seconds_sum"), Unit::Seconds);
        assert_eq!(unit("lat_seconds_count"), Unit::Count);
        assert_eq!(unit("io_bytes_total"), Unit::Bytes);
    }

    #[test]
    fn labels_become_dimensions_by_the_rules() {
        let mut r = rules();
        r.region = Some("eu-west-1".into());
        r.drop_labels = BTreeSet::from(["instance".to_string()]);
        let many: String = (0..40).map(|i| format!("l{i:02}=\"v\",")).collect();
        let body = format!(
            "m{{{many}instance=\"h:9100\",empty=\"\",odd=\"caf\u{e9}\\n\",long=\"{}\"}} 1\n",
            "x".repeat(2000)
        );
        let c = scrapes(&[&body], &r);
        let dims = &c.metrics[0].dimensions;
        assert_eq!(dims.len(), 30);
        assert_eq!(&dims["Region"], "eu-west-1");
        assert!(!dims.contains_key("instance") && !dims.contains_key("empty"));
        // By name: "l00".."l28" fill the 29 places after Region; "long" and "odd" sort after.
        assert!(dims.contains_key("l28") && !dims.contains_key("l29"));
        let c = scrapes(
            &[&format!(
                "m{{odd=\"caf\u{e9}\\n\",long=\"{}\"}} 1\n",
                "x".repeat(2000)
            )],
            &rules(),
        );
        let dims = &c.metrics[0].dimensions;
        assert_eq!(&dims["odd"], "caf??");
        assert_eq!(dims["long"].len(), 1024);
    }

    #[test]
    fn include_and_exclude_choose_families_by_glob() {
        let mut r = rules();
        r.include = vec!["node_*".into(), "up".into()];
        r.exclude = vec!["node_cpu_*".into()];
        let c = scrapes(
            &["node_load1 1\nnode_cpu_seconds 2\nup 1\ngo_goroutines 7\n"],
            &r,
        );
        let names: Vec<String> = c.metrics.iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, ["node_load1", "up"]);
    }

    #[test]
    fn globs_match_like_shells() {
        for (p, n, ok) in [
            ("node_*", "node_load1", true),
            ("*_total", "http_requests_total", true),
            ("a?c", "abc", true),
            ("a?c", "abbc", false),
            ("*", "", true),
            ("a*b*c", "a_x_b_y_c", true),
            ("a*b*c", "a_x_c", false),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob(p, n), ok, "{p} {n}");
        }
    }

    #[test]
    fn a_target_never_creates_more_metrics_than_its_cap() {
        let mut r = rules();
        r.max_series = 3;
        let body: String = (0..10).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        let mut state = State::default();
        let c = convert(&parse(&body, Format::Text), &r, &mut state, at());
        assert_eq!((c.metrics.len(), c.dropped.over_cap), (3, 7));
        // The same three keep publishing; no other is let in later.
        let c = convert(&parse(&body, Format::Text), &r, &mut state, at());
        assert_eq!((c.metrics.len(), c.dropped.over_cap), (3, 7));
        let names: Vec<&str> = c.metrics.iter().map(|m| &m.dimensions["i"]).collect();
        assert_eq!(names, ["0", "1", "2"]);
    }

    #[test]
    fn a_series_given_twice_publishes_its_first_sample_only_and_counts_the_other() {
        let body = "# TYPE c counter\nc_total{a=\"1\"} 10\nc_total{a=\"1\"} 20\n";
        let mut state = State::default();
        let first = convert_body(body, Format::Text, &rules(), &mut state, at()).0;
        assert_eq!((first.metrics.len(), first.dropped.duplicate), (0, 1));
        assert_eq!(
            first.first_dropped,
            Some(("duplicate", "c_total".to_string()))
        );
        // Nothing changed between the scrapes: the increase is 0, not +10 every cycle.
        let second = convert_body(body, Format::Text, &rules(), &mut state, at()).0;
        assert_eq!(values(&second), [("c_total".into(), Value::Counter(0.0))]);
        assert_eq!(second.dropped.duplicate, 1);
        // A gauge too: the first value is the one published.
        let c = scrapes(&["g 1\ng 2\n"], &rules());
        assert_eq!(values(&c), [("g".into(), Value::Gauge(1.0))]);
    }

    #[test]
    fn a_negative_counter_total_is_invalid_never_a_negative_increase() {
        let t = "# TYPE c counter\nc_total ";
        let mut state = State::default();
        let mut last = Converted::default();
        for total in ["-1", "-3"] {
            last = convert_body(
                &format!("{t}{total}\n"),
                Format::Text,
                &rules(),
                &mut state,
                at(),
            )
            .0;
        }
        assert!(last.metrics.is_empty(), "{:?}", values(&last));
        assert_eq!(last.dropped.negative, 1);
        assert_eq!(
            last.first_dropped,
            Some(("negative", "c_total".to_string()))
        );
        // A summary's _count below zero, and a bucket's, the same.
        let c = scrapes(
            &["# TYPE s summary\ns_count -2\n# TYPE h histogram\nh_bucket{le=\"1\"} -1\n"],
            &rules(),
        );
        assert_eq!(c.dropped.negative, 2);
    }

    #[test]
    fn eight_million_lines_of_one_series_are_one_datum() {
        // The shape of a 31 KB gzip body that made 8,000,002 datums; 400k lines here.
        let body = "d 1\n".repeat(400_000);
        let c = scrapes(&[&body], &rules());
        assert_eq!(values(&c), [("d".into(), Value::Gauge(1.0))]);
        assert_eq!(c.dropped.duplicate, 399_999);
    }

    #[test]
    fn datums_never_outnumber_the_cap_whatever_the_labels_that_are_not_dimensions() {
        let mut r = rules();
        r.max_series = 5;
        r.drop_labels = BTreeSet::from(["i".to_string()]);
        // 1000 series that become one metric, and 1000 that are each their own.
        let mut body: String = (0..1000)
            .map(|i| format!("same{{i=\"{i}\"}} 1\n"))
            .collect();
        body.extend((0..1000).map(|i| format!("own{{j=\"{i}\"}} 1\n")));
        let mut state = State::default();
        for _ in 0..3 {
            let c = convert_body(&body, Format::Text, &r, &mut state, at()).0;
            assert_eq!(c.metrics.len(), 5);
            assert_eq!((c.dropped.duplicate, c.dropped.over_cap), (999, 996));
        }
    }

    #[test]
    fn only_series_holding_a_place_keep_a_baseline() {
        let mut r = rules();
        r.max_series = 10;
        let body: String = (0..1000)
            .map(|i| format!("# TYPE c{i} counter\nc{i}_total 5\n"))
            .collect();
        let mut state = State::default();
        let c = convert_body(&body, Format::Text, &r, &mut state, at()).0;
        assert_eq!(c.dropped.over_cap, 990);
        assert_eq!(state.held(), (10, 10));
        // A histogram's buckets are held (and kept) only for the series that hold a place.
        let h: String = (0..100)
            .map(|i| format!("# TYPE h{i} histogram\nh{i}_bucket{{le=\"1\"}} 1\nh{i}_bucket{{le=\"+Inf\"}} 1\n"))
            .collect();
        let mut state = State::default();
        let c = convert_body(&h, Format::Text, &r, &mut state, at()).0;
        assert_eq!(c.dropped.over_cap, 180, "both buckets of each of 90 series");
        assert_eq!(state.held(), (10, 10));
    }

    #[test]
    fn a_series_named_as_the_agents_own_metric_is_never_published() {
        let mut r = rules();
        r.region = Some("us-east-1".into());
        let body: String = RESERVED
            .iter()
            .map(|name| {
                format!("{name}{{Region=\"us-east-1\",Agent=\"cloudwatch-publisher\"}} 1\n")
            })
            .chain([
                "# TYPE PluginHealthy_x counter\nPluginHealthy_x_total 1\nfine 1\n".to_string(),
            ])
            .collect();
        let c = scrapes(&[&body, &body], &r);
        let names: Vec<String> = c.metrics.iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, ["PluginHealthy_x_total", "fine"]);
        assert_eq!(c.dropped.reserved_name, 16);
        assert_eq!(
            c.first_dropped,
            Some(("reserved_name", "PluginHealthy".to_string()))
        );
        // Every kind: a histogram, a summary and a counter of a reserved name.
        let kinds = "# TYPE CycleDuration histogram\nCycleDuration_bucket{le=\"+Inf\"} 1\n# TYPE QueueDepth summary\nQueueDepth{quantile=\"0.5\"} 1\n# TYPE DatumsDropped counter\nDatumsDropped 3\n";
        let c = scrapes(&[kinds, kinds], &rules());
        assert!(c.metrics.is_empty(), "{:?}", values(&c));
        assert_eq!(c.dropped.reserved_name, 3);
    }

    #[test]
    fn every_name_the_agent_publishes_itself_is_reserved() {
        use crate::sources::plugins::sample::Sample as PluginSample;
        let report = crate::sinks::cloudwatch::PublishReport::default();
        let own = self_metrics::of_cycle(
            "a",
            std::time::Duration::ZERO,
            &report,
            &crate::buffer::Gauges::default(),
            0,
            at(),
        );
        let plugin = transform::to_metrics(
            &[
                PluginSample::Health {
                    region: "r".into(),
                    healthy: true,
                    latency: Some(std::time::Duration::ZERO),
                },
                PluginSample::Cost {
                    region: "r".into(),
                    resource_type: "ec2".into(),
                    sku: "t3.micro".into(),
                    unit_price: 1.0,
                    monthly_cost: 1.0,
                    carbon_grams: Some(1.0),
                },
                PluginSample::CostErrors {
                    region: "r".into(),
                    count: 1,
                },
            ],
            at(),
        );
        let published: BTreeSet<String> = own
            .iter()
            .chain(&plugin)
            .map(|m| m.name.clone())
            .chain([
                super::super::SCRAPE_UP.into(),
                super::super::SCRAPE_DURATION.into(),
            ])
            .collect();
        let reserved: BTreeSet<String> = RESERVED.iter().map(|n| n.to_string()).collect();
        assert_eq!(published, reserved);
    }

    #[test]
    fn names_longer_than_cloudwatch_takes_are_dropped_and_counted() {
        let long = "n".repeat(256);
        // 255 characters are a name CloudWatch takes, as a metric's or a dimension's.
        let body = format!(
            "{long} 1\nm{{{long}=\"v\"}} 1\n{} 1\nw{{{}=\"v\"}} 1\n",
            "k".repeat(255),
            "l".repeat(255)
        );
        let c = scrapes(&[&body], &rules());
        assert_eq!(c.metrics.len(), 2);
        assert_eq!(c.dropped.too_long, 2);
        let (why, name) = c.first_dropped.unwrap();
        assert_eq!(why, "too_long");
        assert!(
            name.starts_with(&"n".repeat(120)) && name.ends_with("[136 more characters cut]"),
            "{name}"
        );
    }

    #[test]
    fn a_bucket_given_twice_keeps_the_first() {
        let h = |n: f64| {
            format!(
                "# TYPE h histogram\nh_bucket{{le=\"1\"}} {n}\nh_bucket{{le=\"1\"}} 100\nh_bucket{{le=\"+Inf\"}} {n}\n"
            )
        };
        let c = scrapes(&[&h(1.0), &h(3.0)], &rules());
        assert_eq!(
            values(&c),
            [("h".into(), Value::distribution(vec![0.5], vec![2.0]))]
        );
        assert_eq!(c.dropped.duplicate, 1);
        // Every bucket twice: three of six counted.
        let twice = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\nh_bucket{le=\"2\"} 2\nh_bucket{le=\"+Inf\"} 2\nh_bucket{le=\"+Inf\"} 2\n";
        assert_eq!(scrapes(&[twice], &rules()).dropped.duplicate, 3);
    }

    #[test]
    fn a_counter_total_of_zero_is_a_baseline_like_any_other() {
        let c = scrapes(
            &[
                "# TYPE c counter\nc_total 0\n",
                "# TYPE c counter\nc_total 5\n",
            ],
            &rules(),
        );
        assert_eq!(values(&c), [("c_total".into(), Value::Counter(5.0))]);
        assert_eq!(c.dropped, Dropped::default());
    }

    #[test]
    fn a_scrape_cut_short_publishes_what_it_read_but_no_histogram() {
        let body = format!(
            "{}{}",
            histogram([1.0, 2.0, 2.0, 3.0], 1.0),
            (0..3000)
                .map(|i| format!("g{{i=\"{i}\"}} 1\n"))
                .collect::<String>()
        );
        let mut state = State::default();
        let mut asked = 0;
        let r = Rules {
            max_series: 5000,
            ..rules()
        };
        let (c, skipped) = convert_body_until(&body, Format::Text, &r, &mut state, at(), || {
            asked += 1;
            asked == 2
        });
        let (at_line, not_read) = skipped.stopped.expect("stopped");
        assert_eq!(at_line, 2048);
        // The gauges read before the cut; the histogram's 4 buckets are left out.
        let gauges = c.metrics.iter().filter(|m| m.name == "g").count();
        assert_eq!(gauges, 2047 - 7);
        assert!(c.metrics.iter().all(|m| m.name != "lat_seconds"));
        assert_eq!(c.dropped.not_read, not_read as u64 + 4);
        assert_eq!(gauges as u64 + c.dropped.not_read - 4, 3000);
    }

    #[test]
    fn malformed_lines_and_bounds_are_counted_and_counts_add_up_by_reason() {
        // Two lines the parser refuses and a bucket whose `le` is not a number: three
        // malformed, and the rest published.
        let body = "ok 1\nbad{ 1\nalso bad\n# TYPE h histogram\nh_bucket{le=\"abc\"} 1\nfine 2\n";
        let mut state = State::default();
        let (c, skipped) =
            convert_body_until(body, Format::Text, &rules(), &mut state, at(), || false);
        assert_eq!((skipped.malformed, c.dropped.malformed), (2, 3));
        let names: Vec<&str> = c.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["ok", "fine"]);

        let mut sum = Dropped {
            malformed: 1,
            non_finite: 2,
            negative: 3,
            duplicate: 4,
            reserved_name: 5,
            too_long: 6,
            over_cap: 7,
            not_read: 8,
        };
        sum.add(&Dropped {
            malformed: 10,
            non_finite: 20,
            negative: 30,
            duplicate: 40,
            reserved_name: 50,
            too_long: 60,
            over_cap: 70,
            not_read: 80,
        });
        assert_eq!(
            sum.by_reason().map(|(_, n)| n),
            [11, 22, 33, 44, 55, 66, 77, 88]
        );
        assert_eq!(sum.total(), 396);
    }

    /// Complexity guards for the conversion, as for the parser ([`crate::complexity`]).
    #[test]
    fn conversion_time_grows_linearly_with_the_body_whatever_its_shape() {
        let labels: String = (0..128).map(|i| format!("l{i}=\"v\",")).collect();
        type Shape = (&'static str, Box<dyn Fn(usize) -> String>);
        let shapes: Vec<Shape> = vec![
            ("n lines of one series", Box::new(|n| "d 1\n".repeat(n * 4))),
            (
                "n series past the cap",
                Box::new(|n| (0..n * 2).map(|i| format!("g{{i=\"{i}\"}} 1\n")).collect()),
            ),
            (
                "n series that are one metric",
                Box::new(|n| {
                    (0..n * 2)
                        .map(|i| format!("g{{dropped=\"{i}\"}} 1\n"))
                        .collect()
                }),
            ),
            (
                "one histogram series of n buckets",
                Box::new(|n| {
                    let mut h = "# TYPE h histogram\n".to_string();
                    h.extend((0..n * 2).map(|i| format!("h_bucket{{le=\"{i}\"}} {i}\n")));
                    h
                }),
            ),
            (
                "n histogram series",
                Box::new(|n| {
                    let mut h = "# TYPE h histogram\n".to_string();
                    h.extend((0..n).map(|i| format!("h_bucket{{s=\"{i}\",le=\"1\"}} 1\n")));
                    h
                }),
            ),
            (
                "n lines of 128 labels",
                Box::new(move |n| {
                    (0..n / 8)
                        .map(|i| format!("m{{{labels}i=\"{i}\"}} 1\n").replace("l0=", "k="))
                        .collect()
                }),
            ),
            (
                "n negative totals and reserved names",
                Box::new(|n| {
                    let mut c = "# TYPE c counter\n".to_string();
                    c.extend((0..n).map(|i| {
                        format!("c_total{{i=\"{i}\"}} -1\nPluginHealthy{{i=\"{i}\"}} 1\n")
                    }));
                    c
                }),
            ),
        ];
        let mut r = rules();
        r.drop_labels = BTreeSet::from(["dropped".to_string()]);
        for (what, body) in shapes {
            let n = 1_000;
            let (small, large) = (body(n), body(4 * n));
            crate::complexity::assert_linear(what, small.as_str(), large.as_str(), |body| {
                let mut state = State::default();
                drop(convert_body(body, Format::Text, &r, &mut state, at()));
            });
        }
    }

    #[test]
    fn buckets_near_the_largest_double_give_finite_positions_and_counts() {
        assert_eq!(position(Some(f64::MAX), f64::MAX), f64::MAX);
        let mut values: Vec<f64> = (0..300).map(|i| f64::MAX - f64::from(i)).collect();
        let mut counts = vec![f64::MAX; 300];
        merge_to_limit(&mut values, &mut counts);
        assert!(values.len() <= MAX_VALUES);
        assert!(
            values.iter().chain(&counts).all(|v| v.is_finite()),
            "{values:?}"
        );
        // Two equal weights too large to multiply out: the mean of the pair, weighed first.
        let mut values = vec![f64::MAX, f64::MAX / 2.0];
        values.extend((2..151).map(f64::from));
        let mut counts = vec![f64::MAX, f64::MAX];
        counts.extend(std::iter::repeat_n(1.0, 149));
        merge_to_limit(&mut values, &mut counts);
        assert_eq!((values[0], counts[0]), (f64::MAX * 0.75, f64::MAX));
    }
}
