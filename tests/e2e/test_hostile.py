"""A hostile plugin fleet: what a plugin says must never become an unbounded dimension, a forged
log line, a flood of logs, or a connection per basket entry; and one bad answer must never stop
the rest of the cycle."""

import re

import pytest

from harness import Agent, agent_env, parse_ts, rss_kib

ESC = "\x1b"


def once(localstack, namespace, fleet, count=10, **env):
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(count), **env),
                  args=["--once"])
    code = agent.run(60)
    return agent, code


def every_second(localstack, namespace, fleet, count, basket):
    """An agent cycling every second over the first `count` ports."""
    return Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(count),
                           SCHEDULE="* * * * * *", COST_RESOURCES=basket, TARGET_TIMEOUT="500ms"))


@pytest.mark.parametrize("report", ["long:2048", "US-EAST-1", "us-east-1\n", "us-" + "a" * 40 + "-1"])
def test_a_malformed_reported_region_is_ignored_and_the_rest_publishes(localstack, reader, fleet, namespace, report):
    fleet.control("/report", region="us-east-1", value=report)
    agent, code = once(localstack, namespace, fleet, COST_RESOURCES="ec2:t3.micro")
    assert code == 0, agent.lines[-5:]
    [cycle] = agent.cycles()
    # us-east-1's port is discovered but says no usable region: not published; the other 9 are.
    assert cycle["healthy"] == 9 and cycle["dropped"] == 0 and cycle["published"] == cycle["datums"]
    regions = {v for _, dims in reader.metrics(namespace) for k, v in dims if k == "Region"}
    assert regions == set(fleet.regions) - {"us-east-1"}
    [warning] = [l for l in agent.logs() if "does not say which region" in l.get("message", "")]
    assert warning["error"].startswith("unreadable response: GetPluginInfo has no well-formed")
    assert sum(len(l) for l in agent.lines) < 20_000


def test_a_region_that_changes_every_cycle_never_mints_new_metrics(localstack, reader, fleet, namespace):
    agent = every_second(localstack, namespace, fleet, 2, "ec2:t3.micro")
    code, after = agent.run_changing(lambda: fleet.control("/report", region="us-west-2", value="random"), 5)
    assert code == 0
    regions = sorted({v for _, dims in reader.metrics(namespace) for k, v in dims if k == "Region"})
    assert regions == ["us-east-1", "us-west-2"]
    warnings = [l for l in agent.logs() if l.get("message", "").startswith("plugin reports another region than before")]
    # docs/metrics.md: each such cycle logs it; the cycle running at the change may have met it.
    assert len(warnings) in (len(after), len(after) + 1), (len(warnings), len(after))
    assert all(w["region"] == "us-west-2" and re.fullmatch(r"xx-[a-z]{8}-\d", w["reported_region"])
               for w in warnings)
    # Cost queries keep naming the region the data goes under, which this plugin still serves.
    last = parse_ts(agent.cycles()[-1]["cycle_timestamp"])
    cost = {"Region": "us-west-2", "ResourceType": "ec2", "Sku": "t3.micro"}
    assert reader.at(namespace, "ProjectedMonthlyCost", cost, last)[0][1] == 7.592
    assert reader.at(namespace, "CostQueryErrors", {"Region": "us-west-2"}, last)[0][1] == 0


def test_a_target_that_moves_is_followed_after_three_cycles(localstack, reader, fleet, namespace):
    agent = every_second(localstack, namespace, fleet, 1, "none")
    code, _ = agent.run_changing(lambda: fleet.control("/report", region="us-east-1", value="eu-central-1"), 4)
    assert code == 0
    [moved] = agent.messages("plugin now serves another region; its data moves there")
    assert (moved["previous_region"], moved["region"]) == ("us-east-1", "eu-central-1")
    pending = [l for l in agent.logs() if l.get("message", "").startswith("plugin reports another region")]
    assert [p["cycles"] for p in pending] == [1, 2]


def test_text_logs_escape_and_cut_what_plugins_send(localstack, fleet, namespace):
    forged = 'no price\n2026-01-01T00:00:00Z ERROR forged line\x1b[2J\x1b]0;owned\x07'
    fleet.control("/cost_error", region="us-east-1", code="not_found\nFAKE", message=forged)
    fleet.control("/cost_error", region="eu-west-1", code="internal", message="x", repeat=60_000)
    fleet.control("/cost_value", region="sa-east-1", value="NaN")
    agent, code = once(localstack, namespace, fleet, COST_RESOURCES="ec2:t3.micro", LOG_FORMAT="text")
    assert code == 0
    out = "\n".join(agent.lines)
    assert ESC not in out and "\x07" not in out
    # Every line is one of the agent's own: timestamp, level, message.
    for line in agent.lines:
        assert re.match(r"\s*\d{4}-\d\d-\d\dT\S+Z\s+(TRACE|DEBUG|INFO|WARN|ERROR) ", line), line
    assert not [l for l in agent.lines if "forged line" in l and "no price\\n" not in l]
    [east] = [l for l in agent.lines if "cost query failed" in l and "us-east-1" in l]
    assert 'not_found\\nFAKE' in east and "\\u{1b}[2J" in east
    [west] = [l for l in agent.lines if "cost query failed" in l and "eu-west-1" in l]
    assert "more characters cut]" in west and len(west) < 1500
    [nan] = [l for l in agent.lines if "not a finite number" in l]
    assert "sa-east-1" in nan and "invalid_value" in nan
    summary = [l for l in agent.lines if "cycle complete" in l][0]
    assert "cost_errors=3" in summary


def test_megabyte_error_messages_cost_little_log_and_memory(localstack, fleet, namespace):
    """Ten plugins each answering every cost query with a 1 MB error body: bounded by the body
    cap (64 KiB) and the log cut (256 characters)."""
    basket = "ec2:t3.micro,ec2:m5.large,ebs:gp3?size=100"
    for region in fleet.regions:
        fleet.control("/cost_error", region=region, code="internal", message="y", repeat=1 << 20)
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(10),
                            COST_RESOURCES=basket), args=["--once"])
    agent.start()
    peak = rss_kib(agent.proc.pid, until_exit=True)
    assert agent.wait(60) == 0
    [cycle] = agent.cycles()
    assert cycle["cost_errors"] == 30
    log_bytes = sum(len(l) + 1 for l in agent.lines)
    assert log_bytes < 64_000, log_bytes
    assert peak < 40_000, peak
    print(f"log bytes for the cycle: {log_bytes}; peak RSS {peak} KiB")


def test_a_large_basket_asks_each_plugin_at_most_four_queries_at_once(localstack, fleet, namespace):
    basket = ",".join(f"ec2:t3.micro?n={i}" if i == 0 else f"ec2:x{i}.large" for i in range(50))
    for region in fleet.regions[:2]:
        fleet.latency(region, 50)
    agent, code = once(localstack, namespace, fleet, count=2, COST_RESOURCES=basket)
    assert code == 0
    [cycle] = agent.cycles()
    assert cycle["healthy"] == 2 and cycle["cost_errors"] == 2 * 49
    state = fleet.describe()
    for region in fleet.regions[:2]:
        assert 1 < state[region]["max_inflight"] <= 4, state[region]


def test_without_its_info_a_known_plugin_is_still_priced_under_its_region(localstack, reader, fleet, namespace):
    agent = every_second(localstack, namespace, fleet, 1, "ec2:t3.micro")
    code, _ = agent.run_changing(lambda: fleet.control("/info", region="us-east-1", mode="fail"), 2)
    assert code == 0
    assert agent.messages("GetPluginInfo failed; using the last known or configured region")
    last = parse_ts(agent.cycles()[-1]["cycle_timestamp"])
    cost = {"Region": "us-east-1", "ResourceType": "ec2", "Sku": "t3.micro"}
    assert reader.at(namespace, "ProjectedMonthlyCost", cost, last)[0][1] == 7.592


def test_two_targets_claiming_one_region_are_named(localstack, fleet, namespace):
    fleet.control("/report", region="us-west-2", value="us-east-1")
    agent, code = once(localstack, namespace, fleet, count=2, COST_RESOURCES="none")
    assert code == 0
    [line] = agent.messages("two targets serve one region; their datums will be aggregated together")
    assert line["region"] == "us-east-1"
    assert {line["target"], line["other_target"]} == {
        f"http://127.0.0.1:{fleet.port('us-east-1')}", f"http://127.0.0.1:{fleet.port('us-west-2')}"}


HOSTILE = "us-west-2"
COST_FAILURES = ("cost query failed", "cost is not in USD; not published",
                 "cost query answered a value that is not a finite number; not published")


@pytest.mark.parametrize("mode", ["endless", "trickle", "reset", "garbage", "nested", "array", "euro"])
def test_a_plugin_whose_answers_are_hostile_costs_only_itself(localstack, reader, fleet, namespace, mode):
    """A body that never ends, one a byte a second, a reset mid-body, random bytes, JSON nested
    100,000 deep: each is cut by TARGET_TIMEOUT or the 64 KiB body cap, named in the log with
    its target, and the other regions publish as usual. `[]` (read as a price of 0 before,
    outside attack round 2) and a price in EUR are not published and count as errors too."""
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="*/2 * * * * *", COST_RESOURCES="ec2:t3.micro", TARGET_TIMEOUT="1500ms",
                            SELF_METRICS="false"))
    code, hostile = agent.run_changing(lambda: fleet.control("/answer", region=HOSTILE, mode=mode), then=2)
    assert code == 0
    # README: a target's TARGET_TIMEOUT (1500 ms) bounds its whole cycle, so collection lasts
    # at most that; 1 s more is for a loaded 2-core machine (still under twice the budget).
    assert all(c["collect_ms"] <= 1500 + 1000 for c in hostile), [c["collect_ms"] for c in hostile]
    url = f"http://127.0.0.1:{fleet.port(HOSTILE)}"
    # Every way a query can fail to give a price logs one line with its code.
    failures = [l for l in agent.logs() if l.get("message") in COST_FAILURES]
    failed = [l for l in failures if l.get("target") == url]
    # Each failure is one line: as many as the run's cycles counted, and for the hostile
    # plugin as many as the cycles CloudWatch holds its CostQueryErrors 1 for (every hostile
    # cycle, checked below, and the one running when the mode changed if it met it).
    assert len(failures) == sum(c["cost_errors"] for c in agent.cycles())
    errored = [c for c in agent.cycles() if [p[1] for p in reader.at(
        namespace, "CostQueryErrors", {"Region": HOSTILE}, parse_ts(c["cycle_timestamp"]))] == [1.0]]
    assert len(failed) == len(errored) >= len(hostile), (len(failed), len(errored), len(hostile))
    assert all(l["region"] == HOSTILE and l["code"] for l in failed)
    assert all(len(l.get("error", l.get("currency", ""))) < 600 for l in failed), "cut, whatever the plugin sent"
    for cycle in hostile:
        stamp = parse_ts(cycle["cycle_timestamp"])
        assert reader.at(namespace, "PluginHealthy", {"Region": HOSTILE}, stamp)[0][1] == 1.0
        assert reader.at(namespace, "CostQueryErrors", {"Region": HOSTILE}, stamp)[0][1] == 1.0
        assert reader.at(namespace, "ProjectedMonthlyCost", {"Region": HOSTILE, "ResourceType": "ec2",
                                                             "Sku": "t3.micro"}, stamp) == []
        for region in ("us-east-1", "eu-west-1", "ap-southeast-1"):
            cost = reader.at(namespace, "ProjectedMonthlyCost", {"Region": region, "ResourceType": "ec2",
                                                                 "Sku": "t3.micro"}, stamp)
            assert len(cost) == 1, (region, stamp)
