"""The agent as a process: configuration errors, signals, shutdown timing."""

import signal
import time

from harness import Agent, agent_env, parse_ts, wait_for

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETMARK"
KEY_ID = "AKIAE2EKEYIDNOTSHOWN"
TOKEN = "FwoGZXIvYXdzEBaSESSIONTOKENMARK"
# Bounds on an exit after a signal come from documented figures: the SHUTDOWN_TIMEOUT a test
# sets, then at most 1.5 s for the log writer (README, "Logs": "At exit the writer gets at
# most 1.5 s"). LOAD_MARGIN_S is what a loaded 2-core machine may add (process exit, the
# test's own wait); every bound stays far below what a broken shutdown would take (the 60 s
# TARGET_TIMEOUT of a hung plugin, or no exit at all).
FLUSH_AT_EXIT_S = 1.5
LOAD_MARGIN_S = 4


def test_bad_environment_exits_78_naming_every_bad_variable_and_no_secret(namespace):
    env = agent_env("http://127.0.0.1:9", namespace, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN,
                    SCHEDULE="every minute", PLUGIN_PORTS="8012-8001", TARGET_TIMEOUT="soon",
                    CLOUDWATCH_NAMESPACE="AWS/EC2", COST_RESOURCES="ec2", QUEUE_MAX_DATUMS="lots",
                    AWS_REGION="moon-1", LOG_LEVEL="loud")
    agent = Agent(env, args=["--once"])
    # Validation comes before anything else: its line is the only one (no `starting`, no
    # SDK); the 20 s wait is only an upper bound on a process that exits in milliseconds.
    assert agent.run(20) == 78
    [line] = agent.logs()
    assert line["level"] == "ERROR"
    assert sorted(line["variables"].split(",")) == sorted([
        "AWS_REGION", "CLOUDWATCH_NAMESPACE", "SCHEDULE", "PLUGIN_PORTS", "COST_RESOURCES",
        "TARGET_TIMEOUT", "QUEUE_MAX_DATUMS", "LOG_LEVEL"])
    for fragment in ['SCHEDULE="every minute"', 'PLUGIN_PORTS="8012-8001"', "AWS/ is reserved", "type:sku"]:
        assert fragment in line["message"], fragment
    everything = "\n".join(agent.lines) + agent.stderr
    assert SECRET not in everything and TOKEN not in everything


def test_no_region_anywhere_is_a_configuration_error(namespace, tmp_path):
    env = agent_env("http://127.0.0.1:9", namespace)
    env.pop("AWS_REGION")
    # As off EC2: the SDK also asks IMDS (here a closed loopback port) and finds nothing.
    env.pop("AWS_EC2_METADATA_DISABLED")
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = "http://127.0.0.1:9"
    (tmp_path / "config").write_text("")
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "config")
    agent = Agent(env, args=["--once"])
    assert agent.run(20) == 78
    # One clear line: no SDK warning with a raw IMDS dump before it.
    [line] = agent.logs()
    assert line["level"] == "ERROR" and line["variables"] == "AWS_REGION", line
    assert "set AWS_REGION, e.g. AWS_REGION=us-east-1" in line["message"]


def test_sigterm_mid_cycle_finishes_and_publishes_that_cycle(localstack, reader, fleet, namespace):
    # Every plugin answers after 1 s, so a cycle's collection takes about 3 s.
    for region in fleet.regions:
        fleet.latency(region, 1000)
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="0 0 0 1 1 *", SHUTDOWN_TIMEOUT="15s",
                            COST_RESOURCES="ec2:t3.micro")).start()
    try:
        agent.wait_ready()
        sent = time.monotonic()
        agent.signal(signal.SIGTERM)
        assert agent.wait(15 + FLUSH_AT_EXIT_S + LOAD_MARGIN_S + 10) == 0
        took = time.monotonic() - sent
    finally:
        agent.kill()
    # Exit 0 says the drain finished within SHUTDOWN_TIMEOUT (15 s); then the log flush.
    assert took < 15 + FLUSH_AT_EXIT_S + LOAD_MARGIN_S, took
    # The signal came mid-cycle: the agent said it was stopping before the cycle ended (its
    # log is written in order), rather than the test reading a log that may lag behind.
    order = [l.get("message", "") for l in agent.logs()]
    stopping = order.index("stopping: no new cycles; finishing the running cycle and flushing the queue")
    assert stopping < order.index("cycle complete"), order
    [cycle] = agent.cycles()
    assert cycle["published"] == cycle["datums"] == 10 * 6
    stamp = parse_ts(cycle["cycle_timestamp"])
    assert reader.at(namespace, "PluginHealthy", {"Region": "ap-south-1"}, stamp)[0][1] == 1.0
    cost = {"Region": "us-east-1", "ResourceType": "ec2", "Sku": "t3.micro"}
    assert reader.at(namespace, "ProjectedMonthlyCost", cost, stamp)[0][1] == 7.592


def test_a_second_signal_exits_at_once(localstack, fleet, namespace):
    fleet.mode("us-east-1", "hang")
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(1),
                            SCHEDULE="0 0 0 1 1 *", TARGET_TIMEOUT="60s", SHUTDOWN_TIMEOUT="60s")).start()
    try:
        agent.wait_ready()
        agent.signal(signal.SIGTERM)
        wait_for(lambda: agent.messages(
            "stopping: no new cycles; finishing the running cycle and flushing the queue"), 10, "the stop")
        assert agent.proc.poll() is None  # still finishing its cycle
        sent = time.monotonic()
        agent.signal(signal.SIGINT)
        code = agent.wait(10)
        took = time.monotonic() - sent
    finally:
        agent.kill()
    assert code == 128 + signal.SIGINT
    # At once: far below the 60 s TARGET_TIMEOUT and SHUTDOWN_TIMEOUT it would otherwise wait;
    # what it may take is the documented 1.5 s log flush and a loaded machine.
    assert took < FLUSH_AT_EXIT_S + LOAD_MARGIN_S, took
    assert agent.messages("second signal: exiting now")


def test_trace_logging_never_shows_credentials_or_signatures(localstack, fleet, namespace):
    env = agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(1), COST_RESOURCES="none",
                    AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=TOKEN,
                    RUST_LOG="trace,aws_smithy_runtime::client::orchestrator=trace")
    agent = Agent(env, args=["--once"])
    assert agent.run(60) == 0
    everything = "\n".join(agent.lines) + agent.stderr
    assert len(agent.lines) > 50  # trace logging really was on
    assert "applying client runtime plugins" in everything  # the SDK's own trace lines
    # The key id too: the SDK's endpoint resolution prints it at debug.
    for secret in (KEY_ID, SECRET, TOKEN, "Signature=", "x-amz-security-token"):
        assert secret.lower() not in everything.lower(), secret


def hung_agent(localstack, fleet, namespace, args=(), **env):
    """An agent whose only plugin hangs, so its cycle lasts TARGET_TIMEOUT (60 s)."""
    fleet.mode("us-east-1", "hang")
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(1),
                            SCHEDULE="0 0 0 1 1 *", TARGET_TIMEOUT="60s", COST_RESOURCES="none", **env),
                  args=args).start()
    agent.wait_ready()
    return agent


def test_once_under_sigterm_runs_out_of_shutdown_timeout_and_exits_1(localstack, fleet, namespace):
    agent = hung_agent(localstack, fleet, namespace, args=["--once"], SHUTDOWN_TIMEOUT="2s")
    try:
        code, took = agent.stop(signal.SIGTERM, timeout=30)
    finally:
        agent.kill()
    # Not before SHUTDOWN_TIMEOUT (2 s) has run out; then only the log flush.
    assert code == 1 and 2 <= took < 2 + FLUSH_AT_EXIT_S + LOAD_MARGIN_S, (code, took)
    assert agent.messages("SHUTDOWN_TIMEOUT passed before the cycle finished; its datums are lost")


def test_once_exits_at_once_on_a_second_signal(localstack, fleet, namespace):
    agent = hung_agent(localstack, fleet, namespace, args=["--once"], SHUTDOWN_TIMEOUT="60s")
    try:
        agent.signal(signal.SIGTERM)
        # The second signal only once the first is handled: sent together, either may be
        # read first.
        wait_for(lambda: agent.messages("stopping: finishing the running cycle"), 30, "the stop")
        sent = time.monotonic()
        agent.signal(signal.SIGHUP)
        code = agent.wait(30)
        took = time.monotonic() - sent
    finally:
        agent.kill()
    # At once: far below the 60 s SHUTDOWN_TIMEOUT; the documented 1.5 s log flush at most.
    assert code == 128 + signal.SIGHUP and took < FLUSH_AT_EXIT_S + LOAD_MARGIN_S, (code, took)


def test_once_under_sigterm_finishes_its_cycle_within_shutdown_timeout(localstack, reader, fleet, namespace):
    fleet.latency("us-east-1", 1000)
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(1),
                            COST_RESOURCES="ec2:t3.micro", SHUTDOWN_TIMEOUT="15s"), args=["--once"]).start()
    try:
        agent.wait_ready()
        code, took = agent.stop(signal.SIGTERM, timeout=15 + FLUSH_AT_EXIT_S + LOAD_MARGIN_S + 10)
    finally:
        agent.kill()
    # Exit 0 says the cycle finished within SHUTDOWN_TIMEOUT (15 s); then the log flush.
    assert code == 0 and took < 15 + FLUSH_AT_EXIT_S + LOAD_MARGIN_S, (code, took)
    [cycle] = agent.cycles()
    assert cycle["published"] == cycle["datums"] > 0


def test_scheduled_drain_running_out_of_time_exits_1(localstack, fleet, namespace):
    agent = hung_agent(localstack, fleet, namespace, SHUTDOWN_TIMEOUT="2s")
    try:
        code, took = agent.stop(signal.SIGTERM, timeout=30)
    finally:
        agent.kill()
    # Not before SHUTDOWN_TIMEOUT (2 s) has run out; then only the log flush.
    assert code == 1 and 2 <= took < 2 + FLUSH_AT_EXIT_S + LOAD_MARGIN_S, (code, took)
    assert agent.messages(
        "SHUTDOWN_TIMEOUT passed before the cycle and the queue were done; undelivered datums are lost")


def test_sighup_stops_cleanly_with_a_flush(localstack, reader, fleet, namespace):
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(1),
                            SCHEDULE="* * * * * *", COST_RESOURCES="none", AGENT_NAME="hup"))
    agent.start()
    try:
        agent.wait_cycles(1, timeout=30)
        code, _ = agent.stop(signal.SIGHUP, timeout=30)
    finally:
        agent.kill()
    assert code == 0
    assert agent.messages("stopped cleanly")
    [stopping] = [l for l in agent.logs() if l.get("message", "").startswith("stopping")]
    assert stopping["signal"] == "SIGHUP"
    # The last cycle's self metrics went out in the shutdown flush.
    last = parse_ts(agent.cycles()[-1]["cycle_timestamp"])
    assert reader.at(namespace, "CycleDuration", {"Agent": "hup"}, last)


def test_a_lowercase_variable_is_not_read_and_is_named_in_a_warning(fleet, namespace):
    env = agent_env("http://127.0.0.1:9", namespace, PLUGIN_PORTS=fleet.ports_spec(2),
                    schedule="every minute", plugin_ports="1", COST_RESOURCES="none")
    env["SCHEDULE"] = "*/5 * * * * *"
    agent = Agent(env, args=["--once", "--dry-run"])
    agent.start(logs_on_stderr=True)
    assert agent.wait(30) == 0
    warned = sorted(l["variable"] for l in agent.logs() if l.get("message", "").endswith("instead")
                    and "is not read" in l["message"])
    assert warned == ["plugin_ports", "schedule"]
    [cycle] = agent.cycles()
    assert cycle["targets"] == 2 and cycle["healthy"] == 2


def test_a_schedule_that_never_fires_and_a_password_in_a_url_are_refused_plainly(namespace):
    env = agent_env("http://127.0.0.1:9", namespace, SCHEDULE="0 0 0 1 1 * 2020",
                    PLUGIN_TARGETS="us-east-1=http://admin:hunter2@127.0.0.1:8001")
    agent = Agent(env, args=["--once"])
    assert agent.run(10) == 78
    [line] = agent.logs()
    assert line["variables"] == "SCHEDULE,PLUGIN_TARGETS"
    assert "ticks still to come" in line["message"]
    everything = "\n".join(agent.lines) + agent.stderr
    assert "hunter2" not in everything and "http://***@127.0.0.1:8001" in everything
