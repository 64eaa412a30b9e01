//! The publish splay (PUBLISH_SPLAY): each agent collects on the tick but sends at its own
//! offset into the interval, so a fleet on one schedule does not call PutMetricData in the
//! same second and run into the account's quota together (docs/scale.md).
//!
//! The offset is a pure function of the agent's identity (AGENT_NAME and the host name):
//! a fleet spreads evenly, because the hash spreads its identities evenly, and one agent
//! sends at the same point of every interval, so its data arrives at a steady pace.

use std::time::Duration;

use crate::config::Variable;

pub const DEFAULT_SPLAY: &str = "50%";
pub const PUBLISH_SPLAY: Variable = Variable {
    name: "PUBLISH_SPLAY",
    default: DEFAULT_SPLAY,
    meaning: "the latest an agent sends after its tick, spread by identity: a share of the interval (0-90%) or a duration; 0 sends at once",
    example: "20s",
};
/// The largest share: the rest of the interval is for retries.
const MAX_SHARE: f64 = 0.9;

/// How far after its tick an agent may send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Splay {
    /// A share of each interval, so it follows the schedule.
    Share(f64),
    /// A fixed bound, never more than [`MAX_SHARE`] of the interval.
    Fixed(Duration),
}

impl Splay {
    /// A share is written with `%` (`50%`; a bare `0.5` is refused as ambiguous), a
    /// duration as humantime reads it (`20s`); `0` turns the splay off.
    pub fn parse(text: &str) -> Result<Splay, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Splay::Fixed(Duration::ZERO));
        }
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<f64>() {
                Ok(p) if (0.0..=MAX_SHARE * 100.0).contains(&p) => Ok(Splay::Share(p / 100.0)),
                _ => Err("a share of the interval from 0% to 90%, such as 50%".into()),
            };
        }
        humantime::parse_duration(text)
            .map(Splay::Fixed)
            .map_err(|e| format!("a share such as 50%, a duration such as 20s, or 0 ({e})"))
    }

    /// The bound for an interval of `interval`.
    pub fn bound(&self, interval: Duration) -> Duration {
        let most = interval.mul_f64(MAX_SHARE);
        match *self {
            Splay::Share(share) => interval.mul_f64(share),
            Splay::Fixed(d) => d.min(most),
        }
    }

    /// This agent's offset into an interval of `interval`: `fraction` of the bound, or of
    /// `room` (the time left to send and still finish an attempt before the next tick) when
    /// that is shorter. Scaling rather than cutting keeps a fleet spread evenly: cut, every
    /// agent past the room would send in the same instant.
    pub fn offset(&self, fraction: f64, interval: Duration, room: Duration) -> Duration {
        self.bound(interval)
            .min(room)
            .mul_f64(fraction.clamp(0.0, 1.0))
    }
}

impl std::fmt::Display for Splay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Splay::Share(share) => write!(f, "{}%", share * 100.0),
            Splay::Fixed(d) => write!(f, "{}", humantime::format_duration(d)),
        }
    }
}

/// Where in `[0, 1)` of the bound an agent with this identity sends: FNV-1a over the
/// identity, then SplitMix64's finalizer, so identities that differ in one character (host
/// names `ip-10-0-1-23`, `ip-10-0-1-24`) land far apart.
pub fn fraction(agent_name: &str, host: &str) -> f64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for b in agent_name.bytes().chain([0]).chain(host.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // The top 53 bits, as an f64 in [0, 1).
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The host's name: the kernel's (a container's own hostname: its ID under Docker, the pod
/// name under Kubernetes, the task's under ECS), else HOSTNAME, else empty.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_is_the_kernels_as_uname_reports_it() {
        let uname = std::process::Command::new("uname")
            .arg("-n")
            .output()
            .expect("uname");
        let name = String::from_utf8(uname.stdout).unwrap();
        assert!(!name.trim().is_empty());
        assert_eq!(host_name(), name.trim());
    }

    #[test]
    fn shares_durations_and_zero_parse() {
        assert_eq!(Splay::parse("50%"), Ok(Splay::Share(0.5)));
        assert_eq!(Splay::parse(" 0% "), Ok(Splay::Share(0.0)));
        assert_eq!(Splay::parse("90%"), Ok(Splay::Share(0.9)));
        assert_eq!(
            Splay::parse("20s"),
            Ok(Splay::Fixed(Duration::from_secs(20)))
        );
        assert_eq!(
            Splay::parse("1m 30s"),
            Ok(Splay::Fixed(Duration::from_secs(90)))
        );
        assert_eq!(Splay::parse("0"), Ok(Splay::Fixed(Duration::ZERO)));
        assert_eq!(Splay::parse("0s"), Ok(Splay::Fixed(Duration::ZERO)));
    }

    #[test]
    fn splays_print_as_written() {
        assert_eq!(Splay::Share(0.5).to_string(), "50%");
        assert_eq!(Splay::Fixed(Duration::from_secs(20)).to_string(), "20s");
        assert_eq!(Splay::Fixed(Duration::ZERO).to_string(), "0s");
    }

    #[test]
    fn bad_splays_say_what_is_expected() {
        for bad in ["91%", "-1%", "abc%", "0.5", "soon", "", "50 %x"] {
            let err = Splay::parse(bad).unwrap_err();
            assert!(err.contains("such as"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_bound_follows_the_interval_and_leaves_room_for_retries() {
        let minute = Duration::from_secs(60);
        assert_eq!(Splay::Share(0.5).bound(minute), Duration::from_secs(30));
        assert_eq!(
            Splay::Fixed(Duration::from_secs(20)).bound(minute),
            Duration::from_secs(20)
        );
        assert_eq!(
            Splay::Fixed(Duration::from_secs(600)).bound(minute),
            Duration::from_secs(54)
        );
        assert_eq!(
            Splay::Fixed(Duration::ZERO).offset(0.99, minute, minute),
            Duration::ZERO
        );
        assert_eq!(
            Splay::Share(0.5).offset(0.5, minute, minute),
            Duration::from_secs(15)
        );
        // Less room than the bound: the fleet is spread over the room, not piled at its end.
        let room = Duration::from_secs(10);
        assert_eq!(
            Splay::Share(0.5).offset(0.5, minute, room),
            Duration::from_secs(5)
        );
        assert_eq!(
            Splay::Share(0.5).offset(0.9, minute, room),
            Duration::from_secs(9)
        );
    }

    #[test]
    fn the_fraction_is_the_one_the_scale_model_computes() {
        // tests/e2e/simulate.py reimplements it for docs/scale.md; both must agree.
        assert_eq!(
            fraction("cloudwatch-publisher", "ip-10-0-0-1"),
            0.9775970217689061
        );
        assert_eq!(fraction("sim-0000", "h"), 0.5665255632013562);
    }

    #[test]
    fn an_agent_keeps_its_offset_and_a_fleet_spreads_evenly() {
        assert_eq!(fraction("a", "host-1"), fraction("a", "host-1"));
        assert_ne!(fraction("a", "host-1"), fraction("a", "host-2"));
        // The name and the host are kept apart: ("ab", "c") is not ("a", "bc").
        assert_ne!(fraction("ab", "c"), fraction("a", "bc"));
        // 10,000 agents whose host names differ in their last digits, as ECS and
        // Kubernetes name them: each tenth of the interval gets close to its tenth.
        let mut bins = [0usize; 10];
        for i in 0..10_000 {
            let f = fraction(
                "cloudwatch-publisher",
                &format!("ip-10-0-{}-{}", i / 256, i % 256),
            );
            assert!((0.0..1.0).contains(&f));
            bins[(f * 10.0) as usize] += 1;
        }
        for (i, n) in bins.iter().enumerate() {
            assert!(
                (900..=1100).contains(n),
                "tenth {i} has {n} of 10000: {bins:?}"
            );
        }
    }
}
