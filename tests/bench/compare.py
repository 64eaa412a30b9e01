#!/usr/bin/env python3
"""`make bench-compare BASE=<rev>`: what a tuning bought, as before/after ratios from one run.

Measures two static release binaries side by side on this machine, the baseline built at
BASE and the candidate built from the work tree, each run alternately so that load on the
machine falls on both alike:

- the plugin-fleet cycle, scheduled every second against the 12-port fleet through
  LocalStack: CPU per cycle and peak RSS;
- a 100k-series scrape to a CloudWatch that answers at once: CPU per cycle and peak RSS;
- CloudWatch answering 500 while 2000 datums a cycle queue up to 50,000: RSS per queued
  datum.

Prints a table of figures and candidate/baseline ratios (lower is better for every row).
"""

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import scheduled, status_kib  # noqa: E402
from harness import Agent, Exporter, FaultProxy, Fleet, LocalStack, agent_env, free_port, on_cpu  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", 2))
CYCLES = int(os.environ.get("CYCLES", 20))


def fleet_cycle(binary, ls, fleet):
    env = agent_env(ls.url, "Compare/Fleet", PLUGIN_PORTS=fleet.ports_spec(12), SCHEDULE="* * * * * *")
    f = scheduled(env, CYCLES, binary=binary)
    return {"fleet CPU per cycle (ms)": f["cpu"] * 1000, "fleet peak RSS (KiB)": f["peak_kib"]}


def scale(binary, proxy, exporter, n=100_000):
    proxy.set("accept")
    exporter.control("/scale", n=n)
    exporter.control("/reset")
    env = agent_env(proxy.url, "Compare/Scale", PLUGIN_PORTS="none", SCRAPE_TARGETS=exporter.url,
                    MAX_SERIES_PER_TARGET=str(n), SCHEDULE="*/5 * * * * *", TARGET_TIMEOUT="4s",
                    SELF_METRICS="false")
    s = scheduled(env, 3, settle=2, timeout_per_cycle=6, proxy=proxy, binary=binary)
    proxy.set("pass")
    return {f"{n // 1000}k series CPU per cycle (ms)": s["cpu"] * 1000, f"{n // 1000}k series peak RSS (KiB)": s["peak_kib"]}


def outage(binary, proxy, exporter):
    exporter.control("/scale", n=2000)
    proxy.set("error500")
    env = agent_env(proxy.url, "Compare/Down", PLUGIN_PORTS="none", SCRAPE_TARGETS=exporter.url,
                    MAX_SERIES_PER_TARGET="100000", SCHEDULE="* * * * * *", SELF_METRICS="false")
    agent = Agent(env, binary=binary).start()
    try:
        agent.wait_cycles(3, timeout=30)
        empty = status_kib(agent.proc.pid, "VmRSS")
        deadline = time.time() + 120
        while agent.cycles()[-1]["queued"] < 50_000 and time.time() < deadline:
            time.sleep(0.5)
        n = len(agent.cycles())
        agent.wait_cycles(n + 2, timeout=30)
        full, queued = status_kib(agent.proc.pid, "VmRSS"), agent.cycles()[-1]["queued"]
        cpu0, n0 = on_cpu(agent.proc.pid), len(agent.cycles())
        agent.wait_cycles(n0 + 5, timeout=60)
        cpu = (on_cpu(agent.proc.pid) - cpu0) / (len(agent.cycles()) - n0)
        agent.signal(signal.SIGTERM)
    finally:
        agent.kill()
        proxy.set("pass")
    return {"bytes per queued datum": (full - empty) * 1024 / max(queued, 1),
            "CPU per cycle, full queue (ms)": cpu * 1000}


def main():
    base, cand = Path(sys.argv[1]), Path(sys.argv[2])
    ls = LocalStack().start()
    fleet = Fleet().start()
    proxy = FaultProxy(ls.port, port=free_port()).start()
    exporter = Exporter().start()
    results = {base: [], cand: []}
    try:
        for _ in range(ROUNDS):
            for binary in (base, cand):
                r = {}
                r.update(fleet_cycle(binary, ls, fleet))
                r.update(scale(binary, proxy, exporter))
                r.update(outage(binary, proxy, exporter))
                results[binary].append(r)
    finally:
        exporter.stop()
        proxy.stop()
        fleet.stop()
        ls.stop()
    rows = list(results[base][0])
    # The median of rounds, each figure on its own; with two rounds, the lower.
    pick = {b: {k: sorted(r[k] for r in rs)[(len(rs) - 1) // 2] for k in rows} for b, rs in results.items()}
    print(f"baseline  {base} ({base.stat().st_size:,} bytes)")
    print(f"candidate {cand} ({cand.stat().st_size:,} bytes)")
    print(f"| figure | baseline | candidate | candidate / baseline |\n|---|---|---|---|")
    for k in rows:
        b, c = pick[base][k], pick[cand][k]
        print(f"| {k} | {b:,.1f} | {c:,.1f} | {c / b:.2f}x |")
    size_b, size_c = base.stat().st_size, cand.stat().st_size
    print(f"| binary bytes | {size_b:,} | {size_c:,} | {size_c / size_b:.3f}x |")


if __name__ == "__main__":
    main()
