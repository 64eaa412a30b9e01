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
from harness import ROOT, Agent, FaultProxy, Fleet, LocalStack, agent_env  # noqa: E402

SCRATCH = ROOT / "target" / "measure-buffer"
HOST = os.popen("rustc -vV").read().split("host: ")[1].split()[0]
BINARY = Path(os.environ.get("AGENT_BIN", ROOT / "target" / HOST / "release" / "cloudwatch-publisher"))
CYCLES = int(os.environ.get("CYCLES", 40))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def per_cycle(env):
    """(CPU seconds per cycle, mean cycle wall ms) over CYCLES cycles after 5 to settle."""
    agent = Agent(env, binary=BINARY).start()
    try:
        agent.wait_cycles(5, timeout=30)
        cpu0, n0 = cpu_seconds(agent.proc.pid), len(agent.cycles())
        agent.wait_cycles(n0 + CYCLES, timeout=CYCLES * 3)
        cpu1, n1 = cpu_seconds(agent.proc.pid), len(agent.cycles())
        walls = [c["duration_ms"] for c in agent.cycles()[n0:n1]]
        agent.signal(signal.SIGTERM)
        agent.wait(20)
    finally:
        agent.kill()
    return (cpu1 - cpu0) / (n1 - n0), sum(walls) / len(walls)


def main():
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    ls = LocalStack().start()
    fleet = Fleet().start()
    proxy = FaultProxy(ls.port).start()
    out = {}
    try:
        base = dict(PLUGIN_PORTS=fleet.ports_spec(12), SCHEDULE="* * * * * *")
        mem_cpu, mem_wall = per_cycle(agent_env(ls.url, "Measure/Memory", **base))
        disk_cpu, disk_wall = per_cycle(agent_env(ls.url, "Measure/Disk", BUFFER_DIR=str(SCRATCH / "steady"), **base))
        out["CPU per cycle, memory buffer (baseline)"] = f"{mem_cpu * 1000:.2f} ms"
        out["CPU per cycle, BUFFER_DIR"] = f"{disk_cpu * 1000:.2f} ms ({disk_cpu / mem_cpu:.2f}x)"
        out["wall per cycle, memory buffer (baseline)"] = f"{mem_wall:.1f} ms"
        out["wall per cycle, BUFFER_DIR"] = f"{disk_wall:.1f} ms ({disk_wall / mem_wall:.2f}x)"

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

        # The backlog read back and sent at start, against a cycle with nothing waiting.
        proxy.set("pass")
        agent = Agent(env, binary=BINARY).start()
        try:
            agent.wait_cycles(3, timeout=60)
            first, later = agent.cycles()[0], agent.cycles()[2]
            agent.signal(signal.SIGTERM)
            agent.wait(30)
        finally:
            agent.kill()
        out["first cycle after the outage (backlog sent)"] = (
            f"{first['duration_ms']} ms, {first['published']} datums in {first['calls']} calls")
        out["a later cycle (baseline)"] = f"{later['duration_ms']} ms, {later['published']} datums"
        out["backlog cycle vs baseline"] = f"{first['duration_ms'] / max(later['duration_ms'], 1):.1f}x"
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
