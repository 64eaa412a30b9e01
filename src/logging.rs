//! Structured logs: one JSON object per line (or plain text), on stdout.
//!
//! With `--dry-run` stdout carries the datums, so logs go to stderr instead.
//!
//! Writing a log line never blocks the agent. A stdout that nobody reads (a stalled log
//! driver, a full pipe) would otherwise stop the only runtime thread, and with it the cycle,
//! `/healthz` and the SIGTERM handler. Lines go through a queue to a writer thread
//! ([`LineWriter`]), bounded in lines ([`BUFFERED_LINES`]) and in bytes ([`BUFFERED_BYTES`]);
//! when it is full they are dropped and counted, the count is in `/metrics`, and a warning
//! says how many once lines get through again. Each line is itself bounded ([`line`]): every
//! field is cut, redacted and escaped as it is formatted, so outside text of any size costs
//! a few KiB of log.
//!
//! Which lines are logged is [`filter`]'s: the user's level or directives, the caps that keep
//! credentials out of the log, and the agent's own errors, always.

mod filter;
mod line;

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tracing::warn;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

pub use filter::check as check_filter;

/// Lines held for a slow stdout before new ones are dropped.
pub const BUFFERED_LINES: usize = 1024;
/// Bytes of lines held for a slow stdout before new ones are dropped: at most 64 lines of
/// [`line::MAX_LINE_BYTES`], and the 1024 lines of an ordinary burst (about 300 bytes each).
pub const BUFFERED_BYTES: usize = 2 * 1024 * 1024;

/// Bytes queued for the writer thread and not yet written, and the lines dropped because
/// they would have been too many bytes.
struct Budget {
    queued: AtomicUsize,
    max: usize,
    dropped: AtomicUsize,
}

impl Budget {
    fn release(&self, bytes: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(bytes))
            });
    }
}

/// The writer thread's end: bytes leave the budget as they are written (or fail to be).
struct Drain<W> {
    out: W,
    budget: Arc<Budget>,
}

impl<W: std::io::Write> std::io::Write for Drain<W> {
    /// The writer thread hands each line over whole: it is written whole, or given up.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write_all(buf);
        self.budget.release(buf.len());
        written.map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The callers' end: a line is queued whole if both the queue's lines and its bytes allow,
/// else dropped and counted.
#[derive(Clone)]
pub struct Queue {
    writer: NonBlocking,
    full: ErrorCounter,
    budget: Arc<Budget>,
}

impl Queue {
    /// Queues `line`; false when it was dropped.
    fn push(&self, line: &[u8]) -> bool {
        let len = line.len();
        // Counted before it is sent, so the writer thread can never release it first.
        let before = self.budget.queued.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > self.budget.max {
            self.budget.release(len);
            self.budget.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let full_before = self.full.dropped_lines();
        let mut w = self.writer.clone();
        let _ = std::io::Write::write_all(&mut w, line);
        // Another thread's drop at the same moment makes this one look dropped too: the
        // budget then counts too few bytes for a while, never too many.
        let queued = self.full.dropped_lines() == full_before;
        if !queued {
            self.budget.release(len);
        }
        queued
    }

    fn dropped(&self) -> usize {
        self.full.dropped_lines() + self.budget.dropped.load(Ordering::Relaxed)
    }
}

impl std::io::Write for Queue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Queue {
    type Writer = Queue;

    fn make_writer(&'a self) -> Queue {
        self.clone()
    }
}

/// A line-oriented output that never blocks its caller: whole lines are queued for a writer
/// thread, and dropped and counted when the queue is full. Dropping it gives the thread at
/// most 1.5 s to write what is queued.
pub struct LineWriter {
    queue: Queue,
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
        Self::stdout_bounded(queued, usize::MAX)
    }

    /// [`stdout`](Self::stdout), also bounded in bytes.
    pub fn stdout_bounded(lines: usize, bytes: usize) -> Self {
        match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => Self::bounded(std::fs::File::from(fd), lines, bytes),
            Err(_) => Self::bounded(std::io::stdout(), lines, bytes),
        }
    }

    /// Stderr, bounded in lines and bytes.
    pub fn stderr_bounded(lines: usize, bytes: usize) -> Self {
        match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => Self::bounded(std::fs::File::from(fd), lines, bytes),
            Err(_) => Self::bounded(std::io::stderr(), lines, bytes),
        }
    }

    /// At most `lines` lines and `bytes` bytes may wait.
    pub fn bounded<W: std::io::Write + Send + 'static>(out: W, lines: usize, bytes: usize) -> Self {
        let budget = Arc::new(Budget {
            queued: AtomicUsize::new(0),
            max: bytes,
            dropped: AtomicUsize::new(0),
        });
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(lines)
            .thread_name("output")
            .finish(Drain {
                out,
                budget: budget.clone(),
            });
        LineWriter {
            queue: Queue {
                full: writer.error_counter(),
                writer,
                budget,
            },
            guard: Some(guard),
        }
    }

    /// Queues one whole line (it must end with a newline); false when it was dropped.
    pub fn line(&self, line: &str) -> bool {
        self.queue.push(line.as_bytes())
    }

    /// Lines dropped so far.
    #[cfg(test)]
    pub fn dropped(&self) -> usize {
        self.queue.dropped()
    }
}

/// The log's queue, for [`dropped_lines`] and [`report_dropped`]: a handle on the counts
/// only, the writer itself belongs to whoever called [`init`], since a static is never
/// dropped and the last lines would never be flushed.
static LOG: OnceLock<Queue> = OnceLock::new();
/// How many dropped lines a warning has already reported.
static REPORTED: AtomicUsize = AtomicUsize::new(0);

/// Log lines dropped so far because the output was not being read.
pub fn dropped_lines() -> usize {
    LOG.get().map_or(0, Queue::dropped)
}

/// Says how many log lines were dropped since the last time this got through. Called after
/// each cycle: while the output is still stalled the warning is dropped too and is tried
/// again next time.
pub fn report_dropped() {
    let Some(log) = LOG.get() else { return };
    let (dropped, reported) = (log.dropped(), REPORTED.load(Ordering::Relaxed));
    if dropped == reported {
        return;
    }
    warn!(
        dropped = dropped - reported,
        dropped_total = dropped,
        "log lines were dropped because the log output was not being read (stdout or stderr full)"
    );
    if log.dropped() == dropped {
        REPORTED.store(dropped, Ordering::Relaxed);
    }
}

/// Installs the log for a `filter` [`check_filter`] accepted (or a level). Keep what it
/// returns until the end: dropping it writes out the lines still queued (for at most 1.5 s).
#[must_use = "dropping the writer at once would lose the log's last lines"]
pub fn init(format: LogFormat, filter: &str, to_stderr: bool) -> LineWriter {
    let out = if to_stderr {
        LineWriter::stderr_bounded(BUFFERED_LINES, BUFFERED_BYTES)
    } else {
        LineWriter::stdout_bounded(BUFFERED_LINES, BUFFERED_BYTES)
    };
    // init is called once per process; a second call keeps the first count.
    let _ = LOG.set(out.queue.clone());
    // Checked by config; a filter that still fails to parse logs at info.
    let targets: Targets = filter::directives(filter)
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .event_format(line::Line { format })
        .with_writer(out.queue.clone())
        .with_filter(targets.or(filter::floor()));
    tracing_subscriber::registry().with(layer).init();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let out = LineWriter::bounded(Stalled(stalled), BUFFERED_LINES, usize::MAX);
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

    /// The queue that took 1.9 GB: lines of the largest size a line can have, for a stdout
    /// nobody reads, hold at most BUFFERED_BYTES, however many lines the count allows.
    #[test]
    fn a_stalled_output_holds_at_most_its_byte_budget() {
        let (release, stalled) = std::sync::mpsc::channel();
        let out = LineWriter::bounded(Stalled(stalled), BUFFERED_LINES, BUFFERED_BYTES);
        let line = format!("{}\n", "x".repeat(line::MAX_LINE_BYTES));
        let written = (0..BUFFERED_LINES).filter(|_| out.line(&line)).count();
        assert_eq!(written, BUFFERED_BYTES / line.len());
        assert_eq!(out.dropped(), BUFFERED_LINES - written);
        assert!(out.queue.budget.queued.load(Ordering::Relaxed) <= BUFFERED_BYTES);
        drop(release);
    }

    /// Written lines leave the budget: an output that is read never drops for bytes.
    #[test]
    fn written_lines_give_their_bytes_back() {
        #[derive(Clone, Default)]
        struct Count(Arc<AtomicUsize>);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.fetch_add(buf.len(), Ordering::Relaxed);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let count = Count::default();
        let out = LineWriter::bounded(count.clone(), 4, 1000);
        let line = format!("{}\n", "y".repeat(99));
        for _ in 0..100 {
            // One line at a time, each waited for: the writer keeps up.
            let before = count.0.load(Ordering::Relaxed);
            assert!(out.line(&line));
            while count.0.load(Ordering::Relaxed) == before {
                std::thread::yield_now();
            }
        }
        assert_eq!(out.dropped(), 0);
        assert_eq!(count.0.load(Ordering::Relaxed), 100 * line.len());
    }
}
