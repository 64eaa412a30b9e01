#!/usr/bin/env python3
"""A fault-injecting HTTP proxy between the agent and LocalStack's CloudWatch.

It forwards each HTTP/1.1 request to the upstream, or fails it the way a network or
CloudWatch can, as its mode says at the moment the request arrives:

  pass       forward, and relay the answer
  refuse     connections refused: the listening socket is closed
  reset      read the request's head, then reset the connection (RST) mid-request
  delay      wait `delay_ms`, then forward
  error500   answer 500 InternalFailure in the SDK's wire format (Smithy RPC v2 CBOR)
  throttle   answer 400 Throttling in the same format, as CloudWatch does over its quota
  blackhole  forward (CloudWatch accepts the data), then drop the connection unanswered
  hang       read the request and never answer
  accept     answer 200 itself without forwarding: a CloudWatch that takes everything at
             once, for measuring the agent alone (`make bench`)
  reject     answer 400 InvalidParameterValue, as CloudWatch does to a datum it refuses, to
             each request whose body holds `match` (every request without one); forward the rest

`rate` (requests a second, with `pass`) admits at most that many a second and throttles
the rest, as the account's PutMetricData quota does. Counters per outcome say what the
agent met. Used in-process (`FaultProxy(...).start()`), or standalone for manual runs:

    python3 tests/fault/proxy.py --upstream 4566 --port 4567 --control 4568
    curl -X POST 'localhost:4568/mode?m=throttle'     # or m=pass&delay_ms=..&rate=..
"""

import argparse
import gzip
import json
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MODES = ("pass", "refuse", "reset", "delay", "error500", "throttle", "blackhole", "hang", "accept",
         "reject")


def cbor_map(pairs):
    """A CBOR map of short text to short text: all an error body needs."""
    def text(s):
        b = s.encode()
        head = bytes([0x60 | len(b)]) if len(b) < 24 else bytes([0x78, len(b)])
        return head + b
    return bytes([0xA0 | len(pairs)]) + b"".join(text(k) + text(v) for k, v in pairs)


def error_answer(status, reason, code, shape, fault):
    body = cbor_map([("__type", f"com.amazonaws.cloudwatch#{shape}"),
                     ("message", f"{code} injected by the fault proxy")])
    head = (f"HTTP/1.1 {status} {reason}\r\n"
            "smithy-protocol: rpc-v2-cbor\r\n"
            "content-type: application/cbor\r\n"
            f"x-amzn-query-error: {code};{fault}\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode() + body


THROTTLED = error_answer(400, "Bad Request", "Throttling", "ThrottlingException", "Sender")
REJECTED = error_answer(400, "Bad Request", "InvalidParameterValue", "InvalidParameterValueException",
                        "Sender")
FAILED = error_answer(500, "Internal Server Error", "InternalFailure", "InternalServiceFault", "Receiver")
ACCEPTED = (b"HTTP/1.1 200 OK\r\nsmithy-protocol: rpc-v2-cbor\r\ncontent-type: application/cbor\r\n"
            b"content-length: 1\r\n\r\n\xa0")


def stamps(body):
    """The datum timestamps in a PutMetricData body (Smithy RPC v2 CBOR): each is tag 1
    (epoch seconds) over a double, as the SDK writes them."""
    return {struct.unpack(">d", m.group(1))[0] for m in re.finditer(rb"\xc1\xfb(.{8})", body, re.DOTALL)}


def read_until(sock, buf, enough):
    """`buf` with more read from `sock` until `enough(buf)`; None when the peer closes first."""
    while not enough(buf):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return buf


def read_message(sock, buf):
    """One HTTP/1.1 message from `sock` (after what `buf` already holds): (head, body, rest),
    or None when the peer closed first."""
    buf = read_until(sock, buf, lambda b: b"\r\n\r\n" in b)
    if buf is None:
        return None
    head, _, buf = buf.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            buf = read_until(sock, buf, lambda b: b"\r\n" in b)
            if buf is None:
                return None
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            buf = read_until(sock, buf, lambda b, n=size + 2: len(b) >= n)
            if buf is None:
                return None
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
        lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"transfer-encoding")]
        head = b"\r\n".join(lines) + b"\r\ncontent-length: " + str(len(body)).encode()
        return head, body, buf
    length = int(headers.get(b"content-length", b"0"))
    buf = read_until(sock, buf, lambda b: len(b) >= length)
    if buf is None:
        return None
    return head, buf[:length], buf[length:]


class FaultProxy:
    def __init__(self, upstream_port, port=None, host="127.0.0.1"):
        self.upstream = (host, upstream_port)
        self.host = host
        self.port = port or self._free_port()
        self.lock = threading.Lock()
        self.mode = "pass"
        self.delay_ms = 0
        self.rate = None
        self.match = None             # with `reject`: the bytes a refused body holds
        self.window = (0, 0)          # (second, requests admitted in it)
        self.counts = {}
        self.listener = None
        self.conns = set()
        self.hung = set()
        self.first_request = None  # wall-clock time of the first request seen
        self.events = []           # (wall-clock time, outcome) of every request answered
        # (wall-clock time, access key id, body) of every request as it came (bodies are
        # kept only with keep_bodies: a test that reads them sets it)
        self.arrivals = []
        self.keep_bodies = False
        # The datum timestamps of every request CloudWatch may have taken without the agent
        # learning it in time (blackholed, or delayed past the agent's wait): only these may
        # be duplicated by a retry.
        self.unsure = set()

    @staticmethod
    def _free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        self._listen()
        return self

    def set(self, mode, delay_ms=None, rate=None, match=None):
        """Switches mode for the requests that arrive from now on."""
        assert mode in MODES, mode
        with self.lock:
            self.mode = mode
            self.match = match
            if delay_ms is not None:
                self.delay_ms = delay_ms
            self.rate = rate
        if mode == "refuse":
            self._close_listener()
            self._drop_connections()
        else:
            self._listen()
        if mode == "pass":
            # Connections held by `hang` are let go, so the agent's retries reach CloudWatch.
            self._drop_connections(only_hung=True)

    def stop(self):
        self._close_listener()
        self._drop_connections()

    def count(self, outcome):
        with self.lock:
            return self.counts.get(outcome, 0)

    def _bump(self, outcome):
        with self.lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            if outcome != "requests":
                self.events.append((time.time(), outcome))

    def _listen(self):
        with self.lock:
            if self.listener:
                return
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, self.port))
            s.listen(256)
            self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _close_listener(self):
        with self.lock:
            s, self.listener = self.listener, None
        if s:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _drop_connections(self, only_hung=False):
        with self.lock:
            conns = list(self.hung if only_hung else self.conns)
        for c in conns:
            try:
                # shutdown wakes the thread blocked reading it; close alone would not.
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _decide(self):
        with self.lock:
            mode, delay = self.mode, self.delay_ms
            if mode == "pass" and self.rate is not None:
                second = int(time.time())
                start, n = self.window
                if start != second:
                    start, n = second, 0
                if n >= self.rate:
                    mode = "throttle"
                else:
                    n += 1
                self.window = (start, n)
            return mode, delay, self.match

    def _serve(self, client):
        buf = b""
        try:
            while True:
                msg = read_message(client, buf)
                if msg is None:
                    return
                head, body, buf = msg
                signed = re.search(rb"Credential=([^/,\s]+)/", head)
                mode, delay, match = self._decide()
                plain = None
                if self.keep_bodies or match is not None or mode in ("blackhole", "delay"):
                    gzipped = re.search(rb"(?i)\r\ncontent-encoding:\s*gzip", head)
                    plain = gzip.decompress(body) if gzipped else body
                with self.lock:
                    self.arrivals.append((time.time(), signed and signed.group(1).decode(),
                                          plain if self.keep_bodies else None))
                self._bump("requests")
                with self.lock:
                    self.counts["body_bytes"] = self.counts.get("body_bytes", 0) + len(body)
                    self.first_request = self.first_request or time.time()
                if mode == "reset":
                    self._bump("reset")
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if mode == "hang":
                    self._bump("hang")
                    with self.lock:
                        self.hung.add(client)
                    while client.recv(65536):
                        pass
                    return
                if mode == "error500":
                    self._bump("error500")
                    client.sendall(FAILED)
                    continue
                if mode == "accept":
                    self._bump("accepted")
                    client.sendall(ACCEPTED)
                    continue
                if mode == "reject" and (match is None or match in plain):
                    self._bump("rejected")
                    client.sendall(REJECTED)
                    continue
                if mode == "throttle":
                    self._bump("throttle")
                    client.sendall(THROTTLED)
                    continue
                if mode in ("blackhole", "delay"):
                    with self.lock:
                        self.unsure.update(stamps(plain))
                if mode == "delay":
                    time.sleep(delay / 1000)
                answer = self._forward(head, body)
                if answer is None:
                    return
                if mode == "blackhole":
                    self._bump("blackhole")
                    return
                self._bump("passed")
                client.sendall(answer)
        except OSError:
            return
        finally:
            with self.lock:
                self.conns.discard(client)
                self.hung.discard(client)
            try:
                client.close()
            except OSError:
                pass

    def _forward(self, head, body):
        # LocalStack can take tens of seconds over a 1000-datum request on a loaded machine.
        with socket.create_connection(self.upstream, timeout=150) as up:
            lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"connection:")]
            up.sendall(b"\r\n".join(lines) + b"\r\nconnection: close\r\n\r\n" + body)
            answer = read_message(up, b"")
            if answer is None:
                return None
            ahead, abody, _ = answer
            lines = [l for l in ahead.split(b"\r\n")
                     if not l.lower().startswith((b"connection:", b"content-length:"))]
            return (b"\r\n".join(lines) + b"\r\ncontent-length: " + str(len(abody)).encode()
                    + b"\r\n\r\n" + abody)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", type=int, required=True, help="LocalStack's port")
    p.add_argument("--port", type=int, required=True, help="where the agent connects")
    p.add_argument("--control", type=int, required=True,
                   help="POST /mode?m=MODE[&delay_ms=N][&rate=N][&match=TEXT]")
    args = p.parse_args()
    proxy = FaultProxy(args.upstream, args.port).start()

    class Control(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path != "/mode" or q.get("m") not in MODES:
                self.send_response(400)
                self.end_headers()
                return
            proxy.set(q["m"], delay_ms=int(q.get("delay_ms", 0)),
                      rate=int(q["rate"]) if "rate" in q else None,
                      match=q["match"].encode() if "match" in q else None)
            body = json.dumps(proxy.counts).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer(("127.0.0.1", args.control), Control).serve_forever()


if __name__ == "__main__":
    main()
