"""Session fixtures: one LocalStack for all end-to-end tests; it must start or the run fails."""

import uuid

import pytest

from harness import Fleet, LocalStack, Reader


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
