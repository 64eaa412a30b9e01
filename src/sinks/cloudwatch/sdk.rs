//! The SDK side of the CloudWatch sink: builds `MetricDatum`s, sends PutMetricData, and
//! sorts the SDK's errors into retry, split-and-drop, or give up for now. The SDK's HTTP
//! client is wrapped here so that no answer's body is held past [`MAX_RESPONSE_BODY`].

use aws_sdk_cloudwatch::config::{
    ConfigBag, HttpClient, RuntimeComponents, RuntimeComponentsBuilder, SharedHttpClient,
};
use aws_sdk_cloudwatch::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{MetricSink, PutError};
use crate::metric::{Metric, Value};

/// Request bodies smaller than this go out uncompressed, unless
/// AWS_REQUEST_MIN_COMPRESSION_SIZE_BYTES says otherwise. Under the SDK's own threshold,
/// 10 KiB, a plugin-fleet cycle's 21 KB body was gzipped to 1.5 KB, and the compressor's
/// state raised the agent's peak RSS by about 320 KiB (3.9%, against the 8 MB target) to
/// save 19 KB a minute. Backlogs and large scrapes (bodies near 1 MB) are still compressed.
pub const MIN_COMPRESSED_BODY: u32 = 64 * 1024;

/// The most bytes of an answer's body the SDK may read. PutMetricData answers a few hundred
/// bytes, and so do the credential endpoints that share the client; the SDK holds a body
/// whole before decoding it, so without this an endpoint set by AWS_ENDPOINT_URL that
/// answered a gigabyte took two of memory.
pub const MAX_RESPONSE_BODY: usize = 1 << 20;

/// A body cut at [`MAX_RESPONSE_BODY`]: the request fails with this, naming the likely cause.
#[derive(Debug, thiserror::Error)]
#[error(
    "the answer's body is over {} KiB, which no CloudWatch answer is: check AWS_ENDPOINT_URL",
    MAX_RESPONSE_BODY >> 10
)]
pub struct ResponseTooLarge;

/// The SDK's configuration for the agent: its HTTPS client with every answer's body bounded
/// ([`bounded`]), and bodies compressed from [`MIN_COMPRESSED_BODY`] unless the environment
/// sets a threshold of its own (which the SDK then reads itself).
pub fn loader(http: SharedHttpClient, threshold_in_env: bool) -> aws_config::ConfigLoader {
    let loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(bounded(http));
    if threshold_in_env {
        loader
    } else {
        loader.request_min_compression_size_bytes(MIN_COMPRESSED_BODY)
    }
}

/// `http` with the body of every answer cut at [`MAX_RESPONSE_BODY`]: reading past it fails
/// the request with [`ResponseTooLarge`] instead of holding more.
pub fn bounded(http: SharedHttpClient) -> SharedHttpClient {
    SharedHttpClient::new(Bounded(http))
}

#[derive(Debug)]
struct Bounded(SharedHttpClient);

impl HttpClient for Bounded {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(BoundedConnector(
            self.0.http_connector(settings, components),
        ))
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.validate_base_client_config(components, cfg)
    }

    fn validate_final_config(
        &self,
        components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.validate_final_config(components, cfg)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[derive(Debug)]
struct BoundedConnector(SharedHttpConnector);

impl HttpConnector for BoundedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let answer = self.0.call(request);
        HttpConnectorFuture::new(async move {
            Ok(answer.await?.map(|body| {
                SdkBody::from_body_1_x(Limited::new(body, MAX_RESPONSE_BODY).map_err(too_large))
            }))
        })
    }
}

fn too_large(e: BoxError) -> BoxError {
    if e.is::<LengthLimitError>() {
        Box::new(ResponseTooLarge)
    } else {
        e
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
    async fn put(&self, namespace: &str, batch: &[Metric]) -> Result<(), PutError> {
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

pub(crate) fn to_metric_datum(d: &Metric) -> MetricDatum {
    let dimensions = d
        .dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    let datum = MetricDatum::builder()
        .metric_name(&d.name)
        .set_dimensions(Some(dimensions))
        .unit(StandardUnit::from(d.unit.as_str()))
        .timestamp(DateTime::from(d.timestamp))
        .storage_resolution(60);
    // A gauge's reading and a counter's increase are both one value; CloudWatch's Sum of
    // the increases is the count over any period.
    match &d.value {
        Value::Gauge(v) | Value::Counter(v) => datum.value(*v),
        Value::Distribution(d) => datum
            .set_values(Some(d.values.clone()))
            .set_counts(Some(d.counts.clone())),
    }
    .build()
}

/// Sorts SDK errors into retry, split-and-drop, or give up for now.
fn classify(err: SdkError<PutMetricDataError>) -> PutError {
    let text = DisplayErrorContext(&err).to_string();
    match &err {
        // Not a fault that passes: the same endpoint will answer the same way.
        SdkError::ResponseError(_) if caused_by::<ResponseTooLarge>(&err) => PutError::Failed(text),
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

/// Whether `E` is among the causes of `err`.
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.is::<E>() {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::metric::{Unit, Value};
    use crate::sinks::cloudwatch::batch;
    use crate::sinks::cloudwatch::tests::{data, datum};

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
    async fn wire(batch: &[Metric], compress: bool) -> Seen {
        use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
        let probe = Wire::default();
        let conf = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
            .endpoint_url("http://127.0.0.1:1")
            .disable_request_compression(!compress)
            .request_min_compression_size_bytes(MIN_COMPRESSED_BODY)
            .interceptor(probe.clone())
            .build();
        let sink = CloudWatchSink::new(aws_sdk_cloudwatch::Client::from_conf(conf));
        assert!(sink.put(NS_MAX, batch).await.is_err());
        probe.0.lock().unwrap().clone().expect("request measured")
    }

    /// The CBOR body before compression.
    async fn wire_size(batch: &[Metric]) -> usize {
        wire(batch, false).await.0
    }

    const NS_MAX: &str = "FinFocus/Plugins";

    fn estimate(batch: &[Metric]) -> usize {
        batch::request_overhead(NS_MAX) + batch.iter().map(batch::encoded_size).sum::<usize>()
    }

    #[tokio::test]
    async fn the_size_bound_holds_for_the_largest_datums_the_rules_allow() {
        let mut d = datum(0, SystemTime::now());
        d.name = "n".repeat(255);
        d.unit = Unit::Milliseconds;
        d.value = Value::Gauge(-1.234_567_890_123e300);
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
    async fn the_size_bound_holds_for_the_widest_distributions() {
        let mut d = datum(0, SystemTime::now());
        d.name = "n".repeat(255);
        d.value = Value::distribution(
            (0..150)
                .map(|i| -1.234_567_890_123e300 / f64::from(i + 1))
                .collect(),
            (0..150).map(|i| 1.0e300 / f64::from(i + 1)).collect(),
        );
        let batch = vec![d; 40];
        let (wire, bound) = (wire_size(&batch).await, estimate(&batch));
        assert!(wire <= bound, "wire {wire} > bound {bound}");
        assert!(bound * 100 <= wire * 110, "wire {wire}, bound {bound}");
    }

    #[tokio::test]
    async fn the_size_bound_holds_for_a_full_batch_of_agent_datums() {
        let batch: Vec<Metric> = (0..1000)
            .map(|i| {
                let mut d = datum(i, SystemTime::now());
                d.name = "ProjectedMonthlyCost".into();
                d.dimensions.insert("ResourceType".into(), "ec2".into());
                d.dimensions.insert("Sku".into(), "m5.large".into());
                d.value = Value::Gauge(70.08 + i as f64);
                d
            })
            .collect();
        let (wire, bound) = (wire_size(&batch).await, estimate(&batch));
        assert!(wire <= bound, "wire {wire} > bound {bound}");
        assert!(bound <= wire * 2, "wire {wire}, bound {bound}");
    }

    #[tokio::test]
    async fn a_fleet_cycles_body_goes_out_plain_and_a_full_batch_gzipped() {
        // The agent builds its client from aws-config defaults, which leave compression on
        // unless AWS_DISABLE_REQUEST_COMPRESSION says otherwise; loader() raises the size
        // from which it applies.
        let fleet = data(0..120);
        let (size, encoding) = wire(&fleet, true).await;
        assert_eq!(encoding, None);
        assert!(
            size > 10 * 1024,
            "over the SDK's own threshold, as a fleet cycle's body is: {size}"
        );
        assert!(size < MIN_COMPRESSED_BODY as usize);
        let batch = data(0..1000);
        let (plain, _) = wire(&batch, false).await;
        let (size, encoding) = wire(&batch, true).await;
        assert_eq!(encoding.as_deref(), Some("gzip"));
        assert!(size * 3 < plain, "gzip {size} vs plain {plain}");
    }

    /// Issue 21 item 12: an endpoint (AWS_ENDPOINT_URL) answering 200 with a 64 MiB body.
    /// The agent stops reading past 1 MiB and gives the batch up for this cycle, naming the
    /// endpoint setting; before, the SDK read and held all of it.
    #[tokio::test]
    async fn an_answer_body_over_1_mib_fails_the_request_unread() {
        use std::io::{Read, Write};
        const BODY: usize = 64 << 20;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.read(&mut [0; 64 << 10]);
            // Bounds the test if the client stops reading without hanging up.
            s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/cbor\r\nsmithy-protocol: rpc-v2-cbor\r\ncontent-length: {BODY}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).unwrap();
            let chunk = vec![0u8; 64 << 10];
            let mut sent = 0;
            while sent < BODY {
                match s.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            sent
        });
        use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
            .endpoint_url(url)
            .retry_config(aws_sdk_cloudwatch::config::retry::RetryConfig::disabled())
            .http_client(bounded(aws_smithy_http_client::Builder::new().build_http()))
            .build();
        let sink = CloudWatchSink::new(aws_sdk_cloudwatch::Client::from_conf(conf));
        let e = sink.put(NS_MAX, &data(0..1)).await.expect_err("no answer");
        let sent = tokio::task::spawn_blocking(move || server.join().unwrap())
            .await
            .unwrap();
        match e {
            PutError::Failed(text) => assert!(
                text.contains(
                    "the answer's body is over 1024 KiB, which no CloudWatch answer is: check AWS_ENDPOINT_URL"
                ),
                "{text}"
            ),
            other => panic!("{other:?}"),
        }
        // What the socket buffers took beyond the 1 MiB read, and no more.
        assert!(sent < 8 << 20, "{sent} bytes sent before the agent hung up");
    }

    #[test]
    fn a_distribution_goes_out_as_values_and_counts() {
        let mut d = datum(7, SystemTime::now());
        d.value = Value::distribution(vec![0.25, 1.0], vec![3.0, 1.0]);
        let m = to_metric_datum(&d);
        assert_eq!(m.value(), None);
        assert_eq!(m.values(), [0.25, 1.0]);
        assert_eq!(m.counts(), [3.0, 1.0]);
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
