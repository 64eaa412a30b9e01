//! The CloudWatch datum the agent publishes, and the PutMetricData rules it must satisfy.
//!
//! CloudWatch rejects a whole request when one datum breaks a rule, so every datum is checked
//! here before it is batched (see `../shared/cloudwatch-limits.md`). A datum that fails is
//! dropped alone; the rest of its batch goes out.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

/// Oldest timestamp CloudWatch accepts, relative to now.
pub const MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// Furthest future timestamp CloudWatch accepts, relative to now.
pub const MAX_FUTURE: Duration = Duration::from_secs(2 * 3600);
pub const MAX_DIMENSIONS: usize = 30;
const MAX_NAME_LEN: usize = 255;
const MAX_DIMENSION_VALUE_LEN: usize = 1024;

/// The CloudWatch units this agent emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Unit {
    None,
    Count,
    Milliseconds,
}

impl Unit {
    /// The name CloudWatch uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::None => "None",
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One value of one metric at one time. Dimensions are kept sorted by name: CloudWatch treats
/// them as a set, and a stable order keeps logs and dry-run output diffable.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
    pub value: f64,
    pub unit: Unit,
    pub timestamp: SystemTime,
}

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
    #[error("timestamp is more than 14 days old")]
    TooOld,
    #[error("timestamp is more than 2 hours in the future")]
    InFuture,
}

impl Datum {
    /// Checks every PutMetricData rule that applies to a single datum at time `now`.
    pub fn validate(&self, now: SystemTime) -> Result<(), Invalid> {
        if self.name.is_empty() || self.name.chars().count() > MAX_NAME_LEN {
            return Err(Invalid::Name);
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            return Err(Invalid::TooManyDimensions(self.dimensions.len()));
        }
        for (name, value) in &self.dimensions {
            if name.is_empty()
                || name.len() > MAX_NAME_LEN
                || !name.is_ascii()
                || name.starts_with(':')
            {
                return Err(Invalid::DimensionName(name.clone()));
            }
            if value.is_empty()
                || value.len() > MAX_DIMENSION_VALUE_LEN
                || !value.bytes().all(|b| b.is_ascii() && !b.is_ascii_control())
            {
                return Err(Invalid::DimensionValue(name.clone()));
            }
        }
        if !value_in_range(self.value) {
            return Err(Invalid::Value(self.value));
        }
        if now
            .duration_since(self.timestamp)
            .is_ok_and(|age| age > MAX_AGE)
        {
            return Err(Invalid::TooOld);
        }
        if self
            .timestamp
            .duration_since(now)
            .is_ok_and(|ahead| ahead > MAX_FUTURE)
        {
            return Err(Invalid::InFuture);
        }
        Ok(())
    }
}

fn value_in_range(v: f64) -> bool {
    if !v.is_finite() {
        return false;
    }
    let m = v.abs();
    m == 0.0 || ((2f64).powi(-260)..=(2f64).powi(360)).contains(&m)
}

/// Names a datum in logs: metric and dimensions, enough to find it in a dashboard.
impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        let mut sep = '{';
        for (k, v) in &self.dimensions {
            write!(f, "{sep}{k}={v}")?;
            sep = ',';
        }
        if sep == ',' {
            write!(f, "}}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum() -> Datum {
        Datum {
            name: "PluginHealthy".into(),
            dimensions: BTreeMap::from([("Region".into(), "us-east-1".into())]),
            value: 1.0,
            unit: Unit::None,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn now() -> SystemTime {
        datum().timestamp
    }

    #[test]
    fn a_plain_datum_is_valid() {
        assert_eq!(datum().validate(now()), Ok(()));
    }

    #[test]
    fn metric_name_length_limits() {
        let mut d = datum();
        d.name = String::new();
        assert_eq!(d.validate(now()), Err(Invalid::Name));
        d.name = "x".repeat(255);
        assert_eq!(d.validate(now()), Ok(()));
        d.name = "x".repeat(256);
        assert_eq!(d.validate(now()), Err(Invalid::Name));
    }

    #[test]
    fn at_most_thirty_dimensions() {
        let mut d = datum();
        d.dimensions = (0..30).map(|i| (format!("d{i}"), "v".into())).collect();
        assert_eq!(d.validate(now()), Ok(()));
        d.dimensions.insert("one-more".into(), "v".into());
        assert_eq!(d.validate(now()), Err(Invalid::TooManyDimensions(31)));
    }

    #[test]
    fn dimension_names_are_ascii_without_leading_colon() {
        for bad in ["", ":Region", "Région", &"n".repeat(256)] {
            let mut d = datum();
            d.dimensions = BTreeMap::from([(bad.to_string(), "v".to_string())]);
            assert_eq!(
                d.validate(now()),
                Err(Invalid::DimensionName(bad.to_string())),
                "{bad:?}"
            );
        }
        let mut d = datum();
        d.dimensions = BTreeMap::from([("n".repeat(255), "v".into())]);
        assert_eq!(d.validate(now()), Ok(()));
    }

    #[test]
    fn dimension_values_are_non_empty_printable_ascii() {
        for bad in ["", "tab\there", "newline\n", "é", &"v".repeat(1025)] {
            let mut d = datum();
            d.dimensions = BTreeMap::from([("Region".to_string(), bad.to_string())]);
            assert_eq!(
                d.validate(now()),
                Err(Invalid::DimensionValue("Region".into())),
                "{bad:?}"
            );
        }
        let mut d = datum();
        d.dimensions = BTreeMap::from([("Region".into(), "v".repeat(1024))]);
        assert_eq!(d.validate(now()), Ok(()));
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
            d.value = bad;
            assert!(d.validate(now()).is_err(), "{bad}");
        }
        for good in [0.0, -0.0, 2f64.powi(360), 2f64.powi(-260), -7.592, 1e-9] {
            let mut d = datum();
            d.value = good;
            assert_eq!(d.validate(now()), Ok(()), "{good}");
        }
    }

    #[test]
    fn timestamps_within_14_days_back_and_2_hours_ahead() {
        let d = datum();
        assert_eq!(d.validate(d.timestamp + MAX_AGE), Ok(()));
        assert_eq!(
            d.validate(d.timestamp + MAX_AGE + Duration::from_secs(1)),
            Err(Invalid::TooOld)
        );
        assert_eq!(d.validate(d.timestamp - MAX_FUTURE), Ok(()));
        assert_eq!(
            d.validate(d.timestamp - MAX_FUTURE - Duration::from_secs(1)),
            Err(Invalid::InFuture)
        );
    }

    #[test]
    fn display_names_metric_and_dimensions() {
        let mut d = datum();
        d.dimensions.insert("Sku".into(), "t3.micro".into());
        assert_eq!(
            d.to_string(),
            "PluginHealthy{Region=us-east-1,Sku=t3.micro}"
        );
        d.dimensions.clear();
        assert_eq!(d.to_string(), "PluginHealthy");
    }
}
