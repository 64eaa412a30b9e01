//! Fuzzing invariants for the connect surface (see [`super`]): the bytes as a plugin's
//! Connect JSON answer, decoded by the agent's own [`decode`] as GetProjectedCost,
//! GetPluginInfo, and a Connect error body.
//!
//! Whatever the bytes: no panic; every string of an error, and every plugin string the
//! agent logs (currency, version), is escaped and cut as [`untrusted::remote`] promises; a
//! reported region is a well-formed region name or nothing; a cost is either all finite
//! numbers or reported as not finite, never published as NaN or infinity.

use hyper::StatusCode;

use crate::config::is_region;
use crate::sources::plugins::client::{CallError, PluginInfo, ProjectedCost, decode};
use crate::untrusted::{self, MAX_REMOTE_CHARS};

/// The statuses a plugin's error answer is decoded under: Connect's own, one it never sends,
/// and a bare redirect.
const ERROR_STATUSES: [u16; 6] = [400, 404, 429, 500, 503, 302];

/// Runs the agent's own code on `data` and panics when an invariant breaks.
pub fn run(data: &[u8]) {
    match decode::<ProjectedCost>(StatusCode::OK, data) {
        Ok(cost) => check_cost(&cost),
        Err(e) => check_error(&e, data),
    }
    match decode::<PluginInfo>(StatusCode::OK, data) {
        Ok(info) => check_info(&info),
        Err(e) => check_error(&e, data),
    }
    // The error body under a status picked by the first byte, so the corpus covers each.
    let status = ERROR_STATUSES[usize::from(data.first().copied().unwrap_or(0)) % 6];
    let status = StatusCode::from_u16(status).expect("a valid status");
    match decode::<ProjectedCost>(status, data) {
        Ok(_) => panic!("a {status} answer was read as a cost"),
        Err(e) => {
            assert!(
                matches!(e, CallError::Connect { status: s, .. } if s == status.as_u16()),
                "{e:?}"
            );
            check_error(&e, data);
        }
    }
}

fn check_cost(cost: &ProjectedCost) {
    let numbers = [
        Some(cost.unit_price),
        Some(cost.cost_per_month),
        cost.carbon_grams(),
    ];
    // Published only when finite (plugins::collect checks is_finite): then every number is.
    assert_eq!(
        cost.is_finite(),
        numbers.iter().flatten().all(|n| n.is_finite()),
        "{cost:?}"
    );
    // The currency is logged when it is not USD.
    assert_safe(&untrusted::remote(cost.currency()));
}

fn check_info(info: &PluginInfo) {
    if let Some(region) = info.region() {
        assert!(is_region(region), "{region:?}");
        assert!(
            region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{region:?}"
        );
    }
    if let Some(version) = &info.version {
        assert_safe(&untrusted::remote(version));
    }
}

/// Every string of the error is safe to log, and so is its whole text; its size does not
/// grow with the answer's.
fn check_error(e: &CallError, data: &[u8]) {
    match e {
        CallError::Connect { code, message, .. } => {
            assert_safe(code);
            assert_safe(message);
        }
        CallError::Decode(text) | CallError::Transport(text) => assert_safe(text),
        CallError::Timeout | CallError::Status(_) => {}
    }
    assert_safe(e.code());
    let text = e.to_string();
    assert!(!text.chars().any(unsafe_char), "{text:?}");
    assert!(
        text.len() <= 4 * (2 * MAX_REMOTE_CHARS + 100),
        "{} bytes of error text from {} bytes of answer",
        text.len(),
        data.len()
    );
}

/// Escaped (no control character or invisible mark left) and at most
/// [`MAX_REMOTE_CHARS`] characters before the cut marker.
fn assert_safe(text: &str) {
    assert!(!text.chars().any(unsafe_char), "{text:?}");
    let kept = match text.rfind("...[") {
        Some(at) if text.ends_with(" more characters cut]") => &text[..at],
        _ => text,
    };
    assert!(
        kept.chars().count() <= MAX_REMOTE_CHARS,
        "{} characters: {text:?}",
        kept.chars().count()
    );
}

/// A character that could break a log line or what a terminal shows.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_answers_keep_the_invariants() {
        let long = format!(
            r#"{{"code":"{}","message":"a\nb\u001b[2J\u2028","version":"{}"}}"#,
            "c".repeat(5000),
            "\\n".repeat(3000)
        );
        for answer in [
            &b""[..],
            b"{}",
            b"null",
            br#"{"unitPrice":"NaN","costPerMonth":"Infinity"}"#,
            br#"{"costPerMonth":"1e400","currency":"EU\nR"}"#,
            br#"{"metadata":{"region":"us-east-1\n"},"version":"\u202e1.0"}"#,
            long.as_bytes(),
            &[0xff, 0xfe, b'{'],
        ] {
            run(answer);
        }
    }

    #[test]
    #[should_panic(expected = "characters")]
    fn an_uncut_string_breaks_the_invariant() {
        assert_safe(&"x".repeat(MAX_REMOTE_CHARS + 1));
    }
}
