//! Turns collected samples into metrics. Pure: no I/O, no clock.
//!
//! This is where metric names, units and dimensions are decided, so it is the file to read
//! (and the table in README.md is the one to update) when the published shape changes.
use std::time::SystemTime;

use crate::metric::{Dimensions, Metric, Unit, Value};
use crate::sources::plugins::sample::Sample;

pub const PLUGIN_HEALTHY: &str = "PluginHealthy";
pub const HEALTH_CHECK_LATENCY: &str = "HealthCheckLatency";
pub const PROJECTED_MONTHLY_COST: &str = "ProjectedMonthlyCost";
pub const UNIT_PRICE: &str = "UnitPrice";
pub const CARBON_FOOTPRINT: &str = "CarbonFootprint";
pub const COST_QUERY_ERRORS: &str = "CostQueryErrors";

/// All datums of one cycle carry the cycle's `timestamp`, so a dashboard lines them up.
pub fn to_metrics(samples: &[Sample], timestamp: SystemTime) -> Vec<Metric> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    let mut push = |name: &str, dims: Dimensions, value: Value, unit: Unit| {
        out.push(Metric {
            name: name.to_string(),
            dimensions: dims,
            value,
            unit,
            timestamp,
        })
    };
    for sample in samples {
        match sample {
            Sample::Health {
                region,
                healthy,
                latency,
            } => {
                let dims = region_dims(region);
                push(
                    PLUGIN_HEALTHY,
                    dims.clone(),
                    Value::Gauge(if *healthy { 1.0 } else { 0.0 }),
                    Unit::None,
                );
                if let Some(latency) = latency {
                    push(
                        HEALTH_CHECK_LATENCY,
                        dims,
                        Value::Gauge(latency.as_secs_f64() * 1000.0),
                        Unit::Milliseconds,
                    );
                }
            }
            Sample::Cost {
                region,
                resource_type,
                sku,
                unit_price,
                monthly_cost,
                carbon_grams,
            } => {
                let dims = cost_dims(region, resource_type, sku);
                push(
                    PROJECTED_MONTHLY_COST,
                    dims.clone(),
                    Value::Gauge(*monthly_cost),
                    Unit::None,
                );
                push(
                    UNIT_PRICE,
                    dims.clone(),
                    Value::Gauge(*unit_price),
                    Unit::None,
                );
                if let Some(grams) = carbon_grams {
                    push(CARBON_FOOTPRINT, dims, Value::Gauge(*grams), Unit::None);
                }
            }
            Sample::CostErrors { region, count } => {
                push(
                    COST_QUERY_ERRORS,
                    region_dims(region),
                    Value::Counter(f64::from(*count)),
                    Unit::Count,
                );
            }
        }
    }
    out
}

/// The dimensions of a region's health metrics; `monitoring` builds its alarms from this.
pub fn region_dims(region: &str) -> Dimensions {
    Dimensions::from([("Region".to_string(), region.to_string())])
}

/// The dimensions of one basket entry's cost metrics in a region.
pub fn cost_dims(region: &str, resource_type: &str, sku: &str) -> Dimensions {
    let mut dims = region_dims(region);
    dims.insert("ResourceType".into(), resource_type.to_string());
    dims.insert("Sku".into(), sku.to_string());
    dims
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ts() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn dims(pairs: &[(&str, &str)]) -> Dimensions {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn d(name: &str, pairs: &[(&str, &str)], value: Value, unit: Unit) -> Metric {
        Metric {
            name: name.into(),
            dimensions: dims(pairs),
            value,
            unit,
            timestamp: ts(),
        }
    }

    #[test]
    fn healthy_region_gives_health_and_latency_in_milliseconds() {
        let out = to_metrics(
            &[Sample::Health {
                region: "us-east-1".into(),
                healthy: true,
                latency: Some(Duration::from_micros(2500)),
            }],
            ts(),
        );
        assert_eq!(
            out,
            vec![
                d(
                    PLUGIN_HEALTHY,
                    &[("Region", "us-east-1")],
                    Value::Gauge(1.0),
                    Unit::None
                ),
                d(
                    HEALTH_CHECK_LATENCY,
                    &[("Region", "us-east-1")],
                    Value::Gauge(2.5),
                    Unit::Milliseconds
                ),
            ]
        );
    }

    #[test]
    fn unhealthy_region_without_answer_gives_zero_and_no_latency() {
        let out = to_metrics(
            &[Sample::Health {
                region: "us-west-1".into(),
                healthy: false,
                latency: None,
            }],
            ts(),
        );
        assert_eq!(
            out,
            vec![d(
                PLUGIN_HEALTHY,
                &[("Region", "us-west-1")],
                Value::Gauge(0.0),
                Unit::None
            )]
        );
    }

    #[test]
    fn unhealthy_region_that_answered_keeps_its_latency() {
        let out = to_metrics(
            &[Sample::Health {
                region: "eu-west-1".into(),
                healthy: false,
                latency: Some(Duration::from_millis(3)),
            }],
            ts(),
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].value, Value::Gauge(0.0));
        assert_eq!(out[1].value, Value::Gauge(3.0));
    }

    #[test]
    fn cost_gives_monthly_cost_unit_price_and_carbon_with_three_dimensions() {
        let out = to_metrics(
            &[Sample::Cost {
                region: "us-east-1".into(),
                resource_type: "ec2".into(),
                sku: "t3.micro".into(),
                unit_price: 0.0104,
                monthly_cost: 7.592,
                carbon_grams: Some(3507.6),
            }],
            ts(),
        );
        let dims = [
            ("Region", "us-east-1"),
            ("ResourceType", "ec2"),
            ("Sku", "t3.micro"),
        ];
        assert_eq!(
            out,
            vec![
                d(
                    PROJECTED_MONTHLY_COST,
                    &dims,
                    Value::Gauge(7.592),
                    Unit::None
                ),
                d(UNIT_PRICE, &dims, Value::Gauge(0.0104), Unit::None),
                d(CARBON_FOOTPRINT, &dims, Value::Gauge(3507.6), Unit::None),
            ]
        );
    }

    #[test]
    fn cost_without_carbon_has_no_carbon_datum_and_zero_is_kept() {
        let out = to_metrics(
            &[Sample::Cost {
                region: "us-east-1".into(),
                resource_type: "lambda".into(),
                sku: "128".into(),
                unit_price: 0.0,
                monthly_cost: 0.0,
                carbon_grams: None,
            }],
            ts(),
        );
        let names: Vec<_> = out.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, [PROJECTED_MONTHLY_COST, UNIT_PRICE]);
        assert!(out.iter().all(|d| d.value == Value::Gauge(0.0)));
    }

    #[test]
    fn cost_errors_are_a_count_per_region() {
        let out = to_metrics(
            &[Sample::CostErrors {
                region: "ap-south-1".into(),
                count: 2,
            }],
            ts(),
        );
        assert_eq!(
            out,
            vec![d(
                COST_QUERY_ERRORS,
                &[("Region", "ap-south-1")],
                Value::Counter(2.0),
                Unit::Count
            )]
        );
    }

    #[test]
    fn every_datum_carries_the_cycle_timestamp_and_order_follows_samples() {
        let samples = [
            Sample::CostErrors {
                region: "a".into(),
                count: 0,
            },
            Sample::Health {
                region: "b".into(),
                healthy: true,
                latency: None,
            },
        ];
        let out = to_metrics(&samples, ts());
        assert!(out.iter().all(|d| d.timestamp == ts()));
        assert_eq!(out[0].name, COST_QUERY_ERRORS);
        assert_eq!(out[1].name, PLUGIN_HEALTHY);
    }

    #[test]
    fn no_samples_no_datums() {
        assert!(to_metrics(&[], ts()).is_empty());
    }
}
