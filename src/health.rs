//! The agent's health listener on HEALTH_ADDR, and the `healthcheck` command that asks it.
//!
//! `GET /healthz` answers 200 or 503 with a JSON reason, for Docker's HEALTHCHECK, ECS
//! container health checks and Kubernetes probes; `GET /metrics` is the agent's own state in
//! Prometheus text. Both read [`Stats`], which the cycles write. The listener runs beside the
//! scheduler on the same runtime; it holds no state of its own.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::logging;
use crate::schedule::{Schedule, Ticks};
use crate::sources::plugins::client::{CallError, PluginClient};
use crate::stats::SharedStats;

/// How long `healthcheck` waits for the agent: well inside Docker's default 30 s timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections served at once. Past it a new connection is closed as soon as it is
/// accepted: a flood costs one descriptor for a moment instead of one each, so the plugin
/// probes keep theirs, and a burst is cleared at once rather than queued.
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request headers, on a new or a kept-alive connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// No connection lives longer, whatever it does: a probe or a scrape takes milliseconds.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on HEALTH_ADDR={addr}: {source}. Fix: choose a free port, or set HEALTH_ADDR empty to disable the listener"
)]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds HEALTH_ADDR now, so a taken port stops the agent at start rather than later.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Serves /healthz and /metrics on `listener` until the process ends.
pub fn serve(listener: TcpListener, stats: SharedStats, schedule: Schedule) {
    let ticks = Arc::new(TickCache::new(schedule));
    if let Ok(addr) = listener.local_addr() {
        info!(health_addr = %addr, "health listener ready: /healthz and /metrics");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    debug!(error = %e, "health listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(
                    max = MAX_CONNECTIONS,
                    "health listener at its connection cap; connection closed"
                );
                continue;
            };
            let (stats, ticks) = (stats.clone(), ticks.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = respond(&request, &stats, &ticks, SystemTime::now());
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                    Ok(Err(e)) => debug!(error = %e, "health connection ended with an error"),
                    Err(_) => debug!("health connection closed at its lifetime limit"),
                    Ok(Ok(())) => {}
                }
            });
        }
    });
}

/// The schedule's ticks around now, searched again only once now passes the next tick: a
/// sparse schedule's search can take a while, and /healthz is asked every few seconds.
struct TickCache {
    schedule: Schedule,
    ticks: Mutex<Option<Ticks>>,
}

impl TickCache {
    fn new(schedule: Schedule) -> Self {
        TickCache {
            schedule,
            ticks: Mutex::new(None),
        }
    }

    fn around(&self, now: SystemTime) -> Ticks {
        let mut cached = self.ticks.lock().expect("ticks lock");
        match *cached {
            Some(ticks) if ticks.cover(now) => ticks,
            _ => *cached.insert(self.schedule.ticks_around(now)),
        }
    }
}

fn respond<B>(
    request: &Request<B>,
    stats: &SharedStats,
    ticks: &TickCache,
    now: SystemTime,
) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".into(),
        );
    }
    let mut stats = stats.lock().expect("stats lock").clone();
    stats.log_lines_dropped = logging::dropped_lines() as u64;
    match request.uri().path() {
        "/healthz" => {
            let verdict = stats.verdict(&ticks.around(now));
            let status = if verdict.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", verdict.body + "\n")
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            stats.prometheus(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /healthz or /metrics\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

/// Why `healthcheck` failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "the health listener is disabled (HEALTH_ADDR is empty); there is nothing to ask. Fix: set HEALTH_ADDR, or turn the container health check off"
    )]
    Disabled,
    #[error("no answer from the agent at {url}: {source}")]
    Unreachable { url: String, source: CallError },
    #[error("the agent is unhealthy: {body}")]
    Unhealthy { body: String },
}

/// Asks the running agent's /healthz; Ok holds its answer when that is 200.
pub async fn check(addr: Option<SocketAddr>) -> Result<String, CheckError> {
    let addr = addr.ok_or(CheckError::Disabled)?;
    let url = format!("http://{}/healthz", reachable(addr));
    let answer = PluginClient::new()
        .get(&url, Instant::now() + CHECK_TIMEOUT)
        .await;
    match answer {
        Ok((StatusCode::OK, body)) => Ok(String::from_utf8_lossy(&body).trim().to_string()),
        Ok((status, body)) => Err(CheckError::Unhealthy {
            body: format!(
                "HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body).trim()
            ),
        }),
        Err(source) => Err(CheckError::Unreachable { url, source }),
    }
}

/// A listener on 0.0.0.0 or [::] is asked on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::cloudwatch::PublishReport;
    use crate::stats::Stats;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    fn schedule() -> Schedule {
        Schedule::parse("0 * * * * *").unwrap()
    }

    fn ticks() -> TickCache {
        TickCache::new(schedule())
    }

    fn text(r: Response<Full<Bytes>>) -> (StatusCode, String, String) {
        let status = r.status();
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        let body =
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(r.into_body()))
                .unwrap()
                .unwrap()
                .to_bytes();
        (status, kind, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn healthz_is_200_then_503_with_a_json_reason() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let stats = Stats::shared(start);
        let ticks = ticks();
        let (status, kind, body) = text(respond(&get("/healthz"), &stats, &ticks, start));
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::OK, "application/json")
        );
        assert!(body.contains("\"status\":\"ok\""), "{body}");

        // Started on a whole minute: by +120 s the tick at +60 s is due.
        let later = start + Duration::from_secs(120);
        let (status, _, body) = text(respond(&get("/healthz"), &stats, &ticks, later));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "unhealthy");
        assert_eq!(json["due_tick"], "2027-01-15T08:01:00Z", "{body}");

        stats.lock().unwrap().record_cycle(
            0,
            Vec::new(),
            Duration::from_secs(1),
            &PublishReport::default(),
            crate::buffer::Gauges::default(),
            (start + Duration::from_secs(120), later),
        );
        let (status, _, _) = text(respond(&get("/healthz"), &stats, &ticks, later));
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn metrics_is_prometheus_text() {
        let stats = Stats::shared(SystemTime::now());
        let (status, kind, body) = text(respond(
            &get("/metrics"),
            &stats,
            &ticks(),
            SystemTime::now(),
        ));
        assert_eq!(status, StatusCode::OK);
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        assert!(
            body.contains("cloudwatch_publisher_cycles_total 0"),
            "{body}"
        );
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let stats = Stats::shared(SystemTime::now());
        let now = SystemTime::now();
        assert_eq!(
            respond(&get("/"), &stats, &ticks(), now).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/healthz").body(()).unwrap();
        assert_eq!(
            respond(&post, &stats, &ticks(), now).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn unspecified_listen_addresses_are_asked_on_loopback() {
        let r = |a: &str| reachable(a.parse().unwrap()).to_string();
        assert_eq!(r("0.0.0.0:8686"), "127.0.0.1:8686");
        assert_eq!(r("[::]:8686"), "[::1]:8686");
        assert_eq!(r("10.0.0.5:9000"), "10.0.0.5:9000");
    }

    #[tokio::test]
    async fn healthcheck_asks_a_real_listener() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve(listener, Stats::shared(SystemTime::now()), schedule());
        let body = check(Some(addr)).await.expect("healthy while starting");
        assert!(body.contains("\"status\":\"ok\""), "{body}");

        let taken = bind(addr).await.expect_err("port is taken");
        assert!(
            taken.to_string().contains("HEALTH_ADDR=127.0.0.1:"),
            "{taken}"
        );
        assert!(matches!(check(None).await, Err(CheckError::Disabled)));
    }

    #[tokio::test]
    async fn healthcheck_fails_when_nothing_listens() {
        let free = bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let e = check(Some(free)).await.expect_err("nothing listens");
        assert!(matches!(e, CheckError::Unreachable { .. }), "{e}");
    }
}
