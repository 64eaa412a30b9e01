//! The basket of resources whose cost is asked of every region (COST_RESOURCES).
//!
//! Syntax: `type:sku[?tag=value&tag=value]`, comma separated, e.g.
//! `ec2:t3.micro,ebs:gp3?size=100`. Each type:sku may appear once, because its datums are
//! keyed by Region, ResourceType and Sku and two entries would land on one metric.

use std::collections::BTreeMap;

/// The most entries a basket may have. Each entry is up to three metrics (cost, unit price,
/// carbon) in every region, billed at $0.30 a metric a month, and one query per region per
/// cycle: 50 entries across 12 regions are 1,800 metrics, $540 a month.
pub const MAX_ENTRIES: usize = 50;
/// CloudWatch's price of one custom metric a month, for the arithmetic in the error.
const METRIC_MONTHLY_USD: f64 = 0.30;
const METRICS_PER_ENTRY: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub resource_type: String,
    pub sku: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {entry:?}: {reason}")]
pub struct BasketError {
    pub entry: String,
    pub reason: String,
}

/// Parses a whole basket, reporting every bad entry. `none` is the empty basket.
pub fn parse(spec: &str) -> Result<Vec<Resource>, Vec<BasketError>> {
    if spec.trim() == "none" {
        return Ok(Vec::new());
    }
    let entries = spec.split(',').count();
    if entries > MAX_ENTRIES {
        let metrics = entries * METRICS_PER_ENTRY;
        return Err(vec![BasketError {
            entry: format!("{entries} entries"),
            reason: format!(
                "at most {MAX_ENTRIES} entries: each is up to {METRICS_PER_ENTRY} metrics in every region at ${METRIC_MONTHLY_USD:.2} a month, so {entries} entries would be {metrics} metrics, ${:.2} a month for each region. Price fewer resources",
                metrics as f64 * METRIC_MONTHLY_USD
            ),
        }]);
    }
    let mut resources: Vec<Resource> = Vec::new();
    let mut errors = Vec::new();
    for entry in spec.split(',').map(str::trim) {
        match parse_entry(entry) {
            Ok(r) => {
                if resources
                    .iter()
                    .any(|o| o.resource_type == r.resource_type && o.sku == r.sku)
                {
                    errors.push(err(entry, "this type:sku is already in the basket"));
                } else {
                    resources.push(r);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

fn err(entry: &str, reason: &str) -> BasketError {
    BasketError {
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_entry(entry: &str) -> Result<Resource, BasketError> {
    let (head, query) = match entry.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (entry, None),
    };
    let Some((resource_type, sku)) = head.split_once(':') else {
        return Err(err(entry, "expected type:sku, e.g. ec2:t3.micro"));
    };
    if resource_type.is_empty()
        || !resource_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(err(
            entry,
            "resource type must be lowercase letters, digits or _ (ec2, ebs, lambda, s3, dynamodb, elb)",
        ));
    }
    // The sku becomes a CloudWatch dimension value.
    if sku.is_empty() || sku.len() > 1024 || !sku.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(
            entry,
            "sku must be 1-1024 printable ASCII characters without spaces",
        ));
    }
    let mut tags = BTreeMap::new();
    if let Some(query) = query {
        for pair in query.split('&') {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(err(entry, "tags must be tag=value pairs joined by &"));
            };
            if k.is_empty() || v.is_empty() {
                return Err(err(entry, "tag names and values must not be empty"));
            }
            if tags.insert(k.to_string(), v.to_string()).is_some() {
                return Err(err(entry, "a tag appears twice"));
            }
        }
    }
    Ok(Resource {
        resource_type: resource_type.to_string(),
        sku: sku.to_string(),
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_basket_over_the_cap_is_refused_with_its_monthly_cost() {
        let spec: Vec<String> = (0..10_000).map(|i| format!("ec2:t{i}")).collect();
        let e = parse(&spec.join(",")).unwrap_err();
        assert_eq!(e.len(), 1);
        let text = e[0].to_string();
        assert!(text.contains("at most 50 entries"), "{text}");
        assert!(
            text.contains("30000 metrics, $9000.00 a month for each region"),
            "{text}"
        );
        let spec: Vec<String> = (0..MAX_ENTRIES).map(|i| format!("ec2:t{i}")).collect();
        assert_eq!(parse(&spec.join(",")).unwrap().len(), MAX_ENTRIES);
    }

    fn res(t: &str, s: &str, tags: &[(&str, &str)]) -> Resource {
        Resource {
            resource_type: t.into(),
            sku: s.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn parses_the_default_basket() {
        assert_eq!(
            parse("ec2:t3.micro,ec2:m5.large,ebs:gp3?size=100").unwrap(),
            vec![
                res("ec2", "t3.micro", &[]),
                res("ec2", "m5.large", &[]),
                res("ebs", "gp3", &[("size", "100")]),
            ]
        );
    }

    #[test]
    fn parses_several_tags_and_trims_spaces_around_entries() {
        assert_eq!(
            parse(" lambda:512?requests_per_month=1000000&avg_duration_ms=200 , s3:STANDARD")
                .unwrap(),
            vec![
                res(
                    "lambda",
                    "512",
                    &[
                        ("requests_per_month", "1000000"),
                        ("avg_duration_ms", "200")
                    ]
                ),
                res("s3", "STANDARD", &[]),
            ]
        );
    }

    #[test]
    fn none_is_an_empty_basket() {
        assert_eq!(parse("none").unwrap(), vec![]);
    }

    #[test]
    fn reports_every_bad_entry() {
        let errors =
            parse("ec2,EC2:x,ebs:,ebs:gp3?size,ebs:gp2?a=1&a=2,s3:has space,ec2:ok").unwrap_err();
        let entries: Vec<&str> = errors.iter().map(|e| e.entry.as_str()).collect();
        assert_eq!(
            entries,
            [
                "ec2",
                "EC2:x",
                "ebs:",
                "ebs:gp3?size",
                "ebs:gp2?a=1&a=2",
                "s3:has space"
            ]
        );
        assert!(errors[0].reason.contains("type:sku"));
        assert!(errors[1].reason.contains("lowercase"));
        assert!(errors[4].reason.contains("twice"));
    }

    #[test]
    fn empty_entries_are_errors() {
        let errors = parse("ec2:t3.micro,,ebs:gp3").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].entry, "");
    }

    #[test]
    fn the_same_type_and_sku_twice_is_an_error_even_with_other_tags() {
        let errors = parse("ebs:gp3?size=100,ebs:gp3?size=500").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].entry, "ebs:gp3?size=500");
        assert!(errors[0].reason.contains("already"));
    }
}
