//! The one metric type between sources and sinks.
//!
//! Sources make [`Metric`]s; the buffer keeps them; sinks turn them into what their
//! destination takes (CloudWatch's `MetricDatum`, with `Value` or `Values`/`Counts`, is built
//! only in `sinks::cloudwatch`). A metric is named, dimensioned, stamped and valued: a
//! gauge, a counter's increase, or a distribution of observations.

use std::fmt;
use std::ops::Index;
use std::time::SystemTime;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// One value of one metric series at one time. Dimensions are kept sorted by name: sinks
/// treat them as a set, and a stable order keeps logs and dry-run output diffable.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub dimensions: Dimensions,
    pub unit: Unit,
    pub timestamp: SystemTime,
    pub value: Value,
}

/// A metric's dimensions, names to values, sorted by name, each name once.
///
/// A sorted vector rather than a `BTreeMap`: a map's first node takes 544 bytes however few
/// pairs it holds, a metric has two or three, and a 100k-series cycle holds 100k of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Dimensions(Vec<(String, String)>);

impl Dimensions {
    pub fn new() -> Self {
        Dimensions(Vec::new())
    }

    /// Sets `name` to `value`; returns the value it replaces.
    pub fn insert(&mut self, name: String, value: String) -> Option<String> {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Names and values, by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &String)> {
        self.into_iter()
    }
}

impl<'a> IntoIterator for &'a Dimensions {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// Later pairs win over earlier ones with the same name, as in a map.
impl FromIterator<(String, String)> for Dimensions {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut out = Dimensions::new();
        for (k, v) in pairs {
            out.insert(k, v);
        }
        out
    }
}

impl<const N: usize> From<[(String, String); N]> for Dimensions {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Index<&str> for Dimensions {
    type Output = String;

    fn index(&self, name: &str) -> &String {
        self.get(name)
            .unwrap_or_else(|| panic!("no dimension {name:?}"))
    }
}

/// As a JSON object, names in order (`--dry-run`'s lines).
impl Serialize for Dimensions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
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
            dimensions: Dimensions::from([
                ("Sku".into(), "t3.micro".into()),
                ("Region".into(), "us-east-1".into()),
            ]),
            unit: Unit::None,
            timestamp: SystemTime::UNIX_EPOCH,
            value,
        }
    }

    #[test]
    fn dimensions_are_a_map_kept_sorted_by_name() {
        let mut d = Dimensions::new();
        assert_eq!(d.insert("Sku".into(), "t3.micro".into()), None);
        assert_eq!(d.insert("Region".into(), "us-east-1".into()), None);
        assert_eq!(d.insert("Agent".into(), "a".into()), None);
        assert_eq!(
            d.insert("Region".into(), "eu-west-1".into()),
            Some("us-east-1".into())
        );
        let pairs: Vec<_> = d.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [("Agent", "a"), ("Region", "eu-west-1"), ("Sku", "t3.micro")]
        );
        assert_eq!(d.len(), 3);
        assert_eq!(d["Region"], "eu-west-1");
        assert!(d.contains_key("Sku") && !d.contains_key("sku"));
        assert_eq!(d.get("Missing"), None);
        let again: Dimensions = [
            ("Sku", "x"),
            ("Sku", "t3.micro"),
            ("Agent", "a"),
            ("Region", "eu-west-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(again, d, "built in any order, later pairs winning");
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"Agent":"a","Region":"eu-west-1","Sku":"t3.micro"}"#
        );
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
