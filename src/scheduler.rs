//! Runs cycles: on the cron SCHEDULE until a signal, or once (`--once`).
//!
//! A cycle may use the time up to the next tick, less a small margin, for publishing and
//! retries, so it does not run into the next one. If it does overrun, the next tick is
//! skipped and logged, never run twice at once: the agent sits behind a mutex that a tick
//! only tries to take.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tracing::{error, info, warn};

use crate::agent::Agent;
use crate::exit::Exit;
use crate::schedule::Schedule;
use crate::shutdown::Shutdown;
use crate::sinks::cloudwatch::{MetricSink, RetryPolicy};
use crate::stats::SharedStats;

#[derive(Debug, thiserror::Error)]
#[error("scheduler: {0}")]
pub struct SchedulerError(#[from] JobSchedulerError);

/// When a cycle starting at `now` must stop trying to publish.
pub fn cycle_deadline(schedule: &Schedule, now: SystemTime) -> Instant {
    let interval = schedule.interval(now);
    let until_next = schedule
        .next_after(now)
        .and_then(|next| next.duration_since(now).ok())
        .unwrap_or(interval);
    Instant::now() + until_next.saturating_sub(margin(interval))
}

/// What a cycle leaves free before the next tick: a tenth of the interval, at most 1 s.
fn margin(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_secs(1))
}

/// How long after a tick that fires on time `agent` sends, on an interval of `interval`:
/// what the `starting` line reports. [`tick`] computes the same from the real deadline.
pub fn tick_offset<S: MetricSink>(agent: &Agent<S>, interval: Duration) -> Duration {
    agent.publish_offset(
        interval,
        send_room(interval.saturating_sub(margin(interval))),
    )
}

/// One cycle, then exit: 0 when everything collected was published (a down plugin is data,
/// not failure), 1 when some datums could not be delivered.
pub async fn run_once<S: MetricSink>(
    agent: &mut Agent<S>,
    schedule: &Schedule,
    shutdown: &mut Shutdown,
    shutdown_timeout: Duration,
) -> Exit {
    let deadline = Instant::now() + schedule.interval(SystemTime::now());
    let report = {
        // One-shot runs send at once: they are for debugging, and no fleet shares their tick.
        let cycle = agent.run_cycle(deadline, None);
        tokio::pin!(cycle);
        tokio::select! {
            report = &mut cycle => report,
            signal = shutdown.recv() => {
                info!(signal = Shutdown::name(signal), "stopping: finishing the running cycle");
                tokio::select! {
                    finished = tokio::time::timeout(shutdown_timeout, &mut cycle) => match finished {
                        Ok(report) => report,
                        Err(_) => {
                            error!("SHUTDOWN_TIMEOUT passed before the cycle finished; its datums are lost");
                            return Exit::Failed;
                        }
                    },
                    signal = shutdown.recv() => {
                        warn!(signal = Shutdown::name(signal), "second signal: exiting now");
                        return Exit::Signal(signal);
                    }
                }
            }
        }
    };
    if !report.failed {
        // Deferred batches and the cycle's self metrics go out before exiting, within the
        // same budget (a late flush still gets its one attempt).
        agent.flush(deadline).await;
    }
    if agent.queued() > 0 {
        if agent.keeps_on_disk() {
            error!(
                undelivered = agent.queued(),
                "publishing failed; these datums stay in BUFFER_DIR and go out first on the next run"
            );
        } else {
            error!(
                undelivered = agent.queued(),
                "publishing failed; these datums are lost when --once exits"
            );
        }
        Exit::Failed
    } else {
        Exit::Ok
    }
}

/// Cycles on `schedule`, the first one right away, until SIGTERM or SIGINT; then finishes
/// the running cycle and flushes the queue within `shutdown_timeout`.
pub async fn run_scheduled<S: MetricSink + Send + Sync + 'static>(
    mut agent: Agent<S>,
    schedule: Schedule,
    shutdown: &mut Shutdown,
    shutdown_timeout: Duration,
) -> Result<Exit, SchedulerError> {
    let stats = agent.stats();
    let on_disk = agent.keeps_on_disk();
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    agent.stop_waits_on(stop_rx);
    let agent = Arc::new(Mutex::new(agent));
    let mut scheduler = JobScheduler::new().await?;
    let (job_agent, job_schedule, job_stats) = (agent.clone(), schedule.clone(), stats.clone());
    let job = Job::new_async(schedule.expr.as_str(), move |_id, _scheduler| {
        let (agent, schedule, stats) = (job_agent.clone(), job_schedule.clone(), job_stats.clone());
        Box::pin(async move { tick(&agent, &schedule, &stats).await })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    let first = agent.clone();
    tokio::spawn(async move { tick(&first, &schedule, &stats).await });

    let signal = shutdown.recv().await;
    info!(
        signal = Shutdown::name(signal),
        "stopping: no new cycles; finishing the running cycle and flushing the queue"
    );
    // A cycle waiting out its splay sends now rather than spend SHUTDOWN_TIMEOUT waiting.
    let _ = stopping.send(true);
    scheduler.shutdown().await?;
    let deadline = Instant::now() + shutdown_timeout;
    let drain = async {
        let mut agent = agent.lock().await;
        agent.flush(deadline).await;
        agent.queued()
    };
    // Without a disk buffer whatever is not delivered now is lost with the process, so that
    // is a failure; with one it waits in BUFFER_DIR for the next start.
    let code = tokio::select! {
        drained = tokio::time::timeout_at(deadline, drain) => match drained {
            Ok(0) => {
                info!("stopped cleanly");
                Exit::Ok
            }
            Ok(left) if on_disk => {
                warn!(kept = left, "stopped; the datums CloudWatch did not take stay in BUFFER_DIR for the next start");
                Exit::Ok
            }
            Ok(left) => {
                error!(lost = left, "stopped with datums CloudWatch did not take");
                Exit::Failed
            }
            Err(_) if on_disk => {
                warn!("SHUTDOWN_TIMEOUT passed before the cycle and the queue were done; what was collected stays in BUFFER_DIR for the next start");
                Exit::Ok
            }
            Err(_) => {
                error!("SHUTDOWN_TIMEOUT passed before the cycle and the queue were done; undelivered datums are lost");
                Exit::Failed
            }
        },
        signal = shutdown.recv() => {
            warn!(signal = Shutdown::name(signal), "second signal: exiting now");
            Exit::Signal(signal)
        }
    };
    Ok(code)
}

async fn tick<S: MetricSink>(agent: &Mutex<Agent<S>>, schedule: &Schedule, stats: &SharedStats) {
    let Ok(mut agent) = agent.try_lock() else {
        stats.lock().expect("stats lock").ticks_skipped += 1;
        warn!(
            schedule = %schedule.expr,
            "previous cycle still running; this tick is skipped"
        );
        return;
    };
    let now = SystemTime::now();
    let deadline = cycle_deadline(schedule, now);
    let room = send_room(deadline.saturating_duration_since(Instant::now()));
    let offset = agent.publish_offset(schedule.interval(now), room);
    agent
        .run_cycle(deadline, Some(Instant::now() + offset))
        .await;
}

/// Of the time left until the cycle's deadline, how long a cycle may wait and still finish
/// one attempt before it, so a splay never pushes a cycle into the next tick.
fn send_room(until_deadline: Duration) -> Duration {
    until_deadline.saturating_sub(RetryPolicy::default().min_attempt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tests::{collected, fake_agent};
    use crate::sinks::cloudwatch::tests::FakeSink;

    /// The scheduler over a fake source and sink, stopped by signals from a channel: the
    /// exit, and what the sink received.
    async fn scheduled(
        sink: FakeSink,
        shutdown_timeout: Duration,
        signals: &[i32],
    ) -> (Exit, usize) {
        let (agent, sink) = fake_agent(vec![collected(0..3)], sink, Some("a"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut shutdown = Shutdown::from_channel(rx);
        // Yearly: only the cycle at start runs.
        let schedule = Schedule::parse("0 0 0 1 1 *").unwrap();
        let run = tokio::spawn(async move {
            run_scheduled(agent, schedule, &mut shutdown, shutdown_timeout).await
        });
        // The cycle at start has reached the sink.
        while sink.calls.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for signal in signals {
            tx.send(*signal).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let exit = run.await.unwrap().unwrap();
        let accepted = sink.accepted.lock().unwrap().len();
        (exit, accepted)
    }

    #[tokio::test]
    async fn the_drain_flushes_the_last_self_metrics_and_exits_0() {
        let (exit, accepted) = scheduled(FakeSink::default(), Duration::from_secs(5), &[15]).await;
        assert_eq!(exit, Exit::Ok);
        assert_eq!(accepted, 3 + 8);
    }

    #[tokio::test]
    async fn a_drain_that_cannot_deliver_exits_1() {
        let sink = FakeSink::always_failing();
        let (exit, accepted) = scheduled(sink, Duration::from_millis(300), &[15]).await;
        assert_eq!((exit, accepted), (Exit::Failed, 0));
    }

    #[tokio::test]
    async fn a_second_signal_during_a_hung_drain_exits_at_once() {
        let sink = FakeSink::hanging();
        let (exit, _) = scheduled(sink, Duration::from_secs(60), &[15, 2]).await;
        assert_eq!(exit, Exit::Signal(2));
    }

    #[test]
    fn the_splay_leaves_one_attempt_before_the_deadline() {
        assert_eq!(send_room(Duration::from_secs(54)), Duration::from_secs(52));
        // An interval too short for any splay sends at once.
        assert_eq!(send_room(Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn a_cycle_stops_before_the_next_tick() {
        let schedule = Schedule::parse("*/10 * * * * *").unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_003);
        let left = cycle_deadline(&schedule, now) - Instant::now();
        // Next tick in 7 s, margin 1 s.
        assert!(left <= Duration::from_secs(6), "{left:?}");
        assert!(left > Duration::from_millis(5900), "{left:?}");
    }

    #[test]
    fn the_margin_is_a_tenth_of_short_intervals() {
        let schedule = Schedule::parse("*/2 * * * * *").unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let left = cycle_deadline(&schedule, now) - Instant::now();
        assert!(left <= Duration::from_millis(1800), "{left:?}");
        assert!(left > Duration::from_millis(1700), "{left:?}");
    }
}
