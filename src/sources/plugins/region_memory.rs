//! Which region a target's data goes under, cycle after cycle.
//!
//! The plugin says which region it serves (GetPluginInfo), and that is trusted over the port
//! or PLUGIN_TARGETS, because the fleet's layout can change. But each region a target is
//! published under is a set of billed CloudWatch metrics, so a plugin whose answer changes
//! every cycle must not mint a new set every cycle. The rule: a target's first well-formed
//! report is adopted at once; a different report later is adopted only after
//! [`CONFIRM_CYCLES`] cycles in a row say the same. Until then the data stays under the
//! region the target had, and cost queries name that region too (a plugin that really
//! moved answers them with an error, counted in CostQueryErrors, rather than its new
//! region's prices being filed under the old name). A real move (a redeploy that swapped
//! ports) is followed within three cycles; a flapping or random answer never is, and at most
//! one region per target is ever published at a time.
//!
//! [`decide`] is pure: the collector keeps one [`Memory`] per target and stores the
//! [`Decision`]'s memory after each cycle.

/// Cycles in a row a new region must be reported before a target's data moves to it.
pub const CONFIRM_CYCLES: u32 = 3;

/// What is remembered of one target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The region the target's data goes under, once it has reported one.
    pub region: Option<String>,
    /// A different region it has been reporting, and for how many cycles in a row.
    pub candidate: Option<(String, u32)>,
}

/// What a cycle's report changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Nothing new.
    Unchanged,
    /// The first region this target reported.
    Discovered,
    /// The first report names another region than PLUGIN_TARGETS did; the report wins.
    DiffersFromConfigured { configured: String },
    /// The target reports `reported`, which is not adopted yet (`count` of
    /// [`CONFIRM_CYCLES`] cycles); its data stays under the remembered region.
    Unconfirmed { reported: String, count: u32 },
    /// The target's data moved from `previous` after [`CONFIRM_CYCLES`] cycles.
    Moved { previous: String },
}

/// What [`decide`] made of one cycle's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The region this cycle's data goes under; None for a port no plugin has named.
    pub region: Option<String>,
    /// What to remember for the next cycle.
    pub memory: Memory,
    pub event: Event,
}

impl Memory {
    /// The region to name in cost queries before the plugin has answered this cycle.
    pub fn hint<'a>(&'a self, configured: Option<&'a str>) -> Option<&'a str> {
        self.region.as_deref().or(configured)
    }
}

/// The region of this cycle's data, the memory to keep, and what changed. `reported` is
/// this cycle's well-formed report, if any; `configured` the PLUGIN_TARGETS name, if any.
pub fn decide(memory: &Memory, reported: Option<&str>, configured: Option<&str>) -> Decision {
    let Some(reported) = reported else {
        // Silent this cycle (down, or GetPluginInfo failed): the last known region, else the
        // configured one. A pending change is not interrupted by silence alone.
        return Decision {
            region: memory.hint(configured).map(str::to_string),
            memory: memory.clone(),
            event: Event::Unchanged,
        };
    };
    let adopt = |event| Decision {
        region: Some(reported.to_string()),
        memory: Memory {
            region: Some(reported.to_string()),
            candidate: None,
        },
        event,
    };
    let Some(current) = memory.region.as_deref() else {
        return match configured {
            Some(c) if c != reported => adopt(Event::DiffersFromConfigured {
                configured: c.to_string(),
            }),
            _ => adopt(Event::Discovered),
        };
    };
    if current == reported {
        return adopt(Event::Unchanged);
    }
    let count = match &memory.candidate {
        Some((candidate, n)) if candidate == reported => n + 1,
        _ => 1,
    };
    if count >= CONFIRM_CYCLES {
        return adopt(Event::Moved {
            previous: current.to_string(),
        });
    }
    Decision {
        region: Some(current.to_string()),
        memory: Memory {
            region: Some(current.to_string()),
            candidate: Some((reported.to_string(), count)),
        },
        event: Event::Unconfirmed {
            reported: reported.to_string(),
            count,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `reports` through one target's memory: the region each cycle's data went under.
    fn run(
        reports: &[Option<&str>],
        configured: Option<&str>,
    ) -> (Vec<Option<String>>, Vec<Event>) {
        let mut memory = Memory::default();
        let mut regions = Vec::new();
        let mut events = Vec::new();
        for r in reports {
            let d = decide(&memory, *r, configured);
            memory = d.memory;
            regions.push(d.region);
            events.push(d.event);
        }
        (regions, events)
    }

    fn some(r: &str) -> Option<String> {
        Some(r.to_string())
    }

    #[test]
    fn the_first_report_is_adopted_at_once() {
        let (regions, events) = run(&[Some("us-west-1"), Some("us-west-1")], None);
        assert_eq!(regions, [some("us-west-1"), some("us-west-1")]);
        assert_eq!(events, [Event::Discovered, Event::Unchanged]);
    }

    #[test]
    fn a_discovered_port_never_heard_from_is_no_region() {
        let (regions, _) = run(&[None, None], None);
        assert_eq!(regions, [None, None]);
    }

    #[test]
    fn an_explicit_target_never_heard_from_uses_its_configured_name() {
        let (regions, _) = run(&[None], Some("eu-west-1"));
        assert_eq!(regions, [some("eu-west-1")]);
    }

    #[test]
    fn the_plugins_own_first_report_wins_over_the_configured_name() {
        let (regions, events) = run(&[Some("us-west-1")], Some("us-gov-west-1"));
        assert_eq!(regions, [some("us-west-1")]);
        assert_eq!(
            events,
            [Event::DiffersFromConfigured {
                configured: "us-gov-west-1".into()
            }]
        );
    }

    #[test]
    fn a_silent_target_keeps_its_last_known_region() {
        let (regions, _) = run(&[Some("us-west-1"), None, None], Some("us-gov-west-1"));
        assert_eq!(
            regions,
            [some("us-west-1"), some("us-west-1"), some("us-west-1")]
        );
    }

    #[test]
    fn a_move_is_followed_after_three_cycles_in_a_row() {
        let r = [
            Some("a-b-1"),
            Some("c-d-2"),
            Some("c-d-2"),
            Some("c-d-2"),
            Some("c-d-2"),
        ];
        let (regions, events) = run(&r, None);
        assert_eq!(
            regions,
            [
                some("a-b-1"),
                some("a-b-1"),
                some("a-b-1"),
                some("c-d-2"),
                some("c-d-2")
            ]
        );
        assert_eq!(
            events[1..4],
            [
                Event::Unconfirmed {
                    reported: "c-d-2".into(),
                    count: 1
                },
                Event::Unconfirmed {
                    reported: "c-d-2".into(),
                    count: 2
                },
                Event::Moved {
                    previous: "a-b-1".into()
                },
            ]
        );
    }

    #[test]
    fn a_random_region_every_cycle_never_moves_the_data() {
        let reports: Vec<String> = (0..50)
            .map(|i| format!("xx-r{}-{}", "a".repeat(i % 7 + 2), i % 10))
            .collect();
        let mut all: Vec<Option<&str>> = vec![Some("us-east-1")];
        all.extend(reports.iter().map(|r| Some(r.as_str())));
        let (regions, _) = run(&all, None);
        assert!(
            regions.iter().all(|r| r.as_deref() == Some("us-east-1")),
            "{regions:?}"
        );
    }

    #[test]
    fn flapping_between_two_regions_never_moves_the_data() {
        let all: Vec<Option<&str>> = (0..20)
            .map(|i| Some(if i % 2 == 0 { "us-east-1" } else { "us-west-2" }))
            .collect();
        let (regions, _) = run(&all, None);
        assert!(regions.iter().all(|r| r.as_deref() == Some("us-east-1")));
    }

    #[test]
    fn silence_does_not_reset_a_pending_move_and_the_old_region_does() {
        let r = [
            Some("a-b-1"),
            Some("c-d-2"),
            None,
            Some("c-d-2"),
            Some("c-d-2"),
        ];
        let (regions, _) = run(&r, None);
        assert_eq!(regions[4], some("c-d-2"));
        let r = [
            Some("a-b-1"),
            Some("c-d-2"),
            Some("c-d-2"),
            Some("a-b-1"),
            Some("c-d-2"),
        ];
        let (regions, _) = run(&r, None);
        assert_eq!(regions[4], some("a-b-1"));
    }

    #[test]
    fn the_hint_is_the_remembered_region_else_the_configured_one() {
        let m = Memory::default();
        assert_eq!(m.hint(Some("eu-west-1")), Some("eu-west-1"));
        assert_eq!(m.hint(None), None);
        let m = Memory {
            region: some("us-east-1"),
            candidate: Some(("us-west-2".into(), 2)),
        };
        assert_eq!(m.hint(Some("eu-west-1")), Some("us-east-1"));
    }
}
