#!/usr/bin/env python3
"""`make measure-buffer`: what the disk buffer costs, each figure beside its baseline from
the same run on the same machine.

- CPU (user + system, from /proc) and wall time per cycle in scheduled mode, every second,
  against the 12-port fleet with the default basket, publishing to LocalStack: without
  BUFFER_DIR (the baseline) and with it on this machine's disk under target/;
- disk bytes per datum: what an outage leaves in BUFFER_DIR, over the datums it holds;
- time to read a backlog back at start: the first cycle after the outage, against a cycle
  with nothing waiting.

Uses the release binary (AGENT_BIN, default the static one `make static` builds).
"""

import os
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import ROOT, Agent, FaultProxy, Fleet, LocalStack, agent_env, on_cpu  # noqa: E402

SCRATCH = ROOT / "target" / "measure-buffer"
HOST = os.popen("rustc -vV").read().split("host: ")[1].split()[0]
BINARY = Path(os.environ.get("AGENT_BIN", ROOT / "target" / HOST / "release" / "cloudwatch-publisher"))
CYCLES = int(os.environ.get("CYCLES", 40))


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def per_cycle(env):
    """(CPU seconds per cycle, mean cycle wall ms, median write-ahead µs) over CYCLES cycles
    after 5 to settle."""
    agent = Agent(env, binary=BINARY).start()
    try:
        agent.wait_cycles(5, timeout=30)
        cpu0, n0 = on_cpu(agent.proc.pid), len(agent.cycles())
        agent.wait_cycles(n0 + CYCLES, timeout=CYCLES * 3)
        cpu1, n1 = on_cpu(agent.proc.pid), len(agent.cycles())
        walls = [c["duration_ms"] for c in agent.cycles()[n0:n1]]
        writes = [c["buffer_write_us"] for c in agent.cycles()[n0:n1]]
        agent.signal(signal.SIGTERM)
        agent.wait(20)
    finally:
        agent.kill()
    return (cpu1 - cpu0) / (n1 - n0), sum(walls) / len(walls), median(writes)


def main():
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    ls = LocalStack().start()
    fleet = Fleet().start()
    proxy = FaultProxy(ls.port).start()
    out = {}
    try:
        base = dict(PLUGIN_PORTS=fleet.ports_spec(12), SCHEDULE="* * * * * *")
        mem_cpu, mem_wall, mem_write = per_cycle(agent_env(ls.url, "Measure/Memory", **base))
        disk_cpu, disk_wall, disk_write = per_cycle(
            agent_env(ls.url, "Measure/Disk", BUFFER_DIR=str(SCRATCH / "steady"), **base))
        out["CPU per cycle, memory buffer (baseline)"] = f"{mem_cpu * 1000:.2f} ms"
        out["CPU per cycle, BUFFER_DIR"] = f"{disk_cpu * 1000:.2f} ms ({disk_cpu / mem_cpu:.2f}x)"
        out["wall per cycle, memory buffer (baseline)"] = f"{mem_wall:.1f} ms"
        out["wall per cycle, BUFFER_DIR"] = f"{disk_wall:.1f} ms ({disk_wall / mem_wall:.2f}x)"
        out["write-ahead per cycle (median), memory buffer (baseline)"] = f"{mem_write} µs"
        out["write-ahead per cycle (median), BUFFER_DIR (write + fdatasync)"] = (
            f"{disk_write} µs ({disk_write / max(mem_write, 1):.0f}x)")

        # An outage: what the directory holds per datum.
        outage_dir = SCRATCH / "outage"
        proxy.set("refuse")
        env = agent_env(proxy.url, "Measure/Outage", BUFFER_DIR=str(outage_dir), SELF_METRICS="false", **base)
        agent = Agent(env, binary=BINARY).start()
        try:
            agent.wait_cycles(20, timeout=60)
            agent.signal(signal.SIGTERM)
            agent.wait(30)
        finally:
            agent.kill()
        datums = sum(c["datums"] for c in agent.cycles())
        on_disk = sum(p.stat().st_size for p in outage_dir.glob("*.seg"))
        out["datums buffered by the outage"] = f"{datums} in {len(agent.cycles())} cycles"
        out["disk bytes per datum"] = f"{on_disk / datums:.1f} B ({on_disk} B in all)"

        # The backlog read back and sent after a restart, oldest first.
        proxy.set("pass")
        agent = Agent(env, binary=BINARY).start()
        try:
            agent.wait_cycles(1, timeout=60)
            while not any(c["queued"] == 0 for c in agent.cycles()):
                time.sleep(0.2)
            cycles = agent.cycles()
            agent.signal(signal.SIGTERM)
            agent.wait(30)
        finally:
            agent.kill()
        drained = next(i for i, c in enumerate(cycles) if c["queued"] == 0) + 1
        calls = sum(c["calls"] for c in cycles[:drained])
        published = sum(c["published"] for c in cycles[:drained])
        out["backlog after the restart"] = (
            f"{published} datums sent in {drained} cycles, {calls} calls (floor {-(-published // 1000)})")
    finally:
        proxy.stop()
        fleet.stop()
        ls.stop()
    width = max(map(len, out))
    print(f"\nmachine: {os.cpu_count()} cores; binary {BINARY}; {CYCLES} cycles each")
    for k, v in out.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
