//! The CloudWatch sink: delivers metrics with PutMetricData under CloudWatch's rules.
//!
//! [`Publisher`] holds the delivery rules, the same whichever [`MetricSink`] receives the
//! requests (the SDK client in [`sdk`], or `--dry-run`'s printer): datums waiting in the
//! [`Buffer`] go first; every datum is checked against the PutMetricData rules
//! ([`rules`]) and an invalid one is dropped alone; batches are cut to CloudWatch's limits by
//! [`batch`]; throttling, 5xx, timeouts and connection errors are retried with exponential
//! backoff and jitter (backon) until the cycle's deadline, on top of the SDK's own retries; a
//! batch CloudWatch rejects as invalid is split in halves until the bad datum is found, so it
//! never takes good datums down with it; what still cannot be delivered waits in the queue
//! for the next cycle with its original timestamps.

pub mod batch;
pub mod rules;
pub mod sdk;
#[cfg(test)]
mod sdk_errors;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::buffer::Buffer;
use crate::metric::Metric;

/// Datums read from the buffer at a time: one record, two full requests. A chunk is held
/// decoded while it is sent, so a small one keeps an outage's memory to the records.
const CHUNK_DATUMS: usize = crate::buffer::RECORD_MAX_DATUMS;
/// The fewest datums a request is cut to after timeouts: below this the per-request cost
/// dominates, and a slower endpoint is down rather than slow.
pub const MIN_BATCH_DATUMS: usize = 25;
/// Datums this close to the 14-day limit would likely expire on the way; they are dropped.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);

/// How a PutMetricData call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PutError {
    /// Throttling, 5xx, timeout, connection: the same request may succeed later.
    #[error("{0}")]
    Retryable(String),
    /// CloudWatch refused the data itself (InvalidParameterValue and kin).
    #[error("{0}")]
    Rejected(String),
    /// Anything else (credentials, permissions): retrying now will not help.
    #[error("{0}")]
    Failed(String),
}

/// A place datums can be sent to.
pub trait MetricSink {
    fn put(
        &self,
        namespace: &str,
        batch: &[Metric],
    ) -> impl std::future::Future<Output = Result<(), PutError>> + Send;
}

/// How hard to retry a batch within the cycle's deadline.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_retries: usize,
    /// An attempt gets at least this long, even past the deadline, so a late cycle still
    /// tries once before parking its datums.
    pub min_attempt: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retries: 6,
            min_attempt: Duration::from_secs(2),
        }
    }
}

/// What one publish did; the cycle's log line is made of it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishReport {
    pub published: usize,
    /// PutMetricData requests made, retries included.
    pub calls: usize,
    /// Those of `calls` that failed, whatever the reason.
    pub failed_calls: usize,
    /// Datums left waiting in the queue afterwards.
    pub queued: usize,
    pub dropped_invalid: usize,
    pub dropped_rejected: usize,
    pub dropped_overflow: usize,
    pub dropped_expired: usize,
    /// Datums of a buffer record that could not be read back.
    pub dropped_corrupt: usize,
    /// Some datums could not be delivered this time.
    pub failed: bool,
}

impl PublishReport {
    pub fn dropped(&self) -> usize {
        self.dropped_invalid
            + self.dropped_rejected
            + self.dropped_overflow
            + self.dropped_expired
            + self.dropped_corrupt
    }
}

pub struct Publisher<S> {
    sink: S,
    namespace: String,
    retry: RetryPolicy,
    /// Datums a request holds at most now: [`batch::MAX_DATUMS`] until a request times out.
    batch_datums: usize,
}

impl<S: MetricSink> Publisher<S> {
    pub fn new(sink: S, namespace: String, retry: RetryPolicy) -> Self {
        Publisher {
            sink,
            namespace,
            retry,
            batch_datums: batch::MAX_DATUMS,
        }
    }

    /// Sends what waits in `buffer`, oldest first, trying until `deadline`. Each run of
    /// datums leaves the buffer once CloudWatch has taken it, or once it is dropped for good
    /// (invalid, rejected, expired); the rest stays for the next publish.
    pub async fn publish(&mut self, buffer: &mut Buffer, deadline: Instant) -> PublishReport {
        let mut report = PublishReport::default();
        loop {
            let chunk = buffer.peek(CHUNK_DATUMS);
            if chunk.is_empty() {
                break;
            }
            let whole = self
                .publish_chunk(chunk, buffer, deadline, &mut report)
                .await;
            if !whole || Instant::now() >= deadline {
                break;
            }
        }
        // What the buffer refused or could not read back, since the last publish.
        let lost = buffer.take_lost();
        report.dropped_invalid += lost.invalid;
        report.dropped_corrupt += lost.corrupt;
        report.queued = buffer.len();
        report
    }

    /// Sends one chunk in order, acknowledging each prefix as it is done with; true when
    /// all of it was.
    async fn publish_chunk(
        &mut self,
        chunk: Vec<Metric>,
        buffer: &mut Buffer,
        deadline: Instant,
        report: &mut PublishReport,
    ) -> bool {
        let now = SystemTime::now();
        let total = chunk.len();
        // The datums to send, and where each stood in the chunk.
        let mut valid = Vec::with_capacity(total);
        let mut position = Vec::with_capacity(total);
        let mut expired = 0;
        for (i, d) in chunk.into_iter().enumerate() {
            if now
                .duration_since(d.timestamp)
                .is_ok_and(|age| age + EXPIRY_MARGIN > rules::MAX_AGE)
            {
                expired += 1;
                continue;
            }
            match rules::check(&d, now) {
                Ok(()) => {
                    valid.push(d);
                    position.push(i);
                }
                Err(why) => {
                    warn!(datum = %d, value = ?d.value, error = %why, "invalid datum dropped");
                    report.dropped_invalid += 1;
                }
            }
        }
        if expired > 0 {
            warn!(
                dropped = expired,
                "buffered datums reached CloudWatch's 14-day limit; dropped"
            );
            report.dropped_expired += expired;
        }

        let mut pending: VecDeque<Range<usize>> =
            batch::split_at_most(&valid, &self.namespace, self.batch_datums).into();
        // Datums of the chunk already acknowledged.
        let mut acked = 0;
        // Acknowledges everything before the first datum still to send.
        let mut ack_upto = |pending: &VecDeque<Range<usize>>, buffer: &mut Buffer| {
            let upto = pending.front().map_or(total, |r| position[r.start]);
            buffer.ack(upto - acked);
            acked = upto;
        };
        ack_upto(&pending, buffer);
        let mut halving = false;
        while let Some(b) = pending.pop_front() {
            // Past the deadline the rest waits for the next cycle rather than delaying it: a
            // skipped tick would lose a cycle of data, a deferred batch loses nothing. The
            // first batch always gets its attempt, so a late cycle still makes progress.
            if report.calls > 0 && Instant::now() >= deadline {
                pending.push_front(b);
                info!(
                    datums = buffer.len(),
                    "cycle deadline reached; the remaining datums go first next cycle"
                );
                return false;
            }
            let cut = self.batch_datums;
            match self.send(&valid[b.clone()], deadline, report).await {
                Ok(()) => {
                    report.published += b.len();
                    // Requests may be larger again: the rest is cut anew (pending always
                    // runs on to the end), unless a rejected batch is being halved.
                    if self.batch_datums > cut
                        && !halving
                        && let Some(from) = pending.front().map(|r| r.start)
                    {
                        pending = batch::split_at_most(
                            &valid[from..],
                            &self.namespace,
                            self.batch_datums,
                        )
                        .into_iter()
                        .map(|r| r.start + from..r.end + from)
                        .collect();
                    }
                }
                Err(PutError::Rejected(why)) if b.len() > 1 => {
                    halving = true;
                    warn!(datums = b.len(), error = %why, "CloudWatch rejected a batch; splitting it to find the bad datum");
                    let mid = b.start + b.len() / 2;
                    pending.push_front(mid..b.end);
                    pending.push_front(b.start..mid);
                }
                Err(PutError::Rejected(why)) => {
                    let d = &valid[b.start];
                    warn!(datum = %d, value = ?d.value, error = %why, "CloudWatch rejected datum; dropped");
                    report.dropped_rejected += 1;
                }
                Err(e) => {
                    error!(datums = b.len(), error = %e, "PutMetricData failed; datums kept for the next cycle");
                    report.failed = true;
                    return false;
                }
            }
            ack_upto(&pending, buffer);
        }
        true
    }

    /// One batch, retried with backoff while the error is transient and time remains.
    async fn send(
        &mut self,
        batch: &[Metric],
        deadline: Instant,
        report: &mut PublishReport,
    ) -> Result<(), PutError> {
        let policy = self.retry;
        // Full jitter (a delay anywhere from 0 to the exponential step): backon's own
        // jitter only adds up to one step, which keeps a throttled fleet's retries bunched
        // at the step's start.
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_retries)
            .build()
            .map(full_jitter);
        let attempts = AtomicUsize::new(0);
        let timed_out = AtomicBool::new(false);
        let (sink, namespace) = (&self.sink, self.namespace.as_str());
        let attempt = || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .max(policy.min_attempt);
            let answer = tokio::time::timeout(budget, sink.put(namespace, batch)).await;
            timed_out.store(answer.is_err(), Ordering::Relaxed);
            answer.unwrap_or_else(|_| Err(PutError::Retryable("PutMetricData timed out".into())))
        };
        let result = attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, PutError::Retryable(_)))
            // Never sleep past the deadline: the cycle must not run into the next one.
            .adjust(|_, delay| delay.filter(|d| Instant::now() + *d < deadline))
            .notify(|e, delay| {
                warn!(datums = batch.len(), error = %e, retry_in_ms = delay.as_millis() as u64, "PutMetricData failed; retrying");
            })
            .await;
        let attempts = attempts.into_inner();
        report.calls += attempts;
        report.failed_calls += attempts - usize::from(result.is_ok());
        if result.is_err() && timed_out.into_inner() {
            let smaller = (batch.len() / 2).max(MIN_BATCH_DATUMS);
            if smaller < self.batch_datums {
                self.batch_datums = smaller;
                warn!(
                    datums = smaller,
                    "PutMetricData timed out; requests hold at most this many datums until they are answered in time"
                );
            }
        } else if result.is_ok() && batch.len() >= self.batch_datums {
            self.batch_datums = (self.batch_datums * 2).min(batch::MAX_DATUMS);
        }
        result
    }
}

/// A uniformly random delay up to `step`.
fn full_jitter(step: Duration) -> Duration {
    step.mul_f64(fastrand::f64())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metric::{Dimensions, Unit, Value};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Answers from a script first, then by rule: a batch holding a datum named "Poison" is
    /// rejected, anything else accepted. Records every accepted datum.
    #[derive(Default)]
    pub(crate) struct FakeSink {
        script: Mutex<VecDeque<Result<(), PutError>>>,
        always: Option<PutError>,
        /// Never answers, like a PutMetricData that hangs.
        hang: bool,
        pub(crate) accepted: Mutex<Vec<Metric>>,
        pub(crate) calls: AtomicUsize,
    }

    impl FakeSink {
        pub(crate) fn scripted(script: Vec<Result<(), PutError>>) -> Self {
            FakeSink {
                script: Mutex::new(script.into()),
                ..FakeSink::default()
            }
        }
        fn always(e: PutError) -> Self {
            FakeSink {
                always: Some(e),
                ..FakeSink::default()
            }
        }
        pub(crate) fn always_failing() -> Self {
            Self::always(PutError::Failed("AccessDenied".into()))
        }
        pub(crate) fn hanging() -> Self {
            FakeSink {
                hang: true,
                ..FakeSink::default()
            }
        }
        fn accepted_values(&self) -> Vec<f64> {
            self.accepted
                .lock()
                .unwrap()
                .iter()
                .map(|d| d.value.number())
                .collect()
        }
    }

    impl MetricSink for FakeSink {
        async fn put(&self, _namespace: &str, batch: &[Metric]) -> Result<(), PutError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.hang {
                std::future::pending::<()>().await;
            }
            if let Some(answer) = self.script.lock().unwrap().pop_front() {
                answer?;
            } else if let Some(e) = &self.always {
                return Err(e.clone());
            }
            if batch.iter().any(|d| d.name == "Poison") {
                return Err(PutError::Rejected("InvalidParameterValue".into()));
            }
            self.accepted.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
    }

    /// Shared, so a test keeps a handle on what the publisher's sink received.
    impl MetricSink for std::sync::Arc<FakeSink> {
        async fn put(&self, namespace: &str, batch: &[Metric]) -> Result<(), PutError> {
            self.as_ref().put(namespace, batch).await
        }
    }

    pub(crate) fn fast() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retries: 3,
            min_attempt: Duration::from_millis(50),
        }
    }

    pub(crate) fn datum(i: usize, at: SystemTime) -> Metric {
        Metric {
            name: "PluginHealthy".into(),
            dimensions: Dimensions::from([("Region".into(), format!("r-{i}"))]),
            value: Value::Gauge(i as f64),
            unit: Unit::None,
            timestamp: at,
        }
    }

    pub(crate) fn data(range: std::ops::Range<usize>) -> Vec<Metric> {
        let now = SystemTime::now();
        range.map(|i| datum(i, now)).collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    /// A publisher with its buffer, as the agent holds them.
    struct Rig<S> {
        p: Publisher<S>,
        buffer: Buffer,
    }

    impl<S: MetricSink> Rig<S> {
        fn new(sink: S, buffer_max: usize, retry: RetryPolicy) -> Self {
            Rig {
                p: Publisher::new(sink, "Test/Ns".into(), retry),
                buffer: Buffer::memory(buffer_max),
            }
        }

        /// A cycle's publish: `new` into the buffer, everything in it to the sink, then the
        /// buffer's bounds.
        async fn publish(&mut self, new: Vec<Metric>, deadline: Instant) -> PublishReport {
            self.buffer.push(&new, true);
            let mut r = self.p.publish(&mut self.buffer, deadline).await;
            r.dropped_overflow = self.buffer.trim();
            r.queued = self.buffer.len();
            r
        }

        fn sink(&self) -> &S {
            &self.p.sink
        }
    }

    fn publisher(sink: FakeSink) -> Rig<FakeSink> {
        Rig::new(sink, 100, fast())
    }

    #[tokio::test]
    async fn everything_goes_out_in_one_call() {
        let mut p = publisher(FakeSink::default());
        let r = p.publish(data(0..10), soon()).await;
        assert_eq!(
            r,
            PublishReport {
                published: 10,
                calls: 1,
                ..PublishReport::default()
            }
        );
        assert_eq!(p.sink().accepted_values().len(), 10);
    }

    #[tokio::test]
    async fn more_than_1000_datums_take_several_calls() {
        let mut p = Rig::new(FakeSink::default(), 0, fast());
        let r = p.publish(data(0..2500), soon()).await;
        assert_eq!((r.published, r.calls), (2500, 3));
    }

    #[tokio::test]
    async fn throttling_is_retried_with_backoff() {
        let throttled = || Err(PutError::Retryable("Throttling".into()));
        let mut p = publisher(FakeSink::scripted(vec![throttled(), throttled()]));
        let r = p.publish(data(0..3), soon()).await;
        assert_eq!((r.published, r.calls, r.failed), (3, 3, false));
        assert_eq!(r.failed_calls, 2);
    }

    #[tokio::test]
    async fn a_rejected_datum_is_found_and_dropped_alone() {
        let mut ds = data(0..10);
        ds[6].name = "Poison".into();
        let mut p = publisher(FakeSink::default());
        let r = p.publish(ds, soon()).await;
        assert_eq!(r.published, 9);
        assert_eq!(r.dropped_rejected, 1);
        // The whole batch, then each half down to the poisoned datum: 4 refusals.
        assert_eq!(r.failed_calls, 4);
        assert!(!r.failed);
        let mut got = p.sink().accepted_values();
        got.sort_by(f64::total_cmp);
        assert_eq!(got, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 9.0]);
    }

    #[tokio::test]
    async fn invalid_datums_are_dropped_before_sending() {
        let mut ds = data(0..4);
        ds[1].value = Value::Gauge(f64::NAN);
        ds[2].dimensions.insert("Sku".into(), String::new());
        let mut p = publisher(FakeSink::default());
        let r = p.publish(ds, soon()).await;
        assert_eq!((r.published, r.dropped_invalid, r.calls), (2, 2, 1));
        assert_eq!(p.sink().accepted_values(), [0.0, 3.0]);
    }

    #[tokio::test]
    async fn what_is_dropped_for_good_leaves_the_buffer_once_even_when_sending_fails() {
        // An invalid datum first, a poisoned one in the middle: CloudWatch refuses the first
        // attempt for an unrelated reason, then accepts.
        let mut ds = data(0..6);
        ds[0].value = Value::Gauge(f64::NAN);
        ds[3].name = "Poison".into();
        let mut p = publisher(FakeSink::scripted(vec![Err(PutError::Failed(
            "AccessDenied".into(),
        ))]));
        let r = p.publish(ds, soon()).await;
        assert_eq!((r.dropped_invalid, r.published, r.queued), (1, 0, 5));
        let r = p.publish(vec![], soon()).await;
        // Neither drop is counted twice, and every good datum went out once, in order.
        assert_eq!((r.dropped_invalid, r.dropped_rejected), (0, 1));
        assert_eq!((r.published, r.queued), (4, 0));
        assert_eq!(p.sink().accepted_values(), [1.0, 2.0, 4.0, 5.0]);
    }

    #[tokio::test]
    async fn a_backlog_larger_than_a_chunk_goes_out_whole_and_in_order() {
        let mut p = Rig::new(FakeSink::default(), 100_000, fast());
        let backlog = data(0..25_000);
        p.buffer.push(&backlog, true);
        let r = p.publish(vec![], soon()).await;
        assert_eq!((r.published, r.calls, r.queued), (25_000, 25, 0));
        let got = p.sink().accepted_values();
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[tokio::test]
    async fn unreachable_cloudwatch_parks_datums_and_they_go_first_next_time() {
        let earlier = SystemTime::now() - Duration::from_secs(120);
        let first: Vec<Metric> = (0..3).map(|i| datum(i, earlier)).collect();
        let mut p = publisher(FakeSink::scripted(vec![
            Err(PutError::Retryable(
                "connection refused".into()
            ));
            4
        ]));
        let r = p.publish(first, soon()).await;
        assert!(r.failed);
        assert_eq!(
            (r.published, r.queued, r.calls, r.failed_calls),
            (0, 3, 4, 4)
        );
        let r = p.publish(data(10..12), soon()).await;
        assert_eq!((r.published, r.queued, r.failed), (5, 0, false));
        assert_eq!(r.failed_calls, 0);
        let accepted = p.sink().accepted.lock().unwrap();
        let values: Vec<f64> = accepted.iter().map(|d| d.value.number()).collect();
        assert_eq!(values, [0.0, 1.0, 2.0, 10.0, 11.0]);
        assert!(accepted[..3].iter().all(|d| d.timestamp == earlier));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline() {
        let mut p = Rig::new(
            FakeSink::always(PutError::Retryable("503".into())),
            100,
            RetryPolicy {
                min_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(100),
                max_retries: 1000,
                min_attempt: Duration::from_millis(50),
            },
        );
        let started = Instant::now();
        let r = p
            .publish(data(0..2), Instant::now() + Duration::from_millis(350))
            .await;
        // On the paused clock: backoff sleeps advance it exactly, and none goes past 350 ms.
        assert!(
            started.elapsed() <= Duration::from_millis(350),
            "{:?}",
            started.elapsed()
        );
        assert!(r.failed);
        // Full jitter: delays from 0 to 100 ms, about 50 on average.
        assert!((2..=100).contains(&r.calls), "{}", r.calls);
        assert_eq!(r.queued, 2);
    }

    #[test]
    fn retry_delays_are_fully_jittered() {
        let step = Duration::from_secs(8);
        let delays: Vec<Duration> = (0..10_000).map(|_| full_jitter(step)).collect();
        assert!(delays.iter().all(|d| *d < step));
        // Spread over the whole step, not bunched at its start as step + jitter would be.
        for quarter in 0..4 {
            let (lo, hi) = (step * quarter / 4, step * (quarter + 1) / 4);
            let n = delays.iter().filter(|d| (lo..hi).contains(*d)).count();
            assert!((2_200..=2_800).contains(&n), "quarter {quarter}: {n}");
        }
    }

    /// Accepts everything, slowly.
    struct SlowSink(Duration);

    impl MetricSink for SlowSink {
        async fn put(&self, _namespace: &str, _batch: &[Metric]) -> Result<(), PutError> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_past_the_deadline_waits_for_the_next_cycle_without_failing() {
        let mut p = Rig::new(
            SlowSink(Duration::from_millis(100)),
            10_000,
            RetryPolicy {
                min_attempt: Duration::from_secs(2),
                ..fast()
            },
        );
        let deadline = Instant::now() + Duration::from_millis(250);
        let r = p.publish(data(0..5500), deadline).await;
        // Batches start at 0, 100 and 200 ms; the fourth would start at the deadline.
        assert_eq!((r.published, r.calls, r.queued), (3000, 3, 2500));
        assert!(!r.failed);
        let r = p
            .publish(vec![], Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!((r.published, r.queued), (2500, 0));
    }

    #[tokio::test]
    async fn cycles_of_several_records_on_disk_survive_a_failure_and_a_crash_once_in_order() {
        // Issue 26: the e2e faults never met a cycle of more than one record (2,000 datums).
        let dir = crate::buffer::tests::TempDir::new("publish-records");
        let open = || Buffer::open(dir.path(), 64 << 20, 10_000).unwrap();
        let sink = std::sync::Arc::new(FakeSink::scripted(vec![
            Ok(()),
            Err(PutError::Failed("AccessDenied".into())),
        ]));
        let mut p = Rig {
            p: Publisher::new(sink.clone(), "Test/Ns".into(), fast()),
            buffer: open(),
        };
        // 2,500 datums: two records. The first request of 1,000 goes, the second fails and
        // is not retried: 1,500 wait, across both records.
        let r = p.publish(data(0..2500), soon()).await;
        assert_eq!((r.published, r.queued, r.failed), (1000, 1500, true));
        // A crash: nothing flushed; what was acknowledged stays gone.
        drop(p);
        let mut p = Rig {
            p: Publisher::new(sink.clone(), "Test/Ns".into(), fast()),
            buffer: open(),
        };
        assert_eq!(p.buffer.len(), 1500);
        let r = p.publish(data(2500..5000), soon()).await;
        assert_eq!((r.published, r.queued, r.failed), (4000, 0, false));
        let want: Vec<f64> = (0..5000).map(|i| i as f64).collect();
        assert_eq!(sink.accepted_values(), want, "each datum once, in order");
        drop(p);
        assert!(open().is_empty());
    }

    /// Times out any request of more than `.0` datums.
    struct SlowAbove(usize);

    impl MetricSink for SlowAbove {
        async fn put(&self, _namespace: &str, batch: &[Metric]) -> Result<(), PutError> {
            if batch.len() > self.0 {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_time_out_are_halved_until_a_backlog_drains_then_grow_back() {
        let retry = RetryPolicy {
            max_retries: 0,
            ..fast()
        };
        let mut p = Rig::new(SlowAbove(100), 10_000, retry);
        p.buffer.push(&data(0..1000), true);
        // Each publish is already late: one attempt. 1000, 500, 250 and 125 time out.
        for halved in [500, 250, 125, 62] {
            let r = p.publish(vec![], Instant::now()).await;
            assert_eq!((r.published, r.failed), (0, true));
            assert_eq!(p.p.batch_datums, halved);
        }
        // 62 goes through, and a full request in time doubles the next one.
        let r = p.publish(vec![], Instant::now()).await;
        assert_eq!((r.published, r.queued, r.failed), (62, 938, false));
        assert_eq!(p.p.batch_datums, 124);
        // Whatever the first size was, the backlog drains.
        for _ in 0..40 {
            p.publish(vec![], Instant::now() + Duration::from_secs(10))
                .await;
        }
        assert_eq!(p.buffer.len(), 0);
        assert_eq!(p.sink().0, 100);
        // Never below the floor, however many time out.
        let mut p = Rig::new(SlowAbove(0), 10_000, retry);
        p.buffer.push(&data(0..1000), true);
        for _ in 0..10 {
            p.publish(vec![], Instant::now()).await;
        }
        assert_eq!(p.p.batch_datums, MIN_BATCH_DATUMS);
        // An endpoint fast again takes the size back up to 1000: 50, 100, ... 800, 1000.
        let mut p = Rig::new(SlowAbove(usize::MAX), 10_000, retry);
        p.p.batch_datums = 50;
        p.buffer.push(&data(0..3000), true);
        let r = p
            .publish(vec![], Instant::now() + Duration::from_secs(10))
            .await;
        assert_eq!((r.published, r.calls), (3000, 7));
        assert_eq!(p.p.batch_datums, 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_already_late_still_sends_its_first_batch() {
        let mut p = Rig::new(SlowSink(Duration::from_millis(10)), 10_000, fast());
        let r = p.publish(data(0..1500), Instant::now()).await;
        assert_eq!((r.published, r.calls, r.queued), (1000, 1, 500));
    }

    #[tokio::test]
    async fn a_failure_that_retrying_cannot_fix_is_not_retried_but_kept() {
        let mut p = publisher(FakeSink::always(PutError::Failed("AccessDenied".into())));
        let r = p.publish(data(0..3), soon()).await;
        assert_eq!((r.calls, r.queued, r.failed), (1, 3, true));
    }

    #[tokio::test]
    async fn after_one_batch_fails_the_rest_are_parked_without_calls() {
        let mut p = publisher(FakeSink::always(PutError::Failed("AccessDenied".into())));
        p.buffer = Buffer::memory(5000);
        let r = p.publish(data(0..2500), soon()).await;
        assert_eq!((r.calls, r.queued), (1, 2500));
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_them() {
        let mut p = Rig::new(
            FakeSink::always(PutError::Retryable("down".into())),
            4,
            fast(),
        );
        let r = p.publish(data(0..3), soon()).await;
        assert_eq!((r.queued, r.dropped_overflow), (3, 0));
        let r = p.publish(data(3..6), soon()).await;
        assert_eq!((r.queued, r.dropped_overflow), (4, 2));
        assert_eq!(r.dropped(), 2);
    }

    #[tokio::test]
    async fn queued_datums_past_14_days_are_dropped_as_expired() {
        let mut p = publisher(FakeSink::default());
        let old = SystemTime::now() - crate::sinks::cloudwatch::rules::MAX_AGE;
        p.buffer.push(&[datum(1, old)], true);
        let r = p.publish(data(2..3), soon()).await;
        assert_eq!((r.published, r.dropped_expired), (1, 1));
    }
}
