//! The sink: publishes datums to CloudWatch with PutMetricData, or prints them (`--dry-run`).
//!
//! [`Publisher`] holds the delivery rules and is the same for every backend: datums waiting
//! in the [`RetryQueue`] go first; every datum is validated and an invalid one is dropped
//! alone; batches are cut by [`crate::batch`]; throttling, 5xx, timeouts and connection
//! errors are retried with exponential backoff and jitter (backon) until the cycle's deadline,
//! on top of the SDK's own retries; a batch CloudWatch rejects as invalid is split in halves
//! until the bad datum is found, so it never takes good datums down with it; what still
//! cannot be delivered waits in the queue for the next cycle with its original timestamps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::batch;
use crate::datum::Datum;
use crate::logging::LineWriter;
use crate::queue::RetryQueue;

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
        batch: &[Datum],
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
    /// Some datums could not be delivered this time.
    pub failed: bool,
}

impl PublishReport {
    pub fn dropped(&self) -> usize {
        self.dropped_invalid + self.dropped_rejected + self.dropped_overflow + self.dropped_expired
    }
}

pub struct Publisher<S> {
    sink: S,
    namespace: String,
    queue: RetryQueue,
    retry: RetryPolicy,
}

impl<S: MetricSink> Publisher<S> {
    pub fn new(sink: S, namespace: String, queue_max: usize, retry: RetryPolicy) -> Self {
        Publisher {
            sink,
            namespace,
            queue: RetryQueue::new(queue_max),
            retry,
        }
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Sends what waits in the queue, then `new`, trying until `deadline`.
    pub async fn publish(&mut self, new: Vec<Datum>, deadline: Instant) -> PublishReport {
        let mut report = PublishReport::default();
        let now = SystemTime::now();
        let (mut all, expired) = self.queue.take(now);
        if expired > 0 {
            warn!(
                dropped = expired,
                "queued datums reached CloudWatch's 14-day limit; dropped"
            );
        }
        report.dropped_expired = expired;
        all.extend(new);
        let valid: Vec<Datum> = all
            .into_iter()
            .filter(|d| match d.validate(now) {
                Ok(()) => true,
                Err(why) => {
                    warn!(datum = %d, value = d.value, error = %why, "invalid datum dropped");
                    report.dropped_invalid += 1;
                    false
                }
            })
            .collect();

        let mut pending: std::collections::VecDeque<Vec<Datum>> =
            batch::split(valid, &self.namespace).into();
        while let Some(mut b) = pending.pop_front() {
            // Past the deadline the rest waits for the next cycle rather than delaying it: a
            // skipped tick would lose a cycle of data, a deferred batch loses nothing. The
            // first batch always gets its attempt, so a late cycle still makes progress.
            if report.calls > 0 && Instant::now() >= deadline {
                pending.push_front(b);
                info!(
                    datums = pending.iter().map(Vec::len).sum::<usize>(),
                    "cycle deadline reached; the remaining datums go first next cycle"
                );
                break;
            }
            match self.send(&b, deadline, &mut report).await {
                Ok(()) => report.published += b.len(),
                Err(PutError::Rejected(why)) if b.len() > 1 => {
                    warn!(datums = b.len(), error = %why, "CloudWatch rejected a batch; splitting it to find the bad datum");
                    let right = b.split_off(b.len() / 2);
                    pending.push_front(right);
                    pending.push_front(b);
                }
                Err(PutError::Rejected(why)) => {
                    warn!(datum = %b[0], value = b[0].value, error = %why, "CloudWatch rejected datum; dropped");
                    report.dropped_rejected += 1;
                }
                Err(e) => {
                    error!(datums = b.len(), error = %e, "PutMetricData failed; datums kept for the next cycle");
                    report.failed = true;
                    pending.push_front(b);
                    break;
                }
            }
        }
        let leftover: Vec<Datum> = pending.into_iter().flatten().collect();
        let overflow = self.queue.park(leftover);
        if overflow > 0 {
            warn!(
                dropped = overflow,
                queue_max = self.queue.len(),
                "queue full (QUEUE_MAX_DATUMS); oldest datums dropped"
            );
        }
        report.dropped_overflow = overflow;
        report.queued = self.queue.len();
        report
    }

    /// One batch, retried with backoff while the error is transient and time remains.
    async fn send(
        &self,
        batch: &[Datum],
        deadline: Instant,
        report: &mut PublishReport,
    ) -> Result<(), PutError> {
        let policy = self.retry;
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_retries);
        let attempts = AtomicUsize::new(0);
        let attempt = || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .max(policy.min_attempt);
            tokio::time::timeout(budget, self.sink.put(&self.namespace, batch))
                .await
                .unwrap_or_else(|_| Err(PutError::Retryable("PutMetricData timed out".into())))
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
        result
    }
}

/// Sends to Amazon CloudWatch through the AWS SDK.
pub struct CloudWatchSink {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatchSink {
    pub fn new(client: aws_sdk_cloudwatch::Client) -> Self {
        CloudWatchSink { client }
    }
}

impl MetricSink for CloudWatchSink {
    async fn put(&self, namespace: &str, batch: &[Datum]) -> Result<(), PutError> {
        let data = batch.iter().map(to_metric_datum).collect();
        self.client
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(data))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

fn to_metric_datum(d: &Datum) -> MetricDatum {
    let dimensions = d
        .dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    MetricDatum::builder()
        .metric_name(&d.name)
        .set_dimensions(Some(dimensions))
        .value(d.value)
        .unit(StandardUnit::from(d.unit.as_str()))
        .timestamp(DateTime::from(d.timestamp))
        .storage_resolution(60)
        .build()
}

/// Sorts SDK errors into retry, split-and-drop, or give up for now.
fn classify(err: SdkError<PutMetricDataError>) -> PutError {
    let text = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            PutError::Retryable(text)
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or_default();
            match service.err() {
                PutMetricDataError::InvalidParameterValueException(_)
                | PutMetricDataError::InvalidParameterCombinationException(_)
                | PutMetricDataError::MissingRequiredParameterException(_) => {
                    PutError::Rejected(text)
                }
                _ if status == 429 || status >= 500 || code.contains("Throttl") => {
                    PutError::Retryable(text)
                }
                _ if code.starts_with("InvalidParameter") || code == "MissingParameter" => {
                    PutError::Rejected(text)
                }
                _ => PutError::Failed(text),
            }
        }
        _ => PutError::Failed(text),
    }
}

/// Prints datums as JSON lines on stdout instead of sending them; needs no AWS access.
///
/// Like the log, it never blocks on a stdout nobody reads: a batch whose lines could not all
/// be queued counts as a failed put, so its datums wait in the queue as they would for an
/// unreachable CloudWatch (lines that did get out are printed again with them).
pub struct DryRunSink {
    out: LineWriter,
}

impl DryRunSink {
    pub fn stdout() -> Self {
        DryRunSink {
            out: LineWriter::stdout(),
        }
    }
}

impl MetricSink for DryRunSink {
    async fn put(&self, namespace: &str, batch: &[Datum]) -> Result<(), PutError> {
        let mut dropped = 0;
        for d in batch {
            let line = serde_json::json!({
                "namespace": namespace,
                "metric_name": d.name,
                "dimensions": d.dimensions,
                "value": d.value,
                "unit": d.unit.as_str(),
                "timestamp": humantime::format_rfc3339_millis(d.timestamp).to_string(),
            });
            dropped += usize::from(!self.out.line(&format!("{line}\n")));
        }
        if dropped > 0 {
            return Err(PutError::Failed(format!(
                "stdout is not being read: {dropped} of {} datum lines dropped",
                batch.len()
            )));
        }
        Ok(())
    }
}

/// The agent's sink, chosen at start by `--dry-run`.
pub enum Sink {
    CloudWatch(CloudWatchSink),
    DryRun(DryRunSink),
}

impl MetricSink for Sink {
    async fn put(&self, namespace: &str, batch: &[Datum]) -> Result<(), PutError> {
        match self {
            Sink::CloudWatch(s) => s.put(namespace, batch).await,
            Sink::DryRun(s) => s.put(namespace, batch).await,
        }
    }
}

#[cfg(test)]
mod sdk_errors;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::Unit;
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;

    /// Answers from a script first, then by rule: a batch holding a datum named "Poison" is
    /// rejected, anything else accepted. Records every accepted datum.
    #[derive(Default)]
    struct FakeSink {
        script: Mutex<VecDeque<Result<(), PutError>>>,
        always: Option<PutError>,
        accepted: Mutex<Vec<Datum>>,
    }

    impl FakeSink {
        fn scripted(script: Vec<Result<(), PutError>>) -> Self {
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
        fn accepted_values(&self) -> Vec<f64> {
            self.accepted
                .lock()
                .unwrap()
                .iter()
                .map(|d| d.value)
                .collect()
        }
    }

    impl MetricSink for FakeSink {
        async fn put(&self, _namespace: &str, batch: &[Datum]) -> Result<(), PutError> {
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

    fn fast() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retries: 3,
            min_attempt: Duration::from_millis(50),
        }
    }

    fn datum(i: usize, at: SystemTime) -> Datum {
        Datum {
            name: "PluginHealthy".into(),
            dimensions: BTreeMap::from([("Region".into(), format!("r-{i}"))]),
            value: i as f64,
            unit: Unit::None,
            timestamp: at,
        }
    }

    fn data(range: std::ops::Range<usize>) -> Vec<Datum> {
        let now = SystemTime::now();
        range.map(|i| datum(i, now)).collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn publisher(sink: FakeSink) -> Publisher<FakeSink> {
        Publisher::new(sink, "Test/Ns".into(), 100, fast())
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
        assert_eq!(p.sink.accepted_values().len(), 10);
    }

    #[tokio::test]
    async fn more_than_1000_datums_take_several_calls() {
        let mut p = Publisher::new(FakeSink::default(), "Test/Ns".into(), 0, fast());
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
        let mut got = p.sink.accepted_values();
        got.sort_by(f64::total_cmp);
        assert_eq!(got, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 9.0]);
    }

    #[tokio::test]
    async fn invalid_datums_are_dropped_before_sending() {
        let mut ds = data(0..4);
        ds[1].value = f64::NAN;
        ds[2].dimensions.insert("Sku".into(), String::new());
        let mut p = publisher(FakeSink::default());
        let r = p.publish(ds, soon()).await;
        assert_eq!((r.published, r.dropped_invalid, r.calls), (2, 2, 1));
        assert_eq!(p.sink.accepted_values(), [0.0, 3.0]);
    }

    #[tokio::test]
    async fn unreachable_cloudwatch_parks_datums_and_they_go_first_next_time() {
        let earlier = SystemTime::now() - Duration::from_secs(120);
        let first: Vec<Datum> = (0..3).map(|i| datum(i, earlier)).collect();
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
        let accepted = p.sink.accepted.lock().unwrap();
        let values: Vec<f64> = accepted.iter().map(|d| d.value).collect();
        assert_eq!(values, [0.0, 1.0, 2.0, 10.0, 11.0]);
        assert!(accepted[..3].iter().all(|d| d.timestamp == earlier));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline() {
        let mut p = Publisher::new(
            FakeSink::always(PutError::Retryable("503".into())),
            "Test/Ns".into(),
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
        assert!((2..=4).contains(&r.calls), "{}", r.calls);
        assert_eq!(r.queued, 2);
    }

    /// Accepts everything, slowly.
    struct SlowSink(Duration);

    impl MetricSink for SlowSink {
        async fn put(&self, _namespace: &str, _batch: &[Datum]) -> Result<(), PutError> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_past_the_deadline_waits_for_the_next_cycle_without_failing() {
        let mut p = Publisher::new(
            SlowSink(Duration::from_millis(100)),
            "Test/Ns".into(),
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

    #[tokio::test(start_paused = true)]
    async fn a_cycle_already_late_still_sends_its_first_batch() {
        let mut p = Publisher::new(
            SlowSink(Duration::from_millis(10)),
            "Test/Ns".into(),
            10_000,
            fast(),
        );
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
        p.queue = RetryQueue::new(5000);
        let r = p.publish(data(0..2500), soon()).await;
        assert_eq!((r.calls, r.queued), (1, 2500));
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_them() {
        let mut p = Publisher::new(
            FakeSink::always(PutError::Retryable("down".into())),
            "Test/Ns".into(),
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
        let old = SystemTime::now() - crate::datum::MAX_AGE;
        p.queue.park(vec![datum(1, old)]);
        let r = p.publish(data(2..3), soon()).await;
        assert_eq!((r.published, r.dropped_expired), (1, 1));
    }

    /// Records the serialized PutMetricData body's size and Content-Encoding, then stops the
    /// request before it leaves.
    #[derive(Debug, Default, Clone)]
    struct Wire(std::sync::Arc<Mutex<Option<Seen>>>);

    /// Body size and Content-Encoding of one request.
    type Seen = (usize, Option<String>);

    impl aws_sdk_cloudwatch::config::Intercept for Wire {
        fn name(&self) -> &'static str {
            "Wire"
        }
        fn read_before_transmit(
            &self,
            context: &aws_sdk_cloudwatch::config::interceptors::BeforeTransmitInterceptorContextRef<
                '_,
            >,
            _: &aws_sdk_cloudwatch::config::RuntimeComponents,
            _: &mut aws_sdk_cloudwatch::config::ConfigBag,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let request = context.request();
            let size = request.body().bytes().map_or(0, <[u8]>::len);
            let encoding = request
                .headers()
                .get("content-encoding")
                .map(str::to_string);
            *self.0.lock().unwrap() = Some((size, encoding));
            Err("measured; not sent".into())
        }
    }

    /// What the real SDK puts on the wire for `batch`: body size and Content-Encoding.
    async fn wire(batch: &[Datum], compress: bool) -> Seen {
        use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
        let probe = Wire::default();
        let conf = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
            .endpoint_url("http://127.0.0.1:1")
            .disable_request_compression(!compress)
            .interceptor(probe.clone())
            .build();
        let sink = CloudWatchSink::new(aws_sdk_cloudwatch::Client::from_conf(conf));
        assert!(sink.put(NS_MAX, batch).await.is_err());
        probe.0.lock().unwrap().clone().expect("request measured")
    }

    /// The CBOR body before compression.
    async fn wire_size(batch: &[Datum]) -> usize {
        wire(batch, false).await.0
    }

    const NS_MAX: &str = "FinFocus/Plugins";

    fn estimate(batch: &[Datum]) -> usize {
        crate::batch::request_overhead(NS_MAX)
            + batch.iter().map(crate::batch::encoded_size).sum::<usize>()
    }

    #[tokio::test]
    async fn the_size_bound_holds_for_the_largest_datums_the_rules_allow() {
        let mut d = datum(0, SystemTime::now());
        d.name = "n".repeat(255);
        d.unit = Unit::Milliseconds;
        d.value = -1.234_567_890_123e300;
        d.dimensions = (0..30)
            .map(|i| (format!("{i:0>255}"), "v".repeat(1024)))
            .collect();
        let batch = vec![d; 25];
        let (wire, bound) = (wire_size(&batch).await, estimate(&batch));
        assert!(wire <= bound, "wire {wire} > bound {bound}");
        // Within 5% of the truth: the bound does not waste request capacity.
        assert!(bound * 100 <= wire * 105, "wire {wire}, bound {bound}");
    }

    #[tokio::test]
    async fn the_size_bound_holds_for_a_full_batch_of_agent_datums() {
        let batch: Vec<Datum> = (0..1000)
            .map(|i| {
                let mut d = datum(i, SystemTime::now());
                d.name = "ProjectedMonthlyCost".into();
                d.dimensions.insert("ResourceType".into(), "ec2".into());
                d.dimensions.insert("Sku".into(), "m5.large".into());
                d.value = 70.08 + i as f64;
                d
            })
            .collect();
        let (wire, bound) = (wire_size(&batch).await, estimate(&batch));
        assert!(wire <= bound, "wire {wire} > bound {bound}");
        assert!(bound <= wire * 2, "wire {wire}, bound {bound}");
    }

    #[tokio::test]
    async fn full_batches_go_out_gzipped_as_the_sdk_does_by_default() {
        // The agent builds its client from aws-config defaults, which leave compression on
        // unless AWS_DISABLE_REQUEST_COMPRESSION says otherwise.
        let batch = data(0..1000);
        let (plain, _) = wire(&batch, false).await;
        let (size, encoding) = wire(&batch, true).await;
        assert_eq!(encoding.as_deref(), Some("gzip"));
        assert!(size * 3 < plain, "gzip {size} vs plain {plain}");
    }

    #[test]
    fn sdk_datum_carries_every_field() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut d = datum(7, at);
        d.unit = Unit::Milliseconds;
        let m = to_metric_datum(&d);
        assert_eq!(m.metric_name(), Some("PluginHealthy"));
        assert_eq!(m.value(), Some(7.0));
        assert_eq!(m.unit(), Some(&StandardUnit::Milliseconds));
        assert_eq!(m.timestamp().map(|t| t.secs()), Some(1_800_000_000));
        assert_eq!(m.storage_resolution(), Some(60));
        let dims = m.dimensions();
        assert_eq!(dims.len(), 1);
        assert_eq!(
            (dims[0].name(), dims[0].value()),
            (Some("Region"), Some("r-7"))
        );
    }
}
