//! Scraped families to metrics, by the rules in docs/prometheus.md. Pure: the scrape, the
//! rules and the target's [`State`] in; metrics out, the state moved on. No I/O, no clock.
//!
//! - Gauges and untyped samples are gauges.
//! - Counters become the increase since the previous scrape of the same series. The first
//!   scrape of a series is its baseline and publishes nothing: a total since some unknown
//!   start is not an increase over the interval, and publishing it would put a spike on
//!   every dashboard at every restart. A counter that goes down was reset: its increase is
//!   the new value (counted from zero), never negative.
//! - A histogram series becomes ONE metric named as the family, a distribution built from
//!   the buckets' increases: each bucket's new observations sit at the middle of the bucket
//!   (`(lower, le]`; the first bucket's lower bound is 0 when `le` is positive, the `+Inf`
//!   bucket's observations sit at the highest finite bound). `_sum` and `_count` become
//!   their own counter increases.
//! - A summary becomes one gauge per quantile (a `quantile` dimension), and `_sum` and
//!   `_count` counter increases.
//! - NaN and infinite values are dropped and counted.
//! - Units from the family name: `_seconds` Seconds, `_bytes` Bytes, `_total` Count.
//! - Labels become dimensions: DROP_LABELS never do, empty values are dropped, values keep
//!   printable ASCII (anything else becomes `?`) cut to 1024 characters, and at most 30
//!   dimensions stay, the target's `Region` first and then labels by name.
//! - INCLUDE_METRICS and EXCLUDE_METRICS (globs on family names) choose families.
//! - A target creates at most MAX_SERIES_PER_TARGET CloudWatch metrics; beyond that new
//!   series are not published and counted.
//! - Series not scraped for [`FORGET_AFTER`] scrapes are forgotten.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::time::SystemTime;

use super::parse::{Format, Kind, Labels, Line, Sample, Scrape, Skipped, parse_each};
use crate::metric::{Dimensions, Metric, Unit, Value};

/// Scrapes a series may be missing before its baseline is forgotten.
pub const FORGET_AFTER: u64 = 5;
/// CloudWatch's limits on one datum's dimensions and values.
const MAX_DIMENSIONS: usize = 30;
const MAX_DIMENSION_VALUE: usize = 1024;
const MAX_VALUES: usize = 150;

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

/// What one target's conversion remembers between scrapes.
///
/// Series are remembered by a 64-bit hash of their name and labels, not by the strings: at
/// 100k series the keys cost more than 100 MB, the hashes 1.6 MB. The hasher is SipHash with
/// keys drawn at start, so an exporter cannot aim for a collision, and by chance two of 100k
/// series share a hash once in about 4 billion agents.
#[derive(Debug, Default)]
pub struct State {
    scrapes: u64,
    hasher: RandomState,
    /// Each counter-like series' last total, or a histogram series' last buckets.
    last: HashMap<u64, Last>,
    /// The CloudWatch metrics (name and dimensions) this target has created, against
    /// MAX_SERIES_PER_TARGET.
    created: HashSet<u64>,
}

impl State {
    fn key(&self, series: impl Hash) -> u64 {
        self.hasher.hash_one(series)
    }
}

#[derive(Debug, Clone)]
struct Last {
    seen: u64,
    value: LastValue,
}

#[derive(Debug, Clone)]
enum LastValue {
    Total(f64),
    /// Cumulative counts by upper bound, ascending.
    Buckets(Vec<(f64, f64)>),
}

/// What one scrape became.
#[derive(Debug, Default, PartialEq)]
pub struct Converted {
    pub metrics: Vec<Metric>,
    /// Samples dropped for a NaN or infinite value.
    pub non_finite: usize,
    /// Metrics not published because the target reached MAX_SERIES_PER_TARGET.
    pub over_cap: usize,
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
    let mut conversion = Conversion::start(rules, state, timestamp);
    let skipped = parse_each(body, format, |line| {
        if let Line::Sample {
            family,
            kind,
            sample,
        } = line
        {
            conversion.sample(family, kind, &sample);
        }
    });
    (conversion.finish(), skipped)
}

/// One scrape's conversion, fed a sample at a time as the parser reads them
/// ([`super::parse::parse_each`]). Only histogram buckets are held, until the scrape ends:
/// a series' distribution needs all of its buckets, and an exporter may split a family's
/// lines (a 100k-series scrape's 20k histograms hold about 5 MB).
pub struct Conversion<'a, 'b> {
    out: Output<'a>,
    /// The family of the latest sample, and whether the rules choose it.
    family: Option<(&'b str, bool)>,
    /// Histogram buckets by family and series (the labels without `le`).
    buckets: BTreeMap<(&'b str, Labels<'b>), Vec<(f64, f64)>>,
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
            buckets: BTreeMap::new(),
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
                let Some(le) = s.label("le").and_then(|le| le.parse::<f64>().ok()) else {
                    return;
                };
                if !s.value.is_finite() || le.is_nan() {
                    out.converted.non_finite += 1;
                    return;
                }
                let labels: Labels = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .cloned()
                    .collect();
                self.buckets
                    .entry((family, labels))
                    .or_default()
                    .push((le, s.value));
            }
            Kind::Histogram | Kind::GaugeHistogram if !s.name.ends_with("_created") => {
                out.counter(s.name, s)
            }
            _ => {}
        }
    }

    /// The scrape's metrics, each histogram series' distribution last; series missing for
    /// [`FORGET_AFTER`] scrapes are forgotten.
    pub fn finish(mut self) -> Converted {
        for ((name, labels), buckets) in std::mem::take(&mut self.buckets) {
            self.out.distribution(name, &labels, buckets);
        }
        let Output {
            converted, state, ..
        } = self.out;
        let seen = state.scrapes;
        state.last.retain(|_, last| seen - last.seen < FORGET_AFTER);
        converted
    }
}

struct Output<'a> {
    rules: &'a Rules,
    timestamp: SystemTime,
    converted: Converted,
    state: &'a mut State,
}

impl Output<'_> {
    fn gauge(&mut self, name: &str, s: &Sample) {
        if !s.value.is_finite() {
            self.converted.non_finite += 1;
            return;
        }
        self.emit(name, &s.labels, Value::Gauge(s.value));
    }

    /// A counter-like sample's increase since the last scrape of its series.
    fn counter(&mut self, name: &str, s: &Sample) {
        if !s.value.is_finite() {
            self.converted.non_finite += 1;
            return;
        }
        let key = self.state.key((name, &s.labels));
        let scrapes = self.state.scrapes;
        let previous = self.state.last.insert(
            key,
            Last {
                seen: scrapes,
                value: LastValue::Total(s.value),
            },
        );
        let Some(Last {
            value: LastValue::Total(before),
            ..
        }) = previous
        else {
            return; // the baseline
        };
        let increase = if s.value >= before {
            s.value - before
        } else {
            s.value
        };
        self.emit(name, &s.labels, Value::Counter(increase));
    }

    /// A histogram series' distribution of the increases since its last buckets.
    fn distribution(&mut self, name: &str, labels: &Labels, mut buckets: Vec<(f64, f64)>) {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let key = self.state.key((&name, labels));
        let scrapes = self.state.scrapes;
        let previous = self.state.last.insert(
            key,
            Last {
                seen: scrapes,
                value: LastValue::Buckets(buckets.clone()),
            },
        );
        let Some(Last {
            value: LastValue::Buckets(before),
            ..
        }) = previous
        else {
            return; // the baseline
        };
        if let Some(value) = distribution(&before, &buckets) {
            self.emit(name, labels, value);
        }
    }

    fn emit(&mut self, name: &str, labels: &[(&str, Cow<str>)], value: Value) {
        let dimensions = dimensions(self.rules, labels);
        let id = self.state.key((name, &dimensions));
        if !self.state.created.contains(&id) {
            if self.state.created.len() >= self.rules.max_series {
                self.converted.over_cap += 1;
                return;
            }
            self.state.created.insert(id);
        }
        self.converted.metrics.push(Metric {
            name: name.to_string(),
            dimensions,
            unit: unit(name),
            timestamp: self.timestamp,
            value,
        });
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
        (Some(l), true) => (l + upper) / 2.0,
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
                    let n = counts[i] + c2;
                    v.push((values[i] * counts[i] + v2 * c2) / n);
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
    let mut chosen: Vec<(&str, Cow<str>)> = Vec::with_capacity(labels.len() + 1);
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
    Dimensions::from_sorted(chosen.iter().map(|(k, v)| (*k, v.as_ref())))
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
        assert_eq!(c.non_finite, 3);
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
        assert_eq!((c.metrics.len(), c.over_cap), (3, 7));
        // The same three keep publishing; no other is let in later.
        let c = convert(&parse(&body, Format::Text), &r, &mut state, at());
        assert_eq!((c.metrics.len(), c.over_cap), (3, 7));
        let names: Vec<&str> = c.metrics.iter().map(|m| &m.dimensions["i"]).collect();
        assert_eq!(names, ["0", "1", "2"]);
    }
}
