//! The PutMetricData rules one datum must satisfy.
//!
//! CloudWatch rejects a whole request when one datum breaks a rule, so every metric is
//! checked here before it is batched (see `../shared/cloudwatch-limits.md`). A metric that
//! fails is dropped alone; the rest of its batch goes out.

use std::time::{Duration, SystemTime};

use crate::metric::{Metric, Value};

/// Oldest timestamp CloudWatch accepts, relative to now.
pub const MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// Furthest future timestamp CloudWatch accepts, relative to now.
pub const MAX_FUTURE: Duration = Duration::from_secs(2 * 3600);
pub const MAX_DIMENSIONS: usize = 30;
const MAX_NAME_LEN: usize = 255;
const MAX_DIMENSION_VALUE_LEN: usize = 1024;
/// Distinct values one datum's Values/Counts may carry.
pub const MAX_VALUES: usize = 150;

/// Why a datum cannot be sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("metric name must be 1-{MAX_NAME_LEN} characters")]
    Name,
    #[error("{0} dimensions, at most {MAX_DIMENSIONS} allowed")]
    TooManyDimensions(usize),
    #[error("dimension name {0:?} must be 1-{MAX_NAME_LEN} ASCII characters not starting with ':'")]
    DimensionName(String),
    #[error("dimension {0} value must be 1-{MAX_DIMENSION_VALUE_LEN} printable ASCII characters")]
    DimensionValue(String),
    #[error("value {0} is not finite or outside 2^-260..2^360")]
    Value(f64),
    #[error(
        "{values} values and {counts} counts: 1 to {MAX_VALUES} values, as many counts, each count finite and not negative"
    )]
    Distribution { values: usize, counts: usize },
    #[error("timestamp is more than 14 days old")]
    TooOld,
    #[error("timestamp is more than 2 hours in the future")]
    InFuture,
}

/// Checks every PutMetricData rule that applies to one datum at time `now`.
pub fn check(metric: &Metric, now: SystemTime) -> Result<(), Invalid> {
    if metric.name.is_empty() || metric.name.chars().count() > MAX_NAME_LEN {
        return Err(Invalid::Name);
    }
    if metric.dimensions.len() > MAX_DIMENSIONS {
        return Err(Invalid::TooManyDimensions(metric.dimensions.len()));
    }
    for (name, value) in &metric.dimensions {
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.is_ascii() || name.starts_with(':')
        {
            return Err(Invalid::DimensionName(name.to_string()));
        }
        if value.is_empty()
            || value.len() > MAX_DIMENSION_VALUE_LEN
            || !value.bytes().all(|b| b.is_ascii() && !b.is_ascii_control())
        {
            return Err(Invalid::DimensionValue(name.to_string()));
        }
    }
    match &metric.value {
        Value::Gauge(v) | Value::Counter(v) if !value_in_range(*v) => {
            return Err(Invalid::Value(*v));
        }
        Value::Distribution(d) => {
            let (values, counts) = (&d.values, &d.counts);
            if values.is_empty()
                || values.len() > MAX_VALUES
                || values.len() != counts.len()
                || !counts.iter().all(|c| c.is_finite() && *c >= 0.0)
            {
                return Err(Invalid::Distribution {
                    values: values.len(),
                    counts: counts.len(),
                });
            }
            if let Some(bad) = values.iter().find(|v| !value_in_range(**v)) {
                return Err(Invalid::Value(*bad));
            }
        }
        Value::Gauge(_) | Value::Counter(_) => {}
    }
    if now
        .duration_since(metric.timestamp)
        .is_ok_and(|age| age > MAX_AGE)
    {
        return Err(Invalid::TooOld);
    }
    if metric
        .timestamp
        .duration_since(now)
        .is_ok_and(|ahead| ahead > MAX_FUTURE)
    {
        return Err(Invalid::InFuture);
    }
    Ok(())
}

fn value_in_range(v: f64) -> bool {
    if !v.is_finite() {
        return false;
    }
    let m = v.abs();
    m == 0.0 || ((2f64).powi(-260)..=(2f64).powi(360)).contains(&m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::{Dimensions, Unit};

    fn datum() -> Metric {
        Metric {
            name: "PluginHealthy".into(),
            dimensions: Dimensions::from([("Region".into(), "us-east-1".into())]),
            value: Value::Gauge(1.0),
            unit: Unit::None,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn now() -> SystemTime {
        datum().timestamp
    }

    #[test]
    fn a_plain_datum_is_valid() {
        assert_eq!(check(&datum(), now()), Ok(()));
    }

    #[test]
    fn metric_name_length_limits() {
        let mut d = datum();
        d.name = String::new();
        assert_eq!(check(&d, now()), Err(Invalid::Name));
        d.name = "x".repeat(255);
        assert_eq!(check(&d, now()), Ok(()));
        d.name = "x".repeat(256);
        assert_eq!(check(&d, now()), Err(Invalid::Name));
    }

    #[test]
    fn at_most_thirty_dimensions() {
        let mut d = datum();
        d.dimensions = (0..30).map(|i| (format!("d{i}"), "v".into())).collect();
        assert_eq!(check(&d, now()), Ok(()));
        d.dimensions.insert("one-more".into(), "v".into());
        assert_eq!(check(&d, now()), Err(Invalid::TooManyDimensions(31)));
    }

    #[test]
    fn dimension_names_are_ascii_without_leading_colon() {
        for bad in ["", ":Region", "Région", &"n".repeat(256)] {
            let mut d = datum();
            d.dimensions = Dimensions::from([(bad.to_string(), "v".to_string())]);
            assert_eq!(
                check(&d, now()),
                Err(Invalid::DimensionName(bad.to_string())),
                "{bad:?}"
            );
        }
        let mut d = datum();
        d.dimensions = Dimensions::from([("n".repeat(255), "v".into())]);
        assert_eq!(check(&d, now()), Ok(()));
    }

    #[test]
    fn dimension_values_are_non_empty_printable_ascii() {
        for bad in ["", "tab\there", "newline\n", "é", &"v".repeat(1025)] {
            let mut d = datum();
            d.dimensions = Dimensions::from([("Region".to_string(), bad.to_string())]);
            assert_eq!(
                check(&d, now()),
                Err(Invalid::DimensionValue("Region".into())),
                "{bad:?}"
            );
        }
        let mut d = datum();
        d.dimensions = Dimensions::from([("Region".into(), "v".repeat(1024))]);
        assert_eq!(check(&d, now()), Ok(()));
    }

    #[test]
    fn values_must_be_finite_and_in_range() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            2f64.powi(361),
            -(2f64.powi(361)),
            2f64.powi(-261),
        ] {
            let mut d = datum();
            d.value = Value::Gauge(bad);
            assert!(check(&d, now()).is_err(), "{bad}");
        }
        for good in [0.0, -0.0, 2f64.powi(360), 2f64.powi(-260), -7.592, 1e-9] {
            let mut d = datum();
            d.value = Value::Gauge(good);
            assert_eq!(check(&d, now()), Ok(()), "{good}");
        }
    }

    #[test]
    fn timestamps_within_14_days_back_and_2_hours_ahead() {
        // CloudWatch's documentation, in literals (never the constants under test): two
        // weeks back and two hours ahead, to the second.
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        let d = datum();
        let aged = |secs: u64| check(&d, d.timestamp + Duration::from_secs(secs));
        let ahead = |secs: u64| check(&d, d.timestamp - Duration::from_secs(secs));
        assert_eq!(aged(13 * DAY + 23 * HOUR), Ok(()));
        assert_eq!(aged(14 * DAY), Ok(()));
        assert_eq!(aged(14 * DAY + 1), Err(Invalid::TooOld));
        assert_eq!(aged(30 * DAY), Err(Invalid::TooOld));
        assert_eq!(ahead(HOUR + 59 * 60), Ok(()));
        assert_eq!(ahead(2 * HOUR), Ok(()));
        assert_eq!(ahead(2 * HOUR + 1), Err(Invalid::InFuture));
        assert_eq!(ahead(DAY), Err(Invalid::InFuture));
        assert_eq!(aged(0), Ok(()));
    }

    #[test]
    fn counters_follow_the_value_rules_too() {
        let mut d = datum();
        d.value = Value::Counter(f64::NAN);
        assert!(check(&d, now()).is_err());
        d.value = Value::Counter(3.0);
        assert_eq!(check(&d, now()), Ok(()));
    }

    #[test]
    fn distributions_carry_1_to_150_values_with_as_many_counts() {
        let dist = |values: Vec<f64>, counts: Vec<f64>| {
            let mut d = datum();
            d.value = Value::distribution(values, counts);
            check(&d, now())
        };
        assert_eq!(dist(vec![0.5, 2.0], vec![3.0, 0.0]), Ok(()));
        let most: Vec<f64> = (0..150).map(f64::from).collect();
        assert_eq!(dist(most.clone(), vec![1.0; 150]), Ok(()));
        let over: Vec<f64> = (0..151).map(f64::from).collect();
        assert!(dist(over, vec![1.0; 151]).is_err());
        assert!(dist(vec![], vec![]).is_err());
        assert!(dist(vec![1.0, 2.0], vec![1.0]).is_err());
        assert!(dist(vec![1.0], vec![-1.0]).is_err());
        assert!(dist(vec![1.0], vec![f64::NAN]).is_err());
        assert_eq!(
            dist(vec![f64::INFINITY], vec![1.0]),
            Err(Invalid::Value(f64::INFINITY))
        );
    }
}
