//! Fuzzing invariants for the exposition surface (see [`super`]): a scrape body, in either
//! text format, plain or gzip, decoded, parsed and converted three times in a row by the
//! source's own code with a small series cap, as three cycles would.
//!
//! The first byte chooses how: bit 0 the format (text 0.0.4 or OpenMetrics), bit 1 a
//! `Region`, bit 2 `DROP_LABELS=instance`, bit 3 an EXCLUDE_METRICS glob, bit 4 that the
//! rest is gzip. The second scrape is the same body, the third the body with every `1`
//! written `2` (totals that move, and some that go down). After each scrape:
//!
//! - at most [`CAP`] datums, and at most [`CAP`] places (and baselines) held;
//! - every datum valid for CloudWatch by name and dimensions (name 1-255 characters and not
//!   one the agent publishes itself; at most 30 dimensions, each name 1-255 ASCII not
//!   starting with `:`, each value 1-1024 printable ASCII), no counter increase negative or
//!   not finite, no gauge not finite, every distribution 1-150 values with positive counts;
//! - the lines skipped are no more than the body's lines, and the datums' bytes are bounded
//!   by a multiple of the body's.

use std::time::{Duration, SystemTime};

use crate::metric::Value;
use crate::sources::prometheus::convert::{RESERVED, Rules, State, convert_body};
use crate::sources::prometheus::parse::Format;
use crate::sources::prometheus::scrape::{Fetched, decode};

/// The series cap the fuzzed target runs with: small, so bodies reach it.
pub const CAP: usize = 8;

/// Runs the agent's own code on `data` and panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&how, body)) = data.split_first() else {
        return;
    };
    let format = if how & 1 == 0 {
        Format::Text
    } else {
        Format::OpenMetrics
    };
    let rules = Rules {
        region: (how & 2 != 0).then(|| "us-east-1".to_string()),
        drop_labels: if how & 4 != 0 {
            ["instance".to_string()].into()
        } else {
            Default::default()
        },
        exclude: if how & 8 != 0 {
            vec!["*_x*".to_string()]
        } else {
            Vec::new()
        },
        include: Vec::new(),
        max_series: CAP,
    };
    let fetched = Fetched {
        raw: body.to_vec(),
        gzip: how & 16 != 0,
        format,
    };
    let Ok(text) = decode(fetched, || false) else {
        return;
    };
    let mut state = State::default();
    let timestamp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let moved = text.replace('1', "2");
    for body in [text.as_str(), text.as_str(), moved.as_str()] {
        let (converted, skipped) = convert_body(body, format, &rules, &mut state, timestamp);
        let lines = body.split('\n').count();
        assert!(
            skipped.malformed <= lines,
            "{} skipped of {lines}",
            skipped.malformed
        );
        assert!(skipped.stopped.is_none(), "never asked to stop");
        assert!(
            converted.metrics.len() <= CAP,
            "{} datums over a cap of {CAP}",
            converted.metrics.len()
        );
        let (places, baselines) = state.held();
        assert!(
            places <= CAP && baselines <= places,
            "{places} places, {baselines} baselines"
        );
        let mut bytes = 0;
        for m in &converted.metrics {
            assert!(
                !m.name.is_empty() && m.name.chars().count() <= 255,
                "metric name of {} characters",
                m.name.len()
            );
            assert!(
                !RESERVED.contains(&m.name.as_str()),
                "{} is the agent's own",
                m.name
            );
            assert!(
                m.dimensions.len() <= 30,
                "{} dimensions",
                m.dimensions.len()
            );
            bytes += m.name.len();
            for (name, value) in &m.dimensions {
                assert!(
                    !name.is_empty()
                        && name.len() <= 255
                        && name.is_ascii()
                        && !name.starts_with(':'),
                    "dimension name {name:?}"
                );
                assert!(
                    !value.is_empty()
                        && value.len() <= 1024
                        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                    "dimension {name} value {value:?}"
                );
                bytes += name.len() + value.len();
            }
            match &m.value {
                Value::Gauge(v) => assert!(v.is_finite(), "gauge {v}"),
                Value::Counter(v) => assert!(v.is_finite() && *v >= 0.0, "increase {v}"),
                Value::Distribution(d) => {
                    assert!(
                        !d.values.is_empty()
                            && d.values.len() <= 150
                            && d.values.len() == d.counts.len(),
                        "{} values, {} counts",
                        d.values.len(),
                        d.counts.len()
                    );
                    assert!(d.values.iter().all(|v| v.is_finite()), "{:?}", d.values);
                    assert!(
                        d.counts.iter().all(|c| c.is_finite() && *c > 0.0),
                        "{:?}",
                        d.counts
                    );
                    bytes += 16 * d.values.len();
                }
            }
        }
        // Every byte of a datum comes from its line, but for the Region dimension.
        assert!(
            bytes <= 2 * body.len() + 64 * CAP,
            "{bytes} bytes of datums from {} of body",
            body.len()
        );
    }
}
