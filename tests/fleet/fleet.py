#!/usr/bin/env python3
"""A sample FinFocus AWS Public plugin fleet, following shared/plugin-contract.md.

One HTTP server per region, each on its own port, as the plugin image runs them: GET/HEAD
/healthz, the Connect unary JSON RPCs GetPluginInfo and GetProjectedCost (lowerCamelCase,
zero fields omitted, Connect error bodies), and the gRPC health check over Connect. The port
layout is the documented one or v0.1.8's (where port 8010 is us-west-1).

For tests and the demo a region can be made to hang, fail (503) or go down (connection
refused), at start with flags or at run time through the control port:

    POST /mode?region=us-east-1&mode=hang|fail|down|ok
    POST /latency?region=us-east-1&ms=250
    GET  /regions                      (each region's state, and the most requests it has
                                        seen in flight at once)

Hostile modes, for the agent's hardening tests; each is cleared by POST /reset?region=R:

    POST /report?region=R&value=TEXT|random|long:N   GetPluginInfo reports this region:
         a fixed text, a new well-formed random region each call, or N letters
    POST /info?region=R&mode=fail                     GetPluginInfo answers 503
    POST /cost_error?region=R&code=C&message=M&repeat=N
         GetProjectedCost answers a Connect error whose message is M repeated N times
    POST /cost_value?region=R&value=NaN               costPerMonth is sent as this string;
         value=clock sends the time of the answer (Unix seconds, 3 decimals), so each datum
         in CloudWatch says when the fleet answered it: GET /answered?region=R lists them
    POST /answer?region=R&mode=endless|trickle|reset|garbage|nested|array|euro
         the RPCs (GetPluginInfo, GetProjectedCost) answer 200 with a body that never ends,
         one that comes a byte a second, one cut by a connection reset, random bytes, JSON
         nested 100,000 deep, or `[]` (JSON, but not a message); with euro GetProjectedCost
         answers a well-formed price in EUR (GetPluginInfo as usual); /healthz stays well

Prices are a deterministic table (see quote()), so a test can compute what to expect.
"""

import argparse
import json
import random
import string
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LAYOUTS = {
    "documented": [
        "us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1", "ap-southeast-2",
        "ap-northeast-1", "ap-south-1", "ca-central-1", "sa-east-1", "us-gov-west-1",
        "us-gov-east-1", "us-west-1",
    ],
    "v0.1.8": [
        "us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1", "ap-southeast-2",
        "ap-northeast-1", "ap-south-1", "ca-central-1", "sa-east-1", "us-west-1",
    ],
}

REGION_FACTOR = {
    "us-east-1": 1.0, "us-west-2": 1.0, "eu-west-1": 1.1, "ap-southeast-1": 1.2,
    "ap-southeast-2": 1.2, "ap-northeast-1": 1.25, "ap-south-1": 1.05, "ca-central-1": 1.08,
    "sa-east-1": 1.5, "us-gov-west-1": 1.2, "us-gov-east-1": 1.2, "us-west-1": 1.15,
}

# us-east-1 list prices: EC2 per hour, EBS and S3 per GB-month.
EC2_HOURLY = {"t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416,
              "m5.large": 0.096, "c5.xlarge": 0.17}
EBS_GB_MONTH = {"gp2": 0.10, "gp3": 0.08, "io1": 0.125}
S3_GB_MONTH = {"STANDARD": 0.023, "STANDARD_IA": 0.0125}
# Priced per GB-month, with the plugin's default size when the size tag is missing.
STORAGE = {"ebs": (EBS_GB_MONTH, 8), "s3": (S3_GB_MONTH, 1)}
LAMBDA_GB_SECOND = 0.0000166667
LAMBDA_PER_REQUEST = 0.0000002
HOURS_PER_MONTH = 730
# gCO2e per dollar of EC2, chosen so t3.micro in us-east-1 is the contract's 3507.6.
CARBON_PER_EC2_DOLLAR = 337269.23

PLUGIN_VERSION = "0.1.8"


class ConnectError(Exception):
    STATUS = {"invalid_argument": 400, "failed_precondition": 400, "not_found": 404,
              "unimplemented": 501, "unavailable": 503, "internal": 500}

    def __init__(self, code, message, reason):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason

    def body(self):
        return {"code": self.code, "message": self.message,
                "details": [{"type": "finfocus.v1.ErrorDetail",
                             "debug": {"errorCode": self.reason}}]}


def listed(table, resource_type, sku, region):
    if sku not in table:
        raise ConnectError("not_found", f"no {resource_type} price for {sku} in {region}",
                           "ERROR_CODE_PRICING_UNAVAILABLE")
    return table[sku]


def quote(region, resource_type, sku, tags):
    """The fleet's price for a resource: the dict GetProjectedCost answers, zeros included."""
    f = REGION_FACTOR[region]
    if resource_type == "ec2":
        unit = round(listed(EC2_HOURLY, resource_type, sku, region) * f, 6)
        monthly = round(unit * HOURS_PER_MONTH, 6)
        platform = tags.get("platform", "linux")
        return {"unitPrice": unit, "currency": "USD", "costPerMonth": monthly,
                "billingDetail": f"On-demand {platform.capitalize()}, Shared tenancy, 730 hrs/month",
                "impactMetrics": [{"kind": "METRIC_KIND_CARBON_FOOTPRINT",
                                   "value": round(EC2_HOURLY[sku] * CARBON_PER_EC2_DOLLAR, 1),
                                   "unit": "gCO2e"}],
                "costBreakdown": {"compute": monthly}}
    if resource_type in STORAGE:
        table, default_size = STORAGE[resource_type]
        size = float(tags.get("size", default_size))
        unit = round(listed(table, resource_type, sku, region) * f, 6)
        out = {"unitPrice": unit, "currency": "USD", "costPerMonth": round(unit * size, 6)}
        if resource_type == "ebs":
            out["billingDetail"] = f"EBS {sku}, {size:g} GB"
        return out
    if resource_type == "lambda":
        try:
            memory_gb = int(sku) / 1024
            requests = float(tags.get("requests_per_month", 0))
            duration_s = float(tags.get("avg_duration_ms", 0)) / 1000
        except ValueError:
            raise ConnectError("invalid_argument", f"lambda sku must be memory in MB, got {sku}",
                               "ERROR_CODE_INVALID_RESOURCE")
        unit = round(LAMBDA_GB_SECOND * f, 10)
        monthly = requests * LAMBDA_PER_REQUEST * f + requests * duration_s * memory_gb * unit
        return {"unitPrice": unit, "currency": "USD", "costPerMonth": round(monthly, 6)}
    raise ConnectError("invalid_argument", f"unsupported resource type {resource_type!r}",
                       "ERROR_CODE_INVALID_RESOURCE")


def omit_zero(value):
    """Proto3 JSON: fields holding their zero value are left out."""
    if isinstance(value, dict):
        out = {k: omit_zero(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (0, 0.0, "", [], {}, None)}
    if isinstance(value, list):
        return [omit_zero(v) for v in value]
    return value


class Region:
    def __init__(self, name, port, host):
        self.name, self.port, self.host = name, port, host
        self.mode = "ok"
        self.latency = 0.0
        self.server = None
        self.lock = threading.Lock()
        self.connections = set()
        self.inflight = 0
        self.max_inflight = 0
        self.reset()

    def reset(self):
        self.report = None        # what GetPluginInfo says the region is, when not its name
        self.info_fails = False
        self.cost_error = None    # (code, message) every GetProjectedCost answers
        self.cost_value = None    # costPerMonth as this string, or "clock"
        self.answer_mode = None   # a hostile way to answer the RPCs
        self.answered = []        # with cost_value=clock: every costPerMonth sent

    def reported_region(self):
        if self.report == "random":
            word = "".join(random.choice(string.ascii_lowercase) for _ in range(8))
            return f"xx-{word}-{random.randint(1, 9)}"
        if self.report and self.report.startswith("long:"):
            return "a" * int(self.report[5:])
        return self.report or self.name

    def start(self):
        with self.lock:
            if self.server is None:
                handler = type("Handler", (PluginHandler,), {"region": self})
                self.server = ThreadingHTTPServer((self.host, self.port), handler)
                self.server.daemon_threads = True
                threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        with self.lock:
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()
                self.server = None
            # A dead plugin process takes its open keep-alive connections with it.
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def set_mode(self, mode):
        self.mode = mode
        if mode == "down":
            self.stop()
        else:
            self.start()

    def describe(self):
        return {"region": self.name, "port": self.port, "mode": self.mode,
                "latency_ms": self.latency * 1000, "max_inflight": self.max_inflight}


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")


class PluginHandler(QuietHandler):
    region: Region = None

    def setup(self):
        super().setup()
        self.region.connections.add(self.connection)

    def finish(self):
        self.region.connections.discard(self.connection)
        super().finish()

    def handle_one_request(self):
        r = self.region
        with r.lock:
            r.inflight += 1
            r.max_inflight = max(r.max_inflight, r.inflight)
        try:
            super().handle_one_request()
        finally:
            with r.lock:
                r.inflight -= 1

    def wait_for_turn(self):
        """Applies the region's injected latency and hang; False when it should not answer."""
        r = self.region
        if r.latency:
            time.sleep(r.latency)
        deadline = time.monotonic() + 3600
        while r.mode == "hang" and time.monotonic() < deadline:
            time.sleep(0.05)
        return r.mode != "fail"

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        ok = self.wait_for_turn()
        if self.path == "/healthz":
            if ok:
                self.send(200, b"ok", "text/plain; charset=utf-8")
            else:
                self.send(503, b"unavailable", "text/plain; charset=utf-8")
        else:
            self.send(404, b"404 page not found\n", "text/plain; charset=utf-8")

    def do_POST(self):
        ok = self.wait_for_turn()
        try:
            body = self.read_json()
        except ValueError:
            return self.send(400, {"code": "invalid_argument", "message": "request body is not JSON"})
        if not ok:
            return self.send(503, {"code": "unavailable", "message": "plugin is shutting down"})
        path = self.path
        if self.region.answer_mode == "euro" and path == "/finfocus.v1.CostSourceService/GetProjectedCost":
            return self.send(200, {"unitPrice": 0.0104, "currency": "EUR", "costPerMonth": 7.592})
        if self.region.answer_mode not in (None, "euro") and path.startswith("/finfocus.v1."):
            return self.hostile_answer(self.region.answer_mode)
        if path == "/grpc.health.v1.Health/Check":
            return self.send(200, {"status": "SERVING"})
        if path == "/finfocus.v1.CostSourceService/GetPluginInfo":
            if self.region.info_fails:
                return self.send(503, {"code": "unavailable", "message": "plugin info unavailable"})
            return self.send(200, omit_zero({
                "name": "finfocus-plugin-aws-public", "version": PLUGIN_VERSION,
                "specVersion": "v0.6.0", "providers": ["aws"],
                "metadata": {"region": self.region.reported_region(), "type": "public-pricing-fallback"}}))
        if path == "/finfocus.v1.CostSourceService/GetProjectedCost":
            if self.region.cost_error:
                code, message = self.region.cost_error
                return self.send(500, {"code": code, "message": message})
            try:
                answer = omit_zero(self.projected_cost(body))
            except ConnectError as e:
                return self.send(ConnectError.STATUS[e.code], e.body())
            if self.region.cost_value == "clock":
                answer["costPerMonth"] = f"{time.time():.3f}"
                self.send(200, answer)
                # Recorded once sent: the agent may have it from this moment on.
                with self.region.lock:
                    self.region.answered.append(answer["costPerMonth"])
                return None
            if self.region.cost_value is not None:
                answer["costPerMonth"] = self.region.cost_value
            return self.send(200, answer)
        self.send(404, b"404 page not found\n", "text/plain; charset=utf-8")

    def hostile_answer(self, mode):
        """A 200 whose body is not a usable answer; the agent must bound, log and move on."""
        self.close_connection = True
        if mode == "nested":
            return self.send(200, b"[" * 100_000 + b"]" * 100_000)
        if mode == "array":
            return self.send(200, b"[]")
        if mode == "garbage":
            return self.send(200, bytes(random.getrandbits(8) for _ in range(4096)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if mode != "endless":
            # Endless has no length: only the agent's own cap ends it.
            self.send_header("Content-Length", str(10 << 20))
        self.end_headers()
        try:
            if mode == "endless":
                chunk = b'{"costPerMonth":' + b" " * 65536
                while True:
                    self.wfile.write(chunk)
            elif mode == "trickle":
                for b in b'{"costPerMonth":1' + b" " * 3600:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(1)
            elif mode == "reset":
                self.wfile.write(b'{"costPerMonth":"12.5","unitPr')
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
        except OSError:
            pass
        return None

    def projected_cost(self, body):
        res = body.get("resource") or {}
        get = lambda snake, camel: res.get(snake, res.get(camel, ""))  # noqa: E731
        rtype, sku, region = get("resource_type", "resourceType"), res.get("sku", ""), res.get("region", "")
        if not rtype or not sku:
            raise ConnectError("invalid_argument", "resource_type and sku are required",
                               "ERROR_CODE_INVALID_RESOURCE")
        if region and region != self.region.name:
            raise ConnectError("failed_precondition",
                               f"resource region {region} is not this plugin's region {self.region.name}",
                               "ERROR_CODE_UNSUPPORTED_REGION")
        return quote(self.region.name, rtype, sku, res.get("tags") or {})


class ControlHandler(QuietHandler):
    fleet: dict = None

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/regions":
            return self.send(200, [r.describe() for r in self.fleet.values()])
        if url.path == "/answered":
            region = self.fleet.get(parse_qs(url.query).get("region", [""])[0])
            if region is None:
                return self.send(404, {"error": "no such region"})
            with region.lock:
                return self.send(200, list(region.answered))
        self.send(404, {"error": "not found"})

    def do_POST(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        region = self.fleet.get(q.get("region", ""))
        if region is None:
            return self.send(404, {"error": f"no region {q.get('region')!r}"})
        if url.path == "/mode" and q.get("mode") in ("ok", "hang", "fail", "down"):
            region.set_mode(q["mode"])
        elif url.path == "/latency" and "ms" in q:
            region.latency = float(q["ms"]) / 1000
        elif url.path == "/report" and "value" in q:
            region.report = q["value"]
        elif url.path == "/info" and q.get("mode") in ("ok", "fail"):
            region.info_fails = q["mode"] == "fail"
        elif url.path == "/cost_error" and "code" in q:
            region.cost_error = (q["code"], q.get("message", "") * int(q.get("repeat", 1)))
        elif url.path == "/cost_value" and "value" in q:
            region.cost_value = q["value"]
        elif url.path == "/answer" and q.get("mode") in ("endless", "trickle", "reset", "garbage", "nested",
                                                            "array", "euro"):
            region.answer_mode = q["mode"]
        elif url.path == "/reset":
            region.reset()
        else:
            return self.send(400, {"error": "POST /mode?region=R&mode=ok|hang|fail|down or /latency?region=R&ms=N"})
        self.send(200, region.describe())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="v0.1.8")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=8001, help="port of the first region (8001)")
    p.add_argument("--control-port", type=int, default=-1,
                   help="control API port; 0 for any free port (printed in the ready line); -1 for none")
    for mode in ("hang", "fail", "down"):
        p.add_argument(f"--{mode}", action="append", default=[], metavar="REGION",
                       help=f"start with REGION in {mode} mode")
    p.add_argument("--latency-ms", type=float, default=0, help="delay every answer by this much")
    args = p.parse_args()

    fleet = {}
    for i, name in enumerate(LAYOUTS[args.layout]):
        region = Region(name, args.base_port + i, args.host)
        region.latency = args.latency_ms / 1000
        fleet[name] = region
    for mode in ("hang", "fail", "down"):
        for name in getattr(args, mode):
            if name not in fleet:
                p.error(f"--{mode} {name}: not a region of layout {args.layout}")
            fleet[name].mode = mode
    for region in fleet.values():
        if region.mode != "down":
            region.start()
    control_port = None
    if args.control_port >= 0:
        handler = type("Control", (ControlHandler,), {"fleet": fleet})
        control = ThreadingHTTPServer((args.host, args.control_port), handler)
        control.daemon_threads = True
        control_port = control.server_address[1]
        threading.Thread(target=control.serve_forever, daemon=True).start()
    print(json.dumps({"ready": True, "layout": args.layout, "control_port": control_port,
                      "regions": [r.describe() for r in fleet.values()]}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for region in fleet.values():
        region.mode = "ok"  # release hung handlers
    sys.exit(0)


if __name__ == "__main__":
    main()
