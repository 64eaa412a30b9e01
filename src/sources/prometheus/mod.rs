//! The Prometheus source: scrapes exposition endpoints (SCRAPE_TARGETS) and turns their
//! families into metrics.
//!
//! Built in steps: the parser ([`parse`], tested against `prometheus_client`) and the pure
//! conversion ([`convert`]) are here; the scrape and the source's place in the agent come
//! next, which is when the dead-code expectations below stop holding and must go.

#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the Prometheus source that calls the parser is the next step"
    )
)]
mod parse;

#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the Prometheus source that converts its scrapes is the next step"
    )
)]
mod convert;
