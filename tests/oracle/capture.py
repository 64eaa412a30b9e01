#!/usr/bin/env python3
"""The oracle for the exposition parser: real text from real exporters, read by Python's
prometheus_client.

Starts Debian's prometheus-node-exporter and prometheus on free loopback ports, fetches each
one's /metrics as text format 0.0.4, and writes, into the directory given:
  NAME.txt   the body as served
  NAME.json  every sample prometheus_client reads from it: [name, {labels}, value, type],
             the value as text so NaN and the infinities survive JSON, the type its family's
The Rust test `sources::prometheus::parse::tests::the_parser_agrees_with_prometheus_client`
parses NAME.txt and must find exactly the same samples.
"""

import json
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ACCEPT = "text/plain;version=0.0.4"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            req = urllib.request.Request(url, headers={"Accept": ACCEPT})
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def value_text(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def exporters(workdir):
    node = free_port()
    prom = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(f"scrape_configs:\n  - job_name: node\n    scrape_interval: 1s\n"
                      f"    static_configs:\n      - targets: ['127.0.0.1:{node}']\n")
    return {
        "node_exporter": (["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{node}"],
                          f"http://127.0.0.1:{node}/metrics"),
        "prometheus": (["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prom}"],
                       f"http://127.0.0.1:{prom}/metrics"),
    }


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for binary in ("prometheus-node-exporter", "prometheus"):
        if not shutil.which(binary):
            sys.exit(f"{binary} is missing: `make oracle` installs it (apt-get install {binary})")
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        try:
            for name, (argv, url) in exporters(Path(tmp)).items():
                procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                              start_new_session=True))
                # Prometheus scrapes the node exporter once, so its own text has scrape series.
                time.sleep(0.5)
                body = fetch(url)
                if name == "prometheus":
                    time.sleep(2)
                    body = fetch(url)
                samples = [[s.name, s.labels, value_text(s.value), family.type]
                           for family in text_string_to_metric_families(body)
                           for s in family.samples]
                (out / f"{name}.txt").write_text(body)
                (out / f"{name}.json").write_text(json.dumps(samples))
                print(f"{name}: {len(body.splitlines())} lines, {len(samples)} samples")
        finally:
            for p in procs:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
