"""Prometheus endpoints as a source, through LocalStack and read back with boto3: a gauge's
value, a counter's increases (never negative, nothing on the first scrape), a histogram as ONE
metric whose SampleCount, Minimum and Maximum match its buckets, a summary's quantiles,
filters, the series cap, and targets that are down, hang or send garbage while the others
publish."""

import datetime
import signal

import pytest

from harness import STATE, Agent, Exporter, FaultProxy, agent_env, parse_ts, self_signed
from test_health import scrape

REGION = {"Region": "eu-west-1"}
# The TARGET_TIMEOUT `scraping` gives its agents. README: every target is scraped at once, so
# a cycle's collection lasts as long as the slowest target, at most TARGET_TIMEOUT.
TARGET_TIMEOUT_MS = 800
# The tests where a target is cut at TARGET_TIMEOUT use a longer one, so that what a loaded
# 2-core machine may add (the timer firing late, the runtime thread waiting for a core, up
# to LOAD_MARGIN_MS) is small beside it: a build that cut at 1.5 times the timeout fails.
CUT_TIMEOUT_MS = 4000
LOAD_MARGIN_MS = 1700


def cut_at_the_timeout(cycles):
    """Every cycle's collection waited for the slow target's TARGET_TIMEOUT, and no longer."""
    took = [c["collect_ms"] for c in cycles]
    assert all(CUT_TIMEOUT_MS <= t < CUT_TIMEOUT_MS + LOAD_MARGIN_MS for t in took), took


def scraping(localstack, namespace, targets, **env):
    settings = dict(PLUGIN_PORTS="none", SCHEDULE="* * * * * *", SCRAPE_TARGETS=targets,
                    TARGET_TIMEOUT=f"{TARGET_TIMEOUT_MS}ms", SELF_METRICS="false")
    return Agent(agent_env(localstack.url, namespace, **{**settings, **env}))


def window(agent):
    stamps = [parse_ts(c["cycle_timestamp"]) for c in agent.cycles()]
    return stamps, stamps[0], stamps[-1] + datetime.timedelta(seconds=1)


def test_families_become_metrics_by_the_rules(localstack, reader, namespace, exporter):
    agent = scraping(localstack, namespace, f"eu-west-1={exporter.url}", EXCLUDE_METRICS="go_*")
    assert agent.run_cycles(4, timeout=30) == 0
    stamps, start, end = window(agent)
    published = {(n, frozenset(d)) for n, d in reader.metrics(namespace)}
    names = {n for n, _ in published}
    assert "latency_seconds" in names and not any(n.endswith("_bucket") for n in names)
    assert "go_goroutines" not in names  # EXCLUDE_METRICS
    assert all(("Region", "eu-west-1") in d for _, d in published)

    temp = reader.points(namespace, "room_temperature_celsius", {**REGION, "room": "lab"}, start, end)
    assert [p[1] for p in temp] == [21.5] * len(stamps)

    # A counter: nothing on the first scrape (its baseline), then +10 a scrape, never negative.
    requests = reader.points(namespace, "requests_total", {**REGION, "code": "200"}, start, end)
    assert [p[0] for p in requests] == stamps[1:]
    assert [(p[1], p[2]) for p in requests] == [(10.0, "Count")] * (len(stamps) - 1)

    # A histogram: one metric a cycle, its observations where the buckets put them.
    latency = reader.stats(namespace, "latency_seconds", REGION, start, end)
    assert [p[0] for p in latency] == stamps[1:]
    for _, count, low, high, total in latency:
        assert (count, low, high) == (6.0, 0.05, 0.5)
        assert total == pytest.approx(2 * 0.05 + 3 * 0.3 + 0.5)
    counts = reader.points(namespace, "latency_seconds_count", REGION, start, end)
    assert [p[1] for p in counts] == [6.0] * (len(stamps) - 1)

    # A summary: a gauge per quantile, and its count's increases.
    for q, v in (("0.5", 0.2), ("0.99", 0.9)):
        got = reader.points(namespace, "rpc_seconds", {**REGION, "quantile": q}, start, end)
        assert [p[1] for p in got] == [v] * len(stamps)
    assert [p[1] for p in reader.points(namespace, "rpc_seconds_count", REGION, start, end)] == \
        [10.0] * (len(stamps) - 1)

    up = reader.points(namespace, "ScrapeUp", {**REGION, "Target": exporter.url}, start, end)
    assert [p[1] for p in up] == [1.0] * len(stamps)


def test_a_counter_reset_publishes_the_new_count_never_a_negative(localstack, reader, namespace, exporter):
    agent = scraping(localstack, namespace, exporter.url).start()
    try:
        agent.wait_cycles(3, timeout=20)
        exporter.control("/reset")  # the total drops from 130 or more to 110
        agent.wait_cycles(len(agent.cycles()) + 3, timeout=20)
        assert agent.stop(signal.SIGTERM)[0] == 0
    finally:
        agent.kill()
    stamps, start, end = window(agent)
    points = reader.points(namespace, "requests_total", {"code": "200"}, start, end)
    # One datum a scrape after the first (its baseline), none lost: +10 a scrape, except the
    # one scrape after the reset, whose increase is counted from zero (the total, 110).
    assert [p[0] for p in points] == stamps[1:]
    values = [p[1] for p in points]
    assert values.count(110.0) == 1 and values.count(10.0) == len(values) - 1, values
    assert values[:2] == [10.0, 10.0] and values[-1] == 10.0, values


def test_a_down_a_hung_and_a_garbled_target_cost_only_themselves(localstack, reader, namespace):
    good, hung, garbled = Exporter().start(), Exporter().start(), Exporter().start()
    down = Exporter().start()
    try:
        hung.control("/mode", m="hang")
        down.control("/mode", m="down")
        garbled.control("/malformed", on="1")
        garbled.control("/gzip", on="1")
        targets = ",".join(e.url for e in (good, hung, garbled, down))
        # The first bad line the exporter serves, as the warning must name it.
        first_bad = garbled.body().splitlines().index(b"broken{{{ 1") + 1
        agent = scraping(localstack, namespace, targets, TARGET_TIMEOUT=f"{CUT_TIMEOUT_MS}ms").start()
        try:
            agent.wait_cycles(3, timeout=30)
            # The agent's own /metrics lists each scrape target and whether it is up.
            up = {dict(labels)["target"]: v for (name, labels), v in scrape(agent).items()
                  if name == "cloudwatch_publisher_target_up"}
            assert up == {good.url: 1.0, garbled.url: 1.0, hung.url: 0.0, down.url: 0.0}
            assert agent.stop(signal.SIGTERM)[0] == 0
        finally:
            agent.kill()
    finally:
        for e in (good, hung, garbled, down):
            e.stop()
    stamps, start, end = window(agent)
    cycles = agent.cycles()
    assert all((c["healthy"], c["unhealthy"]) == (2, 2) for c in cycles)
    # The hung one costs its TARGET_TIMEOUT, and then only what load adds.
    cut_at_the_timeout(cycles)
    for exporter, up in ((good, 1.0), (garbled, 1.0), (hung, 0.0), (down, 0.0)):
        got = reader.points(namespace, "ScrapeUp", {"Target": exporter.url}, start, end)
        assert [p[1] for p in got] == [up] * len(stamps), exporter.url
    # The garbled one's good lines still publish; its bad lines are named once a scrape.
    temp = reader.points(namespace, "room_temperature_celsius", {"room": "lab"}, start, end)
    assert [p[3] for p in temp] == [2.0] * len(stamps)  # good and garbled, aggregated
    # One warning a scrape (README), with the count and the first bad line and why.
    skipped = [l for l in agent.logs() if l.get("message", "").startswith("lines of a scrape were skipped")]
    assert [(l["target"], l["malformed"], l["line"]) for l in skipped] == [(garbled.url, 3, first_bad)] * len(cycles)
    assert skipped[0]["error"] and "broken" not in skipped[0]["error"], skipped[0]


def test_a_target_never_creates_more_metrics_than_its_cap(localstack, reader, namespace, exporter):
    exporter.control("/extra", n=40)
    agent = scraping(localstack, namespace, exporter.url, MAX_SERIES_PER_TARGET=12)
    assert agent.run_cycles(3, timeout=30) == 0
    target_metrics = [m for m in reader.metrics(namespace) if m[0] not in ("ScrapeUp", "ScrapeDuration")]
    assert len(target_metrics) == 12
    warnings = [l for l in agent.logs() if "MAX_SERIES_PER_TARGET" in l.get("message", "")]
    assert len(warnings) == 1 and warnings[0]["max_series"] == 12
    # What is past the cap is counted, every cycle: the exporter's 10 places (its docstring;
    # a histogram's distribution, _sum and _count are three) and the 40 extra series, less
    # the 12 the cap holds.
    assert warnings[0]["not_published"] == 38
    assert [c["scrape_dropped"] for c in agent.cycles()] == [38] * len(agent.cycles())


def test_include_metrics_and_drop_labels(localstack, reader, namespace, exporter):
    agent = scraping(localstack, namespace, exporter.url, INCLUDE_METRICS="room_*,rpc_seconds",
                     DROP_LABELS="room")
    assert agent.run_cycles(2, timeout=30) == 0
    names = {n for n, _ in reader.metrics(namespace)} - {"ScrapeUp", "ScrapeDuration"}
    # Filters choose families: a summary comes with its _sum and _count.
    assert names == {"room_temperature_celsius", "rpc_seconds", "rpc_seconds_sum", "rpc_seconds_count"}
    [(_, dims)] = [m for m in reader.metrics(namespace) if m[0] == "room_temperature_celsius"]
    assert dict(dims) == {}


def test_https_targets_are_trusted_through_the_system_roots_only(localstack, reader, namespace, tmp_path):
    """An https exporter whose certificate is the only one in SSL_CERT_FILE: scraped; trusting
    another certificate instead: reported down with the TLS error, not scraped anyway."""
    pem = STATE / "server.test.pem"
    exporter = Exporter(tls=pem).start()
    bundle = tmp_path / "ca.pem"
    text = pem.read_text()
    bundle.write_text(text[text.index("-----BEGIN CERTIFICATE"):])
    other = self_signed(tmp_path / "other.pem").read_text()
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(other[other.index("-----BEGIN CERTIFICATE"):])
    try:
        trusted = scraping(localstack, namespace, exporter.url, SSL_CERT_FILE=bundle)
        assert trusted.run_cycles(2, timeout=30) == 0
        untrusted = scraping(localstack, namespace + "x", exporter.url, SSL_CERT_FILE=stranger)
        assert untrusted.run_cycles(1, timeout=30) == 0
    finally:
        exporter.stop()
    assert all(c["healthy"] == 1 for c in trusted.cycles())
    stamps, start, end = window(trusted)
    temp = reader.points(namespace, "room_temperature_celsius", {"room": "lab"}, start, end)
    assert [p[1] for p in temp] == [21.5] * len(stamps)
    assert all(c["unhealthy"] == 1 for c in untrusted.cycles())
    [failure, *_] = [l for l in untrusted.logs() if l.get("message") == "scrape failed; the target is reported down"]
    assert "certificate" in failure["error"].lower() or "issuer" in failure["error"].lower(), failure


# What each hostile body is cut by, as the failed scrape's warning says it.
HOSTILE_ERRORS = {
    "endless": "the body is larger than 33554432 bytes",  # the 32 MiB cap, well before the timeout
    "trickle": "timed out",
    "reset": "unreadable body: ",
}


@pytest.mark.parametrize("mode", ["endless", "trickle", "reset"])
def test_a_scrape_target_whose_body_is_hostile_costs_only_itself(localstack, reader, namespace, mode):
    """A body that never ends (cut at the 32 MiB cap, long before TARGET_TIMEOUT), one a byte a
    second (cut at TARGET_TIMEOUT), a reset mid-body: that target is down for the cycle, named
    in the log once a cycle with why, and the other target publishes as usual."""
    good, bad = Exporter().start(), Exporter().start()
    try:
        bad.control("/mode", m=mode)
        agent = scraping(localstack, namespace, f"{good.url},{bad.url}", TARGET_TIMEOUT=f"{CUT_TIMEOUT_MS}ms")
        assert agent.run_cycles(3, timeout=60) == 0
    finally:
        bad.control("/mode", m="ok")
        good.stop()
        bad.stop()
    stamps, start, end = window(agent)
    if mode == "trickle":
        cut_at_the_timeout(agent.cycles())
    else:
        # Not waited for: a cut body ends the scrape at once.
        took = [c["collect_ms"] for c in agent.cycles()]
        assert all(t < CUT_TIMEOUT_MS for t in took), took
    assert [p[1] for p in reader.points(namespace, "ScrapeUp", {"Target": bad.url}, start, end)] == [0.0] * len(stamps)
    assert [p[1] for p in reader.points(namespace, "ScrapeUp", {"Target": good.url}, start, end)] == [1.0] * len(stamps)
    temp = reader.points(namespace, "room_temperature_celsius", {"room": "lab"}, start, end)
    assert [p[3] for p in temp] == [1.0] * len(stamps), "only the good target's sample"
    failed = [l for l in agent.logs() if l.get("message") == "scrape failed; the target is reported down"]
    assert [l["target"] for l in failed] == [bad.url] * len(stamps), "each failed scrape is named once"
    assert all(l["level"] == "WARN" and l["error"].startswith(HOSTILE_ERRORS[mode]) for l in failed), failed
    named = [l for l in agent.logs() if l.get("target") in (bad.url, good.url) and l.get("level") != "INFO"]
    assert named == failed, "nothing else about the targets warns"


def test_a_5000_series_scrape_takes_the_fewest_requests(localstack, namespace, exporter):
    """A guard for `make bench`'s scale figures: every cycle of a 5k-series scrape goes out in
    ceil(datums / 1000) PutMetricData requests, the floor, counted by the proxy the agent sends
    through (a CloudWatch that answers at once, so no deadline cuts a cycle short)."""
    exporter.control("/scale", n=5000)
    proxy = FaultProxy(localstack.port).start()
    proxy.set("accept")
    try:
        agent = Agent(agent_env(proxy.url, namespace, PLUGIN_PORTS="none", SCHEDULE="*/2 * * * * *",
                                SCRAPE_TARGETS=exporter.url, MAX_SERIES_PER_TARGET="100000", TARGET_TIMEOUT="1500ms",
                                SELF_METRICS="false"))
        assert agent.run_cycles(3, timeout=60) == 0
    finally:
        proxy.stop()
    cycles = agent.cycles()
    # From the second scrape on: 2500 gauges, 1500 counters, 1000 histograms as a distribution
    # with its _sum and _count (3000), and ScrapeUp/ScrapeDuration.
    assert [c["datums"] for c in cycles[1:]] == [7002] * (len(cycles) - 1)
    for c in cycles:
        assert c["published"] == c["datums"] and c["queued"] == 0, c
        assert c["calls"] == -(-c["datums"] // 1000), c
    assert proxy.count("requests") == sum(c["calls"] for c in cycles)
