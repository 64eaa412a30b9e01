//! The one metric type between sources and sinks.
//!
//! Sources make [`Metric`]s; the buffer keeps them; sinks turn them into what their
//! destination takes (CloudWatch's `MetricDatum`, with `Value` or `Values`/`Counts`, is built
//! only in `sinks::cloudwatch`). A metric is named, dimensioned, stamped and valued: a
//! gauge, a counter's increase, or a distribution of observations.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

/// One value of one metric series at one time. Dimensions are kept sorted by name: sinks
/// treat them as a set, and a stable order keeps logs and dry-run output diffable.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub dimensions: BTreeMap<String, String>,
    pub unit: Unit,
    pub timestamp: SystemTime,
    pub value: Value,
}

/// What a metric's number means.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A reading at the timestamp (health, latency, a price, a queue depth).
    Gauge(f64),
    /// How much a count grew over the interval that ends at the timestamp (errors this
    /// cycle, datums published this cycle). A source that reads running totals keeps the
    /// previous total and hands on the increase: sums over time are what CloudWatch adds up.
    Counter(f64),
    /// Observations: each distinct value with how many times it was seen, same lengths.
    Distribution { values: Vec<f64>, counts: Vec<f64> },
}

#[cfg(test)]
impl Value {
    /// A gauge's or counter's number, for tests that compare values.
    pub fn number(&self) -> f64 {
        match self {
            Value::Gauge(v) | Value::Counter(v) => *v,
            Value::Distribution { .. } => panic!("a distribution has no single number"),
        }
    }
}

/// The units the agent's metrics carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    None,
    Count,
    Milliseconds,
    Seconds,
    Bytes,
}

impl Unit {
    /// The unit's name, as CloudWatch spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::None => "None",
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::Bytes => "Bytes",
        }
    }
}

/// Names a metric in logs: name and dimensions, enough to find it on a dashboard.
impl fmt::Display for Metric {
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

    fn metric(value: Value) -> Metric {
        Metric {
            name: "PluginHealthy".into(),
            dimensions: BTreeMap::from([
                ("Sku".into(), "t3.micro".into()),
                ("Region".into(), "us-east-1".into()),
            ]),
            unit: Unit::None,
            timestamp: SystemTime::UNIX_EPOCH,
            value,
        }
    }

    #[test]
    fn displays_name_and_sorted_dimensions() {
        assert_eq!(
            metric(Value::Gauge(1.0)).to_string(),
            "PluginHealthy{Region=us-east-1,Sku=t3.micro}"
        );
        let mut bare = metric(Value::Gauge(1.0));
        bare.dimensions.clear();
        assert_eq!(bare.to_string(), "PluginHealthy");
    }
}
