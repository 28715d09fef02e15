"""Chaos test (issue 11, item 7): a live stream of 300 000 events while the
test, at seeded random moments, kill -9s clickloop at least five times,
restarts the Kafka broker, restarts MariaDB, SIGSTOPs MariaDB for 20 s and
stops and restarts Elasticsearch. Afterwards every valid event is stored
exactly once in each table, every malformed one is in rejected_events, the
index equals a recomputation from the stored rows and holds no duplicate
document; during the SIGSTOP consumption was paused and memory stayed under
the bound of docs/operations.md (Memory).

The servers are restarted: run this test only against servers of your own
(deps/services with non-default ports and CLICKLOOP_STATE_DIR, exported for
both deps/services and pytest), never against shared ones.

The stream: valid events (5 % without event_id), some hundreds of malformed
messages (test_ingest.MALFORMED) and some thousands of exact re-sends of
valid events, shuffled, spread over 4 partitions, produced in bursts from a
background thread. Its pace follows the faults: with fault k of n (after
the random gap before it) the producer may go on up to (k + 1) / (n + 1) of
the stream, so every fault happens while events arrive; for the SIGSTOP that
share is released once MariaDB is stopped (at least three in-flight bounds),
so that clickloop must hold it back.

Kills come in two kinds, alternating: right after /metrics shows a new batch
committed to MariaDB (clickloop commits offsets from a 1 s auto-commit timer,
so the batch's offsets are not committed yet), and while events are in flight
(consumed, not yet written). Each kill is classified afterwards from what it
left: "between the database commit and the offset commit" when rows are
stored at or beyond the group's committed offset, "mid-batch" when the last
scrape before the kill showed events in flight. More kills follow (up to
MAX_KILLS) until both states were hit.

Settings (environment): CLICKLOOP_CHAOS_SEED replays a run (the seed is
printed with the figures); CLICKLOOP_CHAOS_EVENTS overrides the number of
valid events. Waits poll against deadlines; the random gaps between faults,
the SIGSTOP's 20 s and the producer's pauses are the test's input, not
synchronisation.

Run alone (own servers exported): .venv/bin/python -m pytest -q
test/integration/test_chaos.py
"""

import json
import os
import random
import signal
import threading
import time
import types
import uuid
from pathlib import Path

import pytest
import requests

import harness
from harness import Message
from test_aggregate import (Search, assert_db_agrees, doc_problems, expected_docs,
                            kill_statements, utc, wait_settled)
from test_ingest import MALFORMED, check_stored_events, is_sanitized, row_key

MIB = 1 << 20
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# The plain build takes the 300 000 events of the issue. The AddressSanitizer
# build is 3-4 times slower at ingest and aggregation: it takes 150 000, which
# keeps it within its 8 minutes (the faults and their checks are the same).
EVENTS_PLAIN = 300_000
EVENTS_SANITIZED = 150_000
MALFORMED_EVENTS = 600
DUPLICATES = 3_000
MIN_KILLS = 5
MAX_KILLS = 8
SIGSTOP_SECONDS = 20

# The events fall into one day, so the index holds a few thousand documents
# (24 hours x URLS x countries, plus the day's).
T0 = 1_715_904_000_000          # 2024-05-17T00:00:00Z
SPAN_MS = 20 * HOUR
WINDOWS = ["1h", "1d"]
WINDOWS_MS = [HOUR, DAY]
SESSION_TIMEOUT = "5m"
SESSION_TIMEOUT_MS = 5 * MINUTE

# Small bounds, so that the SIGSTOP fills them within seconds, and a bound on
# memory (the formula of docs/operations.md) that the test can hold the process to.
MAX_IN_FLIGHT_EVENTS = 10_000
MAX_IN_FLIGHT_BYTES = 8 * MIB
MAX_EVENT_BYTES = 64 * 1024
FETCH_MAX_BYTES = 4 * MIB        # librdkafka's fetch.max.bytes (default 50 MB)
POOL_SIZE = 4
MAX_ALLOWED_PACKET = 4 * MIB
BULK_MAX_BYTES = 1 * MIB
ES_MAX_IN_FLIGHT = 2
BROKERS = 1


def memory_bound_mib():
    """The worst case of docs/operations.md (Memory) for this configuration:
    25 MiB + max_in_flight_bytes + the prefetch (a quarter of it) +
    fetch.max.bytes x brokers + bulk_max_bytes x max_in_flight x 2 +
    (pool_size + 2) x the largest statement or result in transit, which MariaDB
    bounds by max_allowed_packet (clickloop's setting, smaller than the server's)."""
    return (25 + (MAX_IN_FLIGHT_BYTES + MAX_IN_FLIGHT_BYTES // 4 + FETCH_MAX_BYTES * BROKERS
                  + BULK_MAX_BYTES * ES_MAX_IN_FLIGHT * 2
                  + (POOL_SIZE + 2) * MAX_ALLOWED_PACKET) / MIB)


# The AddressSanitizer build holds up to 256 MiB of freed memory in quarantine
# (its default) and maps shadow memory (1/8 of what it touches): the formula
# plus that quarantine, the whole formula again for shadow and redzones.
ASAN_QUARANTINE_MIB = 256


def sanitized_bound_mib():
    return 2 * memory_bound_mib() + ASAN_QUARANTINE_MIB


# ---------------------------------------------------------------- the stream

URLS = ([f"https://shop.example.com/products/{i}" for i in range(24)]
        + ["https://shop.example.com/", "https://shop.example.com/Products/1",
           "https://shop.example.com/ü/日本語/😀?q=ñ", "https://shop.example.com/cart?x='\"\\",
           "https://shop.example.com/search?q=" + "abcdefghij" * 150,
           "https://shop.example.com/checkout"])
COUNTRIES = ["DE", "FR", "US", "JP", "BR", "fr", "us"]
CITIES = ["Berlin", "Paris", "New York", "東京", "São Paulo", "O'Fallon"]
BROWSERS = ["Firefox", "Chrome", "Safari", "Brave 🦁"]
OSES = ["Linux", "Windows 11", "macOS 14.5", "Android 14"]
DEVICES = ["desktop", "mobile", "tablet"]
UAS = ["Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
       "curl/8.5.0", "Ünïcödé-Agent/1.0 (😀)"]
USERS = 400


def timestamp(rng, ms):
    """(JSON value of an accepted timestamp form) for UTC ms."""
    form = rng.randrange(4)
    d = utc(ms)
    if form == 0:
        return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    if form == 1:
        return ms
    if form == 2:
        local = utc(ms + 2 * HOUR)
        return local.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}+02:00"
    return float(f"{ms // 1000}.{ms % 1000:03d}")


def valid_event(rng, seq):
    """(payload, expectation in test_ingest's form)."""
    exp = {"event_id": None, "user_id": None, "ts_ms": rng.randrange(T0, T0 + SPAN_MS),
           "url": rng.choice(URLS), "time_spent_ms": None, "country": None, "city": None,
           "browser": None, "os": None, "device": None, "user_agent": None}
    doc = {}
    if rng.random() < 0.95:
        exp["event_id"] = f"ch-{seq}-{rng.getrandbits(40):010x}"
        doc["event_id"] = exp["event_id"]
    u = rng.randrange(USERS)
    if u % 10 == 0:
        doc["user_id"], exp["user_id"] = u, str(u)     # an integer id is stored as text
    else:
        doc["user_id"] = exp["user_id"] = f"user-{u}"
    doc["timestamp"] = timestamp(rng, exp["ts_ms"])
    doc["url"] = exp["url"]
    for field, pool in (("country", COUNTRIES), ("city", CITIES), ("browser", BROWSERS),
                        ("os", OSES), ("device", DEVICES), ("user_agent", UAS)):
        if rng.random() < 0.2:
            if rng.random() < 0.3:
                doc[field] = None
            continue
        v = rng.choice(pool)
        doc[field] = v
        exp[field] = v.upper() if field == "country" else v
    if rng.random() < 0.3:
        exp["time_spent_ms"] = doc["time_spent_ms"] = rng.randrange(120_000)
    return json.dumps(doc, ensure_ascii=rng.random() < 0.3,
                      separators=(",", ":")).encode(), exp


class Item:
    """One message of the stream: kind "valid" (exp), "dup" (orig: the valid
    Item it repeats) or "bad" (malformed: mkind, words)."""
    __slots__ = ("msg", "kind", "exp", "orig", "mkind", "words")

    def __init__(self, msg, kind, exp=None, orig=None, mkind=None, words=None):
        self.msg, self.kind, self.exp, self.orig = msg, kind, exp, orig
        self.mkind, self.words = mkind, words


def make_stream(rng, n_valid):
    items = []
    with_id = []
    for seq in range(n_valid):
        payload, exp = valid_event(rng, seq)
        it = Item(Message(payload, partition=rng.randrange(4)), "valid", exp=exp)
        items.append(it)
        if exp["event_id"] is not None:
            with_id.append(it)
    for i in range(MALFORMED_EVENTS):
        mkind, build, words = MALFORMED[i % len(MALFORMED)]
        items.append(Item(Message(build(rng, i), partition=rng.randrange(4)), "bad",
                          mkind=mkind, words=words))
    for _ in range(DUPLICATES):
        orig = rng.choice(with_id)
        items.append(Item(Message(orig.msg.value, partition=rng.randrange(4)), "dup", orig=orig))
    rng.shuffle(items)
    return items


class PacedProducer(threading.Thread):
    """Produces the stream in bursts (500-4000 messages, pauses of 20-300 ms),
    never past `allowed` (moved on by the faults). After each burst the
    coordinates of its messages are known: `where` maps (partition, offset)
    to the row key it must end as, or to None for a malformed message."""

    def __init__(self, env, items, rng):
        super().__init__(daemon=True)
        self.env, self.items, self.rng = env, items, rng
        self.allowed = 0
        self.produced = 0
        self.cond = threading.Condition()
        self.where = {}
        self.error = None
        self.stopping = False

    def allow(self, upto):
        with self.cond:
            self.allowed = max(self.allowed, min(upto, len(self.items)))
            self.cond.notify_all()

    def run(self):
        try:
            i = 0
            while i < len(self.items):
                with self.cond:
                    while self.allowed <= i and not self.stopping:
                        self.cond.wait(1.0)
                    if self.stopping:
                        return
                    upto = self.allowed
                n = min(self.rng.randint(500, 4000), upto - i)
                burst = self.items[i:i + n]
                self.env.produce([it.msg for it in burst], record=True, timeout=300)
                for it in burst:
                    m = it.msg
                    self.where[(m.partition, m.offset)] = self.key_of(it)
                i += n
                self.produced = i
                time.sleep(self.rng.uniform(0.02, 0.3))   # the stream's pace (input)
        except Exception as exc:   # reported by finish()
            self.error = exc

    def key_of(self, it):
        if it.kind == "bad":
            return None
        exp = (it.orig if it.kind == "dup" else it).exp
        m = (it.orig if it.kind == "dup" else it).msg
        return row_key(exp, self.env.topic, m.partition, m.offset)

    def finish(self, timeout=300):
        self.allow(len(self.items))
        self.join(timeout)
        assert not self.is_alive(), f"the producer did not finish ({self.produced} produced)"
        assert self.error is None, f"producing failed: {self.error!r}"
        assert self.produced == len(self.items)

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


# ---------------------------------------------------------------- observing clickloop

def scrape(port):
    """/metrics as {(name, labels): value}, or None while nothing answers."""
    try:
        return harness.metrics(port)
    except (AssertionError, OSError, ValueError):
        return None


def gauge(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0) if m else 0


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mariadb_pid():
    """The mariadbd of deps/services, from run/mariadb.pid ("pid starttime"),
    checked against /proc (the pid must still be that process)."""
    state = Path(os.environ.get("CLICKLOOP_STATE_DIR", harness.SOURCE_ROOT / ".services"))
    pid, start = (state / "run" / "mariadb.pid").read_text().split()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    assert fields[19] == start, f"pid {pid} is no longer the mariadbd of {state}"
    return int(pid)


# ---------------------------------------------------------------- the test

@pytest.fixture
def chaos(clickloop_bin, kafka_bootstrap, mariadb_params, es_url, tmp_path, request):
    env = harness.IngestEnv(clickloop_bin, kafka_bootstrap, mariadb_params, tmp_path,
                            request.node.name)
    search = Search(es_url)
    index = f"clickloop-t-chaos-{uuid.uuid4().hex[:12]}"
    try:
        yield env, search, index
    finally:
        # A fault cut short by a failure must not leave a server down or stopped.
        try:
            os.kill(mariadb_pid(), signal.SIGCONT)
        except Exception:
            pass
        try:
            harness.services("up", "mariadb", "kafka", "elasticsearch")
        except AssertionError as exc:
            print(f"could not bring the servers back: {exc}")
        for p in env.procs:
            if p.running():
                try:
                    p.stop(timeout=60)
                except AssertionError as exc:
                    print(f"clickloop did not stop: {exc}")
        kill_statements(env.db)
        env.close()
        try:
            search.delete_everything(index)
        except requests.RequestException as exc:
            print(f"could not delete index {index}: {exc!r}")


class Chaos:
    """The running clickloop, its admin port, and what the faults saw."""

    def __init__(self, env, port, rng, producer):
        self.env, self.port, self.rng, self.producer = env, port, rng, producer
        self.proc = env.start()
        self.kills = []          # one dict per kill
        self.faults = []         # (name, seconds, detail)
        self.sigstop = None

    def metrics(self):
        return scrape(self.port)

    def wait_serving(self, what, timeout=120):
        """Wait until the current process has every partition assigned and
        has consumed since (it is part of the live stream again)."""
        m0 = {}

        def assigned():
            m = self.metrics()
            if gauge(m, "clickloop_partitions_assigned") != len(self.env.partitions):
                return False
            m0.setdefault("consumed", gauge(m, "clickloop_events_consumed_total"))
            if gauge(m, "clickloop_events_consumed_total") > m0["consumed"]:
                return True
            # Or nothing to consume: no lag on any partition.
            lags = [v for (name, _), v in m.items() if name == "clickloop_consumer_lag"]
            return len(lags) == len(self.env.partitions) and not any(lags)
        harness.wait_until(assigned, timeout, what, interval=0.1,
                           check=self.proc.assert_running,
                           describe=lambda: f"metrics partitions "
                           f"{gauge(self.metrics(), 'clickloop_partitions_assigned')}; log:\n"
                           f"{self.proc.log_tail(20)}")

    # -- kill -9

    def kill(self, kind):
        t0 = time.monotonic()
        first = self.metrics() or {}
        batches0 = gauge(first, "clickloop_batches_total")
        last = {}

        def moment():
            m = self.metrics()
            if m is None:
                return False
            last["m"] = m
            if kind == "after_commit":
                return gauge(m, "clickloop_batches_total") > batches0
            return gauge(m, "clickloop_events_in_flight") > 0
        harness.wait_until(moment, 120, f"the moment for a kill {kind}", interval=0.005,
                           check=self.proc.assert_running, describe=self.proc.log_tail)
        self.proc.kill9()
        in_flight = gauge(last["m"], "clickloop_events_in_flight")
        committed = self.env.committed_offsets()
        cond = " OR ".join(["(kafka_partition = %s AND kafka_offset >= %s)"] * len(committed))
        args = [v for p, c in sorted(committed.items()) for v in (p, max(c, 0))]
        ahead = self.env.db.scalar(f"SELECT COUNT(*) FROM click_data WHERE {cond}", args)
        self.check_committed_are_stored(committed)
        self.kills.append({"kind": kind, "in_flight": int(in_flight), "stored_ahead": ahead,
                           "committed": sum(max(c, 0) for c in committed.values()),
                           "produced": self.producer.produced})
        self.proc = self.env.start()
        self.wait_serving(f"the clickloop started after kill {len(self.kills)}")
        self.faults.append(("kill -9 " + kind, time.monotonic() - t0,
                            f"{int(in_flight)} in flight, {ahead} rows beyond the committed offsets"))

    def check_committed_are_stored(self, committed, sample=150):
        """Offsets never pass an event that is not stored: the last committed
        message of each partition and a random sample below it (among those
        whose coordinates the producer knows) have their row or their
        rejected_events entry."""
        where = dict(self.producer.where)
        keys, rejected = set(), set()
        for p, c in committed.items():
            if c <= 0:
                continue
            offsets = {c - 1} | {self.rng.randrange(c) for _ in range(sample)}
            for o in offsets:
                if (p, o) not in where:
                    continue
                k = where[(p, o)]
                if k is None:
                    rejected.add((p, o))
                else:
                    keys.add(k)
        if keys:
            got = {r[0] for r in self.env.db.query(
                "SELECT row_key FROM click_data WHERE row_key IN (%s)"
                % ",".join(["%s"] * len(keys)), list(keys))}
            assert keys <= got, (f"committed offsets {committed} pass {len(keys - got)} events "
                                 f"that are not stored, e.g. {sorted(keys - got)[:3]}")
        if rejected:
            got = {(r[0], r[1]) for r in self.env.db.query(
                "SELECT kafka_partition, kafka_offset FROM rejected_events WHERE "
                + " OR ".join(["(kafka_partition = %s AND kafka_offset = %s)"] * len(rejected)),
                [v for po in sorted(rejected) for v in po])}
            assert rejected <= got, (f"committed offsets {committed} pass malformed messages "
                                     f"not in rejected_events: {sorted(rejected - got)[:3]}")

    # -- servers

    def restart(self, name, gap):
        t0 = time.monotonic()
        harness.services("down", name)
        time.sleep(gap)   # how long the server stays away: the test's input
        harness.services("up", name)
        t_up = time.monotonic()
        self.proc.assert_running()
        if name == "kafka":
            self.wait_serving("clickloop to consume again after the broker restart", 180)
        elif name == "mariadb":
            stored0 = gauge(self.metrics(), "clickloop_events_stored_total")
            harness.wait_until(
                lambda: gauge(self.metrics(), "clickloop_events_stored_total") > stored0
                or self.producer.produced == len(self.producer.items), 120,
                "clickloop to store again after the MariaDB restart", interval=0.2,
                check=self.proc.assert_running, describe=self.proc.log_tail)
        self.faults.append((f"restart {name}", time.monotonic() - t0,
                            f"down {t_up - t0:.1f}s incl. stop and start"))

    def stop_mariadb(self, stopped):
        pid = mariadb_pid()
        samples = []     # (t, VmRSS kB, paused, consumed, in flight, bytes, answered)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped()
            hwm_before = proc_status_kb(self.proc.pid, "VmHWM")
            end = t0 + SIGSTOP_SECONDS
            while time.monotonic() < end:
                m = self.metrics()
                samples.append((time.monotonic() - t0, proc_status_kb(self.proc.pid, "VmRSS"),
                                gauge(m, "clickloop_consumption_paused"),
                                gauge(m, "clickloop_events_consumed_total"),
                                gauge(m, "clickloop_events_in_flight"),
                                gauge(m, "clickloop_events_in_flight_bytes"), m is not None))
                self.proc.assert_running()
                time.sleep(0.2)   # the sampling period during a fixed-length fault
            hwm_after = proc_status_kb(self.proc.pid, "VmHWM")
        finally:
            os.kill(pid, signal.SIGCONT)
        self.sigstop = {"samples": samples, "hwm_before": hwm_before, "hwm_after": hwm_after}
        self.faults.append(("SIGSTOP mariadb", time.monotonic() - t0,
                            f"{len(samples)} samples"))


def test_chaos_stream_survives_kills_and_server_restarts_exactly_once(chaos, request):
    env, search, index = chaos
    seed = int(os.environ.get("CLICKLOOP_CHAOS_SEED") or random.randrange(2**32))
    print(f"chaos seed {seed} (CLICKLOOP_CHAOS_SEED={seed} repeats it)")
    rng = random.Random(seed)
    sanitized = is_sanitized(env.binary)
    n_valid = int(os.environ.get("CLICKLOOP_CHAOS_EVENTS")
                  or (EVENTS_SANITIZED if sanitized else EVENTS_PLAIN))
    t_begin = time.monotonic()
    items = make_stream(rng, n_valid)

    port = harness.free_port()
    env.write_config(overrides={
        "kafka": {"properties": {"fetch.max.bytes": FETCH_MAX_BYTES}},
        "mariadb": {"pool_size": POOL_SIZE, "max_allowed_packet": MAX_ALLOWED_PACKET,
                    # A short backoff only keeps the test quick after a restart.
                    "reconnect_max_backoff": "1s"},
        "ingest": {"batch_max_events": 1000, "batch_max_delay": "100ms",
                   "max_in_flight_events": MAX_IN_FLIGHT_EVENTS,
                   "max_in_flight_bytes": MAX_IN_FLIGHT_BYTES,
                   "max_event_bytes": MAX_EVENT_BYTES},
        "aggregation": {"enabled": True, "interval": "2s", "windows": WINDOWS,
                        "session_timeout": SESSION_TIMEOUT},
        "elasticsearch": {"urls": [search.base], "index": index, "bulk_max_docs": 1000,
                          "bulk_max_bytes": BULK_MAX_BYTES, "max_in_flight": ES_MAX_IN_FLIGHT,
                          "request_timeout": "10s", "retry_min_backoff": "100ms",
                          "retry_max_backoff": "2s", "node_down_for": "2s"},
        "admin": {"listen": f"{harness.HOST}:{port}"},
        "shutdown": {"drain_timeout": "20s"},
    })
    producer = PacedProducer(env, items, random.Random(rng.getrandbits(64)))
    run = Chaos(env, port, rng, producer)
    harness.wait_until(lambda: gauge(run.metrics(), "clickloop_partitions_assigned")
                       == len(env.partitions), 120, "the first clickloop to take its partitions",
                       check=run.proc.assert_running)
    producer.start()

    faults = ["kill"] * MIN_KILLS + ["kafka", "mariadb", "sigstop", "elasticsearch"]
    rng.shuffle(faults)
    kinds = ["after_commit", "mid_batch"]
    rng.shuffle(kinds)
    k = 0
    try:
        while k < len(faults):
            time.sleep(rng.uniform(0.5, 3.0))   # the gap before the fault: input
            fault = faults[k]
            # The next share of the stream arrives with the fault (for the
            # SIGSTOP: once MariaDB is stopped, so that it must be held back).
            share = len(items) * (k + 1) // (len(faults) + 1)
            if fault != "sigstop":
                producer.allow(share)
            if fault == "kill":
                run.kill(kinds[len(run.kills) % 2])
                if k == len(faults) - 1 or "kill" not in faults[k + 1:]:
                    # Both states hit? Else one more kill (of the kind that
                    # aims at the missing state), up to MAX_KILLS.
                    between = sum(1 for x in run.kills if x["stored_ahead"] > 0)
                    mid = sum(1 for x in run.kills if x["in_flight"] > 0)
                    if (not between or not mid) and len(run.kills) < MAX_KILLS:
                        faults.insert(k + 1, "kill")
                        kinds = ["after_commit"] * 2 if not between else ["mid_batch"] * 2
            elif fault == "sigstop":
                # At least three in-flight bounds arrive during the stop (more
                # than a share holds when CLICKLOOP_CHAOS_EVENTS is small).
                run.stop_mariadb(lambda: producer.allow(
                    max(share, producer.allowed + 3 * MAX_IN_FLIGHT_EVENTS)))
            else:
                run.restart(fault, rng.uniform(1.0, 4.0))
            k += 1
        producer.finish()
    finally:
        producer.stop()
    t_faults_done = time.monotonic()

    # ---- every valid event once, every malformed one rejected
    expected = {}
    bad = {}
    for it in items:
        m = it.msg
        if it.kind == "valid":
            expected.setdefault(row_key(it.exp, env.topic, m.partition, m.offset),
                                (it.exp, set()))[1].add((m.partition, m.offset))
    for it in items:
        m = it.msg
        if it.kind == "dup":
            expected[row_key(it.orig.exp, env.topic, None, None)][1].add((m.partition, m.offset))
        elif it.kind == "bad":
            bad[(m.partition, m.offset)] = it
    assert len(expected) == n_valid
    ends = env.end_offsets()
    assert sum(ends.values()) == len(items)
    env.wait_caught_up(len(expected), len(bad), timeout=300, proc=run.proc, ends=ends)
    t_caught_up = time.monotonic()

    stored_keys = [r[0] for r in env.db.query("SELECT row_key FROM click_data")]
    lost = len(set(expected) - set(stored_keys))
    duplicated = len(stored_keys) - len(set(stored_keys))
    rej = env.db.query("SELECT kafka_topic, kafka_partition, kafka_offset, payload, reason "
                       "FROM rejected_events")
    rej_coords = [(r[1], r[2]) for r in rej]
    lost_bad = len(set(bad) - set(rej_coords))
    duplicated_bad = len(rej_coords) - len(set(rej_coords))
    check_stored_events(env, expected, env.topic)
    assert lost == duplicated == lost_bad == duplicated_bad == 0, \
        (lost, duplicated, lost_bad, duplicated_bad)
    assert set(rej_coords) == set(bad)
    problems = []
    for topic, p, o, payload, reason in rej:
        it = bad[(p, o)]
        if topic != env.topic or not reason or not all(w in reason.lower() for w in it.words):
            problems.append(f"{it.mkind} at {(p, o)}: reason {reason!r} lacks {it.words}")
        sent = it.msg.value or b""
        if it.mkind == "oversized":
            if payload is None or not sent.startswith(payload):
                problems.append(f"{it.mkind} at {(p, o)}: payload is not a prefix of the sent one")
        elif (payload or b"") != sent:
            problems.append(f"{it.mkind} at {(p, o)}: payload {payload[:60]!r} != {sent[:60]!r}")
    assert not problems, "\n".join(problems[:20])

    # ---- the index: a recomputation from the stored rows, no duplicates
    wait_settled(env, run.proc, timeout=300)
    rows = env.db.query(
        "SELECT c.row_key, c.user_id, c.event_time, c.url, c.time_spent_ms, g.country "
        "FROM click_data c LEFT JOIN geo_data g USING (row_key)")
    stored = [types.SimpleNamespace(row_key=r[0], user=r[1], ts=harness.ms_from_datetime(r[2]),
                                    url=r[3], spent=r[4], country=r[5] or "unknown")
              for r in rows]
    want = expected_docs(stored, index, windows_ms=WINDOWS_MS, timeout_ms=SESSION_TIMEOUT_MS)
    got = search.docs(index)      # fails on an id found twice
    n_docs = search.count(index)
    doc_dups = n_docs - len(got)
    problems = doc_problems(got, want, limit=20)
    assert not problems, f"the index differs from the stored rows: {problems}"
    assert n_docs == len(want), f"{n_docs} documents, {len(want)} expected"
    assert_db_agrees(env.db, got, want)
    run.proc.assert_running()
    t_end = time.monotonic()

    # ---- the SIGSTOP: consumption paused, memory under its bound
    st = run.sigstop
    samples = st["samples"]
    answered = [s for s in samples if s[6]]
    paused_at = next((s for s in answered if s[2] == 1), None)
    after = [s for s in answered if paused_at is not None and s[0] >= paused_at[0]]
    consumed_while_paused = (max(s[3] for s in after) - paused_at[3]) if after else None
    max_events = max((s[4] for s in answered), default=0)
    max_bytes = max((s[5] for s in answered), default=0)
    peak_rss_mib = max(s[1] for s in samples) / 1024
    bound = sanitized_bound_mib() if sanitized else memory_bound_mib()

    kills = run.kills
    harness.report(request, (
        f"seed {seed}: {len(items)} messages ({n_valid} valid events, {len(bad)} malformed, "
        f"{DUPLICATES} re-sent); survived {len(kills)} kill -9 "
        f"({sum(1 for x in kills if x['stored_ahead'] > 0)} between the database commit and "
        f"the offset commit, {sum(1 for x in kills if x['in_flight'] > 0)} mid-batch), a Kafka "
        f"restart, a MariaDB restart, a {SIGSTOP_SECONDS}s SIGSTOP of MariaDB, an Elasticsearch "
        f"stop/start; lost {lost + lost_bad}, duplicated {duplicated + duplicated_bad} rows and "
        f"{doc_dups} documents; {len(want)} documents equal the recomputation; during the "
        f"SIGSTOP paused after {paused_at[0] if paused_at else -1:.1f}s, at most {max_events:.0f} events / "
        f"{max_bytes:.0f} bytes in flight, peak VmRSS {peak_rss_mib:.1f} MiB (VmHWM "
        f"{st['hwm_before'] / 1024:.1f} -> {st['hwm_after'] / 1024:.1f} MiB), bound "
        f"{bound:.0f} MiB ({'sanitized: 2 x formula + quarantine' if sanitized else 'formula'});"
        f" faults done in {t_faults_done - t_begin:.0f}s, caught up "
        f"{t_caught_up - t_faults_done:.0f}s later, total {t_end - t_begin:.0f}s"))
    harness.report(request, "kills: " + "; ".join(
        f"{x['kind']}: {x['in_flight']} in flight, {x['stored_ahead']} rows beyond the committed "
        f"offsets, {x['committed']} committed of {x['produced']} produced" for x in kills))
    harness.report(request, "faults: " + "; ".join(f"{n} {s:.1f}s ({d})" for n, s, d in run.faults))

    assert answered, "/metrics never answered during the SIGSTOP"
    assert paused_at is not None, (
        f"consumption never paused while MariaDB was stopped for {SIGSTOP_SECONDS}s: "
        f"in flight {[s[4] for s in answered][-5:]}")
    assert all(s[2] == 1 for s in after), "consumption resumed while MariaDB was stopped"
    assert consumed_while_paused == 0, f"{consumed_while_paused} messages consumed while paused"
    assert max_events <= MAX_IN_FLIGHT_EVENTS, max_events
    # Paused once a bound is reached: at most one event (payload and SQL) past it.
    assert max_bytes <= MAX_IN_FLIGHT_BYTES + 6 * MAX_EVENT_BYTES, max_bytes
    assert peak_rss_mib < bound, (f"peak RSS {peak_rss_mib:.1f} MiB during the SIGSTOP is over "
                                  f"the bound of {bound:.0f} MiB")
    assert len(kills) >= MIN_KILLS
    assert any(x["stored_ahead"] > 0 for x in kills), \
        f"no kill landed between a database commit and its offset commit: {kills}"
    assert any(x["in_flight"] > 0 for x in kills), f"no kill landed mid-batch: {kills}"
