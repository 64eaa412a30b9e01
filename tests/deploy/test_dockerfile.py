"""The Dockerfile and .dockerignore, checked without a Docker engine: hadolint, then the rules
the image must keep (multi-stage, pinned bases, non-root numeric USER, HEALTHCHECK through the
binary, exec-form ENTRYPOINT, OCI labels from build args, no secrets, a minimal runtime)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions():
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def stages():
    """[[instructions of one stage]], FROM first."""
    out = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    r = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_multi_stage_with_pinned_bases():
    froms = [s[0][1] for s in stages()]
    assert len(froms) >= 2, froms
    for base in froms:
        image = next(word for word in base.split() if not word.startswith("--"))
        # A full version in the tag (rust:1.95.0-alpine3.22, alpine:3.22.2), or a digest.
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+(-[\w.]+)?(@sha256:[0-9a-f]{64})?", image) or \
            re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", image), f"{image} is not pinned"
    # The build stage runs on the build machine's platform and cross-compiles.
    assert froms[0].startswith("--platform=$BUILDPLATFORM rust:") and "alpine" in froms[0]
    assert froms[-1].startswith("alpine:")
    # The runtime stage copies the binary from the build stage; it compiles nothing.
    runtime = stages()[-1]
    copies = [a for i, a in runtime if i == "COPY"]
    assert copies == ["--from=build /cloudwatch-publisher /usr/local/bin/cloudwatch-publisher"]


def test_runtime_stage_is_minimal_non_root_and_runs_the_binary():
    runtime = dict(stages()[-1])  # one of each instruction that matters here
    runs = [a for i, a in stages()[-1] if i == "RUN"]
    assert len(runs) == 1 and runs[0].startswith("apk add --no-cache ca-certificates"), runs
    # The disk buffer's mount point belongs to the agent's user, and is a volume.
    assert "install -d -o 65532 -g 65532 -m 0700 /var/lib/cloudwatch-publisher" in runs[0]
    assert runtime["VOLUME"] == "/var/lib/cloudwatch-publisher"
    assert runtime["USER"] == "65532:65532"
    assert json.loads(runtime["ENTRYPOINT"]) == ["/usr/local/bin/cloudwatch-publisher"]
    assert "CMD" not in runtime, "no arguments: the default runs the schedule"
    check = runtime["HEALTHCHECK"]
    options, _, command = check.partition("CMD ")
    assert json.loads(command) == ["/usr/local/bin/cloudwatch-publisher", "healthcheck"]
    timeout = re.search(r"--timeout=(\d+)s", options)
    assert timeout and int(timeout.group(1)) > 3, "longer than the healthcheck command's own 3 s"
    # USER comes before HEALTHCHECK and ENTRYPOINT, so both run as 65532.
    order = [i for i, _ in stages()[-1]]
    assert order.index("USER") < order.index("HEALTHCHECK") < order.index("ENTRYPOINT")


def test_oci_labels_come_from_build_args():
    runtime = stages()[-1]
    args = {a.split("=")[0] for i, a in runtime if i == "ARG"}
    assert {"VERSION", "REVISION", "SOURCE"} <= args
    labels = " ".join(a for i, a in runtime if i == "LABEL")
    for key, value in [("source", "${SOURCE}"), ("version", "${VERSION}"),
                       ("revision", "${REVISION}"), ("licenses", "Apache-2.0")]:
        assert f'org.opencontainers.image.{key}="{value}"' in labels, key
    assert 'license = "Apache-2.0"' in (ROOT / "Cargo.toml").read_text()


def test_no_secrets_or_credentials_baked_in():
    text = DOCKERFILE.read_text()
    for word in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PASSWORD"):
        assert word not in text
    assert not [a for i, a in instructions() if i == "ENV"], "configuration is the user's, at run time"
    assert not [a for i, a in instructions() if i == "ADD"]


def test_dockerignore_keeps_only_what_the_build_copies(tmp_path):
    """docker-py's exclude_paths applies Docker's own .dockerignore rules (Go's filepath.Match,
    where `*` does not cross `/`) to a tree shaped like this repository."""
    from docker.utils.build import exclude_paths

    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]
    unwanted = ["target/release/cloudwatch-publisher", ".git/config", ".venv/bin/python",
                ".localstack/localstack.log", "tests/e2e/harness.py", "tests/fleet/fleet.py",
                "docs/deployment.md", "iam/publisher-policy.json", "README.md"]
    needed = ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/sinks/cloudwatch/mod.rs"]
    for path in unwanted + needed:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    sent = exclude_paths(str(tmp_path), patterns)
    copied = [a.split()[0] for i, a in stages()[0] if i == "COPY"]
    for path in needed:
        assert path in sent, f"{path} is needed by {copied}"
    for path in unwanted:
        assert path not in sent, f"{path} would be sent to the build"
