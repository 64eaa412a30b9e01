//! What the source collects from one plugin in one cycle, before it becomes CloudWatch data.
//!
//! Samples carry facts (a region was healthy, a resource costs so much); naming, units and
//! dimensions are decided by [`crate::sources::plugins::transform`], so the two can be tested apart.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// The outcome of `GET /healthz`. `latency` is set when the plugin answered at all.
    Health {
        region: String,
        healthy: bool,
        latency: Option<Duration>,
    },
    /// A priced basket resource (GetProjectedCost), in USD.
    Cost {
        region: String,
        resource_type: String,
        sku: String,
        unit_price: f64,
        monthly_cost: f64,
        /// gCO2e per month, when the plugin reports a carbon footprint.
        carbon_grams: Option<f64>,
    },
    /// How many basket resources a healthy region failed to price this cycle.
    CostErrors { region: String, count: u32 },
}
