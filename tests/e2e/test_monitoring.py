"""Alarms and the dashboard as code (`cloudwatch-publisher monitoring`), proven in LocalStack:
the template deploys through LocalStack's CloudFormation, its alarms follow a region going
down and coming back and the agent stopping, the alarm lines are PutMetricAlarm inputs, the
dashboard reads back unchanged, and the committed example template is what the documented
command prints. Plugins that hang or report garbage while regions are found cost only
themselves."""

import json
import signal
import subprocess
import time
import uuid

import boto3
import pytest

from harness import ROOT, VENV_PY, Agent, FaultProxy, Reader, agent_binary, agent_env, parse_ts, wait_for

EXAMPLE = ROOT / "docs" / "cloudformation" / "monitoring-example.json"
# The command docs/operations.md gives for the example, and its environment.
EXAMPLE_REGIONS = "us-east-1,us-west-2,eu-west-1,ap-southeast-1,ap-southeast-2,ap-northeast-1," \
                  "ap-south-1,ca-central-1,sa-east-1,us-west-1"
EXAMPLE_ENV = {"AWS_REGION": "us-east-1", "SCRAPE_TARGETS": "http://127.0.0.1:9090/metrics"}
FAST = ["--period", "10", "--evaluation-periods", "1", "--silence-periods", "2"]


def monitoring(env, output, *flags, timeout=30):
    r = subprocess.run([str(agent_binary()), "monitoring", output, *flags], env=env,
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def clients(localstack):
    kw = dict(endpoint_url=localstack.url, region_name="us-east-1", aws_access_key_id="test",
              aws_secret_access_key="test")
    return boto3.client("cloudformation", **kw), boto3.client("cloudwatch", **kw)


def states(cw, namespace):
    out = {}
    for page in cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{namespace}/"):
        out.update({a["AlarmName"]: a["StateValue"] for a in page["MetricAlarms"]})
    return out


def deploy(cfn, template):
    name = f"monitoring-{uuid.uuid4().hex[:8]}"
    cfn.create_stack(StackName=name, TemplateBody=template)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS"):
            assert stack["StackStatus"] == "CREATE_COMPLETE", stack
            return name
        time.sleep(0.5)
    raise TimeoutError(f"stack {name} not created")


def lint(path):
    r = subprocess.run([str(VENV_PY.parent / "cfn-lint"), str(path)], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def test_alarms_follow_a_region_down_and_up_and_the_agent_stopping(localstack, namespace, fleet, exporter,
                                                                   tmp_path):
    cfn, cw = clients(localstack)
    agent_name = f"e2e-{uuid.uuid4().hex[:6]}"
    env = agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(len(fleet.regions)),
                    SCRAPE_TARGETS=exporter.url, SCHEDULE="*/2 * * * * *", TARGET_TIMEOUT="1s",
                    AGENT_NAME=agent_name)
    code, template, err = monitoring(env, "cloudformation", *FAST)
    assert code == 0, err
    (tmp_path / "t.json").write_text(template)
    assert lint(tmp_path / "t.json") == (0, "")
    deploy(cfn, template)

    plugin = {r: f"{namespace}/PluginDown/{r}" for r in fleet.regions}
    silent = f"{namespace}/AgentSilent/{agent_name}"
    scrape = f"{namespace}/ScrapeTargetDown/{exporter.url}"
    assert set(plugin.values()) | {silent, scrape} <= set(states(cw, namespace))

    agent = Agent(env).start()
    try:
        watched = [*plugin.values(), silent, scrape]
        wait_for(lambda: all(states(cw, namespace)[a] == "OK" for a in watched), 90,
                 "every plugin, scrape and silence alarm to be OK")

        down = "eu-west-1"
        fleet.mode(down, "down")
        wait_for(lambda: states(cw, namespace)[plugin[down]] == "ALARM", 60, f"{down}'s alarm")
        now = states(cw, namespace)
        assert [r for r in fleet.regions if now[plugin[r]] != "OK"] == [down]
        assert now[silent] == "OK" and now[scrape] == "OK"

        fleet.mode(down, "ok")
        wait_for(lambda: states(cw, namespace)[plugin[down]] == "OK", 90, f"{down}'s alarm to clear")
        assert all(states(cw, namespace)[a] == "OK" for a in watched)

        # Default SHUTDOWN_TIMEOUT (10 s) plus the 1.5 s log flush, with room for a loaded machine.
        code, _ = agent.stop(signal.SIGTERM, timeout=30)
        assert code == 0
    finally:
        agent.kill()
    # A stopped agent is not silence: its own alarm fires, and so do the regions' (their
    # missing data counts as down).
    wait_for(lambda: states(cw, namespace)[silent] == "ALARM", 120, "the silence alarm")
    wait_for(lambda: all(states(cw, namespace)[a] == "ALARM" for a in plugin.values()), 60,
             "every region's alarm once nobody reports it")


def test_an_outage_pages_as_a_backlog_and_a_refused_datum_as_dropped(localstack, namespace, fleet):
    """The agent's own alarms fire on what they watch (docs/operations.md): QueueBacklog once
    datums older than --queue-age-threshold wait, DatumsDropped once CloudWatch refuses one.
    An outage loses nothing, so DatumsDropped stays OK through it."""
    _, cw = clients(localstack)
    proxy = FaultProxy(localstack.port).start()
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    kept, poisoned = fleet.regions[0], fleet.regions[1]
    env = agent_env(proxy.url, namespace, PLUGIN_PORTS=fleet.ports_spec(2), SCHEDULE="*/2 * * * * *",
                    TARGET_TIMEOUT="1s", AGENT_NAME=name)
    code, out, err = monitoring(env, "alarms", "--period", "10", "--evaluation-periods", "1",
                                "--queue-age-threshold", "5", "--regions", kept)
    assert code == 0, err
    backlog, dropped = f"{namespace}/QueueBacklog/{name}", f"{namespace}/DatumsDropped/{name}"
    for line in out.splitlines():
        alarm = json.loads(line)
        if alarm["AlarmName"] in (backlog, dropped):
            cw.put_metric_alarm(**alarm)
    assert {backlog, dropped} <= set(states(cw, namespace))

    agent = Agent(env).start()
    try:
        wait_for(lambda: states(cw, namespace)[backlog] == states(cw, namespace)[dropped] == "OK", 60,
                 "both alarms to be OK")
        # An outage longer than the threshold: four cycles every 2 s, none delivered.
        proxy.set("refuse")
        before = len(agent.cycles())
        wait_for(lambda: len(agent.cycles()) >= before + 4, 60, "four cycles in the outage")
        proxy.set("pass")
        wait_for(lambda: states(cw, namespace)[backlog] == "ALARM", 90, "the backlog alarm")
        assert states(cw, namespace)[dropped] == "OK"
        assert sum(c["dropped"] for c in agent.cycles()) == 0

        # CloudWatch refuses every datum of one region for one cycle: those are dropped and
        # counted; the rest of the cycle is delivered.
        proxy.set("reject", match=poisoned.encode())
        wait_for(lambda: any(c["dropped"] for c in agent.cycles()), 30, "a cycle with refused datums")
        proxy.set("pass")
        wait_for(lambda: states(cw, namespace)[dropped] == "ALARM", 90, "the dropped-datums alarm")
        code, _ = agent.stop(signal.SIGTERM, timeout=30)
        assert code == 0
    finally:
        agent.kill()
        proxy.stop()

    refused = [l for l in agent.logs() if l.get("message") == "CloudWatch rejected datum; dropped"]
    hit = [c for c in agent.cycles() if c["dropped"]]
    assert refused and all(poisoned in l["datum"] for l in refused)
    assert sum(c["dropped"] for c in hit) == len(refused) == proxy.count("rejected") - \
        sum(1 for l in agent.logs() if l.get("message", "").startswith("CloudWatch rejected a batch"))
    reader = Reader(localstack.url)
    for c in hit:
        stamp = parse_ts(c["cycle_timestamp"])
        # Each such cycle's own count went out with the next publish, and its other region's
        # datums were not lost with the refused ones.
        assert [p[1] for p in reader.at(namespace, "DatumsDropped", {"Agent": name}, stamp)] == [c["dropped"]]
        assert [p[1] for p in reader.at(namespace, "PluginHealthy", {"Region": kept}, stamp)] == [1.0]


def test_alarm_lines_are_put_metric_alarm_inputs(localstack, namespace):
    _, cw = clients(localstack)
    topic = "arn:aws:sns:us-east-1:000000000000:finops-pager"
    env = agent_env(localstack.url, namespace, PLUGIN_PORTS="none", AGENT_NAME="lines")
    code, out, err = monitoring(env, "alarms", "--regions", "us-east-1,eu-west-1", "--sns-topic-arn", topic)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    names = [a["AlarmName"] for a in lines]
    assert names == [f"{namespace}/{n}" for n in (
        "PluginDown/eu-west-1", "PluginDown/us-east-1", "AgentSilent/lines", "QueueBacklog/lines",
        "PublishFailing/lines", "DatumsDropped/lines", "CostJump/eu-west-1", "CostJump/us-east-1")]
    # docs/operations.md: R x (1 + B) + T + 4 metrics, $0.10 each: 2 x 4 + 4 = 12, $1.20.
    assert err == ("8 alarms in {} (plugin regions: 2, scrape targets: 0) reading 12 metrics: about $1.20 "
                   "a month, plus $3.00 for the dashboard beyond an account's first three\n").format(namespace)
    for alarm in lines:
        cw.put_metric_alarm(**alarm)  # botocore checks every field against the API model
    back = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix=f"{namespace}/")["MetricAlarms"]}
    assert sorted(back) == sorted(names)
    for alarm in lines:
        got = back[alarm["AlarmName"]]
        for key, value in alarm.items():
            assert got[key] == value, (alarm["AlarmName"], key)


BASKET_OF_10 = ",".join(f"ec2:t3.{s}" for s in ("nano", "micro", "small", "medium", "large", "xlarge")) + \
    ",ec2:m5.large,ec2:m5.xlarge,ec2:c5.large,ec2:r5.large"
TWELVE = EXAMPLE_REGIONS + ",eu-central-1,eu-west-2"


@pytest.mark.parametrize("regions,extra,alarms,metrics,usd", [
    # docs/operations.md's table, row by row.
    (EXAMPLE_REGIONS, {}, 25, 45, "4.50"),
    (TWELVE, {"SCRAPE_TARGETS": "", "COST_RESOURCES": BASKET_OF_10}, 28, 136, "13.60"),
    (EXAMPLE_REGIONS, {"SCRAPE_TARGETS": "", "SELF_METRICS": "false"}, 20, 40, "4.00"),
])
def test_the_cost_line_is_the_documented_figure(regions, extra, alarms, metrics, usd):
    env = {**agent_env("http://127.0.0.1:9", "FinFocus/Plugins"), **EXAMPLE_ENV, **extra}
    code, out, err = monitoring(env, "alarms", "--regions", regions)
    assert code == 0, err
    assert len(out.splitlines()) == alarms
    targets = 0 if "SCRAPE_TARGETS" in extra else 1
    line = (f"{alarms} alarms in FinFocus/Plugins (plugin regions: {len(regions.split(','))}, scrape targets: "
            f"{targets}) reading {metrics} metrics: about ${usd} a month, plus $3.00 for the dashboard beyond "
            "an account's first three")
    notes = ["note: SELF_METRICS=false: no alarms on the agent itself (silence, backlog, publish failures, drops)"] \
        if extra.get("SELF_METRICS") == "false" else []
    assert err.splitlines() == [*notes, line]


def test_the_documented_notes_are_printed_when_they_apply():
    env = {**agent_env("http://127.0.0.1:9", "FinFocus/Plugins"), **EXAMPLE_ENV}
    # A period under a minute: $0.30 a metric for the 10 s PluginDown, the cost alarm stays at
    # its own period; both in the figure.
    code, _, err = monitoring(env, "alarms", "--regions", "us-east-1", "--period", "10")
    assert code == 0
    assert err.splitlines()[0] == ("note: --period 10 is below the 60 s resolution the agent publishes at; "
                                   "only an emulator evaluates such alarms usefully")
    assert code == 0 and "--period 60" not in err
    code, _, err = monitoring(env, "alarms", "--regions", "us-east-1", "--period", "60")
    assert code == 0 and not err.startswith("note:"), err
    # A template over what CloudFormation takes inline names its size and the way round it.
    many = ",".join(f"us-{w}-{n}" for w in ("east", "west", "north", "south", "central") for n in range(1, 10))
    code, out, err = monitoring(env, "cloudformation", "--regions", many)
    size = len(out.rstrip("\n").encode())
    assert code == 0 and size > 51_200
    assert err.splitlines()[-1] == (f"note: the template is {size} bytes, more than the 51200 CloudFormation "
                                    "takes inline: deploy it through S3 (aws cloudformation deploy --s3-bucket)")
    code, out, err = monitoring(env, "cloudformation", "--regions", "us-east-1")
    assert code == 0 and "note:" not in err


def test_the_dashboard_searches_the_namespace_and_reads_back_unchanged(localstack, namespace):
    _, cw = clients(localstack)
    env = agent_env(localstack.url, namespace, PLUGIN_PORTS="none")
    code, body, err = monitoring(env, "dashboard")
    assert code == 0, err
    body = body.strip()
    parsed = json.loads(body)
    metric_widgets = [w for w in parsed["widgets"] if w["type"] == "metric"]
    assert metric_widgets
    for w in metric_widgets:
        assert w["properties"]["region"] == "us-east-1"
        for [query] in w["properties"]["metrics"]:
            assert query["expression"].startswith(f"SEARCH('{{\"{namespace}\",")
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    put = cw.put_dashboard(DashboardName=name, DashboardBody=body)
    assert put.get("DashboardValidationMessages", []) == []
    assert cw.get_dashboard(DashboardName=name)["DashboardBody"] == body


def test_the_example_template_is_what_the_documented_command_prints(tmp_path):
    env = {**agent_env("http://127.0.0.1:9", "FinFocus/Plugins"), **EXAMPLE_ENV}
    del env["CLOUDWATCH_NAMESPACE"]
    code, out, err = monitoring(env, "cloudformation", "--regions", EXAMPLE_REGIONS)
    assert code == 0, err
    assert json.loads(out) == json.loads(EXAMPLE.read_text()), (
        "docs/cloudformation/monitoring-example.json is stale: regenerate it with the command in "
        "docs/operations.md")


def test_plugins_that_hang_or_lie_cost_only_themselves(localstack, namespace, fleet):
    fleet.mode("us-west-2", "hang")
    fleet.control("/report", region="eu-west-1", value="long:300")
    env = agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(len(fleet.regions)),
                    TARGET_TIMEOUT="1s")
    started = time.monotonic()
    code, out, err = monitoring(env, "alarms")
    took = time.monotonic() - started
    assert code == 0, err
    # README: all targets are probed at once, so finding the regions lasts as long as the
    # slowest target, at most TARGET_TIMEOUT (1 s): the hung plugin costs that, not the
    # command's own 30 s. The rest (a process start, the output) gets 4 s on a loaded machine.
    assert took < 1 + 4, took
    names = {json.loads(line)["AlarmName"] for line in out.splitlines()}
    found = {n.rsplit("/", 1)[1] for n in names if "/PluginDown/" in n}
    assert found == set(fleet.regions) - {"us-west-2", "eu-west-1"}
    assert "x" * 300 not in err and "x" * 300 not in out
    for port in (fleet.port("us-west-2"), fleet.port("eu-west-1")):
        assert f":{port}: no region" in err


def test_bad_flags_and_an_unreachable_fleet_are_refused_with_the_fix(localstack, namespace, fleet):
    env = agent_env(localstack.url, namespace, PLUGIN_PORTS="none")
    code, out, err = monitoring(env, "alarms", "--period", "45")
    assert (code, out) == (78, "") and "--period: 45" in err
    code, out, err = monitoring(env, "alarms", "--regions", "us-east-1,Mars")
    assert (code, out) == (78, "") and "--regions" in err and "Mars" in err
    fleet.stop()
    env = agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(3), TARGET_TIMEOUT="1s")
    code, out, err = monitoring(env, "alarms")
    assert (code, out) == (1, "") and "pass --regions" in err
    del env["AWS_REGION"]
    code, out, err = monitoring(env, "dashboard")
    assert (code, out) == (78, "") and "set AWS_REGION" in err
