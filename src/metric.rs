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
/// Packed: every name and value in one string, and where each ends in one array. A
/// 100k-series cycle holds 100k of these; a `BTreeMap` took 544 bytes for its first node,
/// and a vector of string pairs one block for itself and two for each pair (about 250 bytes
/// for two dimensions, against about 110 packed).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Dimensions {
    /// `name0 value0 name1 value1 ...`, back to back.
    text: Box<str>,
    /// The end of each name and each value in `text`, alternating.
    ends: Box<[u32]>,
}

impl Dimensions {
    pub fn new() -> Self {
        Dimensions::default()
    }

    /// Sets `name` to `value`; returns the value it replaces.
    pub fn insert(&mut self, name: String, value: String) -> Option<String> {
        let pairs: Vec<(&str, &str)> = self.iter().collect();
        let (at, old) = match pairs.binary_search_by(|(k, _)| (*k).cmp(&name)) {
            Ok(i) => (i, Some(pairs[i].1.to_string())),
            Err(i) => (i, None),
        };
        let skip = usize::from(old.is_some());
        let new = (name.as_str(), value.as_str());
        let packed = Dimensions::pack(
            pairs[..at]
                .iter()
                .copied()
                .chain(std::iter::once(new))
                .chain(pairs[at + skip..].iter().copied()),
        );
        *self = packed;
        old
    }

    /// From pairs already sorted by name, each name once: one packing, where building by
    /// [`Dimensions::insert`] packs again at every pair.
    pub fn from_sorted<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Self {
        debug_assert!(
            pairs
                .clone()
                .zip(pairs.clone().skip(1))
                .all(|(a, b)| a.0 < b.0),
            "sorted, unique"
        );
        Dimensions::pack(pairs)
    }

    /// Pairs already sorted by name and unique, packed.
    fn pack<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Self {
        let mut text = String::with_capacity(pairs.clone().map(|(k, v)| k.len() + v.len()).sum());
        let mut ends = Vec::with_capacity(pairs.clone().count() * 2);
        for (k, v) in pairs {
            for part in [k, v] {
                text.push_str(part);
                // Dimension names and values are bounded far below 4 GiB (CloudWatch takes
                // 255 and 1024 characters).
                ends.push(u32::try_from(text.len()).expect("dimensions under 4 GiB"));
            }
        }
        Dimensions {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        *self = Dimensions::default();
    }

    /// Names and values, by name.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            dims: self,
            pair: 0,
        }
    }
}

/// A [`Dimensions`]' names and values, by name.
#[derive(Clone)]
pub struct Iter<'a> {
    dims: &'a Dimensions,
    pair: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let ends = &self.dims.ends;
        let i = self.pair * 2;
        if i >= ends.len() {
            return None;
        }
        let start = if i == 0 { 0 } else { ends[i - 1] as usize };
        let (name_end, value_end) = (ends[i] as usize, ends[i + 1] as usize);
        self.pair += 1;
        let text = &self.dims.text;
        Some((&text[start..name_end], &text[name_end..value_end]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.dims.len() - self.pair;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Dimensions {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Later pairs win over earlier ones with the same name, as in a map.
impl FromIterator<(String, String)> for Dimensions {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut sorted: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            match sorted.binary_search_by(|(n, _)| n.cmp(&k)) {
                Ok(i) => sorted[i].1 = v,
                Err(i) => sorted.insert(i, (k, v)),
            }
        }
        Dimensions::pack(sorted.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl<const N: usize> From<[(String, String); N]> for Dimensions {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl Index<&str> for Dimensions {
    type Output = str;

    fn index(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no dimension {name:?}"))
    }
}

impl fmt::Debug for Dimensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// As a JSON object, names in order (`--dry-run`'s lines).
impl Serialize for Dimensions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self {
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
    /// Observations: each distinct value with how many times it was seen. Boxed: most
    /// metrics are gauges and counters, and two vectors inline made every `Metric` 136
    /// bytes instead of 96.
    Distribution(Box<Observations>),
}

/// A distribution's values and how many times each was seen, same lengths.
#[derive(Debug, Clone, PartialEq)]
pub struct Observations {
    pub values: Vec<f64>,
    pub counts: Vec<f64>,
}

impl Value {
    pub fn distribution(values: Vec<f64>, counts: Vec<f64>) -> Value {
        Value::Distribution(Box::new(Observations { values, counts }))
    }
}

#[cfg(test)]
impl Value {
    /// A gauge's or counter's number, for tests that compare values.
    pub fn number(&self) -> f64 {
        match self {
            Value::Gauge(v) | Value::Counter(v) => *v,
            Value::Distribution(_) => panic!("a distribution has no single number"),
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
        let pairs: Vec<_> = d.iter().collect();
        assert_eq!(
            pairs,
            [("Agent", "a"), ("Region", "eu-west-1"), ("Sku", "t3.micro")]
        );
        assert_eq!((d.len(), d.is_empty()), (3, false));
        assert_eq!(
            (Dimensions::new().len(), Dimensions::new().is_empty()),
            (0, true)
        );
        assert_eq!(&d["Region"], "eu-west-1");
        assert!(d.contains_key("Sku") && !d.contains_key("sku"));
        assert_eq!(d.get("Missing"), None);
        assert_eq!(d.iter().len(), 3);
        let mut rest = d.iter();
        rest.next();
        assert_eq!(rest.len(), 2);
        assert_eq!(
            format!("{d:?}"),
            r#"{"Agent": "a", "Region": "eu-west-1", "Sku": "t3.micro"}"#
        );
        let mut replaced = d.clone();
        replaced.insert("Agent".into(), String::new());
        assert_eq!(replaced.get("Agent"), Some(""));
        assert_eq!(replaced.get("Region"), Some("eu-west-1"));
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
    fn a_metric_stays_small_since_a_large_scrape_holds_100k_of_them() {
        assert!(size_of::<Metric>() <= 96, "{} bytes", size_of::<Metric>());
        assert!(size_of::<Dimensions>() <= 32);
        assert!(size_of::<Value>() <= 16);
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
