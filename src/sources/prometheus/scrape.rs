//! Fetches one endpoint's exposition text: over http or https (system trust roots), within
//! the target's deadline, and never more than [`MAX_BODY`] bytes, compressed or not: a
//! larger body is an error for that target, not an out-of-memory.
//!
//! [`Scraper::fetch`] only reads the bytes; [`decode`] (gunzip and UTF-8) is CPU work and
//! runs with the parse on the blocking pool, checking the same deadline, so a 31 KB gzip
//! body that inflates to 32 MiB never holds the runtime thread.

use std::io::Read;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::parse::Format;
use crate::untrusted;

/// The largest body read, after decompression: 100k series of exposition text fit well.
pub const MAX_BODY: usize = 32 << 20;
/// What Prometheus itself asks for: OpenMetrics first, then text 0.0.4.
const ACCEPTED: &str =
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Why a scrape failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    #[error("timed out")]
    Timeout,
    #[error("timed out while decompressing the body")]
    DecodeTimeout,
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("the body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("unreadable body: {0}")]
    Decode(String),
    #[error("the conversion stopped unexpectedly: {0}")]
    Internal(String),
}

/// One scrape's body as it came, before [`decode`].
#[derive(Debug)]
pub struct Fetched {
    pub raw: Vec<u8>,
    /// The body is gzip (Content-Encoding).
    pub gzip: bool,
    pub format: Format,
}

/// An HTTP/1.1 client for http and https endpoints, connections pooled between cycles.
#[derive(Clone)]
pub struct Scraper {
    http: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Scraper {
    pub fn new() -> Self {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        // No trust roots found is not fatal: plain-http targets still work, https ones fail
        // with the TLS error in their log line.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
            .unwrap_or_else(|_| {
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            });
        let connector = builder.https_or_http().enable_http1().build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Scraper { http }
    }

    /// GETs `url` within `deadline`.
    pub async fn fetch(&self, url: &str, deadline: Instant) -> Result<Fetched, ScrapeError> {
        let request = Request::get(url)
            .header(ACCEPT, ACCEPTED)
            .header(ACCEPT_ENCODING, "gzip")
            .body(Empty::new())
            .map_err(|e| ScrapeError::Transport(untrusted::remote(&e.to_string())))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| ScrapeError::Transport(untrusted::error_chain(&e)))?;
            let status = response.status();
            if status != StatusCode::OK {
                return Err(ScrapeError::Status(status.as_u16()));
            }
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                    .unwrap_or("")
                    .to_ascii_lowercase()
            };
            let format = if header(CONTENT_TYPE).starts_with("application/openmetrics-text") {
                Format::OpenMetrics
            } else {
                Format::Text
            };
            let gzip = header(CONTENT_ENCODING) == "gzip";
            // Refused unread when it says it is too large; else room for what it says, so
            // the body is not copied as its buffer grows (a 32 MiB body copied is 64 MiB).
            let length = header(CONTENT_LENGTH).parse::<usize>().ok();
            if length.is_some_and(|n| n > MAX_BODY) {
                return Err(ScrapeError::TooLarge);
            }
            let mut raw = Vec::with_capacity(length.unwrap_or(0));
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ScrapeError::Decode(untrusted::error_chain(&e)))?;
                if let Ok(data) = frame.into_data() {
                    if raw.len() + data.len() > MAX_BODY {
                        return Err(ScrapeError::TooLarge);
                    }
                    raw.extend_from_slice(&data);
                }
            }
            Ok(Fetched { raw, gzip, format })
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .unwrap_or(Err(ScrapeError::Timeout))
    }
}

/// A fetched body as text: gunzipped when it is gzip, invalid UTF-8 replaced. CPU work:
/// run it off the runtime thread; `stop` is asked every 64 KiB of output whether the
/// deadline has passed.
pub fn decode(fetched: Fetched, stop: impl FnMut() -> bool) -> Result<String, ScrapeError> {
    let bytes = if fetched.gzip {
        gunzip_until(&fetched.raw, stop)?
    } else {
        fetched.raw
    };
    // Moved, not copied, when it is valid: a 100k-series body is 12 MB.
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Decompresses at most [`MAX_BODY`] bytes: a small gzip bomb is a small error. Every
/// member is read, as gzip(1), Go and Python read a body of several (`gzip a; gzip b >>`);
/// bytes after the last member that begin no other are an error, not ignored.
#[cfg(test)]
fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, ScrapeError> {
    gunzip_until(compressed, || false)
}

/// [`gunzip`] that stops with [`ScrapeError::DecodeTimeout`] when `stop` says so.
fn gunzip_until(compressed: &[u8], mut stop: impl FnMut() -> bool) -> Result<Vec<u8>, ScrapeError> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(MAX_BODY as u64 + 1);
    let mut chunk = vec![0; 64 << 10];
    loop {
        if stop() {
            return Err(ScrapeError::DecodeTimeout);
        }
        let n = decoder
            .read(&mut chunk)
            .map_err(|e| ScrapeError::Decode(format!("gzip: {e}")))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    if out.len() > MAX_BODY {
        return Err(ScrapeError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_body_of_several_gzip_members_is_read_whole() {
        // Outside attack, round 2: only the first member was read, the rest silently lost.
        let body = [gzip(b"a 1\n"), gzip(b"b 2\n"), gzip(b"c 3\n")].concat();
        assert_eq!(gunzip(&body).unwrap(), b"a 1\nb 2\nc 3\n");
        let trailing = [gzip(b"a 1\n"), b"not gzip".to_vec()].concat();
        assert!(matches!(gunzip(&trailing), Err(ScrapeError::Decode(_))));
    }

    #[test]
    fn gzip_bodies_are_read() {
        assert_eq!(gunzip(&gzip(b"up 1\n")).unwrap(), b"up 1\n");
        assert!(matches!(gunzip(b"not gzip"), Err(ScrapeError::Decode(_))));
    }

    #[test]
    fn a_gzip_bomb_is_refused_after_the_limit_not_decompressed_whole() {
        let bomb = gzip(&vec![b'a'; MAX_BODY + 10]);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(gunzip(&bomb), Err(ScrapeError::TooLarge));
    }
}
