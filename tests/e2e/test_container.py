"""The container contract without a Docker engine: the static release binary (`make static`)
runs under bubblewrap the way the image runs it, and publishes, answers its health check and
exits 0 on SIGTERM. The sandbox's user and command come from the Dockerfile's USER and
ENTRYPOINT, so what is run here follows the image; what bubblewrap itself enforces (the
read-only root, the PID namespace) is its own flags and is not asserted again.

What the sandbox reproduces of the runtime stage: a root filesystem holding only the binary,
a CA bundle at Alpine's path and /etc/hosts, mounted read-only; a tmpfs /tmp; UID/GID 65532
in a user namespace; the agent as PID 1 of its own PID namespace; no shell anywhere. The
network is shared with the host, as `--network container:<plugins>` shares the plugin
container's. CloudWatch is reached over HTTPS, so the TLS stack (rustls on ring) and the
system trust store are exercised too: LocalStack's certificate is the only trust anchor.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from expect import SELF_UNITS
from harness import ROOT, STATE, Agent, agent_env, child_pid, http_get, parse_ts


def static_binary():
    path = os.environ.get("AGENT_STATIC_BIN")
    if not path:
        raise RuntimeError("AGENT_STATIC_BIN is unset: run the tests with `make e2e`, which builds it")
    return path


def make_rootfs(root, ca_bundle):
    """The runtime stage's files: the binary, a CA bundle where Alpine keeps it, /etc/hosts."""
    if not shutil.which("bwrap"):
        raise RuntimeError("bubblewrap is missing: `make e2e` installs it (apt-get install bubblewrap)")
    (root / "usr/local/bin").mkdir(parents=True)
    shutil.copy2(static_binary(), root / "usr/local/bin/cloudwatch-publisher")
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/ssl/certs/ca-certificates.crt").write_text(ca_bundle)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    for d in ("tmp", "proc", "dev"):
        (root / d).mkdir()
    return root


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory, localstack):
    pem = (STATE / "server.test.pem").read_text()
    return make_rootfs(tmp_path_factory.mktemp("rootfs"), pem[pem.index("-----BEGIN CERTIFICATE"):])


def image_user():
    """The runtime stage's USER uid:gid, read from the Dockerfile: the sandbox runs the agent
    as the image would, so a Dockerfile that changes its user changes what is tested here."""
    runtime = ROOT.joinpath("Dockerfile").read_text().split("\nFROM ")[-1]
    [user] = re.findall(r"^USER\s+(\d+):(\d+)\s*$", runtime, re.M)
    return user


def image_entrypoint():
    runtime = ROOT.joinpath("Dockerfile").read_text().split("\nFROM ")[-1]
    [entry] = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", runtime, re.M)
    return json.loads(entry)


def sandboxed(rootfs, *args):
    """bwrap arguments that run the image's ENTRYPOINT as the image's USER would run it."""
    uid, gid = image_user()
    return [shutil.which("bwrap"), "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--unshare-user", "--uid", uid, "--gid", gid,
            "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
            *image_entrypoint(), *args]


# docs/performance.md: the stripped static release binary stays under 8 MB (10^6 bytes).
SIZE_BUDGET = 8_000_000


def test_the_static_binary_stays_within_its_size_budget():
    size = os.path.getsize(static_binary())
    assert size < SIZE_BUDGET, f"{size:,} bytes: over the {SIZE_BUDGET:,}-byte budget (see docs/performance.md)"


def test_static_binary_has_no_dynamic_dependencies():
    out = subprocess.run(["readelf", "-d", static_binary()], capture_output=True, text=True, check=True)
    assert "NEEDED" not in out.stdout, out.stdout


def test_the_image_contract_under_bubblewrap(localstack, reader, fleet, namespace, rootfs):
    env = agent_env("https://localhost:%d" % localstack.port, namespace,
                    PLUGIN_PORTS=fleet.ports_spec(12), SCHEDULE="*/2 * * * * *",
                    COST_RESOURCES="ec2:t3.micro", SHUTDOWN_TIMEOUT="5s")
    env["PATH"] = "/usr/local/bin"
    bwrap, *args = sandboxed(rootfs)
    agent = Agent(env, args=args, binary=bwrap).start()
    try:
        agent.wait_cycles(2, timeout=60)
        pid = child_pid(agent.proc.pid)

        # The image's user is not root (the sandbox took it from the Dockerfile).
        assert image_user() != ("0", "0")

        # The image's HEALTHCHECK, run as Docker runs it: a second process in the container.
        check = subprocess.run(sandboxed(rootfs, "healthcheck"), env=env, capture_output=True,
                               text=True, timeout=15)
        assert check.returncode == 0, check.stdout + check.stderr
        assert '"status":"ok"' in check.stdout
        assert http_get(agent.health_url("/healthz"))[0] == 200

        # `docker stop`: SIGTERM to PID 1 of the container.
        os.kill(pid, signal.SIGTERM)
        # SHUTDOWN_TIMEOUT (5 s) and the 1.5 s log flush at most; the rest is an upper bound.
        assert agent.wait(30) == 0
    finally:
        agent.kill()
    assert agent.messages("stopped cleanly")
    cycles = agent.cycles()
    assert all(c["published"] == c["datums"] + (len(SELF_UNITS) if i else 0) for i, c in enumerate(cycles))
    stamp = parse_ts(cycles[0]["cycle_timestamp"])
    for region in fleet.regions:
        [(_, healthy, _, _)] = reader.at(namespace, "PluginHealthy", {"Region": region}, stamp)
        assert healthy == 1.0
    [(_, cost, _, _)] = reader.at(namespace, "ProjectedMonthlyCost",
                                  {"Region": "us-east-1", "ResourceType": "ec2", "Sku": "t3.micro"}, stamp)
    assert cost == pytest.approx(7.592)


def test_an_untrusted_certificate_is_refused_not_ignored(localstack, fleet, namespace, tmp_path):
    """The trust store is real: without LocalStack's certificate in it, nothing is published."""
    root = make_rootfs(tmp_path / "rootfs", "")
    env = agent_env("https://localhost:%d" % localstack.port, namespace,
                    PLUGIN_PORTS=fleet.ports_spec(1), COST_RESOURCES="none", AWS_MAX_ATTEMPTS="1",
                    SCHEDULE="*/3 * * * * *")
    started = time.monotonic()
    bwrap, *args = sandboxed(root, "--once")
    agent = Agent(env, args=args, binary=bwrap)
    assert agent.run(60) == 1
    # `--once` stops retrying within one schedule interval (3 s; README: "--once exits 1 when
    # publishing fails, within one interval"), then at most 1.5 s of log flush; the rest of
    # the 15 s is for bubblewrap's start and a loaded machine.
    assert time.monotonic() - started < 15
    failures = agent.messages("PutMetricData failed; datums kept for the next cycle") + \
        agent.messages("PutMetricData failed; retrying")
    assert failures and all("invalid peer certificate: UnknownIssuer" in f["error"] for f in failures), failures
