"""The admin HTTP server (src/admin.c) against real clients, and the metrics
registry's output read by the reference Prometheus parser.

The server under test is test/integration/admin_server.c (built by meson next
to the unit tests): the admin listener on 127.0.0.1 with a registry holding
every kind of family, a readiness flag toggled by SIGUSR1, a loop stall on
SIGUSR2, and a 1 ms timer doing fake work whose tick count
(clickloop_test_work_ticks_total) shows whether the loop keeps working while a
test attacks the server. It needs none of the deps/services servers.

Run: .venv/bin/python -m pytest -q test/integration/test_admin.py
(CLICKLOOP_ADMIN_SERVER names the program; by default it is found next to
CLICKLOOP_BIN, as <build>/test/admin_server.)

Waits poll a condition against a deadline; nothing sleeps to let something
happen. The only sleeps pace clients that are slow on purpose.
"""

import os
import resource
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
SOURCE_ROOT = Path(os.environ.get("CLICKLOOP_SOURCE_ROOT",
                                  Path(__file__).resolve().parents[2]))

# Timeouts of the shared server, short so that the tests are quick.
REQUEST_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0
# How long a request may take on a healthy server (the sanitizer build is slow).
PROMPT = 1.0
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# ---------------------------------------------------------------- server process

def admin_server_path():
    if "CLICKLOOP_ADMIN_SERVER" in os.environ:
        return Path(os.environ["CLICKLOOP_ADMIN_SERVER"])
    if "CLICKLOOP_BIN" in os.environ:
        return Path(os.environ["CLICKLOOP_BIN"]).parent / "test" / "admin_server"
    return SOURCE_ROOT / "build" / "test" / "admin_server"


class Server:
    """One admin_server process; stop() asserts that it closed cleanly."""

    def __init__(self, log_dir, *args):
        path = admin_server_path()
        if not path.is_file():
            pytest.fail(f"admin_server not found at {path}: build it (meson compile -C build)",
                        pytrace=False)
        self.stderr_path = Path(log_dir) / f"admin_server-{time.monotonic_ns()}.stderr"
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([str(path), "--port", "0", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=self.stderr)
        line = self._first_line(deadline=time.monotonic() + 15)
        assert line.startswith("listening on "), f"unexpected first line {line!r}"
        self.port = int(line.rsplit(":", 1)[1])

    def _first_line(self, deadline):
        out = b""
        fd = self.proc.stdout.fileno()
        while not out.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                pytest.fail(f"admin_server did not start: {self.read_stderr()}", pytrace=False)
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 256)
                if not chunk:
                    pytest.fail(f"admin_server exited: {self.read_stderr()}", pytrace=False)
                out += chunk
        return out.decode().strip()

    def read_stderr(self):
        self.stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum):
        self.proc.send_signal(signum)

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.stdout.close()
            self.stderr.close()
        # 0 means every handle closed and uv_loop_close() succeeded (and, in
        # the sanitizer build, no leak or error was reported).
        assert rc == 0, f"admin_server exited with {rc}: {self.stderr_path.read_text()}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("admin"),
               "--request-timeout-ms", int(REQUEST_TIMEOUT * 1000),
               "--idle-timeout-ms", int(IDLE_TIMEOUT * 1000))
    yield s
    s.stop()


@pytest.fixture
def make_server(tmp_path):
    """A dedicated server with its own options, for tests that disturb it."""
    started = []

    def make(*args):
        s = Server(tmp_path, *args)
        started.append(s)
        return s
    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="module", autouse=True)
def many_open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 2200:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is too low for 1 000 connections",
                    pytrace=False)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------- HTTP client

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def __repr__(self):
        return f"Response({self.status}, {self.headers}, {self.body[:200]!r})"


class Client:
    """A raw HTTP/1.1 connection: send bytes, read responses in order."""

    def __init__(self, port, nodelay=False):
        self.sock = socket.create_connection((HOST, port), timeout=10)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete response in time")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the server")
        if self.pos > 65536:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += chunk

    def read_response(self, head=False, timeout=5.0):
        deadline = time.monotonic() + timeout
        while (end := self.buf.find(b"\r\n\r\n", self.pos)) < 0:
            self._fill(deadline)
        lines = self.buf[self.pos:end].decode("latin-1").split("\r\n")
        self.pos = end + 4
        version, status, _reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers["content-length"])
        while len(self.buf) - self.pos < length:
            self._fill(deadline)
        body = bytes(self.buf[self.pos:self.pos + length])
        self.pos += length
        return Response(int(status), headers, body)

    def wait_closed(self, timeout):
        """Seconds until the server closes the connection (EOF or reset);
        raises TimeoutError if it stays open longer than `timeout`."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("connection still open")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - start
            except socket.timeout:
                continue
            if not chunk:
                return time.monotonic() - start


def request(port, method="GET", path="/healthz", headers=(), body=b"", timeout=PROMPT * 5):
    """One request on a fresh connection, closed after the response."""
    c = Client(port)
    try:
        lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close", *headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        c.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return c.read_response(head=method == "HEAD", timeout=timeout)
    finally:
        c.close()


def get(port, path, timeout=PROMPT * 5):
    return request(port, "GET", path, timeout=timeout)


def timed_get(port, path="/healthz"):
    start = time.monotonic()
    r = get(port, path)
    return r, time.monotonic() - start


def scrape(port):
    """The /metrics page as {(sample name, frozenset of labels): value}."""
    r = get(port, "/metrics")
    assert r.status == 200, r
    samples = {}
    for family in text_string_to_metric_families(r.body.decode("utf-8")):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def work_ticks(port):
    return scrape(port)[("clickloop_test_work_ticks_total", frozenset())]


def wait_until(what, condition, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        time.sleep(interval)


def simple_request(path="/healthz", method="GET", extra=""):
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


# ---------------------------------------------------------------- routes

def test_healthz_answers_ok(server):
    r = get(server.port, "/healthz")
    assert (r.status, r.body) == (200, b"ok\n")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "date" in r.headers


def test_readyz_is_503_with_what_is_missing_until_ready(server):
    r = get(server.port, "/readyz")
    assert r.status == 503, r
    assert r.body == b"not ready: no Kafka partitions assigned; MariaDB unreachable\n"
    server.signal(signal.SIGUSR1)

    def ready_response():
        r = get(server.port, "/readyz")
        return r if r.status == 200 else None
    r = wait_until("/readyz says ready", ready_response)
    assert r.body == b"ready\n"
    server.signal(signal.SIGUSR1)
    wait_until("/readyz is 503 again", lambda: get(server.port, "/readyz").status == 503)


def test_metrics_parse_with_the_prometheus_parser(server):
    r = get(server.port, "/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"] == METRICS_CONTENT_TYPE
    families = {f.name: f for f in text_string_to_metric_families(r.body.decode("utf-8"))}

    # The parser names a counter family without its _total suffix.
    events = families["clickloop_test_events"]
    assert events.type == "counter"
    assert events.documentation == "Events consumed, by topic and partition."
    values = {(s.labels["topic"], s.labels["partition"]): s.value for s in events.samples
              if s.name == "clickloop_test_events_total"}
    assert values == {("clicks", "0"): 5, ("clicks", "1"): 7,
                      ('we"ird\\topic\nname', "2"): 1}

    temperature = families["clickloop_test_temperature"]
    assert temperature.type == "gauge"
    assert temperature.documentation == "A gauge that went negative.\nSecond line \\ here."
    assert [s.value for s in temperature.samples] == [-3.5]

    latency = families["clickloop_test_latency_seconds"]
    assert latency.type == "histogram"
    by_name = {}
    for s in latency.samples:
        assert s.labels["dependency"] == "mariadb"
        key = s.name + (f"{{le={s.labels['le']}}}" if "le" in s.labels else "")
        by_name[key] = s.value
    assert by_name == {
        "clickloop_test_latency_seconds_bucket{le=0.01}": 1,
        "clickloop_test_latency_seconds_bucket{le=0.1}": 3,
        "clickloop_test_latency_seconds_bucket{le=1}": 3,
        "clickloop_test_latency_seconds_bucket{le=+Inf}": 4,
        "clickloop_test_latency_seconds_sum": pytest.approx(2.105),
        "clickloop_test_latency_seconds_count": 4,
    }

    assert families["clickloop_test_work_ticks"].samples[0].value > 0
    assert families["clickloop_admin_requests"].type == "counter"
    assert families["clickloop_admin_connections"].type == "gauge"
    assert families["clickloop_admin_connections"].samples[0].value >= 1
    assert families["clickloop_event_loop_lag_seconds"].type == "histogram"


def test_head_sends_headers_only(server):
    c = Client(server.port)
    try:
        # If HEAD sent a body, the next response would start inside it.
        c.send(simple_request("/metrics", "HEAD") + simple_request("/healthz"))
        head = c.read_response(head=True)
        assert head.status == 200
        assert int(head.headers["content-length"]) > 100
        assert head.headers["content-type"] == METRICS_CONTENT_TYPE
        r = c.read_response()
        assert (r.status, r.body) == (200, b"ok\n")
    finally:
        c.close()


def test_unknown_path_is_404(server):
    assert get(server.port, "/nope").status == 404
    assert get(server.port, "/metrics/extra").status == 404


def test_query_string_is_ignored(server):
    assert get(server.port, "/healthz?verbose=1").status == 200


def test_post_to_metrics_is_405_with_allow(server):
    r = request(server.port, "POST", "/metrics", body=b"x=1")
    assert r.status == 405, r
    assert r.headers["allow"] == "GET, HEAD"


def test_malformed_request_is_400_and_closed(server):
    c = Client(server.port)
    try:
        c.send(b"GARBAGE\r\n\r\n")
        r = c.read_response()
        assert r.status == 400, r
        assert r.headers["connection"] == "close"
        c.wait_closed(timeout=PROMPT)
    finally:
        c.close()


def test_body_over_limit_is_413_and_closed(server):
    c = Client(server.port)
    try:
        c.send(b"POST /metrics HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n")
        r = c.read_response()
        assert r.status == 413, r
        c.wait_closed(timeout=PROMPT * 3)
    finally:
        c.close()


def test_headers_over_limit_are_431(server):
    r = request(server.port, "GET", "/healthz", headers=[f"X-Big: {'a' * 10000}"])
    assert r.status == 431, r


def test_target_over_limit_is_414(server):
    assert get(server.port, "/healthz?" + "a" * 10000).status == 414


# ---------------------------------------------------------------- connections

def test_keep_alive_serves_two_requests_on_one_connection(server):
    c = Client(server.port)
    try:
        c.send(simple_request("/healthz"))
        first = c.read_response()
        c.send(simple_request("/readyz"))
        second = c.read_response()
        assert (first.status, second.status) == (200, 503)
        assert "connection" not in first.headers
    finally:
        c.close()


def test_connection_close_is_honoured(server):
    c = Client(server.port)
    try:
        c.send(simple_request("/healthz", extra="Connection: close\r\n"))
        r = c.read_response()
        assert r.status == 200
        assert r.headers["connection"] == "close"
        c.wait_closed(timeout=PROMPT)
    finally:
        c.close()


def test_http10_without_keep_alive_is_closed_after_the_response(server):
    c = Client(server.port)
    try:
        c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert c.read_response().status == 200
        c.wait_closed(timeout=PROMPT)
    finally:
        c.close()


def test_pipelined_requests_are_answered_in_order(server):
    c = Client(server.port)
    try:
        c.send(simple_request("/healthz") + simple_request("/nope") +
               simple_request("/metrics", "HEAD") + simple_request("/readyz") +
               simple_request("/metrics", "DELETE"))
        statuses = [c.read_response().status, c.read_response().status,
                    c.read_response(head=True).status, c.read_response().status,
                    c.read_response().status]
        assert statuses == [200, 404, 200, 503, 405]
    finally:
        c.close()


def test_long_pipeline_is_answered_whole_and_in_order(server):
    # More requests than the server answers per turn, so it pauses and resumes.
    n = 200
    c = Client(server.port)
    try:
        c.send(b"".join(simple_request("/healthz" if i % 2 == 0 else "/nope") for i in range(n)))
        statuses = [c.read_response().status for _ in range(n)]
        assert statuses == [200 if i % 2 == 0 else 404 for i in range(n)]
    finally:
        c.close()


def test_request_sent_one_byte_at_a_time_within_the_timeout_is_answered(server):
    data = simple_request("/healthz")
    pace = REQUEST_TIMEOUT / 2 / len(data)
    c = Client(server.port, nodelay=True)
    try:
        for byte in data:
            c.send(bytes([byte]))
            time.sleep(pace)  # a slow client, on purpose
        r = c.read_response()
        assert (r.status, r.body) == (200, b"ok\n")
    finally:
        c.close()


def test_slowloris_is_closed_after_the_request_timeout_while_others_are_served(server):
    ticks_before = work_ticks(server.port)
    slow = Client(server.port, nodelay=True)
    opened = time.monotonic()
    try:
        slow.send(b"GET /healthz HTTP/1.1\r\nX-Never-Ending: ")
        closed_after = None
        latencies = []
        while closed_after is None and time.monotonic() - opened < REQUEST_TIMEOUT + 5:
            try:
                slow.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - opened
                break
            r, latency = timed_get(server.port)
            assert r.status == 200
            latencies.append(latency)
            readable = select.select([slow.sock], [], [], 0.1)[0]
            if readable:
                try:
                    if slow.sock.recv(4096) == b"":
                        closed_after = time.monotonic() - opened
                except ConnectionResetError:
                    closed_after = time.monotonic() - opened
        assert closed_after is not None, "the slow connection was never closed"
        assert REQUEST_TIMEOUT - 0.2 <= closed_after <= REQUEST_TIMEOUT + 2, closed_after
        assert max(latencies) < PROMPT, latencies
    finally:
        slow.close()
    assert work_ticks(server.port) > ticks_before


def test_silent_connection_is_closed_after_the_request_timeout(server):
    c = Client(server.port)
    try:
        took = c.wait_closed(timeout=REQUEST_TIMEOUT + 3)
        assert took >= REQUEST_TIMEOUT - 0.2, took
    finally:
        c.close()


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(server):
    c = Client(server.port)
    try:
        c.send(simple_request("/healthz"))
        assert c.read_response().status == 200
        took = c.wait_closed(timeout=IDLE_TIMEOUT + 3)
        assert took >= IDLE_TIMEOUT - 0.2, took
    finally:
        c.close()


def test_thousand_concurrent_connections_do_not_stop_the_server(make_server):
    s = make_server()  # default limits: 1 024 connections, 10 s request timeout
    ticks_before = work_ticks(s.port)
    clients = []
    try:
        for i in range(1000):
            c = Client(s.port)
            # Half start a request and never finish it, half say nothing.
            if i % 2 == 0:
                c.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
            clients.append(c)
        wait_until("the server holds 1 000 connections",
                   lambda: scrape(s.port)[("clickloop_admin_connections", frozenset())] >= 1000)
        latencies = []
        probe = Client(s.port)
        try:
            for _ in range(20):
                start = time.monotonic()
                probe.send(simple_request("/healthz"))
                assert probe.read_response().status == 200
                latencies.append(time.monotonic() - start)
        finally:
            probe.close()
        assert max(latencies) < PROMPT, latencies
        ticks_during = work_ticks(s.port)
        assert ticks_during > ticks_before
        wait_until("the fake work goes on", lambda: work_ticks(s.port) > ticks_during)
        # The connections are still open: none was dropped to make room.
        for c in clients[:10]:
            c.sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                c.sock.recv(1)
    finally:
        for c in clients:
            c.close()
    wait_until("the connections are gone",
               lambda: scrape(s.port)[("clickloop_admin_connections", frozenset())] <= 2)


def test_connections_over_the_limit_are_closed_at_once(make_server):
    s = make_server("--max-connections", 50)
    clients = [Client(s.port) for _ in range(50)]
    try:
        extra = Client(s.port)
        try:
            r = extra.read_response(timeout=PROMPT * 3)
            assert (r.status, r.body) == (503, b"too many connections\n")
            extra.wait_closed(timeout=PROMPT)
        finally:
            extra.close()
        clients.pop().close()
        wait_until("a freed slot serves a new connection",
                   lambda: _healthz_or_none(s.port) == 200)
        samples = wait_until("/metrics answers", lambda: _scrape_or_none(s.port))
        assert samples[("clickloop_admin_connections_rejected_total",
                        frozenset({("reason", "connection_limit")}))] >= 1
    finally:
        for c in clients:
            c.close()


def _healthz_or_none(port):
    try:
        return get(port, "/healthz", timeout=PROMPT).status
    except (EOFError, ConnectionError, TimeoutError):
        return None


def _scrape_or_none(port):
    """None while the server turns the connection away (503 or closed)."""
    try:
        return scrape(port)
    except (EOFError, ConnectionError, TimeoutError, AssertionError):
        return None


def test_pipelined_flood_without_reading_keeps_memory_bounded(server):
    n = 20000
    flood = Client(server.port)
    rss_before = server.rss_kib()
    payload = simple_request("/healthz") * n
    sender = threading.Thread(target=flood.send, args=(payload,), daemon=True)
    sender.start()
    try:
        # While the flood waits for us to read, the server stays responsive.
        for _ in range(5):
            r, latency = timed_get(server.port)
            assert r.status == 200 and latency < PROMPT, latency
        grown = server.rss_kib() - rss_before
        assert grown < 64 * 1024, f"server grew by {grown} KiB"
        for i in range(n):
            assert flood.read_response(timeout=30).status == 200, i
        sender.join(timeout=10)
        assert not sender.is_alive()
    finally:
        flood.close()


def test_healthz_is_503_when_the_loop_stalled(make_server):
    s = make_server("--stall-ms", 1500, "--stall-block-ms", 2500)
    c = Client(s.port)
    try:
        c.send(simple_request("/healthz"))
        assert c.read_response().status == 200
        s.signal(signal.SIGUSR2)

        # A request that arrives while a callback blocks the loop is read
        # right after it, before the heartbeat had a chance to run.
        def stalled_answer():
            c.send(simple_request("/healthz"))
            r = c.read_response(timeout=10)
            return r if r.status == 503 else None
        r = wait_until("/healthz reports the stall", stalled_answer, interval=0.02)
        assert r.body.startswith(b"event loop stalled: last heartbeat "), r
        wait_until("/healthz is ok again", lambda: get(s.port, "/healthz").status == 200)
        lag = scrape(s.port)
        assert lag[("clickloop_event_loop_lag_seconds_sum", frozenset())] >= 1.0
    finally:
        c.close()
