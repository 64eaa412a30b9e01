//! Fuzzing invariants for the config surface (see [`super`]): the bytes as an environment,
//! read by the agent's own [`Config::from_vars`].
//!
//! The bytes are records separated by NUL (which no environment value can hold). A record's
//! first byte picks the name (one of [`VARIABLES`], `RUST_LOG`, a lower-case lookalike or a
//! variable the agent does not read) and a shape; the rest is the value. Some shapes plant a
//! secret, [`SECRET`], in a URL's password, query or fragment around the value, the way a
//! user pastes one into `SCRAPE_TARGETS` or `PLUGIN_TARGETS`.
//!
//! Whatever the bytes: no panic; a [`Config`], or a [`ConfigError`] that names exactly the
//! variables that are bad (each judged alone, and the few rules between variables as
//! documented), each once; an error's text bounded per variable, on one line (no control
//! character) and without the secret; and with a [`Config`], no URL the agent prints or
//! publishes (a target's URL redacted as logs, dimensions and `/metrics` show it) holds the
//! secret.

use std::collections::BTreeSet;

use crate::config::{Config, ConfigError, VARIABLES};
use crate::sources::plugins::Target;
use crate::untrusted;

/// The planted secret: a character stripped from every fuzzed value, so any trace of it in
/// the output, even one cut short, is a leak.
pub const SECRET: &str = "\u{a7}\u{a7}";
const SECRET_CHAR: char = '\u{a7}';

/// The longest value tried: past the agent's own caps, short enough to run fast.
const MAX_VALUE_BYTES: usize = 16 * 1024;
/// The most bytes of an error's text per variable it names: a value echoed cut to 200
/// characters (each at most 10 bytes once escaped), a reason cut to 400 (4 bytes each).
const MAX_ERROR_BYTES_PER_VARIABLE: usize = 4096;

/// Runs the agent's own code on `data` and panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let vars = environment(data);
    let result = Config::from_vars(vars.clone());
    match result {
        Ok(config) => check_config(&config),
        Err(e) => check_error(&e, &vars),
    }
}

/// The names a record can set: the agent's variables, RUST_LOG, and two it must ignore.
fn names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = VARIABLES.iter().map(|v| v.name).collect();
    names.extend(["RUST_LOG", "schedule", "PATH"]);
    names
}

/// The environment the bytes describe: one value per name, the last one written winning,
/// as in a real environment.
fn environment(data: &[u8]) -> Vec<(String, String)> {
    let names = names();
    let mut vars: Vec<(String, String)> = Vec::new();
    for record in data.split(|&b| b == 0) {
        let Some((&pick, value)) = record.split_first() else {
            continue;
        };
        let name = names[usize::from(pick) % names.len()];
        let value = String::from_utf8_lossy(&value[..value.len().min(MAX_VALUE_BYTES)])
            .replace(SECRET_CHAR, "");
        let value = shape(usize::from(pick) / names.len(), &value);
        vars.retain(|(n, _)| n != name);
        vars.push((name.to_string(), value));
    }
    vars
}

/// `value` as is, or inside a URL that carries the secret where users put them.
fn shape(kind: usize, value: &str) -> String {
    match kind {
        1 => format!("http://u:{SECRET}@{value}"),
        2 => format!("us-east-1=http://u:p#{SECRET}@{value}"),
        3 => format!("http://{value}/m?token={SECRET}&format=text"),
        4 => format!("{value},https://{SECRET}@h:9100/m?k={SECRET}#f={SECRET}"),
        5 => format!("us-east-1=http://h:1/{value}?{SECRET}"),
        6 => format!("http://u:p/{SECRET}@h:1/{value}"),
        7 => format!("{value}=http://u:p?{SECRET}@h:1"),
        _ => value.to_string(),
    }
}

fn is_set(vars: &[(String, String)], name: &str) -> bool {
    vars.iter()
        .any(|(n, v)| n == name && (name == "HEALTH_ADDR" || !v.trim().is_empty()))
}

/// The variables that should be named: each one set that is refused on its own, and the
/// documented rules between variables (PLUGIN_TARGETS excludes PLUGIN_HOST and
/// PLUGIN_PORTS; with RUST_LOG set, LOG_LEVEL is not read).
fn expected_bad(vars: &[(String, String)]) -> BTreeSet<&'static str> {
    let explicit = is_set(vars, "PLUGIN_TARGETS");
    let mut bad = BTreeSet::new();
    for v in VARIABLES {
        let Some((_, value)) = vars.iter().find(|(n, _)| n == v.name) else {
            continue;
        };
        if !is_set(vars, v.name) || (v.name == "LOG_LEVEL" && is_set(vars, "RUST_LOG")) {
            continue;
        }
        let excluded = explicit && matches!(v.name, "PLUGIN_HOST" | "PLUGIN_PORTS");
        if excluded || alone_is_bad(v.name, value) {
            bad.insert(v.name);
        }
    }
    if let Some((_, value)) = vars.iter().find(|(n, _)| n == "RUST_LOG")
        && is_set(vars, "RUST_LOG")
        && alone_is_bad("RUST_LOG", value)
    {
        bad.insert("RUST_LOG");
    }
    bad
}

fn alone_is_bad(name: &str, value: &str) -> bool {
    Config::from_vars([(name.to_string(), value.to_string())]).is_err()
}

fn check_error(e: &ConfigError, vars: &[(String, String)]) {
    let named = e.variables();
    let unique: BTreeSet<&'static str> = named.iter().copied().collect();
    assert_eq!(
        unique.len(),
        named.len(),
        "a variable named twice: {named:?}"
    );
    assert_eq!(unique, expected_bad(vars), "{e}");
    let text = e.to_string();
    assert!(
        text.len() <= named.len() * MAX_ERROR_BYTES_PER_VARIABLE,
        "{} bytes for {} variables",
        text.len(),
        named.len()
    );
    assert!(!text.contains(SECRET_CHAR), "the secret is echoed: {text}");
    assert!(
        !text.chars().any(char::is_control),
        "a control character in: {text:?}"
    );
}

fn check_config(config: &Config) {
    for target in &config.prometheus.targets {
        let shown = untrusted::redact_urls(&target.url);
        assert!(!shown.contains(SECRET_CHAR), "published as {shown}");
    }
    for target in Target::from_config(&config.plugins.targets) {
        let shown = untrusted::redact_urls(&target.base_url);
        assert!(!shown.contains(SECRET_CHAR), "logged as {shown}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pick: usize, value: &str) -> Vec<u8> {
        let mut out = vec![u8::try_from(pick).unwrap()];
        out.extend_from_slice(value.as_bytes());
        out.push(0);
        out
    }

    fn index(name: &str) -> usize {
        names().iter().position(|n| *n == name).unwrap()
    }

    #[test]
    fn the_bytes_pick_names_shapes_and_values() {
        let n = names().len();
        let mut data = record(index("SCHEDULE"), "never");
        data.extend(record(n + index("SCRAPE_TARGETS"), "h:1"));
        data.extend(record(index("SCHEDULE"), "*/5 * * * * *"));
        assert_eq!(
            environment(&data),
            [
                (
                    "SCRAPE_TARGETS".to_string(),
                    format!("http://u:{SECRET}@h:1")
                ),
                ("SCHEDULE".to_string(), "*/5 * * * * *".to_string()),
            ]
        );
    }

    /// The defect repros hold their invariants (they are also seeds in fuzz/corpus/config).
    #[test]
    fn the_repros_keep_the_invariants() {
        let n = names().len();
        for data in [
            record(index("PLUGIN_TARGETS"), "us-east-1=http://u:p#s3cret@host/"),
            record(2 * n + index("PLUGIN_TARGETS"), "host/"),
            record(3 * n + index("SCRAPE_TARGETS"), "h:9100"),
            record(index("RUST_LOG"), "null"),
            record(index("RUST_LOG"), "cloudwatch-publisher=debug"),
            record(index("CLOUDWATCH_NAMESPACE"), ":foo"),
            record(index("PLUGIN_PORTS"), "0"),
            // Found by fuzzing (fuzz/artifacts/config): a token split from its URL at a
            // comma by the list's parser, then quoted where it no longer looked like one.
            record(5 * n + index("SCRAPE_TARGETS"), "a,b"),
            record(3 * n + index("COST_RESOURCES"), "h,x"),
            record(3 * n + index("EXCLUDE_METRICS"), "h/m?t=a'b"),
        ] {
            run(&data);
        }
    }

    proptest::proptest! {
        /// The fuzz target's invariants on the stable toolchain, from bytes that are mostly
        /// records of printable text, so the variables' syntaxes are reached.
        #[test]
        fn random_environments_keep_the_invariants(
            records in proptest::collection::vec(
                (0u8..=255, "[ -~]{0,40}|\\PC{0,20}|[a-z0-9=:/,?&.*@# \\-]{0,60}"),
                0..12,
            )
        ) {
            let mut data = Vec::new();
            for (pick, value) in records {
                data.push(pick);
                data.extend_from_slice(value.as_bytes());
                data.push(0);
            }
            run(&data);
        }
    }

    /// What the fuzzer is for: a leak is caught. A secret echoed raw breaks the invariant.
    #[test]
    #[should_panic(expected = "the secret is echoed")]
    fn a_leak_is_caught() {
        let vars = vec![("SCHEDULE".to_string(), "x".to_string())];
        let mut e = Config::from_vars(vars.clone()).unwrap_err();
        e.problems[0].value = SECRET.into();
        check_error(&e, &vars);
    }
}
