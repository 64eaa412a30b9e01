"""The GitHub workflows: actionlint finds nothing (and does find a broken copy), and the
release gates hold as written: tags only, the whole test suite before anything is pushed,
both architectures in one build (so one failing pushes nothing), the tag format, caches,
OCI labels, SBOM and provenance, and a release that names the digest. The workflows cannot
run here; docs/deployment.md says what was checked instead."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def load(name):
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def steps(job):
    return job["steps"]


def runs(job):
    return "\n".join(s.get("run", "") for s in steps(job))


def uses(job, action):
    return [s for s in steps(job) if s.get("uses", "").startswith(action + "@")]


def actionlint(cwd):
    r = subprocess.run([str(ACTIONLINT)], cwd=cwd, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_actionlint_finds_nothing():
    assert actionlint(ROOT) == (0, "")


def test_actionlint_finds_a_broken_workflow(tmp_path):
    shutil.copytree(WORKFLOWS, tmp_path / ".github" / "workflows")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    ci = tmp_path / ".github" / "workflows" / "ci.yml"
    text = ci.read_text().replace("python-version:", "python-versions:").replace(
        "run: make test", "run: make ${{ github.evnt.name }}")
    ci.write_text(text)
    code, out = actionlint(tmp_path)
    assert code != 0 and "python-versions" in out and "evnt" in out, out


def test_ci_runs_the_readme_test_command_with_caches_and_release_runs_ci():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    test = load("ci.yml")["jobs"]["test"]
    assert "make test" in runs(test).split("\n")
    [python] = uses(test, "actions/setup-python")
    assert python["with"]["python-version"] == "3.11" and python["with"]["cache"] == "pip"
    assert uses(test, "Swatinem/rust-cache")
    # The supply-chain checks use the live advisory database there.
    [step] = [s for s in steps(test) if s.get("run") == "make test"]
    assert step["env"]["ADVISORY_DB"] == "live"
    # The release's gate is that same workflow, not a copy of it.
    assert load("release.yml")["jobs"]["test"] == {"uses": "./.github/workflows/ci.yml"}
    assert "workflow_call" in load("ci.yml")["on"]


def test_ci_runs_on_pull_requests_and_main():
    on = load("ci.yml")["on"]
    assert "pull_request" in on and on["push"]["branches"] == ["main"]


def test_release_runs_on_semver_tags_only_and_tests_before_it_pushes():
    release = load("release.yml")
    assert release["on"] == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    jobs = release["jobs"]
    assert jobs["image"]["needs"] == "test" and jobs["release"]["needs"] == "image"
    # Nothing in the test job can publish: it runs with the workflow's read-only token.
    assert "permissions" not in jobs["test"] and release["permissions"] == {"contents": "read"}


def test_the_image_is_both_architectures_in_one_build_with_traceable_tags():
    image = load("release.yml")["jobs"]["image"]
    [build] = uses(image, "docker/build-push-action")
    w = build["with"]
    # One multi-platform build: if either architecture fails, nothing is pushed.
    assert w["platforms"] == "linux/amd64,linux/arm64" and w["push"] is True
    assert w["tags"] == "${{ steps.tags.outputs.tags }}"
    script = runs(image)
    assert 'tag="$version-$(git rev-parse --short=7 HEAD)"' in script
    assert 'echo "tags=$image:$tag,$image:$version"' in script
    assert "make -s image-tag" in script  # the same scheme as the Makefile's
    assert "Cargo.toml" in script  # the tag must be the crate's version
    assert w["cache-from"] == "type=gha" and w["cache-to"] == "type=gha,mode=max"
    for label in ("version", "revision", "source"):
        assert f"org.opencontainers.image.{label}=" in w["labels"]
    assert w["provenance"] == "mode=max" and w["sbom"] is True
    assert uses(image, "actions/attest-build-provenance")
    assert image["permissions"]["packages"] == "write"


def test_the_release_names_the_digest_and_carries_the_sbom():
    release = load("release.yml")["jobs"]["release"]
    script = runs(release)
    assert "docker pull $IMAGE@$DIGEST" in script and "--generate-notes" in script
    assert "make sbom" in script and "cloudwatch-publisher.cdx.json" in script
    assert 'gh release delete "$GITHUB_REF_NAME"' in script  # a re-pushed tag replaces it


def test_the_dockerfile_cross_compiles_on_the_build_platform():
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM --platform=$BUILDPLATFORM" in text
    assert "ARG TARGETARCH" in text
    assert "aarch64-unknown-linux-musl" in text and "x86_64-unknown-linux-musl" in text
