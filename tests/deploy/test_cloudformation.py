"""The CloudFormation templates in docs/cloudformation pass cfn-lint, and cfn-lint is shown to
fail on a broken copy, so a green run means the templates were really checked. (That the
example is what `cloudwatch-publisher monitoring cloudformation` prints, and that it deploys
and alarms in LocalStack, is tests/e2e/test_monitoring.py.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((ROOT / "docs" / "cloudformation").glob("*.json"))
CFN_LINT = Path(sys.executable).parent / "cfn-lint"


def lint(path):
    r = subprocess.run([str(CFN_LINT), str(path)], capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_there_are_templates():
    assert [p.name for p in TEMPLATES] == ["monitoring-example.json"]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_passes_cfn_lint(path):
    assert lint(path) == (0, "")


def test_cfn_lint_fails_a_broken_alarm(tmp_path):
    template = json.loads(TEMPLATES[0].read_text())
    alarm = next(r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm")
    alarm["Properties"]["ComparisonOperator"] = "MoreThan"
    alarm["Properties"]["Period"] = {"Ref": "NoSuchParameter"}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(template))
    code, out = lint(broken)
    assert code != 0 and "MoreThan" in out and "NoSuchParameter" in out
