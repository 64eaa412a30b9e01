"""The deployment files in iam/ and docs/: every JSON and YAML file parses; the IAM policy
grants PutMetricData on the agent's namespace and nothing else; the ECS task definition and
the Kubernetes manifest run the agent as the image and the code expect (sidecar in the
plugins' network namespace, non-root, read-only root, no credentials, a stop timeout above
SHUTDOWN_TIMEOUT, the healthcheck command)."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(p for d in ("iam", "docs") for p in (ROOT / d).rglob("*")
               if p.suffix in (".json", ".yaml", ".yml"))
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
HEALTHCHECK = ["/usr/local/bin/cloudwatch-publisher", "healthcheck"]


def load(name):
    return json.loads((ROOT / "iam" / name).read_text())


def default_of(variable):
    """A variable's default as the code states it (src/config.rs VARIABLES)."""
    text = (ROOT / "src" / "config.rs").read_text()
    m = re.search(r'name: "%s",\s*default: (?:"([^"]*)"|(\w+))' % variable, text)
    assert m, variable
    if m.group(2):  # a named constant
        m = re.search(r'pub const %s: &str = "([^"]*)";' % m.group(2), text)
        assert m, variable
    return m.group(1)


def seconds(duration):
    m = re.fullmatch(r"(\d+)s", duration)
    assert m, duration
    return int(m.group(1))


def test_there_are_files_to_check():
    names = {p.name for p in FILES}
    assert {"publisher-policy.json", "ecs-task-role-trust.json", "ecs-task-definition.json",
            "eks-pod-identity-trust.json", "finfocus-cost-plugins.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_parses(path):
    text = path.read_text()
    docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
    assert docs and all(isinstance(d, dict) for d in docs)


def statements(policy):
    s = policy["Statement"]
    return s if isinstance(s, list) else [s]


def test_policy_grants_put_metric_data_on_the_namespace_and_nothing_else():
    policy = load("publisher-policy.json")
    assert policy["Version"] == "2012-10-17"
    [stmt] = statements(policy)
    assert stmt["Effect"] == "Allow"
    actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
    assert actions == ["cloudwatch:PutMetricData"]
    assert not {"NotAction", "NotResource", "NotPrincipal"} & set(stmt)
    # PutMetricData has no resource-level permissions; the namespace condition is the limit.
    assert stmt["Resource"] == "*"
    assert stmt["Condition"] == {"StringEquals": {"cloudwatch:namespace": default_of("CLOUDWATCH_NAMESPACE")}}


@pytest.mark.parametrize("name,service,actions", [
    ("ecs-task-role-trust.json", "ecs-tasks.amazonaws.com", ["sts:AssumeRole"]),
    ("eks-pod-identity-trust.json", "pods.eks.amazonaws.com", ["sts:AssumeRole", "sts:TagSession"]),
])
def test_trust_policies_trust_one_service_of_one_account(name, service, actions):
    [stmt] = statements(load(name))
    assert stmt["Effect"] == "Allow" and stmt["Principal"] == {"Service": service}
    assert (stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]) == actions
    assert stmt["Condition"]["StringEquals"]["aws:SourceAccount"] == "111122223333"


def env_of(container, key="environment"):
    return {e["name"]: e["value"] for e in container.get(key, [])}


def test_ecs_task_runs_the_agent_as_a_sidecar_of_the_plugins():
    task = load("ecs-task-definition.json")
    assert task["networkMode"] == "awsvpc"  # one network namespace: the plugins' 127.0.0.1
    assert task["taskRoleArn"].endswith(":role/finfocus-cloudwatch-publisher")
    containers = {c["name"]: c for c in task["containerDefinitions"]}
    plugins, agent = containers["finfocus-plugins"], containers["cloudwatch-publisher"]
    assert plugins["healthCheck"]["command"][0] in ("CMD", "CMD-SHELL")
    assert agent["dependsOn"] == [{"containerName": "finfocus-plugins", "condition": "HEALTHY"}]
    assert agent["healthCheck"]["command"] == ["CMD", *HEALTHCHECK]
    assert agent["user"] == "65532:65532" and agent["readonlyRootFilesystem"] is True
    for c in containers.values():
        assert c["logConfiguration"]["logDriver"] == "awslogs"
        assert not set(CREDENTIALS) & set(env_of(c)), "credentials come from the task role"
        assert "secrets" not in c or not {s["name"] for s in c["secrets"]} & set(CREDENTIALS)
    env = env_of(agent)
    assert env["CLOUDWATCH_NAMESPACE"] == load("publisher-policy.json")["Statement"][0][
        "Condition"]["StringEquals"]["cloudwatch:namespace"]
    # ECS sends SIGTERM, waits stopTimeout, then SIGKILL: leave the flush some room.
    assert agent["stopTimeout"] >= seconds(env.get("SHUTDOWN_TIMEOUT", default_of("SHUTDOWN_TIMEOUT"))) + 5
    assert agent["stopTimeout"] <= 120  # Fargate's maximum
    # The disk buffer is on the task's volume (the root filesystem is read-only).
    volumes = {v["name"] for v in task["volumes"]}
    [mount] = agent["mountPoints"]
    assert mount["sourceVolume"] in volumes and mount["containerPath"] == env["BUFFER_DIR"]
    assert mount["readOnly"] is False


def test_kubernetes_pod_runs_both_containers_non_root_with_a_read_only_agent():
    docs = list(yaml.safe_load_all((ROOT / "docs/kubernetes/finfocus-cost-plugins.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    account, deployment = kinds["ServiceAccount"], kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"finfocus-plugins", "cloudwatch-publisher"}
    agent = containers["cloudwatch-publisher"]
    sc = agent["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert agent["readinessProbe"]["exec"]["command"] == HEALTHCHECK
    assert "livenessProbe" not in agent, "a restart would not bring CloudWatch back"
    env = env_of(agent, "env")
    assert not set(CREDENTIALS) & set(env)
    assert pod["terminationGracePeriodSeconds"] >= seconds(
        env.get("SHUTDOWN_TIMEOUT", default_of("SHUTDOWN_TIMEOUT"))) + 5
    assert containers["finfocus-plugins"]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    # The disk buffer is on a pod volume (the root filesystem is read-only), sized above
    # BUFFER_MAX_BYTES so the kubelet does not evict the pod for it.
    [mount] = agent["volumeMounts"]
    assert mount["mountPath"] == env["BUFFER_DIR"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    limit = volume["emptyDir"]["sizeLimit"]
    assert limit.endswith("Mi") and int(limit[:-2]) << 20 > 256 << 20


def test_the_monitoring_policy_manages_the_namespaces_alarms_and_dashboard_only():
    """Whoever creates the alarms and dashboard gets its own policy; it cannot publish data,
    and the agent's policy (above) cannot touch alarms."""
    namespace = default_of("CLOUDWATCH_NAMESPACE")
    by_sid = {s["Sid"]: s for s in statements(load("monitoring-policy.json"))}
    actions = {a for s in by_sid.values() for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert not any(a.endswith("PutMetricData") or "*" in a for a in actions)
    assert all(s["Effect"] == "Allow" and not {"NotAction", "NotResource"} & set(s) for s in by_sid.values())
    alarms = by_sid["AlarmsOfTheAgentsNamespaceOnly"]
    assert alarms["Resource"] == f"arn:aws:cloudwatch:*:*:alarm:{namespace}/*"
    assert "cloudwatch:PutMetricAlarm" in alarms["Action"]
    dashboard = by_sid["TheAgentsDashboardOnly"]
    assert dashboard["Resource"] == "arn:aws:cloudwatch::*:dashboard/" + namespace.replace("/", "-")
    assert "cloudwatch:PutDashboard" in dashboard["Action"]
    assert by_sid["TheMonitoringStackOnly"]["Resource"].endswith(":stack/finfocus-monitoring/*")
    # The only statement on every resource is one that reads nothing and writes nothing.
    assert [s["Action"] for s in by_sid.values() if s["Resource"] == "*"] == ["cloudformation:ValidateTemplate"]
