//! The Prometheus source: scrapes exposition endpoints (SCRAPE_TARGETS) and turns their
//! families into metrics.
//!
//! Built in steps: the parser ([`parse`]) is here and tested against `prometheus_client`;
//! the scrape, the conversion and the source's place in the agent come next, which is when
//! the dead-code expectation below stops holding and must go.

#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the Prometheus source that calls the parser is the next step"
    )
)]
mod parse;
