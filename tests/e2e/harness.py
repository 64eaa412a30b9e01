"""Real parts for the end-to-end tests and the demo: LocalStack's CloudWatch, the sample
plugin fleet, a switchable TCP path to CloudWatch, the agent binary, and a boto3 reader.

Nothing here is a mock: LocalStack speaks the CBOR protocol the SDK sends, the fleet follows
shared/plugin-contract.md, and boto3 reads back what CloudWatch holds.
"""

import ctypes
import datetime
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = ROOT / ".venv" / "bin" / "python"
FLEET = ROOT / "tests" / "fleet" / "fleet.py"
EXPORTER = ROOT / "tests" / "fleet" / "exporter.py"
STATE = ROOT / ".localstack"
sys.path.insert(0, str(FLEET.parent))
sys.path.insert(0, str(ROOT / "tests" / "fault"))
import fleet as fleet_module  # noqa: E402  (the fleet's price table is the expectation)
from proxy import FaultProxy, stamps  # noqa: E402,F401  (the harness's own part, re-exported)


def agent_binary():
    """The binary under test: AGENT_BIN (make e2e sets the static release build), else the
    debug binary `cargo build` makes."""
    path = Path(os.environ.get("AGENT_BIN", ROOT / "target" / "debug" / "cloudwatch-publisher"))
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `cargo build` (make test does)")
    return path


# Sockets that hold ports handed out by free_port: bound with SO_REUSEADDR but never
# listening, so the kernel gives the port to no one else (no port-0 bind, no outgoing
# connection), while the process it was meant for, binding with SO_REUSEADDR as tokio and
# Python's HTTP servers do, can still listen on it.
_RESERVED = []


def free_port(reserve=True):
    """A free port; with `reserve`, one that stays free for whoever it is for (a listener
    that sets SO_REUSEADDR) for the rest of the test run."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    if reserve:
        _RESERVED.append(s)
    else:
        s.close()
    return port


def rss_kib(pid, until_exit=False):
    """The process's peak RSS (VmHWM) in KiB; with until_exit, the last reading before it
    exits, polled every 10 ms."""
    peak = 0
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            return peak
        if not until_exit:
            return peak
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return peak
        except FileNotFoundError:
            return peak
        time.sleep(0.01)


def on_cpu(pid):
    """Seconds on CPU of all the process's threads, from the scheduler in nanoseconds (clock
    ticks are 10 ms, too coarse for a few ms a cycle)."""
    return sum(int((t / "schedstat").read_text().split()[0]) for t in Path(f"/proc/{pid}/task").iterdir()) / 1e9


def child_pid(pid):
    """The only child of `pid`: the agent under a wrapper such as bwrap."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = f.read().split()
    assert len(children) == 1, children
    return int(children[0])


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _ensure_cert():
    """LocalStack 4.13 cannot make its self-signed cert with the pinned pyOpenSSL (26.x
    dropped X509.add_extensions) and cannot download one offline; hand it one."""
    pem = STATE / "server.test.pem"
    if pem.exists():
        return pem
    STATE.mkdir(exist_ok=True)
    return self_signed(pem)


def self_signed(pem):
    """Writes a new key and self-signed certificate for `localhost` to `pem`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + cert.public_bytes(serialization.Encoding.PEM))
    return pem


class LocalStack:
    """LocalStack's CloudWatch as a plain Python process (no Docker)."""

    def __init__(self, port=None):
        self.fixed_port = port
        self.port = None
        self.url = None
        self.proc = None
        self.log = STATE / "localstack.log"

    def healthy(self):
        try:
            with urllib.request.urlopen(f"{self.url}/_localstack/health", timeout=1) as r:
                return json.load(r)["services"].get("cloudwatch") in ("available", "running")
        except (OSError, ValueError, KeyError):
            return False

    def start(self, timeout=90, tries=3):
        """Starts LocalStack on a free port (or the fixed one); a port taken between the check
        and LocalStack's bind is retried with another."""
        for attempt in range(1, tries + 1):
            # Not reserved: whether LocalStack's server sets SO_REUSEADDR is its own business;
            # a port taken meanwhile is retried instead.
            self.port = self.fixed_port or free_port(reserve=False)
            self.url = f"http://127.0.0.1:{self.port}"
            if self.healthy():
                raise RuntimeError(f"something already answers on {self.url}; stop it first")
            try:
                return self._start(timeout)
            except RuntimeError:
                if attempt == tries or self.fixed_port:
                    raise

    def _start(self, timeout):
        pem = _ensure_cert()
        # Its own TMPDIR and volume, by port: two LocalStacks sharing one (two test runs, or
        # `make demo` beside `make test`) clear each other's CloudWatch database.
        run = STATE / f"run-{self.port}"
        shutil.rmtree(run, ignore_errors=True)
        tmp = run / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self.run_dir = run
        self.log = run / "localstack.log"
        env = dict(os.environ, GATEWAY_LISTEN=f"127.0.0.1:{self.port}", SERVICES="cloudwatch,cloudformation",
                   DNS_ADDRESS="0", LOCALSTACK_VOLUME_DIR=str(run), CUSTOM_SSL_CERT_PATH=str(pem),
                   SKIP_SSL_CERT_DOWNLOAD="1", DISABLE_EVENTS="1", LOCALSTACK_TELEMETRY_DISABLED="1",
                   TMPDIR=str(tmp))
        self.proc = subprocess.Popen([str(VENV_PY), "-m", "localstack.runtime.main"], env=env,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"LocalStack did not start on {self.url}; its log ends:\n{tail}")
            time.sleep(0.25)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Its database and temporary files; the log stays for whoever reads a failure.
        if getattr(self, "run_dir", None):
            shutil.rmtree(self.run_dir / "tmp", ignore_errors=True)


def post_control(port, path, **params):
    """POSTs to a test server's control port: its JSON answer."""
    query = urllib.parse.urlencode(params)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}?{query}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


class Fleet:
    """The sample plugin fleet, one port per region, with its control API."""

    def __init__(self, layout="v0.1.8", base_port=None, args=()):
        self.layout = layout
        self.fixed_base = base_port
        self.base_port = None
        self.control_port = None
        self.args = list(args)
        self.proc = None
        self.regions = fleet_module.LAYOUTS[layout]

    def start(self, tries=5):
        """Starts the fleet on a free block of ports; a block taken between the check and the
        bind (another test's process) is retried with another block."""
        for _ in range(tries):
            self.base_port = self.fixed_base or free_port_block(len(self.regions))
            self.proc = subprocess.Popen(
                [sys.executable, str(FLEET), "--layout", self.layout, "--base-port", str(self.base_port),
                 "--control-port", "0", *self.args],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
            line = self.proc.stdout.readline()
            if line and json.loads(line).get("ready"):
                self.control_port = json.loads(line)["control_port"]
                return self
            self.proc.wait(5)
        raise RuntimeError(f"fleet did not start after {tries} tries")

    def port(self, region):
        return self.base_port + self.regions.index(region)

    def ports_spec(self, count=12):
        """PLUGIN_PORTS covering `count` ports from the first, as 8001-8012 does."""
        return f"{self.base_port}-{self.base_port + count - 1}"

    def control(self, path, **params):
        return post_control(self.control_port, path, **params)

    def mode(self, region, mode):
        return self.control("/mode", region=region, mode=mode)

    def latency(self, region, ms):
        return self.control("/latency", region=region, ms=ms)

    def describe(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control_port}/regions", timeout=5) as r:
            return {d["region"]: d for d in json.load(r)}

    def answered(self, region):
        """With cost_value=clock: every costPerMonth the region has sent, as floats."""
        url = f"http://127.0.0.1:{self.control_port}/answered?{urllib.parse.urlencode({'region': region})}"
        with urllib.request.urlopen(url, timeout=5) as r:
            return [float(v) for v in json.load(r)]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Exporter:
    """The test exporter (tests/fleet/exporter.py): known values that move by known amounts
    each scrape, with hostile modes switched through its control port."""

    def __init__(self, tls=None):
        """`tls`: a PEM with key and certificate, to serve https as `localhost`."""
        self.tls = tls
        self.proc = None
        self.port = None
        self.control_port = None

    def start(self):
        args = ["--tls", str(self.tls)] if self.tls else []
        self.proc = subprocess.Popen([sys.executable, str(EXPORTER), *args], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        ready = json.loads(self.proc.stdout.readline())
        self.port, self.control_port = ready["port"], ready["control_port"]
        return self

    @property
    def url(self):
        if self.tls:
            return f"https://localhost:{self.port}/metrics"
        return f"http://127.0.0.1:{self.port}/metrics"

    def control(self, path, **params):
        return post_control(self.control_port, path, **params)

    def body(self):
        """What a scrape gets now (uncompressed; it counts as a scrape)."""
        with urllib.request.urlopen(self.url, timeout=10) as r:
            return r.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.control("/mode", m="ok")
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def free_port_block(n):
    """A run of n ports free now; the fleet retries with another run if one is taken before
    it binds (Fleet.start)."""
    for _ in range(200):
        base = free_port(reserve=False)
        if base + n > 65000:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


class Switch(FaultProxy):
    """A path to CloudWatch that can be cut: while off, connections are refused, as when the
    network to CloudWatch is down. The fault proxy's `pass` and `refuse`."""

    def __init__(self, target_port):
        super().__init__(target_port, port=free_port())

    def on(self):
        self.set("pass")

    def off(self):
        self.set("refuse")


PR_SET_PDEATHSIG = 1

# Where each agent's output is kept, a file per process (killed ones included), so a failed
# test can be read afterwards: conftest.py points it at target/e2e-logs/<test> for each test.
LOG_DIR = {"path": None, "count": 0}


class Agent:
    """The real agent binary as a process; its JSON log lines are collected, and copied to a
    file under LOG_DIR as they come."""

    def __init__(self, env, args=(), binary=None, nofile=None, wrap=()):
        """`nofile`: the (soft, hard) open-file limit the agent starts with; `wrap`: a command
        the agent runs under (bwrap, to give it a small or read-only filesystem)."""
        self.nofile = nofile
        self.wrap = list(wrap)
        self.env = env
        self.args = list(args)
        self.binary = binary or agent_binary()
        self.proc = None
        self.lines = []
        self.stderr = ""
        self.started = None
        self._reader = None
        self.logs_on_stderr = False
        self.log_file = None

    def start(self, read=True, logs_on_stderr=False):
        """Starts the agent; its log lines are read as they come unless `read` is False
        (a pipe nobody drains, as a stalled log driver leaves it): `read_logs` starts later.
        With `logs_on_stderr` (`--dry-run`), stderr is the log and stdout is left alone."""
        self.started = time.monotonic()
        self.logs_on_stderr = logs_on_stderr
        limit = self.nofile

        def preexec():
            # The agent dies with the test process: a test run that is killed leaves no agent
            # cycling against a LocalStack that is gone (load for whatever runs next).
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, limit)
        self.proc = subprocess.Popen([*self.wrap, str(self.binary), *self.args], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec)
        if LOG_DIR["path"] is not None:
            LOG_DIR["count"] += 1
            LOG_DIR["path"].mkdir(parents=True, exist_ok=True)
            self.log_file = LOG_DIR["path"] / f"agent-{LOG_DIR['count']:02d}-{self.proc.pid}.log"
        if read:
            self.read_logs()
        return self

    def read_logs(self):
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        out = open(self.log_file, "a", buffering=1) if self.log_file else None
        try:
            for line in (self.proc.stderr if self.logs_on_stderr else self.proc.stdout):
                self.lines.append(line.rstrip("\n"))
                if out:
                    out.write(line)
        finally:
            if out:
                out.close()

    def logs(self):
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"message": line, "unparsed": True})
        return out

    def health_url(self, path):
        return f"http://{self.env['HEALTH_ADDR']}{path}"

    def healthcheck(self):
        """`cloudwatch-publisher healthcheck` run as Docker's HEALTHCHECK would: exit code and
        output."""
        r = subprocess.run([str(self.binary), "healthcheck"], env=self.env, capture_output=True,
                           text=True, timeout=10)
        return r.returncode, r.stdout + r.stderr

    def messages(self, message):
        return [l for l in self.logs() if l.get("message") == message]

    def wait_ready(self, timeout=15):
        """Waits for the `starting` line: the signal handlers are installed by then."""
        wait_for(lambda: self.messages("starting"), timeout, "the agent's starting line")

    def cycles(self):
        return self.messages("cycle complete")

    def wait_cycles(self, n, timeout):
        wait_for(lambda: len(self.cycles()) >= n, timeout, f"{n} cycles")

    def run_cycles(self, n, timeout):
        """Starts the agent, lets it run `n` cycles, stops it with SIGTERM: its exit code."""
        self.start()
        try:
            self.wait_cycles(n, timeout)
            self.signal(signal.SIGTERM)
            return self.wait(15)
        finally:
            self.kill()

    def run_changing(self, change, then, timeout=30):
        """Starts the agent, lets one cycle pass, calls `change()`, lets `then` cycles that
        started after it run, and stops the agent with SIGTERM: its exit code, and those
        cycles. A cycle started after the change when its stamp (its start, in whole
        seconds) is later than the moment change() returned; counting log lines instead
        would count a cycle that collected before the change and had not logged yet."""
        self.start()
        try:
            self.wait_cycles(1, timeout)
            change()
            changed = datetime.datetime.now(datetime.timezone.utc)

            def after():
                return [c for c in self.cycles() if parse_ts(c["cycle_timestamp"]) > changed]

            wait_for(lambda: len(after()) >= then, timeout, f"{then} cycles started after the change")
            self.signal(signal.SIGTERM)
            return self.wait(30), after()
        finally:
            self.kill()

    def stop(self, *signals, timeout=15):
        """Sends the signals, each once the agent has said it is stopping (so a second one
        lands during the shutdown): the exit code, and the seconds from the first signal to
        the exit."""
        sent = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                wait_for(lambda: any(l.get("message", "").startswith("stopping") for l in self.logs()),
                         timeout, "the agent's stopping line")
            self.signal(sig)
        code = self.wait(timeout)
        return code, time.monotonic() - sent

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=60):
        code = self.proc.wait(timeout)
        if self._reader:
            self._reader.join(5)
        if not self.logs_on_stderr:
            self.stderr = self.proc.stderr.read()
            if self.log_file and self.stderr:
                self.log_file.with_suffix(".stderr").write_text(self.stderr)
        return code

    def run(self, timeout=120):
        self.start()
        return self.wait(timeout)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def metric(self, name):
        """One unlabelled sample of the agent's own /metrics, or None."""
        _, _, body = http_get(self.health_url("/metrics"))
        for line in body.splitlines():
            if line.startswith(f"cloudwatch_publisher_{name} "):
                return float(line.split()[1])
        return None


def agent_env(cloudwatch_url, namespace, **extra):
    """A clean environment for the agent: dummy credentials, no profile or IMDS lookups, and
    the health listener on a free port, so agents never compete for 8686."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ENDPOINT_URL": cloudwatch_url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "CLOUDWATCH_NAMESPACE": namespace,
        "HEALTH_ADDR": f"127.0.0.1:{free_port()}",
    }
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def http_get(url, timeout=5):
    """(status, content type, body text) of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers["content-type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["content-type"], e.read().decode()


class Reader:
    """Reads CloudWatch back with boto3: an independent client in another language."""

    def __init__(self, url):
        import boto3

        self.cw = boto3.client("cloudwatch", endpoint_url=url, region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")

    def metrics(self, namespace):
        out = []
        for page in self.cw.get_paginator("list_metrics").paginate(Namespace=namespace):
            for m in page["Metrics"]:
                out.append((m["MetricName"], frozenset((d["Name"], d["Value"]) for d in m.get("Dimensions", []))))
        return out

    def points(self, namespace, name, dims, start=None, end=None):
        """Every datum of one metric between start and end (default: the last 2 minutes), one
        per second: [(timestamp, maximum, unit, sample count)]. Keep windows short: LocalStack
        answers a 20-minute window of 1-second periods a hundred times slower than 5 seconds."""
        now = datetime.datetime.now(datetime.timezone.utc)
        start = start or now - datetime.timedelta(minutes=2)
        end = end or now + datetime.timedelta(seconds=10)
        r = self.cw.get_metric_statistics(
            Namespace=namespace, MetricName=name,
            Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
            StartTime=start, EndTime=end, Period=1, Statistics=["Maximum", "SampleCount"])
        pts = [(p["Timestamp"].astimezone(datetime.timezone.utc), p["Maximum"], p["Unit"], p["SampleCount"])
               for p in r["Datapoints"]]
        return sorted(pts)

    def stats(self, namespace, name, dims, start, end):
        """[(timestamp, SampleCount, Minimum, Maximum, Sum)] per second between start and end."""
        r = self.cw.get_metric_statistics(
            Namespace=namespace, MetricName=name,
            Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
            StartTime=start, EndTime=end, Period=1,
            Statistics=["SampleCount", "Minimum", "Maximum", "Sum"])
        return sorted((p["Timestamp"].astimezone(datetime.timezone.utc), p["SampleCount"], p["Minimum"],
                       p["Maximum"], p["Sum"]) for p in r["Datapoints"])

    def at(self, namespace, name, dims, stamp):
        """The datums of one metric at exactly `stamp`."""
        return self.points(namespace, name, dims, stamp, stamp + datetime.timedelta(seconds=1))


def parse_ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
