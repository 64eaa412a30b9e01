//! Structured logs: one JSON object per line (or plain text), on stdout.
//!
//! With `--dry-run` stdout carries the datums, so logs go to stderr instead.
//!
//! Credentials and request signatures never reach the log: at trace level the SDK prints the
//! signed request (Authorization, X-Amz-Security-Token) and the signing inputs, so those
//! targets are capped whatever LOG_LEVEL or RUST_LOG say.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::LogFormat;

/// Appended to every filter: the signing crate's traces carry the signing inputs.
const REDACT: &str = "aws_sigv4=off";
/// Appended when the filter reaches trace: the orchestrator prints the signed request there.
/// Only then, because the directive also raises the target to debug under an info filter.
const REDACT_TRACE: &str = "aws_smithy_runtime::client::orchestrator=debug";

/// The EnvFilter directives the agent runs with for a validated `filter`; the more specific
/// directives win over a user's `trace`.
pub fn directives(filter: &str) -> String {
    let hint = EnvFilter::builder().parse_lossy(filter).max_level_hint();
    if hint.is_some_and(|level| level < LevelFilter::TRACE) {
        format!("{filter},{REDACT}")
    } else {
        format!("{filter},{REDACT},{REDACT_TRACE}")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn most_verbose(filter: &str) -> Option<LevelFilter> {
        EnvFilter::builder()
            .parse_lossy(directives(filter))
            .max_level_hint()
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
                d.ends_with(",aws_sigv4=off,aws_smithy_runtime::client::orchestrator=debug"),
                "{d}"
            );
        }
    }
}
