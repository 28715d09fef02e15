"""Ingest acceptance tests: clickloop consumes clickstream events from a real
Kafka broker and stores them in a real MariaDB (deps/services up).

Each test gets its own topic (4 partitions), consumer group and database
(see harness.IngestEnv) and runs the clickloop binary (CLICKLOOP_BIN) as a
subprocess. Measured figures (ingest rate, peak RSS, durations) are printed
with harness.report() and land in the meson test log.

Run alone: .venv/bin/python -m pytest -q test/integration/test_ingest.py
"""

import datetime as dt
import json
import os
import random
import re
import signal
import time

import pytest

import harness
from harness import DELETE, Message

EPOCH = dt.datetime(1970, 1, 1)
TS_MIN_MS = 1_000_000_000_000   # 2001-09-09: epoch seconds stay below 1e11, ms above
TS_MAX_MS = 2_000_000_000_000   # 2033-05-18

# Peak RSS (VmHWM) allowed while consuming a backlog of 1 000 000 events of
# ~280 bytes with the default ingest settings (batches of 1000 events, at most
# 50 000 events in flight, librdkafka's prefetch capped by clickloop at 16 MiB).
# Measured on 2 cores (librdkafka 2.0.2, MariaDB 10.11), plain build: 100.5,
# 100.6, 104.3, 109.3 and 110.2 MiB in five runs; bound = highest x 1.5 = 166,
# rounded up. For comparison, the same backlog with max_in_flight_events = 10 000 000
# (backpressure never engages) peaked at 409 MiB: memory that grows with the
# backlog instead of with the configuration fails this test.
PEAK_RSS_BOUND_MB = 170
# The AddressSanitizer build (CI runs the suite on build-asan too) keeps freed
# memory in quarantine (256 MiB by default) and maps shadow memory: measured
# 524.4 and 549.3 MiB for the same run; bound = highest x 1.5 = 824, rounded up.
PEAK_RSS_BOUND_MB_SANITIZED = 850


def is_sanitized(binary):
    """Whether the binary was built with -fsanitize=address (it then imports
    __asan_init)."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


FIELDS = ("event_id", "user_id", "timestamp", "url", "country", "city", "browser", "os",
          "device", "user_agent", "time_spent_ms")
GEO_FIELDS = ("country", "city")
UA_FIELDS = ("browser", "os", "device", "user_agent")


def make_rng():
    """A seeded random generator; the seed is printed (shown with a failure) and
    may be fixed with CLICKLOOP_TEST_SEED to replay a run's data."""
    seed = int(os.environ.get("CLICKLOOP_TEST_SEED") or random.randrange(2**32))
    print(f"random seed {seed} (CLICKLOOP_TEST_SEED={seed} repeats it)")
    return random.Random(seed), seed


# ---------------------------------------------------------------- event generation

def pointer_tokens(pointer):
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


def flat_mapping():
    return {f: "/" + f for f in FIELDS}


def mapping_of(config_path):
    with open(config_path, encoding="utf-8") as f:
        m = json.load(f)["ingest"].get("mapping", {})
    return {f: m.get(f, "/" + f) for f in FIELDS}


def place(doc, pointer, value):
    """Put value at pointer inside doc, creating objects on the way."""
    tokens = pointer_tokens(pointer)
    for t in tokens[:-1]:
        doc = doc.setdefault(t, {})
    doc[tokens[-1]] = value


def ms_parts(ms):
    d = EPOCH + dt.timedelta(milliseconds=ms)
    return d, ms % 1000


class Events:
    """Random valid events, and the row each must become.

    An expectation is a dict: event_id (None if absent), user_id (text),
    ts_ms (UTC ms), url, time_spent_ms, country (upper case), city, browser,
    os, device, user_agent (None when absent)."""

    USERS_ASCII = [f"user-{i}" for i in range(3000)]
    USERS_UNICODE = ["ユーザー-7", "jürgen", "😀-smile", "Ωmega", "o'brien", 'quote"user']
    COUNTRIES = ["US", "DE", "FR", "JP", "BR", "IN", "GB", "ES", "IT", "NL", "XK", "SE",
                 "us", "de", "fr", "jp", "Br", "gB", "nL"]
    CITIES = ["New York", "Berlin", "Paris", "東京", "São Paulo", "Zürich", "Kraków",
              "Reykjavík", "İstanbul", "Москва", "🏙️ Metropolis", "O'Fallon", 'Quote"ville',
              "Back\\slash", "Tab\tCity", "Ålesund"]
    BROWSERS = ["Firefox", "Chrome", "Safari", "Edge", "Opera", "Brave 🦁", "Яндекс"]
    OSES = ["Linux", "Windows 11", "macOS 14.5", "iOS 17", "Android 14", "ChromeOS"]
    DEVICES = ["desktop", "mobile", "tablet", "tv", "console", "watch ⌚"]
    UAS = ["Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/125.0.0.0 Safari/537.36",
           "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
           "curl/8.5.0", "Ünïcödé-Agent/1.0 (😀)"]
    PATHS = ["products", "cart", "checkout", "search", "blog/2024/hello-world", "ü/ñ/ç",
             "😀/emoji", "日本語/ページ", "a%20b/c?d=e&f=g", 'weird"quote\\back']

    def __init__(self, rng, mapping=None):
        self.rng = rng
        self.mapping = mapping or flat_mapping()
        self.seq = 0

    # ---- timestamps in every accepted form

    def timestamp(self):
        """(JSON value, expected UTC ms)."""
        r = self.rng
        ms = r.randrange(TS_MIN_MS, TS_MAX_MS)
        sec_ms = ms - ms % 1000
        form = r.randrange(12)
        if form == 0:   # RFC 3339, Z, whole seconds
            d, _ = ms_parts(ms)
            return d.strftime("%Y-%m-%dT%H:%M:%SZ"), sec_ms
        if form == 1:   # fraction of 3 digits, Z
            d, frac = ms_parts(ms)
            return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:03d}Z", ms
        if form == 2:   # 1..9 fraction digits (truncated to ms), lower-case t and z
            d, frac = ms_parts(ms)
            digits = f"{frac:03d}" + "".join(str(r.randrange(10)) for _ in range(6))
            n = r.randint(1, 9)
            kept = int(digits[:n].ljust(3, "0")[:3])
            return d.strftime("%Y-%m-%dt%H:%M:%S") + "." + digits[:n] + "z", sec_ms + kept
        if form in (3, 4, 5):   # numeric offset +hh:mm / -hh:mm, maybe fraction, maybe space
            offset_min = r.choice([-720, -600, -480, -300, -210, -60, 0, 60, 120, 330, 345,
                                   540, 600, 780, 840])
            local, frac = ms_parts(ms + offset_min * 60000)
            sign = "-" if offset_min < 0 else "+"
            hh, mm = divmod(abs(offset_min), 60)
            sep = " " if form == 5 else "T"
            zone = f"{sign}{hh:02d}:{mm:02d}" if form != 4 else f"{sign}{hh:02d}{mm:02d}"
            if r.random() < 0.5:
                return local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + zone, sec_ms
            return local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + f".{frac:03d}" + zone, ms
        if form == 6:   # epoch seconds, integer
            return ms // 1000, sec_ms
        if form == 7:   # epoch seconds with a millisecond fraction
            s, frac = divmod(ms, 1000)
            return float(f"{s}.{frac:03d}"), ms
        if form in (8, 9):   # epoch milliseconds, integer
            return ms, ms
        if form == 10:  # epoch milliseconds with a sub-millisecond fraction (truncated)
            return ms + r.choice([0.25, 0.5, 0.75]), ms
        # a leap second: clamped to :59.999 of the same minute
        d, _ = ms_parts(ms)
        minute_ms = ms - ms % 60000
        return d.strftime("%Y-%m-%dT%H:%M:") + "60Z", minute_ms + 59999

    def url(self):
        r = self.rng
        x = r.random()
        base = f"https://shop.example.com/{r.choice(self.PATHS)}/{r.randrange(10**6)}"
        if x < 0.02:   # long, ~3 KB
            return base + "?q=" + "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789-_")
                                         for _ in range(3000))
        if x < 0.12:
            return base + "/😀✓ü日本?x=" + str(r.random())
        return base

    def user_id(self):
        r = self.rng
        x = r.random()
        if x < 0.06:
            v = r.choice([42, -7, 2**62 + 3, 2**63 + 5, 0, 123456789012])
            return v, str(v)
        if x < 0.12:
            v = r.choice(self.USERS_UNICODE)
            return v, v
        v = r.choice(self.USERS_ASCII)
        return v, v

    def time_spent(self):
        """(JSON value or None to omit, expected)."""
        r = self.rng
        x = r.random()
        if x < 0.15:
            return None, None
        if x < 0.2:
            return "null", None
        if x < 0.3:
            v = r.randrange(100000) + r.choice([0.25, 0.75])
            return v, round(v)   # no ties: .25/.75 round the same either way
        if x < 0.31:
            return 10**12, 10**12
        v = r.randrange(600000)
        return v, v

    def valid(self, event_id=None, all_fields=False):
        """One valid event: (payload bytes, expectation). event_id: True to
        force one, False for none, None for random (90 % have one)."""
        r = self.rng
        self.seq += 1
        if event_id is None:
            event_id = r.random() < 0.9
        exp = dict.fromkeys(("event_id", "user_id", "ts_ms", "url", "time_spent_ms", "country",
                             "city", "browser", "os", "device", "user_agent"))
        doc = {}
        m = self.mapping
        if event_id:
            if r.random() < 0.002:
                # looks like a derived key: still an event_id ("e:" prefix keeps them apart)
                eid = f"k:clicks:0:{self.seq}"
            elif r.random() < 0.05:
                eid = f"évènement-😀-{self.seq}-{r.getrandbits(48):x}"
            else:
                eid = f"ev-{self.seq}-{r.getrandbits(64):016x}"
            place(doc, m["event_id"], eid)
            exp["event_id"] = eid
        uid, exp["user_id"] = self.user_id()
        place(doc, m["user_id"], uid)
        ts, exp["ts_ms"] = self.timestamp()
        place(doc, m["timestamp"], ts)
        exp["url"] = self.url()
        place(doc, m["url"], exp["url"])

        geo_absent = not all_fields and r.random() < 0.1
        ua_absent = not all_fields and r.random() < 0.1
        for f, pool in (("country", self.COUNTRIES), ("city", self.CITIES),
                        ("browser", self.BROWSERS), ("os", self.OSES),
                        ("device", self.DEVICES), ("user_agent", self.UAS)):
            family_absent = geo_absent if f in GEO_FIELDS else ua_absent
            x = r.random()
            if not all_fields and (family_absent or x < 0.15):
                if r.random() < 0.3:
                    place(doc, m[f], None)   # JSON null: absent for optional fields
                continue
            v = r.choice(pool)
            place(doc, m[f], v)
            exp[f] = v.upper() if f == "country" else v
        if all_fields:
            v = r.randrange(600000)
            place(doc, m["time_spent_ms"], v)
            exp["time_spent_ms"] = v
        else:
            v, exp["time_spent_ms"] = self.time_spent()
            if v == "null":
                place(doc, m["time_spent_ms"], None)
            elif v is not None:
                place(doc, m["time_spent_ms"], v)
        if r.random() < 0.1:
            doc["unknown_member"] = {"ignored": [1, 2, 3], "s": "x"}
        keys = list(doc)
        r.shuffle(keys)
        doc = {k: doc[k] for k in keys}
        payload = json.dumps(doc, ensure_ascii=r.random() < 0.3, separators=(",", ":"))
        return payload.encode("utf-8"), exp


# Malformed messages: (kind, builder(rng, i) -> payload, words the reason must contain)
def _base(i):
    return {"event_id": f"bad-{i}", "user_id": "u", "timestamp": "2025-01-01T00:00:00Z",
            "url": "https://example.com/x"}


def _with(i, **changes):
    d = _base(i)
    for k, v in changes.items():
        if v is DELETE:
            d.pop(k)
        else:
            d[k] = v
    return json.dumps(d).encode()


MALFORMED = [
    ("not_json", lambda r, i: r.choice([b"hello world", b'{"user_id": "u", "url": ',
                                        b"{'single': 'quotes'}", b'{"a":1,}', b"\x7f\x7f"]),
     ["json"]),
    ("json_array", lambda r, i: json.dumps([_base(i)]).encode(), ["object"]),
    ("json_scalar", lambda r, i: r.choice([b'"just a string"', b"42", b"null", b"true"]),
     ["object"]),
    ("missing_user_id", lambda r, i: _with(i, user_id=DELETE), ["user_id", "missing"]),
    ("missing_url", lambda r, i: _with(i, url=DELETE), ["url", "missing"]),
    ("empty_url", lambda r, i: _with(i, url=""), ["url", "empty"]),
    ("null_timestamp", lambda r, i: _with(i, timestamp=None), ["timestamp", "null"]),
    ("bad_timestamp", lambda r, i: _with(i, timestamp=r.choice(
        ["2025-02-30T10:00:00Z", "2025-13-01T00:00:00Z", "yesterday", "2025-01-01T25:00:00Z",
         "1969-12-31T23:59:59Z"])), ["timestamp"]),
    ("no_timezone", lambda r, i: _with(i, timestamp="2025-05-01T12:00:00"),
     ["timestamp", "time zone"]),
    ("bad_country", lambda r, i: _with(i, country=r.choice(["USA", "U", "1A", "ü1"])),
     ["country"]),
    ("invalid_utf8", lambda r, i: (b'{"event_id":"bad-%d","user_id":"u\xff\xfe",'
                                   b'"timestamp":1700000000,"url":"https://x"}' % i),
     ["utf-8"]),
    ("oversized", lambda r, i: _with(i, url="https://example.com/" + "x" * 70000),
     ["limit"]),
    ("wrong_type", lambda r, i: r.choice([_with(i, url=42), _with(i, user_id=True),
                                          _with(i, timestamp=[1]), _with(i, city=7),
                                          _with(i, user_id=1.5)]),
     ["expected"]),
    ("negative_time_spent", lambda r, i: _with(i, time_spent_ms=-5),
     ["time_spent_ms", "negative"]),
    ("empty_payload", lambda r, i: b"", ["empty"]),
    ("tombstone", lambda r, i: None, ["empty"]),
    ("empty_event_id", lambda r, i: _with(i, event_id=""), ["event_id"]),
    ("unpaired_surrogate", lambda r, i: b'{"user_id":"\\ud800","timestamp":1700000000,'
                                        b'"url":"https://x"}', ["utf-8"]),
]


# ---------------------------------------------------------------- checking the tables

def row_key(exp, msg_topic, partition, offset):
    if exp["event_id"] is not None:
        return ("e:" + exp["event_id"]).encode()
    return f"k:{msg_topic}:{partition}:{offset}".encode()


def diff_sets(name, got, want, limit=5):
    missing = want - got
    extra = got - want
    assert not missing and not extra, (
        f"{name}: {len(got)} rows, want {len(want)}; missing {len(missing)} "
        f"(e.g. {sorted(missing)[:limit]}), unexpected {len(extra)} (e.g. {sorted(extra)[:limit]})")


def check_stored_events(env, expected, topic):
    """expected: {row_key: (expectation, {(partition, offset), ...})}. Each
    table must hold exactly these events, field for field."""
    rows = env.db.query("SELECT row_key, event_id, user_id, event_time, url, time_spent_ms, "
                        "kafka_topic, kafka_partition, kafka_offset FROM click_data")
    click = {r[0]: r for r in rows}
    assert len(click) == len(rows)
    diff_sets("click_data", set(click), set(expected))
    problems = []
    for key, (exp, coords) in expected.items():
        r = click[key]
        got = {"event_id": r[1], "user_id": r[2], "ts_ms": harness.ms_from_datetime(r[3]),
               "url": r[4], "time_spent_ms": r[5]}
        for f, v in got.items():
            if v != exp[f]:
                problems.append(f"{key!r} click_data.{f}: got {v!r}, want {exp[f]!r}")
        if r[6] != topic or (r[7], r[8]) not in coords:
            problems.append(f"{key!r}: stored from {r[6]}[{r[7]}]@{r[8]}, not one of the "
                            f"messages that carried it: {sorted(coords)}")

    # store.c (has_geo / has_user_agent): a geo_data row only when the event has a
    # country or a city, a user_agent_data row only when it has any of browser, os,
    # device, user_agent.
    for table, fields in (("geo_data", GEO_FIELDS), ("user_agent_data", UA_FIELDS)):
        rows = env.db.query(f"SELECT row_key, {', '.join(fields)} FROM {table}")
        got_rows = {r[0]: r[1:] for r in rows}
        want_keys = {k for k, (exp, _) in expected.items()
                     if any(exp[f] is not None for f in fields)}
        diff_sets(table, set(got_rows), want_keys)
        for key in want_keys:
            exp = expected[key][0]
            for f, v in zip(fields, got_rows[key]):
                if v != exp[f]:
                    problems.append(f"{key!r} {table}.{f}: got {v!r}, want {exp[f]!r}")
    assert not problems, f"{len(problems)} wrong value(s):\n" + "\n".join(problems[:20])


def check_one_row_per_key(env, keys, tables=("click_data", "geo_data", "user_agent_data")):
    for table in tables:
        n, distinct = env.db.query(f"SELECT COUNT(*), COUNT(DISTINCT row_key) FROM {table}")[0]
        assert n == distinct == len(keys), (
            f"{table}: {n} rows, {distinct} distinct keys, want {len(keys)}")
        got = {r[0] for r in env.db.query(f"SELECT row_key FROM {table}")}
        diff_sets(table, got, keys)


def assert_offsets_at_end(env, ends=None):
    ends = ends or env.end_offsets()
    committed = env.committed_offsets()
    assert committed == ends, f"committed offsets {committed} != end offsets {ends}"


# ---------------------------------------------------------------- 1. validity and rejection

def test_stores_distinct_valid_events_and_rejects_malformed(env, request):
    rng, seed = make_rng()
    gen = Events(rng)
    n_valid, n_bad, n_dup = 100_000, 1_000, 5_000

    valid = []   # (Message, expectation)
    for _ in range(n_valid):
        payload, exp = gen.valid()
        valid.append((Message(payload, partition=rng.randrange(4)), exp))
    bad = []     # (Message, kind, words)
    for i in range(n_bad):
        kind, build, words = MALFORMED[i % len(MALFORMED)]
        bad.append((Message(build(rng, i), partition=rng.randrange(4)), kind, words))
    with_id = [(m, exp) for m, exp in valid if exp["event_id"] is not None]
    dups = []    # (Message, expectation of the original)
    for _ in range(n_dup):
        m, exp = rng.choice(with_id)
        dups.append((Message(m.value, partition=rng.randrange(4)), exp))

    messages = [m for m, _ in valid] + [m for m, _, _ in bad] + [m for m, _ in dups]
    rng.shuffle(messages)
    t0 = time.monotonic()
    env.produce(messages)
    t_produced = time.monotonic()

    env.write_config()
    proc = env.start()
    ends = env.wait_caught_up(n_valid, n_bad, timeout=300)
    t_done = time.monotonic()
    harness.report(request, f"seed {seed}: {len(messages)} messages produced in "
                   f"{t_produced - t0:.1f}s, consumed in {t_done - t_produced:.1f}s "
                   f"({len(messages) / (t_done - t_produced):.0f} msg/s incl. start-up)")

    expected = {}
    for m, exp in valid:
        expected[row_key(exp, env.topic, m.partition, m.offset)] = (exp, {(m.partition, m.offset)})
    for m, exp in dups:
        expected[row_key(exp, env.topic, None, None)][1].add((m.partition, m.offset))
    assert len(expected) == n_valid
    check_stored_events(env, expected, env.topic)

    rows = env.db.query("SELECT kafka_topic, kafka_partition, kafka_offset, payload, reason "
                        "FROM rejected_events")
    got = {(r[1], r[2]): r for r in rows}
    assert all(r[0] == env.topic for r in rows)
    want = {(m.partition, m.offset): (m, kind, words) for m, kind, words in bad}
    diff_sets("rejected_events", set(got), set(want))
    problems = []
    for coord, (m, kind, words) in want.items():
        _, _, _, payload, reason = got[coord]
        if not reason or not all(w in reason.lower() for w in words):
            problems.append(f"{kind} at {coord}: reason {reason!r} lacks {words}")
        sent = m.value or b""
        if kind == "oversized":
            if payload is None or not sent.startswith(payload):
                problems.append(f"{kind} at {coord}: stored payload is not a prefix of the sent one")
        elif (payload or b"") != sent:
            problems.append(f"{kind} at {coord}: payload {payload[:80]!r} != sent {sent[:80]!r}")
    assert not problems, "\n".join(problems[:20])

    assert_offsets_at_end(env, ends)
    proc.assert_running()


# ---------------------------------------------------------------- 2. crash safety

def test_kill_9_three_times_stores_every_event_once(env, request):
    rng, seed = make_rng()
    gen = Events(rng)
    n = 200_000
    msgs = []
    exps = []
    for i in range(n):
        payload, exp = gen.valid(event_id=(i % 2 == 0), all_fields=True)
        msgs.append(Message(payload, key=str(i).encode()))
        exps.append(exp)
    env.produce(msgs)
    keys = {row_key(e, env.topic, m.partition, m.offset) for m, e in zip(msgs, exps)}
    assert len(keys) == n

    key_at = {(m.partition, m.offset): row_key(e, env.topic, m.partition, m.offset)
              for m, e in zip(msgs, exps)}
    ends = env.end_offsets()

    def stored(key):
        return env.db.table_exists("click_data") and env.db.scalar(
            "SELECT COUNT(*) FROM click_data WHERE row_key = %s", (key,)) == 1

    env.write_config()
    t0 = time.monotonic()
    proc = env.start()
    kills = []
    committed_at_kill = {p: 0 for p in env.partitions}
    for _ in range(3):
        # The kill moment: when the row of a random message lands, one that lies
        # 10-35 % into what is left of its partition after the previous kill. The
        # probe is one primary-key lookup, so the kill follows within ~20 ms and
        # finds the new run busy consuming (a COUNT(*) probe takes long enough
        # under load for the run to finish first).
        p = rng.choice(env.partitions)
        lo = committed_at_kill[p]
        for _attempt in range(20):
            target = lo + int((ends[p] - lo) * rng.uniform(0.10, 0.35))
            if not stored(key_at[(p, target)]):
                break
            lo = target   # already written beyond the commit point: look further on
        th = key_at[(p, target)]
        harness.wait_until(lambda: stored(th), 300, f"the row of {p}@{target} ({th!r})",
                           interval=0.02, check=proc.assert_running,
                           describe=lambda: f"{env.db.count('click_data')} rows; log:\n"
                                            f"{proc.log_tail()}")
        proc.kill9()
        offsets = env.committed_offsets()
        committed = sum(max(c, 0) for c in offsets.values())
        # Offsets never pass an event that is not stored: every message below the
        # committed offset of its partition has its row.
        for q, c in offsets.items():
            below = env.db.scalar("SELECT COUNT(*) FROM click_data WHERE kafka_partition = %s "
                                  "AND kafka_offset < %s", (q, c))
            assert below == max(c, 0), (f"partition {q}: committed offset {c} but only "
                                        f"{below} of the messages before it are stored")
        committed_at_kill = {q: max(c, 0) for q, c in offsets.items()}
        kills.append((f"{p}@{target}", env.db.count("click_data"), committed,
                      round(time.monotonic() - t0, 1)))
        # The kill must land while events are still being consumed, or it proves nothing.
        assert committed < n, f"killed only after everything was committed: {kills}"
        proc = env.start()
    env.wait_caught_up(n, 0, timeout=480, ends=ends)
    harness.report(request, f"seed {seed}: SIGKILL at {kills} (message whose row triggered "
                   f"it, rows after the kill, offsets committed, s since start); caught up after "
                   f"{time.monotonic() - t0:.1f}s")
    check_one_row_per_key(env, keys)
    assert_offsets_at_end(env)


# ---------------------------------------------------------------- 3. database outage

DB_TROUBLE = re.compile(r"module=db .*connection \d+ (lost|failed)")


def test_mariadb_restart_loses_nothing(env, request):
    rng, _ = make_rng()
    gen = Events(rng)
    n_before, n_during = 60_000, 40_000
    before, during = [], []
    for i in range(n_before + n_during):
        payload, exp = gen.valid(event_id=(i % 3 != 0), all_fields=True)
        (before if i < n_before else during).append((Message(payload), exp))
    env.produce(m for m, _ in before)
    # A short reconnect backoff only keeps the test quick: with the default 30 s
    # cap, clickloop may wait that long before it tries the restarted server.
    env.write_config(overrides={"mariadb": {"reconnect_max_backoff": "2s"}})
    proc = env.start()
    harness.wait_until(lambda: env.db.count("click_data") >= n_before // 3, 180,
                       "clickloop to store a third of the first events", interval=0.1,
                       check=proc.assert_running)

    t_down = time.monotonic()
    harness.services("down", "mariadb")
    try:
        env.produce(m for m, _ in during)      # arrives while the database is down
        harness.wait_until(lambda: DB_TROUBLE.search(proc.log_text()), 60,
                           "clickloop to notice the database is gone",
                           check=proc.assert_running, describe=proc.log_tail)
        proc.assert_running()
        ends_while_down = env.end_offsets()
        assert env.committed_offsets() != ends_while_down, \
            "offsets reached the end while the database was down"
    finally:
        harness.services("up", "mariadb")
    t_up = time.monotonic()
    env.wait_caught_up(n_before + n_during, 0, timeout=300)
    proc.assert_running()
    harness.report(request, f"MariaDB down for {t_up - t_down:.1f}s; caught up "
                   f"{time.monotonic() - t_up:.1f}s after it was back; clickloop kept running")
    keys = {row_key(e, env.topic, m.partition, m.offset) for m, e in before + during}
    check_one_row_per_key(env, keys)
    assert_offsets_at_end(env)


# ---------------------------------------------------------------- 4. nested layout

def test_nested_layout_through_configuration_alone(env):
    env.write_config(base=harness.NESTED_EXAMPLE)
    mapping = mapping_of(env.config_path)
    assert mapping["user_id"] != "/user_id", "the example is expected to nest the fields"
    rng, _ = make_rng()
    gen = Events(rng, mapping=mapping)
    n = 3000
    valid = [(Message(p, partition=rng.randrange(4)), e)
             for p, e in (gen.valid() for _ in range(n))]
    # Flat events do not match this mapping: they are rejected, not half-read.
    flat = [Message(Events(rng).valid(event_id=True)[0], partition=rng.randrange(4))
            for _ in range(20)]
    env.produce([m for m, _ in valid] + flat)
    env.start()
    env.wait_caught_up(n, len(flat), timeout=180)
    expected = {row_key(e, env.topic, m.partition, m.offset): (e, {(m.partition, m.offset)})
                for m, e in valid}
    check_stored_events(env, expected, env.topic)
    reasons = env.db.query("SELECT reason FROM rejected_events")
    assert all(mapping["user_id"] in r[0] for r in reasons), reasons[:3]


# ---------------------------------------------------------------- 5. redelivery without event_id

def test_events_without_event_id_stored_once_when_delivered_twice(env, request):
    rng, _ = make_rng()
    gen = Events(rng)
    n = 20_000
    msgs, exps = [], []
    for _ in range(n):
        payload, exp = gen.valid(event_id=False, all_fields=True)
        msgs.append(Message(payload, partition=rng.randrange(4)))
        exps.append(exp)
    env.produce(msgs)
    env.write_config()
    first = env.start()
    ends = env.wait_caught_up(n, 0, timeout=180)
    assert first.stop() == 0, first.log_tail()

    # Deliver everything again: rewind the group to the start of every partition.
    zero = {p: 0 for p in env.partitions}
    last_error = []
    harness.wait_until(lambda: _try_set_offsets(env, zero, last_error), 60,
                       "the group to accept new offsets (no active member)",
                       describe=lambda: repr(last_error[-1:]))
    assert env.committed_offsets() == zero
    second = env.start()
    env.wait_caught_up(n, 0, timeout=180, ends=ends)
    assert second.stop() == 0, second.log_tail()
    m = re.search(r"drained: (\d+) events stored", second.log_text())
    if m:
        harness.report(request, f"second run re-stored {m.group(1)} events (idempotently)")
    keys = {row_key(e, env.topic, msg.partition, msg.offset) for msg, e in zip(msgs, exps)}
    assert all(k.startswith(b"k:") for k in keys)
    check_one_row_per_key(env, keys)


def _try_set_offsets(env, offsets, errors):
    """Kafka refuses to alter the offsets of a group that still has members
    (the stopped instance may not have left yet): report False to retry."""
    try:
        env.set_committed_offsets(offsets)
        return True
    except Exception as exc:
        errors.append(exc)
        return False


# ---------------------------------------------------------------- 6. poison isolation

SCHEMA_VERSION = 5  # CL_STORE_SCHEMA_VERSION (include/clickloop/store.h)


def wait_schema(env, proc, timeout=120):
    """Wait until clickloop has migrated the schema (before altering it)."""
    def migrated():
        return (env.db.table_exists("clickloop_schema")
                and env.db.scalar("SELECT version FROM clickloop_schema") == SCHEMA_VERSION)
    harness.wait_until(migrated, timeout, "the schema migration", check=proc.assert_running)


# Single quotes escape to two bytes in SQL but take one in JSON: the worst
# case for the SQL a batch of small messages needs.
QUOTES = "'" * 60 + "\"\\" * 5


def quote_heavy_messages(prefix, n, now_ms):
    """n events of about 450 bytes, every text field quote-heavy; their row
    key (event_id) too, which the batch writes to four tables."""
    for i in range(n):
        doc = {"event_id": f"{prefix}-{i}-{QUOTES[:40]}", "user_id": f"o'{QUOTES[:30]}{i % 997}",
               "timestamp": now_ms - i, "url": f"https://shop.example/{i}?q={QUOTES}{QUOTES}",
               "country": "IE", "city": f"D{QUOTES[:20]}n", "browser": f"B{QUOTES[:20]}",
               "os": f"O{QUOTES[:10]}", "device": "d'", "user_agent": f"Agent{QUOTES[:50]}"}
        yield Message(json.dumps(doc, separators=(",", ":")).encode(), partition=i % 4)


@pytest.mark.parametrize("packet_limit", ["4MB", None], ids=["4MiB-packet", "server-packet"])
def test_batches_of_10000_quote_heavy_events_fit_the_packet_limit(env, request, packet_limit):
    """batch_max_events = 10000 with events whose SQL is about 5 times their
    size: a batch closes before its SQL reaches the packet limit (here 4 MiB,
    a MySQL 5.7 server's, set with mariadb.max_allowed_packet; or the test
    server's own 16 MiB), so nothing is ever refused or retried."""
    n = 30_000
    now_ms = int(time.time() * 1000)
    msgs = list(quote_heavy_messages("qh", n, now_ms))
    payload_bytes = sum(len(m.value) for m in msgs)
    env.produce(msgs, record=False)
    port = harness.free_port()
    overrides = {"ingest": {"batch_max_events": 10_000, "max_in_flight_events": 50_000},
                 "admin": {"listen": f"{harness.HOST}:{port}"}}
    if packet_limit is not None:
        overrides["mariadb"] = {"max_allowed_packet": packet_limit}
    env.write_config(overrides=overrides)
    proc = env.start()
    t0 = time.monotonic()
    env.wait_caught_up(n, 0, timeout=300)
    elapsed = time.monotonic() - t0
    m = harness.metrics(port)
    batches = m[("clickloop_batches_total", frozenset())]
    failures = m[("clickloop_batch_failures_total", frozenset())]
    retries = m[("clickloop_batch_retries_total", frozenset())]
    harness.report(request, f"{n} events ({payload_bytes / n:.0f} bytes each) in {batches:.0f} "
                   f"batches ({n / batches:.0f} events each) in {elapsed:.1f}s; "
                   f"{failures:.0f} refused writes, {retries:.0f} retries")
    assert failures == 0, proc.log_tail()
    assert retries <= 3, proc.log_tail()
    assert batches >= 3, "the batches did not close early: the test proves nothing"
    # Stored byte for byte.
    want = {json.loads(m.value)["event_id"]: json.loads(m.value) for m in msgs[::997]}
    rows = env.db.query("SELECT c.event_id, c.user_id, c.url, g.city, u.user_agent "
                        "FROM click_data c JOIN geo_data g USING (row_key) "
                        "JOIN user_agent_data u USING (row_key) WHERE c.event_id IN (%s)"
                        % ",".join(["%s"] * len(want)), list(want))
    got = {r[0]: r for r in rows}
    assert set(got) == set(want)
    for eid, doc in want.items():
        assert got[eid][1:] == (doc["user_id"], doc["url"], doc["city"], doc["user_agent"])
    assert "refused" not in proc.log_text()
    assert proc.stop() == 0


POISONS = {
    # A column narrowed by an operator: strict mode refuses a longer value
    # (ER_DATA_TOO_LONG), which the event rules accept.
    "narrowed_column": ("ALTER TABLE geo_data MODIFY city VARCHAR(8) NULL",
                        {"city": "Springfield, Massachusetts"},
                        "Data too long for column 'city'"),
    # A CHECK constraint an operator added (ER_CONSTRAINT_FAILED).
    "check_constraint": ("ALTER TABLE click_data ADD CONSTRAINT visits_under_a_day "
                         "CHECK (time_spent_ms IS NULL OR time_spent_ms < 86400000)",
                         {"time_spent_ms": 90_000_000},
                         "CONSTRAINT `visits_under_a_day` failed"),
}


@pytest.mark.parametrize("kind", sorted(POISONS))
def test_event_mariadb_refuses_goes_to_rejected_and_its_batch_mates_are_stored(env, request,
                                                                                 kind):
    ddl, poison_fields, server_reason = POISONS[kind]
    env.write_config(overrides={"ingest": {"batch_max_events": 5000, "batch_max_delay": "1s"}})
    proc = env.start()
    wait_schema(env, proc)
    env.db.query(ddl)

    n, poison_at = 3000, (17, 1500, 2999)
    now_ms = int(time.time() * 1000)
    msgs = []
    for i in range(n):
        doc = {"event_id": f"p-{i}", "user_id": f"u{i % 50}", "timestamp": now_ms - i,
               "url": f"https://example.com/{i % 40}", "country": "US", "city": "Boston",
               "time_spent_ms": 1000 + i}
        if i in poison_at:
            doc.update(poison_fields)
        msgs.append(Message(json.dumps(doc).encode(), partition=i % 4))
    env.produce(msgs)
    env.wait_caught_up(n - len(poison_at), len(poison_at), timeout=300)

    rows = env.db.query("SELECT kafka_partition, kafka_offset, payload, reason "
                        "FROM rejected_events ORDER BY kafka_partition, kafka_offset")
    want = sorted((msgs[i].partition, msgs[i].offset) for i in poison_at)
    assert [(r[0], r[1]) for r in rows] == want
    for r in rows:
        assert r[3].startswith("MariaDB refused the event: "), r[3]
        assert server_reason in r[3], r[3]
    stored = {r[0] for r in env.db.query("SELECT event_id FROM click_data")}
    assert stored == {f"p-{i}" for i in range(n) if i not in poison_at}
    check_one_row_per_key(env, {("e:" + e).encode() for e in stored},
                          tables=("click_data", "geo_data", "agg_pending"))
    assert "writing it again in halves" in proc.log_text()
    harness.report(request, f"{kind}: {len(poison_at)} of {n} events refused by MariaDB "
                   f"({rows[0][3][:120]}), the others stored")
    assert proc.stop() == 0


def test_missing_table_holds_offsets_and_readiness_until_the_operator_fixes_it(env, request):
    port = harness.free_port()
    env.write_config(overrides={"admin": {"listen": f"{harness.HOST}:{port}"}})
    proc = env.start()
    wait_schema(env, proc)
    harness.wait_until(lambda: harness.http_get(port, "/readyz")[0] == 200, 60, "ready",
                       check=proc.assert_running)
    env.db.query("RENAME TABLE geo_data TO geo_data_away")

    n = 500
    now_ms = int(time.time() * 1000)
    env.produce([Message(json.dumps({"event_id": f"m-{i}", "user_id": "u", "timestamp": now_ms,
                                     "url": "https://example.com/", "country": "FR"}).encode(),
                         partition=i % 4) for i in range(n)])
    ends = env.end_offsets()

    def refused():
        status, body = harness.http_get(port, "/readyz")
        return status == 503 and "geo_data" in body and body
    body = harness.wait_until(refused, 60, "/readyz to report the missing table",
                              check=proc.assert_running,
                              describe=lambda: harness.http_get(port, "/readyz"))
    assert "MariaDB refuses ingest batches" in body, body
    time.sleep(3)  # a few retries: nothing moves
    assert env.db.count("click_data") == 0
    assert env.committed_offsets() != ends
    assert "rejected" not in proc.log_text()

    env.db.query("RENAME TABLE geo_data_away TO geo_data")
    env.wait_caught_up(n, 0, timeout=120)
    harness.wait_until(lambda: harness.http_get(port, "/readyz")[0] == 200, 60,
                       "ready again", check=proc.assert_running)
    harness.report(request, f"held while the table was missing: {body.strip()!r}")
    assert proc.stop() == 0


# ---------------------------------------------------------------- out-of-range offsets

def _numbered(p, first, count, now_ms):
    return [Message(json.dumps({"event_id": f"r-{p}-{i}", "user_id": f"u{i % 7}",
                                "timestamp": now_ms + i, "url": f"https://example.com/{p}",
                                "country": "DE"}).encode(), partition=p)
            for i in range(first, first + count)]


def test_committed_offset_out_of_retention_is_reported_with_the_messages_skipped(env, request):
    """A committed offset the broker no longer holds (retention deleted the
    records while clickloop was down): auto.offset.reset moves on (earliest,
    the default), and the loss is loud: one error per partition naming the
    committed offset, where consumption resumed and how many messages were
    skipped, and the same count in /metrics."""
    now_ms = int(time.time() * 1000)
    env.produce(_numbered(0, 0, 100, now_ms) + _numbered(1, 0, 100, now_ms)
                + _numbered(2, 0, 10, now_ms) + _numbered(3, 0, 10, now_ms))
    env.set_committed_offsets({0: 10, 1: 20})
    env.delete_records({0: 60, 1: 100})   # partition 1: the whole log is gone

    port = harness.free_port()
    env.write_config(overrides={"admin": {"listen": f"{harness.HOST}:{port}"}})
    proc = env.start()
    # Partition 1 has nothing left to read: nothing moves its committed offset,
    # and where consumption resumed shows with its next message.
    env.wait_caught_up(60, 0, timeout=120, ends={**env.end_offsets(), 1: 20})
    env.produce(_numbered(1, 100, 5, now_ms))
    env.wait_caught_up(65, 0, timeout=120)

    stored = {r[0] for r in env.db.query("SELECT event_id FROM click_data")}
    want = ({f"r-0-{i}" for i in range(60, 100)} | {f"r-1-{i}" for i in range(100, 105)}
            | {f"r-{p}-{i}" for p in (2, 3) for i in range(10)})
    diff_sets("click_data", stored, want)

    def reported():
        log = proc.log_text()
        return all(re.search(pattern, log) for pattern in (
            r"level=error module=kafka msg=\"\S+ \[0\]: the committed offset 10 was no longer on "
            r"the broker; consumption resumed at offset 60 .*: 50 message\(s\) skipped",
            r"level=error module=kafka msg=\"\S+ \[1\]: the committed offset 20 was no longer on "
            r"the broker; consumption resumed at offset 100 .*: 80 message\(s\) skipped"))
    harness.wait_until(reported, 30, "an error line per partition with the messages skipped",
                       check=proc.assert_running, describe=lambda: proc.log_tail(10))
    m = harness.metrics(port)
    assert m[("clickloop_kafka_offset_resets_total", frozenset({("action", "reset")}))] == 2
    assert m[("clickloop_kafka_messages_skipped_total", frozenset())] == 130
    assert m[("clickloop_kafka_partitions_stopped", frozenset())] == 0
    assert_offsets_at_end(env, env.end_offsets())
    assert proc.stop() == 0


def test_auto_offset_reset_error_stops_the_partition_until_the_operator_moves_the_offset(
        env, request):
    """auto.offset.reset=error, for those who prefer to stop than to skip:
    the partition stops, /readyz answers 503 naming it, /metrics counts it,
    the other partitions go on; after the operator moves the group's offset
    and restarts clickloop, consumption resumes from there."""
    now_ms = int(time.time() * 1000)
    env.produce(_numbered(0, 0, 100, now_ms)
                + [m for p in (1, 2, 3) for m in _numbered(p, 0, 10, now_ms)])
    env.set_committed_offsets({0: 10, 1: 0, 2: 0, 3: 0})
    env.delete_records({0: 60})

    port = harness.free_port()
    env.write_config(overrides={"admin": {"listen": f"{harness.HOST}:{port}"},
                                "kafka": {"properties": {"auto.offset.reset": "error"}}})
    proc = env.start()

    def stopped():
        status, body = harness.http_get(port, "/readyz")
        return status == 503 and "stopped" in body and body
    body = harness.wait_until(stopped, 60, "/readyz to name the stopped partition",
                              check=proc.assert_running,
                              describe=lambda: harness.http_get(port, "/readyz"))
    assert f"1 Kafka partition(s) stopped ({env.topic} [0])" in body, body
    assert "auto.offset.reset is error" in body, body
    env.wait_caught_up(30, 0, timeout=120, ends={**env.end_offsets(), 0: 10})
    assert {r[0] for r in env.db.query("SELECT event_id FROM click_data")} == \
        {f"r-{p}-{i}" for p in (1, 2, 3) for i in range(10)}
    m = harness.metrics(port)
    assert m[("clickloop_kafka_offset_resets_total", frozenset({("action", "stopped")}))] == 1
    assert m[("clickloop_kafka_partitions_stopped", frozenset())] == 1
    assert m[("clickloop_kafka_messages_skipped_total", frozenset())] == 0
    assert re.search(rf"level=error module=kafka msg=\"{re.escape(env.topic)} \[0\]: the "
                     r"committed offset is missing or no longer on the broker.*auto.offset.reset=error",
                     proc.log_text()), proc.log_tail(10)
    assert env.committed_offsets()[0] == 10
    assert proc.stop() == 0

    env.set_committed_offsets({0: 60})   # the operator's decision
    proc = env.start()
    env.wait_caught_up(70, 0, timeout=120)
    harness.wait_until(lambda: harness.http_get(port, "/readyz")[0] == 200, 60, "ready again",
                       check=proc.assert_running)
    harness.report(request, f"while stopped, /readyz said: {body.strip()!r}")
    assert proc.stop() == 0


def test_bytes_in_flight_pause_consumption_while_writes_are_held(env, request):
    """ingest.max_in_flight_bytes bounds memory by bytes: with MariaDB's writes held (a table
    lock), consumption of big events pauses near the bound, far below the event bound, and
    everything is stored once the lock goes."""
    port = harness.free_port()
    bound = 1 << 20
    env.write_config(overrides={"admin": {"listen": f"{harness.HOST}:{port}"},
                                "ingest": {"max_in_flight_bytes": "1MB",
                                           "max_in_flight_events": 50_000,
                                           "batch_max_delay": "50ms",
                                           "max_unwritten_age": "2s"}})
    proc = env.start()
    wait_schema(env, proc)
    lock = env.db._connect(env.db.name)
    n = 3_000
    try:
        with lock.cursor() as cur:
            cur.execute("LOCK TABLES click_data WRITE")
        now_ms = int(time.time() * 1000)
        pad = "x" * 2000
        env.produce([Message(json.dumps({"event_id": f"b-{i}", "user_id": f"u{i % 50}",
                                         "timestamp": now_ms, "url": f"https://e.com/{pad}",
                                         "country": "FR"}).encode(), partition=i % 4)
                     for i in range(n)])

        def paused():
            m = harness.metrics(port)
            return m.get(("clickloop_consumption_paused", frozenset()), 0) == 1 and m
        m = harness.wait_until(paused, 60, "consumption paused by bytes", check=proc.assert_running)
        held = m[("clickloop_events_in_flight_bytes", frozenset())]
        events = m[("clickloop_events_in_flight", frozenset())]
        # Paused once the bound was reached: at most one event (payload and SQL) past it.
        assert bound <= held <= bound + 16_000, held
        assert events < n, events
        # (click_data cannot be read while the lock is held: nothing was stored.)
        assert m.get(("clickloop_events_stored_total", frozenset()), 0) == 0

        # A write that neither finishes nor fails is a stall: not ready, naming the batch.
        def stalled():
            status, body = harness.http_get(port, "/readyz")
            return status == 503 and "oldest unwritten ingest batch" in body and body
        body = harness.wait_until(stalled, 30, "/readyz to report the stalled batch",
                                  check=proc.assert_running)
        assert re.search(r"is \d+ s old \(\d+ events, the first from \S+ \[\d\] at offset "
                         r"\d+; ingest.max_unwritten_age 2 s\)", body), body
    finally:
        lock.close()  # UNLOCK TABLES with the session
    env.wait_caught_up(n, 0, timeout=120)
    harness.wait_until(lambda: harness.http_get(port, "/readyz")[0] == 200, 60, "ready again",
                       check=proc.assert_running)
    harness.report(request, f"paused at {held:.0f} bytes ({events:.0f} events) in flight, "
                   f"bound {bound}; /readyz said {body.strip()!r}; then all {n} stored")
    assert proc.stop() == 0


# ---------------------------------------------------------------- 7. event-time window

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def dated(event_id, ts_ms, partition=0):
    return Message(json.dumps({"event_id": event_id, "user_id": "u", "timestamp": ts_ms,
                               "url": "https://example.com/"}).encode(), partition=partition)


def rejected_reasons(env):
    return {(r[0], r[1]): r[2] for r in env.db.query(
        "SELECT kafka_partition, kafka_offset, reason FROM rejected_events")}


def test_event_time_window_defaults_reject_too_old_and_too_far_ahead_at_the_edges(env, request):
    """The default window, 400 days back and 1 hour ahead of the time of
    consumption. An edge is exact where the clock moving on between producing
    and consuming cannot blur it: 400 days and 1 ms old is refused, exactly 1
    hour ahead is accepted. On the other side of each edge the events are 2
    minutes inside or outside (the unit tests pin both edges to the ms)."""
    env.write_config(overrides={"ingest": {"max_event_age": DELETE, "max_future_skew": DELETE}})
    now_ms = int(time.time() * 1000)
    cases = {
        "old-edge-minus-1ms": (now_ms - 400 * DAY_MS - 1, "ingest.max_event_age"),
        "old-2min-inside": (now_ms - 400 * DAY_MS + 120_000, None),
        "year-2001": (1_000_000_000_000, "ingest.max_event_age"),
        "now": (now_ms, None),
        "future-edge-exact": (now_ms + HOUR_MS, None),
        "future-2min-outside": (now_ms + HOUR_MS + 120_000, "ingest.max_future_skew"),
        "year-2033": (2_000_000_000_000, "ingest.max_future_skew"),
    }
    msgs = {name: dated(name, ts, i % 4) for i, (name, (ts, _)) in enumerate(cases.items())}
    env.produce(list(msgs.values()))
    env.start()
    want_stored = {name for name, (_, why) in cases.items() if why is None}
    env.wait_caught_up(len(want_stored), len(cases) - len(want_stored), timeout=120)
    stored = {r[0] for r in env.db.query("SELECT event_id FROM click_data")}
    assert stored == want_stored
    reasons = rejected_reasons(env)
    for name, (ts, why) in cases.items():
        if why is None:
            continue
        reason = reasons[(msgs[name].partition, msgs[name].offset)]
        assert why in reason and reason.startswith("timestamp: "), (name, reason)
    harness.report(request, f"e.g. {reasons[(msgs['year-2033'].partition, msgs['year-2033'].offset)]}")


def test_event_time_window_is_reloaded_in_place_on_sighup(env, request):
    config = env.write_config(overrides={"ingest": {"max_event_age": "1h",
                                                    "max_future_skew": "1m"}})
    now_ms = int(time.time() * 1000)
    env.produce([dated("before-2h-old", now_ms - 2 * HOUR_MS),
                 dated("before-5m-ahead", now_ms + 300_000, 1),
                 dated("before-now", now_ms, 2), dated("before-now-too", now_ms, 3)])
    proc = env.start()
    env.wait_caught_up(2, 2, timeout=120)

    cfg = json.loads(config.read_text())
    cfg["ingest"].update({"max_event_age": "1d", "max_future_skew": "10m"})
    config.write_text(json.dumps(cfg))
    os.kill(proc.pid, signal.SIGHUP)
    harness.wait_until(lambda: "reloaded" in proc.log_text(), 60, "the reload",
                       check=proc.assert_running)
    log = proc.log_text()
    assert "ingest.max_event_age changed: applied in place" in log, log
    assert "ingest.max_future_skew changed: applied in place" in log, log
    assert "restarting" not in log

    now_ms = int(time.time() * 1000)
    env.produce([dated("after-2h-old", now_ms - 2 * HOUR_MS, 2),
                 dated("after-5m-ahead", now_ms + 300_000, 3),
                 dated("after-2d-old", now_ms - 2 * DAY_MS, 0)])
    env.wait_caught_up(4, 3, timeout=120)
    stored = {r[0] for r in env.db.query("SELECT event_id FROM click_data")}
    assert stored == {"before-now", "before-now-too", "after-2h-old", "after-5m-ahead"}
    assert proc.stop() == 0


# ---------------------------------------------------------------- 8. memory under a backlog

def backlog_messages(n, rng):
    countries = ["US", "DE", "FR", "JP", "BR", "IN", "GB"]
    cities = ["New York", "Berlin", "Paris", "Tokyo", "Sao Paulo", "Mumbai", "London"]
    browsers = ["Firefox", "Chrome", "Safari", "Edge"]
    oses = ["Linux", "Windows", "macOS", "Android", "iOS"]
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
    # An hour-aligned start a day ago, well inside the default event-time
    # window (the test runs with every ingest setting at its default).
    base_ms = (int(time.time()) // 3600 - 24) * 3_600_000
    for i in range(n):
        j = rng.randrange(7)
        payload = (f'{{"event_id":"bl-{i}-{rng.getrandbits(40):010x}","user_id":"user-{rng.randrange(50000)}",'
                   f'"timestamp":{base_ms + i * 37},"url":"https://shop.example.com/products/'
                   f'{rng.randrange(10**6)}?ref=campaign-{rng.randrange(100)}","country":"{countries[j]}",'
                   f'"city":"{cities[j]}","browser":"{browsers[i % 4]}","os":"{oses[i % 5]}",'
                   f'"device":"desktop","user_agent":"{ua}","time_spent_ms":{rng.randrange(60000)}}}')
        yield Message(payload.encode())


def test_backlog_of_1m_events_peak_rss_bounded(env, request):
    n = 1_000_000
    rng, _ = make_rng()
    t0 = time.monotonic()
    env.produce(backlog_messages(n, rng), record=False)
    ends = env.end_offsets()
    assert sum(ends.values()) == n
    t_produced = time.monotonic()

    env.write_config(overrides={"ingest": DELETE})   # every ingest setting at its default
    proc = env.start()
    t_start = time.monotonic()
    progress = {"first": None}

    def caught_up():
        proc.vm_hwm_kb()
        committed = env.committed_offsets()
        done = sum(max(c, 0) for c in committed.values())
        if done > 0 and progress["first"] is None:
            progress["first"] = (time.monotonic(), done)
        return committed == ends

    harness.wait_until(caught_up, 900, "the backlog to be consumed", interval=0.5,
                       check=proc.assert_running,
                       describe=lambda: f"committed {env.committed_offsets()} of {ends}")
    t_done = time.monotonic()
    peak_kb = proc.vm_hwm_kb()
    bound = PEAK_RSS_BOUND_MB_SANITIZED if is_sanitized(env.binary) else PEAK_RSS_BOUND_MB
    assert env.db.count("click_data") == n
    assert env.db.count("rejected_events") == 0
    elapsed = t_done - t_start
    first_t, first_n = progress["first"]
    steady = (n - first_n) / max(t_done - first_t, 1e-6)
    harness.report(request,
                   f"produced {n} events in {t_produced - t0:.1f}s; consumed the backlog in "
                   f"{elapsed:.1f}s = {n / elapsed:.0f} events/s from process start "
                   f"({steady:.0f} events/s after the first commit); peak RSS (VmHWM) "
                   f"{peak_kb / 1024:.1f} MiB, bound {bound} MiB")
    assert peak_kb / 1024 < bound, (
        f"peak RSS {peak_kb / 1024:.1f} MiB is over the bound of {bound} MiB")
