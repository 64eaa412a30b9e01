#!/usr/bin/env python3
"""`make measure`: the figures the closing notes carry, each beside a baseline measured in the
same run on the same machine.

- cold build time of the release binary (LTO, one codegen unit), against a cold dev build;
- release binary size, against a hello-world built with the same release profile; and the
  fully static build `make static` makes (what the image carries), against the dynamic one;
- peak RSS of the agent during a cycle against the 12-port fleet publishing to LocalStack,
  against the same cycle with a single port (what the runtime, SDK and client cost alone);
- cycle collection time against the slowest single target's latency, with every target slowed
  by a different amount (the agent probes concurrently, so collection should track the slowest,
  not the sum).

Pass --skip-build to reuse target/release (the build figures are then left out).
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import ROOT, Agent, Fleet, LocalStack, agent_env

SCRATCH = ROOT / "target" / "measure"


def cold_build(profile_args, target_dir):
    shutil.rmtree(target_dir, ignore_errors=True)
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
    started = time.monotonic()
    subprocess.run(["cargo", "build", "--locked", *profile_args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def hello_world_size():
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "src").mkdir()
        (d / "src" / "main.rs").write_text('fn main() { println!("hello"); }\n')
        manifest = (ROOT / "Cargo.toml").read_text()
        profile = manifest[manifest.index("[profile.release]"):]
        (d / "Cargo.toml").write_text(f'[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2024"\n\n{profile}')
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=d, check=True)
        return (d / "target" / "release" / "hello").stat().st_size


def peak_rss_kib(args, env, timeout=120):
    """Runs the binary and returns (exit code, VmHWM in KiB read just before it exits)."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.002)
    return proc.wait(timeout), peak


def probe_time(port):
    """How long one target takes for the agent's sequence: healthz, GetPluginInfo, then one
    round of cost queries (the agent sends the basket's queries at once)."""
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    urllib.request.urlopen(f"{base}/healthz", timeout=30).read()
    for method in ("GetPluginInfo", "GetProjectedCost"):
        req = urllib.request.Request(f"{base}/finfocus.v1.CostSourceService/{method}", data=b"{}",
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30).read()
        except urllib.error.HTTPError:
            pass  # an error answer still took the plugin's time
    return (time.monotonic() - started) * 1000


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--skip-build", action="store_true")
    args = p.parse_args()
    figures = {}

    if not args.skip_build:
        print("cold dev build (baseline)...", flush=True)
        dev = cold_build([], SCRATCH / "dev")
        print("cold release build...", flush=True)
        release = cold_build(["--release"], SCRATCH / "release")
        figures["cold_dev_build_s"] = round(dev, 1)
        figures["cold_release_build_s"] = round(release, 1)
        figures["release_vs_dev_build"] = round(release / dev, 2)
        binary = SCRATCH / "release" / "release" / "cloudwatch-publisher"
    else:
        subprocess.run(["cargo", "build", "--locked", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = ROOT / "target" / "release" / "cloudwatch-publisher"

    size = binary.stat().st_size
    hello = hello_world_size()
    figures["binary_bytes"] = size
    figures["binary_mib"] = round(size / 2**20, 2)
    figures["hello_world_bytes"] = hello
    figures["binary_vs_hello_world"] = round(size / hello, 1)
    host = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    host = next(l.split()[1] for l in host.splitlines() if l.startswith("host:"))
    static = ROOT / "target" / host / "release" / "cloudwatch-publisher"
    if static.exists():
        figures["static_binary_bytes"] = static.stat().st_size
        figures["static_vs_dynamic"] = round(static.stat().st_size / size, 2)
    else:
        print(f"{static} is missing (make static); its size is left out", flush=True)

    localstack = LocalStack().start()
    fleet = Fleet(layout="documented").start()
    try:
        env = agent_env(localstack.url, "Measure/Rss", PLUGIN_PORTS=fleet.ports_spec(12))
        one = dict(env, PLUGIN_PORTS=fleet.ports_spec(1))
        code_one, single = peak_rss_kib([str(binary), "--once"], one)
        code, cycle = peak_rss_kib([str(binary), "--once"], env)
        assert code == code_one == 0, "a measured cycle failed"
        figures["peak_rss_12_ports_kib"] = cycle
        figures["peak_rss_1_port_kib"] = single
        figures["rss_12_vs_1_port"] = round(cycle / single, 2)

        # Every region slowed by a different amount: 20 ms, 40 ms, ... 240 ms per request.
        for i, region in enumerate(fleet.regions):
            fleet.latency(region, 20 * (i + 1))
        per_target = [probe_time(fleet.port(r)) for r in fleet.regions]
        agent = Agent(env, args=["--once", "--dry-run"], binary=binary)
        assert agent.run(120) == 0
        collect_ms = json.loads([l for l in agent.stderr.splitlines() if "cycle complete" in l][0])["collect_ms"]
        figures["slowest_target_ms"] = round(max(per_target))
        figures["sum_of_targets_ms"] = round(sum(per_target))
        figures["cycle_collect_ms"] = collect_ms
        figures["collect_vs_slowest_target"] = round(collect_ms / max(per_target), 2)
        figures["collect_vs_sum_of_targets"] = round(collect_ms / sum(per_target), 2)
    finally:
        fleet.stop()
        localstack.stop()

    width = max(map(len, figures))
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
