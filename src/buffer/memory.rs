//! The in-memory buffer: metrics on their way to the sink.
//!
//! Each cycle's metrics are pushed here before the sink sees them; the sink takes all that
//! waits, oldest first, and parks what it could not deliver back, to go out first next cycle
//! with the original timestamps. What waits after a publish is bounded (QUEUE_MAX_DATUMS):
//! past the bound the oldest are dropped first, and metrics CloudWatch would refuse as more
//! than 14 days old are dropped when taken out. Both are counted so the loss is visible.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::metric::Metric;
use crate::sinks::cloudwatch::rules::MAX_AGE;

/// Datums this close to the 14-day limit would likely expire on the way; drop them too.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Buffer {
    max: usize,
    items: VecDeque<Metric>,
}

impl Buffer {
    pub fn new(max: usize) -> Self {
        Buffer {
            max,
            items: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Adds a cycle's metrics behind what already waits; the bound is applied when the sink
    /// parks what it could not deliver, so a cycle is always offered whole.
    pub fn push(&mut self, metrics: Vec<Metric>) {
        self.items.extend(metrics);
    }

    /// Parks `datums` (oldest first) behind what already waits. Returns how many of the
    /// oldest datums were dropped to stay within the bound.
    pub fn park(&mut self, datums: Vec<Metric>) -> usize {
        self.items.extend(datums);
        let over = self.items.len().saturating_sub(self.max);
        self.items.drain(..over);
        over
    }

    /// Takes every waiting datum out, oldest first, with how many were dropped as expired.
    pub fn take(&mut self, now: SystemTime) -> (Vec<Metric>, usize) {
        let before = self.items.len();
        let fresh: Vec<Metric> = self
            .items
            .drain(..)
            .filter(|d| {
                now.duration_since(d.timestamp)
                    .map_or(true, |age| age + EXPIRY_MARGIN <= MAX_AGE)
            })
            .collect();
        let expired = before - fresh.len();
        (fresh, expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::{Unit, Value};
    use std::collections::BTreeMap;

    fn at(secs: u64) -> Metric {
        Metric {
            name: "PluginHealthy".into(),
            dimensions: BTreeMap::new(),
            value: Value::Gauge(secs as f64),
            unit: Unit::None,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs),
        }
    }

    fn values(ds: &[Metric]) -> Vec<f64> {
        ds.iter().map(|d| d.value.number()).collect()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 1000)
    }

    #[test]
    fn keeps_order_across_parks() {
        let mut q = Buffer::new(10);
        assert_eq!(q.park(vec![at(1), at(2)]), 0);
        assert_eq!(q.park(vec![at(3)]), 0);
        assert_eq!(q.len(), 3);
        let (out, expired) = q.take(now());
        assert_eq!(values(&out), [1.0, 2.0, 3.0]);
        assert_eq!(expired, 0);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn drops_oldest_first_past_the_bound_and_counts_them() {
        let mut q = Buffer::new(3);
        assert_eq!(q.park(vec![at(1), at(2)]), 0);
        assert_eq!(q.park(vec![at(3), at(4), at(5)]), 2);
        assert_eq!(q.len(), 3);
        assert_eq!(values(&q.take(now()).0), [3.0, 4.0, 5.0]);
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let mut q = Buffer::new(0);
        assert_eq!(q.park(vec![at(1), at(2)]), 2);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn take_drops_datums_near_or_past_14_days() {
        let mut q = Buffer::new(10);
        q.park(vec![at(0), at(1), at(2)]);
        // at(1) is exactly at the limit less the margin, at(0) one second past it.
        let now = at(1).timestamp + MAX_AGE - EXPIRY_MARGIN;
        let (out, expired) = q.take(now);
        assert_eq!(values(&out), [1.0, 2.0]);
        assert_eq!(expired, 1);
    }

    #[test]
    fn future_timestamps_are_not_expired() {
        let mut q = Buffer::new(10);
        q.park(vec![at(5000)]);
        let (out, expired) = q.take(now());
        assert_eq!(out.len(), 1);
        assert_eq!(expired, 0);
    }
}
