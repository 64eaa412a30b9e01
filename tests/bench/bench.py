#!/usr/bin/env python3
"""`make bench`, whole-process part: the agent's footprint and speed, at scale and beside
what users would run instead, all in one run on this machine; writes the figures into
docs/performance.md between its FIGURES markers. (`cargo bench` measures the pure stages;
`make bench` runs both.)

- the fleet cycle in scheduled mode: CPU (scheduler on-CPU time, all threads) and wall time
  per cycle over many cycles, peak and steady RSS, against the 12-port v0.1.8 fleet with the
  default basket and the health listener on, publishing to LocalStack;
- `--once`: CPU and wall, process start included; start to first PutMetricData;
- the binary's size;
- scale: a synthetic exporter of 1k, 10k and 100k series (gauges, counters, histograms),
  sent to a stand-in CloudWatch that answers at once (the fault proxy's `accept`: LocalStack
  takes about a second per 1000-datum request, which would measure LocalStack), and at 1k and
  10k to LocalStack too: calls and request bytes per cycle, CPU and RSS per cycle, and the
  exponent of their growth with N;
- memory while CloudWatch is down: RSS per queued datum, and CPU per cycle with an empty
  and a full queue;
- side by side, in the same run: the fleet cycle as cron + curl + the aws CLI, and as a
  short boto3 script; the 10k-series scrape as a short prometheus_client + boto3 script.
"""

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from harness import ROOT, Agent, Exporter, FaultProxy, Fleet, LocalStack, agent_env, free_port, on_cpu  # noqa: E402

HOST = subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout.split("host: ")[1].split()[0]
BINARY = Path(os.environ.get("AGENT_BIN", ROOT / "target" / HOST / "release" / "cloudwatch-publisher"))
VENV_BIN = ROOT / ".venv" / "bin"
BASKET = "ec2:t3.micro ec2:m5.large ebs:gp3?size=100"
DOC = ROOT / "docs" / "performance.md"
CYCLES = int(os.environ.get("CYCLES", 30))


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child_usage(args, env, capture=False):
    """Runs one process to its end: (CPU seconds, peak RSS KiB, wall seconds, stdout), from
    its own wait4 rusage, which covers the processes it waited for (the CLI runs of a
    script) and no one else."""
    started = time.monotonic()
    p = subprocess.Popen([str(a) for a in args], env=env, stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
    out = p.stdout.read().decode() if capture else ""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, (args, p.returncode)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss, time.monotonic() - started, out


def scheduled(env, cycles, settle=3, timeout_per_cycle=5, proxy=None, binary=None):
    """Runs the agent on its schedule: per-cycle CPU, mean wall ms, peak and steady RSS KiB,
    calls and request bytes per cycle (from the proxy, if given)."""
    agent = Agent(env, binary=binary or BINARY).start()
    try:
        agent.wait_cycles(settle, timeout=60 + settle * timeout_per_cycle)
        cpu0, n0 = on_cpu(agent.proc.pid), len(agent.cycles())
        req0 = proxy.count("requests") if proxy else 0
        bytes0 = proxy.count("body_bytes") if proxy else 0
        agent.wait_cycles(n0 + cycles, timeout=cycles * timeout_per_cycle + 60)
        cpu1, n1 = on_cpu(agent.proc.pid), len(agent.cycles())
        peak, steady = status_kib(agent.proc.pid, "VmHWM"), status_kib(agent.proc.pid, "VmRSS")
        calls = ((proxy.count("requests") - req0) / (n1 - n0)) if proxy else None
        body = ((proxy.count("body_bytes") - bytes0) / (n1 - n0)) if proxy else None
        done = agent.cycles()[n0:n1]
        agent.signal(signal.SIGTERM)
        agent.wait(30)
    finally:
        agent.kill()
    return {"cpu": (cpu1 - cpu0) / (n1 - n0), "wall_ms": sum(c["duration_ms"] for c in done) / len(done),
            "peak_kib": peak, "steady_kib": steady, "calls": calls, "body_bytes": body,
            "datums": sum(c["datums"] for c in done) / len(done),
            "agent_calls": sum(c["calls"] for c in done) / len(done)}


def slope(points):
    """The exponent b of y = a N^b, least squares on logs."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(max(y, 1e-9)) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def outage(proxy, exporter, binary=None):
    """Memory while CloudWatch is down: 2000 datums a cycle every second, the proxy answering
    500, until the queue is full: RSS per queued datum, and CPU per cycle with a short and a
    full queue."""
    exporter.control("/scale", n=2000)
    proxy.set("error500")
    env = agent_env(proxy.url, "Bench/Down", PLUGIN_PORTS="none", SCRAPE_TARGETS=exporter.url,
                    MAX_SERIES_PER_TARGET="100000", SCHEDULE="* * * * * *", SELF_METRICS="false")
    agent = Agent(env, binary=binary or BINARY).start()
    try:
        agent.wait_cycles(3, timeout=30)
        rss_empty = status_kib(agent.proc.pid, "VmRSS")
        cpu0, n0 = on_cpu(agent.proc.pid), len(agent.cycles())
        agent.wait_cycles(n0 + 5, timeout=60)
        cpu_early = (on_cpu(agent.proc.pid) - cpu0) / (len(agent.cycles()) - n0)
        deadline = time.time() + 120
        while agent.cycles()[-1]["queued"] < 50_000 and time.time() < deadline:
            time.sleep(0.5)
        n1 = len(agent.cycles())
        agent.wait_cycles(n1 + 2, timeout=30)
        rss_full, queued = status_kib(agent.proc.pid, "VmRSS"), agent.cycles()[-1]["queued"]
        cpu1, n2 = on_cpu(agent.proc.pid), len(agent.cycles())
        agent.wait_cycles(n2 + 5, timeout=60)
        cpu_full = (on_cpu(agent.proc.pid) - cpu1) / (len(agent.cycles()) - n2)
        peak = status_kib(agent.proc.pid, "VmHWM")
    finally:
        agent.kill()
        proxy.set("pass")
    return {"rss_empty_kib": rss_empty, "rss_full_kib": rss_full, "queued": queued,
            "bytes_per_datum": (rss_full - rss_empty) * 1024 / max(queued, 1),
            "cpu_early": cpu_early, "cpu_full": cpu_full, "peak_kib": peak}


def main():
    figures = {}
    ls = LocalStack().start()
    fleet = Fleet().start()
    proxy = FaultProxy(ls.port, port=free_port()).start()
    exporter = Exporter().start()
    aws_env = {"AWS_ENDPOINT_URL": ls.url, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true",
               "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    try:
        figures["binary_bytes"] = BINARY.stat().st_size
        fleet_env = dict(PLUGIN_PORTS=fleet.ports_spec(12), SCHEDULE="* * * * * *")

        # The fleet cycle, scheduled.
        f = scheduled(agent_env(ls.url, "Bench/Fleet", **fleet_env), CYCLES)
        figures["fleet"] = f

        # --once: process start included.
        once_env = agent_env(ls.url, "Bench/Once", PLUGIN_PORTS=fleet.ports_spec(12), HEALTH_ADDR="")
        runs = [child_usage([BINARY, "--once"], once_env) for _ in range(5)]
        figures["once"] = {"cpu": sorted(r[0] for r in runs)[2], "peak_kib": max(r[1] for r in runs),
                           "wall": sorted(r[2] for r in runs)[2]}

        # Start to first PutMetricData, against a ready fleet and a CloudWatch that answers at once.
        proxy.set("accept")
        firsts = []
        for _ in range(5):
            proxy.first_request = None
            env = agent_env(proxy.url, "Bench/Start", **fleet_env)
            started = time.time()
            agent = Agent(env, binary=BINARY).start()
            try:
                deadline = time.time() + 10
                while proxy.first_request is None and time.time() < deadline:
                    time.sleep(0.002)
                firsts.append(proxy.first_request - started)
            finally:
                agent.kill()
        figures["start_ms"] = sorted(firsts)[2] * 1000

        # Scale: the agent alone (a CloudWatch that answers at once), then LocalStack.
        scale = {}
        for n in (1_000, 10_000, 100_000):
            exporter.control("/scale", n=n)
            exporter.control("/reset")
            env = agent_env(proxy.url, f"Bench/Scale{n}", PLUGIN_PORTS="none", SCRAPE_TARGETS=exporter.url,
                            MAX_SERIES_PER_TARGET="100000", SCHEDULE="*/5 * * * * *", TARGET_TIMEOUT="4s",
                            SELF_METRICS="false")
            scale[n] = scheduled(env, 4, settle=2, timeout_per_cycle=6, proxy=proxy)
        figures["scale"] = scale
        proxy.set("pass")
        via_ls = {}
        for n in (1_000, 10_000):
            exporter.control("/scale", n=n)
            env = agent_env(proxy.url, f"Bench/ScaleLS{n}", PLUGIN_PORTS="none", SCRAPE_TARGETS=exporter.url,
                            MAX_SERIES_PER_TARGET="100000", SCHEDULE="*/15 * * * * *", TARGET_TIMEOUT="4s",
                            SELF_METRICS="false")
            via_ls[n] = scheduled(env, 2, settle=2, timeout_per_cycle=16, proxy=proxy)
        figures["scale_localstack"] = via_ls

        figures["down"] = outage(proxy, exporter)

        # Side by side: the fleet cycle as cron would run the alternatives.
        regions = fleet.describe()
        targets = [f"{d['port']}={r}" for r, d in regions.items()]
        bench = Path(__file__).parent
        env = dict(aws_env)
        classic = [child_usage(["sh", bench / "classic.sh", "Bench/Classic", BASKET, *targets], env)
                   for _ in range(3)]
        boto = [child_usage([VENV_BIN / "python", bench / "cron_boto3.py", "Bench/Boto3", BASKET, *targets], env)
                for _ in range(3)]
        figures["classic"] = {"cpu": sorted(r[0] for r in classic)[1], "peak_kib": max(r[1] for r in classic),
                              "wall": sorted(r[2] for r in classic)[1], "calls": len(targets)}
        figures["boto3"] = {"cpu": sorted(r[0] for r in boto)[1], "peak_kib": max(r[1] for r in boto),
                            "wall": sorted(r[2] for r in boto)[1], "calls": len(targets)}
        exporter.control("/scale", n=10_000)
        scrape = [child_usage([VENV_BIN / "python", bench / "scrape_boto3.py", "Bench/Scrape", exporter.url], env,
                              capture=True) for _ in range(2)]
        datums, calls = map(int, scrape[-1][3].split())
        figures["scrape_py"] = {"cpu": min(r[0] for r in scrape), "peak_kib": max(r[1] for r in scrape),
                                "wall": min(r[2] for r in scrape), "datums": datums, "calls": calls}
    finally:
        exporter.stop()
        proxy.stop()
        fleet.stop()
        ls.stop()
    write(figures)


def criterion_table():
    """The throughput lines of `cargo bench --bench pipeline` (target/criterion.txt)."""
    path = ROOT / "target" / "criterion.txt"
    if not path.exists():
        return ["(run `make bench` to measure)"]
    rows, name = [], None
    what = {"parse": "exposition lines parsed", "convert": "metrics converted",
            "validate_and_batch": "datums validated and batched", "sdk_datums": "SDK datums built",
            "record": "buffer record bytes"}
    for line in path.read_text().splitlines():
        m = re.match(r"^(\S+/\S+)", line)
        if m and not line.startswith(" "):
            name = m.group(1)
        t = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+)", line)
        if t and name:
            group, _, arg = name.partition("/")
            rows.append(f"| {what.get(group, group)} | {arg} | {t.group(1)} {t.group(2)} |")
            name = None
    return ["| stage | input | throughput (median) |", "|---|---|---|", *rows,
            "", f"From `benches/pipeline.rs`, same machine; N is the series in the synthetic exposition."]


def write(fig):
    f, once, sc, ls, down = fig["fleet"], fig["once"], fig["scale"], fig["scale_localstack"], fig["down"]
    classic, boto, spy = fig["classic"], fig["boto3"], fig["scrape_py"]
    mib = lambda kib: kib / 1024  # noqa: E731
    # Targets in MB are judged in decimal megabytes, the stricter reading.
    mb = lambda kib: kib * 1024 / 1e6  # noqa: E731
    cpu_exp = slope([(n, sc[n]["cpu"]) for n in sc])
    rss_exp = slope([(n, sc[n]["peak_kib"]) for n in sc])
    calls_exp = slope([(n, sc[n]["calls"]) for n in sc])
    floor = lambda d: -(-int(round(d)) // 1000)  # noqa: E731
    verdict = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    agent10k = sc[10_000]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on this machine: {os.cpu_count()} cores, "
        f"{os.uname().sysname} {os.uname().release}; release static binary `{BINARY.relative_to(ROOT)}`.",
        "",
        "### Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| CPU per fleet cycle, scheduled, at least 3000x below the aws CLI way (about 2 ms) | "
        f"{f['cpu'] * 1000:.2f} ms against {classic['cpu'] * 1000:.0f} ms: {classic['cpu'] / f['cpu']:.0f}x | "
        f"{verdict(classic['cpu'] / f['cpu'] >= 3000)} |",
        f"| peak RSS under 8 MB, scheduled, 12-port fleet, health listener on | {mb(f['peak_kib']):.2f} MB, "
        f"{mib(f['peak_kib']):.2f} MiB (steady {mib(f['steady_kib']):.1f} MiB) | {verdict(mb(f['peak_kib']) < 8)} |",
        f"| peak RSS under 64 MB at 100k series | {mb(sc[100_000]['peak_kib']):.1f} MB, "
        f"{mib(sc[100_000]['peak_kib']):.1f} MiB | {verdict(mb(sc[100_000]['peak_kib']) < 64)} |",
        f"| PutMetricData calls per cycle at the floor at every N | "
        + ", ".join(f"{n // 1000}k: {sc[n]['calls']:.1f} for {sc[n]['datums']:.0f} datums (floor {floor(sc[n]['datums'])})"
                    for n in sc)
        + f" | {verdict(all(abs(sc[n]['calls'] - floor(sc[n]['datums'])) < 0.5 for n in sc))} |",
        f"| 100k series converted and sent in under 1 CPU second per cycle | {sc[100_000]['cpu']:.2f} s | "
        f"{verdict(sc[100_000]['cpu'] < 1)} |",
        f"| start to first PutMetricData under 200 ms against a ready fleet | {fig['start_ms']:.0f} ms | "
        f"{verdict(fig['start_ms'] < 200)} |",
        f"| stripped release binary under 8 MB | {fig['binary_bytes'] / 1e6:.2f} MB "
        f"({fig['binary_bytes'] / 2**20:.2f} MiB) | {verdict(fig['binary_bytes'] < 8e6)} |",
        f"| at most 100 bytes of memory per queued datum (a full default queue under 16 MB) | "
        f"{down['bytes_per_datum']:.0f} B per datum: {down['queued']} queued took "
        f"{mib(down['rss_full_kib'] - down['rss_empty_kib']):.1f} MiB over {mib(down['rss_empty_kib']):.1f} MiB | "
        f"{verdict(down['bytes_per_datum'] <= 100)} |",
        f"| per-cycle work that does not grow with the queue | CPU per cycle {down['cpu_early'] * 1000:.1f} ms with "
        f"a short queue, {down['cpu_full'] * 1000:.1f} ms with a full one | "
        f"{verdict(down['cpu_full'] < 2 * down['cpu_early'] + 0.002)} |",
        "",
        "### The fleet cycle",
        "",
        "| | CPU per cycle | peak RSS | wall per cycle | PutMetricData calls |",
        "|---|---|---|---|---|",
        f"| agent, scheduled (every second, {CYCLES} cycles) | {f['cpu'] * 1000:.2f} ms | {mib(f['peak_kib']):.1f} MiB | "
        f"{f['wall_ms']:.0f} ms | {f['agent_calls']:.0f} |",
        f"| agent, `--once` (process start included) | {once['cpu'] * 1000:.1f} ms | {mib(once['peak_kib']):.1f} MiB | "
        f"{once['wall'] * 1000:.0f} ms | 2 |",
        f"| cron + curl + aws CLI, one put-metric-data per region | {classic['cpu'] * 1000:.0f} ms "
        f"({classic['cpu'] / f['cpu']:.0f}x) | {mib(classic['peak_kib']):.1f} MiB ({classic['peak_kib'] / f['peak_kib']:.1f}x) | "
        f"{classic['wall'] * 1000:.0f} ms | {classic['calls']} |",
        f"| cron + a boto3 script | {boto['cpu'] * 1000:.0f} ms ({boto['cpu'] / f['cpu']:.0f}x) | "
        f"{mib(boto['peak_kib']):.1f} MiB ({boto['peak_kib'] / f['peak_kib']:.1f}x) | {boto['wall'] * 1000:.0f} ms | "
        f"{boto['calls']} |",
        "",
        "### Scale: one Prometheus endpoint of N series",
        "",
        "Half gauges, three tenths counters, a fifth histograms (five buckets each, published as a "
        "distribution with its `_sum` and `_count`: three datums). To a CloudWatch stand-in that answers at "
        "once, so the figures are the agent's:",
        "",
        "| N | datums per cycle | calls per cycle (floor) | request bytes per cycle (gzip, as sent) | CPU per cycle | peak RSS | steady RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, s in sc.items():
        lines.append(f"| {n:,} | {s['datums']:,.0f} | {s['calls']:.1f} ({floor(s['datums'])}) | "
                     f"{s['body_bytes'] / 1e6:.2f} MB | {s['cpu'] * 1000:.0f} ms | {mib(s['peak_kib']):.1f} MiB | "
                     f"{mib(s['steady_kib']):.1f} MiB |")
    lines += [
        "",
        f"Growth with N (exponent b of a·N^b, 1k to 100k): CPU {cpu_exp:.2f}, calls {calls_exp:.2f}, "
        f"peak RSS {rss_exp:.2f} (the runtime's fixed few MB weigh on the small end).",
        "",
        "Through LocalStack:",
        "",
        "| N | calls per cycle (floor) | wall per cycle | CPU per cycle |",
        "|---|---|---|---|",
    ]
    for n, s in ls.items():
        lines.append(f"| {n:,} | {s['calls']:.1f} ({floor(s['datums'])}) | {s['wall_ms']:.0f} ms | {s['cpu'] * 1000:.0f} ms |")
    lines += [
        "",
        f"The 10k-series scrape by a short prometheus_client + boto3 script (every sample a datum, "
        f"buckets included): {spy['datums']:,} datums in {spy['calls']} calls, CPU {spy['cpu'] * 1000:.0f} ms "
        f"({spy['cpu'] / agent10k['cpu']:.1f}x the agent's {agent10k['cpu'] * 1000:.0f} ms), peak RSS "
        f"{mib(spy['peak_kib']):.1f} MiB ({spy['peak_kib'] / agent10k['peak_kib']:.1f}x), wall "
        f"{spy['wall'] * 1000:.0f} ms against LocalStack.",
        "",
        "### While CloudWatch is down",
        "",
        f"2000 datums a cycle every second, CloudWatch answering 500: the queue filled to {down['queued']:,} "
        f"(the `QUEUE_MAX_DATUMS` default); RSS went from {mib(down['rss_empty_kib']):.1f} MiB to "
        f"{mib(down['rss_full_kib']):.1f} MiB, **{down['bytes_per_datum']:.0f} bytes per queued datum**; peak "
        f"{mib(down['peak_kib']):.1f} MiB. CPU per cycle {down['cpu_early'] * 1000:.1f} ms early in the outage, "
        f"{down['cpu_full'] * 1000:.1f} ms with the queue full.",
    ]
    text = DOC.read_text()
    for marker, body in (("FIGURES", lines), ("CRITERION", criterion_table())):
        start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + start + "\n" + "\n".join(body) + "\n" + end + tail
    DOC.write_text(text)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
