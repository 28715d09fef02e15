"""Helpers shared by the integration tests that run the clickloop binary.

One `IngestEnv` per test owns everything the test creates and removes it
afterwards: a Kafka topic (created with a known partition count), a consumer
group id, a MariaDB database `clickloop_t_<random>`, a configuration file made
from config.example.json (or another base) pointing at those, and the clickloop
processes it starts (stderr/stdout go to files under the test's tmp dir).

Synchronisation is always by polling a condition with a deadline
(`wait_until`); nothing here sleeps for a fixed time to let something happen.

Figures that a test measures (rates, memory, durations) go through `report()`,
which prints them past pytest's output capture, so they show in the meson test
log even for passing tests.
"""

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

HOST = "127.0.0.1"
SOURCE_ROOT = Path(os.environ.get("CLICKLOOP_SOURCE_ROOT",
                                  Path(__file__).resolve().parents[2]))
CONFIG_EXAMPLE = SOURCE_ROOT / "config.example.json"
NESTED_EXAMPLE = SOURCE_ROOT / "docs" / "examples" / "nested-mapping.json"
SERVICES = SOURCE_ROOT / "deps" / "services"

DEFAULT_PARTITIONS = 4
# Kafka's default group.min.session.timeout.ms is 6 s. A clickloop killed with
# SIGKILL stays a group member until its session expires; its successor gets
# partitions only then, so a short session keeps the crash tests quick.
TEST_SESSION_TIMEOUT_MS = 10000
# The tests produce events dated anywhere from 2001 to 2033 on purpose (every
# accepted timestamp form, aggregation windows at fixed dates): configurations
# written here accept any event time unless a test sets the window itself.
WIDE_EVENT_TIME_WINDOW = {"max_event_age": "3660000d", "max_future_skew": "3660000d"}

_DELETE = object()  # in config overrides: remove this key


# ---------------------------------------------------------------- small helpers

def random_suffix(n=10):
    return uuid.uuid4().hex[:n]


def slug(text, limit=40):
    s = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return s[:limit].strip("-") or "t"


def report(request, text):
    """Print a measured figure so that it is seen although pytest captures
    output: straight to the terminal (and the meson log), and to the captured
    stdout as well (shown with the test's report)."""
    line = f"[clickloop-itest] {request.node.name}: {text}"
    print(line)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            sys.stdout.write("\n" + line + "\n")
            sys.stdout.flush()
    else:
        sys.__stdout__.write(line + "\n")


def wait_until(condition, timeout, what, interval=0.2, describe=None, check=None):
    """Poll `condition()` until it returns something truthy and return that.
    `check()` runs first on every round and may raise (e.g. "the process
    died"). On timeout, fail with `what` and, if given, `describe()`."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            state = ""
            if describe is not None:
                try:
                    state = f"; state: {describe()}"
                except Exception as exc:  # the description must not hide the timeout
                    state = f"; (describe failed: {exc!r})"
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{state}")
        time.sleep(interval)


def deep_merge(base, overrides):
    """Return base with overrides applied recursively; a value of harness
    DELETE removes the key."""
    out = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if value is _DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


DELETE = _DELETE


def ms_from_datetime(dt):
    """A naive DATETIME(3) value read from MariaDB (UTC) as ms since the epoch."""
    import datetime as _dt
    delta = dt - _dt.datetime(1970, 1, 1)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def services(*args, timeout=600):
    """Run deps/services with arguments (e.g. "down", "mariadb"); fail on error."""
    r = subprocess.run([str(SERVICES), *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError(f"deps/services {' '.join(args)} failed ({r.returncode}):\n"
                             f"{r.stdout}\n{r.stderr}")
    return r.stdout


# ---------------------------------------------------------------- the admin listener

def free_port():
    import socket
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=10):
    """(status, body text) of GET http://HOST:port/path; (0, reason) when
    nothing answers."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")
    except OSError as exc:
        return 0, str(exc)


def admin_port_from_log(proc, timeout=60):
    """The port of an admin listener configured on port 0, from the start-up
    line `admin listener on 127.0.0.1:0, port N`."""
    import re
    pattern = re.compile(r"admin listener on [0-9.]+:0, port (\d+) ")
    m = wait_until(lambda: pattern.search(proc.log_text()), timeout,
                   "the admin listener's start-up line", check=proc.assert_running,
                   describe=proc.log_tail)
    return int(m.group(1))


class HealthzProbe:
    """Asks GET /healthz every `interval` seconds, from a thread of its own,
    until stop(): the answers (status, seconds taken) show whether the event
    loop kept answering while the test fed it. Each round also reads the
    process's peak RSS (proc.vm_hwm_kb), so a peak between two rounds of the
    test's own polling is not missed."""

    def __init__(self, port, proc=None, interval=0.1, timeout=10):
        import threading
        self.port, self.proc, self.interval, self.timeout = port, proc, interval, timeout
        self.answers = []   # (status, seconds)
        self.failures = []  # (status, body) of every answer but 200 "ok"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            status, body = http_get(self.port, "/healthz", timeout=self.timeout)
            self.answers.append((status, time.monotonic() - t0))
            if status != 200 or body != "ok\n":
                self.failures.append((status, body[:200]))
            if self.proc is not None:
                self.proc.vm_hwm_kb()
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)

    @property
    def slowest(self):
        return max((s for _, s in self.answers), default=0.0)

    def assert_answered(self, minimum=3):
        """Every probe got 200 "ok", and there were at least `minimum`."""
        assert not self.failures, (f"/healthz failed {len(self.failures)} of "
                                   f"{len(self.answers)} times, first: {self.failures[0]}")
        assert len(self.answers) >= minimum, (f"only {len(self.answers)} /healthz probes ran: "
                                              "the probe proves nothing")


def metrics(port):
    """{(sample name, frozenset of labels): value} from /metrics, parsed by
    the reference parser."""
    from prometheus_client.parser import text_string_to_metric_families
    status, text = http_get(port, "/metrics")
    assert status == 200, (status, text[:200])
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# ---------------------------------------------------------------- MariaDB

class Database:
    """A database of its own for one test, created now and dropped by drop().
    Queries go through one autocommit connection that is re-opened when it
    breaks (the server may be restarted by a test)."""

    def __init__(self, params, name=None):
        self.params = {k: params[k] for k in ("host", "port", "user", "password")}
        self.name = name or f"clickloop_t_{random_suffix(12)}"
        self._conn = None
        conn = self._connect(database=None)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{self.name}` "
                            "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        finally:
            conn.close()

    def _connect(self, database):
        import pymysql
        return pymysql.connect(**self.params, database=database, charset="utf8mb4",
                               autocommit=True, connect_timeout=5, read_timeout=300,
                               write_timeout=300)

    def query(self, sql, args=None):
        import pymysql
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = self._connect(self.name)
                with self._conn.cursor() as cur:
                    cur.execute(sql, args)
                    return cur.fetchall()
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def scalar(self, sql, args=None):
        rows = self.query(sql, args)
        return rows[0][0] if rows else None

    def table_exists(self, table):
        return bool(self.scalar("SELECT COUNT(*) FROM information_schema.tables "
                                "WHERE table_schema = %s AND table_name = %s",
                                (self.name, table)))

    def count(self, table):
        """Rows in `table`, 0 while clickloop has not created it yet."""
        import pymysql
        try:
            return self.scalar(f"SELECT COUNT(*) FROM `{table}`")
        except pymysql.err.ProgrammingError as exc:
            if exc.args and exc.args[0] == 1146:  # table doesn't exist
                return 0
            raise

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def drop(self):
        self.close()
        conn = self._connect(database=None)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        finally:
            conn.close()


# ---------------------------------------------------------------- Kafka

# The bootstrap servers of each AdminClient made here, for committed_offsets.
_ADMIN_BOOTSTRAP = {}


def admin_client(bootstrap):
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    _ADMIN_BOOTSTRAP[id(admin)] = bootstrap
    return admin


def create_topic(admin, topic, partitions=DEFAULT_PARTITIONS, timeout=60, config=None):
    """Create `topic`; `config` holds topic settings such as
    {"max.message.bytes": "16777216"}."""
    from confluent_kafka.admin import NewTopic
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                       config=dict(config or {}))],
                             operation_timeout=timeout, request_timeout=timeout)
    fs[topic].result(timeout=timeout)

    def ready():
        md = admin.list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        return (t is not None and t.error is None and len(t.partitions) == partitions
                and all(p.leader >= 0 for p in t.partitions.values()))
    wait_until(ready, timeout, f"topic {topic} to have {partitions} partitions with leaders")


def delete_topic(admin, topic, timeout=60):
    fs = admin.delete_topics([topic], operation_timeout=timeout, request_timeout=timeout)
    fs[topic].result(timeout=timeout)


def end_offsets(admin, topic, partitions):
    """{partition: high watermark} (the offset the next message will get)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec
    req = {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}
    fs = admin.list_offsets(req, request_timeout=30)
    return {tp.partition: f.result(timeout=30).offset for tp, f in fs.items()}


def committed_offsets(admin, group, topic, partitions):
    """{partition: committed offset of the group}, -1 where nothing is committed.

    Read with a consumer that never joins the group (OffsetFetch only), not
    with AdminClient.list_consumer_group_offsets: asked about a group that
    does not exist yet (before clickloop has joined), confluent-kafka's admin
    call can crash the Python process with SIGSEGV (confluent-kafka-python
    issue 1982); CI saw the test process die so, at random, in test_ingest and
    test_agg_random."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
    # A broker just started answers "not coordinator" or "loading" for a
    # while: ask again until it knows (wait_until polls against a deadline).
    waiting = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
               KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT)
    consumer = Consumer({"bootstrap.servers": _ADMIN_BOOTSTRAP[id(admin)], "group.id": group,
                         "enable.auto.commit": False})

    def ask():
        try:
            return consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in waiting or err.retriable():
                return None
            raise
    try:
        result = wait_until(ask, 60, f"the committed offsets of group {group}", interval=0.2)
    finally:
        consumer.close()
    out = {}
    for tp in result:
        if tp.error is not None:
            raise AssertionError(f"committed offset of {topic}[{tp.partition}]: {tp.error}")
        out[tp.partition] = tp.offset if tp.offset >= 0 else -1
    return out


def set_committed_offsets(admin, group, topic, offsets):
    """Overwrite the group's committed offsets ({partition: offset}); the group
    must have no active member."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    req = [ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())])]
    fs = admin.alter_consumer_group_offsets(req, request_timeout=30)
    result = fs[group].result(timeout=30)
    for tp in result.topic_partitions:
        if tp.error is not None:
            raise AssertionError(f"setting the offset of {topic}[{tp.partition}]: {tp.error}")


def delete_records(admin, topic, before):
    """Delete the records of `topic` before the given offsets ({partition:
    offset}), as retention would: the log then starts at that offset."""
    from confluent_kafka import TopicPartition
    fs = admin.delete_records([TopicPartition(topic, p, o) for p, o in sorted(before.items())],
                              request_timeout=30)
    for tp, f in fs.items():
        got = f.result(timeout=30).low_watermark
        if got != before[tp.partition]:
            raise AssertionError(f"{topic}[{tp.partition}] starts at {got} after deleting "
                                 f"the records before {before[tp.partition]}")


class Message:
    """A message to produce: value (bytes or None for a tombstone), optional
    key and partition. After produce(), .partition and .offset hold where it
    landed."""
    __slots__ = ("value", "key", "partition", "offset")

    def __init__(self, value, key=None, partition=None):
        self.value = value
        self.key = key
        self.partition = partition
        self.offset = None


FAST_PRODUCER = {
    "enable.idempotence": True,   # no duplicates from producer retries: counts stay exact
    "acks": "all",
    "linger.ms": 20,
    "batch.size": 1000000,
    "batch.num.messages": 10000,
    "compression.type": "none",
    "queue.buffering.max.messages": 500000,
    "queue.buffering.max.kbytes": 1048576,
    "message.max.bytes": 1000000,
}


def produce(bootstrap, topic, messages, record=True, timeout=300, config=None):
    """Produce every message (in order), wait for all delivery reports, fail
    on any delivery error. With record=True each Message gets its partition
    and offset; `messages` may then not be a one-shot generator. `config`
    overrides producer settings (e.g. a larger message.max.bytes). Returns
    the number of messages produced."""
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, **FAST_PRODUCER, **(config or {})})
    errors = []
    delivered = [0]

    def make_cb(m):
        def cb(err, msg):
            if err is not None:
                errors.append(err)
            else:
                m.partition = msg.partition()
                m.offset = msg.offset()
                delivered[0] += 1
        return cb

    def count_cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[0] += 1

    n = 0
    for m in messages:
        kwargs = {"value": m.value, "on_delivery": make_cb(m) if record else count_cb}
        if m.key is not None:
            kwargs["key"] = m.key
        if m.partition is not None:
            kwargs["partition"] = m.partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 20000 == 0:
            producer.poll(0)
        if errors:
            break
    remaining = producer.flush(timeout)
    assert not errors, f"delivery failed for {len(errors)} message(s), first: {errors[0]}"
    assert remaining == 0, f"{remaining} message(s) still queued after flush({timeout})"
    assert delivered[0] == n, f"{delivered[0]} delivery reports for {n} messages"
    return n


# ---------------------------------------------------------------- the clickloop process

class Clickloop:
    """One clickloop process. Output goes to `log_path`."""

    def __init__(self, binary, config_path, log_path, env=None):
        self.log_path = Path(log_path)
        self.log_file = open(self.log_path, "wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([str(binary), "--config", str(config_path)],
                                     stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.peak_rss_kb = 0

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines=40):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def assert_running(self):
        if not self.running():
            raise AssertionError(f"clickloop (pid {self.pid}) exited with status "
                                 f"{self.proc.returncode}; its log ends with:\n"
                                 f"{self.log_tail()}")

    def vm_hwm_kb(self):
        """Peak resident set size so far (VmHWM, kB); also kept in peak_rss_kb,
        so the last value read survives the process."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        self.peak_rss_kb = max(self.peak_rss_kb, kb)
                        break
        except OSError:
            pass
        return self.peak_rss_kb

    def kill9(self):
        self.vm_hwm_kb()
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log_file.close()

    def stop(self, timeout=90):
        """SIGTERM, wait; returns the exit status (killed with SIGKILL, and
        the test failed, if it does not exit within `timeout`)."""
        self.vm_hwm_kb()
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.log_file.close()
            raise AssertionError(f"clickloop did not exit within {timeout}s of SIGTERM; log:\n"
                                 f"{self.log_tail()}")
        self.log_file.close()
        return rc

    def cleanup(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=30)
        if not self.log_file.closed:
            self.log_file.close()


# ---------------------------------------------------------------- one test's world

class IngestEnv:
    """Topic, group, database, config and processes of one test."""

    def __init__(self, binary, bootstrap, mariadb_params, tmp_path, test_name,
                 partitions=DEFAULT_PARTITIONS, topic_config=None):
        self.binary = binary
        self.bootstrap = bootstrap
        self.tmp_path = Path(tmp_path)
        suffix = random_suffix()
        base = slug(test_name, 30)
        self.topic = f"clickloop-t-{base}-{suffix}"
        self.group = f"clickloop-t-{base}-{suffix}"
        self.partitions = list(range(partitions))
        self.admin = admin_client(bootstrap)
        self.procs = []
        self.config_path = None
        self.db = None
        self._topic_created = False
        try:
            create_topic(self.admin, self.topic, partitions, config=topic_config)
            self._topic_created = True
            self.db = Database(mariadb_params)
        except BaseException:
            self.close()
            raise

    # -- configuration

    def write_config(self, base=CONFIG_EXAMPLE, overrides=None, name="clickloop.json"):
        """Write a config: `base` (a path) with this test's topic, group and
        database, the servers' real addresses, no aggregation (ingest only:
        nothing written to the shared search servers), no admin listener (no
        fixed port), a short Kafka session, an event-time window that accepts
        the fixed dates of the tests (WIDE_EVENT_TIME_WINDOW), then `overrides`
        (deep-merged, DELETE removes a key)."""
        with open(base, encoding="utf-8") as f:
            cfg = json.load(f)
        ours = {
            "kafka": {"brokers": self.bootstrap, "group_id": self.group, "topics": [self.topic],
                      "properties": {"session.timeout.ms": TEST_SESSION_TIMEOUT_MS}},
            "mariadb": {"host": self.db.params["host"], "port": self.db.params["port"],
                        "user": self.db.params["user"], "password": self.db.params["password"],
                        "database": self.db.name},
            "ingest": WIDE_EVENT_TIME_WINDOW,
            "aggregation": {"enabled": False},
            "elasticsearch": DELETE,
            "admin": DELETE,
        }
        cfg = deep_merge(deep_merge(cfg, ours), overrides)
        path = self.tmp_path / name
        path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        self.config_path = path
        return path

    # -- processes

    def start(self, config_path=None):
        config_path = config_path or self.config_path or self.write_config()
        n = len(self.procs) + 1
        p = Clickloop(self.binary, config_path, self.tmp_path / f"clickloop-{n}.log")
        self.procs.append(p)
        return p

    @property
    def proc(self):
        return self.procs[-1] if self.procs else None

    # -- Kafka

    def produce(self, messages, record=True, timeout=300, config=None):
        return produce(self.bootstrap, self.topic, messages, record=record, timeout=timeout,
                       config=config)

    def end_offsets(self):
        return end_offsets(self.admin, self.topic, self.partitions)

    def committed_offsets(self):
        return committed_offsets(self.admin, self.group, self.topic, self.partitions)

    def set_committed_offsets(self, offsets):
        set_committed_offsets(self.admin, self.group, self.topic, offsets)

    def delete_records(self, before):
        delete_records(self.admin, self.topic, before)

    # -- waiting

    def wait_caught_up(self, rows, rejected, timeout, proc=None, interval=0.5, ends=None,
                       settle=15):
        """Wait until click_data holds `rows` rows, rejected_events `rejected`
        rows, and the group's committed offsets equal the end offsets on every
        partition. Fails early if `proc` (default: the last started) exits, or
        if the counts are still wrong `settle` seconds after the offsets reached
        the end (offsets are committed only after the rows are, so by then the
        counts are final). Returns the end offsets."""
        proc = proc if proc is not None else self.proc
        ends = ends if ends is not None else self.end_offsets()
        state = {}

        def counts():
            state["rows"] = self.db.count("click_data")
            state["rejected"] = self.db.count("rejected_events")
            return state["rows"] == rows and state["rejected"] == rejected

        def cond():
            state["committed"] = self.committed_offsets()
            if state["committed"] != ends:   # cheap check first
                state.pop("at_end_since", None)
                return False
            if counts():
                return True
            since = state.setdefault("at_end_since", time.monotonic())
            if time.monotonic() - since > settle:
                raise AssertionError(f"offsets are committed to the end but {describe()}")
            return False

        def describe():
            if "rows" not in state:
                counts()
            reasons = self.db.query("SELECT LEFT(reason, 100), COUNT(*) FROM rejected_events "
                                    "GROUP BY 1 ORDER BY 2 DESC LIMIT 12") \
                if self.db.table_exists("rejected_events") else ()
            return (f"click_data={state['rows']} (want {rows}), rejected_events="
                    f"{state['rejected']} (want {rejected}), committed={state.get('committed')}, "
                    f"end={ends}; most frequent rejection reasons: {list(reasons)}; "
                    f"clickloop log ends with:\n{proc.log_tail() if proc else ''}")

        wait_until(cond, timeout, "clickloop to catch up", interval=interval,
                   describe=describe, check=proc.assert_running if proc else None)
        return ends

    # -- cleanup

    def close(self):
        for p in self.procs:
            try:
                if p.running():
                    p.stop(timeout=60)
            except Exception:
                pass
            p.cleanup()
        if self.procs:
            print(f"--- last clickloop log ({self.procs[-1].log_path}):\n"
                  f"{self.procs[-1].log_tail(60)}")
        if self.db is not None:
            try:
                self.db.drop()
            except Exception as exc:
                print(f"could not drop database {self.db.name}: {exc}")
        if self._topic_created:
            try:
                delete_topic(self.admin, self.topic)
            except Exception as exc:
                print(f"could not delete topic {self.topic}: {exc}")
