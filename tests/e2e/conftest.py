"""Session fixtures: one LocalStack for all end-to-end tests; it must start or the run fails."""

import re
import shutil
import uuid

import pytest

import harness
from harness import ROOT, Exporter, Fleet, LocalStack, Reader

LOGS = ROOT / "target" / "e2e-logs"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and harness.LOG_DIR["path"] is not None:
        report.sections.append(("agent logs", f"every agent's output is in {harness.LOG_DIR['path']}"))


@pytest.fixture(autouse=True)
def agent_logs(request):
    """Each agent's output (killed ones included) goes to target/e2e-logs/<test>/."""
    path = LOGS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    shutil.rmtree(path, ignore_errors=True)
    harness.LOG_DIR.update(path=path, count=0)
    yield path
    harness.LOG_DIR.update(path=None)


@pytest.fixture(scope="session")
def localstack():
    # No skip on failure: a test run without CloudWatch has proved nothing.
    ls = LocalStack().start()
    yield ls
    ls.stop()


@pytest.fixture(scope="session")
def reader(localstack):
    return Reader(localstack.url)


@pytest.fixture
def namespace():
    """Each test writes to its own namespace, so tests cannot see each other's data."""
    return f"E2E/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fleet(request):
    """The v0.1.8 fleet; parametrize indirectly with a dict of Fleet arguments to change it."""
    f = Fleet(**getattr(request, "param", {})).start()
    yield f
    f.stop()


@pytest.fixture
def exporter():
    """The test exporter (tests/fleet/exporter.py), stopped after the test."""
    e = Exporter().start()
    yield e
    e.stop()
