#!/usr/bin/env python3
"""A Prometheus exporter for the tests, whose every scrape moves by known amounts.

GET /metrics serves text format 0.0.4 (or gzip when asked and enabled). Scrape n (from 1):
  room_temperature_celsius{room="lab"}   21.5                       gauge
  requests_total{code="200"}             100 + 10 n                 counter
  latency_seconds_bucket{le="0.1"}       2 n                        histogram: each scrape adds
  latency_seconds_bucket{le="0.5"}       5 n                          2 in (0,0.1], 3 in (0.1,0.5]
  latency_seconds_bucket{le="+Inf"}      6 n                          and 1 above 0.5
  latency_seconds_sum / _count           1.5 n / 6 n
  rpc_seconds{quantile="0.5"|"0.99"}     0.2 | 0.9                  summary
  rpc_seconds_sum / _count               3 n / 10 n
  go_goroutines                          7                          untyped
  extra_series{i="0".."N-1"}             1                          with /extra?n=N

With /scale?n=N it serves instead N series of a large exporter: half gauges, three tenths
counters, a fifth histograms of five buckets (benches/pipeline.rs makes the same text), the
counters and histograms moving each scrape; a series becomes one CloudWatch datum a cycle.

The control port (POST) changes it: /mode?m=ok|down|hang|endless|trickle|reset|long_name
(endless: a body that never ends; trickle: a byte a second; reset: the connection reset
mid-body; long_name: one sample whose metric name is 25 MiB long),
/extra?n=N, /gzip?on=1,
/malformed?on=1 (adds unparseable lines), /reset (scrape count back to 0: counters reset),
/wide?n=N (instead, N gauges `wide_gauge` of 29 labels, each a 250-character name and a
1020-character value: about 37 KB a datum, the widest CloudWatch takes; 800 make a 30 MB body).

Hostile bodies, each the usual lines plus its attack (docs/reliability.md's Limits):
  /mode?m=labelbomb    a line of N labels, m{l0="v",...} 1 (/labels?n=N, default 300,000),
                       and L lines of 128 labels each, heavy but valid (/labels?lines=L)
  /mode?m=duplicates   instead of the usual lines, `d 1` 8,000,000 times, always gzip
                       (about 31 KB on the wire, 32,000,000 bytes inflated)
  /mode?m=spoof        the agent's own metric names: PluginHealthy{Region="us-east-1"},
                       ScrapeUp and ScrapeDuration{Target=<this URL>,Region="us-east-1"},
                       DatumsDropped and CycleDuration{Agent=<A>} (/spoof?agent=A)
  /mode?m=dupseries    dup_total{a="1"} 10 then dup_total{a="1"} 20 in every scrape
  /mode?m=negative     neg_total, a counter whose total is -1 then -3, -5... (-2n + 1)
  /mode?m=multigzip    the usual lines, each line its own gzip member (one body, many members)
"""

import argparse
import gzip
import socket
import ssl
import struct
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class State:
    def __init__(self):
        self.n = 0
        self.mode = "ok"
        self.extra = 0
        self.gzip = False
        self.malformed = False
        self.scale = 0
        self.wide = 0
        self.wide_body = None
        self.lock = threading.Lock()
        self.bomb_labels = 300_000
        self.bomb_lines = 0
        self.spoof_agent = "cloudwatch-publisher"
        self.url = ""
        self._cache = {}

    def cached(self, key, make):
        """Hostile bodies are megabytes: each made once."""
        with self.lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def hostile_body(self, mode):
        """A hostile mode's body, and whether it is gzip already."""
        if mode == "duplicates":
            return self.cached("duplicates", lambda: gzip.compress(b"d 1\n" * 8_000_000, 9)), True
        usual = self.body()
        if mode == "multigzip":
            # The usual body as a gzip member per line, as `gzip a; gzip b >> file` makes.
            return b"".join(gzip.compress(line + b"\n") for line in usual.splitlines()), True
        with self.lock:
            n = self.n
        if mode == "labelbomb":
            extra = self.cached(("bomb", self.bomb_labels, self.bomb_lines), self.label_bomb)
        elif mode == "spoof":
            extra = (f'PluginHealthy{{Region="us-east-1"}} 1\n'
                     f'ScrapeUp{{Target="{self.url}",Region="us-east-1"}} 1\n'
                     f'ScrapeDuration{{Target="{self.url}",Region="us-east-1"}} 1\n'
                     f'DatumsDropped{{Agent="{self.spoof_agent}"}} 0\n'
                     f'CycleDuration{{Agent="{self.spoof_agent}"}} 1\n').encode()
        elif mode == "dupseries":
            extra = b'# TYPE dup counter\ndup_total{a="1"} 10\ndup_total{a="1"} 20\n'
        else:  # negative
            extra = f"# TYPE neg counter\nneg_total {-2 * n + 1}\n".encode()
        return usual + extra, False

    def label_bomb(self):
        line = "m{" + "".join(f'l{i}="v",' for i in range(self.bomb_labels)) + "} 1\n"
        heavy = "heavy{" + "".join(f'l{i}="v",' for i in range(127))
        lines = "".join(f'{heavy}i="{i}"}} 1\n' for i in range(self.bomb_lines))
        return (line + lines).encode()

    def body(self):
        with self.lock:
            self.n += 1
            n = self.n
        if self.scale:
            return scale_body(self.scale, n).encode()
        if self.wide:
            with self.lock:
                if self.wide_body is None or self.wide_body[0] != self.wide:
                    self.wide_body = (self.wide, wide_body(self.wide))
                return self.wide_body[1]
        lines = [
            "# HELP room_temperature_celsius A room's temperature.",
            "# TYPE room_temperature_celsius gauge",
            'room_temperature_celsius{room="lab"} 21.5',
            "# TYPE requests_total counter",
            f'requests_total{{code="200"}} {100 + 10 * n}',
            "# TYPE latency_seconds histogram",
            f'latency_seconds_bucket{{le="0.1"}} {2 * n}',
            f'latency_seconds_bucket{{le="0.5"}} {5 * n}',
            f'latency_seconds_bucket{{le="+Inf"}} {6 * n}',
            f"latency_seconds_sum {1.5 * n}",
            f"latency_seconds_count {6 * n}",
            "# TYPE rpc_seconds summary",
            'rpc_seconds{quantile="0.5"} 0.2',
            'rpc_seconds{quantile="0.99"} 0.9',
            f"rpc_seconds_sum {3 * n}",
            f"rpc_seconds_count {10 * n}",
            "go_goroutines 7",
        ]
        lines += [f'extra_series{{i="{i}"}} 1' for i in range(self.extra)]
        if self.malformed:
            lines += ["broken{{{ 1", "no_value_here", 'bad{a="unterminated} 1']
        return ("\n".join(lines) + "\n").encode()


def scale_body(n, rnd):
    gauges, counters = n // 2, n * 3 // 10
    histograms = n - gauges - counters
    out = ["# TYPE scale_temperature gauge"]
    out += [f'scale_temperature{{sensor="s{i}",rack="r{i % 40}"}} {i % 90}.5' for i in range(gauges)]
    out.append("# TYPE scale_requests_total counter")
    out += [f'scale_requests_total{{handler="h{i}"}} {1000 + rnd * (i % 7 + 1)}' for i in range(counters)]
    out.append("# TYPE scale_latency_seconds histogram")
    r = rnd + 1
    for i in range(histograms):
        for le, c in (("0.01", 1), ("0.1", 3), ("1", 6), ("10", 8), ("+Inf", 9)):
            out.append(f'scale_latency_seconds_bucket{{route="p{i}",le="{le}"}} {c * r}')
        out.append(f'scale_latency_seconds_sum{{route="p{i}"}} {4.2 * r}')
        out.append(f'scale_latency_seconds_count{{route="p{i}"}} {9 * r}')
    return "\n".join(out) + "\n"


# The modes whose body is the usual one plus an attack on the Prometheus source.
HOSTILE_BODIES = ("labelbomb", "duplicates", "spoof", "dupseries", "negative", "multigzip")


def wide_body(n):
    names = [f"l{d:02d}_" + "n" * 246 for d in range(29)]
    fill = "v" * 1000
    out = ["# TYPE wide_gauge gauge"]
    for i in range(n):
        labels = ",".join(f'{k}="{i:019d}{fill}"' for k in names)
        out.append(f"wide_gauge{{{labels}}} {i}")
    return ("\n".join(out) + "\n").encode()


def handler_for(state):
    class Exporter(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            while state.mode == "hang":
                time.sleep(0.05)
            if urlparse(self.path).path != "/metrics":
                return self.reply(404, b"not found\n", "text/plain")
            if state.mode in ("endless", "trickle", "reset"):
                return self.hostile(state.mode)
            if state.mode == "long_name":
                return self.reply(200, b"n" * (25 << 20) + b" 1\n", "text/plain; version=0.0.4")
            if state.mode in HOSTILE_BODIES:
                body, zipped = state.hostile_body(state.mode)
                encoding = "gzip" if zipped else None
                return self.reply(200, body, "text/plain; version=0.0.4; charset=utf-8", encoding)
            body = state.body()
            encoding = None
            if state.gzip and "gzip" in (self.headers.get("Accept-Encoding") or ""):
                body, encoding = gzip.compress(body), "gzip"
            self.reply(200, body, "text/plain; version=0.0.4; charset=utf-8", encoding)

        def hostile(self, mode):
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            if mode != "endless":
                self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            try:
                if mode == "endless":
                    line = b"endless_series 1\n" * 4096
                    while True:
                        self.wfile.write(line)
                elif mode == "trickle":
                    for b in b"room_temperature_celsius 21.5\n" * 100:
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(1)
                else:
                    self.wfile.write(b"room_temperature_celsius 21.5\nrequests_tot")
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
            except OSError:
                pass

        def reply(self, status, body, content_type, encoding=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Exporter


def control_for(state, server_box):
    class Control(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/mode":
                state.mode = q["m"]
                if q["m"] == "down":
                    server_box["server"].shutdown()
                    server_box["server"].server_close()
            elif url.path == "/extra":
                state.extra = int(q["n"])
            elif url.path == "/scale":
                state.scale = int(q["n"])
            elif url.path == "/gzip":
                state.gzip = q.get("on") == "1"
            elif url.path == "/malformed":
                state.malformed = q.get("on") == "1"
            elif url.path == "/reset":
                with state.lock:
                    state.n = 0
            elif url.path == "/wide":
                state.wide = int(q["n"])
            elif url.path == "/labels":
                state.bomb_labels = int(q.get("n", state.bomb_labels))
                state.bomb_lines = int(q.get("lines", state.bomb_lines))
            elif url.path == "/spoof":
                state.spoof_agent = q["agent"]
            body = json.dumps({"scrapes": state.n, "mode": state.mode}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Control


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls", metavar="PEM", help="serve https with this key and certificate")
    args = p.parse_args()
    state = State()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(state))
    host = "localhost" if args.tls else "127.0.0.1"
    state.url = f"{'https' if args.tls else 'http'}://{host}:{server.server_address[1]}/metrics"
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    box = {"server": server}
    control = ThreadingHTTPServer(("127.0.0.1", 0), control_for(state, box))
    control.daemon_threads = True
    for s in (server, control):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(json.dumps({"ready": True, "port": server.server_address[1],
                      "control_port": control.server_address[1]}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
