"""The supply-chain checks of `make audit` can fail: cargo-audit refuses a lock file with a
crate RustSec flags, and cargo-deny refuses a license the policy does not allow. And the
policy itself: every allowance in deny.toml and every audit exception says why."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# As the Makefile chooses it (and passes it on): a snapshot's directory, or `live`, when
# cargo-audit fetches the database itself. Run alone, the snapshot beside the checkout if any.
SNAPSHOT = ROOT.parent / "shared" / "advisory-db"
CHOSEN = os.environ.get("ADVISORY_DB") or (str(SNAPSHOT) if SNAPSHOT.is_dir() else "live")
LIVE = CHOSEN == "live"
ADVISORY_DB = None if LIVE else ROOT / CHOSEN
DB_ARGS = [] if LIVE else ["--db", ADVISORY_DB, "--no-fetch"]


def run(*args, cwd=ROOT):
    r = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


def test_the_advisory_database_is_here():
    # A directory named must hold the database; without one the audit fetches it (and fails
    # where there is no network) rather than skip.
    assert LIVE or (ADVISORY_DB / "crates").is_dir(), ADVISORY_DB


def test_cargo_audit_fails_on_a_crate_rustsec_flags(tmp_path):
    lock = (ROOT / "Cargo.lock").read_text()
    # backoff 0.4.0, the crate the design first named: RUSTSEC-2025-0012, unmaintained.
    lock += '\n[[package]]\nname = "backoff"\nversion = "0.4.0"\nsource = "registry+https://github.com/rust-lang/crates.io-index"\n'
    broken = tmp_path / "Cargo.lock"
    broken.write_text(lock)
    code, out = run(BIN / "cargo-audit", "audit", *DB_ARGS, "-D", "warnings", "--file", broken)
    assert code != 0 and "RUSTSEC-2025-0012" in out, out
    code, out = run(BIN / "cargo-audit", "audit", *DB_ARGS, "-D", "warnings")
    assert code == 0, out


def test_cargo_deny_fails_on_a_license_the_policy_does_not_allow(tmp_path):
    policy = (ROOT / "deny.toml").read_text()
    strict = tmp_path / "deny.toml"
    strict.write_text(policy.replace('    "ISC",', ""))
    code, out = run(BIN / "cargo-deny", "--locked", "--config", strict, "check", "licenses")
    assert code != 0 and "ring" in out and "rejected" in out, out


def test_every_allowance_says_why():
    text = (ROOT / "deny.toml").read_text()
    allow = text.split("allow = [", 1)[1].split("]", 1)[0]
    for line in allow.strip().splitlines():
        # The common permissive licenses are justified once, above the list.
        if line.strip() not in ('"Apache-2.0",', '"MIT",'):
            assert "#" in line, f"deny.toml allows {line.strip()} without saying why"
    skips = re.findall(r"\{ crate = .*\}", text)
    assert skips and all('reason = "' in s for s in skips)
    assert re.search(r"Review: \d{4}-\d{2}-\d{2}", text)
    audit = (ROOT / ".cargo" / "audit.toml").read_text()
    ignored = re.search(r"ignore = \[(.*?)\]", audit, re.S).group(1)
    for entry in filter(None, (l.strip() for l in ignored.splitlines())):
        assert re.search(r'"RUSTSEC-\d{4}-\d{4}", # .+; review \d{4}-\d{2}-\d{2}', entry), entry
