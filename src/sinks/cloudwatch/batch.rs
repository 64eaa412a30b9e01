//! Splits datums into PutMetricData requests that CloudWatch will accept by size.
//!
//! A request holds at most 1000 datums and at most 1 MB of body. The SDK encodes requests as
//! CBOR; rather than encode twice, each datum's encoded size is bounded from above (every
//! CBOR header at its widest), so a batch that fits here fits on the wire.

use std::ops::Range;

use crate::metric::{Metric, Value};

pub const MAX_DATUMS: usize = 1000;
/// 1 MB taken as 10^6 bytes, the stricter reading of the documented limit.
pub const MAX_BODY_BYTES: usize = 1_000_000;

/// Keys, headers, the timestamp, the value, the unit and the storage resolution of one datum.
const DATUM_OVERHEAD: usize = 128;
/// Map header, `Name` and `Value` keys and two string headers of one dimension.
const DIMENSION_OVERHEAD: usize = 24;
/// Outer map, `Namespace` and `MetricData` keys, array header.
const REQUEST_OVERHEAD: usize = 64;
/// `Values` and `Counts` keys and their array headers.
const DISTRIBUTION_OVERHEAD: usize = 24;
/// One CBOR double.
const NUMBER: usize = 9;

/// Upper bound of one datum's share of the request body.
pub fn encoded_size(d: &Metric) -> usize {
    let values = match &d.value {
        Value::Gauge(_) | Value::Counter(_) => 0,
        Value::Distribution(d) => {
            DISTRIBUTION_OVERHEAD + NUMBER * (d.values.len() + d.counts.len())
        }
    };
    DATUM_OVERHEAD
        + values
        + d.name.len()
        + d.dimensions
            .iter()
            .map(|(k, v)| DIMENSION_OVERHEAD + k.len() + v.len())
            .sum::<usize>()
}

/// Upper bound of a request's body with no datums yet.
pub fn request_overhead(namespace: &str) -> usize {
    REQUEST_OVERHEAD + namespace.len()
}

/// Cuts `datums` in order into batches within both limits: each batch a range of them.
pub fn split(datums: &[Metric], namespace: &str) -> Vec<Range<usize>> {
    split_at_most(datums, namespace, MAX_DATUMS)
}

/// As [`split`], with at most `max_datums` (1 to [`MAX_DATUMS`]) in a batch.
pub fn split_at_most(datums: &[Metric], namespace: &str, max_datums: usize) -> Vec<Range<usize>> {
    let max_datums = max_datums.clamp(1, MAX_DATUMS);
    let base = request_overhead(namespace);
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = base;
    for (i, d) in datums.iter().enumerate() {
        let size = encoded_size(d);
        if i > start && (i - start == max_datums || bytes + size > MAX_BODY_BYTES) {
            batches.push(start..i);
            start = i;
            bytes = base;
        }
        bytes += size;
    }
    if start < datums.len() {
        batches.push(start..datums.len());
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::{Dimensions, Unit, Value};
    use std::time::SystemTime;

    const NS: &str = "FinFocus/Plugins";

    fn datum(i: usize) -> Metric {
        Metric {
            name: format!("M{i}"),
            dimensions: Dimensions::from([("Region".into(), "us-east-1".into())]),
            value: Value::Gauge(i as f64),
            unit: Unit::None,
            timestamp: SystemTime::UNIX_EPOCH,
        }
    }

    /// A datum whose encoded size is exactly `size` (size >= overhead of a bare datum).
    fn datum_of_size(size: usize) -> Metric {
        let mut d = datum(0);
        d.dimensions.clear();
        d.name = "x".repeat(size - DATUM_OVERHEAD);
        assert_eq!(encoded_size(&d), size);
        d
    }

    fn sizes(batches: &[Range<usize>]) -> Vec<usize> {
        batches.iter().map(Range::len).collect()
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(split(&[], NS).is_empty());
        let ds: Vec<Metric> = (0..250).map(datum).collect();
        assert_eq!(split_at_most(&ds, NS, 100), [0..100, 100..200, 200..250]);
        assert_eq!(split_at_most(&ds, NS, 0), split_at_most(&ds, NS, 1));
        assert_eq!(split_at_most(&ds, NS, 5000), vec![0..250]);
    }

    #[test]
    fn exactly_1000_datums_is_one_request() {
        let ds: Vec<Metric> = (0..1000).map(datum).collect();
        let batches = split(&ds, NS);
        assert_eq!(sizes(&batches), [1000]);
    }

    #[test]
    fn the_1001st_datum_starts_a_second_request_and_order_is_kept() {
        let ds: Vec<Metric> = (0..2001).map(datum).collect();
        let batches = split(&ds, NS);
        assert_eq!(batches, [0..1000, 1000..2000, 2000..2001]);
    }

    /// What 1 MB leaves for datums: the request's own bytes (its map, keys and namespace)
    /// in literals, not the code under test.
    const ROOM: usize = 1_000_000 - 64 - "FinFocus/Plugins".len();

    #[test]
    fn a_batch_filling_exactly_1_mb_is_one_request() {
        let room = ROOM;
        // 4 datums that fill the body to the byte.
        let each = room / 4;
        let mut ds: Vec<Metric> = (0..3).map(|_| datum_of_size(each)).collect();
        ds.push(datum_of_size(room - 3 * each));
        let batches = split(&ds, NS);
        assert_eq!(sizes(&batches), [4]);
    }

    #[test]
    fn one_byte_over_1_mb_starts_a_new_request() {
        let room = ROOM;
        let each = room / 4;
        let mut ds: Vec<Metric> = (0..3).map(|_| datum_of_size(each)).collect();
        ds.push(datum_of_size(room - 3 * each + 1));
        let batches = split(&ds, NS);
        assert_eq!(sizes(&batches), [3, 1]);
    }

    #[test]
    fn every_batch_respects_both_limits_with_mixed_sizes() {
        let ds: Vec<Metric> = (0..5000)
            .map(|i| datum_of_size(DATUM_OVERHEAD + 1 + (i * 7919) % 4000))
            .collect();
        let batches = split(&ds, NS);
        assert_eq!(batches.iter().map(Range::len).sum::<usize>(), 5000);
        for b in &batches {
            assert!(b.len() <= MAX_DATUMS);
            let bytes: usize =
                request_overhead(NS) + ds[b.clone()].iter().map(encoded_size).sum::<usize>();
            assert!(bytes <= MAX_BODY_BYTES, "{bytes}");
        }
    }

    #[test]
    fn a_datum_larger_than_a_request_goes_alone_and_no_batch_is_empty() {
        // Never valid (the rules refuse it first), but an empty request would be refused
        // whole: each datum is in exactly one batch, each batch holds at least one.
        let ds = vec![datum(0), datum_of_size(2 * ROOM), datum(2)];
        assert_eq!(split(&ds, NS), vec![0..1, 1..2, 2..3]);
        assert_eq!(split(&ds[1..], NS), vec![0..1, 1..2]);
    }

    #[test]
    fn dimensions_count_towards_size() {
        let mut d = datum(0);
        let bare = encoded_size(&d);
        d.dimensions.insert("Sku".into(), "t3.micro".into());
        assert_eq!(encoded_size(&d), bare + DIMENSION_OVERHEAD + 3 + 8);
    }
}
