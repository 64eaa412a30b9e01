//! The client side of the FinFocus plugin contract (`shared/plugin-contract.md`):
//! `GET /healthz`, and the Connect unary JSON RPCs GetPluginInfo and GetProjectedCost.
//!
//! Every call is bounded by a deadline, so one hung plugin costs its own time budget and no
//! more. Responses are protobuf JSON: lowerCamelCase names, zero values omitted (they read as
//! 0 here), unknown fields ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Deserializer};
use tokio::time::Instant;

use crate::sources::plugins::basket::Resource;
use crate::untrusted;

/// Larger answers than this are not a plugin talking: the contract's answers are well under
/// 4 KiB. Every response body is held whole while it is read, so this bounds memory too.
pub const MAX_BODY: usize = 64 << 10;
const SERVICE: &str = "finfocus.v1.CostSourceService";

/// Every string in a `CallError` that came from the remote end has been passed through
/// [`untrusted::remote`], so an error can be logged or shown as it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(u16),
    /// A Connect error body: `{"code": ..., "message": ...}`.
    #[error("{code} (HTTP {status}): {message}")]
    Connect {
        code: String,
        message: String,
        status: u16,
    },
    #[error("unreadable response: {0}")]
    Decode(String),
}

impl CallError {
    /// A Connect-style code for the log's `code` field.
    pub fn code(&self) -> &str {
        match self {
            CallError::Timeout => "deadline_exceeded",
            CallError::Transport(_) => "unavailable",
            CallError::Status(status) => code_for_status(*status),
            CallError::Connect { code, .. } => code,
            CallError::Decode(_) => "malformed_response",
        }
    }
}

/// The outcome of one health probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub healthy: bool,
    /// Set when the plugin answered, whatever it answered.
    pub latency: Option<Duration>,
    pub error: Option<CallError>,
}

/// GetPluginInfo, reduced to what the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PluginInfo {
    pub version: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

impl PluginInfo {
    /// The region the plugin serves, when it reports a well-formed region name; anything
    /// else is treated as no report, so it never becomes a dimension value.
    pub fn region(&self) -> Option<&str> {
        self.metadata
            .as_ref()?
            .get("region")
            .map(String::as_str)
            .filter(|r| crate::config::is_region(r))
    }
}

/// GetProjectedCost, reduced to what the agent publishes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectedCost {
    #[serde(deserialize_with = "proto_double")]
    pub unit_price: f64,
    pub currency: Option<String>,
    #[serde(deserialize_with = "proto_double")]
    pub cost_per_month: f64,
    pub impact_metrics: Option<Vec<ImpactMetric>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImpactMetric {
    /// Enum name; protobuf JSON may also send the number, which reads as None here.
    #[serde(deserialize_with = "enum_name")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "proto_double")]
    pub value: f64,
    pub unit: Option<String>,
}

impl ProjectedCost {
    /// Proto3 omits an empty currency; the plugin prices in USD.
    pub fn currency(&self) -> &str {
        self.currency
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or("USD")
    }

    /// Both prices (and the carbon figure, when there is one) are finite numbers; protobuf
    /// JSON can carry "NaN", "Infinity" or "1e400", which CloudWatch cannot store.
    pub fn is_finite(&self) -> bool {
        self.unit_price.is_finite()
            && self.cost_per_month.is_finite()
            && self.carbon_grams().is_none_or(f64::is_finite)
    }

    /// The carbon footprint in gCO2e, when reported.
    pub fn carbon_grams(&self) -> Option<f64> {
        self.impact_metrics
            .iter()
            .flatten()
            .find(|m| m.kind.as_deref() == Some("METRIC_KIND_CARBON_FOOTPRINT"))
            .map(|m| m.value)
    }
}

/// Protobuf JSON writes doubles as numbers, or as strings ("NaN", "Infinity", "1.5").
fn proto_double<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Double {
        Number(f64),
        Text(String),
        Null(()),
    }
    match Double::deserialize(d)? {
        Double::Number(n) => Ok(n),
        Double::Null(()) => Ok(0.0),
        Double::Text(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.parse().map_err(serde::de::Error::custom),
        },
    }
}

fn enum_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct ConnectErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// Talks to plugins over plain HTTP/1.1 with pooled connections.
#[derive(Clone)]
pub struct PluginClient {
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Default for PluginClient {
    fn default() -> Self {
        Self::new()
    }
}

impl PluginClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        PluginClient { http }
    }

    /// `GET /healthz`: healthy on 200 only.
    pub async fn health(&self, base: &str, deadline: Instant) -> Health {
        let started = Instant::now();
        match self.get(&format!("{base}/healthz"), deadline).await {
            Ok((status, _)) => {
                let latency = Some(started.elapsed());
                if status == StatusCode::OK {
                    Health {
                        healthy: true,
                        latency,
                        error: None,
                    }
                } else {
                    Health {
                        healthy: false,
                        latency,
                        error: Some(CallError::Status(status.as_u16())),
                    }
                }
            }
            Err(e) => Health {
                healthy: false,
                latency: None,
                error: Some(e),
            },
        }
    }

    /// A plain GET of `url`: status and body. The `healthcheck` command asks the agent's
    /// own /healthz with it too.
    pub async fn get(
        &self,
        url: &str,
        deadline: Instant,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let request = Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        self.send(request, deadline).await
    }

    pub async fn plugin_info(
        &self,
        base: &str,
        deadline: Instant,
    ) -> Result<PluginInfo, CallError> {
        self.rpc(base, "GetPluginInfo", b"{}".to_vec(), deadline)
            .await
    }

    pub async fn projected_cost(
        &self,
        base: &str,
        region: &str,
        resource: &Resource,
        deadline: Instant,
    ) -> Result<ProjectedCost, CallError> {
        let mut body = serde_json::json!({
            "resource": {
                "provider": "aws",
                "resource_type": resource.resource_type,
                "sku": resource.sku,
                "region": region,
            }
        });
        if !resource.tags.is_empty() {
            body["resource"]["tags"] = serde_json::json!(resource.tags);
        }
        let body = serde_json::to_vec(&body).expect("JSON of strings");
        self.rpc(base, "GetProjectedCost", body, deadline).await
    }

    async fn rpc<T: for<'de> Deserialize<'de>>(
        &self,
        base: &str,
        method: &str,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<T, CallError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{base}/{SERVICE}/{method}"))
            .header("content-type", "application/json")
            .header("connect-protocol-version", "1")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let (status, bytes) = self.send(request, deadline).await?;
        decode(status, &bytes)
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| CallError::Transport(untrusted::error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError::Decode(untrusted::remote(&e.to_string())))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}

/// A Connect unary answer: the message on 200, else the error its body describes. Pure, so
/// the fuzz target `connect` runs it on any bytes; every string of the error has been made
/// safe to log ([`untrusted::remote`]).
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    status: StatusCode,
    body: &[u8],
) -> Result<T, CallError> {
    if status == StatusCode::OK {
        // A protobuf message in JSON is an object; serde would also read a struct from an
        // array (`[]` read as an answer of zeros, published as a price of 0).
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(CallError::Decode(
                "the answer is not a JSON object, as a protobuf message is".into(),
            ));
        }
        // serde's messages quote the offending input.
        serde_json::from_slice(body)
            .map_err(|e| CallError::Decode(untrusted::remote(&e.to_string())))
    } else {
        let parsed: ConnectErrorBody = serde_json::from_slice(body).unwrap_or_default();
        Err(CallError::Connect {
            code: parsed.code.map_or_else(
                || code_for_status(status.as_u16()).to_string(),
                |c| untrusted::remote(&c),
            ),
            message: untrusted::remote(&parsed.message.unwrap_or_default()),
            status: status.as_u16(),
        })
    }
}

/// The Connect protocol's mapping of HTTP status to code, for bodies that carry none.
fn code_for_status(status: u16) -> &'static str {
    match status {
        400 => "internal",
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "unimplemented",
        429 | 502 | 503 | 504 => "unavailable",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_is_not_an_object_is_malformed() {
        // Outside attack, round 2: `[]` was read as a cost of 0 and published.
        for body in ["[]", " [0.1, \"USD\", 7.5]", "null", "7", "\"x\"", ""] {
            let e = decode::<ProjectedCost>(StatusCode::OK, body.as_bytes()).unwrap_err();
            assert_eq!(e.code(), "malformed_response", "{body:?}");
        }
        assert!(decode::<ProjectedCost>(StatusCode::OK, b" \n{}").is_ok());
    }

    /// Complexity guard ([`crate::complexity`]): answers of n entries, OK and error.
    #[test]
    fn decoding_an_answer_is_linear_in_its_body() {
        let info = |n: usize| {
            let entries: Vec<String> = (0..n).map(|i| format!(r#""k{i}":"v""#)).collect();
            format!(r#"{{"version":"1","metadata":{{{}}}}}"#, entries.join(","))
        };
        let cost = |n: usize| {
            let m = r#"{"kind":"METRIC_KIND_CARBON_FOOTPRINT","value":1,"unit":"g"}"#;
            format!(
                r#"{{"currency":"USD","impactMetrics":[{}]}}"#,
                vec![m; n].join(",")
            )
        };
        let error = |n: usize| {
            format!(
                r#"{{"code":"internal","message":"{}"}}"#,
                "\\u00e9".repeat(n)
            )
        };
        let n = 2_000;
        crate::complexity::assert_linear(
            "n metadata entries",
            info(n).as_bytes(),
            info(4 * n).as_bytes(),
            |b| {
                decode::<PluginInfo>(StatusCode::OK, b).unwrap();
            },
        );
        crate::complexity::assert_linear(
            "n impact metrics",
            cost(n).as_bytes(),
            cost(4 * n).as_bytes(),
            |b| {
                decode::<ProjectedCost>(StatusCode::OK, b).unwrap();
            },
        );
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        crate::complexity::assert_linear(
            "an error of n escapes",
            error(n).as_bytes(),
            error(4 * n).as_bytes(),
            |b| {
                decode::<ProjectedCost>(status, b).unwrap_err();
            },
        );
    }

    #[test]
    fn reads_the_documented_cost_answer() {
        let c: ProjectedCost = serde_json::from_str(
            r#"{"unitPrice":0.0104,"currency":"USD","costPerMonth":7.592,
            "billingDetail":"On-demand Linux, Shared tenancy, 730 hrs/month",
            "impactMetrics":[{"kind":"METRIC_KIND_CARBON_FOOTPRINT","value":3507.6,"unit":"gCO2e"}],
            "costBreakdown":{"compute":7.592}}"#,
        )
        .unwrap();
        assert_eq!(c.unit_price, 0.0104);
        assert_eq!(c.cost_per_month, 7.592);
        assert_eq!(c.currency(), "USD");
        assert_eq!(c.carbon_grams(), Some(3507.6));
    }

    #[test]
    fn omitted_zero_fields_read_as_zero() {
        let c: ProjectedCost = serde_json::from_str(r#"{"currency":"USD"}"#).unwrap();
        assert_eq!((c.unit_price, c.cost_per_month), (0.0, 0.0));
        assert_eq!(c.carbon_grams(), None);
        let c: ProjectedCost = serde_json::from_str("{}").unwrap();
        assert_eq!(c.currency(), "USD");
    }

    #[test]
    fn unknown_fields_and_other_impact_kinds_are_ignored() {
        let c: ProjectedCost = serde_json::from_str(
            r#"{"costPerMonth":1,"growthType":"GROWTH_TYPE_LINEAR","expiresAt":"2026-01-01T00:00:00Z",
            "impactMetrics":[{"kind":"METRIC_KIND_ENERGY","value":5},{"kind":3,"value":9}],
            "pricingCategory":"PRICING_CATEGORY_STANDARD","metadata":{"a":"b"}}"#,
        )
        .unwrap();
        assert_eq!(c.cost_per_month, 1.0);
        assert_eq!(c.carbon_grams(), None);
    }

    #[test]
    fn doubles_as_strings_and_null_follow_protobuf_json() {
        let c: ProjectedCost =
            serde_json::from_str(r#"{"unitPrice":"0.5","costPerMonth":"NaN","currency":null}"#)
                .unwrap();
        assert_eq!(c.unit_price, 0.5);
        assert!(c.cost_per_month.is_nan());
        assert_eq!(c.currency(), "USD");
        let c: ProjectedCost = serde_json::from_str(r#"{"unitPrice":null}"#).unwrap();
        assert_eq!(c.unit_price, 0.0);
    }

    #[test]
    fn a_non_usd_currency_is_reported_as_such() {
        let c: ProjectedCost = serde_json::from_str(r#"{"currency":"EUR"}"#).unwrap();
        assert_eq!(c.currency(), "EUR");
    }

    #[test]
    fn plugin_info_region() {
        let i: PluginInfo = serde_json::from_str(
            r#"{"name":"finfocus-plugin-aws-public","version":"0.1.8","specVersion":"v0.6.0",
            "providers":["aws"],"metadata":{"region":"us-west-1","type":"public-pricing-fallback"}}"#,
        )
        .unwrap();
        assert_eq!(i.region(), Some("us-west-1"));
        for bad in ["", "US East", "us-east-1\n", "global"] {
            let i = PluginInfo {
                metadata: Some(BTreeMap::from([("region".into(), bad.into())])),
                ..PluginInfo::default()
            };
            assert_eq!(i.region(), None, "{bad:?}");
        }
        let i: PluginInfo = serde_json::from_str("{}").unwrap();
        assert_eq!(i.region(), None);
    }

    #[test]
    fn connect_codes_for_bare_statuses() {
        assert_eq!(code_for_status(503), "unavailable");
        assert_eq!(code_for_status(418), "unknown");
    }

    #[test]
    fn each_failure_has_its_own_code() {
        assert_eq!(CallError::Timeout.code(), "deadline_exceeded");
        assert_eq!(CallError::Transport("refused".into()).code(), "unavailable");
        assert_eq!(CallError::Status(404).code(), "unimplemented");
        assert_eq!(CallError::Decode("x".into()).code(), "malformed_response");
        let e = CallError::Connect {
            code: "not_found".into(),
            message: String::new(),
            status: 404,
        };
        assert_eq!(e.code(), "not_found");
    }

    #[test]
    fn non_finite_prices_are_not_numbers_to_publish() {
        for body in [
            r#"{"unitPrice":"NaN"}"#,
            r#"{"costPerMonth":"Infinity"}"#,
            r#"{"costPerMonth":"1e400"}"#,
            r#"{"impactMetrics":[{"kind":"METRIC_KIND_CARBON_FOOTPRINT","value":"-Infinity"}]}"#,
        ] {
            let c: ProjectedCost = serde_json::from_str(body).unwrap();
            assert!(!c.is_finite(), "{body}");
        }
        let c: ProjectedCost = serde_json::from_str(r#"{"costPerMonth":"1e300"}"#).unwrap();
        assert!(c.is_finite());
    }

    mod decoding {
        use super::*;
        use proptest::prelude::*;

        fn decode_all(bytes: &[u8]) {
            let _ = serde_json::from_slice::<ProjectedCost>(bytes);
            let _ = serde_json::from_slice::<PluginInfo>(bytes);
            let _ = serde_json::from_slice::<ConnectErrorBody>(bytes);
        }

        #[test]
        fn json_nested_deeper_than_any_answer_is_an_error_not_a_crash() {
            for depth in [1, 10, 127, 128, 129, 100_000] {
                let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                let inside = format!(r#"{{"impactMetrics":{nested}}}"#);
                decode_all(nested.as_bytes());
                decode_all(inside.as_bytes());
                // serde_json's recursion limit (128) ends it without using up the stack.
                if depth > 128 {
                    assert!(serde_json::from_str::<ProjectedCost>(&inside).is_err());
                }
            }
        }

        proptest! {
            #[test]
            fn no_bytes_make_the_decoders_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                decode_all(&bytes);
            }

            #[test]
            fn no_json_shaped_text_makes_the_decoders_panic(
                text in r#"[\[\]{}":,0-9a-zA-Z.eE+\- ]{0,200}"#
            ) {
                decode_all(text.as_bytes());
            }

            /// Any double a plugin sends, as a JSON number or as protobuf's string form, is
            /// read back as that double.
            #[test]
            fn doubles_round_trip_as_numbers_and_as_strings(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
                let number: ProjectedCost =
                    serde_json::from_str(&format!(r#"{{"costPerMonth":{x:?},"unitPrice":{x:?}}}"#)).unwrap();
                prop_assert_eq!(number.cost_per_month, x);
                prop_assert_eq!(number.unit_price, x);
                let string: ProjectedCost =
                    serde_json::from_str(&format!(r#"{{"costPerMonth":"{x:?}"}}"#)).unwrap();
                prop_assert_eq!(string.cost_per_month, x);
            }

            /// Whatever a plugin reports as its region is either a well-formed region name
            /// or nothing: never a new dimension value of another shape.
            #[test]
            fn a_reported_region_is_a_region_or_nothing(region in "\\PC{0,40}") {
                let body = serde_json::json!({"metadata": {"region": region}}).to_string();
                let info: PluginInfo = serde_json::from_str(&body).unwrap();
                if let Some(r) = info.region() {
                    prop_assert!(crate::config::is_region(r));
                    prop_assert!(r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                }
            }
        }
    }
}
