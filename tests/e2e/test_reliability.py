"""Nothing lost: outages of every kind, kill -9 at random points, a corrupted buffer, a full
disk and a read-only one, with the real agent, the fault proxy in front of LocalStack and
the plugin fleet.

The oracle is the fleet, not the agent: with `cost_value=clock` each region answers
GetProjectedCost with the time it answered, and remembers every answer it sent. Every
answer the agent received in a cycle it finished collecting must be in CloudWatch, as the
Maximum of `ProjectedMonthlyCost` at that cycle's timestamp; a SampleCount above 1 is a
duplicate. Each test prints its counts (lost, duplicated, kills), for docs/reliability.md.
"""

import datetime
import os
import random
import signal
import time

import pytest

from harness import Agent, FaultProxy, agent_env, child_pid, parse_ts, wait_for

CLOCK_BASKET = "ec2:t3.micro"
# The proxy's count that shows a mode met a request (a delayed request is passed on).
OUTCOME = {"delay": "passed"}
WRITE_FAILED = "buffer directory cannot be written; cycles are kept in memory (QUEUE_MAX_DATUMS) until it can"
CORRUPT = "buffer: skipped a corrupt or torn record"


def cost_dims(region):
    return {"Region": region, "ResourceType": "ec2", "Sku": "t3.micro"}


def clock(fleet):
    for region in fleet.regions:
        fleet.control("/cost_value", region=region, value="clock")


def env_for(proxy, namespace, fleet, **extra):
    settings = dict(PLUGIN_PORTS=fleet.ports_spec(12), SCHEDULE="* * * * * *", COST_RESOURCES=CLOCK_BASKET,
                    SELF_METRICS="false", TARGET_TIMEOUT="800ms")
    return agent_env(proxy.url, namespace, **{**settings, **extra})


@pytest.fixture
def proxy(localstack):
    p = FaultProxy(localstack.port).start()
    yield p
    p.stop()


def delivered(reader, namespace, region, start, end):
    """{cycle timestamp: (values, sample count)} of one region's clock series. Two runs of the
    agent a moment apart (a kill and a restart) can stamp cycles with the same second: the
    values at a timestamp are its Minimum and Maximum, and samples beyond them duplicates."""
    out = {}
    # LocalStack answers short windows of 1-second periods far faster than long ones.
    t = start
    while t < end:
        stop = min(end, t + datetime.timedelta(seconds=60))
        for ts, count, lo, hi, _sum in reader.stats(namespace, "ProjectedMonthlyCost", cost_dims(region), t, stop):
            out[ts] = ({round(lo, 3), round(hi, 3)}, int(count))
        t = stop
    return out


def account(reader, namespace, fleet, start, end, uncertain=lambda v: False):
    """Per region, the fleet's answers against CloudWatch: (lost, duplicated, in-flight
    answers that made it, in-flight answers in all)."""
    lost, dups, flight_made, flight = [], 0, 0, 0
    for region in fleet.regions:
        got = delivered(reader, namespace, region, start, end)
        values = set().union(*(vs for vs, _ in got.values()))
        dups += sum(c - len(vs) for vs, c in got.values())
        for v in fleet.answered(region):
            if uncertain(v):
                flight += 1
                flight_made += round(v, 3) in values
            elif round(v, 3) not in values:
                lost.append((region, v))
        # Nothing in CloudWatch that the fleet never sent.
        assert values <= {round(v, 3) for v in fleet.answered(region)}, region
    return lost, dups, flight_made, flight


def wait_drained(agent, timeout=120):
    """Until a cycle after now has left nothing queued."""
    n = len(agent.cycles())
    wait_for(lambda: any(c["queued"] == 0 for c in agent.cycles()[n:]), timeout, "the buffer to drain")


# A backlog of thousands of datums goes out 1000 to a request, and LocalStack takes seconds
# over each (far longer than CloudWatch) on a loaded machine: more than an every-second
# cycle leaves an attempt. The agents that must deliver a large backlog therefore do it in
# their stop's flush, which has SHUTDOWN_TIMEOUT for it, and must say they stopped with
# nothing left: exit 0 and `stopped cleanly`, however long LocalStack took.
DRAIN_AT_STOP = "150s"


def stop_drained(agent, wrapped=False):
    if wrapped:
        sigterm_wrapped(agent)
    else:
        agent.signal(signal.SIGTERM)
    assert agent.wait(180) == 0
    assert agent.messages("stopped cleanly"), "the stop's flush left datums undelivered"


def window(agent_runs):
    first = min(parse_ts(c["cycle_timestamp"]) for a in agent_runs for c in a.cycles()) \
        if any(a.cycles() for a in agent_runs) else datetime.datetime.now(datetime.timezone.utc)
    return first - datetime.timedelta(minutes=2), datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)


@pytest.mark.parametrize("buffer", ["memory", "disk"])
def test_an_outage_of_every_kind_loses_nothing(localstack, reader, fleet, namespace, proxy, tmp_path, buffer):
    clock(fleet)
    # On disk, the agent's own metrics too: each cycle's wait in the buffer for a later
    # publish, stamped with their cycle, and must survive the outage like the rest.
    extra = {"BUFFER_DIR": str(tmp_path / "buffer"), "SELF_METRICS": "true", "AGENT_NAME": "outage"} \
        if buffer == "disk" else {}
    agent = Agent(env_for(proxy, namespace, fleet, SHUTDOWN_TIMEOUT=DRAIN_AT_STOP, **extra)).start()
    started = datetime.datetime.now(datetime.timezone.utc)
    phases = [("refuse", {}), ("reset", {}), ("error500", {}), ("throttle", {}), ("hang", {}),
              ("delay", {"delay_ms": 1500}), ("blackhole", {})]
    try:
        agent.wait_cycles(2, timeout=20)
        for mode, params in phases:
            # Each phase lasts until the fault has met the agent's requests twice and a cycle
            # has run under it: an event, whatever the machine's speed.
            seen = proxy.count(OUTCOME.get(mode, mode))
            n = len(agent.cycles())
            proxy.set(mode, **params)
            if mode != "refuse":
                wait_for(lambda: proxy.count(OUTCOME.get(mode, mode)) >= seen + 2, 30, f"two requests to meet {mode}")
            agent.wait_cycles(n + 1, timeout=30)
            if mode == "refuse":
                # The buffer's state is in /metrics while the outage lasts (once a cycle has
                # given up: the SDK's own retries can take it past this phase).
                wait_for(lambda: agent.metric("datums_queued") > 0, 10, "a failed cycle")
                waiting = {m: agent.metric(m) for m in ("datums_queued", "buffer_bytes", "buffer_oldest_age_seconds")}
                assert waiting["datums_queued"] > 0 and waiting["buffer_bytes"] > 30 * waiting["datums_queued"], waiting
                # Read as soon as a cycle has failed: its datums may be under a second old.
                assert waiting["buffer_oldest_age_seconds"] > 0, waiting
                assert agent.metric("buffer_disk_writable") == (1 if buffer == "disk" else None)
        proxy.set("pass")
        stop_drained(agent)
    finally:
        agent.kill()
    assert any(c["queued"] > 30 for c in agent.cycles()), "the outage kept datums waiting"
    lost, dups, _, _ = account(reader, namespace, fleet, started - datetime.timedelta(seconds=5),
                               datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5))
    answered = sum(len(fleet.answered(r)) for r in fleet.regions)
    counts = {k: proxy.count(k) for k in ("requests", "passed", "reset", "error500", "throttle", "hang", "blackhole")}
    print(f"\noutage ({buffer}): {answered} cost datums answered, {len(lost)} lost, {dups} duplicated; proxy {counts}")
    assert all(counts[k] >= 2 for k in ("reset", "error500", "throttle", "hang", "blackhole")), counts
    assert lost == []
    # Every cycle the agent ran is there for every region, at its own timestamp.
    stamps = {parse_ts(c["cycle_timestamp"]) for c in agent.cycles()}
    for region in fleet.regions:
        got = delivered(reader, namespace, region, min(stamps), max(stamps) + datetime.timedelta(seconds=1))
        assert stamps <= set(got), region
        # A duplicate needs CloudWatch to have taken a request whose answer the agent did not
        # get in time (blackholed or delayed, as the proxy recorded): at no other stamp, in
        # any phase.
        dup = [ts for ts, (vs, c) in got.items() if c > len(vs)]
        unsure = {int(t) for t in proxy.unsure}
        assert [ts for ts in dup if int(ts.timestamp()) not in unsure] == [], (region, dup)
    if buffer == "disk":
        # Each cycle's own metrics, stamped with it and sent with a later cycle or at the stop.
        start, end = min(stamps), max(stamps) + datetime.timedelta(seconds=1)
        own = {p[0] for p in reader.points(namespace, "CycleDuration", {"Agent": "outage"}, start, end)}
        assert own == stamps, sorted(stamps ^ own)


def written_ahead(agents):
    """{cycle timestamp: cost datums} of every cycle an agent said it had synced to BUFFER_DIR
    (the `cycle written ahead` debug line, logged after the write-ahead's fsync returned):
    each of these must reach CloudWatch, however soon after the line the agent was killed.
    A cycle killed before its line got out is not counted, whether or not it was synced."""
    out = {}
    for agent in agents:
        for line in agent.messages("cycle written ahead"):
            assert line["durable"] is True, line
            stamp = parse_ts(line["cycle_timestamp"])
            # One basket entry: each healthy region whose cost query answered gives one.
            out[stamp] = out.get(stamp, 0) + line["healthy"] - line["cost_errors"]
    return out


@pytest.mark.timeout(600)
def test_kill_9_at_random_points_loses_no_collected_cycle(localstack, reader, fleet, namespace, proxy, tmp_path):
    clock(fleet)
    # One slow region: collection lasts 150 ms, so some kills land mid-collection.
    fleet.latency("eu-west-1", 150)
    seed = int(os.environ.get("KILL_SEED", time.time()))
    rng = random.Random(seed)
    env = env_for(proxy, namespace, fleet, BUFFER_DIR=str(tmp_path / "buffer"),
                  RUST_LOG="info,cloudwatch_publisher::agent=debug")
    # No blackhole here: its lost answers make duplicates of their own (the outage test
    # covers them), and these counts are to show what kills alone cost.
    modes = [("pass", {}), ("refuse", {}), ("delay", {"delay_ms": 1200}), ("pass", {}),
             ("hang", {}), ("throttle", {}), ("error500", {}), ("reset", {})]
    runs = int(os.environ.get("KILL_RUNS", 16))
    agents = []
    for i in range(runs):
        mode, params = modes[i % len(modes)]
        proxy.set(mode, **params)
        agent = Agent(env).start()
        agents.append(agent)
        agent.wait_ready()
        # The kill lands anywhere in a cycle: collecting, writing ahead, waiting, sending.
        time.sleep(rng.uniform(0.2, 3.0))
        agent.proc.send_signal(signal.SIGKILL)
        agent.wait(10)
    proxy.set("pass")
    final = Agent(dict(env, SHUTDOWN_TIMEOUT=DRAIN_AT_STOP)).start()
    agents.append(final)
    try:
        final.wait_cycles(2, timeout=60)
        stop_drained(final)
    finally:
        final.kill()
    restored = final.messages("buffer directory opened; what it holds goes out first")
    assert restored and restored[0]["datums"] > 0, "the killed runs left a backlog"
    synced = written_ahead(agents)
    killed_synced = sum(1 for a in agents[:-1] for _ in a.messages("cycle written ahead"))
    assert killed_synced > 0, "no killed run said it had written a cycle ahead"
    start, end = window(agents)
    _, dups, made, answered = account(reader, namespace, fleet, start, end, uncertain=lambda v: True)
    # Exact: every cost datum of every cycle said to be synced is in CloudWatch at the
    # cycle's timestamp. Each answer is a distinct clock value, so a duplicate cannot stand
    # in for a missing one (only Minimum and Maximum are read: past two samples at one
    # second, the sample count is taken).
    got = {}
    for region in fleet.regions:
        for stamp, (values, count) in delivered(reader, namespace, region, start, end).items():
            got[stamp] = got.get(stamp, 0) + (len(values) if count <= 2 else count)
    missing = {stamp.isoformat(): (expected, got.get(stamp, 0))
               for stamp, expected in sorted(synced.items()) if got.get(stamp, 0) < expected}
    print(f"\nkill -9 (seed {seed}): {runs} kills, {answered} cost datums answered, "
          f"{sum(synced.values())} in {len(synced)} cycles said synced ({killed_synced} of them by killed runs), "
          f"{answered - made} answered but never delivered (killed before the write-ahead or its line), "
          f"{dups} duplicated; backlog at restart {restored[0]['datums']} datums")
    assert missing == {}, f"seed {seed}: synced cycles missing from CloudWatch (expected, found): {missing}"
    # Duplicates come only from a request CloudWatch took but whose answer the agent never
    # had: one in flight at a kill, or one that timed out (LocalStack on a loaded machine can
    # outlast an attempt). Once the kills are over, none unless the final run saw a failure.
    if not final.messages("PutMetricData failed; datums kept for the next cycle"):
        final_start = min(parse_ts(c["cycle_timestamp"]) for c in final.cycles()) + datetime.timedelta(seconds=1)
        for region in fleet.regions:
            got = delivered(reader, namespace, region, final_start, end)
            assert all(c == len(vs) for vs, c in got.values()), region


def test_a_corrupted_buffer_costs_only_its_broken_records(localstack, reader, fleet, namespace, proxy, tmp_path):
    clock(fleet)
    buf = tmp_path / "buffer"
    # Small segments: two cycles each.
    env = env_for(proxy, namespace, fleet, BUFFER_DIR=str(buf), BUFFER_MAX_BYTES="64KiB")
    proxy.set("refuse")
    outage = Agent(env).start()
    try:
        outage.wait_cycles(6, timeout=30)
        outage.signal(signal.SIGTERM)
        assert outage.wait(20) == 0, "what was not delivered is kept in BUFFER_DIR"
    finally:
        outage.kill()
    # Kept whether the flush gave up (CloudWatch refused) or SHUTDOWN_TIMEOUT ran out first.
    kept = [l for l in outage.logs() if "in BUFFER_DIR for the next start" in l.get("message", "")]
    assert kept, "the stop says the datums are kept"
    segments = sorted(buf.glob("*.seg"))
    assert len(segments) >= 3, segments
    first = bytearray(segments[0].read_bytes())
    first[40] ^= 0x5A                                         # flipped bits in its first record
    segments[0].write_bytes(bytes(first))
    last = segments[-1].read_bytes()
    segments[-1].write_bytes(last[:-30])                      # a torn last record
    torn_at = last.rfind(b"CWB1")                             # where its frame starts
    (buf / f"{99_999_990:020}.seg").write_bytes(b"")          # a zero-length segment
    (buf / f"{99_999_991:020}.seg").write_bytes(b"not a segment at all " * 50)
    (buf / "notes.txt").write_text("an operator's notes")

    proxy.set("pass")
    agent = Agent(env).start()
    try:
        agent.wait_cycles(1, timeout=20)
        wait_drained(agent)
        corrupt = agent.metric("buffer_corrupt_records_total")
        agent.signal(signal.SIGTERM)
        assert agent.wait(20) == 0
    finally:
        agent.kill()
    warnings = agent.messages(CORRUPT)
    # Each warning names the file and the byte where the bad stretch starts: the first
    # record of the first segment, the last frame of the last, and the nonsense from 0.
    assert {(w["file"], w["offset"]) for w in warnings} == {
        (str(segments[0]), 0), (str(segments[-1]), torn_at), (str(buf / f"{99_999_991:020}.seg"), 0)}
    assert corrupt == 3
    assert (buf / "notes.txt").read_text() == "an operator's notes"
    # Exactly the two damaged cycles are missing, the outage's first (the first segment's
    # first record) and its last (the last segment's last); every other cycle arrived.
    stamps = sorted(parse_ts(c["cycle_timestamp"]) for c in outage.cycles())
    for region in fleet.regions:
        got = delivered(reader, namespace, region, stamps[0], stamps[-1] + datetime.timedelta(seconds=1))
        assert set(stamps) - set(got) == {stamps[0], stamps[-1]}, region
    print(f"\ncorruption: {len(stamps)} cycles buffered, 3 corrupt stretches skipped, {len(stamps) - 2} cycles delivered")


def bwrap(*mounts):
    return ["bwrap", "--dev-bind", "/", "/", *mounts, "--die-with-parent", "--"]


def sigterm_wrapped(agent):
    """SIGTERM to the agent itself, bwrap's only child (bwrap does not pass signals on)."""
    os.kill(child_pid(agent.proc.pid), signal.SIGTERM)


def test_a_full_disk_degrades_to_memory_and_recovers(localstack, reader, fleet, namespace, proxy, tmp_path):
    clock(fleet)
    buf = tmp_path / "small"
    buf.mkdir()
    proxy.set("refuse")
    # 16 KiB of tmpfs: four cycles' records, then ENOSPC.
    agent = Agent(env_for(proxy, namespace, fleet, BUFFER_DIR=str(buf)),
                  wrap=bwrap("--size", str(16 << 10), "--tmpfs", str(buf))).start()
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        wait_for(lambda: agent.messages(WRITE_FAILED), 30, "the disk to fill")
        n = len(agent.cycles())
        agent.wait_cycles(n + 3, timeout=15)
        assert agent.metric("buffer_disk_writable") == 0
        proxy.set("pass")
        wait_drained(agent)
        # Delivered records free their segments; the directory takes writes again.
        wait_for(lambda: agent.metric("buffer_disk_writable") == 1, 15, "the disk to be writable again")
        sigterm_wrapped(agent)
        assert agent.wait(20) == 0
    finally:
        agent.kill()
    assert len(agent.messages(WRITE_FAILED)) == 1, "logged when it starts failing, not every cycle"
    assert agent.messages("buffer directory writable again; the records held in memory are written to it")
    lost, dups, _, _ = account(reader, namespace, fleet, started - datetime.timedelta(seconds=5),
                               datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5))
    print(f"\ndisk full: {len(agent.cycles())} cycles, {len(lost)} lost, {dups} duplicated")
    assert lost == []


def test_a_read_only_buffer_directory_publishes_from_memory(localstack, reader, fleet, namespace, proxy, tmp_path):
    clock(fleet)
    buf = tmp_path / "ro"
    buf.mkdir()
    agent = Agent(env_for(proxy, namespace, fleet, BUFFER_DIR=str(buf)),
                  wrap=bwrap("--ro-bind", str(buf), str(buf))).start()
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        agent.wait_cycles(3, timeout=20)
        assert agent.metric("buffer_disk_writable") == 0
        sigterm_wrapped(agent)
        assert agent.wait(20) == 0
    finally:
        agent.kill()
    assert len(agent.messages(WRITE_FAILED)) == 1
    assert all(c["published"] == c["datums"] for c in agent.cycles())
    lost, _, _, _ = account(reader, namespace, fleet, started - datetime.timedelta(seconds=5),
                            datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5))
    assert lost == []
    assert list(buf.iterdir()) == []


def test_a_second_agent_on_one_buffer_directory_exits_78(localstack, fleet, namespace, tmp_path):
    env = agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12), SCHEDULE="*/5 * * * * *",
                    BUFFER_DIR=str(tmp_path / "shared"), COST_RESOURCES="none")
    first = Agent(env).start()
    try:
        first.wait_cycles(1, timeout=20)
        second = Agent(dict(env, HEALTH_ADDR="")).start()
        assert second.wait(20) == 78
        [line] = [l for l in second.logs() if l.get("level") == "ERROR"]
        assert str(tmp_path / "shared") in line["message"] and "another running agent" in line["message"]
        assert line["variables"] == "BUFFER_DIR"
        first.signal(signal.SIGTERM)
        assert first.wait(20) == 0
    finally:
        first.kill()


def test_the_disk_buffer_variables_are_checked(tmp_path):
    env = agent_env("http://127.0.0.1:9", "E2E/x", BUFFER_DIR="relative/dir", BUFFER_MAX_BYTES="lots")
    agent = Agent(env, args=["--once"])
    assert agent.run(20) == 78
    [line] = [l for l in agent.logs() if l.get("level") == "ERROR"]
    assert line["variables"] == "BUFFER_DIR,BUFFER_MAX_BYTES"
    assert "an absolute path" in line["message"] and "64KiB to 1TiB" in line["message"]
    # A path that cannot be a directory.
    (tmp_path / "file").write_text("")
    agent = Agent(agent_env("http://127.0.0.1:9", "E2E/x", BUFFER_DIR=str(tmp_path / "file")), args=["--once"])
    assert agent.run(20) == 78
    assert "Fix: mount a writable volume there" in agent.logs()[-1]["message"]


def test_kill_9_needs_no_cleanup_before_the_next_start(localstack, fleet, namespace, tmp_path):
    """The lock dies with the process: a restart after kill -9 is never refused."""
    env = agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12), SCHEDULE="* * * * * *",
                    BUFFER_DIR=str(tmp_path / "b"), COST_RESOURCES="none")
    for _ in range(3):
        agent = Agent(env).start()
        agent.wait_cycles(1, timeout=20)
        agent.proc.send_signal(signal.SIGKILL)
        agent.wait(10)
    agent = Agent(env).start()
    try:
        agent.wait_cycles(1, timeout=20)
        agent.signal(signal.SIGTERM)
        assert agent.wait(20) == 0
    finally:
        agent.kill()
    assert len(agent.messages("buffer directory opened; what it holds goes out first")) == 1
