"""The deployment files against the platforms' own schemas, not only this project's
assertions: the ECS task definition against botocore's RegisterTaskDefinition input model,
the IAM identity policies with parliament (which knows each action's resources and condition
keys), the Kubernetes manifest with kubernetes-validate (Kubernetes 1.37's schemas). Each
checker is also shown to fail on a broken copy, so a pass means the file was really checked.
(CloudFormation: cfn-lint, in test_cloudformation.py.)"""

import copy
import json
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Identity policies; the trust policies are resource policies, which parliament does not read.
POLICIES = ["publisher-policy.json", "monitoring-policy.json"]
MANIFESTS = sorted((ROOT / "docs" / "kubernetes").glob("*.yaml"))


def register_task_definition(doc):
    model = botocore.session.get_session().get_service_model("ecs")
    validate_parameters(doc, model.operation_model("RegisterTaskDefinition").input_shape)


def task_definition():
    return json.loads((ROOT / "iam" / "ecs-task-definition.json").read_text())


def test_the_task_definition_is_a_register_task_definition_input():
    register_task_definition(task_definition())


@pytest.mark.parametrize("break_it,complaint", [
    (lambda d: d.pop("family"), "family"),
    (lambda d: d["containerDefinitions"][1].update(stopTimeout="30s"), "stopTimeout"),
    (lambda d: d["containerDefinitions"][0].update(healthcheck={}), "healthcheck"),
], ids=["no family", "a duration as text", "a misspelled key"])
def test_botocore_refuses_a_broken_task_definition(break_it, complaint):
    doc = copy.deepcopy(task_definition())
    break_it(doc)
    with pytest.raises(ParamValidationError, match=complaint):
        register_task_definition(doc)


def parliament(policy_text):
    # --string: parliament refuses --file whenever stdin is not a terminal.
    r = subprocess.run([str(BIN / "parliament"), "--string", policy_text], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("name", POLICIES)
def test_parliament_finds_nothing_in_the_policies(name):
    assert parliament((ROOT / "iam" / name).read_text()) == (0, "")


@pytest.mark.parametrize("name,old,new,finding", [
    ("publisher-policy.json", "cloudwatch:namespace", "cloudwatch:nameSpace2", "Unknown condition"),
    ("publisher-policy.json", "cloudwatch:PutMetricData", "cloudwatch:PutMetricDatum", "Unknown action"),
    ("monitoring-policy.json", '"cloudwatch:GetDashboard"', '"cloudwatch:GetDashboard", "cloudwatch:PutMetricAlarm"',
     "No resources match"),
], ids=["unknown condition key", "unknown action", "action on the wrong resource"])
def test_parliament_flags_a_broken_policy(name, old, new, finding):
    text = (ROOT / "iam" / name).read_text()
    assert old in text
    code, out = parliament(text.replace(old, new, 1))
    assert code != 0 and finding in out, out


def kubernetes_validate(path):
    r = subprocess.run([str(BIN / "kubernetes-validate"), "--kubernetes-version", "1.37", "--strict", str(path)],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_validate_passes_the_manifests(path):
    code, out = kubernetes_validate(path)
    assert code == 0 and "passed" in out and "ERROR" not in out, out


def containers(deployment):
    return deployment["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("break_it,complaint", [
    (lambda d: d["spec"].update(replicas="one"), "replicas"),
    (lambda d: containers(d)[1].update(resourceLimits={}), "resourceLimits"),  # --strict: unknown key
    (lambda d: containers(d)[1].pop("name"), "name"),
], ids=["a count as text", "a misspelled key", "a container without a name"])
def test_kubernetes_validate_refuses_a_broken_manifest(tmp_path, break_it, complaint):
    docs = list(yaml.safe_load_all(MANIFESTS[0].read_text()))
    break_it(next(d for d in docs if d["kind"] == "Deployment"))
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    code, out = kubernetes_validate(broken)
    assert code != 0 and "did not validate" in out and complaint in out, out
