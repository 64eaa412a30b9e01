//! The source: probes every plugin target of the fleet concurrently and collects samples.
//!
//! Region identity comes from the plugins themselves (GetPluginInfo `metadata.region`),
//! because a fixed port-to-region map mislabels data when the fleet's layout changes. The
//! last region a target reported is remembered, so a target that goes down is reported
//! unhealthy under the region it served. A discovered port that never answered is not a
//! region and yields nothing.

pub mod basket;
pub mod client;
pub mod config;
pub mod region_memory;
pub mod sample;
pub mod transform;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::untrusted;
use basket::Resource;
use client::{CallError, Health, PluginClient, ProjectedCost};
use config::Targets;
use region_memory::{CONFIRM_CYCLES, Decision, Event, Memory};
use sample::Sample;

use crate::sources::{Collected, Summary, TargetStatus};

/// Cost queries one target is asked at once: a large basket must not open a connection per
/// entry to one plugin.
pub const MAX_CONCURRENT_QUERIES: usize = 4;

/// One plugin endpoint to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port`.
    pub base_url: String,
    /// The region the user said this target serves (PLUGIN_TARGETS only).
    pub configured_region: Option<String>,
}

impl Target {
    pub fn from_config(targets: &Targets) -> Vec<Target> {
        match targets {
            Targets::Discover { host, ports } => ports
                .iter()
                .map(|p| Target {
                    base_url: format!("http://{host}:{p}"),
                    configured_region: None,
                })
                .collect(),
            Targets::Explicit(list) => list
                .iter()
                .map(|t| Target {
                    base_url: t.base_url.clone(),
                    configured_region: Some(t.region.clone()),
                })
                .collect(),
        }
    }
}

/// What one target answered in one cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub health: Health,
    /// The well-formed region the plugin reported this cycle, if it answered GetPluginInfo.
    pub reported_region: Option<String>,
    pub plugin_version: Option<String>,
    pub info_error: Option<CallError>,
    /// One result per basket resource, in basket order; empty when not asked.
    pub costs: Vec<Result<ProjectedCost, CallError>>,
}

/// What one cycle of collection produced, before the transform.
#[derive(Debug, Default)]
struct Collection {
    samples: Vec<Sample>,
    statuses: Vec<TargetStatus>,
    summary: Summary,
}

pub struct Collector {
    client: PluginClient,
    targets: Vec<Target>,
    basket: Vec<Resource>,
    timeout: Duration,
    /// What each target reported, by base URL (see [`region_memory`]).
    memory: HashMap<String, Memory>,
}

impl Collector {
    pub fn new(config: &Config) -> Self {
        Collector {
            client: PluginClient::new(),
            targets: Target::from_config(&config.plugins.targets),
            basket: config.plugins.basket.clone(),
            timeout: config.target_timeout,
            memory: HashMap::new(),
        }
    }

    /// Probes all targets at once; each has TARGET_TIMEOUT for all its requests, so the
    /// whole collection lasts as long as the slowest target and never longer than that.
    pub async fn collect(&mut self, timestamp: SystemTime) -> Collected {
        let deadline = Instant::now() + self.timeout;
        let no_memory = Memory::default();
        let probes = join_all(self.targets.iter().map(|t| {
            let memory = self.memory.get(&t.base_url).unwrap_or(&no_memory);
            probe(&self.client, t, memory, &self.basket, deadline)
        }))
        .await;

        let mut out = Collection::default();
        out.summary.targets = self.targets.len();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut answered = 0;
        for (target, (probe, decision)) in self.targets.iter().zip(probes) {
            answered += usize::from(probe.health.latency.is_some());
            let Decision {
                region,
                memory,
                event,
            } = decision;
            log_event(target, &probe, region.as_deref(), &event);
            self.memory.insert(target.base_url.clone(), memory);
            out.statuses.push(TargetStatus {
                base_url: target.base_url.clone(),
                region: region.clone(),
                up: probe.health.healthy,
                latency: probe.health.latency,
            });
            let Some(region) = region else {
                match (&probe.health.error, &probe.info_error) {
                    (None, Some(e)) => {
                        warn!(target = %target.base_url, error = %e, "plugin is healthy but does not say which region it serves; not published. Fix: name it in PLUGIN_TARGETS")
                    }
                    _ => {
                        debug!(target = %target.base_url, error = ?probe.health.error, "no plugin has answered on this port; not a region")
                    }
                }
                continue;
            };
            if let Some(other) = seen.insert(region.clone(), target.base_url.clone()) {
                warn!(%region, target = %target.base_url, other_target = %other, "two targets serve one region; their datums will be aggregated together");
            }
            collect_target(&mut out, target, &region, probe, &self.basket);
        }
        let discovering = self.targets.iter().all(|t| t.configured_region.is_none());
        if answered == 0 && discovering && !self.targets.is_empty() {
            warn!(
                ports = self.targets.len(),
                "no plugin answered on any port; nothing but self metrics to publish. Fix: check PLUGIN_HOST and PLUGIN_PORTS, and that the plugins run"
            );
        }
        Collected {
            metrics: transform::to_metrics(&out.samples, timestamp),
            statuses: out.statuses,
            summary: out.summary,
        }
    }
}

/// Says what a target's report changed.
fn log_event(target: &Target, probe: &Probe, region: Option<&str>, event: &Event) {
    let region = region.unwrap_or("");
    match event {
        Event::Unchanged => {}
        Event::Discovered => info!(
            target = %target.base_url,
            %region,
            version = probe.plugin_version.as_deref().unwrap_or("unknown"),
            "discovered plugin"
        ),
        Event::DiffersFromConfigured { configured } => warn!(
            target = %target.base_url,
            configured_region = %configured,
            %region,
            "plugin reports another region than PLUGIN_TARGETS names; its data is published under the region it reports. Fix: set {region}={} in PLUGIN_TARGETS",
            target.base_url
        ),
        Event::Unconfirmed { reported, count } => warn!(
            target = %target.base_url,
            %region,
            reported_region = %reported,
            cycles = count,
            "plugin reports another region than before; its data stays under the region it had until {CONFIRM_CYCLES} cycles in a row say the same, so a changing answer cannot create new metrics every cycle"
        ),
        Event::Moved { previous } => warn!(
            target = %target.base_url,
            %region,
            previous_region = %previous,
            "plugin now serves another region; its data moves there"
        ),
    }
}

fn collect_target(
    out: &mut Collection,
    target: &Target,
    region: &str,
    probe: Probe,
    basket: &[Resource],
) {
    let Probe {
        health,
        info_error,
        costs,
        ..
    } = probe;
    out.samples.push(Sample::Health {
        region: region.to_string(),
        healthy: health.healthy,
        latency: health.latency,
    });
    if !health.healthy {
        out.summary.unhealthy += 1;
        let error = health.error.map(|e| e.to_string()).unwrap_or_default();
        warn!(%region, target = %target.base_url, %error, "plugin unhealthy");
        return;
    }
    out.summary.healthy += 1;
    if let Some(e) = info_error {
        warn!(%region, target = %target.base_url, error = %e, "GetPluginInfo failed; using the last known or configured region");
    }
    let mut errors = 0u32;
    for (resource, result) in basket.iter().zip(costs) {
        let (rt, sku) = (&resource.resource_type, &resource.sku);
        match result {
            Ok(cost) if cost.currency() != "USD" => {
                // Not a figure the USD metrics can carry: counted, so CostQueryErrors says
                // the region was not priced.
                errors += 1;
                warn!(%region, target = %target.base_url, resource_type = %rt, %sku, code = "unsupported_currency", currency = %untrusted::remote(cost.currency()), "cost is not in USD; not published");
            }
            Ok(cost) if !cost.is_finite() => {
                errors += 1;
                warn!(%region, target = %target.base_url, resource_type = %rt, %sku, code = "invalid_value", unit_price = cost.unit_price, monthly_cost = cost.cost_per_month, "cost query answered a value that is not a finite number; not published");
            }
            Ok(cost) => out.samples.push(Sample::Cost {
                region: region.to_string(),
                resource_type: rt.clone(),
                sku: sku.clone(),
                unit_price: cost.unit_price,
                monthly_cost: cost.cost_per_month,
                carbon_grams: cost.carbon_grams(),
            }),
            Err(e) => {
                errors += 1;
                warn!(%region, target = %target.base_url, resource_type = %rt, %sku, code = %e.code(), error = %e, "cost query failed");
            }
        }
    }
    out.summary.errors += errors;
    // With cost queries off (COST_RESOURCES=none) a count of 0 would be a paid metric per
    // region that can never say anything.
    if !basket.is_empty() {
        out.samples.push(Sample::CostErrors {
            region: region.to_string(),
            count: errors,
        });
    }
}

/// Health first; a healthy plugin is asked its region, and then the basket's costs, at most
/// [`MAX_CONCURRENT_QUERIES`] at a time, under the region its data will go under. Returns
/// the answers and what they make of the target's region.
async fn probe(
    client: &PluginClient,
    target: &Target,
    memory: &Memory,
    basket: &[Resource],
    deadline: Instant,
) -> (Probe, Decision) {
    let base = target.base_url.as_str();
    let configured = target.configured_region.as_deref();
    let health = client.health(base, deadline).await;
    let mut probe = Probe {
        health,
        reported_region: None,
        plugin_version: None,
        info_error: None,
        costs: Vec::new(),
    };
    if !probe.health.healthy {
        return (probe, region_memory::decide(memory, None, configured));
    }
    match client.plugin_info(base, deadline).await {
        Ok(info) => {
            probe.reported_region = info.region().map(str::to_string);
            if probe.reported_region.is_none() {
                probe.info_error = Some(CallError::Decode(
                    "GetPluginInfo has no well-formed metadata.region".into(),
                ));
            }
            probe.plugin_version = info.version.as_deref().map(untrusted::remote);
        }
        Err(e) => probe.info_error = Some(e),
    }
    let decision = region_memory::decide(memory, probe.reported_region.as_deref(), configured);
    let Some(region) = decision.region.clone() else {
        return (probe, decision);
    };
    let slots = Semaphore::new(MAX_CONCURRENT_QUERIES);
    probe.costs = join_all(basket.iter().map(|r| async {
        let _slot = slots.acquire().await;
        client.projected_cost(base, &region, r, deadline).await
    }))
    .await;
    (probe, decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Health {
        Health {
            healthy: true,
            latency: Some(Duration::from_millis(2)),
            error: None,
        }
    }

    fn basket() -> Vec<Resource> {
        basket::parse("ec2:t3.micro,ebs:gp3?size=100,lambda:128").unwrap()
    }

    fn target() -> Target {
        Target {
            base_url: "http://127.0.0.1:8001".into(),
            configured_region: None,
        }
    }

    #[test]
    fn cost_errors_and_foreign_currencies_do_not_mark_the_region_unhealthy() {
        let probe = Probe {
            health: healthy(),
            reported_region: Some("us-east-1".into()),
            plugin_version: None,
            info_error: None,
            costs: vec![
                Ok(ProjectedCost {
                    unit_price: 0.0104,
                    cost_per_month: 7.592,
                    currency: Some("USD".into()),
                    impact_metrics: None,
                }),
                Err(CallError::Connect {
                    code: "not_found".into(),
                    message: "no price".into(),
                    status: 404,
                }),
                Ok(ProjectedCost {
                    currency: Some("EUR".into()),
                    ..ProjectedCost::default()
                }),
            ],
        };
        let mut out = Collection::default();
        collect_target(&mut out, &target(), "us-east-1", probe, &basket());
        assert_eq!(out.summary.healthy, 1);
        // The failed query and the one in EUR.
        assert_eq!(out.summary.errors, 2);
        assert_eq!(
            out.samples,
            vec![
                Sample::Health {
                    region: "us-east-1".into(),
                    healthy: true,
                    latency: Some(Duration::from_millis(2))
                },
                Sample::Cost {
                    region: "us-east-1".into(),
                    resource_type: "ec2".into(),
                    sku: "t3.micro".into(),
                    unit_price: 0.0104,
                    monthly_cost: 7.592,
                    carbon_grams: None
                },
                Sample::CostErrors {
                    region: "us-east-1".into(),
                    count: 2
                },
            ]
        );
    }

    #[test]
    fn an_empty_basket_sends_no_error_count() {
        let probe = Probe {
            health: healthy(),
            reported_region: Some("us-east-1".into()),
            plugin_version: None,
            info_error: None,
            costs: vec![],
        };
        let mut out = Collection::default();
        collect_target(&mut out, &target(), "us-east-1", probe, &[]);
        assert_eq!(out.summary.healthy, 1);
        assert_eq!(
            out.samples,
            vec![Sample::Health {
                region: "us-east-1".into(),
                healthy: true,
                latency: healthy().latency
            }]
        );
    }

    #[test]
    fn an_unhealthy_region_gives_only_its_health() {
        let probe = Probe {
            health: Health {
                healthy: false,
                latency: None,
                error: Some(CallError::Timeout),
            },
            reported_region: None,
            plugin_version: None,
            info_error: None,
            costs: vec![],
        };
        let mut out = Collection::default();
        collect_target(&mut out, &target(), "us-west-1", probe, &basket());
        assert_eq!(out.summary.unhealthy, 1);
        assert_eq!(
            out.samples,
            vec![Sample::Health {
                region: "us-west-1".into(),
                healthy: false,
                latency: None
            }]
        );
    }

    #[test]
    fn targets_from_config() {
        let t = Target::from_config(&Targets::Discover {
            host: "127.0.0.1".into(),
            ports: vec![8001, 8010],
        });
        assert_eq!(t[1].base_url, "http://127.0.0.1:8010");
        assert_eq!(t[1].configured_region, None);
    }
}
