"""The agent on its cron schedule: cycles, skipped ticks, regions that go away, and
CloudWatch going away and coming back."""

import datetime

from harness import Agent, Switch, agent_env, parse_ts, wait_for
from test_health import counted_and_logged

SKIPPED = "previous cycle still running; this tick is skipped"


def stamps(agent):
    return [parse_ts(c["cycle_timestamp"]) for c in agent.cycles()]


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def wait_cycles_after(agent, moment, n, timeout=30):
    """Waits for `n` cycles that started after `moment`: their stamp (the start, in whole
    seconds) is later. Counting log lines instead would count a cycle that collected before
    `moment` and had not logged yet."""
    wait_for(lambda: len([s for s in stamps(agent) if s > moment]) >= n, timeout,
             f"{n} cycles started after {moment}")


def test_cycles_run_on_the_schedule_and_sigterm_exits_0(localstack, reader, fleet, namespace):
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="*/2 * * * * *", COST_RESOURCES="ec2:t3.micro"))
    assert agent.run_cycles(3, timeout=30) == 0
    cycles = stamps(agent)
    # The first cycle runs at start; the rest on even seconds, each its own timestamp.
    assert len(set(cycles)) == len(cycles) >= 3
    assert all(ts.second % 2 == 0 for ts in cycles[1:])
    got = reader.points(namespace, "PluginHealthy", {"Region": "sa-east-1"},
                        cycles[0], cycles[-1] + datetime.timedelta(seconds=1))
    assert [p[0] for p in got] == cycles
    assert all(p[1] == 1.0 and p[3] == 1 for p in got)
    assert agent.messages("stopped cleanly")


def test_a_port_that_answered_then_fails_is_reported_down_under_its_last_region(localstack, reader, fleet, namespace):
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="*/2 * * * * *", COST_RESOURCES="none", TARGET_TIMEOUT="1s")).start()
    try:
        agent.wait_cycles(1, timeout=30)
        fleet.mode("us-west-1", "down")  # port base+9, "8010"
        down_at = now()
        wait_cycles_after(agent, down_at, 2)
        fleet.mode("us-west-1", "ok")
        up_at = now()
        wait_cycles_after(agent, up_at, 2)
        agent.signal()
        assert agent.wait(30) == 0
    finally:
        agent.kill()
    cycles = stamps(agent)
    got = reader.points(namespace, "PluginHealthy", {"Region": "us-west-1"},
                        cycles[0], cycles[-1] + datetime.timedelta(seconds=1))
    assert [p[0] for p in got] == cycles  # one datum every cycle, down or not
    # A cycle collects within 2 s of its stamp (the whole second it started in, and
    # TARGET_TIMEOUT 1 s): those wholly before the change or after the return see the
    # plugin up, those wholly inside see it down; a cycle running at a change may see either.
    margin = datetime.timedelta(seconds=2)
    seen = {p[0]: p[1] for p in got}
    inside = [seen[s] for s in cycles if s > down_at and s + margin <= up_at]
    outside = [seen[s] for s in cycles if s + margin <= down_at or s > up_at]
    assert inside and inside == [0.0] * len(inside), seen
    assert outside and outside == [1.0] * len(outside), seen
    assert not [d for _, d in reader.metrics(namespace) if ("Region", "us-gov-west-1") in d]


def test_a_tick_is_skipped_while_a_cycle_runs_and_never_doubled(localstack, fleet, namespace):
    fleet.mode("us-west-2", "hang")
    targets = f"us-east-1=http://127.0.0.1:{fleet.port('us-east-1')},us-west-2=http://127.0.0.1:{fleet.port('us-west-2')}"
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_TARGETS=targets, SCHEDULE="* * * * * *",
                            TARGET_TIMEOUT="2500ms", COST_RESOURCES="none")).start()
    try:
        agent.wait_cycles(3, timeout=60)
        # /metrics counts what the log says: a scrape and the skipped-tick lines of the
        # ticks it counts (each is counted before its line is logged).
        key = ("cloudwatch_publisher_ticks_skipped_total", frozenset())
        m, lines = counted_and_logged(agent, key, lambda: agent.messages(SKIPPED))
        skipped_total, before = m[key], len(lines)
        agent.signal()
        assert agent.wait(30) == 0
    finally:
        agent.kill()
    assert before > 0 and skipped_total == before
    # Never two cycles at once: each ended before the next began (stamps are whole seconds).
    cycles = agent.cycles()
    starts = stamps(agent)
    assert len(set(starts)) == len(starts)
    for c, next_start in zip(cycles, starts[1:]):
        ended = parse_ts(c["cycle_timestamp"]) + datetime.timedelta(milliseconds=c["duration_ms"])
        assert ended < next_start + datetime.timedelta(seconds=1), (c, next_start)
    assert [l for l in agent.logs() if "TARGET_TIMEOUT is not shorter" in l.get("message", "")]


def test_cloudwatch_unreachable_then_back_delivers_queued_datums_with_their_timestamps(localstack, reader, fleet, namespace):
    switch = Switch(localstack.port)  # off: connections to CloudWatch are refused
    agent = Agent(agent_env(switch.url, namespace, PLUGIN_PORTS=fleet.ports_spec(2),
                            SCHEDULE="*/3 * * * * *", COST_RESOURCES="none", AWS_MAX_ATTEMPTS="1")).start()
    try:
        agent.wait_cycles(2, timeout=30)
        switch.on()
        wait_cycles_after(agent, now(), 2)
        agent.signal()
        assert agent.wait(30) == 0
    finally:
        agent.kill()
        switch.off()
    cycles = agent.cycles()
    down = [c for c in cycles if c["published"] == 0]
    assert len(down) >= 2 and all(c["queued"] > 0 for c in down)
    assert cycles[-1]["queued"] == 0
    first_up = next(i for i, c in enumerate(cycles) if c["published"] > 0)
    # The queue went out with it, whole: what the cycle before left queued, that cycle's 8
    # self metrics (pushed after its line, docs/metrics.md), and its own datums.
    before, up = cycles[first_up - 1], cycles[first_up]
    assert up["published"] == before["queued"] + 8 + up["datums"] and up["queued"] == 0, (before, up)
    stamps_all = stamps(agent)
    got = reader.points(namespace, "PluginHealthy", {"Region": "us-east-1"},
                        stamps_all[0], stamps_all[-1] + datetime.timedelta(seconds=1))
    # Every cycle's datum arrived once, at the time it was collected.
    assert [p[0] for p in got] == stamps_all
    assert all(p[3] == 1 for p in got)
    assert agent.messages("PutMetricData failed; datums kept for the next cycle")
