"""Hostile scrape targets against the real agent (the exporter's attack modes,
tests/fleet/exporter.py): a line of a million labels, 8,000,000 lines of one series in a 31 KB
gzip body, series named as the agent's own metrics, a series given twice, a negative counter
total. Each fails safe: the health listener answers and SIGTERM ends the agent in time while
the worst body is scraped, a target never makes more datums than its cap, nothing lands on the
agent's own metrics in CloudWatch, and every sample not published is counted in /metrics and
the cycle's log line, with a warning naming the target (docs/reliability.md, Limits)."""

import datetime
import signal
import time
import urllib.request

from harness import Agent, Exporter, agent_env, http_get, parse_ts, rss_kib, wait_for
from test_health import scrape

# What a loaded 2-core machine may add to a bound the agent keeps (a timer firing late, the
# runtime thread waiting for a core); the attacks below used to cost minutes.
LOAD_MARGIN_S = 2.0


def scraping(localstack, namespace, targets, **env):
    settings = dict(PLUGIN_PORTS="none", SCRAPE_TARGETS=targets, SELF_METRICS="false")
    return Agent(agent_env(localstack.url, namespace, **{**settings, **env}))


def hostile(mode, **control):
    """An exporter in `mode`, its body made once before the agent first asks (a hostile body
    takes the Python exporter seconds to build)."""
    e = Exporter().start()
    for path, params in control.items():
        e.control(f"/{path}", **params)
    e.control("/mode", m=mode)
    with urllib.request.urlopen(urllib.request.Request(e.url, headers={"Accept-Encoding": "gzip"}),
                                timeout=120) as r:
        r.read()
    e.control("/reset")
    return e


def dropped(agent):
    """{reason: count} of cloudwatch_publisher_scrape_samples_dropped_total."""
    return {dict(labels)["reason"]: v for (name, labels), v in scrape(agent).items()
            if name == "cloudwatch_publisher_scrape_samples_dropped_total"}


def window(agent):
    stamps = [parse_ts(c["cycle_timestamp"]) for c in agent.cycles()]
    return stamps, stamps[0], stamps[-1] + datetime.timedelta(seconds=1)


def warnings(agent, message, target):
    return [l for l in agent.logs() if l.get("message", "").startswith(message) and l.get("target") == target]


def test_a_label_bomb_never_stops_the_health_listener_or_sigterm(localstack, reader, namespace):
    """A line of 1,000,000 labels (13 MB; this froze the agent for minutes) followed by 10,000
    lines of 128 labels, a 22 MB body heavy to convert: /healthz answers every time it is asked
    while the agent scrapes it cycle after cycle, the line is refused and named, the rest of
    the body is published, and SIGTERM ends the agent within SHUTDOWN_TIMEOUT."""
    bomb = hostile("labelbomb", labels=dict(n=1_000_000, lines=10_000))
    try:
        # A small cap: the heavy lines are each a series, and what is tested is their parse,
        # not CloudWatch taking 500 datums of 30 dimensions a cycle.
        agent = scraping(localstack, namespace, bomb.url, SCHEDULE="*/4 * * * * *", TARGET_TIMEOUT="3s",
                         SHUTDOWN_TIMEOUT="5s", MAX_SERIES_PER_TARGET="20").start()
        try:
            agent.wait_cycles(1, timeout=60)
            answers = []
            deadline = time.monotonic() + 60
            while len(agent.cycles()) < 4:
                assert time.monotonic() < deadline and agent.proc.poll() is None, "4 cycles in 60 s"
                started = time.monotonic()
                status, _, _ = http_get(agent.health_url("/healthz"), timeout=10)
                answers.append((status, time.monotonic() - started))
            code, took = agent.stop(signal.SIGTERM, timeout=30)
        finally:
            agent.kill()
    finally:
        bomb.stop()
    assert code == 0, agent.stderr
    # SHUTDOWN_TIMEOUT bounds the wait for the running cycle and the flush together.
    assert took < 5 + LOAD_MARGIN_S, took
    slowest = max(t for _, t in answers)
    assert len(answers) > 10 and all(s in (200, 503) for s, _ in answers), answers
    assert slowest < LOAD_MARGIN_S, f"/healthz took {slowest:.2f} s while the body was scraped"
    refused = warnings(agent, "lines of a scrape were skipped as malformed", bomb.url)
    assert len(refused) >= 4
    # The usual body is 17 lines; the bomb is the 18th.
    assert all((l["line"], l["error"]) == (18, "more than 128 labels on one sample") for l in refused), refused[0]
    stamps, start, end = window(agent)
    temp = reader.points(namespace, "room_temperature_celsius", {"room": "lab"}, start, end)
    assert [p[1] for p in temp] == [21.5] * len(stamps)


def test_eight_million_lines_of_one_series_are_one_datum_in_bounded_memory(localstack, reader, namespace):
    """`d 1` 8,000,000 times, 31 KB of gzip that inflates to 32,000,000 bytes (this made
    8,000,002 datums, 4,033 PutMetricData calls and 1.2 GB of RSS): one datum a cycle, every
    other line counted (a duplicate, or not read when TARGET_TIMEOUT cut the parse), and the
    agent's memory bounded by the body."""
    flood = hostile("duplicates")
    try:
        # Time enough to inflate the body even in a debug build (2 s there, 0.1 s in release);
        # whether the parse then ends or is cut, every line is accounted for.
        agent = scraping(localstack, namespace, flood.url, SCHEDULE="*/10 * * * * *", TARGET_TIMEOUT="7s",
                         MAX_SERIES_PER_TARGET="50").start()
        try:
            agent.wait_cycles(3, timeout=90)
            counted = dropped(agent)
            peak_mib = rss_kib(agent.proc.pid) / 1024
            assert agent.stop(signal.SIGTERM, timeout=30)[0] == 0
        finally:
            agent.kill()
    finally:
        flood.stop()
    cycles = agent.cycles()
    # `d` and ScrapeUp, and ScrapeDuration when the whole body was read in time.
    assert all(c["datums"] <= 3 for c in cycles), [c["datums"] for c in cycles]
    assert all(c["calls"] <= 1 for c in cycles), [c["calls"] for c in cycles]
    assert all(c["scrape_dropped"] == 7_999_999 for c in cycles), [c["scrape_dropped"] for c in cycles]
    assert (counted["duplicate"] + counted["not_read"]) % 7_999_999 == 0 and counted["duplicate"] > 0, counted
    stamps, start, end = window(agent)
    d = reader.points(namespace, "d", {}, start, end)
    assert [(p[1], p[3]) for p in d] == [(1.0, 1.0)] * len(stamps)
    assert peak_mib < 200, f"peak RSS {peak_mib:.0f} MiB"
    said = warnings(agent, "samples of a scrape were dropped", flood.url)
    assert said and all((l["first"], l["name"]) == ("duplicate", "d") for l in said)


def test_no_scraped_series_lands_on_the_agents_own_metrics_and_duplicates_and_negatives_are_counted(
        localstack, reader, namespace):
    """An exporter serving PluginHealthy{Region="us-east-1"}, its own ScrapeUp and
    ScrapeDuration and the agent's DatumsDropped and CycleDuration under its Agent dimension;
    one serving dup_total{a="1"} twice (10 then 20); one whose counter total goes -1, -3, -5.
    CloudWatch holds none of the spoofed samples (each of the agent's own metrics has exactly
    its own datum a cycle), dup_total increases by 0 (not +10 each cycle), neg_total is never
    published, and each of these is counted and named."""
    agent_name = "spoof-test"
    spoof = hostile("spoof", spoof=dict(agent=agent_name))
    dup, neg = hostile("dupseries"), hostile("negative")
    try:
        agent = scraping(localstack, namespace, f"us-east-1={spoof.url},{dup.url},{neg.url}",
                         SCHEDULE="* * * * * *", TARGET_TIMEOUT="800ms", SELF_METRICS="true",
                         AGENT_NAME=agent_name).start()
        try:
            agent.wait_cycles(4, timeout=30)
            before = len(agent.cycles())
            counted = dropped(agent)
            after = len(agent.cycles())
            assert agent.stop(signal.SIGTERM, timeout=30)[0] == 0
        finally:
            agent.kill()
    finally:
        for e in (spoof, dup, neg):
            e.stop()
    scrapes = counted["duplicate"]
    assert before <= scrapes <= after + 1, (before, scrapes, after)
    assert (counted["reserved_name"], counted["negative"]) == (5 * scrapes, scrapes), counted
    assert all(c["scrape_dropped"] == 7 for c in agent.cycles())

    stamps, start, end = window(agent)
    names = {n for n, _ in reader.metrics(namespace)}
    assert "PluginHealthy" not in names and "neg_total" not in names, names
    spoofed = {"Target": spoof.url, "Region": "us-east-1"}
    up = reader.points(namespace, "ScrapeUp", spoofed, start, end)
    assert [(p[1], p[3]) for p in up] == [(1.0, 1.0)] * len(stamps)
    duration = reader.points(namespace, "ScrapeDuration", spoofed, start, end)
    assert [p[3] for p in duration] == [1.0] * len(stamps)
    # The agent's own metrics of every cycle but the last, whose go out at the flush.
    own = {"Agent": agent_name}
    for name in ("DatumsDropped", "CycleDuration"):
        got = reader.points(namespace, name, own, start, end)
        assert [p[3] for p in got] == [1.0] * len(got) and len(got) >= len(stamps) - 1, (name, got)
    increases = reader.points(namespace, "dup_total", {"a": "1"}, start, end)
    assert [(p[1], p[3]) for p in increases] == [(0.0, 1.0)] * (len(stamps) - 1)
    temp = reader.points(namespace, "room_temperature_celsius", {"room": "lab"}, start, end)
    # LocalStack matches these dimensions in the spoofing target's datum (Region too): three.
    assert [p[3] for p in temp] == [3.0] * len(stamps), "every target's other lines are published"

    said = {t: warnings(agent, "samples of a scrape were dropped", t) for t in (spoof.url, dup.url, neg.url)}
    assert all(len(lines) == len(stamps) for lines in said.values()), {t: len(v) for t, v in said.items()}
    assert all((l["reserved_name"], l["first"], l["name"]) == (5, "reserved_name", "PluginHealthy")
               for l in said[spoof.url])
    assert all((l["duplicate"], l["first"], l["name"]) == (1, "duplicate", "dup_total") for l in said[dup.url])
    assert all((l["negative"], l["first"], l["name"]) == (1, "negative", "neg_total") for l in said[neg.url])


def test_a_body_of_many_gzip_members_is_read_whole(localstack, reader, namespace):
    """Outside attack, round 2: a body of several gzip members (`gzip a; gzip b >> file`, which
    gzip(1), Go and Python read whole) had only its first member read: the rest of the
    scrape was lost with ScrapeUp 1 and nothing counted. Each line its own member here."""
    plain, members = Exporter().start(), hostile("multigzip")
    try:
        agent = scraping(localstack, namespace, f"{plain.url},{members.url}", SCHEDULE="* * * * * *",
                         TARGET_TIMEOUT="800ms", EXCLUDE_METRICS="extra_series")
        assert agent.run_cycles(3, timeout=30) == 0
    finally:
        plain.stop()
        members.stop()
    stamps, start, end = window(agent)
    assert all(c["healthy"] == 2 and c["scrape_dropped"] == 0 for c in agent.cycles())
    # Both targets publish the same series: every gauge of the body, twice a cycle.
    temp = reader.points(namespace, "room_temperature_celsius", {"room": "lab"}, start, end)
    assert [p[3] for p in temp] == [2.0] * len(stamps)
    quantile = reader.points(namespace, "rpc_seconds", {"quantile": "0.99"}, start, end)
    assert [p[3] for p in quantile] == [2.0] * len(stamps), "the body's last lines too"
