//! The alarms, one list for the subcommand and the template: a plugin region down, a scrape
//! target down, the agent silent, backed up, failing to publish or dropping datums, and a
//! region's projected cost jumping. Pure: a [`Fleet`] in, definitions out.
//!
//! Each definition is a PutMetricAlarm input, whose field names are also the properties of
//! `AWS::CloudWatch::Alarm`. docs/operations.md explains each rule, above all how missing
//! data counts: as breaching where silence means the thing watched is gone, as not breaching
//! where the silence alarm already covers it.

use serde_json::{Map, Value, json};

use super::{Fleet, Knob, Knobs, Render};
use crate::metric::Dimensions;
use crate::self_metrics::{
    CYCLE_DURATION, DATUMS_DROPPED, PUBLISH_FAILURES, QUEUE_OLDEST_AGE, agent_dims,
};
use crate::sources::plugins::transform::{
    PLUGIN_HEALTHY, PROJECTED_MONTHLY_COST, cost_dims, region_dims,
};
use crate::sources::prometheus::{SCRAPE_UP, target_dimensions};

/// CloudWatch's hard limit of metrics in one metric-math alarm.
pub const MAX_ALARM_METRICS: usize = 10;
const MAX_NAME_CHARS: usize = 255;
const MAX_DESCRIPTION_CHARS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PluginDown,
    ScrapeTargetDown,
    AgentSilent,
    QueueBacklog,
    PublishFailing,
    DatumsDropped,
    CostJump,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::PluginDown => "PluginDown",
            Kind::ScrapeTargetDown => "ScrapeTargetDown",
            Kind::AgentSilent => "AgentSilent",
            Kind::QueueBacklog => "QueueBacklog",
            Kind::PublishFailing => "PublishFailing",
            Kind::DatumsDropped => "DatumsDropped",
            Kind::CostJump => "CostJump",
        }
    }

    /// Its runbook's anchor in docs/operations.md.
    fn runbook(self) -> String {
        format!("docs/operations.md#{}", self.name().to_ascii_lowercase())
    }
}

/// One alarm: what it watches, and its definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub kind: Kind,
    /// The region, target or agent it watches.
    pub subject: String,
    pub definition: Map<String, Value>,
}

impl Alarm {
    #[cfg(test)]
    pub fn name(&self) -> &str {
        self.definition["AlarmName"].as_str().unwrap_or_default()
    }
}

/// Every alarm for `fleet`, in a stable order: by kind, then subject.
pub fn alarms(fleet: &Fleet, render: Render) -> Vec<Alarm> {
    let ns = fleet.namespace.as_str();
    let mut out = Vec::new();
    for region in &fleet.regions {
        let about = format!(
            "The {region} plugin passed no health probe in the evaluation periods. Missing data counts as down, so an agent that stopped reporting fires this too."
        );
        let dims = region_dims(region);
        let w = down(
            Kind::PluginDown,
            region,
            PLUGIN_HEALTHY,
            &dims,
            about,
            render,
        );
        out.push(watch(ns, w, render));
    }
    for target in &fleet.scrape_targets {
        let about = format!(
            "The scrape target {} answered no scrape in the evaluation periods. Missing data counts as down.",
            crate::untrusted::cut(&target.url, 200)
        );
        let dims = target_dimensions(&target.url, target.region.as_deref());
        let w = down(
            Kind::ScrapeTargetDown,
            &target.url,
            SCRAPE_UP,
            &dims,
            about,
            render,
        );
        out.push(watch(ns, w, render));
    }
    if let Some(agent) = &fleet.agent {
        let dims = agent_dims(agent);
        let agent_watch =
            |kind, metric, statistic, comparison, threshold, periods, breaching, about| Watch {
                kind,
                subject: agent,
                metric,
                dims: &dims,
                statistic,
                comparison,
                threshold,
                periods,
                breaching,
                about,
            };
        for w in [
            agent_watch(
                Kind::AgentSilent,
                CYCLE_DURATION,
                "SampleCount",
                "LessThanThreshold",
                json!(1),
                render.num(Knob::SilencePeriods),
                true,
                format!(
                    "The agent {agent} published no self metrics in the evaluation periods: it is stopped, stuck, or cannot reach CloudWatch."
                ),
            ),
            agent_watch(
                Kind::QueueBacklog,
                QUEUE_OLDEST_AGE,
                "Maximum",
                "GreaterThanThreshold",
                render.num(Knob::QueueAgeThreshold),
                render.num(Knob::EvaluationPeriods),
                false,
                format!(
                    "The agent {agent} holds datums older than the threshold (seconds) that CloudWatch has not taken. Missing data is not breaching: the silence alarm covers an agent that stopped."
                ),
            ),
            agent_watch(
                Kind::PublishFailing,
                PUBLISH_FAILURES,
                "Sum",
                "GreaterThanOrEqualToThreshold",
                json!(1),
                render.num(Knob::EvaluationPeriods),
                false,
                format!(
                    "PutMetricData calls of the agent {agent} failed after their retries in each of the evaluation periods; its datums wait in its queue."
                ),
            ),
            agent_watch(
                Kind::DatumsDropped,
                DATUMS_DROPPED,
                "Sum",
                "GreaterThanThreshold",
                json!(0),
                json!(1),
                false,
                format!(
                    "The agent {agent} dropped datums: its queue overflowed, or CloudWatch rejected them. That data is lost."
                ),
            ),
        ] {
            out.push(watch(ns, w, render));
        }
    }
    for region in &fleet.regions {
        let chunks: Vec<_> = fleet.basket.chunks(MAX_ALARM_METRICS).collect();
        for (i, entries) in chunks.iter().enumerate() {
            let subject = if chunks.len() == 1 {
                region.clone()
            } else {
                let first = i * MAX_ALARM_METRICS + 1;
                format!("{region}/entries-{first}-{}", first + entries.len() - 1)
            };
            out.push(cost_jump(ns, region, &subject, entries, render));
        }
    }
    out
}

/// CloudWatch's monthly price of one metric an alarm reads (us-east-1, 2026), at standard
/// resolution and for periods under a minute; docs/operations.md works the sums.
pub const ALARM_METRIC_USD: f64 = 0.10;
pub const HIGH_RESOLUTION_ALARM_METRIC_USD: f64 = 0.30;

/// The metrics `alarms` read (a metric-math alarm is billed for each), and what they cost a
/// month.
pub fn monthly_cost(alarms: &[Alarm], knobs: &Knobs) -> (usize, f64) {
    let mut metrics = 0;
    let mut usd = 0.0;
    for a in alarms {
        let (n, period) = match a.definition.get("Metrics").and_then(Value::as_array) {
            Some(m) => (
                m.iter().filter(|q| q.get("MetricStat").is_some()).count(),
                knobs.cost_period,
            ),
            None => (1, knobs.period),
        };
        metrics += n;
        let each = if period < 60 {
            HIGH_RESOLUTION_ALARM_METRIC_USD
        } else {
            ALARM_METRIC_USD
        };
        usd += n as f64 * each;
    }
    (metrics, usd)
}

/// An up gauge's alarm (1 up, 0 down): down when no sample of a period was 1, in every one
/// of the evaluation periods, and when nothing reports it at all.
fn down<'a>(
    kind: Kind,
    subject: &'a str,
    metric: &'a str,
    dims: &'a Dimensions,
    about: String,
    render: Render,
) -> Watch<'a> {
    Watch {
        kind,
        subject,
        metric,
        dims,
        statistic: "Maximum",
        comparison: "LessThanThreshold",
        threshold: json!(1),
        periods: render.num(Knob::EvaluationPeriods),
        breaching: true,
        about,
    }
}

/// A single-metric alarm.
struct Watch<'a> {
    kind: Kind,
    subject: &'a str,
    metric: &'a str,
    dims: &'a Dimensions,
    statistic: &'a str,
    comparison: &'a str,
    threshold: Value,
    periods: Value,
    breaching: bool,
    about: String,
}

fn watch(ns: &str, w: Watch, render: Render) -> Alarm {
    let mut d = common(ns, w.kind, w.subject, &w.about, render);
    d.insert("Namespace".into(), json!(ns));
    d.insert("MetricName".into(), json!(w.metric));
    d.insert("Dimensions".into(), dimensions(w.dims));
    d.insert("Statistic".into(), json!(w.statistic));
    d.insert("Period".into(), render.num(Knob::Period));
    d.insert("EvaluationPeriods".into(), w.periods.clone());
    // Every period of the window must breach: one missed probe is noise, not an outage.
    d.insert("DatapointsToAlarm".into(), w.periods);
    d.insert("Threshold".into(), w.threshold);
    d.insert("ComparisonOperator".into(), json!(w.comparison));
    d.insert(
        "TreatMissingData".into(),
        json!(if w.breaching {
            "breaching"
        } else {
            "notBreaching"
        }),
    );
    Alarm {
        kind: w.kind,
        subject: w.subject.to_string(),
        definition: d,
    }
}

/// The share by which the sum of `entries`' projected monthly cost in `region` rose since
/// the previous cost period. A region's total can only rise by more than a share if some
/// part of it does, so splitting a basket larger than one alarm's metrics over several
/// alarms misses no jump.
fn cost_jump(
    ns: &str,
    region: &str,
    subject: &str,
    entries: &[(String, String)],
    render: Render,
) -> Alarm {
    let about = format!(
        "The projected monthly cost of the basket in {region} rose by more than the set share from one cost period to the next. Missing data is not breaching: PluginDown covers a silent region."
    );
    let mut d = common(ns, Kind::CostJump, subject, &about, render);
    let mut metrics: Vec<Value> = entries
        .iter()
        .enumerate()
        .map(|(i, (resource_type, sku))| {
            json!({
                "Id": format!("m{i}"),
                "MetricStat": {
                    "Metric": {
                        "Namespace": ns,
                        "MetricName": PROJECTED_MONTHLY_COST,
                        "Dimensions": dimensions(&cost_dims(region, resource_type, sku)),
                    },
                    "Period": render.num(Knob::CostPeriod),
                    "Stat": "Maximum",
                },
                "ReturnData": false,
            })
        })
        .collect();
    // A missing entry would make the total dip and then jump back; it keeps its last value.
    let total = (0..entries.len())
        .map(|i| format!("FILL(m{i},REPEAT)"))
        .collect::<Vec<_>>()
        .join("+");
    metrics.push(json!({
        "Id": "total",
        "Expression": total,
        "Label": format!("Projected monthly cost, {region}"),
        "ReturnData": false,
    }));
    metrics.push(json!({
        "Id": "jump",
        "Expression": "DIFF(total)/(total-DIFF(total))",
        "Label": format!("Rise since the previous period, {region}"),
        "ReturnData": true,
    }));
    d.insert("Metrics".into(), Value::Array(metrics));
    d.insert("EvaluationPeriods".into(), json!(1));
    d.insert("DatapointsToAlarm".into(), json!(1));
    d.insert("Threshold".into(), render.num(Knob::CostJumpShare));
    d.insert("ComparisonOperator".into(), json!("GreaterThanThreshold"));
    d.insert("TreatMissingData".into(), json!("notBreaching"));
    Alarm {
        kind: Kind::CostJump,
        subject: subject.to_string(),
        definition: d,
    }
}

/// Name, description and actions, which every alarm has.
fn common(ns: &str, kind: Kind, subject: &str, about: &str, render: Render) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("AlarmName".into(), json!(alarm_name(ns, kind, subject)));
    let description = format!("{about} Runbook: {}", kind.runbook());
    d.insert(
        "AlarmDescription".into(),
        json!(
            description
                .chars()
                .take(MAX_DESCRIPTION_CHARS)
                .collect::<String>()
        ),
    );
    d.insert("ActionsEnabled".into(), json!(true));
    if let Some(actions) = render.actions() {
        d.insert("AlarmActions".into(), actions.clone());
        // Told when it clears too, so whoever was paged knows.
        d.insert("OKActions".into(), actions);
    }
    d
}

/// `<namespace>/<kind>/<subject>`, so one prefix lists every alarm of a namespace. A name
/// past CloudWatch's 255 characters (a long scrape URL) is cut and ends in a hash of the
/// whole, so two long names stay apart.
pub fn alarm_name(ns: &str, kind: Kind, subject: &str) -> String {
    let name = format!("{ns}/{}/{subject}", kind.name());
    if name.chars().count() <= MAX_NAME_CHARS {
        return name;
    }
    let hash = format!("~{:016x}", fnv1a(name.as_bytes()));
    let keep: String = name.chars().take(MAX_NAME_CHARS - hash.len()).collect();
    keep + &hash
}

/// A hash that stays the same across Rust releases, unlike std's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn dimensions(dims: &Dimensions) -> Value {
    Value::Array(
        dims.iter()
            .map(|(name, value)| json!({ "Name": name, "Value": value }))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitoring::Knobs;
    use crate::sources::prometheus::config::ScrapeTarget;

    fn knobs() -> Knobs {
        crate::monitoring::tests::default_knobs()
    }

    fn fleet() -> Fleet {
        Fleet {
            namespace: "FinFocus/Plugins".into(),
            regions: vec!["eu-west-1".into(), "us-east-1".into()],
            basket: vec![
                ("ec2".into(), "t3.micro".into()),
                ("ebs".into(), "gp3".into()),
            ],
            scrape_targets: vec![ScrapeTarget {
                url: "http://127.0.0.1:9100/metrics".into(),
                region: Some("us-east-1".into()),
            }],
            agent: Some("prod-eu".into()),
        }
    }

    fn dims(pairs: &[(&str, &str)]) -> Value {
        Value::Array(
            pairs
                .iter()
                .map(|(n, v)| json!({"Name": n, "Value": v}))
                .collect(),
        )
    }

    fn find<'a>(all: &'a [Alarm], kind: Kind, subject: &str) -> &'a Map<String, Value> {
        &all.iter()
            .find(|a| a.kind == kind && a.subject == subject)
            .unwrap_or_else(|| panic!("no {kind:?} alarm for {subject}"))
            .definition
    }

    #[test]
    fn every_region_target_and_the_agent_get_their_alarms() {
        let k = knobs();
        let all = alarms(&fleet(), Render::Values(&k));
        let got: Vec<_> = all
            .iter()
            .map(|a| (a.kind, a.subject.as_str(), a.name()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Kind::PluginDown,
                    "eu-west-1",
                    "FinFocus/Plugins/PluginDown/eu-west-1"
                ),
                (
                    Kind::PluginDown,
                    "us-east-1",
                    "FinFocus/Plugins/PluginDown/us-east-1"
                ),
                (
                    Kind::ScrapeTargetDown,
                    "http://127.0.0.1:9100/metrics",
                    "FinFocus/Plugins/ScrapeTargetDown/http://127.0.0.1:9100/metrics"
                ),
                (
                    Kind::AgentSilent,
                    "prod-eu",
                    "FinFocus/Plugins/AgentSilent/prod-eu"
                ),
                (
                    Kind::QueueBacklog,
                    "prod-eu",
                    "FinFocus/Plugins/QueueBacklog/prod-eu"
                ),
                (
                    Kind::PublishFailing,
                    "prod-eu",
                    "FinFocus/Plugins/PublishFailing/prod-eu"
                ),
                (
                    Kind::DatumsDropped,
                    "prod-eu",
                    "FinFocus/Plugins/DatumsDropped/prod-eu"
                ),
                (
                    Kind::CostJump,
                    "eu-west-1",
                    "FinFocus/Plugins/CostJump/eu-west-1"
                ),
                (
                    Kind::CostJump,
                    "us-east-1",
                    "FinFocus/Plugins/CostJump/us-east-1"
                ),
            ]
        );
    }

    #[test]
    fn a_plugin_alarm_watches_what_the_transform_publishes_and_counts_silence_as_down() {
        let k = knobs();
        let all = alarms(&fleet(), Render::Values(&k));
        let d = find(&all, Kind::PluginDown, "us-east-1");
        assert_eq!(
            Value::Object(d.clone()),
            json!({
                "AlarmName": "FinFocus/Plugins/PluginDown/us-east-1",
                "AlarmDescription": d["AlarmDescription"],
                "ActionsEnabled": true,
                "Namespace": "FinFocus/Plugins",
                "MetricName": "PluginHealthy",
                "Dimensions": dims(&[("Region", "us-east-1")]),
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 3,
                "DatapointsToAlarm": 3,
                "Threshold": 1,
                "ComparisonOperator": "LessThanThreshold",
                "TreatMissingData": "breaching",
            })
        );
        let about = d["AlarmDescription"].as_str().unwrap();
        assert!(about.contains("us-east-1") && about.ends_with("docs/operations.md#plugindown"));
    }

    #[test]
    fn a_scrape_alarm_carries_the_targets_region_as_the_source_does() {
        let k = knobs();
        let all = alarms(&fleet(), Render::Values(&k));
        let d = find(
            &all,
            Kind::ScrapeTargetDown,
            "http://127.0.0.1:9100/metrics",
        );
        assert_eq!(d["MetricName"], "ScrapeUp");
        assert_eq!(
            d["Dimensions"],
            dims(&[
                ("Region", "us-east-1"),
                ("Target", "http://127.0.0.1:9100/metrics")
            ])
        );
        assert_eq!(d["TreatMissingData"], "breaching");
    }

    #[test]
    fn agent_alarms_watch_the_self_metrics_and_only_silence_breaches_on_missing_data() {
        let k = knobs();
        let all = alarms(&fleet(), Render::Values(&k));
        let agent = dims(&[("Agent", "prod-eu")]);
        for (kind, metric, stat, op, threshold, periods, missing) in [
            (
                Kind::AgentSilent,
                "CycleDuration",
                "SampleCount",
                "LessThanThreshold",
                1,
                5,
                "breaching",
            ),
            (
                Kind::QueueBacklog,
                "QueueOldestAge",
                "Maximum",
                "GreaterThanThreshold",
                900,
                3,
                "notBreaching",
            ),
            (
                Kind::PublishFailing,
                "PublishFailures",
                "Sum",
                "GreaterThanOrEqualToThreshold",
                1,
                3,
                "notBreaching",
            ),
            (
                Kind::DatumsDropped,
                "DatumsDropped",
                "Sum",
                "GreaterThanThreshold",
                0,
                1,
                "notBreaching",
            ),
        ] {
            let d = find(&all, kind, "prod-eu");
            assert_eq!(
                (
                    &d["MetricName"],
                    &d["Dimensions"],
                    &d["Statistic"],
                    &d["ComparisonOperator"],
                    &d["Threshold"],
                    &d["EvaluationPeriods"],
                    &d["DatapointsToAlarm"],
                    &d["TreatMissingData"],
                ),
                (
                    &json!(metric),
                    &agent,
                    &json!(stat),
                    &json!(op),
                    &json!(threshold),
                    &json!(periods),
                    &json!(periods),
                    &json!(missing),
                ),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn without_self_metrics_there_are_no_agent_alarms() {
        let k = knobs();
        let mut f = fleet();
        f.agent = None;
        let all = alarms(&f, Render::Values(&k));
        assert!(all.iter().all(|a| !matches!(
            a.kind,
            Kind::AgentSilent | Kind::QueueBacklog | Kind::PublishFailing | Kind::DatumsDropped
        )));
        assert_eq!(all.len(), 5);
    }

    #[test]
    fn the_cost_alarm_sums_the_basket_and_compares_with_the_period_before() {
        let k = knobs();
        let all = alarms(&fleet(), Render::Values(&k));
        let d = find(&all, Kind::CostJump, "eu-west-1");
        assert!(!d.contains_key("MetricName") && !d.contains_key("Period"));
        let metrics = d["Metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 4);
        assert_eq!(
            metrics[1],
            json!({
                "Id": "m1",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "FinFocus/Plugins",
                        "MetricName": "ProjectedMonthlyCost",
                        "Dimensions": dims(&[("Region", "eu-west-1"), ("ResourceType", "ebs"), ("Sku", "gp3")]),
                    },
                    "Period": 3600,
                    "Stat": "Maximum",
                },
                "ReturnData": false,
            })
        );
        assert_eq!(metrics[2]["Expression"], "FILL(m0,REPEAT)+FILL(m1,REPEAT)");
        assert_eq!(metrics[3]["Expression"], "DIFF(total)/(total-DIFF(total))");
        let returned: Vec<_> = metrics.iter().filter(|m| m["ReturnData"] == true).collect();
        assert_eq!(returned.len(), 1);
        assert_eq!(
            (
                &d["Threshold"],
                &d["ComparisonOperator"],
                &d["TreatMissingData"],
                &d["EvaluationPeriods"],
                &d["DatapointsToAlarm"],
            ),
            (
                &json!(0.2),
                &json!("GreaterThanThreshold"),
                &json!("notBreaching"),
                &json!(1),
                &json!(1),
            )
        );
    }

    #[test]
    fn a_basket_larger_than_one_alarm_is_split_and_covers_every_entry() {
        let k = knobs();
        let mut f = fleet();
        f.regions = vec!["us-east-1".into()];
        f.basket = (0..23).map(|i| ("ec2".into(), format!("sku{i}"))).collect();
        let all = alarms(&f, Render::Values(&k));
        let costs: Vec<_> = all.iter().filter(|a| a.kind == Kind::CostJump).collect();
        let subjects: Vec<_> = costs.iter().map(|a| a.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "us-east-1/entries-1-10",
                "us-east-1/entries-11-20",
                "us-east-1/entries-21-23"
            ]
        );
        let mut skus = Vec::new();
        for a in costs {
            let metrics = a.definition["Metrics"].as_array().unwrap();
            let stats: Vec<_> = metrics
                .iter()
                .filter(|m| m.get("MetricStat").is_some())
                .collect();
            assert!(stats.len() <= MAX_ALARM_METRICS);
            for m in stats {
                skus.push(m["MetricStat"]["Metric"]["Dimensions"][2]["Value"].clone());
            }
        }
        let want: Vec<_> = (0..23).map(|i| json!(format!("sku{i}"))).collect();
        assert_eq!(skus, want);
    }

    #[test]
    fn an_empty_basket_or_no_regions_means_no_cost_alarms() {
        let k = knobs();
        let mut f = fleet();
        f.basket.clear();
        assert!(
            alarms(&f, Render::Values(&k))
                .iter()
                .all(|a| a.kind != Kind::CostJump)
        );
        f.regions.clear();
        f.basket = fleet().basket;
        assert!(
            alarms(&f, Render::Values(&k))
                .iter()
                .all(|a| a.kind != Kind::CostJump && a.kind != Kind::PluginDown)
        );
    }

    #[test]
    fn a_topic_is_notified_on_alarm_and_on_ok() {
        let mut k = knobs();
        k.sns_topic_arn = Some("arn:aws:sns:us-east-1:123456789012:pager".into());
        for a in alarms(&fleet(), Render::Values(&k)) {
            assert_eq!(
                a.definition["AlarmActions"],
                json!(["arn:aws:sns:us-east-1:123456789012:pager"])
            );
            assert_eq!(a.definition["OKActions"], a.definition["AlarmActions"]);
        }
        k.sns_topic_arn = None;
        for a in alarms(&fleet(), Render::Values(&k)) {
            assert!(!a.definition.contains_key("AlarmActions"));
        }
    }

    #[test]
    fn parameters_render_as_references() {
        let all = alarms(&fleet(), Render::Parameters);
        let d = find(&all, Kind::QueueBacklog, "prod-eu");
        assert_eq!(d["Period"], json!({"Ref": "Period"}));
        assert_eq!(d["Threshold"], json!({"Ref": "QueueAgeThreshold"}));
        assert_eq!(d["EvaluationPeriods"], json!({"Ref": "EvaluationPeriods"}));
        assert!(d["AlarmActions"].get("Fn::If").is_some());
        let c = find(&all, Kind::CostJump, "us-east-1");
        assert_eq!(c["Threshold"], json!({"Ref": "CostJumpShare"}));
        assert_eq!(
            c["Metrics"][0]["MetricStat"]["Period"],
            json!({"Ref": "CostPeriod"})
        );
    }

    #[test]
    fn each_metric_an_alarm_reads_is_billed() {
        let mut k = knobs();
        let all = alarms(&fleet(), Render::Values(&k));
        // 2 regions, 1 target, 4 agent alarms: 7 single metrics; 2 cost alarms of 2 entries.
        let (metrics, usd) = monthly_cost(&all, &k);
        assert_eq!(metrics, 11);
        assert!((usd - 1.10).abs() < 1e-9, "{usd}");
        k.period = 10;
        let (_, usd) = monthly_cost(&all, &k);
        assert!((usd - (7.0 * 0.30 + 4.0 * 0.10)).abs() < 1e-9, "{usd}");
    }

    #[test]
    fn long_names_are_cut_to_255_characters_and_stay_apart() {
        let long = |tail: &str| format!("https://exporter.example/{}{tail}", "x".repeat(300));
        let a = alarm_name("ns", Kind::ScrapeTargetDown, &long("a"));
        let b = alarm_name("ns", Kind::ScrapeTargetDown, &long("b"));
        assert_eq!(a.chars().count(), 255);
        assert_eq!(b.chars().count(), 255);
        assert_ne!(a, b);
        assert_eq!(
            alarm_name("ns", Kind::PluginDown, "us-east-1"),
            "ns/PluginDown/us-east-1"
        );
        // Names are promised stable across releases: the hash is FNV-1a 64 (its published
        // vectors: "" and "a"), and a long name's is fixed.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        let kept = format!(
            "ns/ScrapeTargetDown/https://exporter.example/{}",
            "x".repeat(193)
        );
        assert_eq!(a, format!("{kept}~8589c5beef620791"));
    }

    #[test]
    fn names_are_unique_and_descriptions_fit() {
        let k = knobs();
        let mut f = fleet();
        f.regions = [
            "us-east-1",
            "us-west-2",
            "eu-west-1",
            "ap-south-1",
            "us-gov-west-1",
        ]
        .map(String::from)
        .to_vec();
        let all = alarms(&f, Render::Values(&k));
        let mut names: Vec<_> = all.iter().map(Alarm::name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for a in &all {
            let about = a.definition["AlarmDescription"].as_str().unwrap();
            assert!(about.chars().count() <= MAX_DESCRIPTION_CHARS);
        }
    }
}
