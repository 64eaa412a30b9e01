//! The plugin source's configuration: where the plugins are (PLUGIN_HOST and PLUGIN_PORTS,
//! or PLUGIN_TARGETS) and what to price (COST_RESOURCES). The source owns these variables'
//! syntax and their entries in the agent's one list, `config::VARIABLES`.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::basket::{self, Resource};
use crate::config::{Problems, Variable, check_region};
use crate::untrusted;

pub const DEFAULT_BASKET: &str = "ec2:t3.micro,ec2:m5.large,ebs:gp3?size=100";
pub const DEFAULT_PORTS: &str = "8001-8012";
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const PLUGIN_HOST: Variable = Variable {
    name: "PLUGIN_HOST",
    default: DEFAULT_HOST,
    meaning: "host of the plugin fleet, with PLUGIN_PORTS",
    example: "finfocus-plugin",
};

pub const PLUGIN_PORTS: Variable = Variable {
    name: "PLUGIN_PORTS",
    default: DEFAULT_PORTS,
    meaning: "ports to discover regional plugins on: ranges and lists, 8001-8010,8012; none for no fleet",
    example: "8001-8009,8012",
};

pub const PLUGIN_TARGETS: Variable = Variable {
    name: "PLUGIN_TARGETS",
    default: "",
    meaning: "explicit targets instead: region=http://host:port,...",
    example: "us-east-1=http://127.0.0.1:8001,us-west-1=http://127.0.0.1:8010",
};

pub const COST_RESOURCES: Variable = Variable {
    name: "COST_RESOURCES",
    default: DEFAULT_BASKET,
    meaning: "basket priced in every region: type:sku[?tag=value&...],..., at most 50; none disables",
    example: "ec2:t3.micro,s3:STANDARD?size=500",
};

/// The plugin source's part of the configuration, validated.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    pub targets: Targets,
    pub basket: Vec<Resource>,
}

/// This source's variables as envy reads them: text, so each is validated on its own.
#[derive(Debug, Default, Deserialize)]
pub struct Raw {
    plugin_host: Option<String>,
    plugin_ports: Option<String>,
    plugin_targets: Option<String>,
    cost_resources: Option<String>,
}

/// Validates this source's variables, reporting each problem; None when any was bad.
pub fn parse(raw: Raw, problems: &mut Problems) -> Option<PluginsConfig> {
    let targets = match raw.plugin_targets {
        Some(spec) => {
            for (name, value) in [
                ("PLUGIN_HOST", &raw.plugin_host),
                ("PLUGIN_PORTS", &raw.plugin_ports),
            ] {
                if let Some(v) = value {
                    problems.bad(
                        name,
                        v,
                        "unset when PLUGIN_TARGETS is set: use one way to name targets".into(),
                    );
                }
            }
            match parse_targets(&spec) {
                Ok(t) => Some(Targets::Explicit(t)),
                Err(why) => {
                    problems.bad("PLUGIN_TARGETS", &spec, why);
                    None
                }
            }
        }
        None => {
            let host = raw.plugin_host.unwrap_or_else(|| DEFAULT_HOST.into());
            let host_ok = is_host(&host);
            if !host_ok {
                problems.bad(
                    "PLUGIN_HOST",
                    &host,
                    "a host name, IPv4 address or [IPv6] address, without scheme or port".into(),
                );
            }
            let ports_spec = raw.plugin_ports.unwrap_or_else(|| DEFAULT_PORTS.into());
            // `none`: no plugin fleet, for an agent that only scrapes Prometheus endpoints.
            let ports = match ports_spec.trim() {
                "none" => Ok(Vec::new()),
                spec => parse_ports(spec),
            };
            match ports {
                Ok(ports) if host_ok => Some(Targets::Discover { host, ports }),
                Ok(_) => None,
                Err(why) => {
                    problems.bad("PLUGIN_PORTS", &ports_spec, why);
                    None
                }
            }
        }
    };

    let basket_spec = raw.cost_resources.unwrap_or_else(|| DEFAULT_BASKET.into());
    let basket = match basket::parse(&basket_spec) {
        Ok(b) => Some(b),
        Err(errors) => {
            let why = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            problems.bad(
                "COST_RESOURCES",
                &basket_spec,
                format!("type:sku[?tag=value&...] entries, comma separated: {why}"),
            );
            None
        }
    };

    Some(PluginsConfig {
        targets: targets?,
        basket: basket?,
    })
}

/// Where the plugins are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Probe these ports; each plugin says which region it serves.
    Discover { host: String, ports: Vec<u16> },
    /// These targets are expected, each under the region given.
    Explicit(Vec<ExplicitTarget>),
}

impl Targets {
    /// How many endpoints will be probed each cycle.
    pub fn len(&self) -> usize {
        match self {
            Targets::Discover { ports, .. } => ports.len(),
            Targets::Explicit(list) => list.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplicitTarget {
    pub region: String,
    /// `http://host:port`, without a trailing slash.
    pub base_url: String,
}

/// A DNS name, an IPv4 address, or an IPv6 address in brackets (`[::1]`), as it goes into a URL.
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// At most this many ports are probed: each is a connection every cycle.
pub const MAX_PORTS: usize = 1024;

/// `8001-8012`, `8001,8003`, `8001-8009,8012`: distinct ports in the order given.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, String> {
    const EXPECTED: &str =
        "ports 1-65535 as a comma-separated list of ports and ranges, e.g. 8001-8012";
    let too_many = || format!("{EXPECTED} (at most {MAX_PORTS} ports)");
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for part in spec.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) else {
            return Err(format!(
                "{EXPECTED} ({:?} is not a port or range)",
                untrusted::shown_url(part, 40)
            ));
        };
        if lo == 0 {
            return Err(format!(
                "{EXPECTED} ({part:?} holds port 0, which cannot be probed: the lowest port is 1)"
            ));
        }
        if lo > hi {
            return Err(format!(
                "{EXPECTED} ({part:?} is reversed: write the lower port first, {hi}-{lo})"
            ));
        }
        // Checked before expanding, so a thousand 1-65535 ranges cost no time.
        if usize::from(hi - lo) >= MAX_PORTS {
            return Err(too_many());
        }
        for p in lo..=hi {
            if seen.insert(p) {
                ports.push(p);
            }
        }
        if ports.len() > MAX_PORTS {
            return Err(too_many());
        }
    }
    Ok(ports)
}

/// `us-east-1=http://127.0.0.1:8001,...`.
pub fn parse_targets(spec: &str) -> Result<Vec<ExplicitTarget>, String> {
    const EXPECTED: &str = "region=http://host:port pairs, comma separated";
    let mut targets: Vec<ExplicitTarget> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for part in spec.split(',').map(str::trim) {
        let Some((region, url)) = part.split_once('=') else {
            return Err(format!(
                "{EXPECTED} ({:?} has no '=')",
                untrusted::shown_url(part, 80)
            ));
        };
        let (region, url) = (region.trim(), url.trim());
        check_region(region, EXPECTED)?;
        let base_url = parse_base_url(url)
            .map_err(|why| format!("{EXPECTED} ({:?}: {why})", untrusted::shown_url(url, 80)))?;
        if !seen.insert(region) {
            return Err(format!("{EXPECTED} ({region} is listed twice)"));
        }
        targets.push(ExplicitTarget {
            region: region.to_string(),
            base_url,
        });
    }
    Ok(targets)
}

fn parse_base_url(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("the plugins serve plain http on the local network; use http://".into());
    }
    let Some(authority) = uri.authority() else {
        return Err("a host is needed".into());
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("give only scheme, host and port".into());
    }
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    // The URI parser takes any digits as a port and a missing one as 80; the plugins
    // listen on their own ports, so it must be written and be 1-65535.
    let port = authority
        .as_str()
        .rsplit_once(':')
        .filter(|(_, port)| !port.ends_with(']'))
        .map(|(_, port)| port);
    match port.map(str::parse::<u16>) {
        None => return Err("a port is needed, e.g. http://127.0.0.1:8001".into()),
        Some(Ok(1..)) => {}
        Some(_) => return Err("the port must be 1-65535".into()),
    }
    Ok(format!("http://{authority}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn port_lists_and_ranges() {
        assert_eq!(parse_ports("8001-8003").unwrap(), [8001, 8002, 8003]);
        assert_eq!(
            parse_ports("8005, 8001-8002,8005").unwrap(),
            [8005, 8001, 8002]
        );
        for bad in ["", "0", "8001-", "abc", "70000", "9-1", "1-2000"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    /// `PLUGIN_PORTS=0` used to say "is empty or reversed".
    #[test]
    fn port_zero_and_reversed_ranges_are_named_for_what_they_are() {
        for spec in ["0", "0-5", "8001,0"] {
            let why = parse_ports(spec).unwrap_err();
            assert!(why.contains("holds port 0"), "{spec}: {why}");
            assert!(why.contains("ports 1-65535"), "{spec}: {why}");
            assert!(!why.contains("empty or reversed"), "{spec}: {why}");
        }
        let why = parse_ports("8012-8001").unwrap_err();
        assert!(
            why.contains("is reversed: write the lower port first, 8001-8012"),
            "{why}"
        );
    }

    /// A password or query value in a target is never echoed, whatever it holds, and a
    /// long one is redacted before it is cut (the @ could lie beyond the cut).
    #[test]
    fn a_targets_secret_is_never_in_its_error() {
        let long = format!("us-east-1=http://u:{}@h:1", "s3cret".repeat(40));
        for spec in [
            "us-east-1=http://u:p#s3cret@h:1",
            "us-east-1=http://u:p/s3cret@h:1/",
            "us-east-1=http://h:1/?token=s3cret",
            "us-east-1=http://h:0?token=s3cret",
            "http://u:s3cret@h:1",
            long.as_str(),
        ] {
            let why = parse_targets(spec).unwrap_err();
            assert!(!why.contains("s3cret"), "{spec}: {why}");
        }
    }

    #[test]
    fn a_thousand_full_ranges_are_refused_without_expanding_them() {
        let spec = vec!["1-65535"; 1000].join(",");
        let started = std::time::Instant::now();
        assert!(parse_ports(&spec).unwrap_err().contains("at most 1024"));
        assert!(started.elapsed() < Duration::from_millis(50));
        let spec: Vec<String> = (1..=1025).map(|p| p.to_string()).collect();
        assert!(parse_ports(&spec.join(",")).is_err());
    }
}
