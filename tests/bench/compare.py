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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import outage, scheduled  # noqa: E402
from harness import Exporter, FaultProxy, Fleet, LocalStack, agent_env, free_port  # noqa: E402

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


def down(binary, proxy, exporter):
    d = outage(proxy, exporter, binary=binary)
    return {"bytes per queued datum": d["bytes_per_datum"], "CPU per cycle, full queue (ms)": d["cpu_full"] * 1000}


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
                r.update(down(binary, proxy, exporter))
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
    print("| figure | baseline | candidate | candidate / baseline |\n|---|---|---|---|")
    for k in rows:
        b, c = pick[base][k], pick[cand][k]
        print(f"| {k} | {b:,.1f} | {c:,.1f} | {c / b:.2f}x |")
    size_b, size_c = base.stat().st_size, cand.stat().st_size
    print(f"| binary bytes | {size_b:,} | {size_c:,} | {size_c / size_b:.3f}x |")


if __name__ == "__main__":
    main()
