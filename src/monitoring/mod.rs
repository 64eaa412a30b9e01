//! Alarms and a dashboard for what this agent publishes, as code: the `monitoring`
//! subcommand prints them for the configured namespace and the regions it finds
//! (docs/operations.md).
//!
//! Metric names and dimensions come from the modules that publish them
//! (`sources::plugins::transform`, `sources::prometheus`, `self_metrics`), so an alarm can
//! never watch a metric the agent does not write. [`alarms`] and [`dashboard`] are pure:
//! a [`Fleet`] (what the agent publishes about) and [`Knobs`] (periods and thresholds) in,
//! JSON out. [`template`] wraps both in a CloudFormation template whose parameters are the
//! knobs; [`discover`] is the only part that does I/O, asking the plugins their regions.

pub mod alarms;
pub mod dashboard;
pub mod discover;
pub mod template;

use serde_json::{Value, json};

use crate::config::{Config, is_region};
use crate::sources::prometheus::config::ScrapeTarget;

/// Defaults of the knobs; `--help`, the template's parameters and docs/operations.md show
/// them.
pub const DEFAULT_EVALUATION_PERIODS: u32 = 3;
pub const DEFAULT_SILENCE_PERIODS: u32 = 5;
pub const DEFAULT_COST_PERIOD: u32 = 3600;
pub const DEFAULT_COST_JUMP_SHARE: f64 = 0.2;
/// The backlog alarm's threshold is at least this, in seconds.
pub const MIN_QUEUE_AGE_THRESHOLD: u32 = 900;
/// How far back CloudWatch evaluates an alarm: period times evaluation periods is at most a
/// day (a quota that cannot be changed).
const MAX_EVALUATED_SECONDS: u64 = 86_400;

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One PutMetricAlarm input per line, for `aws cloudwatch put-metric-alarm
    /// --cli-input-json`.
    Alarms,
    /// The dashboard body, for `aws cloudwatch put-dashboard --dashboard-body`.
    Dashboard,
    /// A CloudFormation template with the alarms and the dashboard; the knobs below are its
    /// parameters' defaults.
    Cloudformation,
}

/// The command line's knobs, before they are checked.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Settings {
    /// Seconds per alarm period and dashboard point: 10, 30 or a multiple of 60 [default:
    /// the SCHEDULE interval rounded up to whole minutes]
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub period: Option<u32>,
    /// Periods a plugin or scrape target must be down, or publishing failing or backed up,
    /// before its alarm fires
    #[arg(long, value_name = "N", default_value_t = DEFAULT_EVALUATION_PERIODS, allow_negative_numbers = true)]
    pub evaluation_periods: u32,
    /// Periods without the agent's self metrics before its silence alarm fires
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SILENCE_PERIODS, allow_negative_numbers = true)]
    pub silence_periods: u32,
    /// Seconds the oldest undelivered datum may wait before the backlog alarm fires
    /// [default: 900, or three periods when longer]
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub queue_age_threshold: Option<u32>,
    /// Seconds per period of the projected-cost jump alarm, which compares each period with
    /// the one before
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_COST_PERIOD, allow_negative_numbers = true)]
    pub cost_period: u32,
    /// Share by which a region's projected monthly cost may rise from one cost period to
    /// the next before its alarm fires (0.2 = 20%)
    #[arg(long, value_name = "SHARE", default_value_t = DEFAULT_COST_JUMP_SHARE, allow_negative_numbers = true)]
    pub cost_jump_share: f64,
    /// SNS topic every alarm notifies, on ALARM and on OK [default: no notifications]
    #[arg(long, value_name = "ARN")]
    pub sns_topic_arn: Option<String>,
    /// The plugin regions to alarm on, instead of asking the configured plugins
    #[arg(long, value_name = "REGION,...", value_delimiter = ',')]
    pub regions: Vec<String>,
}

/// The knobs, checked: every alarm and widget reads its periods and thresholds from here.
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    pub period: u32,
    pub evaluation_periods: u32,
    pub silence_periods: u32,
    pub queue_age_threshold: u32,
    pub cost_period: u32,
    pub cost_jump_share: f64,
    pub sns_topic_arn: Option<String>,
}

/// A knob that is a CloudFormation parameter in the template and a number elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knob {
    Period,
    EvaluationPeriods,
    SilencePeriods,
    QueueAgeThreshold,
    CostPeriod,
    CostJumpShare,
}

impl Knob {
    pub const ALL: [Knob; 6] = [
        Knob::Period,
        Knob::EvaluationPeriods,
        Knob::SilencePeriods,
        Knob::QueueAgeThreshold,
        Knob::CostPeriod,
        Knob::CostJumpShare,
    ];

    /// The template's parameter name.
    pub fn parameter(self) -> &'static str {
        match self {
            Knob::Period => "Period",
            Knob::EvaluationPeriods => "EvaluationPeriods",
            Knob::SilencePeriods => "SilencePeriods",
            Knob::QueueAgeThreshold => "QueueAgeThreshold",
            Knob::CostPeriod => "CostPeriod",
            Knob::CostJumpShare => "CostJumpShare",
        }
    }

    /// The command line's flag for it.
    pub fn flag(self) -> &'static str {
        match self {
            Knob::Period => "--period",
            Knob::EvaluationPeriods => "--evaluation-periods",
            Knob::SilencePeriods => "--silence-periods",
            Knob::QueueAgeThreshold => "--queue-age-threshold",
            Knob::CostPeriod => "--cost-period",
            Knob::CostJumpShare => "--cost-jump-share",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Knob::Period => {
                "Seconds per period of the health, scrape and agent alarms: 10, 30 or a multiple of 60; at least the agent's SCHEDULE interval"
            }
            Knob::EvaluationPeriods => {
                "Periods a plugin or scrape target must be down, or publishing failing or backed up, before its alarm fires"
            }
            Knob::SilencePeriods => {
                "Periods without the agent's self metrics before its silence alarm fires"
            }
            Knob::QueueAgeThreshold => {
                "Seconds the oldest undelivered datum may wait before the backlog alarm fires"
            }
            Knob::CostPeriod => {
                "Seconds per period of the projected-cost jump alarms, which compare each period with the one before"
            }
            Knob::CostJumpShare => {
                "Share by which a region's projected monthly cost may rise between two cost periods before its alarm fires (0.2 = 20%)"
            }
        }
    }

    /// The smallest value CloudWatch (or sense) accepts.
    pub fn min(self) -> f64 {
        match self {
            Knob::Period => 10.0,
            Knob::CostPeriod => 60.0,
            Knob::CostJumpShare => 0.0,
            _ => 1.0,
        }
    }
}

impl Knobs {
    /// Checks `settings`; the defaults that depend on the agent's schedule come from
    /// `interval`, the gap between two of its cycles.
    pub fn new(settings: &Settings, interval: std::time::Duration) -> Result<Knobs, String> {
        let period = match settings.period {
            Some(p) => p,
            None => whole_minutes(interval),
        };
        let knobs = Knobs {
            period,
            evaluation_periods: settings.evaluation_periods,
            silence_periods: settings.silence_periods,
            queue_age_threshold: settings
                .queue_age_threshold
                .unwrap_or(MIN_QUEUE_AGE_THRESHOLD.max(period.saturating_mul(3))),
            cost_period: settings.cost_period,
            cost_jump_share: settings.cost_jump_share,
            sns_topic_arn: settings.sns_topic_arn.clone(),
        };
        for (knob, periods) in [
            (Knob::Period, None),
            (Knob::CostPeriod, None),
            (Knob::EvaluationPeriods, Some(knobs.period)),
            (Knob::SilencePeriods, Some(knobs.period)),
        ] {
            let value = knobs.get(knob) as u32;
            if value < knob.min() as u32 {
                return Err(format!("{}: {value}: at least {}", knob.flag(), knob.min()));
            }
            if matches!(knob, Knob::Period | Knob::CostPeriod) && !is_alarm_period(value) {
                return Err(format!(
                    "{}: {value}: CloudWatch alarm periods are 10, 30 or a multiple of 60 seconds",
                    knob.flag()
                ));
            }
            if let Some(period) = periods
                && u64::from(value) * u64::from(period) > MAX_EVALUATED_SECONDS
            {
                return Err(format!(
                    "{}: {value} periods of {period} s is longer than the day CloudWatch evaluates; lower it or {}",
                    knob.flag(),
                    Knob::Period.flag()
                ));
            }
        }
        // The cost alarm evaluates one period.
        if u64::from(knobs.cost_period) > MAX_EVALUATED_SECONDS {
            return Err(format!(
                "{}: {}: at most {MAX_EVALUATED_SECONDS}, the day CloudWatch evaluates",
                Knob::CostPeriod.flag(),
                knobs.cost_period
            ));
        }
        if !(knobs.cost_jump_share.is_finite() && knobs.cost_jump_share > 0.0) {
            return Err(format!(
                "{}: {}: a share above 0, such as 0.2 for 20%",
                Knob::CostJumpShare.flag(),
                knobs.cost_jump_share
            ));
        }
        if let Some(arn) = &knobs.sns_topic_arn
            && !is_topic_arn(arn)
        {
            return Err(format!(
                "--sns-topic-arn: {:?}: an SNS topic ARN such as arn:aws:sns:us-east-1:123456789012:finops-pager",
                crate::untrusted::cut(arn, 80)
            ));
        }
        Ok(knobs)
    }

    pub fn get(&self, knob: Knob) -> f64 {
        match knob {
            Knob::Period => f64::from(self.period),
            Knob::EvaluationPeriods => f64::from(self.evaluation_periods),
            Knob::SilencePeriods => f64::from(self.silence_periods),
            Knob::QueueAgeThreshold => f64::from(self.queue_age_threshold),
            Knob::CostPeriod => f64::from(self.cost_period),
            Knob::CostJumpShare => self.cost_jump_share,
        }
    }
}

/// The smallest whole number of minutes at least as long as `interval`: the agent publishes
/// standard-resolution (60 s) datums, and a period shorter than its schedule would see
/// missing data between cycles.
fn whole_minutes(interval: std::time::Duration) -> u32 {
    let secs = interval.as_secs() + u64::from(interval.subsec_nanos() > 0);
    let minutes = secs.div_ceil(60).max(1);
    u32::try_from(minutes * 60).unwrap_or(86_400).min(86_400)
}

fn is_alarm_period(p: u32) -> bool {
    p == 10 || p == 30 || (p >= 60 && p.is_multiple_of(60))
}

/// `arn:<partition>:sns:<region>:<12 digits>:<topic>`.
fn is_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_, partition, service, region, account, topic] = parts.as_slice() else {
        return false;
    };
    *arn_ == "arn"
        && partition.starts_with("aws")
        && *service == "sns"
        && is_region(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (1..=256).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// What the agent publishes about, as the alarms and the dashboard need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub namespace: String,
    /// The plugin regions, sorted, each once.
    pub regions: Vec<String>,
    /// The basket: (resource type, SKU) of each entry, in COST_RESOURCES order.
    pub basket: Vec<(String, String)>,
    pub scrape_targets: Vec<ScrapeTarget>,
    /// The Agent dimension of the self metrics; None when SELF_METRICS=false.
    pub agent: Option<String>,
}

impl Fleet {
    /// The fleet of `config`, with the plugin regions as found.
    pub fn new(config: &Config, mut regions: Vec<String>) -> Fleet {
        regions.sort();
        regions.dedup();
        Fleet {
            namespace: config.namespace.clone(),
            regions,
            basket: config
                .plugins
                .basket
                .iter()
                .map(|r| (r.resource_type.clone(), r.sku.clone()))
                .collect(),
            // Named and dimensioned as the agent publishes them: no password, no query value.
            scrape_targets: config
                .prometheus
                .targets
                .iter()
                .map(|t| {
                    let mut shown = t.clone();
                    shown.url = crate::untrusted::redact_urls(&t.url);
                    shown
                })
                .collect(),
            agent: config.self_metrics.clone(),
        }
    }
}

/// How knobs appear in the JSON: as numbers (the subcommand's alarms and dashboard), or as
/// references to the template's parameters.
#[derive(Debug, Clone, Copy)]
pub enum Render<'a> {
    Values(&'a Knobs),
    Parameters,
}

impl Render<'_> {
    pub fn num(&self, knob: Knob) -> Value {
        match self {
            Render::Values(k) => number(k.get(knob)),
            Render::Parameters => json!({ "Ref": knob.parameter() }),
        }
    }

    /// The SNS topic to notify, as an action list; None: no actions.
    pub fn actions(&self) -> Option<Value> {
        match self {
            Render::Values(k) => k.sns_topic_arn.as_ref().map(|arn| json!([arn])),
            Render::Parameters => Some(json!({
                "Fn::If": [template::NOTIFY, [{ "Ref": template::TOPIC }], { "Ref": "AWS::NoValue" }]
            })),
        }
    }
}

/// Whole numbers print without a fraction, as CloudWatch and CloudFormation show them.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// The knobs a default agent (`0 * * * * *`) gets from the command line's defaults.
    pub(crate) fn default_knobs() -> Knobs {
        Knobs::new(&defaults(), Duration::from_secs(60)).unwrap()
    }

    fn knobs(settings: Settings) -> Result<Knobs, String> {
        Knobs::new(&settings, Duration::from_secs(60))
    }

    fn defaults() -> Settings {
        Settings {
            evaluation_periods: DEFAULT_EVALUATION_PERIODS,
            silence_periods: DEFAULT_SILENCE_PERIODS,
            cost_period: DEFAULT_COST_PERIOD,
            cost_jump_share: DEFAULT_COST_JUMP_SHARE,
            ..Settings::default()
        }
    }

    #[test]
    fn the_period_follows_the_schedule_in_whole_minutes() {
        for (interval, period) in [
            (Duration::from_secs(1), 60),
            (Duration::from_secs(60), 60),
            (Duration::from_millis(60_001), 120),
            (Duration::from_secs(300), 300),
            (Duration::from_secs(3600), 3600),
            (Duration::from_secs(86_400 * 7), 86_400),
        ] {
            assert_eq!(whole_minutes(interval), period, "{interval:?}");
        }
        assert_eq!(
            Knobs::new(&defaults(), Duration::from_secs(300))
                .unwrap()
                .period,
            300
        );
        // A daily schedule's period leaves room for one evaluation period only.
        let daily = Knobs::new(&defaults(), Duration::from_secs(86_400)).unwrap_err();
        assert!(
            daily.starts_with("--evaluation-periods: 3 periods of 86400 s"),
            "{daily}"
        );
    }

    #[test]
    fn the_backlog_threshold_is_fifteen_minutes_or_three_periods() {
        assert_eq!(knobs(defaults()).unwrap().queue_age_threshold, 900);
        let long = Knobs::new(&defaults(), Duration::from_secs(600)).unwrap();
        assert_eq!(long.queue_age_threshold, 1800);
        let set = knobs(Settings {
            queue_age_threshold: Some(42),
            ..defaults()
        });
        assert_eq!(set.unwrap().queue_age_threshold, 42);
    }

    #[test]
    fn bad_knobs_are_refused_naming_the_flag() {
        let cases = [
            (
                Settings {
                    period: Some(45),
                    ..defaults()
                },
                "--period",
            ),
            (
                Settings {
                    period: Some(0),
                    ..defaults()
                },
                "--period",
            ),
            (
                Settings {
                    cost_period: 90,
                    ..defaults()
                },
                "--cost-period",
            ),
            (
                Settings {
                    cost_period: 86_460,
                    ..defaults()
                },
                "--cost-period",
            ),
            (
                Settings {
                    evaluation_periods: 0,
                    ..defaults()
                },
                "--evaluation-periods",
            ),
            (
                Settings {
                    period: Some(3600),
                    silence_periods: 25,
                    ..defaults()
                },
                "--silence-periods",
            ),
            (
                Settings {
                    cost_jump_share: 0.0,
                    ..defaults()
                },
                "--cost-jump-share",
            ),
            (
                Settings {
                    cost_jump_share: f64::NAN,
                    ..defaults()
                },
                "--cost-jump-share",
            ),
            (
                Settings {
                    sns_topic_arn: Some("arn:aws:sqs:us-east-1:123456789012:q".into()),
                    ..defaults()
                },
                "--sns-topic-arn",
            ),
            (
                Settings {
                    sns_topic_arn: Some("arn:aws:sns:us-east-1:1234:t".into()),
                    ..defaults()
                },
                "--sns-topic-arn",
            ),
        ];
        for (settings, flag) in cases {
            let err = knobs(settings.clone()).unwrap_err();
            assert!(err.starts_with(flag), "{settings:?}: {err}");
        }
    }

    #[test]
    fn good_knobs_are_kept() {
        let k = knobs(Settings {
            period: Some(10),
            evaluation_periods: 1,
            silence_periods: 2,
            cost_period: 60,
            cost_jump_share: 0.5,
            sns_topic_arn: Some("arn:aws-us-gov:sns:us-gov-west-1:123456789012:pager.fifo".into()),
            ..defaults()
        })
        .unwrap();
        assert_eq!(
            (
                k.period,
                k.evaluation_periods,
                k.silence_periods,
                k.cost_period
            ),
            (10, 1, 2, 60)
        );
        assert_eq!(k.get(Knob::CostJumpShare), 0.5);
    }

    #[test]
    fn numbers_render_whole_when_whole() {
        assert_eq!(number(60.0).to_string(), "60");
        assert_eq!(number(0.25).to_string(), "0.25");
    }
}
