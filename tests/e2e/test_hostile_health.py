"""The health listener under a hostile client, with the real binary: a slowloris flood that
holds every connection slot with half-sent request heads (reconnecting as soon as it is
dropped) must not make `healthcheck` fail, since an orchestrator would then restart a
healthy agent; and a client trickling its head a byte at a time is cut at the 2 s header
time (README, *Health and self-observation*)."""

import socket
import threading
import time

from harness import Agent, agent_env, http_get, parse_ts, wait_for

# The listener's connection slots (README); the flood holds all of them and has more
# sockets waiting, so a slot never stays free.
SLOTS = 64
FLOOD = SLOTS + 16


class Slowloris:
    """`n` sockets, each sending half a request head and then a byte every 100 ms, and
    reconnecting as soon as the agent drops it."""

    def __init__(self, host, port, n):
        self.addr = (host, int(port))
        self.stop = threading.Event()
        self.connects = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.first = threading.Barrier(n + 1)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        self.first.wait(30)  # every socket has connected once
        return self

    def __exit__(self, *_):
        self.stop.set()
        for t in self.threads:
            t.join(5)

    def _run(self):
        first = True
        while not self.stop.is_set():
            try:
                s = socket.create_connection(self.addr, timeout=2)
            except OSError:
                continue
            with self.lock:
                self.connects += 1
            if first:
                first = False
                self.first.wait(30)
            try:
                s.settimeout(0.1)  # the trickle's pace, and how soon a drop is seen
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
                while not self.stop.is_set():
                    try:
                        s.recv(512)
                        break  # an answer or the end: the agent dropped us
                    except socket.timeout:
                        s.sendall(b"X")
            except OSError:
                pass
            finally:
                s.close()
            with self.lock:
                self.dropped += 1


def start_agent(localstack, fleet, namespace):
    agent = Agent(agent_env(localstack.url, namespace, PLUGIN_PORTS=fleet.ports_spec(12),
                            SCHEDULE="*/2 * * * * *", COST_RESOURCES="ec2:t3.micro",
                            TARGET_TIMEOUT="1s")).start()
    agent.wait_cycles(1, timeout=30)
    return agent


def test_healthcheck_succeeds_20_of_20_while_a_slowloris_holds_every_slot(localstack, fleet, namespace):
    agent = start_agent(localstack, fleet, namespace)
    try:
        host, port = agent.env["HEALTH_ADDR"].rsplit(":", 1)
        with Slowloris(host, port, FLOOD) as flood:
            results = [agent.healthcheck() for _ in range(20)]
            cycles_during = len(agent.cycles())
            connects = flood.connects
        failed = [out for code, out in results if code != 0]
        print(f"healthcheck under a {FLOOD}-socket slowloris: {20 - len(failed)} of 20 answered; "
              f"the flood connected {connects} times")
        assert failed == [], failed
        assert all('"status":"ok"' in out for _, out in results)
        # The flood was real: more connections than slots, each made room for a probe.
        assert connects > FLOOD
        evicted = [l for l in agent.logs() if "connections that had not sent a request" in l.get("message", "")]
        assert evicted and all(l["level"] == "WARN" for l in evicted), evicted
        # At most once a minute (README), however many connections were evicted.
        seen = [parse_ts(l["timestamp"]) for l in evicted]
        assert all((b - a).total_seconds() >= 60 for a, b in zip(seen, seen[1:])), seen
        dropped = agent_metrics_line(agent, 'cloudwatch_publisher_health_connections_dropped_total{reason="evicted"}')
        assert dropped >= 20, dropped
        # Cycles went on meanwhile, and the agent stops cleanly.
        agent.wait_cycles(cycles_during + 1, timeout=10)
        agent.signal()
        assert agent.wait(15) == 0
    finally:
        agent.kill()


def agent_metrics_line(agent, sample):
    """The value of one sample of the agent's /metrics."""
    status, _, body = http_get(agent.health_url("/metrics"))
    assert status == 200, status
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[1])
    raise AssertionError(f"{sample} not in /metrics:\n{body}")


def tuple_addr(agent):
    host, port = agent.env["HEALTH_ADDR"].rsplit(":", 1)
    return host, int(port)


def test_a_request_head_trickled_a_byte_at_a_time_is_cut_at_two_seconds(fleet, namespace):
    agent = Agent(agent_env("http://127.0.0.1:9", namespace, PLUGIN_PORTS=fleet.ports_spec(1),
                            COST_RESOURCES="none")).start()
    try:
        wait_for(lambda: agent.messages("health listener ready: /healthz and /metrics"), 15,
                 "the health listener")
        with socket.create_connection(tuple_addr(agent), timeout=5) as s:
            opened = time.monotonic()
            s.settimeout(0.1)
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            answer = b""
            while time.monotonic() - opened < 10:
                try:
                    chunk = s.recv(4096)
                except socket.timeout:
                    s.sendall(b"X")  # a byte every 100 ms: never idle, never done
                    continue
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                answer += chunk
            cut = time.monotonic() - opened
        print(f"trickled head cut after {cut:.2f} s: {answer[:40]!r}")
        assert 1.9 <= cut < 3.0, cut
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    finally:
        agent.signal()
        agent.wait(15)
        agent.kill()
