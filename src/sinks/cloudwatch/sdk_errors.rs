//! How the publisher sorts PutMetricData failures, with real SDK errors: the real
//! aws-sdk-cloudwatch client against an HTTP server that answers as CloudWatch does in its
//! Smithy RPC v2 CBOR protocol (status, `x-amzn-query-error`, a CBOR body with `__type`).
//! Throttling, 429 and 5xx are retried; InvalidParameter* splits the batch down to the bad
//! datum; AccessDenied keeps the datums for the next cycle; a call that hangs is cut at the
//! per-attempt timeout, never before the minimum attempt.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::buffer::Buffer;
use crate::metric::{Dimensions, Metric, Unit, Value};
use crate::sinks::cloudwatch::sdk::CloudWatchSink;
use crate::sinks::cloudwatch::{PublishReport, Publisher, RetryPolicy};
use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// What the fake CloudWatch answers to one request.
#[derive(Clone)]
enum Answer {
    Ok,
    /// HTTP status, the query-compatible error code, and the error shape's name.
    Error(u16, &'static str, &'static str),
    /// Reject the request when its body names a metric "Poison", else accept it.
    RejectPoison,
    Hang,
}

struct FakeCloudWatch {
    url: String,
    script: Arc<Mutex<VecDeque<Answer>>>,
    requests: Arc<Mutex<usize>>,
}

/// A CBOR map of text to text: all an error body needs.
fn cbor_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        match s.len() {
            n if n < 24 => out.push(0x60 | n as u8),
            n if n < 256 => out.extend([0x78, n as u8]),
            n => out.extend([0x79, (n >> 8) as u8, n as u8]),
        }
        out.extend(s.as_bytes());
    }
    let mut out = vec![0xa0 | pairs.len() as u8];
    for (k, v) in pairs {
        text(&mut out, k);
        text(&mut out, v);
    }
    out
}

fn error_response(status: u16, code: &str, shape: &str) -> Response<Full<Bytes>> {
    let body = cbor_map(&[
        ("__type", &format!("com.amazonaws.cloudwatch#{shape}")),
        ("message", &format!("{code} from the fake")),
    ]);
    Response::builder()
        .status(status)
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("content-type", "application/cbor")
        .header("x-amzn-query-error", format!("{code};Sender"))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn ok_response() -> Response<Full<Bytes>> {
    Response::builder()
        .status(200)
        .header("smithy-protocol", "rpc-v2-cbor")
        .header("content-type", "application/cbor")
        .body(Full::new(Bytes::from(cbor_map(&[]))))
        .unwrap()
}

impl FakeCloudWatch {
    async fn start(script: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let requests = Arc::new(Mutex::new(0));
        let (s, r) = (script.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (script, requests) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (script, requests) = (script.clone(), requests.clone());
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            *requests.lock().unwrap() += 1;
                            let answer = script.lock().unwrap().pop_front().unwrap_or(Answer::Ok);
                            let poisoned = body.windows(6).any(|w| w == b"Poison");
                            let response = match answer {
                                Answer::Ok => ok_response(),
                                Answer::Error(status, code, shape) => {
                                    error_response(status, code, shape)
                                }
                                Answer::RejectPoison if poisoned => error_response(
                                    400,
                                    "InvalidParameterValue",
                                    "InvalidParameterValueException",
                                ),
                                Answer::RejectPoison => ok_response(),
                                Answer::Hang => std::future::pending().await,
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeCloudWatch {
            url,
            script,
            requests,
        }
    }

    fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }

    /// The real SDK client, with its own retries off so each answer is seen once.
    fn sink(&self) -> CloudWatchSink {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let config = aws_sdk_cloudwatch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(&self.url)
            .retry_config(RetryConfig::disabled())
            .http_client(http)
            .build();
        CloudWatchSink::new(aws_sdk_cloudwatch::Client::from_conf(config))
    }
}

fn datum(name: &str, i: usize) -> Metric {
    Metric {
        name: name.into(),
        dimensions: Dimensions::from([("Region".into(), format!("us-east-{i}"))]),
        value: Value::Gauge(i as f64),
        unit: Unit::None,
        timestamp: SystemTime::now(),
    }
}

fn policy(min_attempt: Duration) -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(10),
        max_retries: 3,
        min_attempt,
    }
}

async fn publish_through(
    answers: Vec<Answer>,
    batch: Vec<Metric>,
) -> (PublishReport, usize, usize) {
    let fake = FakeCloudWatch::start(answers).await;
    let mut publisher = Publisher::new(
        fake.sink(),
        "Test/Errors".into(),
        policy(Duration::from_secs(2)),
    );
    let mut buffer = Buffer::memory(100);
    buffer.push(&batch, true);
    let report = publisher
        .publish(&mut buffer, Instant::now() + Duration::from_secs(10))
        .await;
    (report, buffer.len(), fake.requests())
}

#[tokio::test]
async fn throttling_429_and_5xx_are_retried_until_accepted() {
    for answer in [
        Answer::Error(400, "Throttling", "ThrottlingException"),
        Answer::Error(429, "TooManyRequests", "TooManyRequestsException"),
        Answer::Error(500, "InternalServiceError", "InternalServiceFault"),
        Answer::Error(503, "ServiceUnavailable", "ServiceUnavailableException"),
    ] {
        let (report, queued, requests) =
            publish_through(vec![answer.clone(), answer], vec![datum("Healthy", 1)]).await;
        assert_eq!(
            (report.published, report.calls, report.failed_calls),
            (1, 3, 2)
        );
        assert!(!report.failed);
        assert_eq!((queued, requests), (0, 3));
    }
}

#[tokio::test]
async fn an_invalid_datum_is_bisected_out_and_the_rest_published() {
    let batch = vec![
        datum("Healthy", 1),
        datum("Healthy", 2),
        datum("Poison", 3),
        datum("Healthy", 4),
    ];
    let answers = vec![Answer::RejectPoison; 8];
    let (report, queued, requests) = publish_through(answers, batch).await;
    assert_eq!(report.published, 3);
    assert_eq!(report.dropped_rejected, 1);
    assert!(!report.failed);
    assert_eq!(queued, 0);
    // The whole batch, its halves, then the poisoned half's halves.
    assert_eq!(requests, 5);
}

#[tokio::test]
async fn access_denied_keeps_the_datums_for_the_next_cycle_without_retrying() {
    let denied = Answer::Error(403, "AccessDenied", "AccessDeniedException");
    let (report, queued, requests) =
        publish_through(vec![denied], vec![datum("Healthy", 1), datum("Healthy", 2)]).await;
    assert!(report.failed);
    assert_eq!(
        (report.published, report.calls, report.dropped()),
        (0, 1, 0)
    );
    assert_eq!((queued, requests), (2, 1));
}

#[tokio::test]
async fn a_hung_call_is_cut_at_the_deadline_but_never_before_the_minimum_attempt() {
    // The deadline is long past: the call still gets its minimum attempt (300 ms), once.
    let fake = FakeCloudWatch::start(vec![Answer::Hang; 4]).await;
    let mut publisher = Publisher::new(
        fake.sink(),
        "Test/Errors".into(),
        policy(Duration::from_millis(300)),
    );
    let mut buffer = Buffer::memory(100);
    buffer.push(&[datum("Healthy", 1)], true);
    let started = Instant::now();
    let report = publisher.publish(&mut buffer, Instant::now()).await;
    let took = started.elapsed();
    assert!(report.failed);
    assert_eq!((report.calls, buffer.len()), (1, 1));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // A deadline 1 s away: the attempt gets the whole second, and no retry follows it.
    fake.script.lock().unwrap().push_back(Answer::Hang);
    let started = Instant::now();
    let report = publisher
        .publish(&mut buffer, Instant::now() + Duration::from_secs(1))
        .await;
    let took = started.elapsed();
    assert_eq!((report.calls, report.failed), (1, true));
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}
