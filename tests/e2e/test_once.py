"""`--once` against LocalStack and the sample fleet: what lands in CloudWatch, exactly."""

import json
import time

import pytest

from expect import SELF_UNITS, UNITS, cost_datums
from harness import Agent, agent_env, parse_ts

BASKET = "ec2:t3.micro,ec2:m5.large,ebs:gp3?size=100,lambda:128,ec2:x9.huge"


def test_once_publishes_health_and_cost_of_every_region_under_its_own_name(localstack, reader, fleet, namespace):
    # Default discovery over 12 ports: the v0.1.8 fleet answers on 10; 8010 is us-west-1.
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            COST_RESOURCES=BASKET), args=["--once"])
    assert agent.run() == 0, agent.lines
    [cycle] = agent.cycles()
    stamp = parse_ts(cycle["cycle_timestamp"])
    regions = fleet.regions
    assert cycle["healthy"] == 10 and cycle["unhealthy"] == 0
    assert cycle["published"] == cycle["datums"] == 10 * 13
    assert cycle["queued"] == 0 and cycle["dropped"] == 0

    expected = {}
    for region in regions:
        expected[("PluginHealthy", frozenset({("Region", region)}))] = 1.0
        expected.update(cost_datums(region, BASKET))
    latencies = {("HealthCheckLatency", frozenset({("Region", r)})) for r in regions}

    agent_dims = frozenset({("Agent", "cloudwatch-publisher")})
    own = {(name, agent_dims) for name in SELF_UNITS}
    published = set(reader.metrics(namespace))
    assert published == set(expected) | latencies | own
    assert not any(("Region", "us-gov-west-1") in dims for _, dims in published)

    for (name, dims), value in expected.items():
        [(ts, got, unit, count)] = reader.at(namespace, name, dict(dims), stamp)
        assert got == pytest.approx(value, rel=1e-9), (name, dims)
        assert unit == UNITS[name]
        assert ts == stamp and count == 1
    for name, dims in latencies:
        [(ts, got, unit, _)] = reader.at(namespace, name, dict(dims), stamp)
        assert unit == "Milliseconds" and 0 < got < 5000 and ts == stamp

    # The cycle's self metrics went out after it, under its timestamp and the Agent dimension.
    own_values = {name: reader.at(namespace, name, dict(agent_dims), stamp)[0] for name in SELF_UNITS}
    assert {name: p[2] for name, p in own_values.items()} == SELF_UNITS
    assert own_values["DatumsPublished"][1] == 130
    assert own_values["QueueDepth"][1] == own_values["PublishFailures"][1] == 0
    assert abs(own_values["CycleDuration"][1] - cycle["duration_ms"]) <= 1

    # The lambda resource costs 0: the plugin omitted the field and the agent read 0.
    zero = frozenset({("Region", "us-east-1"), ("ResourceType", "lambda"), ("Sku", "128")})
    assert reader.at(namespace, "ProjectedMonthlyCost", dict(zero), stamp)[0][1] == 0.0
    # The unknown sku is a per-resource error, logged with its Connect code.
    errors = [l for l in agent.messages("cost query failed") if l["region"] == "us-east-1"]
    assert [(e["sku"], e["code"]) for e in errors] == [("x9.huge", "not_found")]


def test_target_timeout_bounds_a_targets_requests_together(localstack, fleet, namespace):
    """docs/configuration.md: a target's health probe, GetPluginInfo and cost queries together
    get TARGET_TIMEOUT. A plugin answering each request in 1.5 s would take 4.5 s for the
    three; the cycle collects in 2 s and not much more (1.7 s for a loaded 2-core machine,
    less than one more request)."""
    fleet.latency("us-west-2", 1500)
    targets = ",".join(f"{r}=http://127.0.0.1:{fleet.port(r)}" for r in ("us-east-1", "us-west-2"))
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_TARGETS=targets, TARGET_TIMEOUT="2s",
                            COST_RESOURCES="ec2:t3.micro"), args=["--once"])
    assert agent.run() == 0
    [cycle] = agent.cycles()
    assert 2000 <= cycle["collect_ms"] < 2000 + 1700, cycle
    # The probe answered within the budget; what came after it was cut by it.
    assert (cycle["healthy"], cycle["cost_errors"]) == (2, 1), cycle


@pytest.mark.parametrize("fleet", [{"args": ["--hang", "us-west-2"]}], indirect=True)
def test_a_hung_region_costs_only_its_timeout_and_is_reported_down(localstack, reader, fleet, namespace):
    targets = ",".join(f"{r}=http://127.0.0.1:{fleet.port(r)}" for r in fleet.regions)
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_TARGETS=targets, TARGET_TIMEOUT="2s"),
                  args=["--once"])
    assert agent.run() == 0
    [cycle] = agent.cycles()
    # The cycle waits for the hung target's TARGET_TIMEOUT (2 s; README: collection lasts as
    # long as the slowest target, at most TARGET_TIMEOUT), and not much more: the 2 s above it
    # are for a loaded 2-core machine, which can add hundreds of milliseconds.
    assert 2000 <= cycle["collect_ms"] < 2000 + 2000, cycle
    assert cycle["unhealthy"] == 1 and cycle["healthy"] == 9
    stamp = parse_ts(cycle["cycle_timestamp"])
    assert reader.at(namespace, "PluginHealthy", {"Region": "us-west-2"}, stamp) == [(stamp, 0.0, "None", 1)]
    assert reader.at(namespace, "PluginHealthy", {"Region": "us-east-1"}, stamp)[0][1] == 1.0
    [down] = [l for l in agent.messages("plugin unhealthy")]
    assert down["region"] == "us-west-2" and down["error"] == "timed out"


def test_explicit_targets_follow_the_plugins_own_region(localstack, reader, fleet, namespace):
    dead = fleet.base_port + 20  # nothing listens there
    targets = (f"us-east-1=http://127.0.0.1:{fleet.port('us-east-1')},"
               f"us-gov-west-1=http://127.0.0.1:{fleet.port('us-west-1')},"
               f"us-gov-east-1=http://127.0.0.1:{dead}")
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_TARGETS=targets, COST_RESOURCES="none"),
                  args=["--once"])
    assert agent.run() == 0
    health = {dict(d)["Region"] for n, d in reader.metrics(namespace) if n == "PluginHealthy"}
    # The plugin on the old us-gov-west-1 port says it is us-west-1: that is where its data goes.
    assert health == {"us-east-1", "us-west-1", "us-gov-east-1"}
    assert reader.points(namespace, "PluginHealthy", {"Region": "us-west-1"})[0][1] == 1.0
    assert reader.points(namespace, "PluginHealthy", {"Region": "us-gov-east-1"})[0][1] == 0.0
    [warning] = [l for l in agent.logs() if "reports another region" in l.get("message", "")]
    assert warning["configured_region"] == "us-gov-west-1" and warning["region"] == "us-west-1"
    assert "us-west-1=" in warning["message"]


def test_dry_run_prints_datums_and_needs_no_aws(fleet):
    env = {"PATH": "/usr/bin:/bin", "PLUGIN_PORTS": fleet.ports_spec(12), "COST_RESOURCES": "ec2:t3.micro",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent"}
    agent = Agent(env, args=["--once", "--dry-run"])
    assert agent.run() == 0, agent.stderr
    datums = [json.loads(l) for l in agent.lines]
    own = [d for d in datums if d["metric_name"] in SELF_UNITS]
    assert [d["dimensions"] for d in own] == [{"Agent": "cloudwatch-publisher"}] * len(SELF_UNITS)
    assert len(datums) == 10 * (2 + 3 + 1) + len(own)
    assert {d["namespace"] for d in datums} == {"FinFocus/Plugins"}
    cost = [d for d in datums if d["metric_name"] == "ProjectedMonthlyCost"
            and d["dimensions"]["Region"] == "us-east-1"]
    assert cost == [{"namespace": "FinFocus/Plugins", "metric_name": "ProjectedMonthlyCost",
                     "dimensions": {"Region": "us-east-1", "ResourceType": "ec2", "Sku": "t3.micro"},
                     "value": 7.592, "unit": "None", "timestamp": cost[0]["timestamp"]}]
    assert len({d["timestamp"] for d in datums}) == 1
    assert "cycle complete" in agent.stderr  # logs moved to stderr


def test_once_exits_1_when_cloudwatch_cannot_be_reached(fleet, namespace):
    env = agent_env("http://127.0.0.1:9", namespace, PLUGIN_PORTS=fleet.ports_spec(1),
                    SCHEDULE="*/5 * * * * *", COST_RESOURCES="none", AWS_MAX_ATTEMPTS="1")
    started = time.monotonic()
    agent = Agent(env, args=["--once"])
    assert agent.run() == 1
    # Retries stop within one schedule interval (5 s; README: "--once exits 1 when publishing
    # fails, within one interval") plus one last attempt, refused at once here; then at most
    # 1.5 s of log flush (README, "Logs"). The last 3.5 s are for a process start, the
    # one-port collection and a loaded machine.
    assert time.monotonic() - started < 5 + 1.5 + 3.5
    assert agent.messages("publishing failed; these datums are lost when --once exits")
