//! The agent's configuration: read from the environment with envy, validated before anything
//! runs.
//!
//! Every variable is read as text first so that all problems can be reported together, each
//! naming the variable, its bad value and what is expected. Only the agent's own variables are
//! ever echoed; AWS credentials are left to the SDK and never pass through here.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::buffer::config::{self as buffer, BufferConfig};
use crate::logging;
use crate::schedule::Schedule;
use crate::sources::plugins::config::{self as plugins, PluginsConfig};
use crate::sources::prometheus::config::{self as prometheus, PrometheusConfig};
use crate::splay::{self, Splay};
use crate::untrusted;

/// One configuration variable as the docs and `--help` present it.
pub struct Variable {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
    /// A valid value other than the default; docs/configuration.md shows it and a test
    /// checks that it parses.
    pub example: &'static str,
}

/// Every variable the agent reads itself; the AWS SDK reads its own (credentials,
/// AWS_ENDPOINT_URL, AWS_MAX_ATTEMPTS, AWS_PROFILE, ...).
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "AWS_REGION",
        default: "SDK chain",
        meaning: "region CloudWatch is written to; else profile, ECS or IMDS",
        example: "eu-west-1",
    },
    Variable {
        name: "CLOUDWATCH_NAMESPACE",
        default: DEFAULT_NAMESPACE,
        meaning: "namespace of every metric; 1-255 printable ASCII, not AWS/... nor a leading ':'",
        example: "Team/FinOps",
    },
    Variable {
        name: "SCHEDULE",
        default: DEFAULT_SCHEDULE,
        meaning: "cron with a seconds field (sec min hour dom mon dow), UTC",
        example: "0 */5 * * * *",
    },
    plugins::PLUGIN_HOST,
    plugins::PLUGIN_PORTS,
    plugins::PLUGIN_TARGETS,
    plugins::COST_RESOURCES,
    prometheus::SCRAPE_TARGETS,
    prometheus::INCLUDE_METRICS,
    prometheus::EXCLUDE_METRICS,
    prometheus::DROP_LABELS,
    prometheus::MAX_SERIES_PER_TARGET,
    Variable {
        name: "TARGET_TIMEOUT",
        default: DEFAULT_TARGET_TIMEOUT,
        meaning: "time budget of one target in one cycle (health, info and cost)",
        example: "2s",
    },
    Variable {
        name: "SHUTDOWN_TIMEOUT",
        default: DEFAULT_SHUTDOWN_TIMEOUT,
        meaning: "after SIGTERM, time to finish the cycle and flush the queue",
        example: "25s",
    },
    splay::PUBLISH_SPLAY,
    buffer::QUEUE_MAX_DATUMS,
    buffer::BUFFER_DIR,
    buffer::BUFFER_MAX_BYTES,
    Variable {
        name: "HEALTH_ADDR",
        default: DEFAULT_HEALTH_ADDR,
        meaning: "where /healthz and /metrics listen (IP:port); set empty to disable",
        example: "0.0.0.0:8686",
    },
    Variable {
        name: "SELF_METRICS",
        default: DEFAULT_SELF_METRICS,
        meaning: "also publish the agent's own metrics (dimension Agent): true or false",
        example: "false",
    },
    Variable {
        name: "AGENT_NAME",
        default: DEFAULT_AGENT_NAME,
        meaning: "value of the Agent dimension of the self metrics; keep it stable",
        example: "prod-eu-finops",
    },
    Variable {
        name: "LOG_FORMAT",
        default: DEFAULT_LOG_FORMAT,
        meaning: "json (one object per line) or text",
        example: "text",
    },
    Variable {
        name: "LOG_LEVEL",
        default: DEFAULT_LOG_LEVEL,
        meaning: "error, warn, info, debug or trace; RUST_LOG directives take precedence",
        example: "debug",
    },
];

pub const DEFAULT_NAMESPACE: &str = "FinFocus/Plugins";
pub const DEFAULT_SCHEDULE: &str = "0 * * * * *";
pub const DEFAULT_HEALTH_ADDR: &str = "127.0.0.1:8686";
pub const DEFAULT_AGENT_NAME: &str = "cloudwatch-publisher";
pub const DEFAULT_TARGET_TIMEOUT: &str = "5s";
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "10s";
pub const DEFAULT_SELF_METRICS: &str = "true";
pub const DEFAULT_LOG_FORMAT: &str = "json";
pub const DEFAULT_LOG_LEVEL: &str = "info";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// LOG_FORMAT as set (None: unset); Err holds a value that is neither format.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.unwrap_or(DEFAULT_LOG_FORMAT).trim() {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => Err(other.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// AWS_REGION as set (None: the SDK looks further); the agent itself leaves it to the
    /// SDK, `monitoring` names it in the dashboard.
    pub aws_region: Option<String>,
    pub namespace: String,
    pub schedule: Schedule,
    pub plugins: PluginsConfig,
    pub prometheus: PrometheusConfig,
    pub target_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// How far after its tick a scheduled cycle may send.
    pub publish_splay: Splay,
    pub buffer: BufferConfig,
    pub log_format: LogFormat,
    /// Filter directives: a level, and `target=level` pairs.
    pub log_filter: String,
    /// Where /healthz and /metrics listen; None when HEALTH_ADDR is set empty.
    pub health_addr: Option<SocketAddr>,
    /// AGENT_NAME: the Agent dimension of the self metrics, and half of the identity the
    /// publish splay is drawn from (with SELF_METRICS=false too).
    pub agent_name: String,
    /// The Agent dimension of the self metrics (AGENT_NAME); None when SELF_METRICS=false.
    pub self_metrics: Option<String>,
    /// Set names that differ from a variable only in case (`schedule`): not read, and
    /// worth a warning, since the user meant something by them.
    pub ignored: Vec<String>,
}

/// The agent reads exactly these names: its variables, and RUST_LOG.
fn is_read(name: &str) -> bool {
    matches!(name, "RUST_LOG" | "AWS_ENDPOINT_URL") || VARIABLES.iter().any(|v| v.name == name)
}

/// Bounds of TARGET_TIMEOUT and SHUTDOWN_TIMEOUT.
const MIN_DURATION: Duration = Duration::from_millis(1);
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// How much of a bad value, and of the reason, a configuration error echoes.
const MAX_VALUE_CHARS: usize = 200;
const MAX_EXPECTED_CHARS: usize = 400;

/// One bad variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub variable: &'static str,
    pub value: String,
    pub expected: String,
}

/// The problems found so far: each part of the configuration reports its own variables'
/// here, so all are named at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    #[cfg(test)]
    pub fn variables(&self) -> Vec<&'static str> {
        self.0.iter().map(|p| p.variable).collect()
    }

    /// Records that `variable`'s `value` is not what is `expected`. Both are echoed cut, and
    /// with the password and query values of any URL in them redacted (before the cut, which
    /// could take the `@` that marks a password away). Whoever quotes a URL in `expected`
    /// redacts it first ([`untrusted::shown_url`]): it is cut there.
    pub fn bad(&mut self, variable: &'static str, value: &str, expected: String) {
        let shown = untrusted::redact_urls(value);
        // Our sentence, but it may quote pieces of the value, and a parser's message that
        // quotes them raw.
        let mut expected = untrusted::redact_sentence(&expected);
        if shown != value {
            expected = untrusted::hide_secret_echoes(&expected, &shown);
        }
        self.0.push(Problem {
            variable,
            value: untrusted::cut(&shown, MAX_VALUE_CHARS),
            expected: untrusted::cut(&untrusted::escape_controls(&expected), MAX_EXPECTED_CHARS),
        });
    }
}

/// Every problem found in the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
    /// How to log this error: LOG_FORMAT when it was valid, else JSON.
    pub log_format: LogFormat,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.problems {
            write!(f, " {}={:?}: {};", p.variable, p.value, p.expected)?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn variables(&self) -> Vec<&'static str> {
        self.problems.iter().map(|p| p.variable).collect()
    }
}

/// The agent's variables as envy reads them: text, so each is validated on its own.
#[derive(Debug, Default, Deserialize)]
struct Raw {
    aws_region: Option<String>,
    cloudwatch_namespace: Option<String>,
    schedule: Option<String>,
    target_timeout: Option<String>,
    shutdown_timeout: Option<String>,
    publish_splay: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    rust_log: Option<String>,
    health_addr: Option<String>,
    self_metrics: Option<String>,
    agent_name: Option<String>,
    aws_endpoint_url: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut vars = Vec::new();
        for (k, v) in std::env::vars_os() {
            let Some(k) = k.to_str() else { continue };
            match v.into_string() {
                Ok(v) => vars.push((k.to_string(), v)),
                Err(_) => {
                    if let Some(var) = VARIABLES.iter().find(|var| var.name == k) {
                        problems.push(Problem {
                            variable: var.name,
                            value: "<not UTF-8>".into(),
                            expected: "UTF-8 text".into(),
                        });
                    }
                }
            }
        }
        let config = Self::from_vars(vars);
        match (config, problems.is_empty()) {
            (Ok(c), true) => Ok(c),
            (Ok(c), false) => Err(ConfigError {
                problems,
                log_format: c.log_format,
            }),
            (Err(mut e), _) => {
                e.problems.extend(problems);
                Err(e)
            }
        }
    }

    /// Reads the configuration from `vars` (name, value) pairs. Empty values count as unset,
    /// as `docker run -e NAME=` and compose files produce them; only HEALTH_ADDR gives empty
    /// a meaning of its own (disabled).
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut lookalikes = Vec::new();
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, v)| {
                if is_read(k) {
                    return k == "HEALTH_ADDR" || !v.trim().is_empty();
                }
                if is_read(&k.to_ascii_uppercase()) {
                    lookalikes.push(k.clone());
                }
                false
            })
            .collect();
        let mut problems = Problems::default();
        // Names are exact and unique here, so envy (which lowercases them) sees no duplicate;
        // each part of the configuration reads its own fields from the same list.
        let raws = envy::from_iter::<_, Raw>(vars.clone()).and_then(|raw| {
            let plugin_raw = envy::from_iter::<_, plugins::Raw>(vars.clone())?;
            let buffer_raw = envy::from_iter::<_, buffer::Raw>(vars.clone())?;
            Ok((
                raw,
                plugin_raw,
                envy::from_iter::<_, prometheus::Raw>(vars)?,
                buffer_raw,
            ))
        });
        let (raw, plugin_raw, prometheus_raw, buffer_raw) = match raws {
            Ok(raws) => raws,
            Err(e) => {
                problems.bad("environment", "", e.to_string());
                return Err(ConfigError {
                    problems: problems.0,
                    log_format: LogFormat::Json,
                });
            }
        };

        // Checked here so a typo is named with the rest; the SDK reads it itself.
        if let Some(r) = raw.aws_region.as_deref().filter(|r| !is_region(r)) {
            problems.bad(
                "AWS_REGION",
                r,
                "an AWS region name such as us-east-1".into(),
            );
        }

        // The SDK reads it, and logs its query at WARN ("will be ignored") and its userinfo at
        // trace: neither may carry a secret, so neither is taken.
        if let Some(url) = raw.aws_endpoint_url.as_deref() {
            let uri = url.parse::<hyper::Uri>();
            let why = match &uri {
                Err(e) => Some(format!("a URL such as http://localhost:4566 ({e})")),
                Ok(u) if u.scheme().is_none() || u.authority().is_none() => {
                    Some("a URL such as http://localhost:4566".into())
                }
                Ok(u) if u.authority().is_some_and(|a| a.as_str().contains('@')) => {
                    Some("a URL without credentials: the SDK would log them".into())
                }
                Ok(u) if u.query().is_some() || url.contains('#') => Some(
                    "a URL without a query or fragment: the SDK ignores them and logs the query"
                        .into(),
                ),
                Ok(_) => None,
            };
            if let Some(why) = why {
                problems.bad("AWS_ENDPOINT_URL", url, why);
            }
        }

        let namespace = raw
            .cloudwatch_namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        if let Err(why) = check_namespace(&namespace) {
            problems.bad("CLOUDWATCH_NAMESPACE", &namespace, why);
        }

        let schedule_expr = raw.schedule.unwrap_or_else(|| DEFAULT_SCHEDULE.into());
        let schedule = match Schedule::parse(&schedule_expr) {
            Ok(s) if s.next_after(SystemTime::now()).is_none() => {
                problems.bad(
                    "SCHEDULE",
                    &schedule_expr,
                    "a schedule with ticks still to come: this one has none after now (a past year, or a day that does not exist such as 31 February)".into(),
                );
                None
            }
            Ok(s) => Some(s),
            Err(why) => {
                problems.bad(
                    "SCHEDULE",
                    &schedule_expr,
                    format!(
                        "a cron expression with six fields, seconds first, e.g. \"0 * * * * *\" ({why})"
                    ),
                );
                None
            }
        };

        let plugins = plugins::parse(plugin_raw, &mut problems);
        let prometheus = prometheus::parse(prometheus_raw, &mut problems);

        // Defaults are parsed by the same code as a user's value, so each is written once.
        let mut duration = |name: &'static str, raw: Option<String>, default: &str| {
            let text = raw.unwrap_or_else(|| default.into());
            match humantime::parse_duration(text.trim()) {
                Ok(d) if (MIN_DURATION..=MAX_DURATION).contains(&d) => Some(d),
                Ok(_) => {
                    problems.bad(name, &text, "a duration from 1ms to 1h".into());
                    None
                }
                Err(e) => {
                    problems.bad(name, &text, format!("a duration such as 5s or 500ms ({e})"));
                    None
                }
            }
        };
        let target_timeout = duration("TARGET_TIMEOUT", raw.target_timeout, DEFAULT_TARGET_TIMEOUT);
        let shutdown_timeout = duration(
            "SHUTDOWN_TIMEOUT",
            raw.shutdown_timeout,
            DEFAULT_SHUTDOWN_TIMEOUT,
        );
        let splay_text = raw
            .publish_splay
            .unwrap_or_else(|| splay::DEFAULT_SPLAY.into());
        let publish_splay = match Splay::parse(&splay_text) {
            Ok(s) => Some(s),
            Err(why) => {
                problems.bad("PUBLISH_SPLAY", &splay_text, why);
                None
            }
        };
        let buffer = buffer::parse(buffer_raw, &mut problems);

        let log_format = match LogFormat::parse(raw.log_format.as_deref()) {
            Ok(format) => Some(format),
            Err(other) => {
                problems.bad("LOG_FORMAT", &other, "json or text".into());
                None
            }
        };

        let log_filter = match (raw.rust_log, raw.log_level) {
            (Some(directives), _) => match logging::check_filter(&directives) {
                Ok(filter) => Some(filter),
                Err(why) => {
                    problems.bad("RUST_LOG", &directives, why);
                    None
                }
            },
            (None, Some(level)) => {
                let level = level.trim().to_ascii_lowercase();
                if ["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                    Some(level)
                } else {
                    problems.bad(
                        "LOG_LEVEL",
                        &level,
                        "one of error, warn, info, debug, trace".into(),
                    );
                    None
                }
            }
            (None, None) => Some(DEFAULT_LOG_LEVEL.into()),
        };

        let health_addr = match parse_health_addr(raw.health_addr.as_deref()) {
            Ok(addr) => Some(addr),
            Err(why) => {
                problems.bad("HEALTH_ADDR", raw.health_addr.as_deref().unwrap_or(""), why);
                None
            }
        };

        let self_metrics_on = match raw
            .self_metrics
            .as_deref()
            .unwrap_or(DEFAULT_SELF_METRICS)
            .trim()
        {
            v if v.eq_ignore_ascii_case("true") => Some(true),
            v if v.eq_ignore_ascii_case("false") => Some(false),
            other => {
                problems.bad("SELF_METRICS", other, "true or false".into());
                None
            }
        };
        let agent_name = raw
            .agent_name
            .map(|n| n.trim().to_string())
            .unwrap_or_else(|| DEFAULT_AGENT_NAME.into());
        let agent_name_ok = agent_name.len() <= 255
            && agent_name
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ');
        if !agent_name_ok {
            problems.bad(
                "AGENT_NAME",
                &agent_name,
                "1 to 255 printable ASCII characters (it is a CloudWatch dimension value)".into(),
            );
        }

        if !problems.0.is_empty() {
            return Err(ConfigError {
                problems: problems.0,
                log_format: log_format.unwrap_or(LogFormat::Json),
            });
        }
        lookalikes.sort();
        // Every None above pushed a problem, so all are Some here.
        Ok(Config {
            aws_region: raw.aws_region,
            namespace,
            schedule: schedule.expect("validated"),
            plugins: plugins.expect("validated"),
            prometheus: prometheus.expect("validated"),
            target_timeout: target_timeout.expect("validated"),
            shutdown_timeout: shutdown_timeout.expect("validated"),
            publish_splay: publish_splay.expect("validated"),
            buffer: buffer.expect("validated"),
            log_format: log_format.expect("validated"),
            log_filter: log_filter.expect("validated"),
            health_addr: health_addr.expect("validated"),
            self_metrics: self_metrics_on
                .expect("validated")
                .then(|| agent_name.clone()),
            agent_name,
            ignored: lookalikes,
        })
    }
}

/// HEALTH_ADDR as written: unset means the default, empty (or blank) means disabled.
pub fn parse_health_addr(value: Option<&str>) -> Result<Option<SocketAddr>, String> {
    let text = value.map_or(DEFAULT_HEALTH_ADDR, str::trim);
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        "an IP address and port such as 127.0.0.1:8686 or 0.0.0.0:8686 (no host names), or empty to disable the listener".into()
    })
}

/// The longest region name accepted: AWS's longest today is 14 characters.
pub const MAX_REGION_CHARS: usize = 32;

/// An AWS region name: a 2-4 letter prefix, one to three words of letters, a number of one
/// or two digits, all lower case, at most [`MAX_REGION_CHARS`]: `us-east-1`,
/// `us-gov-west-1`, `us-isob-east-1`, `eusc-de-east-1`. It becomes a dimension value, so
/// anything else is refused.
pub fn is_region(r: &str) -> bool {
    let letters = |p: &&str, lo: usize, hi: usize| {
        (lo..=hi).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase())
    };
    let parts: Vec<&str> = r.split('-').collect();
    let [prefix, words @ .., number] = parts.as_slice() else {
        return false;
    };
    r.len() <= MAX_REGION_CHARS
        && letters(prefix, 2, 4)
        && (1..=3).contains(&words.len())
        && words.iter().all(|w| letters(w, 2, 12))
        && (1..=2).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// The reason to give when a target's `region=` is not a region name.
pub fn check_region(region: &str, expected: &str) -> Result<(), String> {
    if is_region(region) {
        return Ok(());
    }
    // In `http://u:p=ss@h` the region is `http://u:p`: hidden from its `://` on.
    Err(format!(
        "{expected} ({:?} is not a region name such as us-east-1)",
        untrusted::cut(&untrusted::redact_cut_urls(region, false), 40)
    ))
}

/// CloudWatch's rules for a namespace: 1-255 printable ASCII characters (its pattern is
/// `[^:].*`, so not a leading colon), and `AWS/` is reserved for AWS's own.
fn check_namespace(ns: &str) -> Result<(), String> {
    let len = ns.chars().count();
    if len == 0 || len > 255 {
        return Err("1 to 255 characters".into());
    }
    if ns.starts_with("AWS/") {
        return Err("a custom namespace: AWS/ is reserved for AWS services".into());
    }
    if !ns.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err("printable ASCII characters".into());
    }
    if ns.starts_with(':') {
        return Err("a namespace that does not start with ':' (CloudWatch refuses it)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::sources::plugins::Target;
    use crate::sources::plugins::basket;
    use crate::sources::plugins::config::{ExplicitTarget, Targets};

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ok(pairs: &[(&str, &str)]) -> Config {
        Config::from_vars(vars(pairs)).expect("valid")
    }

    fn bad(pairs: &[(&str, &str)]) -> ConfigError {
        Config::from_vars(vars(pairs)).expect_err("invalid")
    }

    #[test]
    fn an_endpoint_url_is_a_plain_url_without_secrets() {
        // The SDK logs a query at WARN and userinfo at trace (outside attack, round 2).
        for (url, why) in [
            ("http://u:pw@127.0.0.1:1/", "without credentials"),
            ("http://127.0.0.1:1/?tok=SEKRIT", "without a query"),
            ("http://127.0.0.1:1/#frag", "without a query or fragment"),
            ("localhost:4566", "a URL such as"),
        ] {
            let e = bad(&[("AWS_ENDPOINT_URL", url)]);
            assert_eq!(e.variables(), ["AWS_ENDPOINT_URL"], "{url}");
            let text = e.to_string();
            assert!(text.contains(why), "{url}: {text}");
            assert!(!text.contains("SEKRIT") && !text.contains(":pw@"), "{text}");
        }
        ok(&[("AWS_ENDPOINT_URL", "http://localhost:4566")]);
        ok(&[(
            "AWS_ENDPOINT_URL",
            "https://monitoring.us-east-1.amazonaws.com/",
        )]);
    }

    /// Complexity guards ([`crate::complexity`]): the list variables at n and 4n entries,
    /// valid and not, and one long value.
    #[test]
    fn parsing_the_configuration_is_linear_in_its_values() {
        type Shape = (&'static str, &'static str, fn(usize) -> String);
        let shapes: [Shape; 5] = [
            ("n scrape targets", "SCRAPE_TARGETS", |n| {
                (0..n)
                    .map(|i| format!("http://h{i}:9100/m?t={i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            ("n plugin targets", "PLUGIN_TARGETS", |n| {
                // Distinct valid regions: i in base 26 as the region's word.
                let word = |i: usize| {
                    (0..4)
                        .map(|d| char::from(b'a' + (i / 26usize.pow(d) % 26) as u8))
                        .collect::<String>()
                };
                (0..n)
                    .map(|i| format!("us-{}-1=http://h:{}", word(i), i % 60000 + 1))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            ("n labels to drop", "DROP_LABELS", |n| {
                (0..n)
                    .map(|i| format!("l{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            ("n empty entries", "SCRAPE_TARGETS", |n| ",".repeat(n)),
            ("a namespace of n characters", "CLOUDWATCH_NAMESPACE", |n| {
                ":".repeat(n * 8)
            }),
        ];
        for (what, name, value) in shapes {
            let n = 2_000;
            let (small, large) = (vars(&[(name, &value(n))]), vars(&[(name, &value(4 * n))]));
            crate::complexity::assert_linear(what, &small[..], &large[..], |v| {
                drop(Config::from_vars(v.to_vec()))
            });
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = ok(&[]);
        assert_eq!(c.namespace, "FinFocus/Plugins");
        assert_eq!(c.schedule.expr, "0 * * * * *");
        assert_eq!(
            c.plugins.targets,
            Targets::Discover {
                host: "127.0.0.1".into(),
                ports: (8001..=8012).collect()
            }
        );
        assert_eq!(c.plugins.basket.len(), 3);
        assert_eq!(c.target_timeout, Duration::from_secs(5));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.buffer.queue_max_datums, 50_000);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.health_addr, Some("127.0.0.1:8686".parse().unwrap()));
        assert_eq!(c.self_metrics.as_deref(), Some("cloudwatch-publisher"));
    }

    #[test]
    fn empty_health_addr_disables_the_listener() {
        assert_eq!(ok(&[("HEALTH_ADDR", "")]).health_addr, None);
        assert_eq!(ok(&[("HEALTH_ADDR", "  ")]).health_addr, None);
        assert_eq!(parse_health_addr(Some("")), Ok(None));
        assert_eq!(
            parse_health_addr(None),
            Ok(Some("127.0.0.1:8686".parse().unwrap()))
        );
    }

    #[test]
    fn health_addr_takes_ipv4_or_ipv6_with_port() {
        assert_eq!(
            ok(&[("HEALTH_ADDR", "[::]:9000")]).health_addr,
            Some("[::]:9000".parse().unwrap())
        );
        for bad_addr in ["localhost:8686", "8686", "0.0.0.0", "0.0.0.0:99999"] {
            let e = bad(&[("HEALTH_ADDR", bad_addr)]);
            assert_eq!(e.variables(), ["HEALTH_ADDR"], "{bad_addr}");
            assert!(e.to_string().contains("empty to disable"), "{e}");
        }
    }

    #[test]
    fn self_metrics_switch_and_agent_name() {
        assert_eq!(ok(&[("SELF_METRICS", "false")]).self_metrics, None);
        // The name still identifies the agent (its publish splay) without self metrics.
        let off = ok(&[("SELF_METRICS", "false"), ("AGENT_NAME", "prod-eu")]);
        assert_eq!(
            (off.self_metrics, off.agent_name.as_str()),
            (None, "prod-eu")
        );
        assert_eq!(
            ok(&[("SELF_METRICS", "TRUE"), ("AGENT_NAME", "prod-eu")])
                .self_metrics
                .as_deref(),
            Some("prod-eu")
        );
        assert_eq!(bad(&[("SELF_METRICS", "no")]).variables(), ["SELF_METRICS"]);
        assert_eq!(
            bad(&[("AGENT_NAME", "tab\there")]).variables(),
            ["AGENT_NAME"]
        );
        assert_eq!(
            bad(&[("AGENT_NAME", &"a".repeat(256))]).variables(),
            ["AGENT_NAME"]
        );
    }

    #[test]
    fn every_documented_example_is_valid() {
        for v in VARIABLES {
            assert!(!v.example.is_empty(), "{} has no example", v.name);
            assert_ne!(v.example, v.default, "{}: show something new", v.name);
            // PLUGIN_TARGETS excludes PLUGIN_HOST/PLUGIN_PORTS, which are unset here.
            Config::from_vars(vars(&[(v.name, v.example)]))
                .unwrap_or_else(|e| panic!("{}={}: {e}", v.name, v.example));
        }
    }

    #[test]
    fn plugin_ports_none_turns_the_fleet_off() {
        let c = ok(&[
            ("PLUGIN_PORTS", "none"),
            ("SCRAPE_TARGETS", "http://127.0.0.1:9100/metrics"),
        ]);
        assert_eq!(c.plugins.targets.len(), 0);
        assert_eq!(c.prometheus.targets.len(), 1);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = ok(&[("SCHEDULE", ""), ("PLUGIN_TARGETS", " ")]);
        assert_eq!(c.schedule.expr, DEFAULT_SCHEDULE);
        assert!(matches!(c.plugins.targets, Targets::Discover { .. }));
    }

    #[test]
    fn every_variable_is_read() {
        let c = ok(&[
            ("AWS_REGION", "eu-west-1"),
            ("CLOUDWATCH_NAMESPACE", "Team/Costs"),
            ("SCHEDULE", "*/10 * * * * *"),
            ("PLUGIN_HOST", "plugins.local"),
            ("PLUGIN_PORTS", "9001-9002,9005"),
            ("COST_RESOURCES", "s3:STANDARD?size=10"),
            ("TARGET_TIMEOUT", "750ms"),
            ("SHUTDOWN_TIMEOUT", "30s"),
            ("QUEUE_MAX_DATUMS", "10"),
            ("LOG_FORMAT", "text"),
            ("LOG_LEVEL", "DEBUG"),
        ]);
        assert_eq!(c.namespace, "Team/Costs");
        assert_eq!(
            c.plugins.targets,
            Targets::Discover {
                host: "plugins.local".into(),
                ports: vec![9001, 9002, 9005]
            }
        );
        assert_eq!(c.plugins.basket[0].sku, "STANDARD");
        assert_eq!(c.target_timeout, Duration::from_millis(750));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.buffer.queue_max_datums, 10);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_filter, "debug");
    }

    #[test]
    fn rust_log_wins_over_log_level() {
        let c = ok(&[
            ("LOG_LEVEL", "warn"),
            ("RUST_LOG", "info,cloudwatch_publisher=debug"),
        ]);
        assert_eq!(c.log_filter, "info,cloudwatch_publisher=debug");
    }

    #[test]
    fn every_bad_variable_is_named_at_once() {
        let e = bad(&[
            ("AWS_REGION", "Mars"),
            ("CLOUDWATCH_NAMESPACE", "AWS/EC2"),
            ("SCHEDULE", "every minute"),
            ("PLUGIN_PORTS", "8012-8001"),
            ("COST_RESOURCES", "ec2"),
            ("TARGET_TIMEOUT", "soon"),
            ("SHUTDOWN_TIMEOUT", "0s"),
            ("QUEUE_MAX_DATUMS", "-1"),
            ("LOG_FORMAT", "xml"),
            ("LOG_LEVEL", "loud"),
        ]);
        assert_eq!(
            e.variables(),
            [
                "AWS_REGION",
                "CLOUDWATCH_NAMESPACE",
                "SCHEDULE",
                "PLUGIN_PORTS",
                "COST_RESOURCES",
                "TARGET_TIMEOUT",
                "SHUTDOWN_TIMEOUT",
                "QUEUE_MAX_DATUMS",
                "LOG_FORMAT",
                "LOG_LEVEL",
            ]
        );
        let text = e.to_string();
        assert!(text.contains("SCHEDULE=\"every minute\""), "{text}");
        assert!(text.contains("seconds first"), "{text}");
        assert!(text.contains("AWS/ is reserved"), "{text}");
    }

    #[test]
    fn a_configuration_error_is_logged_in_the_format_asked_for_if_valid() {
        let e = bad(&[("LOG_FORMAT", "text"), ("SCHEDULE", "never")]);
        assert_eq!(e.log_format, LogFormat::Text);
        let e = bad(&[("LOG_FORMAT", "xml"), ("SCHEDULE", "never")]);
        assert_eq!(e.log_format, LogFormat::Json);
    }

    #[test]
    fn a_good_variable_beside_a_bad_one_is_not_reported() {
        let e = bad(&[("SCHEDULE", "*/5 * * * * *"), ("TARGET_TIMEOUT", "5")]);
        assert_eq!(e.variables(), ["TARGET_TIMEOUT"]);
    }

    #[test]
    fn five_field_cron_is_rejected_because_seconds_are_required() {
        assert_eq!(bad(&[("SCHEDULE", "* * * * *")]).variables(), ["SCHEDULE"]);
    }

    #[test]
    fn namespace_limits() {
        assert_eq!(
            bad(&[("CLOUDWATCH_NAMESPACE", &"n".repeat(256))]).variables(),
            ["CLOUDWATCH_NAMESPACE"]
        );
        ok(&[("CLOUDWATCH_NAMESPACE", &"n".repeat(255))]);
        assert_eq!(
            bad(&[("CLOUDWATCH_NAMESPACE", "tab\there")]).variables(),
            ["CLOUDWATCH_NAMESPACE"]
        );
    }

    #[test]
    fn region_names() {
        for good in [
            "us-east-1",
            "us-gov-west-1",
            "ap-southeast-2",
            "cn-north-1",
            "us-isob-east-1",
            "eusc-de-east-1",
            "ap-southeast-12",
        ] {
            assert!(is_region(good), "{good}");
        }
        let long = format!("us-{}-1", "a".repeat(2048));
        let just_over = format!("us-{}-{}-{}-1", "a".repeat(12), "b".repeat(12), "c");
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "useast1",
            "us--1",
            "us-east-1a",
            "x-y-1",
            "us-east-123",
            "us-a-b-c-d-1",
            "us-east1-1",
            long.as_str(),
            just_over.as_str(),
        ] {
            assert!(!is_region(bad), "{bad}");
        }
    }

    #[test]
    fn explicit_targets() {
        let c = ok(&[(
            "PLUGIN_TARGETS",
            "us-east-1=http://127.0.0.1:8001, us-west-1=http://plugins:8010/",
        )]);
        assert_eq!(
            c.plugins.targets,
            Targets::Explicit(vec![
                ExplicitTarget {
                    region: "us-east-1".into(),
                    base_url: "http://127.0.0.1:8001".into()
                },
                ExplicitTarget {
                    region: "us-west-1".into(),
                    base_url: "http://plugins:8010".into()
                },
            ])
        );
    }

    #[test]
    fn bad_explicit_targets_say_why() {
        for (spec, why) in [
            ("us-east-1", "no '='"),
            ("east=http://a:1", "not a region"),
            ("us-east-1=https://a:1", "plain http"),
            ("us-east-1=http://a:1/x", "only scheme"),
            ("us-east-1=http://u:p@a:1", "credentials"),
            ("us-east-1=http://a:1,us-east-1=http://a:2", "twice"),
        ] {
            let e = bad(&[("PLUGIN_TARGETS", spec)]);
            assert_eq!(e.variables(), ["PLUGIN_TARGETS"]);
            assert!(e.problems[0].expected.contains(why), "{spec}: {e}");
        }
    }

    #[test]
    fn targets_and_ports_together_are_ambiguous() {
        let e = bad(&[
            ("PLUGIN_TARGETS", "us-east-1=http://127.0.0.1:8001"),
            ("PLUGIN_PORTS", "8001"),
        ]);
        assert_eq!(e.variables(), ["PLUGIN_PORTS"]);
    }

    #[test]
    fn bad_host_is_named() {
        for host in ["http://x", "::1", "[not-ip]", "a b"] {
            assert_eq!(bad(&[("PLUGIN_HOST", host)]).variables(), ["PLUGIN_HOST"]);
        }
    }

    #[test]
    fn hosts_by_name_ipv4_or_bracketed_ipv6() {
        for host in [
            "localhost",
            "10.0.0.5",
            "plugins.svc.cluster.local",
            "[::1]",
        ] {
            let c = ok(&[("PLUGIN_HOST", host), ("PLUGIN_PORTS", "8001")]);
            assert_eq!(
                Target::from_config(&c.plugins.targets)[0].base_url,
                format!("http://{host}:8001")
            );
        }
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let e = bad(&[("SCHEDULE", &"x".repeat(100_000))]);
        assert!(e.problems[0].value.len() < 300);
        let e = bad(&[(
            "PLUGIN_TARGETS",
            &format!("us-east-1=http://{}:1", "h".repeat(100_000)),
        )]);
        assert!(e.to_string().len() < 1000, "{}", e.to_string().len());
        let e = bad(&[("COST_RESOURCES", &"ec2,".repeat(20_000))]);
        assert!(e.to_string().len() < 1000, "{}", e.to_string().len());
    }

    #[test]
    fn only_the_documented_upper_case_names_configure_the_agent() {
        // Both spellings set used to panic in envy ("duplicate field").
        let c = ok(&[("SCHEDULE", "*/5 * * * * *"), ("schedule", "*/7 * * * * *")]);
        assert_eq!(c.schedule.expr, "*/5 * * * * *");
        assert_eq!(c.ignored, ["schedule"]);
        let c = ok(&[("plugin_ports", "9999"), ("Log_Level", "debug")]);
        assert_eq!(c.plugins.targets.len(), 12);
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.ignored, ["Log_Level", "plugin_ports"]);
        assert!(
            ok(&[("PATH", "/bin"), ("HOME", "/root")])
                .ignored
                .is_empty()
        );
    }

    #[test]
    fn a_password_in_a_url_is_never_echoed() {
        let e = bad(&[("PLUGIN_TARGETS", "us-east-1=http://user:hunter2@host:8001")]);
        let text = e.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("http://***@host:8001"), "{text}");
        assert!(text.contains("credentials"), "{text}");
    }

    /// The URL shapes that used to print their secret: a `#`, `?` or `/` in the password,
    /// a query's values; in every variable that takes a URL, and in what each says.
    #[test]
    fn no_shape_of_url_echoes_its_secret() {
        let long = format!("http://u:{}@h:1/m", "s3cret".repeat(50));
        for (name, value) in [
            ("PLUGIN_TARGETS", "us-east-1=http://u:p#s3cret@host/"),
            ("PLUGIN_TARGETS", "us-east-1=http://u:p?s3cret@host:1"),
            ("PLUGIN_TARGETS", "us-east-1=http://u:p/s3cret@host:1/"),
            ("PLUGIN_TARGETS", "us-east-1=http://host:1/?token=s3cret"),
            ("PLUGIN_TARGETS", "http://u:p=s3cret@host:1"),
            ("SCRAPE_TARGETS", "http://u:p#s3cret@host/"),
            ("SCRAPE_TARGETS", "http://host:99999/m?token=s3cret"),
            (
                "SCRAPE_TARGETS",
                "http://h:1/m?t=s3cret,http://h:1/m?t=s3cret",
            ),
            ("SCRAPE_TARGETS", &long),
            ("PLUGIN_HOST", "http://u:s3cret@host"),
            // Found by fuzzing: the list's parser split the password at its comma and
            // quoted each half where neither looked like a URL.
            ("SCRAPE_TARGETS", "http://u:s3cret,s3cret@host/m"),
            ("PLUGIN_TARGETS", "us-east-1=http://u:s3cret,s3cret@host:1"),
            ("INCLUDE_METRICS", "http://h/m?t=a's3cret"),
        ] {
            let e = bad(&[(name, value)]);
            let text = e.to_string();
            assert!(!text.contains("s3cret"), "{name}={value}: {text}");
            assert_eq!(e.variables(), [name], "{name}={value}");
        }
        let text = bad(&[("PLUGIN_TARGETS", "us-east-1=http://u:p#s3cret@host/")]).to_string();
        assert!(text.contains("http://***@host/"), "{text}");
    }

    #[test]
    fn a_namespace_may_not_start_with_a_colon() {
        let e = bad(&[("CLOUDWATCH_NAMESPACE", ":foo")]);
        assert_eq!(e.variables(), ["CLOUDWATCH_NAMESPACE"]);
        assert!(e.to_string().contains("does not start with ':'"), "{e}");
        assert_eq!(
            ok(&[("CLOUDWATCH_NAMESPACE", "Team:Costs")]).namespace,
            "Team:Costs"
        );
    }

    /// RUST_LOG naming nothing that logs used to be taken, and the agent then printed
    /// nothing at all, errors included.
    #[test]
    fn rust_log_that_matches_nothing_is_refused_with_the_fix() {
        let e = bad(&[("RUST_LOG", "cloudwatch-publisher=debug")]);
        assert_eq!(e.variables(), ["RUST_LOG"]);
        assert!(
            e.to_string().contains("Fix: write cloudwatch_publisher"),
            "{e}"
        );
        let e = bad(&[("RUST_LOG", "null")]);
        assert_eq!(e.variables(), ["RUST_LOG"]);
        assert!(e.to_string().contains("not a level"), "{e}");
        assert_eq!(
            ok(&[("RUST_LOG", " warn , cloudwatch_publisher=debug")]).log_filter,
            "warn,cloudwatch_publisher=debug"
        );
    }

    #[test]
    fn a_schedule_that_never_fires_again_is_refused() {
        for never in ["0 0 0 1 1 * 2020", "0 0 0 31 2 MON", "0 0 0 30 2 *"] {
            let e = bad(&[("SCHEDULE", never)]);
            assert_eq!(e.variables(), ["SCHEDULE"], "{never}");
            assert!(e.to_string().contains("ticks still to come"), "{e}");
        }
        ok(&[("SCHEDULE", "0 0 0 29 2 *")]);
    }

    #[test]
    fn target_ports_must_be_written_and_in_range() {
        for (url, why) in [
            ("http://127.0.0.1:99999", "1-65535"),
            ("http://127.0.0.1:0", "1-65535"),
            ("http://127.0.0.1", "a port is needed"),
        ] {
            let e = bad(&[("PLUGIN_TARGETS", &format!("us-east-1={url}"))]);
            assert!(e.problems[0].expected.contains(why), "{url}: {e}");
        }
        ok(&[("PLUGIN_TARGETS", "us-east-1=http://127.0.0.1:65535")]);
        ok(&[("PLUGIN_TARGETS", "us-east-1=http://127.0.0.1:1")]);
    }

    /// The largest value of every bounded setting is accepted and the next one is not.
    #[test]
    fn upper_and_lower_bounds_of_every_setting() {
        let edges: &[(&str, &str, &str)] = &[
            ("TARGET_TIMEOUT", "1h", "3600001ms"),
            ("TARGET_TIMEOUT", "1ms", "999us"),
            ("SHUTDOWN_TIMEOUT", "1h", "61m"),
            ("SHUTDOWN_TIMEOUT", "1ms", "1ns"),
            ("QUEUE_MAX_DATUMS", "10000000", "10000001"),
            ("PLUGIN_PORTS", "1-1024", "1-1025"),
            ("PLUGIN_PORTS", "65535", "65536"),
            ("CLOUDWATCH_NAMESPACE", &"n".repeat(255), &"n".repeat(256)),
            ("AGENT_NAME", &"a".repeat(255), &"a".repeat(256)),
            ("HEALTH_ADDR", "127.0.0.1:65535", "127.0.0.1:65536"),
            ("AWS_REGION", "us-gov-west-1", "us-gov-west-100"),
        ];
        for (name, max, over) in edges {
            Config::from_vars(vars(&[(name, max)])).unwrap_or_else(|e| panic!("{name}={max}: {e}"));
            assert_eq!(bad(&[(name, over)]).variables(), [*name], "{name}={over}");
        }
        let basket = |n: usize| {
            (0..n)
                .map(|i| format!("ec2:t{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        ok(&[("COST_RESOURCES", &basket(basket::MAX_ENTRIES))]);
        let over = basket(basket::MAX_ENTRIES + 1);
        assert_eq!(
            bad(&[("COST_RESOURCES", &over)]).variables(),
            ["COST_RESOURCES"]
        );
    }

    #[test]
    fn variables_table_lists_each_variable_once() {
        let names: BTreeSet<_> = VARIABLES.iter().map(|v| v.name).collect();
        assert_eq!(names.len(), VARIABLES.len());
    }

    mod syntaxes {
        use super::*;
        use proptest::prelude::*;

        /// Text a user might paste: printable, separators and control characters alike.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                "\\PC{0,60}",
                "[a-z0-9=:/,?&.* \\-]{0,80}",
                any::<String>().prop_map(|s| s.chars().take(80).collect()),
            ]
        }

        proptest! {
            /// Any value of any variable is taken or refused with that variable named:
            /// never a panic, never a problem blamed on another variable.
            #[test]
            fn any_value_of_any_variable_is_taken_or_named(
                i in 0..VARIABLES.len(),
                text in value(),
            ) {
                let name = VARIABLES[i].name;
                // PLUGIN_TARGETS excludes the discovery pair by design; named with them.
                let allowed: &[&str] = if name == "PLUGIN_TARGETS" {
                    &["PLUGIN_TARGETS", "PLUGIN_HOST", "PLUGIN_PORTS"]
                } else {
                    &[name]
                };
                match Config::from_vars(vars(&[(name, &text)])) {
                    Ok(_) => {}
                    Err(e) => {
                        for v in e.variables() {
                            prop_assert!(allowed.contains(&v), "{name}={text:?} blamed {v}");
                        }
                        prop_assert!(!e.to_string().is_empty());
                    }
                }
            }

            /// Several variables wrong at once are all named at once.
            #[test]
            fn every_bad_variable_is_named(texts in prop::collection::vec(value(), VARIABLES.len())) {
                let pairs: Vec<(&str, &str)> = VARIABLES
                    .iter()
                    .zip(&texts)
                    .filter(|(v, _)| v.name != "PLUGIN_TARGETS")
                    .map(|(v, t)| (v.name, t.as_str()))
                    .collect();
                let _ = Config::from_vars(vars(&pairs));
            }
        }
    }
}
