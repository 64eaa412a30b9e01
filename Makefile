# cloudwatch-publisher: build, test and demo. `make test` is what CI runs (.ci/run).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CARGO  ?= cargo

.PHONY: all build release test unit e2e lint demo measure venv clean

all: build

# The project-local venv: LocalStack, boto3 (the independent reader) and pytest, pinned.
$(VENV)/.installed: tests/e2e/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
	touch $@

venv: $(VENV)/.installed

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit:
	$(CARGO) test --locked --all-targets

# End-to-end: the real binary against LocalStack's CloudWatch and the sample fleet.
# LocalStack must start; if it cannot, the run fails (no skips).
e2e: venv build
	cd tests/e2e && ../../$(PY) -m pytest

test: lint unit e2e

demo: venv build
	$(PY) tests/e2e/demo.py

# Figures for the closing note: build time, binary size, RSS, cycle time vs slowest target.
measure: venv
	$(PY) tests/e2e/measure.py

clean:
	$(CARGO) clean
	rm -rf $(VENV) .localstack
