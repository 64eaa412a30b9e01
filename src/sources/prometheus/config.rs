//! The Prometheus source's configuration: what to scrape (SCRAPE_TARGETS), which families
//! to publish (INCLUDE_METRICS, EXCLUDE_METRICS), which labels never become dimensions
//! (DROP_LABELS) and how many CloudWatch metrics a target may create
//! (MAX_SERIES_PER_TARGET). The source owns these variables' syntax and their entries in
//! `config::VARIABLES`.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::parse::is_label_name;
use crate::config::{Problems, Variable, check_region};
use crate::untrusted;

pub const DEFAULT_MAX_SERIES: &str = "500";
/// The most endpoints scraped: each is a request every cycle.
pub const MAX_TARGETS: usize = 100;
const MAX_SERIES_LIMIT: usize = 100_000;

pub const SCRAPE_TARGETS: Variable = Variable {
    name: "SCRAPE_TARGETS",
    default: "",
    meaning: "Prometheus endpoints scraped each cycle: [region=]url,...; region becomes the Region dimension",
    example: "us-east-1=http://127.0.0.1:9090/metrics,http://127.0.0.1:9100/metrics",
};
pub const INCLUDE_METRICS: Variable = Variable {
    name: "INCLUDE_METRICS",
    default: "",
    meaning: "only these families are published: globs (* and ?), comma separated; empty for all",
    example: "node_load*,node_memory_MemAvailable_bytes",
};
pub const EXCLUDE_METRICS: Variable = Variable {
    name: "EXCLUDE_METRICS",
    default: "",
    meaning: "families never published: globs (* and ?), comma separated",
    example: "go_*,promhttp_*",
};
pub const DROP_LABELS: Variable = Variable {
    name: "DROP_LABELS",
    default: "",
    meaning: "label names never made dimensions, comma separated",
    example: "instance,job",
};
pub const MAX_SERIES_PER_TARGET: Variable = Variable {
    name: "MAX_SERIES_PER_TARGET",
    default: DEFAULT_MAX_SERIES,
    meaning: "CloudWatch metrics one scrape target may create ($0.30 each a month); 1-100000",
    example: "2000",
};

/// One endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// `scheme://host[:port]/path[?query]`, as requested.
    pub url: String,
    pub region: Option<String>,
}

/// The Prometheus source's part of the configuration, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrometheusConfig {
    pub targets: Vec<ScrapeTarget>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub drop_labels: BTreeSet<String>,
    pub max_series: usize,
}

/// This source's variables as envy reads them: text, so each is validated on its own.
#[derive(Debug, Default, Deserialize)]
pub struct Raw {
    scrape_targets: Option<String>,
    include_metrics: Option<String>,
    exclude_metrics: Option<String>,
    drop_labels: Option<String>,
    max_series_per_target: Option<String>,
}

/// Validates this source's variables, reporting each problem; None when any was bad.
pub fn parse(raw: Raw, problems: &mut Problems) -> Option<PrometheusConfig> {
    let targets = match raw.scrape_targets.as_deref().map(parse_targets) {
        None => Some(Vec::new()),
        Some(Ok(t)) => Some(t),
        Some(Err(why)) => {
            problems.bad(
                "SCRAPE_TARGETS",
                raw.scrape_targets.as_deref().unwrap_or(""),
                why,
            );
            None
        }
    };
    let mut globs = |name: &'static str, value: Option<String>| match value {
        None => Some(Vec::new()),
        Some(text) => match list(&text, is_glob) {
            Ok(g) => Some(g),
            Err(bad) => {
                problems.bad(
                    name,
                    &text,
                    format!(
                        "metric-name globs (letters, digits, _, :, * and ?), comma separated ({:?} is not one)",
                        untrusted::shown_url(&bad, 40)
                    ),
                );
                None
            }
        },
    };
    let include = globs("INCLUDE_METRICS", raw.include_metrics);
    let exclude = globs("EXCLUDE_METRICS", raw.exclude_metrics);
    let drop_labels = match raw.drop_labels {
        None => Some(BTreeSet::new()),
        Some(text) => match list(&text, is_label_name) {
            Ok(l) => Some(l.into_iter().collect()),
            Err(bad) => {
                problems.bad(
                    "DROP_LABELS",
                    &text,
                    format!(
                        "label names, comma separated ({:?} is not one)",
                        untrusted::shown_url(&bad, 40)
                    ),
                );
                None
            }
        },
    };
    let max_text = raw
        .max_series_per_target
        .unwrap_or_else(|| DEFAULT_MAX_SERIES.into());
    let max_series = match max_text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_SERIES_LIMIT).contains(&n) => Some(n),
        _ => {
            problems.bad(
                "MAX_SERIES_PER_TARGET",
                &max_text,
                format!("a whole number from 1 to {MAX_SERIES_LIMIT}"),
            );
            None
        }
    };
    Some(PrometheusConfig {
        targets: targets?,
        include: include?,
        exclude: exclude?,
        drop_labels: drop_labels?,
        max_series: max_series?,
    })
}

/// A comma-separated list whose every item passes `valid`; Err names the first that does not.
fn list(text: &str, valid: fn(&str) -> bool) -> Result<Vec<String>, String> {
    text.split(',')
        .map(str::trim)
        .map(|item| {
            if valid(item) {
                Ok(item.to_string())
            } else {
                Err(item.to_string())
            }
        })
        .collect()
}

fn is_glob(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'*' | b'?'))
}

/// `[region=]url,...`: http or https, no credentials in the URL, each URL once.
pub fn parse_targets(spec: &str) -> Result<Vec<ScrapeTarget>, String> {
    const EXPECTED: &str = "[region=]http(s)://host[:port]/path entries, comma separated";
    // Counted before anything is parsed, so a long list costs no more than its split (and
    // the duplicate check below compares at most 100 URLs).
    if spec.split(',').count() > MAX_TARGETS {
        return Err(format!("{EXPECTED} (at most {MAX_TARGETS} targets)"));
    }
    let mut targets: Vec<ScrapeTarget> = Vec::new();
    for entry in spec.split(',').map(str::trim) {
        let (region, url) = match entry.split_once('=') {
            Some((region, url)) if !region.contains("://") => (Some(region.trim()), url.trim()),
            _ => (None, entry),
        };
        if let Some(r) = region {
            check_region(r, EXPECTED)?;
        }
        let url = parse_url(url)
            .map_err(|why| format!("{EXPECTED} ({:?}: {why})", untrusted::shown_url(url, 80)))?;
        if targets.iter().any(|t| t.url == url) {
            return Err(format!(
                "{EXPECTED} ({} is listed twice)",
                untrusted::shown_url(&url, 200)
            ));
        }
        targets.push(ScrapeTarget {
            url,
            region: region.map(str::to_string),
        });
    }
    Ok(targets)
}

/// The URL as it will be requested; a bare host gets `/metrics`.
fn parse_url(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("use http:// or https://".into());
    }
    let Some(authority) = uri.authority() else {
        return Err("a host is needed".into());
    };
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    if let Some((_, port)) = authority
        .as_str()
        .rsplit_once(':')
        .filter(|(_, p)| !p.ends_with(']'))
        && !matches!(port.parse::<u16>(), Ok(1..))
    {
        return Err("the port must be 1-65535".into());
    }
    let path = match uri.path() {
        "" | "/" => "/metrics",
        p => p,
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!(
        "{}://{authority}{path}{query}",
        uri.scheme_str().unwrap_or("http")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> Raw {
        envy::from_iter(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn problems_of(pairs: &[(&str, &str)]) -> Vec<&'static str> {
        let mut p = Problems::default();
        assert!(parse(raw(pairs), &mut p).is_none());
        p.variables()
    }

    #[test]
    fn nothing_set_scrapes_nothing_with_a_500_series_cap() {
        let mut p = Problems::default();
        let c = parse(raw(&[]), &mut p).unwrap();
        assert_eq!(c.targets, []);
        assert_eq!(c.max_series, 500);
    }

    #[test]
    fn targets_with_and_without_a_region() {
        let t = parse_targets(
            "us-east-1=http://127.0.0.1:9090/metrics, https://exporter.internal, http://h:9100/x?format=prometheus",
        )
        .unwrap();
        assert_eq!(
            t,
            [
                ScrapeTarget {
                    url: "http://127.0.0.1:9090/metrics".into(),
                    region: Some("us-east-1".into())
                },
                ScrapeTarget {
                    url: "https://exporter.internal/metrics".into(),
                    region: None
                },
                ScrapeTarget {
                    url: "http://h:9100/x?format=prometheus".into(),
                    region: None
                },
            ]
        );
    }

    #[test]
    fn bad_targets_say_why_and_never_echo_a_password() {
        for (spec, why) in [
            ("ftp://h/metrics", "http:// or https://"),
            ("east=http://h:1", "not a region"),
            ("http://u:hunter2@h:1/metrics", "credentials"),
            ("http://h:99999", "1-65535"),
            ("http://h:1,http://h:1/metrics", "twice"),
            ("not a url", "not a URL"),
        ] {
            let e = parse_targets(spec).unwrap_err();
            assert!(e.contains(why), "{spec}: {e}");
        }
        let mut p = Problems::default();
        parse(raw(&[("SCRAPE_TARGETS", "http://u:hunter2@h:1/m")]), &mut p);
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn at_most_100_targets() {
        let spec: Vec<String> = (0..101)
            .map(|i| format!("http://h:{}/m", 9000 + i))
            .collect();
        assert!(
            parse_targets(&spec.join(","))
                .unwrap_err()
                .contains("at most 100")
        );
        assert!(parse_targets(&spec[..100].join(",")).is_ok());
    }

    #[test]
    fn filters_labels_and_cap_are_checked() {
        assert_eq!(
            problems_of(&[("INCLUDE_METRICS", "node_*,bad glob")]),
            ["INCLUDE_METRICS"]
        );
        assert_eq!(
            problems_of(&[("EXCLUDE_METRICS", "go_*,")]),
            ["EXCLUDE_METRICS"]
        );
        assert_eq!(
            problems_of(&[("DROP_LABELS", "instance,9x")]),
            ["DROP_LABELS"]
        );
        assert_eq!(
            problems_of(&[("MAX_SERIES_PER_TARGET", "0")]),
            ["MAX_SERIES_PER_TARGET"]
        );
        assert_eq!(
            problems_of(&[("MAX_SERIES_PER_TARGET", "100001")]),
            ["MAX_SERIES_PER_TARGET"]
        );
        let mut p = Problems::default();
        let c = parse(
            raw(&[
                ("INCLUDE_METRICS", "node_*, up"),
                ("DROP_LABELS", "instance , job"),
                ("MAX_SERIES_PER_TARGET", "100000"),
            ]),
            &mut p,
        )
        .unwrap();
        assert_eq!(c.include, ["node_*", "up"]);
        assert_eq!(c.drop_labels.len(), 2);
        assert_eq!(c.max_series, 100_000);
    }
}
