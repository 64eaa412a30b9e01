#!/usr/bin/env python3
"""A fleet of agents against one account's PutMetricData quota, simulated on one machine.

N real agent processes on one schedule probe one sample plugin and publish to LocalStack
through the fault proxy, which admits at most RATE requests a second and answers the rest with
the Throttling error CloudWatch sends over its quota. One run with the splay off
(PUBLISH_SPLAY=0) and one with it on; each reports:

- the requests the proxy saw, how many it throttled, and the busiest second's demand;
- retries: requests beyond one per publish;
- the delay from each tick to the moment that cycle's datums were all accepted (p50, p99);
- datums lost: every agent's cycles are read back from LocalStack (CycleDuration's
  SampleCount per agent, and PluginHealthy's in total) and compared with the cycles run;
- the agents' total RSS.

`make simulate` runs it at 100 agents and rewrites the figures in docs/scale.md;
tests/e2e/test_scale.py runs it smaller in `make test`.
"""

import argparse
import datetime
import json
import os
import re
import signal
import sys
import time
import uuid

from harness import ROOT, Agent, FaultProxy, Fleet, LocalStack, Reader, agent_env, parse_ts, stamps, wait_for

DOC = ROOT / "docs" / "scale.md"


def fraction(agent_name, host):
    """src/splay.rs's `fraction`, for the model: FNV-1a, then SplitMix64's finalizer."""
    h = 0xCBF29CE484222325
    for b in agent_name.encode() + b"\0" + host.encode():
        h = ((h ^ b) * 0x100000001B3) & (2**64 - 1)
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & (2**64 - 1)
    h ^= h >> 31
    return (h >> 11) / float(1 << 53)


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def on_tick(stamp, interval):
    return stamp.timestamp() % interval == 0


def steady(cycles, interval, steady_from):
    """The cycles of scheduled ticks from `steady_from` on: not the cycle every agent runs at
    start (stamped on a tick's second by chance, it has less room to wait in)."""
    return [c for c in cycles if on_tick(parse_ts(c["cycle_timestamp"]), interval)
            and parse_ts(c["cycle_timestamp"]).timestamp() >= steady_from]


def simulate(localstack, fleet, agents, rate, splay, ticks, interval, binary=None):
    """One run: `agents` processes on `*/interval` seconds, `ticks` scheduled cycles each."""
    namespace = f"Sim/{uuid.uuid4().hex[:10]}"
    proxy = FaultProxy(localstack.port).start()
    proxy.keep_bodies = True
    proxy.set("pass", rate=rate)
    target = f"us-east-1=http://127.0.0.1:{fleet.port('us-east-1')}"
    procs = []
    try:
        for i in range(agents):
            env = agent_env(proxy.url, namespace, PLUGIN_TARGETS=target, COST_RESOURCES="none",
                            SCHEDULE=f"*/{interval} * * * * *", PUBLISH_SPLAY=splay,
                            AGENT_NAME=f"sim-{i:04d}", HEALTH_ADDR="", TARGET_TIMEOUT="2s",
                            # Each agent signs with its own key id: the proxy tells their
                            # requests apart by it (LocalStack's account is the same for all).
                            AWS_ACCESS_KEY_ID=f"SIM{i:04d}",
                            # The whole fleet flushes at once at the stop, through the quota:
                            # room for that on a loaded machine, so exit 0 means nothing lost.
                            SHUTDOWN_TIMEOUT="60s")
            procs.append(Agent(env, binary=binary).start())
        started = time.time()
        # The steady state is measured from the first tick after every agent runs until the
        # stop: not the start-up cycles, nor the whole fleet's final flush at SIGTERM.
        steady_from = (int(started) // interval + 1) * interval

        def ticked():
            return [steady(a.cycles(), interval, steady_from) for a in procs]

        wait_for(lambda: all(len(t) >= ticks for t in ticked()), ticks * interval + 60,
                 f"{ticks} scheduled cycles of every agent")
        rss_kib = sum(rss_of(a.proc.pid) for a in procs)
        stopped = time.time()
        codes = []
        for a in procs:
            a.signal(signal.SIGTERM)
        for a in procs:
            codes.append(a.wait(90))
    finally:
        for a in procs:
            a.kill()
        proxy.stop()

    delays, late, cycles_by_agent, dropped, publishes, waits = [], [], {}, 0, 0, {}
    # Each agent's offset by the model (src/splay.rs's hash of AGENT_NAME and the host name,
    # re-implemented above), against when its first request of each planned tick reached
    # the proxy: measured outside the agent, not read from its own log.
    with open("/proc/sys/kernel/hostname") as f:
        host = f.read().strip()
    bound = interval * (float(splay.rstrip("%")) / 100 if splay.endswith("%") else 0.0)
    sends = {}
    # Each request's key id and the datum timestamps it carried, read once.
    carried = [(t, key, stamps(body)) for t, key, body in proxy.arrivals if body]
    for i, a in enumerate(procs):
        cycles = a.cycles()
        cycles_by_agent[f"sim-{i:04d}"] = {parse_ts(c["cycle_timestamp"]) for c in cycles}
        dropped += sum(c.get("dropped", 0) for c in cycles)
        # First attempts in the steady window: one per publishing cycle.
        publishes += sum(1 for c in cycles if c.get("calls", 0) > 0
                         and parse_ts(c["cycle_timestamp"]).timestamp() >= steady_from)
        # The ticks every agent had finished before the stop: a cycle of a later tick may
        # have had its wait cut short by the SIGTERM, and sent at once, as documented.
        planned = {id(c) for c in steady(cycles, interval, steady_from)[:ticks]}
        for j, c in enumerate(cycles):
            stamp = parse_ts(c["cycle_timestamp"])
            if not on_tick(stamp, interval) or c["datums"] == 0:
                continue
            if id(c) in planned:
                # When it sent, after the tick: collection (which varies with load) plus the wait.
                waits.setdefault(f"sim-{i:04d}", []).append((c["splay_ms"], (c["collect_ms"] + c["splay_ms"]) / 1000))
                # The cycle's first request: the first of this agent's that carries a datum
                # stamped with the tick, so a late retry of the cycle before is not taken for it.
                tick = stamp.timestamp()
                first = min((t for t, key, sent in carried if key == f"SIM{i:04d}" and tick in sent),
                            default=None)
                sends.setdefault(f"sim-{i:04d}", []).append(
                    (fraction(f"sim-{i:04d}", host) * bound, None if first is None else first - tick))
            # Accepted when a cycle from this one on ended with nothing queued; the self
            # metrics a cycle leaves behind are pushed after its line, so they do not count.
            done = next((d for d in cycles[j:] if d["queued"] == 0), None)
            if done is not None:
                delay = (parse_ts(done["timestamp"]) - stamp).total_seconds()
                delays.append(delay)
                # What throttling and retries added beyond the splay's deliberate wait.
                late.append(delay - c["splay_ms"] / 1000)
    reader = Reader(localstack.url)
    start = datetime.datetime.fromtimestamp(started - 120, datetime.timezone.utc)
    end = datetime.datetime.fromtimestamp(stopped + 120, datetime.timezone.utc)
    health = samples(reader, namespace, "PluginHealthy", {"Region": "us-east-1"}, start, end)
    # A cycle is lost when its own stamp is missing from its agent's series: counts alone
    # would let a retried duplicate stand in for a lost cycle.
    lost_cycles = sum(len(own - stamps_read(reader, namespace, name, own))
                      for name, own in cycles_by_agent.items())
    events = [e for e in proxy.events if e[1] in ("passed", "throttle") and steady_from <= e[0] < stopped]
    per_second = {}
    for t, _ in events:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    return {
        "agents": agents, "rate": rate, "splay": splay, "interval": interval,
        "cycles": sum(len(own) for own in cycles_by_agent.values()),
        "requests": len(events),
        "throttled": sum(1 for e in events if e[1] == "throttle"),
        "accepted": sum(1 for e in events if e[1] == "passed"),
        "retries": len(events) - publishes,
        "all_requests": sum(1 for e in proxy.events if e[1] in ("passed", "throttle")),
        "peak_demand": max(per_second.values(), default=0),
        "p50": percentile(delays, 50), "p99": percentile(delays, 99),
        "late_p50": percentile(late, 50), "late_p99": percentile(late, 99),
        "lost_cycles": lost_cycles,
        "datums_dropped": dropped,
        "health_samples": health,
        "exit_codes": sorted(set(codes)),
        "rss_mib": rss_kib / 1024,
        "waits": waits,
        "sends": sends,
    }


def stamps_read(reader, namespace, agent, own):
    """The timestamps of an agent's CycleDuration datums in CloudWatch between the first and
    last of `own` (its cycles' stamps), read in windows of a minute at most (LocalStack
    answers long windows of 1-second periods slowly)."""
    if not own:
        return set()
    out, t, end = set(), min(own), max(own) + datetime.timedelta(seconds=1)
    while t < end:
        stop = min(t + datetime.timedelta(seconds=60), end)
        out |= {p[0] for p in reader.points(namespace, "CycleDuration", {"Agent": agent}, t, stop)}
        t = stop
    return out


def samples(reader, namespace, name, dims, start, end):
    r = reader.cw.get_metric_statistics(
        Namespace=namespace, MetricName=name, Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=start, EndTime=end, Period=60, Statistics=["SampleCount"])
    return int(sum(p["SampleCount"] for p in r["Datapoints"]))


def rss_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def model(agents, interval, share, calls_per_agent=1):
    """The busiest second when `agents` send `calls_per_agent` calls each at the offsets the
    splay gives them (the real hash over ECS-style host names): demand at the peak."""
    if share == 0:
        return agents * calls_per_agent
    bound = interval * share
    seconds = {}
    for i in range(agents):
        host = f"ip-10-{i >> 16 & 255}-{i >> 8 & 255}-{i & 255}"
        s = int(fraction("cloudwatch-publisher", host) * bound)
        seconds[s] = seconds.get(s, 0) + calls_per_agent
    return max(seconds.values())


def table(runs):
    head = ("| splay | agents | quota (req/s) | requests | throttled | retries | busiest second | "
            "tick to accepted p50 / p99 | beyond the splay's wait p50 / p99 | cycles | lost | total RSS |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = "".join(
        f"| `{r['splay']}` | {r['agents']} | {r['rate']} | {r['requests']} | {r['throttled']} | {r['retries']} | "
        f"{r['peak_demand']} | {r['p50']:.1f} s / {r['p99']:.1f} s | {r['late_p50']:.1f} s / {r['late_p99']:.1f} s | "
        f"{r['cycles']} | {r['lost_cycles']} | "
        f"{r['rss_mib']:.0f} MiB |\n" for r in runs)
    return head + rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=100)
    p.add_argument("--rate", type=int, default=20, help="requests a second the proxy admits")
    p.add_argument("--ticks", type=int, default=6)
    p.add_argument("--interval", type=int, default=10, help="seconds between ticks")
    p.add_argument("--splay", default="50%", help="PUBLISH_SPLAY of the run with the splay on")
    p.add_argument("--binary", default=None, help="the agent to run (default: the static release build)")
    p.add_argument("--no-doc", action="store_true", help="print only; leave docs/scale.md alone")
    args = p.parse_args()
    ls = LocalStack().start()
    fleet = Fleet().start()
    try:
        binary = args.binary or os.environ.get("AGENT_STATIC_BIN")
        runs = [simulate(ls, fleet, args.agents, args.rate, splay, args.ticks, args.interval, binary)
                for splay in ("0", args.splay)]
    finally:
        fleet.stop()
        ls.stop()
    text = table(runs)
    print(text)
    print(json.dumps([{k: v for k, v in r.items() if k not in ("waits", "sends")} for r in runs], indent=1))
    if not args.no_doc:
        doc = DOC.read_text()
        stamp = datetime.date.today().isoformat()
        block = (f"<!-- FIGURES:simulate -->\n`make simulate` on {stamp}: {args.agents} agents on "
                 f"`*/{args.interval} * * * * *`, the proxy admitting {args.rate} requests a second.\n\n"
                 f"{text}<!-- /FIGURES:simulate -->")
        DOC.write_text(re.sub(r"<!-- FIGURES:simulate -->.*?<!-- /FIGURES:simulate -->", block, doc, flags=re.S))


if __name__ == "__main__":
    sys.exit(main())
