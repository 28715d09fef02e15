"""Operations acceptance tests: SIGHUP reload (in place and by reconnecting),
SIGTERM during a large run, /metrics against the database, secrets kept out
of logs and metrics, and the admin listener under abuse while ingesting.

Each test gets its own topic, consumer group and database (harness.IngestEnv)
and runs the clickloop binary (CLICKLOOP_BIN) against the real servers of
deps/services. Waits poll with deadlines; measured figures go through
harness.report() into the meson test log.

Run alone: .venv/bin/python -m pytest -q test/integration/test_operations.py
"""

import json
import math
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import harness
from harness import Message

# Generous for the AddressSanitizer build, which runs these same tests.
CATCH_UP = 300
DRAIN_TIMEOUT_S = 30


# ---------------------------------------------------------------- helpers

def free_port():
    with socket.socket() as s:
        s.bind((harness.HOST, 0))
        return s.getsockname()[1]


def events(prefix, n, start=0, partitions=harness.DEFAULT_PARTITIONS):
    """n valid events with distinct event ids (so distinct row keys), from
    about an hour ago on (never old enough for retention), spread round robin
    over the partitions (a partition left empty never gets a committed
    offset, and the harness compares committed with end offsets)."""
    base_ms = (int(time.time()) // 3600 - 1) * 3_600_000
    for i in range(start, start + n):
        yield Message(partition=i % partitions, value=json.dumps({
            "event_id": f"{prefix}-{i}", "user_id": f"user-{i % 997}",
            "timestamp": base_ms + i * 13, "url": f"https://shop.example.com/p/{i % 5000}",
            "country": "DE", "city": "Berlin", "browser": "Firefox",
        }).encode())


class PacedProducer(threading.Thread):
    """Produces `total` events in chunks with a pause between them, so that a
    reload or an attack happens while clickloop is ingesting."""

    def __init__(self, env, prefix, total, chunk=2000, pause=0.1, start_at=0):
        super().__init__(daemon=True)
        self.env, self.prefix, self.total = env, prefix, total
        self.chunk, self.pause, self.start_at = chunk, pause, start_at
        self.produced = 0
        self.error = None

    def run(self):
        try:
            i = self.start_at
            end = self.start_at + self.total
            while i < end:
                n = min(self.chunk, end - i)
                self.env.produce(events(self.prefix, n, i), record=False)
                i += n
                self.produced += n
                time.sleep(self.pause)
        except Exception as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout=300):
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        assert self.error is None, f"producing failed: {self.error!r}"
        assert self.produced == self.total


def http_get(port, path, timeout=10):
    """(status, body text)."""
    try:
        with urllib.request.urlopen(f"http://{harness.HOST}:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def scrape(port):
    """The /metrics page parsed by the reference parser, as
    ({(sample name, frozenset of labels): value}, raw text)."""
    status, text = http_get(port, "/metrics")
    assert status == 200, (status, text[:200])
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, text


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def metric_now(port, name, **labels):
    """One sample scraped now; NaN (never equal, greater or less than
    anything) while the listener does not answer yet."""
    try:
        samples, _ = scrape(port)
    except OSError:
        return math.nan
    return metric(samples, name, **labels)


def wait_for_log(proc, pattern, timeout, what=None):
    """Wait until the process log matches `pattern` (a regex); returns the match."""
    rx = re.compile(pattern)

    def found():
        return rx.search(proc.log_text())
    return harness.wait_until(found, timeout, what or f"log line /{pattern}/",
                              check=proc.assert_running, describe=lambda: proc.log_tail(20))


def rows_by_partition(env):
    """{partition: (count, min offset, max offset)} of click_data."""
    rows = env.db.query("SELECT kafka_partition, COUNT(*), MIN(kafka_offset), MAX(kafka_offset) "
                        "FROM click_data GROUP BY kafka_partition")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def assert_exactly_once(env, n):
    total, distinct = env.db.query("SELECT COUNT(*), COUNT(DISTINCT row_key) FROM click_data")[0]
    assert (total, distinct) == (n, n), f"click_data: {total} rows, {distinct} keys, want {n}"
    assert env.committed_offsets() == env.end_offsets()


def base_overrides(port, **sections):
    """Config overrides with an admin listener on `port`, merged with `sections`."""
    out = {"admin": {"listen": f"{harness.HOST}:{port}"},
           "shutdown": {"drain_timeout": f"{DRAIN_TIMEOUT_S}s"}}
    return harness.deep_merge(out, sections)


def sighup(proc):
    os.kill(proc.pid, signal.SIGHUP)


def count_lines(proc, text):
    return proc.log_text().count(text)


# ---------------------------------------------------------------- a. reload in place

def test_sighup_applies_batch_size_and_log_level_in_place_without_loss(env, request):
    port = free_port()
    env.write_config(overrides=base_overrides(
        port, ingest={"batch_max_events": 1000, "batch_max_delay": "200ms"},
        log={"level": "info", "format": "logfmt"}))
    proc = env.start()
    n = 60_000
    producer = PacedProducer(env, "a", n, chunk=1500, pause=0.1)
    producer.start()
    harness.wait_until(lambda: env.db.count("click_data") >= 10_000, CATCH_UP,
                       "the first 10 000 events stored", check=proc.assert_running)
    before, _ = scrape(port)
    big_before = (metric(before, "clickloop_batch_events_count")
                  - metric(before, "clickloop_batch_events_bucket", le="10"))
    assert big_before > 0, "batches before the reload should hold more than 10 events"

    env.write_config(overrides=base_overrides(
        port, ingest={"batch_max_events": 10, "batch_max_delay": "200ms"},
        log={"level": "debug", "format": "json"}))
    sighup(proc)
    wait_for_log(proc, r'"msg":"reloaded [^"]*: 3 setting\(s\) changed"', 30)
    log = proc.log_text()
    for line in ("ingest.batch_max_events changed: applied in place",
                 "log.level changed: applied in place",
                 "log.format changed: applied in place"):
        assert line in log, f"missing log line {line!r}"
    # The lines after the reload are JSON: the new format took effect at once.
    after_reload = log[log.index("ingest.batch_max_events changed"):].splitlines()[1:]
    assert after_reload and all(l.startswith("{") for l in after_reload if l.strip()), \
        after_reload[:3]

    # Batches that were open at the reload close right after it; measure from then.
    mid, _ = scrape(port)
    harness.wait_until(lambda: metric_now(port, "clickloop_batches_total")
                       >= metric(mid, "clickloop_batches_total") + 50, CATCH_UP,
                       "50 more batches", check=proc.assert_running)
    s1, _ = scrape(port)
    harness.wait_until(lambda: metric_now(port, "clickloop_batches_total")
                       >= metric(s1, "clickloop_batches_total") + 200, CATCH_UP,
                       "200 more batches", check=proc.assert_running)
    s2, _ = scrape(port)
    batches = (metric(s2, "clickloop_batch_events_count")
               - metric(s1, "clickloop_batch_events_count"))
    small = (metric(s2, "clickloop_batch_events_bucket", le="10")
             - metric(s1, "clickloop_batch_events_bucket", le="10"))
    assert batches >= 200 and small == batches, \
        f"after the reload {batches} batches, {small} of them with at most 10 events"
    assert metric(s2, "clickloop_config_reloads_total", result="ok") == 1
    assert metric(s2, "clickloop_config_reloads_total", result="failed") == 0

    producer.finish()
    env.wait_caught_up(n, 0, CATCH_UP)
    assert_exactly_once(env, n)
    final, _ = scrape(port)
    assert metric(final, "clickloop_events_stored_total") == n
    harness.report(request, f"{n} events, {int(metric(final, 'clickloop_batches_total'))} "
                   f"batches; {int(batches)} batches measured after the reload, all <= 10 events")
    assert proc.stop() == 0, proc.log_tail()


# ---------------------------------------------------------------- b. broken config

def test_sighup_with_a_broken_config_keeps_the_old_one_and_logs_every_problem(env, request):
    port = free_port()
    good = env.write_config(overrides=base_overrides(port, ingest={"batch_max_events": 500}))
    proc = env.start()
    env.produce(events("b", 10_000), record=False)
    env.wait_caught_up(10_000, 0, CATCH_UP)

    # Two problems the loader finds.
    cfg = json.loads(good.read_text())
    cfg["mariadb"]["pool_size"] = 0
    cfg["kafka"]["brokerz"] = "x"
    cfg["ingest"]["batch_max_delay"] = "10"
    good.write_text(json.dumps(cfg))
    sighup(proc)
    wait_for_log(proc, r"reload rejected: 3 problem\(s\)", 30)
    log = proc.log_text()
    for problem in ("mariadb.pool_size: must be between 1 and 64, got 0",
                    "kafka.brokerz: unknown key",
                    "ingest.batch_max_delay: "):
        assert problem in log, f"problem {problem!r} not logged:\n{proc.log_tail(15)}"

    # Two problems only librdkafka finds: caught before anything stops.
    env.write_config(overrides=base_overrides(
        port, ingest={"batch_max_events": 7},
        kafka={"properties": {"no.such.property": 1, "fetch.wait.max.ms": "soon"}}))
    sighup(proc)
    wait_for_log(proc, r"reload rejected: 2 problem\(s\)", 30)
    log = proc.log_text()
    assert 'kafka.properties[\\"no.such.property\\"]: librdkafka refuses' in log, proc.log_tail(8)
    assert 'kafka.properties[\\"fetch.wait.max.ms\\"]: librdkafka refuses' in log, proc.log_tail(8)
    assert "still running on the previous configuration" in log
    assert "changed: applied" not in log, "a rejected reload applied something"

    # Still ingesting, on the old configuration (batches of up to 500).
    samples, _ = scrape(port)
    assert metric(samples, "clickloop_config_reloads_total", result="failed") == 2
    assert metric(samples, "clickloop_config_reloads_total", result="ok") == 0
    env.produce(events("b", 20_000, start=10_000), record=False)
    env.wait_caught_up(30_000, 0, CATCH_UP)
    assert_exactly_once(env, 30_000)
    samples, _ = scrape(port)
    larger_than_10 = (metric(samples, "clickloop_batch_events_count")
                      - metric(samples, "clickloop_batch_events_bucket", le="10"))
    assert larger_than_10 > 0
    assert proc.stop() == 0, proc.log_tail()


# ---------------------------------------------------------------- c. pool size in place

def mariadb_connections(env):
    """clickloop's connections to the test's database, as the server sees them."""
    return env.db.scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                         "WHERE DB = %s AND ID <> CONNECTION_ID()", (env.db.name,))


class ReadinessPoller(threading.Thread):
    """Polls /readyz until stopped; keeps every (status, body)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.answers = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.answers.append(http_get(self.port, "/readyz", timeout=2))
            except OSError as exc:
                self.answers.append((0, repr(exc)))
            self.done.wait(0.02)

    def stop(self):
        self.done.set()
        self.join(10)
        return self.answers


def test_sighup_changing_pool_size_resizes_the_pool_in_place_without_loss(env, request):
    port = free_port()

    def config(pool_size):
        env.write_config(overrides=base_overrides(port, mariadb={"pool_size": pool_size}))

    config(4)
    proc = env.start()
    n = 100_000
    # At least 100 pauses of 0.1 s: still producing through both reloads.
    producer = PacedProducer(env, "p", n, chunk=1000, pause=0.1)
    producer.start()
    harness.wait_until(lambda: env.db.count("click_data") >= 10_000, CATCH_UP,
                       "the first 10 000 events stored", check=proc.assert_running)
    harness.wait_until(lambda: mariadb_connections(env) == 4, 30,
                       "4 connections in the server's process list", check=proc.assert_running)
    assert metric_now(port, "clickloop_dependency_connections", dependency="mariadb") == 4
    readiness = ReadinessPoller(port)
    readiness.start()

    steps = []
    for size in (2, 6):
        assert producer.is_alive(), "the producer finished before the reload"
        stored_before = env.db.count("click_data")
        config(size)
        t0 = time.monotonic()
        sighup(proc)
        harness.wait_until(lambda: metric_now(port, "clickloop_dependency_connections",
                                              dependency="mariadb") == size, 60,
                           f"clickloop_dependency_connections = {size}",
                           check=proc.assert_running)
        harness.wait_until(lambda: mariadb_connections(env) == size, 60,
                           f"{size} connections in the server's process list",
                           check=proc.assert_running, describe=lambda: mariadb_connections(env))
        resized_s = time.monotonic() - t0
        # Ingestion goes on over the resized pool.
        harness.wait_until(lambda: env.db.count("click_data") >= stored_before + 5_000, CATCH_UP,
                           f"5 000 more events stored with {size} connections",
                           check=proc.assert_running)
        steps.append((size, resized_s, stored_before))
    answers = readiness.stop()

    log = proc.log_text()
    assert count_lines(proc, "mariadb.pool_size changed: applied in place") == 2, \
        proc.log_tail(20)
    assert "pool resized from 4 to 2 connections" in log
    assert "pool resized from 2 to 6 connections" in log
    # The consumer was never restarted: no restart, one consumer for the whole
    # run, ready (partitions assigned, MariaDB up) at every poll.
    assert "restarting" not in log and "restart complete" not in log, proc.log_tail(20)
    assert "Kafka consumer closed" not in log
    assert count_lines(proc, "consuming 1 topic(s)") == 1
    not_ready = [a for a in answers if a[0] != 200]
    assert answers and not not_ready, f"/readyz during the resizes: {not_ready[:3]}"

    producer.finish()
    env.wait_caught_up(n, 0, CATCH_UP)
    assert_exactly_once(env, n)
    samples, _ = scrape(port)
    assert metric(samples, "clickloop_events_stored_total") == n
    assert metric(samples, "clickloop_events_consumed_total") == n
    assert metric(samples, "clickloop_config_reloads_total", result="ok") == 2
    # No query was cut short by the shrink (the store would have retried its
    # batch) and no connection needed a reconnect.
    assert metric(samples, "clickloop_batch_retries_total") == 0
    assert metric(samples, "clickloop_batch_failures_total") == 0
    assert metric(samples, "clickloop_reconnects_total", dependency="mariadb") == 0
    harness.report(request, f"{n} events; " + "; ".join(
        f"pool -> {size} in {secs * 1000:.0f} ms (at {rows} rows)" for size, secs, rows in steps)
        + f"; /readyz 200 at all {len(answers)} polls")
    assert proc.stop() == 0, proc.log_tail()


# ---------------------------------------------------------------- d. reload by reconnecting

def test_sighup_changing_kafka_settings_reconnects_ingest_without_loss(env, request):
    port = free_port()
    env.write_config(overrides=base_overrides(port, mariadb={"pool_size": 4}))
    proc = env.start()
    n = 80_000
    producer = PacedProducer(env, "c", n, chunk=2000, pause=0.1)
    producer.start()
    harness.wait_until(lambda: env.db.count("click_data") >= 10_000, CATCH_UP,
                       "the first 10 000 events stored", check=proc.assert_running)

    # A pool size change that comes with a restart of ingest takes effect
    # through the restart: the new pool is opened with the new size.
    env.write_config(overrides=base_overrides(
        port, mariadb={"pool_size": 2},
        kafka={"properties": {"session.timeout.ms": harness.TEST_SESSION_TIMEOUT_MS,
                              "fetch.wait.max.ms": 50}}))
    t0 = time.monotonic()
    sighup(proc)
    readiness = []
    # Readiness says "restarting" while the restart runs (it may be short).
    while time.monotonic() - t0 < 10 and "restart complete" not in proc.log_text():
        try:
            readiness.append(http_get(port, "/readyz", timeout=2))
        except OSError:
            pass
    wait_for_log(proc, r"restart complete in (\d+) ms", 60)
    restart_ms = int(re.search(r"restart complete in (\d+) ms", proc.log_text()).group(1))
    assert ('kafka.properties[\\"fetch.wait.max.ms\\"] changed: applied by reconnecting ingest'
            in proc.log_text()), proc.log_tail(20)
    assert "pool resized" not in proc.log_text()
    # The pool size is reported as applied by that restart, not in place.
    assert "mariadb.pool_size changed: applied by reconnecting ingest" in proc.log_text()
    harness.wait_until(lambda: metric_now(port, "clickloop_dependency_connections",
                                      dependency="mariadb") == 2, 60,
                       "the new pool of 2 connections", check=proc.assert_running)
    stored_at_first = env.db.count("click_data")

    # Kafka settings alone reconnect the consumer the same way.
    env.write_config(overrides=base_overrides(
        port, mariadb={"pool_size": 2},
        kafka={"properties": {"session.timeout.ms": harness.TEST_SESSION_TIMEOUT_MS,
                              "fetch.wait.max.ms": 100}}))
    sighup(proc)
    wait_for_log(proc, r'kafka.properties\[\\"fetch.wait.max.ms\\"\] changed: applied by '
                 r'reconnecting ingest', 30)
    harness.wait_until(lambda: proc.log_text().count("restart complete") >= 2, 60,
                       "the second restart", check=proc.assert_running)

    producer.finish()
    env.wait_caught_up(n, 0, CATCH_UP)
    assert_exactly_once(env, n)
    samples, _ = scrape(port)
    # Counters carried over both restarts, and nothing was stored twice.
    assert metric(samples, "clickloop_events_stored_total") == n
    assert metric(samples, "clickloop_events_consumed_total") == n
    assert metric(samples, "clickloop_config_reloads_total", result="ok") == 2
    restarting = [r for r in readiness if r[0] == 503 and "restarting" in r[1]]
    harness.report(request, f"{n} events through two restarts; first restart took {restart_ms} ms "
                   f"(at {stored_at_first} rows); /readyz said 'restarting' {len(restarting)} "
                   f"time(s) out of {len(readiness)} polls during it")
    assert proc.stop() == 0, proc.log_tail()


def test_a_fatal_consumer_error_restarts_ingest_from_the_committed_offsets(env, request):
    """Two clickloops with one static group member id: the broker fences the first (a fatal
    librdkafka error). It restarts ingest through the restart path, with backoff, counted;
    once the intruder is gone it consumes again, and every event is stored exactly once."""
    port = free_port()
    props = {"group.instance.id": f"fenced-{env.group}",
             "session.timeout.ms": harness.TEST_SESSION_TIMEOUT_MS}
    env.write_config(overrides=base_overrides(port, kafka={"properties": props}))
    first = env.start()
    n = 40_000
    producer = PacedProducer(env, "f", n, chunk=1000, pause=0.1)
    producer.start()
    harness.wait_until(lambda: env.db.count("click_data") >= 2_000, CATCH_UP,
                       "ingestion under way", check=first.assert_running)

    # The intruder joins with the same member id; its admin listener is elsewhere.
    intruder_cfg = env.write_config(overrides=base_overrides(free_port(),
                                                             kafka={"properties": props}),
                                    name="intruder.json")
    intruder = env.start(intruder_cfg)
    wait_for_log(first, r"fatal consumer error", 60, "the first instance fenced")
    wait_for_log(first, r"ingest restarts from the committed offsets in \d+ ms "
                 r"\(restart 1 in a row\)", 30)
    assert intruder.stop() == 0, intruder.log_tail()

    wait_for_log(first, r"restarting ingest from the committed offsets after a fatal consumer "
                 r"error", 90)
    producer.finish()
    env.wait_caught_up(n, 0, CATCH_UP, proc=first)
    assert_exactly_once(env, n)
    harness.wait_until(lambda: metric_now(port, "clickloop_ingest_restarts_total") >= 1, 30,
                       "the restart counted", check=first.assert_running)
    restarts = metric_now(port, "clickloop_ingest_restarts_total")
    harness.report(request, f"{n} events, {int(restarts)} ingest restart(s) after fencing")
    assert first.stop() == 0, first.log_tail()


def test_fatal_consumer_errors_that_keep_coming_make_the_process_exit_1(env, request):
    """Two clickloops that keep one static member id fence each other after every restart:
    restarts that keep failing end with exit status 1 (a supervisor sees it), and the one
    left consumes every event exactly once."""
    props = {"group.instance.id": f"twins-{env.group}",
             "session.timeout.ms": harness.TEST_SESSION_TIMEOUT_MS}
    ports = [free_port(), free_port()]
    cfgs = [env.write_config(overrides=base_overrides(p, kafka={"properties": props}),
                             name=f"twin{i}.json") for i, p in enumerate(ports)]
    twins = [env.start(c) for c in cfgs]
    n = 20_000
    producer = PacedProducer(env, "t", n, chunk=500, pause=0.2)
    producer.start()
    harness.wait_until(lambda: any(not t.running() for t in twins), 240,
                       "one of the twins to give up", interval=0.5)
    gone = next(t for t in twins if not t.running())
    left = next(t for t in twins if t is not gone)
    assert gone.proc.wait() == 1, gone.log_tail()
    assert re.search(r"the Kafka consumer failed fatally again after 5 restarts of ingest",
                     gone.log_text()), gone.log_tail()
    producer.finish()
    env.wait_caught_up(n, 0, CATCH_UP, proc=left)
    assert_exactly_once(env, n)
    restarts = metric_now(ports[twins.index(left)], "clickloop_ingest_restarts_total")
    harness.report(request, f"the twin that gave up restarted ingest 5 times; the other "
                   f"{int(restarts)} time(s), then stored all {n} events")
    assert left.stop() == 0, left.log_tail()


def test_sigterm_during_a_restart_that_cannot_reconnect_exits_0(env, request):
    port = free_port()
    env.write_config(overrides=base_overrides(port))
    proc = env.start()
    env.produce(events("c2", 5_000), record=False)
    env.wait_caught_up(5_000, 0, CATCH_UP)
    # Nothing listens on the new port: the restart drains and closes the old
    # ingest, then waits for a MariaDB that never answers.
    env.write_config(overrides=base_overrides(port, mariadb={
        "port": free_port(), "connect_timeout": "1s", "reconnect_max_backoff": "1s"}))
    sighup(proc)
    wait_for_log(proc, r"mariadb.port changed: applied by reconnecting ingest", 30)
    status, body = harness.wait_until(
        # The first answers may still see the old pool connected, for the few
        # ms until its drain closes it; wait for the state the restart stays in.
        lambda: (lambda r: r if r[0] == 503 and "restarting" in r[1]
                 and "no MariaDB connection" in r[1] else None)(
            http_get(port, "/readyz")), 30, "/readyz to say restarting without MariaDB",
        check=proc.assert_running)
    assert "no MariaDB connection" in body, body
    # A reload meanwhile waits for the restart to complete.
    sighup(proc)
    wait_for_log(proc, r"the reload waits until the restart is complete", 30)
    t0 = time.monotonic()
    rc = proc.stop(timeout=DRAIN_TIMEOUT_S + 30)
    took = time.monotonic() - t0
    assert rc == 0, proc.log_tail()
    assert took < 5, f"exit took {took:.1f}s"
    assert_exactly_once(env, 5_000)
    harness.report(request, f"SIGTERM during a stuck restart: exit 0 after {took:.2f}s")


def test_sigterm_with_the_search_cluster_down_exits_0_and_keeps_aggregates_marked(env, request):
    port = free_port()
    down = f"http://{harness.HOST}:{free_port()}"   # nothing listens there
    env.write_config(overrides=base_overrides(
        port, aggregation={"enabled": True, "interval": "500ms", "windows": ["1h"]},
        elasticsearch={"urls": [down], "index": "clickloop-t-down", "retry_min_backoff": "100ms",
                       "retry_max_backoff": "1s", "request_timeout": "2s"}))
    proc = env.start()
    env.produce(events("d2", 3_000), record=False)
    env.wait_caught_up(3_000, 0, CATCH_UP)
    # Every event aggregated (runs claim what has arrived, so the first ones
    # may hold only part of the stream), none of the rows indexed.
    harness.wait_until(lambda: env.db.scalar("SELECT COALESCE(SUM(clicks), 0) FROM agg_stats")
                       == 3_000, 60, "all 3 000 events aggregated", check=proc.assert_running)
    marked = env.db.scalar("SELECT COUNT(*) FROM agg_stats WHERE needs_index = 1")
    t0 = time.monotonic()
    rc = proc.stop(timeout=DRAIN_TIMEOUT_S + 30)
    took = time.monotonic() - t0
    assert rc == 0, proc.log_tail()
    assert took < DRAIN_TIMEOUT_S, f"exit took {took:.1f}s"
    assert env.db.scalar("SELECT COUNT(*) FROM agg_stats WHERE needs_index = 1") == marked > 0
    assert_exactly_once(env, 3_000)
    harness.report(request, f"search cluster down: exit 0 after {took:.2f}s, {marked} aggregate "
                   f"rows still marked for indexing")


def test_sighup_changing_elasticsearch_settings_replaces_the_sink_without_losing_documents(
        env, es_url, opensearch_url, http, request):
    """New connection settings put a new sink under the running indexer:
    documents in flight on the old one are cancelled and stay marked in
    MariaDB, the index is prepared again through the new one before anything
    is sent, and every aggregate ends up in the index. (The URL changes but
    leads to the same cluster: rows already acknowledged by a cluster are not
    sent to another one; moving to an empty cluster means marking them again.)"""
    url = search_url(es_url, opensearch_url, http)
    same_cluster = url.replace("127.0.0.1", "localhost")
    port = free_port()
    index = f"clickloop-t-move-{uuid.uuid4().hex[:10]}"

    def config(base_url, bulk):
        return base_overrides(
            port, aggregation={"enabled": True, "interval": "500ms", "windows": ["1m", "1h"]},
            elasticsearch={"urls": [base_url], "index": index, "bulk_max_docs": bulk,
                           "max_in_flight": 4})
    try:
        n = 12_000
        base = (int(time.time()) // 3600 - 2) * 3_600_000
        env.produce((Message(json.dumps({
            "event_id": f"m{i}", "user_id": f"u{i % 300}", "timestamp": base + i * 150,
            "url": f"https://example.com/{i % 400}", "country": ["DE", "FR", "US"][i % 3],
        }).encode(), partition=i % 4) for i in range(n)), record=False)
        env.write_config(overrides=config(url, 50))
        proc = env.start()
        harness.wait_until(lambda: metric_now(port, "clickloop_index_documents_total",
                                              outcome="indexed") > 0, 120,
                           "the first documents indexed", check=proc.assert_running)
        env.write_config(overrides=config(same_cluster, 200))
        sighup(proc)
        wait_for_log(proc, r"elasticsearch.urls changed: applied in place", 30)
        assert "elasticsearch.bulk_max_docs changed: applied in place" in proc.log_text()
        harness.wait_until(lambda: proc.log_text().count(f"index {index} ready") >= 2, 60,
                           "the index prepared again through the new sink",
                           check=proc.assert_running)
        env.wait_caught_up(n, 0, CATCH_UP)

        def all_indexed():
            return (env.db.count("agg_stats") > 0 and env.db.scalar(
                "SELECT COUNT(*) FROM agg_stats WHERE needs_index = 1") == 0)
        harness.wait_until(all_indexed, 300, "every aggregate indexed", check=proc.assert_running,
                           describe=lambda: proc.log_tail(10))
        http.post(f"{url}/{index}/_refresh", timeout=30)
        rows = env.db.count("agg_stats")
        docs = http.get(f"{url}/{index}/_count", timeout=30).json()["count"]
        assert docs == rows, f"{docs} documents in {index}, {rows} aggregates"
        samples, _ = scrape(port)
        assert metric(samples, "clickloop_config_reloads_total", result="ok") == 1
        assert metric(samples, "clickloop_index_documents_total", outcome="failed") == 0
        assert proc.stop() == 0, proc.log_tail()
        harness.report(request, f"{rows} aggregates indexed across the sink replacement ({url})")
    finally:
        try:
            http.delete(f"{url}/{index}", timeout=10)
        except Exception:
            pass


# ---------------------------------------------------------------- e. SIGTERM on a large run

def test_sigterm_during_200k_run_exits_0_and_commits_exactly_what_is_stored(env, request):
    n = 200_000
    env.produce(events("d", n), record=False)
    env.write_config(overrides={"shutdown": {"drain_timeout": f"{DRAIN_TIMEOUT_S}s"}})
    proc = env.start()
    harness.wait_until(lambda: env.db.count("click_data") >= 40_000, CATCH_UP,
                       "40 000 events stored", check=proc.assert_running, interval=0.05)
    at_signal = env.db.count("click_data")
    t0 = time.monotonic()
    rc = proc.stop(timeout=DRAIN_TIMEOUT_S + 30)
    took = time.monotonic() - t0
    assert rc == 0, f"exit status {rc}; log:\n{proc.log_tail()}"
    assert took < DRAIN_TIMEOUT_S, f"exit took {took:.1f}s, over the drain timeout"

    committed = env.committed_offsets()
    stored = rows_by_partition(env)
    for p in env.partitions:
        count, low, high = stored.get(p, (0, None, None))
        # Distinct event ids: the stored messages of a partition must be
        # exactly offsets 0 .. committed-1.
        assert committed[p] == max(count, 0) or (committed[p] == -1 and count == 0), \
            f"partition {p}: committed {committed[p]}, stored {count}"
        if count:
            assert (low, high) == (0, count - 1), \
                f"partition {p}: stored offsets {low}..{high} for {count} rows"
    total_stored = env.db.count("click_data")
    assert total_stored < n, "the run finished before SIGTERM: nothing was tested"
    m = re.search(r"drained: (\d+) events stored", proc.log_text())
    harness.report(request, f"SIGTERM at {at_signal} rows: exit 0 after {took:.2f}s "
                   f"(drain timeout {DRAIN_TIMEOUT_S}s); {total_stored} rows stored and "
                   f"committed ({m.group(1) if m else '?'} by the pipeline)")

    second = env.start()
    env.wait_caught_up(n, 0, CATCH_UP, proc=second)
    assert_exactly_once(env, n)
    assert second.stop() == 0, second.log_tail()


# ---------------------------------------------------------------- f. metrics vs database

def test_metrics_scraped_during_a_run_parse_and_agree_with_the_database(env, request):
    port = free_port()
    env.write_config(overrides=base_overrides(port))
    valid, bad = 50_000, 1_000
    msgs = list(events("e", valid)) + [Message(b"not json %d" % i, partition=i % 4)
                                       for i in range(bad)]
    env.produce(msgs, record=False)
    proc = env.start()
    scrapes, previous = 0, {}
    done = False
    ends = env.end_offsets()
    deadline = time.monotonic() + CATCH_UP
    while not done:
        assert time.monotonic() < deadline, "clickloop did not catch up"
        proc.assert_running()
        try:
            samples, _ = scrape(port)
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
            continue
        scrapes += 1
        for key, value in samples.items():
            if key[0].endswith("_total") and key in previous:
                assert value >= previous[key], f"counter {key} went down"
        previous = samples
        done = env.committed_offsets() == ends
        time.sleep(0.1)
    env.wait_caught_up(valid, bad, CATCH_UP)
    samples, text = scrape(port)
    rows, rejected = env.db.count("click_data"), env.db.count("rejected_events")
    assert metric(samples, "clickloop_events_stored_total") == rows == valid
    assert metric(samples, "clickloop_events_rejected_total") == rejected == bad
    assert metric(samples, "clickloop_events_consumed_total") == valid + bad
    assert metric(samples, "clickloop_batch_events_sum") == valid + bad
    assert metric(samples, "clickloop_batch_events_count") == \
        metric(samples, "clickloop_batches_total")
    assert metric(samples, "clickloop_events_in_flight") == 0
    assert metric(samples, "clickloop_partitions_assigned") == len(env.partitions)
    harness.report(request, f"{scrapes} scrapes during the run parsed; final page "
                   f"{len(text)} bytes, {len(samples)} samples")
    assert proc.stop() == 0, proc.log_tail()


# ---------------------------------------------------------------- g. secrets

def mariadb_root_socket():
    state = Path(os.environ.get("CLICKLOOP_STATE_DIR", harness.SOURCE_ROOT / ".services"))
    sock = state / "mariadb" / "mariadb.sock"
    if len(str(sock)) > 100:   # deps/services' fallback for deep state folders
        crc = subprocess.run(["cksum"], input=str(state), capture_output=True, text=True,
                             check=True).stdout.split()[0]
        sock = Path(f"/tmp/clickloop-mariadb-{crc}.sock")
    return sock


def mariadb_as_root(sql):
    """Run SQL as MariaDB's root, which authenticates by unix socket (OS root)."""
    sock = mariadb_root_socket()
    r = subprocess.run(["mariadb", f"--socket={sock}", "-uroot", "-e", sql],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.fail(f"cannot run SQL as MariaDB root over {sock} (the test creates a user of its "
                    f"own; it needs OS root and deps/services' server): {r.stderr.strip()}",
                    pytrace=False)


@pytest.fixture
def db_user(env):
    """A MariaDB user of its own with a random password, allowed on the test's database."""
    user = f"cl_{uuid.uuid4().hex[:12]}"
    password = "pw-" + uuid.uuid4().hex
    mariadb_as_root(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                    f"GRANT ALL PRIVILEGES ON `{env.db.name}`.* TO '{user}'@'127.0.0.1'")
    try:
        yield user, password
    finally:
        mariadb_as_root(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")


def search_url(es_url, opensearch_url, http):
    """Elasticsearch if it answers, else OpenSearch (both work for the sink)."""
    for url in (es_url, opensearch_url):
        try:
            if http.get(url + "/_cluster/health", timeout=5).status_code == 200:
                return url
        except Exception:
            pass
    pytest.fail("neither Elasticsearch nor OpenSearch answers", pytrace=False)


def test_secrets_never_appear_in_logs_or_metrics(env, db_user, es_url, opensearch_url, http,
                                                 request):
    user, password = db_user
    api_key = "ak-" + uuid.uuid4().hex
    api_key2 = "ak2-" + uuid.uuid4().hex
    sasl_password = "sasl-" + uuid.uuid4().hex
    wrong_password = "wrong-" + uuid.uuid4().hex
    secrets = {"mariadb password": password, "api key": api_key, "second api key": api_key2,
               "sasl password": sasl_password, "wrong password": wrong_password}
    url = search_url(es_url, opensearch_url, http)
    index = f"clickloop-t-secrets-{uuid.uuid4().hex[:10]}"
    port = free_port()

    def config(key_var):
        # librdkafka ignores SASL settings with security.protocol plaintext (the
        # default), so the consumer still connects; the value goes through all
        # the same paths (config, properties, librdkafka's own logs).
        return base_overrides(
            port,
            mariadb={"user": user, "password": "${CL_TEST_DB_PASSWORD}"},
            kafka={"properties": {"session.timeout.ms": harness.TEST_SESSION_TIMEOUT_MS,
                                  "sasl.username": "nobody",
                                  "sasl.password": "${CL_TEST_SASL_PASSWORD}"}},
            aggregation={"enabled": True, "interval": "1s", "windows": ["1h"]},
            elasticsearch={"urls": [url], "index": index, "api_key": "${%s}" % key_var},
            log={"level": "debug"})

    cfg_path = env.write_config(overrides=config("CL_TEST_API_KEY"))
    run_env = dict(os.environ, CL_TEST_DB_PASSWORD=password, CL_TEST_API_KEY=api_key,
                   CL_TEST_API_KEY2=api_key2, CL_TEST_SASL_PASSWORD=sasl_password)
    proc = harness.Clickloop(env.binary, cfg_path, env.tmp_path / "secrets.log", env=run_env)
    env.procs.append(proc)
    try:
        env.produce(events("f", 5_000), record=False)
        env.wait_caught_up(5_000, 0, CATCH_UP, proc=proc)
        harness.wait_until(
            lambda: metric_now(port, "clickloop_index_documents_total",
                           outcome="indexed") > 0, 120,
            "aggregates indexed with the API key", check=proc.assert_running,
            describe=lambda: proc.log_tail(10))
        # A reload that changes the key: reported by name only. The new sink
        # replaces the old one under the running indexer and goes on indexing.
        indexed = metric_now(port, "clickloop_index_documents_total", outcome="indexed")
        env.write_config(overrides=config("CL_TEST_API_KEY2"))
        sighup(proc)
        wait_for_log(proc, r"elasticsearch.api_key changed: applied in place", 30)
        env.produce(events("f", 1_000, start=5_000), record=False)
        env.wait_caught_up(6_000, 0, CATCH_UP, proc=proc)
        harness.wait_until(
            lambda: metric_now(port, "clickloop_index_documents_total",
                           outcome="indexed") > indexed, 120,
            "aggregates indexed through the new sink", check=proc.assert_running,
            describe=lambda: proc.log_tail(10))
        _, page = scrape(port)
        status, ready = http_get(port, "/readyz")
        assert proc.stop() == 0, proc.log_tail()
        texts = {"log": proc.log_text(), "/metrics": page, "/readyz": ready}
        for where, text in texts.items():
            for what, value in secrets.items():
                assert value not in text, f"the {what} appears in {where}"

        # A wrong password: the error names the user, never the password.
        bad_path = env.write_config(overrides=config("CL_TEST_API_KEY"), name="wrong.json")
        bad_env = dict(run_env, CL_TEST_DB_PASSWORD=wrong_password)
        bad = harness.Clickloop(env.binary, bad_path, env.tmp_path / "wrong.log", env=bad_env)
        env.procs.append(bad)
        wait_for_log(bad, r"Access denied for user", 60)
        assert bad.stop() == 0, bad.log_tail()
        bad_log = bad.log_text()
        assert "check the mariadb settings" in bad_log
        for what, value in secrets.items():
            assert value not in bad_log, f"the {what} appears in the wrong-password run's log"
    finally:
        try:
            http.delete(f"{url}/{index}", timeout=10)
        except Exception:
            pass
    harness.report(request, f"no secret in {sum(len(t) for t in texts.values())} bytes of log, "
                   f"metrics and readiness ({url})")


# ---------------------------------------------------------------- h. admin under abuse

def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below the {need} this test needs",
                        pytrace=False)
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def connect(port):
    s = socket.create_connection((harness.HOST, port), timeout=10)
    return s


def read_response(sock, timeout=10):
    """The status code of one response, and whether the server closed after it."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else None
    return status, data


def test_admin_listener_on_port_0_names_the_port_the_system_picked(env, request):
    env.write_config(overrides=base_overrides(0))
    proc = env.start()
    m = wait_for_log(proc, r"admin listener on [0-9.]+:0, port (\d+) ", 60)
    port = int(m.group(1))
    assert port != 0
    assert http_get(port, "/healthz")[0] == 200
    harness.wait_until(lambda: http_get(port, "/readyz")[0] == 200, CATCH_UP,
                       "/readyz on the picked port", check=proc.assert_running)
    assert proc.stop() == 0


def test_admin_listener_survives_abuse_while_ingestion_continues(env, request):
    raise_fd_limit(4096)
    port = free_port()
    env.write_config(overrides=base_overrides(port, ingest={"batch_max_delay": "50ms"}))
    proc = env.start()
    n = 90_000
    producer = PacedProducer(env, "g", n, chunk=1000, pause=0.1)
    producer.start()
    harness.wait_until(lambda: env.db.count("click_data") >= 2_000, CATCH_UP,
                       "ingestion under way", check=proc.assert_running)
    progress = [env.db.count("click_data")]

    def rows_grew():
        now = env.db.count("click_data")
        grew = now > progress[-1]
        progress.append(now)
        return grew

    # 1. A malformed request: 400, the connection closed, the server fine.
    s = connect(port)
    s.sendall(b"BLAH \x01\x02 nonsense\r\n\r\n")
    status, _ = read_response(s)
    s.close()
    assert status == 400
    assert http_get(port, "/healthz")[0] == 200

    # 2. A request sent one byte at a time is answered.
    s = connect(port)
    for b in b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n":
        s.sendall(bytes([b]))
        time.sleep(0.01)
    status, _ = read_response(s)
    s.close()
    assert status == 200
    assert harness.wait_until(rows_grew, 30, "rows to grow after the slow request")

    # 3. 1 000 connections at once, half with a request begun and never ended.
    clients = []
    try:
        for i in range(1000):
            c = connect(port)
            if i % 2 == 0:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
            clients.append(c)
        harness.wait_until(
            lambda: metric_now(port, "clickloop_admin_connections") >= 1000, 30,
            "the server to hold 1 000 connections", check=proc.assert_running)
        latencies = []
        for _ in range(10):
            t0 = time.monotonic()
            assert http_get(port, "/healthz", timeout=5)[0] == 200
            latencies.append(time.monotonic() - t0)
        assert harness.wait_until(rows_grew, 30, "rows to grow while 1 000 connections are open")
        assert harness.wait_until(rows_grew, 30, "rows to keep growing")
    finally:
        for c in clients:
            c.close()
    harness.wait_until(lambda: metric_now(port, "clickloop_admin_connections") <= 2, 30,
                       "the connections to be gone", check=proc.assert_running)

    producer.finish()
    env.wait_caught_up(n, 0, CATCH_UP)
    assert_exactly_once(env, n)
    harness.report(request, f"rows during the attack: {progress}; /healthz with 1 000 "
                   f"connections open: max {max(latencies) * 1000:.0f} ms")
    assert proc.stop() == 0, proc.log_tail()


# ---------------------------------------------------------------- retention

def old_and_new_events(prefix, n_old, n_new, days_old):
    now_ms = int(time.time() * 1000)
    old_ms = now_ms - days_old * 86_400_000
    for i in range(n_old + n_new):
        ts = old_ms - i if i < n_old else now_ms - i
        yield Message(json.dumps({
            "event_id": f"{prefix}-{'old' if i < n_old else 'new'}-{i}", "user_id": f"u{i % 50}",
            "timestamp": ts, "url": f"https://example.com/{i % 100}",
            "country": "FR" if i % 2 else None, "browser": "Edge" if i % 3 else None,
        }).encode(), partition=i % 4)


def test_retention_deletes_old_rows_in_batches_while_ingesting(env, request):
    port = free_port()
    n_old, n_new, days = 4_500, 3_000, 10
    env.write_config(overrides=base_overrides(
        port, aggregation={"enabled": False},
        retention={"raw_days": 0}))
    proc = env.start()
    env.produce(old_and_new_events("r", n_old, n_new, days), record=False)
    env.produce([Message(b"bad %d" % i, partition=i % 4) for i in range(50)], record=False)
    env.wait_caught_up(n_old + n_new, 50, CATCH_UP)
    # Rejected events rejected long ago, and their agg_pending-free children
    # (agg_pending is filled by every batch: the old events are pending too).
    env.db.query("UPDATE rejected_events SET rejected_at = NOW(3) - INTERVAL %s DAY "
                 "WHERE id <= (SELECT m FROM (SELECT MIN(id) + 29 AS m FROM rejected_events) x)",
                 (days,))
    assert env.db.count("agg_pending") == n_old + n_new

    # Switch retention on by reload, with small batches, during ingestion.
    env.write_config(overrides=base_overrides(
        port, aggregation={"enabled": False},
        retention={"raw_days": days // 2, "batch_rows": 100, "interval": "1s"}))
    producer = PacedProducer(env, "r-live", 10_000, chunk=1000, pause=0.1)
    producer.start()
    sighup(proc)
    wait_for_log(proc, r"retention.raw_days changed: applied in place", 30)
    wait_for_log(proc, r"deleting raw events older than 5 days", 30)
    harness.wait_until(
        lambda: env.db.scalar(
            "SELECT COUNT(*) FROM click_data WHERE event_id LIKE 'r-old-%%'") == 0,
        120, "the old events to be deleted", check=proc.assert_running,
        describe=lambda: proc.log_tail(5))
    producer.finish()
    env.wait_caught_up(n_new + 10_000, 50 - 30, CATCH_UP)
    for table in ("geo_data", "user_agent_data", "agg_pending"):
        orphans = env.db.scalar(f"SELECT COUNT(*) FROM {table} t LEFT JOIN click_data c "
                                f"USING (row_key) WHERE c.row_key IS NULL")
        assert orphans == 0, f"{table}: {orphans} rows whose event was deleted"
    assert env.db.scalar("SELECT COUNT(*) FROM click_data WHERE event_id LIKE 'r-new-%%'") == n_new
    # Aggregation is off: every stored event is still pending, no old one is.
    assert env.db.count("agg_pending") == env.db.count("click_data")
    samples, _ = scrape(port)
    assert metric(samples, "clickloop_retention_rows_deleted_total", table="click_data") == n_old
    assert metric(samples, "clickloop_retention_rows_deleted_total", table="rejected_events") == 30
    assert metric(samples, "clickloop_retention_rows_deleted_total", table="agg_pending") == n_old
    runs = re.findall(r"retention run: (\d+) events .* in (\d+) batch", proc.log_text())
    assert runs and int(runs[0][1]) >= n_old // 100, runs[:3]

    # In place: a new policy for the running job.
    env.write_config(overrides=base_overrides(
        port, aggregation={"enabled": False},
        retention={"raw_days": 3, "batch_rows": 500, "interval": "2s"}))
    sighup(proc)
    harness.wait_until(lambda: proc.log_text().count(
        "retention.raw_days changed: applied in place") == 2, 30, "the second reload",
        check=proc.assert_running)
    assert proc.log_text().count("retention.batch_rows changed: applied in place") == 2

    # Off, on again, off: the runner stops and starts in place.
    for i, days in enumerate((0, 4, 0)):
        env.write_config(overrides=base_overrides(
            port, aggregation={"enabled": False},
            retention={"raw_days": days, "interval": "1s"}))
        sighup(proc)
        harness.wait_until(lambda: proc.log_text().count(
            "retention.raw_days changed: applied in place") == 3 + i, 30, f"reload {3 + i}",
            check=proc.assert_running)
    assert proc.log_text().count("deleting raw events older than") == 2
    ok_runs = metric(scrape(port)[0], "clickloop_retention_runs_total", result="ok")
    time.sleep(3)   # three intervals of 1 s: no run may start once it is off
    assert metric(scrape(port)[0], "clickloop_retention_runs_total", result="ok") == ok_runs
    assert metric(scrape(port)[0], "clickloop_config_reloads_total", result="ok") == 5
    harness.report(request, f"{n_old} old events and 30 old rejected events deleted in batches of "
                   f"100 (first run: {runs[0][1]} batches) while {10_000} new events arrived")
    assert proc.stop() == 0, proc.log_tail()
