//! The agent's health listener on HEALTH_ADDR, and the `healthcheck` command that asks it.
//!
//! `GET /healthz` answers 200 or 503 with a JSON reason, for Docker's HEALTHCHECK, ECS
//! container health checks and Kubernetes probes; `GET /metrics` is the agent's own state in
//! Prometheus text. Both read [`Stats`](crate::stats::Stats), which the cycles write. The
//! listener runs beside the scheduler on the same runtime; it holds no state of its own
//! beyond its open connections.
//!
//! It speaks just enough HTTP/1.1 for probes and scrapers: one request per connection, a
//! head of at most [`MAX_REQUEST_HEAD`] bytes read within [`HEADER_TIMEOUT`] of the accept,
//! no body, and an answer with `connection: close`. Reading the head itself (rather than
//! through hyper's server) is what lets the listener see which connections have sent their
//! request and which only hold a slot: when all [`MAX_CONNECTIONS`] are taken, a newcomer
//! closes the one that has waited longest without sending a request, so a slowloris that
//! keeps every slot busy cannot turn a real probe away (issue 21, item 8). The parsing and
//! answering are pure functions of the bytes ([`HeadReader`], [`answer`]), which the fuzz
//! target `health` calls directly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::logging;
use crate::schedule::{Schedule, Ticks};
use crate::sources::plugins::client::{CallError, PluginClient};
use crate::stats::SharedStats;

/// How long `healthcheck` waits for the agent: well inside Docker's default 30 s timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections held at once. A newcomer past it closes the connection that has waited
/// longest without sending its request: a flood costs the agent at most this many
/// descriptors, so the plugin probes keep theirs, and a probe, which sends its request at
/// once, is served before the flood's next connection can close it.
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long from the accept to send its whole request head, however it
/// trickles it; then it is answered 408 and closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A request head longer than this is answered 431 unread: a probe's is about 150 bytes.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;
/// No connection lives longer, whatever it does: what is left of it after the head is the
/// time a slow reader gets for the answer.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
/// How often the "listener full" warning is repeated while a flood lasts.
const WARN_EVERY: Duration = Duration::from_secs(60);

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
    let slots = Arc::new(Slots::default());
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
            let slot = slots.take(Instant::now());
            tokio::spawn(connection(stream, slot, stats.clone(), ticks.clone()));
            // The new connection reads what it was sent before the next accept, so a
            // flood's accepts cannot run ahead of a probe whose request is already in.
            tokio::task::yield_now().await;
        }
    });
}

/// One connection: its request head within [`HEADER_TIMEOUT`], its answer, then close.
async fn connection(stream: TcpStream, mut slot: Slot, stats: SharedStats, ticks: Arc<TickCache>) {
    let head = tokio::select! {
        biased;
        _ = &mut slot.evicted => return,
        read = tokio::time::timeout_at(slot.accepted + HEADER_TIMEOUT, read_head(&stream)) => read,
    };
    let head = match head {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => {
            debug!(error = %e, "health connection closed before a whole request");
            return;
        }
        Err(_elapsed) => Err(Refusal::Timeout),
    };
    slot.answering();
    let (bytes, refused) = answer(
        head.as_deref().map_err(|&r| r),
        &stats,
        &ticks,
        SystemTime::now(),
    );
    if let Some(refusal) = refused {
        if let Some(reason) = refusal.dropped() {
            count(reason);
        }
        debug!(status = refusal.status().as_u16(), "health request refused");
    }
    let deadline = slot.accepted + CONNECTION_LIFETIME;
    tokio::select! {
        biased;
        _ = &mut slot.evicted => {}
        written = tokio::time::timeout_at(deadline, write_all(&stream, &bytes)) => match written {
            Ok(Err(e)) => debug!(error = %e, "health answer not delivered"),
            Err(_) => debug!("health connection closed at its lifetime limit"),
            Ok(Ok(())) => {}
        },
    }
}

/// Reads until the request head is complete or too long; Err when the client goes away.
async fn read_head(stream: &TcpStream) -> std::io::Result<Result<Vec<u8>, Refusal>> {
    let mut reader = HeadReader::default();
    let mut chunk = [0u8; 1024];
    loop {
        stream.readable().await?;
        let room = reader.room().min(chunk.len());
        match stream.try_read(&mut chunk[..room]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                if let Some(head) = reader.push(&chunk[..n]) {
                    return Ok(head);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The open connections, and which of them a newcomer closes when all slots are taken.
#[derive(Default)]
struct Slots {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: Vec<Entry>,
    /// Evictions not yet reported in a warning, and when the last warning was.
    unreported: u64,
    warned: Option<Instant>,
}

struct Entry {
    id: u64,
    accepted: Instant,
    /// Still reading its request head: the first to go when room is needed.
    reading: bool,
    /// Dropping it tells the connection's task to close.
    _evict: oneshot::Sender<()>,
}

/// A connection's place in [`Slots`], given back when the connection ends.
struct Slot {
    id: u64,
    accepted: Instant,
    slots: Arc<Slots>,
    evicted: oneshot::Receiver<()>,
}

impl Slots {
    /// A slot for a connection accepted at `now`; when all are taken, the connection that
    /// has waited longest without sending a request (else the oldest still being answered)
    /// is closed to make room.
    fn take(self: &Arc<Self>, now: Instant) -> Slot {
        let (evict, evicted) = oneshot::channel();
        let mut table = self.table.lock().expect("slots lock");
        if table.open.len() >= MAX_CONNECTIONS {
            let oldest = table
                .open
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| (!e.reading, e.accepted))
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                table.open.swap_remove(i);
                count(Dropped::Evicted);
                table.unreported += 1;
                if table.warned.is_none_or(|at| now >= at + WARN_EVERY) {
                    warn!(
                        evicted = table.unreported,
                        max_connections = MAX_CONNECTIONS,
                        "health listener full: closed the connections that had not sent a request for the longest, to serve new ones; a client is holding connections open without sending requests"
                    );
                    table.unreported = 0;
                    table.warned = Some(now);
                }
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        table.open.push(Entry {
            id,
            accepted: now,
            reading: true,
            _evict: evict,
        });
        Slot {
            id,
            accepted: now,
            slots: self.clone(),
            evicted,
        }
    }
}

impl Slot {
    /// The request is in: this connection is evicted only when none is still reading.
    fn answering(&self) {
        let mut table = self.slots.table.lock().expect("slots lock");
        if let Some(entry) = table.open.iter_mut().find(|e| e.id == self.id) {
            entry.reading = false;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.slots.table.lock().expect("slots lock");
        if let Some(i) = table.open.iter().position(|e| e.id == self.id) {
            table.open.swap_remove(i);
        }
    }
}

/// Why a connection was closed without the answer it asked for, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    Evicted,
    Timeout,
    TooLarge,
    Malformed,
}

const DROP_REASONS: [(Dropped, &str); 4] = [
    (Dropped::Evicted, "evicted"),
    (Dropped::Timeout, "timeout"),
    (Dropped::TooLarge, "too_large"),
    (Dropped::Malformed, "malformed"),
];

static DROPPED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn count(reason: Dropped) {
    DROPPED[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// The listener's own counters, in the Prometheus text of [`Stats::prometheus`](crate::stats::Stats::prometheus).
fn dropped_text() -> String {
    let mut out = String::from(
        "# HELP cloudwatch_publisher_health_connections_dropped_total Health listener connections closed without the answer they asked for: evicted to make room for a new one, request head not sent within 2 s, head over 8 KiB, or not an HTTP/1 request.\n\
         # TYPE cloudwatch_publisher_health_connections_dropped_total counter\n",
    );
    for (reason, label) in DROP_REASONS {
        let n = DROPPED[reason as usize].load(Ordering::Relaxed);
        out.push_str(&format!(
            "cloudwatch_publisher_health_connections_dropped_total{{reason=\"{label}\"}} {n}\n"
        ));
    }
    out
}

/// A request head as it arrives, read by read; the listener and the fuzz target feed it.
#[derive(Default)]
pub(crate) struct HeadReader {
    buf: Vec<u8>,
    /// Where the search for the blank line ending the head resumes.
    searched: usize,
}

impl HeadReader {
    /// How many more bytes the head may have.
    pub(crate) fn room(&self) -> usize {
        MAX_REQUEST_HEAD - self.buf.len()
    }

    /// Adds what one read returned (at most [`Self::room`] bytes; more is cut off): Some
    /// once the head is complete (the bytes up to and including its blank line) or too
    /// long, None while more is needed. Linear in the bytes pushed: each byte is searched
    /// at most three times.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Option<Result<Vec<u8>, Refusal>> {
        let take = chunk.len().min(self.room());
        self.buf.extend_from_slice(&chunk[..take]);
        if let Some(end) = head_end(&self.buf, self.searched) {
            self.buf.truncate(end);
            return Some(Ok(std::mem::take(&mut self.buf)));
        }
        // The blank line may straddle this read and the next: its first two bytes again.
        self.searched = self.buf.len().saturating_sub(2);
        (self.room() == 0).then_some(Err(Refusal::TooLarge))
    }
}

/// The index just past the blank line (`\r\n\r\n`, or bare `\n\n`) that ends a request
/// head in `buf`, looking from `from` on.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(at) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + at;
        match buf.get(nl + 1..nl + 3) {
            Some([b'\n', _]) => return Some(nl + 2),
            Some([b'\r', b'\n']) => return Some(nl + 3),
            None if buf.get(nl + 1) == Some(&b'\n') => return Some(nl + 2),
            _ => i = nl + 1,
        }
    }
    None
}

/// Why a request gets an error status instead of what it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The head was not complete within [`HEADER_TIMEOUT`].
    Timeout,
    /// The head passed [`MAX_REQUEST_HEAD`].
    TooLarge,
    /// Not an HTTP/1 request line.
    Malformed,
    /// HTTP/2 or later (a prior-knowledge preface, say).
    Version,
    /// A method other than GET and HEAD.
    Method,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Timeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::Malformed => StatusCode::BAD_REQUEST,
            Refusal::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Refusal::Method => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// How `/metrics` counts it; a wrong method is answered, not dropped.
    fn dropped(self) -> Option<Dropped> {
        match self {
            Refusal::Timeout => Some(Dropped::Timeout),
            Refusal::TooLarge => Some(Dropped::TooLarge),
            Refusal::Malformed | Refusal::Version => Some(Dropped::Malformed),
            Refusal::Method => None,
        }
    }
}

/// What a request line asks for.
#[derive(Debug, PartialEq)]
pub(crate) struct Request<'a> {
    /// HEAD: the answer's head without its body.
    pub head_only: bool,
    /// The target's path, without query or fragment.
    pub path: &'a [u8],
}

/// Reads the request line of a complete head; the header fields are not needed.
pub(crate) fn parse(head: &[u8]) -> Result<Request<'_>, Refusal> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    match version {
        b"HTTP/1.1" | b"HTTP/1.0" => {}
        v if v.starts_with(b"HTTP/") && v.len() > 5 && v[5].is_ascii_digit() && v[5] > b'1' => {
            return Err(Refusal::Version);
        }
        _ => return Err(Refusal::Malformed),
    }
    // RFC 9110's token characters: anything else is not a method at all.
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if method.is_empty() || !method.iter().all(token) {
        return Err(Refusal::Malformed);
    }
    if target.is_empty() || !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::Malformed);
    }
    let head_only = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Err(Refusal::Method),
    };
    Ok(Request {
        head_only,
        path: path_of(target).ok_or(Refusal::Malformed)?,
    })
}

/// The path of an origin-form (`/healthz?x`) or absolute-form (`http://host/healthz`)
/// target; None for any other form.
fn path_of(target: &[u8]) -> Option<&[u8]> {
    let path = if target.starts_with(b"/") {
        target
    } else {
        let rest = [&b"http://"[..], b"https://"]
            .iter()
            .find_map(|scheme| strip_prefix_ignore_case(target, scheme))?;
        let at = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
        match &rest[at..] {
            [] => b"/",
            path => path,
        }
    };
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    Some(&path[..end])
}

fn strip_prefix_ignore_case<'a>(text: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &text[prefix.len()..])
}

/// The bytes a connection writes back for its request head (or the reason it has none),
/// and the refusal to count when it is one.
pub(crate) fn answer(
    head: Result<&[u8], Refusal>,
    stats: &SharedStats,
    ticks: &TickCache,
    now: SystemTime,
) -> (Vec<u8>, Option<Refusal>) {
    match head.and_then(parse) {
        Ok(request) => (
            respond(&request, stats, ticks, now).encode(request.head_only),
            None,
        ),
        Err(refusal) => (refused(refusal).encode(false), Some(refusal)),
    }
}

/// An answer before it is written: the listener's statuses are 200, 503 (`/healthz`), 404,
/// and the refusals' 400, 405, 408, 431 and 505.
pub(crate) struct Reply {
    pub status: StatusCode,
    content_type: &'static str,
    body: String,
}

impl Reply {
    /// The whole answer: status line, header fields, and the body unless `head_only`.
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.content_type,
            self.body.len(),
        );
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            out.push_str("allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn refused(refusal: Refusal) -> Reply {
    let body = match refusal {
        Refusal::Timeout => "the request head did not arrive within 2 s\n",
        Refusal::TooLarge => "the request head is over 8 KiB\n",
        Refusal::Malformed => "not an HTTP/1 request: try GET /healthz or GET /metrics\n",
        Refusal::Version => "HTTP/1.1 only\n",
        Refusal::Method => "use GET\n",
    };
    Reply {
        status: refusal.status(),
        content_type: TEXT,
        body: body.into(),
    }
}

/// The schedule's ticks around now, searched again only once now passes the next tick: a
/// sparse schedule's search can take a while, and /healthz is asked every few seconds.
pub(crate) struct TickCache {
    schedule: Schedule,
    ticks: Mutex<Option<Ticks>>,
}

impl TickCache {
    pub(crate) fn new(schedule: Schedule) -> Self {
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

fn respond(request: &Request, stats: &SharedStats, ticks: &TickCache, now: SystemTime) -> Reply {
    let mut stats = stats.lock().expect("stats lock").clone();
    stats.log_lines_dropped = logging::dropped_lines() as u64;
    match request.path {
        b"/healthz" => {
            let verdict = stats.verdict(&ticks.around(now));
            let status = if verdict.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Reply {
                status,
                content_type: "application/json",
                body: verdict.body + "\n",
            }
        }
        b"/metrics" => Reply {
            status: StatusCode::OK,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: stats.prometheus() + &dropped_text(),
        },
        _ => Reply {
            status: StatusCode::NOT_FOUND,
            content_type: TEXT,
            body: "not found: try /healthz or /metrics\n".into(),
        },
    }
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

    /// Complexity guard ([`crate::complexity`]): a head of n bytes, fed a byte at a time
    /// (the slowloris shape: the search resumes, never restarts) and whole.
    #[test]
    fn reading_a_head_is_linear_in_its_bytes() {
        let head = |n: usize| format!("GET /healthz HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(n));
        let (small, large) = (head(300), head(1_200));
        assert!(large.len() < MAX_REQUEST_HEAD);
        for chunk in [1, 4096] {
            crate::complexity::assert_linear(
                &format!("a head read {chunk} bytes at a time"),
                small.as_bytes(),
                large.as_bytes(),
                |bytes| {
                    // Many heads a run: one takes microseconds.
                    for _ in 0..200 {
                        let mut reader = HeadReader::default();
                        let done = bytes.chunks(chunk).find_map(|c| reader.push(c));
                        let head = done.expect("complete").expect("accepted");
                        assert_eq!(head.len(), bytes.len());
                        assert!(parse(&head).is_ok());
                    }
                },
            );
        }
    }

    fn schedule() -> Schedule {
        Schedule::parse("0 * * * * *").unwrap()
    }

    fn ticks() -> TickCache {
        TickCache::new(schedule())
    }

    /// Status, content type and body of the answer to `head`, as a client reads them.
    fn exchange(
        head: &str,
        stats: &SharedStats,
        ticks: &TickCache,
        now: SystemTime,
    ) -> (u16, String, String) {
        let (bytes, _) = answer(Ok(head.as_bytes()), stats, ticks, now);
        split(&bytes)
    }

    fn split(bytes: &[u8]) -> (u16, String, String) {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_string)
        };
        let length: usize = field("content-length: ").unwrap().parse().unwrap();
        assert_eq!(field("connection: ").as_deref(), Some("close"));
        if !head.starts_with("HTTP/1.1 200") || !body.is_empty() {
            assert_eq!(length, body.len(), "{text}");
        }
        (status, field("content-type: ").unwrap(), body.to_string())
    }

    fn get(path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:8686\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
    }

    #[test]
    fn healthz_is_200_then_503_with_a_json_reason() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let stats = Stats::shared(start);
        let ticks = ticks();
        let (status, kind, body) = exchange(&get("/healthz"), &stats, &ticks, start);
        assert_eq!((status, kind.as_str()), (200, "application/json"));
        assert!(body.contains("\"status\":\"ok\""), "{body}");

        // Started on a whole minute: by +120 s the tick at +60 s is due.
        let later = start + Duration::from_secs(120);
        let (status, _, body) = exchange(&get("/healthz"), &stats, &ticks, later);
        assert_eq!(status, 503);
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
        let (status, _, _) = exchange(&get("/healthz"), &stats, &ticks, later);
        assert_eq!(status, 200);
    }

    #[test]
    fn metrics_is_prometheus_text_with_the_listeners_own_drops() {
        let stats = Stats::shared(SystemTime::now());
        let (status, kind, body) = exchange(&get("/metrics"), &stats, &ticks(), SystemTime::now());
        assert_eq!(status, 200);
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        assert!(
            body.contains("cloudwatch_publisher_cycles_total 0"),
            "{body}"
        );
        for reason in ["evicted", "timeout", "too_large", "malformed"] {
            let sample = format!(
                "cloudwatch_publisher_health_connections_dropped_total{{reason=\"{reason}\"}} "
            );
            assert!(body.contains(&sample), "{body}");
        }
    }

    #[test]
    fn other_paths_methods_and_versions_are_refused_with_their_status() {
        let stats = Stats::shared(SystemTime::now());
        let now = SystemTime::now();
        let status = |head: &str| exchange(head, &stats, &ticks(), now).0;
        assert_eq!(status(&get("/")), 404);
        assert_eq!(status(&get("/healthz/")), 404);
        assert_eq!(status("POST /healthz HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("get /healthz HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
        for malformed in [
            "\r\n\r\n",
            "GET\r\n\r\n",
            "GET /healthz\r\n\r\n",
            "GET  /healthz HTTP/1.1\r\n\r\n",
            "GET /healthz HTTP/1.1 x\r\n\r\n",
            "GET /healthz HTTP/1.2\r\n\r\n",
            "GET healthz HTTP/1.1\r\n\r\n",
            "GET ftp://h/healthz HTTP/1.1\r\n\r\n",
            "G(T /healthz HTTP/1.1\r\n\r\n",
            "GET /he\x7flthz HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(status(malformed), 400, "{malformed:?}");
        }
        let (bytes, refused) = answer(Ok(b"DELETE / HTTP/1.1\r\n\r\n"), &stats, &ticks(), now);
        assert_eq!(refused, Some(Refusal::Method));
        assert!(
            String::from_utf8(bytes)
                .unwrap()
                .contains("\r\nallow: GET, HEAD\r\n")
        );
    }

    #[test]
    fn a_request_is_read_in_its_usual_forms() {
        let stats = Stats::shared(SystemTime::now());
        let now = SystemTime::now();
        let status = |head: &str| exchange(head, &stats, &ticks(), now).0;
        assert_eq!(status("GET /healthz HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status("GET /healthz?verbose=1 HTTP/1.1\r\n\r\n"), 200);
        assert_eq!(status("GET /healthz\n\n"), 400);
        assert_eq!(status("GET /healthz HTTP/1.1\n\n"), 200);
        assert_eq!(
            status("GET http://10.0.0.5:8686/healthz HTTP/1.1\r\n\r\n"),
            200
        );
        assert_eq!(status("GET HTTP://h/metrics#x HTTP/1.1\r\n\r\n"), 200);
        assert_eq!(status("GET http://h HTTP/1.1\r\n\r\n"), 404);
        // HEAD: the same head, content-length included, and no body.
        let (bytes, _) = answer(Ok(b"HEAD /healthz HTTP/1.1\r\n\r\n"), &stats, &ticks(), now);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert!(!text.contains("content-length: 0\r\n"), "{text}");
    }

    #[test]
    fn a_head_is_found_however_the_reads_split_it() {
        let head = get("/healthz");
        for split in 1..head.len() {
            let mut reader = HeadReader::default();
            let mut done = None;
            for chunk in head.as_bytes().chunks(split) {
                assert!(done.is_none(), "nothing after the head is asked for");
                done = reader.push(chunk);
            }
            assert_eq!(
                done,
                Some(Ok(head.clone().into_bytes())),
                "reads of {split}"
            );
        }
        // What follows the blank line (a body, a pipelined request) is not part of it.
        let mut reader = HeadReader::default();
        let done = reader.push(b"GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n");
        assert_eq!(done, Some(Ok(b"GET / HTTP/1.1\r\n\r\n".to_vec())));
    }

    #[test]
    fn a_head_over_8_kib_is_refused_431_and_never_held_longer() {
        let mut reader = HeadReader::default();
        let field = format!("X-Pad: {}\r\n", "a".repeat(1000));
        let mut done = reader.push(b"GET /healthz HTTP/1.1\r\n");
        while done.is_none() {
            assert!(reader.buf.len() < MAX_REQUEST_HEAD);
            done = reader.push(field.as_bytes());
        }
        assert_eq!(reader.buf.len(), MAX_REQUEST_HEAD);
        assert_eq!(done, Some(Err(Refusal::TooLarge)));
        let (bytes, refused) = answer(
            Err(Refusal::TooLarge),
            &Stats::shared(SystemTime::now()),
            &ticks(),
            SystemTime::now(),
        );
        assert_eq!(refused, Some(Refusal::TooLarge));
        assert!(bytes.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        // A head of exactly the limit is read.
        let mut reader = HeadReader::default();
        let head = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "b".repeat(MAX_REQUEST_HEAD - 23)
        );
        assert_eq!(head.len(), MAX_REQUEST_HEAD);
        assert_eq!(reader.push(head.as_bytes()), Some(Ok(head.into_bytes())));
    }

    #[test]
    fn a_newcomer_closes_the_connection_that_waited_longest_without_a_request() {
        let slots = Arc::new(Slots::default());
        let t0 = Instant::now();
        let mut held: Vec<Slot> = (0..MAX_CONNECTIONS as u64)
            .map(|i| slots.take(t0 + Duration::from_millis(i)))
            .collect();
        // The oldest has sent its request and is being answered: the next oldest goes.
        held[0].answering();
        let probe = slots.take(t0 + Duration::from_secs(1));
        assert!(
            held[0]
                .evicted
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        assert!(
            held[1]
                .evicted
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        assert!(
            held[2]
                .evicted
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(slots.table.lock().unwrap().open.len(), MAX_CONNECTIONS);
        // An evicted connection that ends gives back nothing of anyone else's.
        drop(held.remove(1));
        assert_eq!(slots.table.lock().unwrap().open.len(), MAX_CONNECTIONS);
        drop(probe);
        assert_eq!(slots.table.lock().unwrap().open.len(), MAX_CONNECTIONS - 1);
        // All being answered: the oldest of them goes.
        let refill = slots.take(t0 + Duration::from_secs(2));
        for slot in held.iter().chain([&refill]) {
            slot.answering();
        }
        let _next = slots.take(t0 + Duration::from_secs(3));
        assert!(
            held[0]
                .evicted
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        assert!(
            held[1]
                .evicted
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
    }

    /// A client that sends a byte every 100 ms is never idle, and still is answered 408 and
    /// closed at 2 s from the accept.
    #[tokio::test]
    async fn a_trickled_head_is_cut_at_two_seconds_with_408() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve(listener, Stats::shared(SystemTime::now()), schedule());
        let (cut, answer) = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let opened = std::time::Instant::now();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            let mut answer = Vec::new();
            let mut buf = [0; 512];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if s.write_all(b"X").is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            (opened.elapsed(), answer)
        })
        .await
        .unwrap();
        assert!(
            cut >= Duration::from_millis(1900) && cut < Duration::from_secs(3),
            "{cut:?}"
        );
        let text = String::from_utf8(answer).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("the request head did not arrive within 2 s\n"),
            "{text}"
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

    /// A slowloris client on its own threads: `connections` sockets, each sending half a
    /// request head and then a byte every 100 ms, and reconnecting as soon as the listener
    /// drops it. Returns once every socket has connected once; dropping the flood stops it.
    struct Slowloris {
        stop: Arc<std::sync::atomic::AtomicBool>,
        threads: Vec<std::thread::JoinHandle<()>>,
    }

    impl Slowloris {
        fn start(addr: SocketAddr, connections: usize) -> Slowloris {
            use std::io::{Read, Write};
            use std::sync::atomic::{AtomicBool, Ordering};
            let stop = Arc::new(AtomicBool::new(false));
            let connected = Arc::new(std::sync::Barrier::new(connections + 1));
            let threads = (0..connections)
                .map(|_| {
                    let (stop, connected) = (stop.clone(), connected.clone());
                    std::thread::spawn(move || {
                        let mut first = true;
                        while !stop.load(Ordering::Relaxed) {
                            let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                                continue;
                            };
                            if std::mem::take(&mut first) {
                                connected.wait();
                            }
                            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                            let mut sent = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n");
                            // A byte per read timeout until the listener closes the socket.
                            while sent.is_ok() && !stop.load(Ordering::Relaxed) {
                                match s.read(&mut [0; 512]) {
                                    Ok(_) => break,
                                    Err(e)
                                        if e.kind() == std::io::ErrorKind::WouldBlock
                                            || e.kind() == std::io::ErrorKind::TimedOut =>
                                    {
                                        sent = s.write_all(b"X");
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                    })
                })
                .collect();
            connected.wait();
            Slowloris { stop, threads }
        }
    }

    impl Drop for Slowloris {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }

    /// Issue 21 item 8: more half-sent request heads than the listener has slots, each
    /// reconnecting as soon as it is dropped. Every one of 20 health checks must still be
    /// answered (before the fix, the newcomer was closed whenever the slots were full).
    #[tokio::test]
    async fn healthcheck_is_answered_while_slowloris_holds_every_slot() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve(listener, Stats::shared(SystemTime::now()), schedule());
        let flood = Slowloris::start(addr, MAX_CONNECTIONS + 8);
        let mut answered = 0;
        for _ in 0..20 {
            match check(Some(addr)).await {
                Ok(body) if body.contains("\"status\":\"ok\"") => answered += 1,
                Ok(body) => panic!("{body}"),
                Err(e) => eprintln!("probe failed: {e}"),
            }
        }
        drop(flood);
        assert_eq!(answered, 20, "health checks answered under the flood");
    }
}
