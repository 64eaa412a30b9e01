//! The cron schedule: validated as tokio-cron-scheduler will run it, and the ticks around a
//! moment that cycle deadlines and `/healthz` are judged by.

use std::time::{Duration, SystemTime};

/// A validated cron schedule, parsed exactly as tokio-cron-scheduler parses it.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expr: String,
    cron: croner::Cron,
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, String> {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expr)
            .map(|cron| Schedule {
                expr: expr.to_string(),
                cron,
            })
            .map_err(|e| e.to_string())
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: SystemTime) -> Option<SystemTime> {
        let t: chrono::DateTime<chrono::Utc> = t.into();
        self.cron
            .find_next_occurrence(&t, false)
            .ok()
            .map(SystemTime::from)
    }

    /// The gap between the next two ticks after `t`: how long one cycle may take. The one
    /// place it is computed; a schedule that runs out of ticks gets a minute.
    pub fn interval(&self, t: SystemTime) -> Duration {
        self.interval_after(t).unwrap_or(Duration::from_secs(60))
    }

    fn interval_after(&self, t: SystemTime) -> Option<Duration> {
        let a = self.next_after(t)?;
        let b = self.next_after(a)?;
        b.duration_since(a).ok()
    }

    /// The latest tick at or before `t`, and the one before it, and the next after `t`.
    pub fn ticks_around(&self, t: SystemTime) -> Ticks {
        let at: chrono::DateTime<chrono::Utc> = t.into();
        let last = self.cron.find_previous_occurrence(&at, true).ok();
        let before_last = last.and_then(|l| self.cron.find_previous_occurrence(&l, false).ok());
        Ticks {
            before_last: before_last.map(SystemTime::from),
            last: last.map(SystemTime::from),
            next: self.next_after(t),
        }
    }
}

/// The schedule's ticks around a moment: what `/healthz` judges freshness by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticks {
    /// The tick before `last`: the latest one whose cycle must have ended by now.
    pub before_last: Option<SystemTime>,
    /// The latest tick at or before the moment; its cycle may still be running.
    pub last: Option<SystemTime>,
    pub next: Option<SystemTime>,
}

impl Ticks {
    /// Whether these are still the ticks around `t`, so they need not be searched again.
    pub fn cover(&self, t: SystemTime) -> bool {
        self.last.is_none_or(|last| last <= t) && self.next.is_some_and(|next| t < next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_around_a_moment_follow_an_irregular_schedule() {
        let s = Schedule::parse("0 0 9 * * MON-FRI").unwrap();
        let at = |text: &str| SystemTime::from(chrono::DateTime::parse_from_rfc3339(text).unwrap());
        // 2026-11-22 is a Sunday.
        let t = s.ticks_around(at("2026-11-22T12:00:00Z"));
        assert_eq!(t.last, Some(at("2026-11-20T09:00:00Z")));
        assert_eq!(t.before_last, Some(at("2026-11-19T09:00:00Z")));
        assert_eq!(t.next, Some(at("2026-11-23T09:00:00Z")));
        assert!(t.cover(at("2026-11-23T08:59:59Z")));
        assert!(!t.cover(at("2026-11-23T09:00:00Z")));
        let t = s.ticks_around(at("2026-11-23T09:00:00Z"));
        assert_eq!(t.last, Some(at("2026-11-23T09:00:00Z")));
        assert_eq!(t.before_last, Some(at("2026-11-20T09:00:00Z")));
    }

    #[test]
    fn schedule_ticks() {
        let s = Schedule::parse("*/15 * * * * *").unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001);
        let next = s.next_after(t).unwrap();
        assert_eq!(
            next.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                % 15,
            0
        );
        assert_eq!(s.interval_after(t), Some(Duration::from_secs(15)));
    }
}
