"""The agent's health listener and self metrics, as Docker, ECS, Kubernetes and Prometheus see
them: /healthz turning 503 when CloudWatch goes away and 200 when it is back, the
`healthcheck` command's exit code, /metrics read by an independent Prometheus parser, and the
self metrics read back from CloudWatch."""

import datetime
import json
import os
import resource
import signal
import socket
import time

from prometheus_client.parser import text_string_to_metric_families

from expect import SELF_UNITS
from harness import Agent, Switch, agent_env, http_get, parse_ts, wait_for


def scrape(agent):
    """{(sample name, frozenset of labels): value} from the agent's /metrics."""
    status, kind, text = http_get(agent.health_url("/metrics"))
    assert status == 200 and kind.startswith("text/plain; version=0.0.4"), (status, kind)
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def healthz(agent):
    status, kind, body = http_get(agent.health_url("/healthz"))
    assert kind == "application/json"
    return status, json.loads(body)


CYCLES = ("cloudwatch_publisher_cycles_total", frozenset())


def counted_and_logged(agent, key, logged, timeout=30):
    """A /metrics scrape and the log lines of what it counts under `key`, read so that they
    describe the same moment: (the scrape, the lines).

    The agent counts an event in /metrics before it logs the event's line, and the line then
    takes a moment to reach the test through the log writer and the pipe. So: scrape, wait
    for as many lines as the scrape counts, and keep them only if a second scrape counts the
    same (nothing new happened meanwhile); else try again. With a correct agent the lines are
    then exactly as many as the count: a counter that counts events nobody logged never gets
    its lines (a timeout), one that misses logged events is behind the lines."""
    got = {}

    def agree():
        metrics = scrape(agent)
        counted = metrics[key]
        if len(logged()) < counted:
            return False  # the lines of what was counted are on their way
        lines = logged()
        if scrape(agent)[key] != counted:
            return False  # one more happened meanwhile: read both again
        got.update(metrics=metrics, lines=lines)
        return True

    wait_for(agree, timeout, f"the log lines of what /metrics counts in {key[0]}")
    return got["metrics"], got["lines"]


def between_cycles(agent, read, timeout=30):
    """`read()` taken between two /metrics scrapes that count the same cycles, so that it and
    the second scrape (returned with it) see one state of the agent: a cycle ending in
    between would change the queue. (read's result, the scrape)."""
    got = {}

    def quiet():
        before = scrape(agent)[CYCLES]
        got["read"] = read()
        got["metrics"] = scrape(agent)
        return got["metrics"][CYCLES] == before

    wait_for(quiet, timeout, "a read between two /metrics scrapes of the same cycle count")
    return got["read"], got["metrics"]


def test_healthz_follows_publishing_and_metrics_match_the_logs(localstack, fleet, namespace):
    switch = Switch(localstack.port)
    switch.on()
    agent = Agent(agent_env(switch.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="*/2 * * * * *", COST_RESOURCES="ec2:t3.micro",
                            TARGET_TIMEOUT="1s", AWS_MAX_ATTEMPTS="1")).start()
    try:
        agent.wait_cycles(2, timeout=30)
        status, body = healthz(agent)
        assert status == 200 and body["status"] == "ok", body
        code, out = agent.healthcheck()
        assert code == 0 and '"status":"ok"' in out, out

        cycles = agent.cycles()
        m = scrape(agent)
        assert m[CYCLES] >= len(cycles) >= 2
        up = {dict(labels)["target"]: (dict(labels)["region"], v)
              for (name, labels), v in m.items() if name == "cloudwatch_publisher_target_up"}
        assert len(up) == 12
        assert sorted(r for r, v in up.values() if v == 1.0) == sorted(fleet.regions)
        assert [r for r, v in up.values() if v == 0.0] == ["", ""]  # the two ports nobody serves
        latencies = [v for (name, _), v in m.items()
                     if name == "cloudwatch_publisher_target_health_latency_seconds"]
        # Under the 1 s TARGET_TIMEOUT: a slower probe is a timeout, and the target down.
        assert len(latencies) == 10 and all(0 < v < 1 for v in latencies)
        assert m[("cloudwatch_publisher_put_metric_data_failures_total", frozenset())] == 0
        # The last success is the end of the last cycle /metrics counts (every publish so far
        # succeeded): no earlier than the start of the last cycle logged before the scrape,
        # and not in the future.
        last_success = m[("cloudwatch_publisher_last_success_timestamp_seconds", frozenset())]
        assert parse_ts(cycles[-1]["cycle_timestamp"]).timestamp() <= last_success <= time.time(), (
            last_success, cycles[-1])

        # CloudWatch goes away: after two intervals without a publish, /healthz says 503.
        switch.off()
        wait_for(lambda: healthz(agent)[0] == 503, 30, "/healthz to turn 503")
        # /healthz and /metrics read between the same two cycles: each cycle adds to the queue.
        (status, body), m = between_cycles(agent, lambda: healthz(agent))
        assert status == 503 and body["status"] == "unhealthy", body
        assert "no cycle since the tick at" in body["reason"], body
        assert body["queued"] > 0
        assert m[("cloudwatch_publisher_put_metric_data_failures_total", frozenset())] > 0
        assert m[("cloudwatch_publisher_cycles_failed_total", frozenset())] > 0
        assert m[("cloudwatch_publisher_datums_queued", frozenset())] == body["queued"]
        code, out = agent.healthcheck()
        assert code == 1 and "unhealthy" in out, out

        # Back: the queue drains and /healthz is 200 again.
        switch.on()
        wait_for(lambda: healthz(agent)[0] == 200, 30, "/healthz to recover")
        agent.wait_cycles(len(agent.cycles()) + 1, timeout=20)
        assert scrape(agent)[("cloudwatch_publisher_datums_queued", frozenset())] == 0

        # /metrics agrees with the cycle log lines: every cycle counted once, with its figures.
        m, lines = counted_and_logged(agent, CYCLES, agent.cycles)
        assert m[CYCLES] == len(lines)
        assert m[("cloudwatch_publisher_datums_published_total", frozenset())] == sum(
            c["published"] for c in lines)
        assert m[("cloudwatch_publisher_put_metric_data_calls_total", frozenset())] == sum(
            c["calls"] for c in lines)
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        agent.kill()
        switch.off()


def test_self_metrics_describe_each_cycle_under_the_agent_dimension_only(localstack, reader, fleet, namespace):
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="*/2 * * * * *", COST_RESOURCES="none",
                            AGENT_NAME="e2e-agent"))
    assert agent.run_cycles(3, timeout=30) == 0
    cycles = agent.cycles()
    dims = {"Agent": "e2e-agent"}
    own = {(n, d) for n, d in reader.metrics(namespace) if ("Agent", "e2e-agent") in d}
    assert own == {(n, frozenset(dims.items())) for n in SELF_UNITS}
    # Each cycle's self metrics carry that cycle's timestamp and its own figures; the last
    # cycle's went out in the shutdown flush.
    for cycle in cycles:
        stamp = parse_ts(cycle["cycle_timestamp"])
        [(_, published, unit, count)] = reader.at(namespace, "DatumsPublished", dims, stamp)
        assert (published, unit, count) == (cycle["published"], "Count", 1)
        [(_, duration, unit, _)] = reader.at(namespace, "CycleDuration", dims, stamp)
        assert unit == "Milliseconds" and abs(duration - cycle["duration_ms"]) <= 1
        assert reader.at(namespace, "QueueDepth", dims, stamp)[0][1] == 0
        assert reader.at(namespace, "PublishFailures", dims, stamp)[0][1] == 0
        for name in ("QueueBytes", "QueueOldestAge", "DatumsDropped", "BufferCorruptRecords"):
            assert reader.at(namespace, name, dims, stamp)[0][1] == 0, name
    # From the second cycle on, a cycle publishes its datums plus the previous cycle's eight.
    assert [c["published"] - c["datums"] for c in cycles] == [0] + [8] * (len(cycles) - 1)


def test_self_metrics_off_sends_none_and_once_never_listens(localstack, reader, fleet, namespace):
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            COST_RESOURCES="none", SELF_METRICS="false"), args=["--once"])
    agent.start()
    try:
        wait_for(lambda: agent.cycles() or agent.proc.poll() is not None, 20, "the cycle")
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(agent.env["HEALTH_ADDR"].rsplit(":", 1)[1]))) != 0
        assert agent.wait(20) == 0
    finally:
        agent.kill()
    [cycle] = agent.cycles()
    assert cycle["calls"] == 1
    # No self metrics; and no error count, which with cost queries off could only ever be 0.
    assert {n for n, _ in reader.metrics(namespace)} == {"PluginHealthy", "HealthCheckLatency"}


def test_a_health_port_in_use_stops_the_agent_at_start_naming_health_addr(fleet, namespace):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        addr = "127.0.0.1:%d" % taken.getsockname()[1]
        agent = Agent(agent_env("http://127.0.0.1:9", namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                                HEALTH_ADDR=addr))
        assert agent.run(20) == 78
    [line] = [l for l in agent.logs() if l["level"] == "ERROR"]
    assert line["variables"] == "HEALTH_ADDR"
    assert f"HEALTH_ADDR={addr}" in line["message"] and "empty to disable" in line["message"]


def test_healthcheck_without_a_listener_fails_and_says_why(namespace):
    agent = Agent(agent_env("http://127.0.0.1:9", namespace, HEALTH_ADDR=""))
    code, out = agent.healthcheck()
    assert code == 1 and "HEALTH_ADDR is empty" in out
    agent = Agent(agent_env("http://127.0.0.1:9", namespace))
    code, out = agent.healthcheck()
    assert code == 1 and "no answer from the agent" in out


def test_a_connection_flood_on_the_health_port_never_fails_plugin_probes(localstack, fleet, namespace):
    """1100 idle connections against an agent that may hold only 256 descriptors: the
    listener's cap keeps descriptors for the probes, so no healthy region is reported down,
    and /healthz answers again within seconds while the flood is still open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this test needs 1100 sockets
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="* * * * * *", COST_RESOURCES="ec2:t3.micro", TARGET_TIMEOUT="700ms"),
                  nofile=(256, 256)).start()
    flood = []
    try:
        wait_for(lambda: agent.cycles(), 30, "the first cycle")
        host, port = agent.env["HEALTH_ADDR"].rsplit(":", 1)
        for _ in range(1100):
            s = socket.socket()
            s.settimeout(0.2)
            if s.connect_ex((host, int(port))) == 0:
                flood.append(s)
            else:
                s.close()
        assert len(flood) > 900
        flooded = datetime.datetime.now(datetime.timezone.utc)

        def during():
            """The cycles that started once the flood was open (a cycle's stamp is its start
            in whole seconds); a cycle that collected before it may still log after it."""
            return [c for c in agent.cycles() if parse_ts(c["cycle_timestamp"]) > flooded]

        fds = []
        deadline = time.monotonic() + 60
        while len(during()) < 3 and time.monotonic() < deadline:
            fds.append(len(os.listdir(f"/proc/{agent.proc.pid}/fd")))
            time.sleep(0.05)  # the sampling rate of the descriptor count, not a wait
        assert len(during()) >= 3, "three cycles during the flood within 60 s"
        assert all(c["healthy"] == 10 and c["unhealthy"] == 0 for c in during()), during()
        assert not [l for l in agent.logs() if "Too many open files" in json.dumps(l)]
        assert max(fds) < 160, max(fds)
        def answers():
            try:
                return http_get(agent.health_url("/healthz"), timeout=1)[0] == 200
            except OSError:
                return False
        # README: a client has 2 s to send its headers and a connection lives at most 10 s,
        # so the flood's idle connections give their slots back within 10 s of opening; the
        # flood sockets stay open on this side meanwhile. 30 s is an upper bound, not a guess.
        wait_for(answers, 30, "/healthz to answer during the flood")
        print(f"descriptors in use during the flood: at most {max(fds)}")
    finally:
        for s in flood:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        agent.signal()
        agent.wait(15)
        agent.kill()


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(fleet, namespace):
    agent = Agent(agent_env("http://127.0.0.1:9", namespace, PLUGIN_PORTS=fleet.ports_spec(1)),
                  args=["--once", "--dry-run"], nofile=(256, 4096))
    agent.start(logs_on_stderr=True)
    assert agent.wait(30) == 0
    [starting] = agent.messages("starting")
    assert starting["open_files_limit"] == 4096
