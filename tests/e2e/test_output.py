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
DROP_WARNING = "log lines were dropped because the log output was not being read (stdout or stderr full)"
# The documented bound on an exit after SIGTERM: the SHUTDOWN_TIMEOUT these agents run with,
# then at most 1.5 s for the output writer to write what is queued (README, "Logs": "At exit
# the writer gets at most 1.5 s"). A loaded machine gets a few seconds more; an exit that
# waited on the stalled pipe would never come (Agent.stop's timeout).
SHUTDOWN_TIMEOUT_S = 2
FLUSH_AT_EXIT_S = 1.5
LOAD_MARGIN_S = 3
EXIT_BOUND_S = SHUTDOWN_TIMEOUT_S + FLUSH_AT_EXIT_S + LOAD_MARGIN_S


def dropped(agent):
    """The agent's dropped-lines count; 0 while its listener is not up yet."""
    try:
        return scrape(agent)[DROPPED]
    except OSError:
        return 0


def stalled_agent(localstack, fleet, namespace, **env):
    """An agent at trace level (hundreds of lines a cycle) whose stdout is never read. Every
    2 s: /healthz wants the cycle of the tick before the latest published, and a loaded
    2-core machine can take a 1-second schedule's whole second over one cycle (a 503 seen
    once with a mutation run beside it)."""
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="*/2 * * * * *", COST_RESOURCES="ec2:t3.micro",
                            TARGET_TIMEOUT="500ms", SHUTDOWN_TIMEOUT=f"{SHUTDOWN_TIMEOUT_S}s", RUST_LOG="trace",
                            **env))
    agent.start(read=False)
    wait_for(lambda: dropped(agent) > 0, 60, "log lines to be dropped")
    return agent


def test_a_stdout_nobody_reads_stops_neither_cycles_nor_health_nor_sigterm(localstack, fleet, namespace):
    agent = stalled_agent(localstack, fleet, namespace)
    try:
        cycles = scrape(agent)[CYCLES]
        probes = []

        def probe():
            """One /healthz probe; done once at least five were made and two more cycles ran
            meanwhile, so the probes span cycles writing to the stalled pipe."""
            started = time.monotonic()
            status, _, body = http_get(agent.health_url("/healthz"), timeout=2)
            probes.append(time.monotonic() - started)
            assert status == 200 and json.loads(body)["status"] == "ok"
            return len(probes) >= 5 and scrape(agent)[CYCLES] >= cycles + 2

        wait_for(probe, 30, "two more cycles while /healthz is probed")
        # docs/testing.md: /healthz answers under 1 s (in milliseconds when nothing blocks).
        assert max(probes) < 1, probes
        fds = len(os.listdir(f"/proc/{agent.proc.pid}/fd"))
        code, took = agent.stop(signal.SIGTERM, timeout=EXIT_BOUND_S + 10)
    finally:
        agent.kill()
    # Everything is delivered at once (CloudWatch is up); only the stalled log writer's
    # flush is waited for, and that for at most its documented 1.5 s.
    assert code == 0 and took < EXIT_BOUND_S, (code, took)
    print(f"exit after SIGTERM with a blocked stdout: {took:.2f}s; descriptors in use: {fds}")


def test_the_drop_count_is_said_once_the_output_drains(localstack, fleet, namespace):
    agent = stalled_agent(localstack, fleet, namespace)
    try:
        agent.read_logs()

        def said():
            return agent.messages(DROP_WARNING)

        wait_for(said, 30, "the dropped-lines warning")
        first = said()[0]
        # The first warning counts every line dropped so far; the last one's total is the
        # /metrics counter once nothing more is dropped.
        assert first["level"] == "WARN" and first["dropped"] == first["dropped_total"] > 0
        wait_for(lambda: said()[-1]["dropped_total"] == scrape(agent)[DROPPED], 30,
                 "the warning's total to be /metrics' count")
        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        agent.kill()


def test_dry_run_output_nobody_reads_keeps_the_datums_and_sigterm_holds(fleet, namespace):
    env = agent_env("http://127.0.0.1:9", namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                    SCHEDULE="* * * * * *", COST_RESOURCES="ec2:t3.micro,ec2:m5.large,ebs:gp3?size=100",
                    TARGET_TIMEOUT="500ms", SHUTDOWN_TIMEOUT=f"{SHUTDOWN_TIMEOUT_S}s")
    agent = Agent(env, args=["--dry-run"])
    agent.start(logs_on_stderr=True)
    try:
        # About twenty 1-second cycles fill the pipe and the 16 queued batches.
        wait_for(lambda: agent.messages("PutMetricData failed; datums kept for the next cycle"), 150,
                 "the datum output to fill up")
        failed = agent.messages("PutMetricData failed; datums kept for the next cycle")[0]
        assert "stdout is not being read" in failed["error"]
        status, _, _ = http_get(agent.health_url("/healthz"), timeout=2)
        assert status in (200, 503)
        code, took = agent.stop(signal.SIGTERM, timeout=EXIT_BOUND_S + 10)
    finally:
        agent.kill()
    # What could not be printed was queued, and is lost only at exit: said, and exit 1; the
    # drain within SHUTDOWN_TIMEOUT, then at most 1.5 s for the stalled datum writer (the log,
    # on stderr, is read).
    assert code == 1 and took < EXIT_BOUND_S, (code, took)
    assert [c for c in agent.cycles() if c["queued"] > 0]
    assert agent.messages("stopped with datums CloudWatch did not take")
