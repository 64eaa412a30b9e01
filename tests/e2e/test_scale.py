"""A fleet of agents against a PutMetricData quota (docs/scale.md): real agent processes on
one schedule, LocalStack behind the fault proxy admitting a fixed number of requests a second
and throttling the rest as CloudWatch does. Synchronized (PUBLISH_SPLAY=0) they are throttled
at every tick yet lose nothing; splayed, each keeps its own offset, the fleet spreads over the
interval and the throttling all but stops. `make simulate` runs the same at 100 agents."""

import pytest

from simulate import fraction, simulate

AGENTS, RATE, INTERVAL, TICKS = 24, 6, 10, 3
# The longest collection (TARGET_TIMEOUT), and what a loaded 2-core machine adds to a send.
COLLECT, LOAD = 2.0, 1.5


def test_the_model_hashes_as_the_agent_does():
    # src/splay.rs pins the same two values.
    assert fraction("cloudwatch-publisher", "ip-10-0-0-1") == 0.9775970217689061
    assert fraction("sim-0000", "h") == 0.5665255632013562


# Two runs of 24 agents, each 3 ticks of 10 s and a flush through the quota.
@pytest.mark.timeout(900)
def test_a_splayed_fleet_stays_under_the_quota_and_a_synchronized_one_loses_nothing(localstack, fleet):
    off = simulate(localstack, fleet, AGENTS, RATE, "0", TICKS, INTERVAL)
    on = simulate(localstack, fleet, AGENTS, RATE, "50%", TICKS, INTERVAL)  # the default
    for run in (off, on):
        # Nothing lost: every cycle of every agent is in CloudWatch, read back per agent.
        assert run["lost_cycles"] == 0 and run["datums_dropped"] == 0, run
        # (At least once: a request that timed out after CloudWatch took it is sent again.)
        assert run["health_samples"] >= run["cycles"], run
        assert run["exit_codes"] == [0], run
    # Synchronized: the whole fleet in one second, most of it throttled at every tick.
    assert off["peak_demand"] >= AGENTS, off
    assert off["throttled"] >= TICKS * (AGENTS - RATE), off
    # Splayed: spread over the interval, a small fraction of the throttling, and every
    # tick's datums accepted within the interval they were collected in.
    assert on["p99"] is not None and on["p99"] < INTERVAL, on
    assert on["peak_demand"] <= off["peak_demand"] / 2, (on, off)
    assert on["throttled"] <= off["throttled"] / 4, (on, off)
    # Each agent sends at its own point after every tick, the one the model's hash of its
    # name and host gives, measured at the proxy: never before it, and later only by what
    # collection (TARGET_TIMEOUT 2 s at most) and a loaded machine (LOAD) add.
    for run in (on, off):
        for name, sends in run["sends"].items():
            assert len(sends) == TICKS and all(m is not None for _, m in sends), (name, sends)
            for expected, measured in sends:
                assert expected - 0.05 <= measured < max(expected, COLLECT) + LOAD, (run["splay"], name, sends)
            if expected > COLLECT + 0.5:
                spread = [m for _, m in sends]
                assert max(spread) - min(spread) < 0.5, (name, sends)
    # The fleet's offsets cover the splay (half the 10 s interval); without one, none waits.
    offsets = sorted(e for sends in on["sends"].values() for e, _ in sends)
    assert offsets[0] < 1.5 and offsets[-1] > 3.5, offsets
    assert all(e == 0 for sends in off["sends"].values() for e, _ in sends)
    assert all(waited == 0 for waits in off["waits"].values() for waited, _ in waits)
