//! Which lines are logged: `LOG_LEVEL` or `RUST_LOG` as checked at start, the caps that keep
//! credentials out of the log whatever they say, and the floor that keeps the agent's own
//! errors in it whatever they say.
//!
//! `RUST_LOG` takes `target=level` directives, and a target is a prefix of the module path
//! of the code that logs. A target that matches nothing logs nothing, and with no bare level
//! beside it nothing else is logged either: `RUST_LOG=cloudwatch-publisher=debug` (a dash,
//! where the crate is `cloudwatch_publisher`) or `RUST_LOG=null` (a word that is not a level
//! is a target) used to silence the agent completely. So [`check`] refuses a target that
//! names no crate that logs in this binary, and the agent's errors are logged in any case.

use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, Targets};

use crate::untrusted;

/// The agent's own code: its errors are logged whatever the filter says.
pub const OWN_TARGET: &str = "cloudwatch_publisher";

/// The crates of this binary that log through `tracing`, as targets (`-` written `_`). A
/// unit test keeps the list equal to the crates in Cargo.lock that depend on `tracing`.
/// (Crates that log through the `log` crate, such as rustls, are not bridged: their lines
/// never reach the agent's log.)
pub const LOGGING_CRATES: &[&str] = &[
    "aws_config",
    "aws_runtime",
    "aws_sdk_cloudwatch",
    "aws_sdk_sts",
    "aws_sigv4",
    "aws_smithy_compression",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_observability",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_types",
    "cloudwatch_publisher",
    "h2",
    "hyper_util",
    "tokio_cron_scheduler",
];

/// The agent's own top-level modules, the first part of its targets' paths: a target inside
/// the crate must name one (`cloudwatch_publisher::nope` logs nothing). A unit test keeps
/// the list equal to the modules `lib.rs` declares.
pub const OWN_MODULES: &[&str] = &[
    "agent",
    "bench",
    "buffer",
    "config",
    "exit",
    "fuzzing",
    "health",
    "logging",
    "metric",
    "monitoring",
    "run",
    "schedule",
    "scheduler",
    "self_metrics",
    "shutdown",
    "sinks",
    "sources",
    "splay",
    "stats",
    "untrusted",
];

/// Appended to every filter: the signing crate's traces carry the signing inputs.
const REDACT: &str = "aws_sigv4=off";
/// Appended when the filter reaches debug: the orchestrator's endpoint and auth resolution
/// print their parameters there, the access key id among them. Only then, because the
/// directive raises those targets to info under a quieter filter.
const REDACT_DEBUG: &str = "aws_smithy_runtime::client::orchestrator::endpoints=info,aws_smithy_runtime::client::orchestrator::auth=info";
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

const EXPECTED: &str =
    "target=level directives, comma separated, such as info,cloudwatch_publisher=debug";

/// `RUST_LOG` checked: the directives trimmed of spaces and empty entries (which the parser
/// would take as targets, an empty one matching everything at trace), or why not.
pub fn check(filter: &str) -> Result<String, String> {
    let parts: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(format!("{EXPECTED} (there is none)"));
    }
    let normalized = parts.join(",");
    if let Err(e) = normalized.parse::<Targets>() {
        return Err(format!("{EXPECTED} ({e})"));
    }
    for part in parts {
        let (target, bare) = match part.split_once('=') {
            Some((target, _)) => (target.trim(), false),
            None if part.parse::<LevelFilter>().is_ok() => continue,
            None => (part, true),
        };
        if !names_a_crate(target) {
            return Err(unknown_target(target, bare));
        }
    }
    Ok(normalized)
}

/// Whether `target` matches the lines of a crate that logs: a prefix of its name (`aws`,
/// `aws_smithy`) or a path inside it (`cloudwatch_publisher::agent`).
fn names_a_crate(target: &str) -> bool {
    if let Some(path) = target.strip_prefix("cloudwatch_publisher::") {
        let module = path.split("::").next().unwrap_or_default();
        return OWN_MODULES.contains(&module);
    }
    !target.is_empty()
        && LOGGING_CRATES.iter().any(|c| {
            c.starts_with(target)
                || target
                    .strip_prefix(c)
                    .is_some_and(|inside| inside.starts_with("::"))
        })
}

fn unknown_target(target: &str, bare: bool) -> String {
    let mut why = format!(
        "{EXPECTED}, naming crates that log here (cloudwatch_publisher, aws_config, aws_smithy_runtime and the other aws_ crates, hyper_util, h2, tokio_cron_scheduler): {:?} matches none, so it would log nothing",
        untrusted::cut(target, 40)
    );
    if bare {
        why.push_str(
            "; a word that is not a level (off, error, warn, info, debug, trace) is a target",
        );
    }
    let fixed = target.replace('-', "_");
    if fixed != target && names_a_crate(&fixed) {
        why.push_str(&format!(". Fix: write {fixed}"));
    }
    why
}

/// The filter directives the agent runs with for a checked `filter`; the more specific
/// directives win over a user's `trace`.
pub fn directives(filter: &str) -> String {
    let hint = most_verbose(&filter.parse().unwrap_or_default());
    let mut out = format!("{filter},{REDACT}");
    if hint.is_none_or(|level| level >= LevelFilter::DEBUG) {
        out = format!("{out},{REDACT_DEBUG}");
    }
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

/// The agent's own errors, logged whatever the filter: [`OWN_TARGET`] at error. Combined
/// with the user's filter by "or", so it never lowers what the filter lets through.
pub fn floor() -> Targets {
    Targets::new().with_target(OWN_TARGET, Level::ERROR)
}

/// The most verbose level any of `targets`' directives lets through.
fn most_verbose(targets: &Targets) -> Option<LevelFilter> {
    targets
        .iter()
        .map(|(_, level)| level)
        .chain(targets.default_level())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn most_verbose(filter: &str) -> Option<LevelFilter> {
        super::most_verbose(&directives(filter).parse().unwrap())
    }

    #[test]
    fn the_redactions_outrank_a_users_trace() {
        let t: Targets = directives("trace").parse().unwrap();
        assert!(!t.would_enable("aws_sigv4::sign", &Level::ERROR));
        assert!(!t.would_enable("aws_smithy_runtime::client::orchestrator", &Level::TRACE));
        assert!(t.would_enable("aws_smithy_runtime::client::orchestrator", &Level::DEBUG));
        assert!(t.would_enable("cloudwatch_publisher::agent", &Level::TRACE));
        assert!(!t.would_enable("tokio_cron_scheduler::job", &Level::INFO));
        for debug in ["debug", "trace", "info,aws_smithy_runtime=debug"] {
            let t: Targets = directives(debug).parse().unwrap();
            for module in ["endpoints", "auth"] {
                let target = format!("aws_smithy_runtime::client::orchestrator::{module}");
                assert!(!t.would_enable(&target, &Level::DEBUG), "{debug}: {target}");
            }
        }
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
                d.contains(&format!(",{REDACT},{REDACT_DEBUG},{REDACT_TRACE}")),
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
        let t: Targets = directives("info").parse().unwrap();
        assert!(!t.would_enable("aws_config::imds::region", &Level::WARN));
        assert!(t.would_enable("aws_config::imds::region", &Level::ERROR));
        assert!(t.would_enable("aws_config::profile", &Level::WARN));
        let t: Targets = directives("info,aws_config=debug").parse().unwrap();
        assert!(t.would_enable("aws_config::imds::region", &Level::DEBUG));
    }

    #[test]
    fn targets_that_match_nothing_are_refused_with_the_fix() {
        let why = check("cloudwatch-publisher=debug").unwrap_err();
        assert!(
            why.contains("\"cloudwatch-publisher\" matches none"),
            "{why}"
        );
        assert!(why.ends_with("Fix: write cloudwatch_publisher"), "{why}");
        let why = check("null").unwrap_err();
        assert!(why.contains("\"null\" matches none"), "{why}");
        assert!(why.contains("a word that is not a level"), "{why}");
        for bad in [
            "info,tower=debug",
            "rustls=trace",
            "=debug",
            "info,x::y=warn",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        assert!(check(" , ").unwrap_err().contains("there is none"));
        assert!(check("info,a=b=c").unwrap_err().contains("too many '='"));
    }

    #[test]
    fn targets_of_crates_that_log_are_taken_and_spaces_dropped() {
        for (filter, taken) in [
            ("info", "info"),
            ("INFO", "INFO"),
            ("off", "off"),
            ("cloudwatch_publisher", "cloudwatch_publisher"),
            (
                "warn, cloudwatch_publisher::agent=debug ,",
                "warn,cloudwatch_publisher::agent=debug",
            ),
            ("aws=debug,aws_smithy=trace", "aws=debug,aws_smithy=trace"),
            ("h2=debug,hyper_util=trace", "h2=debug,hyper_util=trace"),
            // A prefix of hyper_util: it does match its lines.
            ("hyper=debug", "hyper=debug"),
        ] {
            assert_eq!(check(filter).as_deref(), Ok(taken), "{filter}");
        }
    }

    /// The list of crates that log is the lock file's, so a new dependency that logs cannot
    /// be refused as a target, and one that is gone cannot be accepted.
    #[test]
    fn the_own_modules_are_those_lib_rs_declares() {
        let lib = include_str!("../lib.rs");
        let declared: Vec<&str> = lib
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("pub mod ")
                    .or_else(|| l.trim().strip_prefix("mod "))
            })
            .map(|m| m.trim_end_matches(';'))
            .filter(|m| *m != "complexity")
            .collect();
        assert_eq!(declared, OWN_MODULES);
    }

    #[test]
    fn a_path_inside_the_agent_must_name_one_of_its_modules() {
        // Outside attack, round 2: accepted, then only the error floor printed.
        assert!(check("cloudwatch_publisher::nope=info").is_err());
        assert!(check("info,cloudwatch_publisher::agentx=debug").is_err());
        assert!(check("cloudwatch_publisher::agent=debug").is_ok());
        assert!(check("cloudwatch_publisher::sources::prometheus=trace").is_ok());
        assert!(check("cloudwatch_publisher=debug").is_ok());
    }

    #[test]
    fn the_crates_that_log_are_those_of_cargo_lock() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
            .expect("Cargo.lock");
        let mut found: Vec<String> = lock
            .split("[[package]]")
            .filter(|p| {
                p.split("dependencies = [").nth(1).is_some_and(|deps| {
                    deps.split(']').next().is_some_and(|deps| {
                        deps.lines().any(|d| {
                            d.trim() == "\"tracing\"," || d.trim().starts_with("\"tracing ")
                        })
                    })
                })
            })
            .filter_map(|p| {
                let name = p.split("name = \"").nth(1)?.split('"').next()?;
                Some(name.replace('-', "_"))
            })
            .collect();
        found.sort();
        assert_eq!(found, LOGGING_CRATES);
    }

    #[test]
    fn the_floor_lets_the_agents_errors_through_and_nothing_else() {
        let floor = floor();
        assert!(floor.would_enable("cloudwatch_publisher::run", &Level::ERROR));
        assert!(!floor.would_enable("cloudwatch_publisher::run", &Level::WARN));
        assert!(!floor.would_enable("aws_config::profile", &Level::ERROR));
    }
}
