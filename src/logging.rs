//! Structured logs: one JSON object per line (or plain text), on stdout.
//!
//! With `--dry-run` stdout carries the datums, so logs go to stderr instead.
//!
//! Writing a log line never blocks the agent. A stdout that nobody reads (a stalled log
//! driver, a full pipe) would otherwise stop the only runtime thread, and with it the cycle,
//! `/healthz` and the SIGTERM handler. Lines go through a bounded queue to a writer thread
//! ([`LineWriter`]); when the queue is full they are dropped and counted, the count is in
//! `/metrics`, and a warning says how many once lines get through again.
//!
//! Credentials and request signatures never reach the log: at trace level the SDK prints the
//! signed request (Authorization, X-Amz-Security-Token) and the signing inputs, so those
//! targets are capped whatever LOG_LEVEL or RUST_LOG say.

use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::warn;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// Appended to every filter: the signing crate's traces carry the signing inputs.
const REDACT: &str = "aws_sigv4=off";
/// Appended when the filter reaches trace: the orchestrator prints the signed request there.
/// Only then, because the directive also raises the target to debug under an info filter.
const REDACT_TRACE: &str = "aws_smithy_runtime::client::orchestrator=debug";
/// The cron crate announces its own start-up at info ("Uninited", "Job creator created");
/// appended unless the user's filter names it.
const QUIET_CRON: &str = "tokio_cron_scheduler=warn";
/// Looking for a region off EC2, the SDK warns once per attempt with a raw debug dump of the
/// IMDS answer; the agent's own exit-78 line says what to set. Appended unless the user's
/// filter names aws_config (RUST_LOG=aws_config=debug shows why each source had none).
const QUIET_IMDS_REGION: &str = "aws_config::imds::region=error";
/// Lines held for a slow stdout before new ones are dropped: about 300 KB of logs.
pub const BUFFERED_LINES: usize = 1024;

/// The filter directives the agent runs with for a validated `filter`; the more specific
/// directives win over a user's `trace`.
pub fn directives(filter: &str) -> String {
    let hint = most_verbose(&filter.parse().unwrap_or_default());
    let mut out = format!("{filter},{REDACT}");
    if hint.is_none_or(|level| level >= LevelFilter::TRACE) {
        out = format!("{out},{REDACT_TRACE}");
    }
    if !filter.contains("tokio_cron_scheduler") {
        out = format!("{out},{QUIET_CRON}");
    }
    if !filter.contains("aws_config") {
        out = format!("{out},{QUIET_IMDS_REGION}");
    }
    out
}

/// The most verbose level any of `targets`' directives lets through.
fn most_verbose(targets: &Targets) -> Option<LevelFilter> {
    targets
        .iter()
        .map(|(_, level)| level)
        .chain(targets.default_level())
        .max()
}

/// A line-oriented output that never blocks its caller: whole lines are queued for a writer
/// thread, and dropped and counted when the queue is full. Dropping it gives the thread at
/// most 1.5 s to write what is queued.
pub struct LineWriter {
    writer: NonBlocking,
    dropped: ErrorCounter,
    /// Dropped on a helper thread (see `Drop`): never None until then.
    guard: Option<WorkerGuard>,
}

/// How long exit waits for the writer thread to write what is queued.
const FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_millis(1500);

impl Drop for LineWriter {
    /// The guard flushes the queue, but when the queue is full it reports that with a
    /// blocking `println!` to the very stdout that is stalled; so it is dropped on a thread
    /// that exit waits for only so long.
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let (done, finished) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("output-flush".into())
            .spawn(move || {
                drop(guard);
                let _ = done.send(());
            });
        if spawned.is_ok() {
            let _ = finished.recv_timeout(FLUSH_AT_EXIT);
        }
    }
}

impl LineWriter {
    /// A writer on its own copy of stdout's or stderr's descriptor: unbuffered, so nothing
    /// half-written waits in std's stdout buffer for the exit-time flush, which would block
    /// on a full pipe. Falls back to std's handle if the descriptor cannot be copied.
    /// `queued` is how many writes may wait for a slow output before new ones are dropped.
    pub fn stdout(queued: usize) -> Self {
        match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => Self::new(std::fs::File::from(fd), queued),
            Err(_) => Self::new(std::io::stdout(), queued),
        }
    }

    pub fn stderr(queued: usize) -> Self {
        match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => Self::new(std::fs::File::from(fd), queued),
            Err(_) => Self::new(std::io::stderr(), queued),
        }
    }

    pub fn new<W: std::io::Write + Send + 'static>(out: W, queued: usize) -> Self {
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(queued)
            .thread_name("output")
            .finish(out);
        LineWriter {
            dropped: writer.error_counter(),
            writer,
            guard: Some(guard),
        }
    }

    /// Queues one whole line (it must end with a newline); false when it was dropped.
    pub fn line(&self, line: &str) -> bool {
        let before = self.dropped.dropped_lines();
        let mut w = self.writer.clone();
        let _ = std::io::Write::write_all(&mut w, line.as_bytes());
        self.dropped.dropped_lines() == before
    }

    /// Lines dropped so far.
    #[cfg(test)]
    pub fn dropped(&self) -> usize {
        self.dropped.dropped_lines()
    }
}

/// The log writer's drop count, for [`dropped_lines`] and [`report_dropped`]. Only the
/// count: the writer itself belongs to whoever called [`init`], since a static is never
/// dropped and the last lines would never be flushed.
static LOG: OnceLock<ErrorCounter> = OnceLock::new();
/// How many dropped lines a warning has already reported.
static REPORTED: AtomicUsize = AtomicUsize::new(0);

/// Log lines dropped so far because the output was not being read.
pub fn dropped_lines() -> usize {
    LOG.get().map_or(0, ErrorCounter::dropped_lines)
}

/// Says how many log lines were dropped since the last time this got through. Called after
/// each cycle: while the output is still stalled the warning is dropped too and is tried
/// again next time.
pub fn report_dropped() {
    let Some(log) = LOG.get() else { return };
    let (dropped, reported) = (log.dropped_lines(), REPORTED.load(Ordering::Relaxed));
    if dropped == reported {
        return;
    }
    warn!(
        dropped = dropped - reported,
        dropped_total = dropped,
        "log lines were dropped because the log output was not being read (stdout or stderr full)"
    );
    if log.dropped_lines() == dropped {
        REPORTED.store(dropped, Ordering::Relaxed);
    }
}

/// Installs the log. Keep what it returns until the end: dropping it writes out the lines
/// still queued (for at most 1.5 s).
#[must_use = "dropping the writer at once would lose the log's last lines"]
pub fn init(format: LogFormat, filter: &str, to_stderr: bool) -> LineWriter {
    let out = if to_stderr {
        LineWriter::stderr(BUFFERED_LINES)
    } else {
        LineWriter::stdout(BUFFERED_LINES)
    };
    let writer = out.writer.clone();
    // init is called once per process; a second call keeps the first count.
    let _ = LOG.set(out.dropped.clone());
    // Validated by config; a filter that still fails to parse logs at info.
    let targets: Targets = directives(filter)
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_filter(targets),
            )
            .init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(targets))
            .init(),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn most_verbose(filter: &str) -> Option<LevelFilter> {
        super::most_verbose(&directives(filter).parse().unwrap())
    }

    #[test]
    fn the_redactions_outrank_a_users_trace() {
        use tracing::Level;
        let t: Targets = directives("trace").parse().unwrap();
        assert!(!t.would_enable("aws_sigv4::sign", &Level::ERROR));
        assert!(!t.would_enable("aws_smithy_runtime::client::orchestrator", &Level::TRACE));
        assert!(t.would_enable("aws_smithy_runtime::client::orchestrator", &Level::DEBUG));
        assert!(t.would_enable("cloudwatch_publisher::agent", &Level::TRACE));
        assert!(!t.would_enable("tokio_cron_scheduler::job", &Level::INFO));
    }

    #[test]
    fn capping_never_raises_a_quiet_filter() {
        assert_eq!(most_verbose("info"), Some(LevelFilter::INFO));
        assert_eq!(most_verbose("warn"), Some(LevelFilter::WARN));
        assert_eq!(
            most_verbose("info,cloudwatch_publisher=debug"),
            Some(LevelFilter::DEBUG)
        );
    }

    #[test]
    fn trace_filters_get_the_orchestrator_cap() {
        for filter in ["trace", "info,aws_smithy_runtime=trace"] {
            let d = directives(filter);
            assert!(
                d.contains(",aws_sigv4=off,aws_smithy_runtime::client::orchestrator=debug"),
                "{d}"
            );
        }
    }

    #[test]
    fn the_cron_crates_start_up_lines_stay_quiet_unless_asked_for() {
        assert!(directives("info").contains(",tokio_cron_scheduler=warn"));
        assert!(!directives("info,tokio_cron_scheduler=debug").contains("=warn"));
    }

    #[test]
    fn the_imds_region_lookup_warns_only_when_asked_for() {
        use tracing::Level;
        let t: Targets = directives("info").parse().unwrap();
        assert!(!t.would_enable("aws_config::imds::region", &Level::WARN));
        assert!(t.would_enable("aws_config::imds::region", &Level::ERROR));
        assert!(t.would_enable("aws_config::profile", &Level::WARN));
        let t: Targets = directives("info,aws_config=debug").parse().unwrap();
        assert!(t.would_enable("aws_config::imds::region", &Level::DEBUG));
    }

    /// A writer that never returns until it is released: a pipe nobody reads.
    struct Stalled(std::sync::mpsc::Receiver<()>);

    impl std::io::Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking() {
        let (release, stalled) = std::sync::mpsc::channel();
        let out = LineWriter::new(Stalled(stalled), BUFFERED_LINES);
        let started = std::time::Instant::now();
        let written = (0..BUFFERED_LINES * 3)
            .filter(|i| out.line(&format!("line {i}\n")))
            .count();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // One line is with the stalled writer, BUFFERED_LINES wait in the queue.
        assert!(written <= BUFFERED_LINES + 1, "{written}");
        assert_eq!(out.dropped(), BUFFERED_LINES * 3 - written);
        drop(release);
    }
}
