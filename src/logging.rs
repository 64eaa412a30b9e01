//! Structured logs: one JSON object per line (or plain text), on stdout.
//!
//! With `--dry-run` stdout carries the datums, so logs go to stderr instead.
//!
//! Credentials and request signatures never reach the log: at trace level the SDK prints the
//! signed request (Authorization, X-Amz-Security-Token) and the signing inputs, so those
//! targets are capped whatever LOG_LEVEL or RUST_LOG say.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::LogFormat;

/// Appended to every filter; the more specific directive wins over a user's `trace`.
const REDACT: &str = "aws_sigv4=off,aws_smithy_runtime::client::orchestrator=debug";

/// The EnvFilter directives the agent runs with for a validated `filter`.
pub fn directives(filter: &str) -> String {
    format!("{filter},{REDACT}")
}

pub fn init(format: LogFormat, filter: &str, to_stderr: bool) {
    let writer = if to_stderr {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::stdout)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::builder().parse_lossy(directives(filter)))
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}
