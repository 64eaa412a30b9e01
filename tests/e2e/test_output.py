"""A stdout nobody reads (a stalled log driver, a full pipe) must never stop the agent: cycles
go on, /healthz answers, SIGTERM and SHUTDOWN_TIMEOUT hold, and what could not be written is
counted and then said."""

import json
import os
import signal
import time

from harness import Agent, agent_env, http_get, wait_for
from test_health import scrape

DROPPED = ("cloudwatch_publisher_log_lines_dropped_total", frozenset())
CYCLES = ("cloudwatch_publisher_cycles_total", frozenset())


def dropped(agent):
    """The agent's dropped-lines count; 0 while its listener is not up yet."""
    try:
        return scrape(agent)[DROPPED]
    except OSError:
        return 0


def stalled_agent(localstack, fleet, namespace, **env):
    """An agent at trace level (hundreds of lines a cycle) whose stdout is never read."""
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="* * * * * *", COST_RESOURCES="ec2:t3.micro",
                            TARGET_TIMEOUT="500ms", SHUTDOWN_TIMEOUT="2s", RUST_LOG="trace", **env))
    agent.start(read=False)
    wait_for(lambda: dropped(agent) > 0, 30, "log lines to be dropped")
    return agent


def test_a_stdout_nobody_reads_stops_neither_cycles_nor_health_nor_sigterm(localstack, fleet, namespace):
    agent = stalled_agent(localstack, fleet, namespace)
    try:
        cycles = scrape(agent)[CYCLES]
        for _ in range(5):
            started = time.monotonic()
            status, _, body = http_get(agent.health_url("/healthz"), timeout=2)
            assert status == 200 and json.loads(body)["status"] == "ok"
            assert time.monotonic() - started < 1
            time.sleep(0.3)
        wait_for(lambda: scrape(agent)[CYCLES] >= cycles + 2, 10, "cycles to go on")
        fds = len(os.listdir(f"/proc/{agent.proc.pid}/fd"))
        code, took = agent.stop(signal.SIGTERM, timeout=10)
    finally:
        agent.kill()
    # SHUTDOWN_TIMEOUT is 2 s; the log writer gets at most about 1 s more to flush.
    assert code == 0 and took < 4, (code, took)
    print(f"exit after SIGTERM with a blocked stdout: {took:.2f}s; descriptors in use: {fds}")


def test_the_drop_count_is_said_once_the_output_drains(localstack, fleet, namespace):
    agent = stalled_agent(localstack, fleet, namespace)
    try:
        agent.read_logs()
        wait_for(lambda: agent.messages(
            "log lines were dropped because the log output was not being read (stdout or stderr full)"),
            15, "the dropped-lines warning")
        [first, *_] = agent.messages(
            "log lines were dropped because the log output was not being read (stdout or stderr full)")
        assert first["level"] == "WARN" and first["dropped"] > 0
        assert first["dropped_total"] <= scrape(agent)[DROPPED]
        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        agent.kill()


def test_dry_run_output_nobody_reads_keeps_the_datums_and_sigterm_holds(fleet, namespace):
    env = agent_env("http://127.0.0.1:9", namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                    SCHEDULE="* * * * * *", COST_RESOURCES="ec2:t3.micro,ec2:m5.large,ebs:gp3?size=100",
                    TARGET_TIMEOUT="500ms", SHUTDOWN_TIMEOUT="2s")
    agent = Agent(env, args=["--dry-run"])
    agent.start(logs_on_stderr=True)
    try:
        wait_for(lambda: agent.messages("PutMetricData failed; datums kept for the next cycle"), 60,
                 "the datum output to fill up")
        failed = agent.messages("PutMetricData failed; datums kept for the next cycle")[0]
        assert "stdout is not being read" in failed["error"]
        status, _, _ = http_get(agent.health_url("/healthz"), timeout=2)
        assert status in (200, 503)
        code, took = agent.stop(signal.SIGTERM, timeout=10)
    finally:
        agent.kill()
    # What could not be printed was queued, and is lost only at exit: said, and exit 1.
    assert code == 1 and took < 4, (code, took)
    assert [c for c in agent.cycles() if c["queued"] > 0]
    assert agent.messages("stopped with datums CloudWatch did not take")
