//! The dashboard body: health and latency per region, projected monthly cost per region and
//! basket entry, cost-query errors, scrape targets, and the agent's own figures. Pure.
//!
//! Every widget draws SEARCH expressions over the namespace rather than a list of series, so
//! a region, scrape target or agent that starts publishing later shows up without an edit;
//! that is also why the body needs no list of regions.

use serde_json::{Value, json};

use crate::metric::Dimensions;
use crate::self_metrics::{
    CYCLE_DURATION, DATUMS_DROPPED, DATUMS_PUBLISHED, PUBLISH_FAILURES, QUEUE_DEPTH,
    QUEUE_OLDEST_AGE, agent_dims,
};
use crate::sources::plugins::transform::{
    COST_QUERY_ERRORS, HEALTH_CHECK_LATENCY, PLUGIN_HEALTHY, PROJECTED_MONTHLY_COST, cost_dims,
    region_dims,
};
use crate::sources::prometheus::{SCRAPE_DURATION, SCRAPE_UP, target_dimensions};

/// The dashboard body for `namespace`, its widgets reading `region` at `period` seconds.
pub fn body(namespace: &str, region: &str, period: u32) -> Value {
    let ns = namespace;
    // The dimension names each metric is published with, taken from the code that publishes.
    let region_schema = region_dims("r");
    let cost_schema = cost_dims("r", "t", "s");
    let agent_schema = agent_dims("a");
    let target_schema = target_dimensions("u", None);
    let regional_target_schema = target_dimensions("u", Some("r"));
    let graph = |title: &str, series: Vec<(&str, &Dimensions, &str)>, y: Value| {
        let metrics: Vec<Value> = series
            .iter()
            .enumerate()
            .map(|(i, (metric, schema, stat))| {
                json!([{
                    "expression": search(ns, schema, metric, stat, period),
                    "id": format!("e{i}"),
                    "period": period,
                }])
            })
            .collect();
        json!({
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stacked": false,
            "period": period,
            "metrics": metrics,
            "yAxis": { "left": y },
        })
    };
    let from_zero = json!({ "min": 0 });
    let widgets = [
        (
            24,
            2,
            "text",
            json!({ "markdown": format!(
                "# {}\nPublished by cloudwatch-publisher. Regions, scrape targets and agents that start publishing later appear here by themselves. Alarms are named `{}/<kind>/<subject>`; what to do when one fires: docs/operations.md.",
                markdown_text(ns), markdown_text(ns)
            ) }),
        ),
        (
            12,
            6,
            "metric",
            graph(
                "Plugin healthy per region (1 up, 0 down)",
                vec![(PLUGIN_HEALTHY, &region_schema, "Minimum")],
                json!({ "min": 0, "max": 1 }),
            ),
        ),
        (
            12,
            6,
            "metric",
            graph(
                "Health-check latency per region (ms, max)",
                vec![(HEALTH_CHECK_LATENCY, &region_schema, "Maximum")],
                from_zero.clone(),
            ),
        ),
        (
            24,
            8,
            "metric",
            graph(
                "Projected monthly cost per region and basket entry (USD)",
                vec![(PROJECTED_MONTHLY_COST, &cost_schema, "Maximum")],
                from_zero.clone(),
            ),
        ),
        (
            12,
            6,
            "metric",
            graph(
                "Cost queries failed per region",
                vec![(COST_QUERY_ERRORS, &region_schema, "Sum")],
                from_zero.clone(),
            ),
        ),
        (
            12,
            6,
            "metric",
            graph(
                "Scrape targets up (1 up, 0 down)",
                vec![
                    (SCRAPE_UP, &target_schema, "Minimum"),
                    (SCRAPE_UP, &regional_target_schema, "Minimum"),
                ],
                json!({ "min": 0, "max": 1 }),
            ),
        ),
        (
            8,
            6,
            "metric",
            graph(
                "Agent cycle duration (ms, max)",
                vec![(CYCLE_DURATION, &agent_schema, "Maximum")],
                from_zero.clone(),
            ),
        ),
        (
            8,
            6,
            "metric",
            graph(
                "Datums published per agent",
                vec![(DATUMS_PUBLISHED, &agent_schema, "Sum")],
                from_zero.clone(),
            ),
        ),
        (
            8,
            6,
            "metric",
            graph(
                "Queue depth per agent (datums, max)",
                vec![(QUEUE_DEPTH, &agent_schema, "Maximum")],
                from_zero.clone(),
            ),
        ),
        (
            8,
            6,
            "metric",
            graph(
                "Oldest undelivered datum per agent (s)",
                vec![(QUEUE_OLDEST_AGE, &agent_schema, "Maximum")],
                from_zero.clone(),
            ),
        ),
        (
            8,
            6,
            "metric",
            graph(
                "Publish failures and datums dropped per agent",
                vec![
                    (PUBLISH_FAILURES, &agent_schema, "Sum"),
                    (DATUMS_DROPPED, &agent_schema, "Sum"),
                ],
                from_zero.clone(),
            ),
        ),
        (
            8,
            6,
            "metric",
            graph(
                "Scrape duration per target (ms, max)",
                vec![
                    (SCRAPE_DURATION, &target_schema, "Maximum"),
                    (SCRAPE_DURATION, &regional_target_schema, "Maximum"),
                ],
                from_zero,
            ),
        ),
    ];
    json!({
        "start": "-PT6H",
        "periodOverride": "inherit",
        "widgets": layout(widgets),
    })
}

/// Places widgets left to right in rows of CloudWatch's 24 columns.
fn layout<const N: usize>(widgets: [(u32, u32, &str, Value); N]) -> Vec<Value> {
    let (mut x, mut y, mut row_height) = (0, 0, 0);
    let mut out = Vec::with_capacity(N);
    for (width, height, kind, properties) in widgets {
        if x + width > 24 {
            (x, y, row_height) = (0, y + row_height, 0);
        }
        out.push(json!({
            "type": kind,
            "x": x,
            "y": y,
            "width": width,
            "height": height,
            "properties": properties,
        }));
        x += width;
        row_height = row_height.max(height);
    }
    out
}

/// `SEARCH('{"ns",Dim,...} MetricName="name"', 'stat', period)`: exactly the metrics of that
/// name with exactly these dimension names, whatever their values.
pub fn search(ns: &str, schema: &Dimensions, metric: &str, stat: &str, period: u32) -> String {
    let mut braces = format!("\"{}\"", escape(ns));
    for (name, _) in schema.iter() {
        braces.push(',');
        braces.push_str(name);
    }
    format!(
        "SEARCH('{{{braces}}} MetricName=\"{}\"', '{stat}', {period})",
        escape(metric)
    )
}

/// A quoted search term escapes its quotes and backslashes; the whole search string is in
/// single quotes, so those are escaped too.
fn escape(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    for c in term.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The namespace as literal markdown text.
fn markdown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\`*_{}[]()#+-.!|<>".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric_widgets(body: &Value) -> Vec<&Value> {
        body["widgets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["type"] == "metric")
            .collect()
    }

    fn expressions(body: &Value) -> Vec<String> {
        metric_widgets(body)
            .iter()
            .flat_map(|w| w["properties"]["metrics"].as_array().unwrap())
            .map(|m| m[0]["expression"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn search_names_the_namespace_the_dimensions_and_the_metric() {
        assert_eq!(
            search(
                "FinFocus/Plugins",
                &cost_dims("r", "t", "s"),
                "ProjectedMonthlyCost",
                "Maximum",
                60
            ),
            r#"SEARCH('{"FinFocus/Plugins",Region,ResourceType,Sku} MetricName="ProjectedMonthlyCost"', 'Maximum', 60)"#
        );
        assert_eq!(
            search(r#"a"b'c\d"#, &agent_dims("x"), "CycleDuration", "Sum", 300),
            r#"SEARCH('{"a\"b\'c\\d",Agent} MetricName="CycleDuration"', 'Sum', 300)"#
        );
    }

    #[test]
    fn every_widget_searches_the_agents_namespace_in_its_region() {
        let body = body("Team/FinOps", "eu-west-1", 60);
        let widgets = metric_widgets(&body);
        assert_eq!(widgets.len(), 11);
        for w in &widgets {
            assert_eq!(w["properties"]["region"], "eu-west-1");
            assert_eq!(w["properties"]["period"], 60);
        }
        for e in expressions(&body) {
            assert!(
                e.starts_with(r#"SEARCH('{"Team/FinOps","#) && e.ends_with(", 60)"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_dashboard_shows_what_the_issue_asks_for() {
        let text = expressions(&body("ns", "us-east-1", 60)).join("\n");
        for metric in [
            PLUGIN_HEALTHY,
            HEALTH_CHECK_LATENCY,
            PROJECTED_MONTHLY_COST,
            COST_QUERY_ERRORS,
            SCRAPE_UP,
            CYCLE_DURATION,
            DATUMS_PUBLISHED,
            QUEUE_DEPTH,
            QUEUE_OLDEST_AGE,
            PUBLISH_FAILURES,
        ] {
            assert!(
                text.contains(&format!("MetricName=\"{metric}\"")),
                "{metric}"
            );
        }
        assert!(text.contains(r#"{"ns",Region} MetricName="PluginHealthy""#));
        assert!(text.contains(r#"{"ns",Region,Target} MetricName="ScrapeUp""#));
        assert!(text.contains(r#"{"ns",Target} MetricName="ScrapeUp""#));
    }

    #[test]
    fn widgets_fit_the_grid_without_overlapping() {
        let body = body("ns", "us-east-1", 60);
        let mut cells = std::collections::HashSet::new();
        for w in body["widgets"].as_array().unwrap() {
            let [x, y, width, height] =
                ["x", "y", "width", "height"].map(|k| w[k].as_u64().unwrap());
            assert!(x + width <= 24);
            for cx in x..x + width {
                for cy in y..y + height {
                    assert!(cells.insert((cx, cy)), "overlap at {cx},{cy}");
                }
            }
        }
    }

    #[test]
    fn the_header_shows_the_namespace_as_text() {
        let body = body("Team_[x]", "us-east-1", 60);
        let md = body["widgets"][0]["properties"]["markdown"]
            .as_str()
            .unwrap();
        assert!(md.starts_with(r"# Team\_\[x\]"));
    }
}
