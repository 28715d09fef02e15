"""Aggregation acceptance tests: clickloop aggregates the stored events in
MariaDB (agg_stats, rules in include/clickloop/aggregate.h) and indexes the
changed aggregates into real Elasticsearch 8 / OpenSearch 2 nodes
(deps/services up), one document per (window, window start, URL, country)
with the id and fields of include/clickloop/es_doc.h.

Every expected document is computed here, in Python, from the events the test
produced (never by running SQL): windows [start, start + size) floored from the
epoch, a user's events ordered by (event_time, row_key as bytes), dwell time =
gap to the user's next event when it is at most the session timeout
(inclusive) unless the event carries time_spent_ms, "unknown" for events
without a country, URLs compared as bytes.

Each test has its own topic, group and database (harness.IngestEnv) and its own
index name, and removes its indices and index templates at the end. Waits poll
a condition against a deadline; nothing sleeps to let something happen.
Measured figures go through harness.report() and land in the meson test log.

Run alone: .venv/bin/python -m pytest -q test/integration/test_aggregate.py
"""

import datetime as dt
import hashlib
import json
import math
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest
import requests

import harness
from harness import Message

# ---------------------------------------------------------------- constants

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# Small windows and a short session timeout keep the data sets small while
# every rule is exercised.
WINDOWS = ["15m", "1h"]
WINDOWS_MS = [15 * MINUTE, HOUR]
SESSION_TIMEOUT = "5m"
TIMEOUT_MS = 5 * MINUTE

T0 = 1_715_904_000_000   # 2024-05-17T00:00:00Z

# clickloop writes avg_time_spent_ms with three decimals (src/es_doc.c,
# cl_es_stats_source: "%.3f"), i.e. to the microsecond. For averages of at
# least 500 ms that is within the 1e-6 relative tolerance; below, the absolute
# rounding of 0.0005 ms is the bound.
AVG_REL_TOL = 1e-6
AVG_ABS_TOL = 0.0005

# test_incremental_run_costs_a_fraction_of_full_recompute: 1 000 000 events
# over 60 days from 20 000 users, windows 1h and 1d. The backlog is taken in
# by incremental runs of at most CL_AGG_MAX_CLAIM events; then every window is
# marked and recomputed whole (the full recompute, which must change no row:
# the incremental history equals it); then 1 000 new events go into the last
# day and the run(s) claiming them are the incremental cost.
# Measured on 2 cores (MariaDB 10.11, plain build, other work on the machine)
# with incremental runs (schema 5): backlog 20 runs, 231 s; full recompute
# 1 500 windows in 8 runs, 167 s; 1 000 new events: one run of 0.27 s (ratio
# 609). Before (runs recomputing every touched window whole): full 88.5-132 s,
# incremental 0.8-2.0 s (ratio 36-127, lower with fewer users).
# The assertion is the acceptance bound: incremental < full / 5. It runs in
# the plain build only (CLICKLOOP_SANITIZED): the cost is MariaDB's, the same
# in both builds, and it is the longest test of the suite.
BENCH_EVENTS = 1_000_000
BENCH_DAYS = 60
BENCH_NEW_EVENTS = 1_000
BENCH_USERS = 20_000
BENCH_MIN_RATIO = 5
# The backlog and the full recompute must each end within this: about 4 x
# the times measured above.
BENCH_FULL_RUN_DEADLINE_S = 900

RUN_LINE = re.compile(r"aggregation run: (\d+) new events, (\d+) windows recomputed "
                      r"\((\d+) events scanned\), (\d+) rows changed in (\d+) ms")


# ---------------------------------------------------------------- small helpers

def make_rng():
    """A seeded random generator; the seed is printed (shown with a failure) and
    may be fixed with CLICKLOOP_TEST_SEED to replay a run's data."""
    seed = int(os.environ.get("CLICKLOOP_TEST_SEED") or random.randrange(2**32))
    print(f"random seed {seed} (CLICKLOOP_TEST_SEED={seed} repeats it)")
    return random.Random(seed), seed


def free_port():
    with socket.socket() as s:
        s.bind((harness.HOST, 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind((harness.HOST, port))
            return True
        except OSError:
            return False


def window_label(ms):
    """Like cl_es_window_label: the largest unit that divides it."""
    for unit_ms, unit in ((DAY, "d"), (HOUR, "h"), (MINUTE, "m"), (1000, "s"), (1, "ms")):
        if ms % unit_ms == 0:
            return f"{ms // unit_ms}{unit}"
    raise AssertionError("unreachable")


def utc(ms):
    return dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)


def index_name(pattern, start_ms):
    d = utc(start_ms)
    return (pattern.replace("%Y", f"{d.year:04d}").replace("%m", f"{d.month:02d}")
            .replace("%d", f"{d.day:02d}"))


# ---------------------------------------------------------------- events

NO_GEO = None            # neither country nor city: no geo_data row
CITY_ONLY = "city-only"  # a geo_data row with a city and a NULL country
NULL_COUNTRY = "null"    # "country": null and no city: no geo_data row

LONG_URL = ("https://shop.example.com/search?q="
            + "".join("abcdefghijklmnopqrstuvwxyz0123456789-_"[(i * 7) % 38] for i in range(3000)))
URL_HOME = "https://shop.example.com/"
URL_PROD = "https://shop.example.com/products/42"
URL_PROD_CASE = "https://shop.example.com/Products/42"   # differs from URL_PROD only in case
URL_UTF = "https://shop.example.com/ü/日本語/😀?q=ñ&x=ß"
URL_CART = "https://shop.example.com/cart"
URLS = [URL_HOME, URL_PROD, URL_PROD_CASE, URL_UTF, LONG_URL, URL_CART]
GEOS = ["DE", "fr", "US", "jp", NO_GEO, CITY_ONLY, NULL_COUNTRY]


class Ev:
    """One event as produced, and what the rules make of it."""
    __slots__ = ("event_id", "user", "ts", "url", "geo", "spent", "form")

    def __init__(self, event_id, user, ts, url, geo, spent=None, form=0):
        self.event_id, self.user, self.ts, self.url = event_id, user, ts, url
        self.geo, self.spent, self.form = geo, spent, form

    @property
    def row_key(self):
        return b"e:" + self.event_id.encode()

    @property
    def country(self):
        if self.geo in (NO_GEO, CITY_ONLY, NULL_COUNTRY):
            return "unknown"
        return self.geo.upper()

    def timestamp(self):
        ms = self.ts
        if self.form == 1:          # epoch milliseconds
            return ms
        if self.form == 2:          # RFC 3339 with a +02:00 offset
            local = utc(ms + 2 * HOUR)
            return local.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}+02:00"
        d = utc(ms)                 # RFC 3339, Z
        return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"

    def payload(self):
        d = {"event_id": self.event_id, "user_id": self.user, "timestamp": self.timestamp(),
             "url": self.url, "browser": "Firefox", "os": "Linux"}
        if self.geo == CITY_ONLY:
            d["city"] = "Springfield"
        elif self.geo == NULL_COUNTRY:
            d["country"] = None
        elif self.geo is not NO_GEO:
            d["country"] = self.geo
            d["city"] = "Somewhere"
        if self.spent is not None:
            d["time_spent_ms"] = self.spent
        return json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode()

    def message(self, rng=None):
        return Message(self.payload(), partition=rng.randrange(4) if rng else None)


def session_order(events):
    """{user: [events in (event_time, row_key) order]}."""
    by_user = defaultdict(list)
    for e in events:
        by_user[e.user].append(e)
    for evs in by_user.values():
        evs.sort(key=lambda e: (e.ts, e.row_key))
    return by_user


def time_spent(events, timeout_ms=TIMEOUT_MS):
    """{row_key: time spent in ms or None}: the event's own time_spent_ms, else
    the gap to the same user's next event (any URL) when at most the timeout."""
    out = {}
    for evs in session_order(events).values():
        for i, e in enumerate(evs):
            if e.spent is not None:
                out[e.row_key] = e.spent
            elif i + 1 < len(evs) and evs[i + 1].ts - e.ts <= timeout_ms:
                out[e.row_key] = evs[i + 1].ts - e.ts
            else:
                out[e.row_key] = None
    return out


def expected_docs(events, index_pattern, windows_ms=WINDOWS_MS, timeout_ms=TIMEOUT_MS):
    """{document id: expected document (with its index)}, computed from the
    events alone."""
    keys = [e.row_key for e in events]
    assert len(set(keys)) == len(keys), "event ids must be unique"
    spent = time_spent(events, timeout_ms)
    groups = {}
    for e in events:
        for w in windows_ms:
            start = (e.ts // w) * w
            g = groups.setdefault((w, start, e.url, e.country),
                                  {"clicks": 0, "users": set(), "sum": 0, "samples": 0})
            g["clicks"] += 1
            g["users"].add(e.user)
            if spent[e.row_key] is not None:
                g["sum"] += spent[e.row_key]
                g["samples"] += 1
    docs = {}
    for (w, start, url, country), g in groups.items():
        h = hashlib.sha256(url.encode()).hexdigest()
        label = window_label(w)
        docs[f"{label}:{start}:{country}:{h}"] = {
            "index": index_name(index_pattern, start),
            "window": label, "window_start": start, "window_end": start + w,
            "url": url, "url_sha256": h, "country": country,
            "clicks": g["clicks"], "unique_users": len(g["users"]),
            "time_spent_samples": g["samples"],
            "avg_time_spent_ms": g["sum"] / g["samples"] if g["samples"] else None,
        }
    return docs


def clickstream(rng, day_start, tag, n_users=7, per_user=(14, 22)):
    """Sessions with known answers, from day_start on (a few hours): several
    users (one non-ASCII), the URLs of URLS (a ~3 KB one, a non-ASCII one, two
    differing only in case), countries incl. missing ones, gaps below, at and
    above the session timeout, explicit time_spent_ms (also 0) on some events,
    clicks on both sides of window boundaries, and two events of one user in the
    same millisecond produced in reverse row-key order. `tag` keeps event ids
    and users of different calls apart. Returns the events in produce order."""
    T = day_start
    events = []
    seq = [0]

    def ev(user, ts, url, geo, spent=None, eid=None):
        seq[0] += 1
        e = Ev(eid or f"{tag}-{seq[0]:05d}-{rng.getrandbits(32):08x}", user, ts, url, geo, spent,
               form=rng.randrange(3))
        events.append(e)
        return e

    # The edges, deterministically (user "edge" stays alone in its sessions).
    edge = f"{tag}-edge"
    t = T + 15 * MINUTE - 1                  # 00:14:59.999, last ms of a 15m window
    ev(edge, t, URL_HOME, "DE")              # dwell 1 ms, across the 15m boundary
    t += 1
    ev(edge, t, URL_PROD, "DE")              # 00:15:00.000, dwell = the timeout exactly
    t += TIMEOUT_MS
    ev(edge, t, URL_HOME, "DE")              # gap = timeout + 1: no dwell
    t += TIMEOUT_MS + 1
    ev(edge, t, URL_UTF, NO_GEO)             # gap = timeout - 1: dwell
    t += TIMEOUT_MS - 1
    ev(edge, t, LONG_URL, CITY_ONLY, spent=7777)   # own time spent wins over the 45 s gap
    t += 45_000
    ev(edge, t, URL_PROD_CASE, NULL_COUNTRY, spent=0)  # an explicit 0 is a sample
    t = T + HOUR - 2 * MINUTE
    ev(edge, t, URL_CART, "US")              # 00:58: dwell 2 min into the next hour
    ev(edge, T + HOUR, URL_CART, "US")       # exactly 01:00:00.000: a new 1h window

    # Two events of one user in the same millisecond; the second one by row key
    # is produced first. The first (by row key) gets a dwell time of 0.
    tie = f"{tag}-tie"
    t = T + 2 * HOUR + 7 * MINUTE + 123
    ev(tie, t, URL_PROD, "fr", eid=f"{tag}-tie-b")
    ev(tie, t, URL_HOME, "FR", eid=f"{tag}-tie-a")
    ev(tie, t + 30_000, URL_HOME, "FR")
    ev(tie, t + 30_000 + TIMEOUT_MS + 1, URL_UTF, "jp")

    # Random sessions over every gap kind.
    gaps = [0, 1, 999, 7_000, 45_000, 150_000, TIMEOUT_MS - 1, TIMEOUT_MS, TIMEOUT_MS + 1,
            20 * MINUTE, 61 * MINUTE]
    users = [f"{tag}-user-{i}" for i in range(n_users - 1)] + [f"{tag}-ユーザー-ü"]
    for user in users:
        t = T + rng.randrange(0, 3 * HOUR)
        home_geo = rng.choice(GEOS)
        n = rng.randint(*per_user)
        plan = gaps + [rng.choice(gaps) for _ in range(max(0, n - len(gaps)))]
        rng.shuffle(plan)
        for k in range(n):
            geo = home_geo if rng.random() < 0.7 else rng.choice(GEOS)
            spent = rng.choice([rng.randrange(500, 900_000), 0]) if rng.random() < 0.25 else None
            ev(user, t, rng.choice(URLS), geo, spent)
            t += plan[k % len(plan)]
    return events


def assert_edges_covered(events):
    """The data exercises every rule (guards against a generator change)."""
    seen = set()
    for evs in session_order(events).values():
        for a, b in zip(evs, evs[1:]):
            gap = b.ts - a.ts
            if a.spent is None:
                if gap == TIMEOUT_MS:
                    seen.add("gap = timeout")
                if gap == TIMEOUT_MS + 1:
                    seen.add("gap = timeout + 1")
                if gap == TIMEOUT_MS - 1:
                    seen.add("gap = timeout - 1")
                if gap == 0:
                    seen.add("same millisecond")
                if gap <= TIMEOUT_MS and a.ts // WINDOWS_MS[0] != b.ts // WINDOWS_MS[0]:
                    seen.add("dwell across a window boundary")
    if any(e.spent is not None for e in events):
        seen.add("explicit time_spent_ms")
    if any(e.country == "unknown" for e in events):
        seen.add("unknown country")
    if any(len(e.url.encode()) > 3000 for e in events):
        seen.add("long url")
    if any(not e.url.isascii() for e in events):
        seen.add("non-ascii url")
    want = {"gap = timeout", "gap = timeout + 1", "gap = timeout - 1", "same millisecond",
            "dwell across a window boundary", "explicit time_spent_ms", "unknown country",
            "long url", "non-ascii url"}
    assert want <= seen, f"the data lacks {want - seen}"


# ---------------------------------------------------------------- search clusters

class Search:
    """A few REST calls against one Elasticsearch/OpenSearch node."""

    def __init__(self, base):
        self.base = base
        self.http = requests.Session()

    def up(self):
        try:
            return self.http.get(self.base, timeout=3).ok
        except requests.RequestException:
            return False

    def docs(self, pattern):
        """{id: {"index", "version", "source"}} of every document in the
        indices named by pattern; raises AssertionError on a duplicate id."""
        params = {"ignore_unavailable": "true", "allow_no_indices": "true"}
        r = self.http.post(f"{self.base}/{pattern}/_refresh", params=params, timeout=30)
        r.raise_for_status()
        r = self.http.post(f"{self.base}/{pattern}/_search", params={**params, "scroll": "1m"},
                           json={"size": 5000, "version": True, "sort": ["_doc"],
                                 "query": {"match_all": {}}}, timeout=60)
        r.raise_for_status()
        out = {}
        body = r.json()
        scroll_id = body.get("_scroll_id")
        try:
            while True:
                hits = body["hits"]["hits"]
                for h in hits:
                    assert h["_id"] not in out, f"document id {h['_id']} twice " \
                        f"(in {out[h['_id']]['index']} and {h['_index']})"
                    out[h["_id"]] = {"index": h["_index"], "version": h["_version"],
                                     "source": h["_source"]}
                if not hits or scroll_id is None:
                    break
                r = self.http.post(f"{self.base}/_search/scroll",
                                   json={"scroll": "1m", "scroll_id": scroll_id}, timeout=60)
                r.raise_for_status()
                body = r.json()
                scroll_id = body.get("_scroll_id", scroll_id)
        finally:
            if scroll_id is not None:
                try:
                    self.http.delete(f"{self.base}/_search/scroll",
                                     json={"scroll_id": scroll_id}, timeout=10)
                except requests.RequestException:
                    pass
        return out

    def count(self, pattern):
        params = {"ignore_unavailable": "true", "allow_no_indices": "true"}
        self.http.post(f"{self.base}/{pattern}/_refresh", params=params,
                       timeout=30).raise_for_status()
        r = self.http.get(f"{self.base}/{pattern}/_count", params=params, timeout=30)
        r.raise_for_status()
        return r.json()["count"]

    def delete_everything(self, prefix):
        """Delete the indices and index templates whose names start with
        prefix, one by name (Elasticsearch 8 refuses wildcard deletes)."""
        r = self.http.get(f"{self.base}/_cat/indices/{prefix}*",
                          params={"format": "json", "h": "index", "expand_wildcards": "all"},
                          timeout=30)
        if r.ok:
            for row in r.json():
                self.http.delete(f"{self.base}/{row['index']}", timeout=60)
        r = self.http.get(f"{self.base}/_index_template/{prefix}*", timeout=30)
        if r.ok:
            for t in r.json().get("index_templates", []):
                self.http.delete(f"{self.base}/_index_template/{t['name']}", timeout=30)


def safe_docs(search, pattern):
    """docs(), or None while the cluster does not answer."""
    try:
        return search.docs(pattern)
    except (requests.RequestException, ValueError, KeyError):
        return None


def doc_problems(got, want, limit=8):
    """Differences between the documents in the index and the expected ones."""
    problems = []
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected, e.g. {extra[:3]}")
    for doc_id in sorted(set(want) & set(got)):
        w, g = want[doc_id], got[doc_id]
        s = g["source"]
        if g["index"] != w["index"]:
            problems.append(f"{doc_id}: in index {g['index']}, want {w['index']}")
        for f in ("window", "window_start", "window_end", "url", "url_sha256", "country",
                  "clicks", "unique_users", "time_spent_samples"):
            if s.get(f) != w[f]:
                problems.append(f"{doc_id}: {f} = {str(s.get(f))[:80]!r}, want {str(w[f])[:80]!r}")
        ga, wa = s.get("avg_time_spent_ms"), w["avg_time_spent_ms"]
        if (ga is None) != (wa is None) or (
                wa is not None and not math.isclose(ga, wa, rel_tol=AVG_REL_TOL,
                                                    abs_tol=AVG_ABS_TOL)):
            problems.append(f"{doc_id}: avg_time_spent_ms = {ga!r}, want {wa!r}")
        if len(problems) > limit:
            break
    return problems


def wait_index_matches(search, pattern, want, proc, timeout, what, interval=1.0):
    """Poll until the indices named by pattern hold exactly the expected
    documents; return them."""
    state = {"problems": ["not read yet"]}

    def cond():
        if len(want) > 2000:   # counting is cheaper than reading everything
            try:
                n = search.count(pattern)
            except (requests.RequestException, ValueError, KeyError) as exc:
                state["problems"] = [f"count failed: {exc!r}"]
                return None
            if n != len(want):
                state["problems"] = [f"{n} documents, want {len(want)}"]
                return None
        got = safe_docs(search, pattern)
        if got is None:
            state["problems"] = ["the cluster does not answer"]
            return None
        state["problems"] = doc_problems(got, want)
        return None if state["problems"] else got

    return harness.wait_until(
        cond, timeout, what, interval=interval, check=proc.assert_running,
        describe=lambda: f"{'; '.join(state['problems'][:8])}; clickloop log ends with:\n"
                         f"{proc.log_tail(25)}")


# ---------------------------------------------------------------- MariaDB side

def agg_rows(db):
    """{document id: row} of agg_stats, the id made as es_doc.h makes it."""
    rows = db.query(
        "SELECT window_ms, TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', "
        "window_start) DIV 1000, country, LOWER(HEX(url_hash)), version, indexed_version, "
        "needs_index, index_error, clicks FROM agg_stats")
    out = {}
    for w, start, country, h, version, indexed, needs, error, clicks in rows:
        out[f"{window_label(int(w))}:{int(start)}:{country}:{h}"] = {
            "version": int(version), "indexed_version": int(indexed), "needs_index": int(needs),
            "index_error": error, "clicks": int(clicks)}
    return out


def assert_db_agrees(db, got_docs, want):
    """agg_stats holds exactly the expected rows, each indexed at the version
    the index holds (sent as the external version), none waiting or failed."""
    rows = agg_rows(db)
    harness_diff("agg_stats rows", set(rows), set(want))
    problems = []
    for doc_id, r in rows.items():
        if r["needs_index"] != 0 or r["indexed_version"] != r["version"] or r["index_error"]:
            problems.append(f"{doc_id}: {r}")
        elif got_docs[doc_id]["version"] != r["version"]:
            problems.append(f"{doc_id}: index holds _version {got_docs[doc_id]['version']}, "
                            f"agg_stats.version is {r['version']}")
    assert not problems, f"{len(problems)} agg_stats row(s) disagree: {problems[:5]}"
    assert db.count("agg_pending") == 0


def harness_diff(name, got, want, limit=3):
    missing, extra = want - got, got - want
    assert not missing and not extra, (f"{name}: {len(got)}, want {len(want)}; missing "
                                       f"{sorted(missing)[:limit]}, unexpected "
                                       f"{sorted(extra)[:limit]}")


def wait_settled(env, proc, timeout=60):
    """No event waits for aggregation and no aggregate waits for indexing."""
    def cond():
        return (env.db.count("agg_pending") == 0 and env.db.table_exists("agg_stats")
                and env.db.scalar("SELECT COUNT(*) FROM agg_stats WHERE needs_index = 1") == 0)
    harness.wait_until(cond, timeout, "agg_pending and needs_index to drain", interval=0.5,
                       check=proc.assert_running, describe=lambda: proc.log_tail(20))


# ---------------------------------------------------------------- metrics

def scrape(port):
    """{(sample name, frozenset of labels): value} from the admin listener."""
    from prometheus_client.parser import text_string_to_metric_families
    r = requests.get(f"http://{harness.HOST}:{port}/metrics", timeout=5)
    r.raise_for_status()
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def make_env(clickloop_bin, kafka_bootstrap, mariadb_params, tmp_path, request):
    """make_env(name) -> a harness.IngestEnv of its own (topic, group,
    database), closed at the end of the test."""
    envs = []

    def make(name="env"):
        d = tmp_path / name
        d.mkdir()
        e = harness.IngestEnv(clickloop_bin, kafka_bootstrap, mariadb_params, d,
                              f"{request.node.name}-{name}")
        envs.append(e)
        return e
    try:
        yield make
    finally:
        for e in envs:
            # clickloop's connections close at exit, but a statement still
            # running on the server goes on to its end (it only notices the
            # client is gone when it answers) and would hold the database:
            # stop those of this test's database before dropping it.
            for p in e.procs:
                try:
                    if p.running():
                        p.stop(timeout=60)
                except Exception:
                    pass
            kill_statements(e.db)
            e.close()


def statements_running(db):
    """(id, seconds, statement) of the server threads working in this test's
    database (all of them clickloop's, i.e. this test's), longest first."""
    if db is None:
        return []
    return list(db.query(
        "SELECT id, time, LEFT(info, 160) FROM information_schema.processlist "
        "WHERE db = %s AND command = 'Query' AND id <> CONNECTION_ID() ORDER BY time DESC",
        (db.name,)))


def kill_statements(db):
    try:
        for thread_id, _, _ in statements_running(db):
            try:
                db.query(f"KILL {int(thread_id)}")
            except Exception:
                pass   # ended meanwhile
    except Exception as exc:
        print(f"could not stop the statements left in {db.name}: {exc!r}")


@pytest.fixture
def indices(unique_name):
    """indices(search) -> a fresh index name prefix on that cluster; every
    index and index template starting with it is deleted at the end."""
    made = []

    def make(search):
        prefix = unique_name("clickloop-t-agg")
        made.append((search, prefix))
        return prefix
    try:
        yield make
    finally:
        for search, prefix in made:
            try:
                search.delete_everything(prefix)
            except Exception as exc:
                print(f"could not clean up {prefix}* on {search.base}: {exc!r}")


def agg_config(env, search_url, index, admin_port=None, es=None, aggregation=None, **more):
    """Configuration with aggregation on, every 1 s, into `index` on search_url."""
    overrides = {
        "aggregation": {"enabled": True, "interval": "1s", "windows": WINDOWS,
                        "session_timeout": SESSION_TIMEOUT, **(aggregation or {})},
        "elasticsearch": {"urls": [search_url], "index": index, "bulk_max_docs": 500,
                          "max_in_flight": 2, "request_timeout": "10s",
                          "retry_min_backoff": "100ms", "retry_max_backoff": "2s",
                          "node_down_for": "2s", **(es or {})},
        **more,
    }
    if admin_port is not None:
        overrides["admin"] = {"listen": f"{harness.HOST}:{admin_port}"}
    return env.write_config(overrides=overrides, name=f"clickloop-{len(env.procs) + 1}.json")


def produce_events(env, events, rng):
    env.produce([e.message(rng) for e in events])


# ================================================================ 1. correctness on both engines

def test_aggregates_match_independent_computation_on_elasticsearch_and_opensearch(
        make_env, indices, es_url, opensearch_url, request):
    rng, seed = make_rng()
    events = clickstream(rng, T0, "a", n_users=8)
    # A second day, so that windows of several days exist.
    events += clickstream(rng, T0 + DAY + 23 * HOUR, "b", n_users=4)
    assert_edges_covered(events)

    runs = []
    for engine, url in (("elasticsearch", es_url), ("opensearch", opensearch_url)):
        search = Search(url)
        index = indices(search)
        env = make_env(engine)
        want = expected_docs(events, index)
        order = list(events)
        rng.shuffle(order)   # arrival order must not matter
        produce_events(env, order, rng)
        agg_config(env, url, index, admin_port=free_port())
        runs.append((engine, search, index, env, env.start(), want))

    t0 = time.monotonic()
    for engine, search, index, env, proc, want in runs:
        got = wait_index_matches(search, index, want, proc, 180,
                                 f"{engine} to hold the expected aggregates")
        wait_settled(env, proc)
        got = search.docs(index)
        assert not doc_problems(got, want)
        assert search.count(index) == len(want)
        assert_db_agrees(env.db, got, want)
        # The long URL is stored whole, the non-ASCII one byte for byte.
        assert any(d["source"]["url"] == LONG_URL for d in got.values())
        assert any(d["source"]["url"] == URL_UTF for d in got.values())
        harness.report(request, f"seed {seed}: {engine}: {len(events)} events -> {len(want)} "
                       f"documents, all equal to the independent computation, "
                       f"{time.monotonic() - t0:.1f}s after start")
        proc.assert_running()


def test_events_of_many_users_in_one_millisecond_are_aggregated(make_env, indices, es_url,
                                                                 request):
    """Issue 9's reproduction: events of different users stamped with the same
    millisecond once failed every run on a duplicate key (equal intervals in
    the range merge), so nothing was ever indexed. Two such events, then 200,
    then ties within one user too, in one stream."""
    rng, seed = make_rng()
    T = T0 + 20 * DAY + 12 * HOUR
    events = [Ev("tie-a0", "ua0", T, URL_HOME, "DE"), Ev("tie-a1", "ua1", T, URL_HOME, "DE")]
    events += [Ev(f"tie-b{i}", f"ub{i}", T, rng.choice(URLS), rng.choice(GEOS))
               for i in range(200)]
    # One user, five events in one millisecond, then one a minute later.
    events += [Ev(f"tie-c{i}", "uc", T + 2 * HOUR, URL_CART, "fr") for i in range(5)]
    events.append(Ev("tie-c9", "uc", T + 2 * HOUR + MINUTE, URL_HOME, "fr"))
    search = Search(es_url)
    index = indices(search)
    env = make_env()
    want = expected_docs(events, index, windows_ms=[HOUR, DAY], timeout_ms=30 * MINUTE)
    produce_events(env, events, rng)
    # The windows and session timeout of config.example.json, as in the issue.
    agg_config(env, es_url, index, aggregation={"windows": ["1h", "1d"],
                                                "session_timeout": "30m"})
    proc = env.start()
    wait_index_matches(search, index, want, proc, 120, "the tied events to be aggregated")
    wait_settled(env, proc)
    assert not doc_problems(search.docs(index), want)
    assert env.db.count("agg_pending") == 0
    harness.report(request, f"seed {seed}: {len(events)} events in 4 milliseconds -> "
                   f"{len(want)} documents, all as computed")
    proc.assert_running()


def test_an_event_that_fails_aggregation_alone_is_held_and_the_rest_goes_on(
        make_env, indices, es_url, request):
    """Issue 9: no single input may put the aggregator in a loop of identical
    failures. A trigger makes MariaDB refuse one event for good (SQLSTATE
    45000 whenever it would be recorded as aggregated), as a value the server
    refuses would: runs fail, halve their claim down to that event, hold it
    in agg_held with the server's error, and aggregate every other event. The
    failure is visible (a metric, /readyz, one log line rather than one per
    run); deleting the agg_held row (after the cause is gone) retries it."""
    rng, seed = make_rng()
    T = T0 + 30 * DAY
    events = clickstream(rng, T, "iso", n_users=6)
    poison = events[len(events) // 2]
    search = Search(es_url)
    index = indices(search)
    env = make_env()
    admin = free_port()
    agg_config(env, es_url, index, admin_port=admin)
    proc = env.start()
    harness.wait_until(lambda: env.db.table_exists("agg_done"), 60, "the schema",
                       check=proc.assert_running)
    env.db.query(
        "CREATE TRIGGER poison BEFORE INSERT ON agg_done FOR EACH ROW "
        "IF NEW.row_key = %s THEN SIGNAL SQLSTATE '45000' "
        "SET MESSAGE_TEXT = 'this event cannot be aggregated'; END IF", (poison.row_key,))
    produce_events(env, events, rng)

    readiness = []

    def held():
        try:
            r = requests.get(f"http://{harness.HOST}:{admin}/readyz", timeout=5)
            readiness.append((r.status_code, r.text))
        except requests.RequestException:
            pass
        return env.db.query("SELECT row_key, reason FROM agg_held")
    rows = harness.wait_until(held, 180, "the poison event to be held", interval=0.3,
                              check=proc.assert_running, describe=lambda: proc.log_tail(10))
    assert [bytes(r[0]) for r in rows] == [poison.row_key]
    assert "this event cannot be aggregated" in rows[0][1]
    assert any(code == 503 and "aggregation failing" in text
               and "this event cannot be aggregated" in text for code, text in readiness), \
        readiness[-3:]

    # Every other event is aggregated, exactly.
    rest = [e for e in events if e is not poison]
    wait_index_matches(search, index, expected_docs(rest, index), proc, 120,
                       "the other events' aggregates")
    m = scrape(admin)
    assert metric(m, "clickloop_aggregation_isolated_total", kind="event") == 1
    harness.wait_until(lambda: metric(scrape(admin), "clickloop_aggregation_failing") == 0 and
                       requests.get(f"http://{harness.HOST}:{admin}/readyz",
                                    timeout=5).status_code == 200,
                       30, "readiness back", check=proc.assert_running)
    failed_lines = [line for line in proc.log_text().splitlines()
                    if "aggregation run failed" in line and "level=debug" not in line]
    runs_failed = metric(m, "clickloop_aggregation_runs_total", result="failed")
    assert runs_failed >= 3 and len(failed_lines) == 1, (runs_failed, failed_lines)
    assert "is held" in proc.log_text()

    # The cause removed and the hold released, the event is aggregated.
    env.db.query("DROP TRIGGER poison")
    env.db.query("DELETE FROM agg_held")
    wait_index_matches(search, index, expected_docs(events, index), proc, 60,
                       "the released event's aggregates")
    wait_settled(env, proc)
    harness.report(request, f"seed {seed}: {len(events)} events, one refused by the server: "
                   f"held after {runs_failed:.0f} failed runs logged in one line; the others "
                   f"aggregated meanwhile; released and aggregated after")
    proc.assert_running()


# ================================================================ 2. late events

def test_late_events_update_exactly_the_affected_documents(make_env, indices, es_url, request):
    rng, seed = make_rng()
    T = T0 + 10 * DAY
    events = clickstream(rng, T, "base", n_users=6)
    # User "lara": a click at 10:13 whose next click (10:40) is too far for a
    # dwell time. A late click at 10:16 on another URL, in the next 15m
    # window, gives the 10:13 click a dwell time of 3 min: its documents
    # (URL_HOME, 15m 10:00 and 1h 10:00) change although the late event is
    # not in them.
    lara = [Ev("lara-1", "lara", T + 10 * HOUR + 13 * MINUTE, URL_HOME, "DE"),
            Ev("lara-2", "lara", T + 10 * HOUR + 40 * MINUTE, URL_HOME, "DE")]
    events += lara
    search = Search(es_url)
    index = indices(search)
    env = make_env()
    produce_events(env, events, rng)
    agg_config(env, es_url, index, admin_port=free_port())
    proc = env.start()
    want_before = expected_docs(events, index)
    wait_index_matches(search, index, want_before, proc, 180, "the first aggregates")
    wait_settled(env, proc)
    before = search.docs(index)
    assert not doc_problems(before, want_before)
    db_before = agg_rows(env.db)

    late = [Ev("late-lara", "lara", T + 10 * HOUR + 16 * MINUTE, URL_CART, "US"),
            # Into old windows of existing users and URLs: one joins an existing
            # aggregate, one within the timeout after another user's click.
            Ev("late-2", events[0].user, events[0].ts + 3 * MINUTE, events[0].url,
               events[0].geo),
            Ev("late-3", "late-newcomer", T + 2 * HOUR + 1, URL_UTF, CITY_ONLY, spent=1234)]
    all_events = events + late
    want_after = expected_docs(all_events, index)
    changed = {i for i in want_after if want_before.get(i) != want_after[i]}
    unchanged = set(want_after) - changed
    lara_home = f"15m:{T + 10 * HOUR}:DE:{hashlib.sha256(URL_HOME.encode()).hexdigest()}"
    assert lara_home in changed, "the scenario must change lara's 10:00 URL_HOME document"
    assert want_after[lara_home]["clicks"] == want_before[lara_home]["clicks"]
    assert unchanged and len(changed) < len(want_after) / 3

    produce_events(env, late, rng)
    t_late = time.monotonic()
    wait_index_matches(search, index, want_after, proc, 120, "the late events to be indexed")
    wait_settled(env, proc)
    after = search.docs(index)
    assert not doc_problems(after, want_after)
    db_after = agg_rows(env.db)

    bumped = {i for i in after if i not in before or after[i]["version"] != before[i]["version"]}
    rewritten = {i for i in after if i not in before or after[i]["source"] != before[i]["source"]}
    db_bumped = {i for i in db_after
                 if i not in db_before or db_after[i]["version"] != db_before[i]["version"]}
    assert bumped == changed, (f"documents with a new version: {len(bumped)}, affected: "
                               f"{len(changed)}; not affected but rewritten: "
                               f"{sorted(bumped - changed)[:3]}; affected but not rewritten: "
                               f"{sorted(changed - bumped)[:3]}")
    assert rewritten == changed, "an unaffected document's source (updated_at...) changed"
    assert db_bumped == changed, "agg_stats versions changed for other rows than the affected"
    for i in changed & set(before):
        assert after[i]["version"] > before[i]["version"]
        assert after[i]["source"]["updated_at"] >= before[i]["source"]["updated_at"]
    assert_db_agrees(env.db, after, want_after)
    harness.report(request, f"seed {seed}: {len(late)} late events changed exactly {len(changed)} "
                   f"of {len(want_after)} documents ({len(changed - set(before))} new), "
                   f"indexed {time.monotonic() - t_late:.1f}s after producing them")


# ================================================================ 2b. trailing spaces

def test_values_differing_only_in_trailing_spaces_stay_distinct(make_env, indices, es_url,
                                                                request):
    """MariaDB's utf8mb4_bin ignores trailing spaces (PAD SPACE): with it,
    "pad" and "pad " were one user to COUNT(DISTINCT) and to the window
    partitions that find a user's next click. Users, URLs and event ids that
    differ only in trailing spaces must stay distinct rows, users and
    aggregates."""
    rng, seed = make_rng()
    T = T0 + 20 * DAY
    url = "https://shop.example.com/pad"
    # Per user, the next click is 2 min later; merged, it would be 1 min.
    events = [Ev("x", "pad", T, url, "DE"),
              Ev("x ", "pad ", T + 1 * MINUTE, url, "DE"),
              Ev("y", "pad", T + 2 * MINUTE, url + " ", "DE"),
              Ev("y ", "pad ", T + 3 * MINUTE, url + " ", "DE")]
    search = Search(es_url)
    index = indices(search)
    env = make_env()
    produce_events(env, events, rng)
    agg_config(env, es_url, index)
    proc = env.start()
    want = expected_docs(events, index)
    got = wait_index_matches(search, index, want, proc, 60, "the aggregates")
    wait_settled(env, proc)
    assert_db_agrees(env.db, search.docs(index), want)

    stored = set(env.db.query("SELECT row_key, event_id, user_id, url FROM click_data"))
    assert stored == {(e.row_key, e.event_id, e.user, e.url) for e in events}
    assert env.db.scalar("SELECT COUNT(DISTINCT user_id) FROM click_data") == 2
    stats = sorted(env.db.query("SELECT window_ms, url, clicks, unique_users, "
                                "time_spent_sum, time_spent_samples FROM agg_stats"))
    assert stats == sorted((w, u, 2, 2, spent, samples) for w in WINDOWS_MS
                           for u, spent, samples in ((url, 4 * MINUTE, 2), (url + " ", 0, 0)))
    assert {d["source"]["unique_users"] for d in got.values()} == {2}
    harness.report(request, f"seed {seed}: users, URLs and event ids differing only in "
                   f"trailing spaces: {len(want)} documents, each with 2 unique users")


# ================================================================ 2c. retention freezes old windows

RETENTION_DAYS = 30
# Day windows: the cutoff (now - 30 days) moves by the test's duration only, so
# whether a window starts before it is settled unless the test runs across a
# UTC midnight (then the windows of that midnight are left unchecked).
RETENTION_WINDOWS = ["1d", "7d"]
RETENTION_WINDOWS_MS = [DAY, 7 * DAY]
# Windows are frozen from an hour past the cutoff (CL_AGG_RETENTION_MARGIN_MS).
FREEZE_MARGIN = HOUR


def now_ms():
    return int(time.time() * 1000)


def frozen_expectation(want_before, events, index, cutoff_lo, cutoff_hi):
    """(want, unsure): the documents the index must hold when windows that
    start before the retention cutoff keep their aggregates (want_before) and
    all others are recomputed from every event. The cutoff used by the runs
    lies in [cutoff_lo, cutoff_hi]: a window starting in between may be either
    (unsure, left out of want)."""
    full = expected_docs(events, index, RETENTION_WINDOWS_MS)
    want, unsure = {}, set()
    for doc_id in set(want_before) | set(full):
        start = int(doc_id.split(":")[1])
        if cutoff_lo <= start <= cutoff_hi:
            unsure.add(doc_id)
            continue
        doc = want_before.get(doc_id) if start < cutoff_lo else full.get(doc_id)
        if doc is not None:
            want[doc_id] = doc
    return want, unsure


def wait_index_matches_but(search, index, want, unsure, proc, timeout, what):
    """wait_index_matches, ignoring the documents in unsure."""
    state = {"problems": ["not read yet"]}

    def cond():
        got = safe_docs(search, index)
        if got is None:
            state["problems"] = ["the cluster does not answer"]
            return None
        state["problems"] = doc_problems({k: v for k, v in got.items() if k not in unsure}, want)
        return None if state["problems"] else got

    return harness.wait_until(
        cond, timeout, what, interval=0.5, check=proc.assert_running,
        describe=lambda: f"{'; '.join(state['problems'][:8])}; clickloop log ends with:\n"
                         f"{proc.log_tail(25)}")


def day_doc_id(ts, url, country):
    """The id of the 1d document holding an event."""
    return f"1d:{ts // DAY * DAY}:{country}:{hashlib.sha256(url.encode()).hexdigest()}"


def scrape_or_empty(port):
    """scrape(), or {} while the admin listener is not up yet."""
    try:
        return scrape(port)
    except requests.RequestException:
        return {}


def wait_stored(env, proc, events, timeout=60):
    ids = [e.event_id for e in events]
    marks = ", ".join(["%s"] * len(ids))
    harness.wait_until(
        lambda: env.db.scalar(f"SELECT COUNT(*) FROM click_data WHERE event_id IN ({marks})",
                              ids) == len(ids),
        timeout, f"events {ids} to be stored", check=proc.assert_running,
        describe=lambda: proc.log_tail(20))


def test_windows_older_than_retention_keep_their_aggregates_when_late_events_arrive(
        make_env, indices, es_url, request):
    """With retention on, a window that starts before the retention cutoff has
    lost (some of) its raw rows: a late event must not make the aggregator
    recompute it from what is left. Run 1 aggregates with retention off;
    retention is switched on by SIGHUP and deletes the old rows; then late
    events arrive: one into a window 40 days old, one whose user's previous
    click lies just after the cutoff in a day the cutoff cuts through, one
    into a recent window. Only the recent window changes. After a restart
    (the aggregator reads raw_days from the configuration), the same holds;
    and again once retention is switched off by SIGHUP: the deleted rows stay
    deleted, so the windows before the cutoff retention recorded
    (retention_state) stay frozen."""
    rng, seed = make_rng()
    t_start = now_ms()
    cutoff_start = t_start - RETENTION_DAYS * DAY   # the cutoff only moves on from here
    old = clickstream(rng, (t_start - 40 * DAY) // DAY * DAY + 8 * HOUR, "old", n_users=4)
    recent = clickstream(rng, (t_start - 3 * DAY) // DAY * DAY + 8 * HOUR, "new", n_users=4)
    # Around the cutoff, in the day it cuts through: "sam" before it (deleted
    # by retention), "pia" after it (kept), same URL and country.
    day = cutoff_start // DAY * DAY
    sam = [Ev(f"sam-{k}", "sam", day + (cutoff_start - day) * k // 4, URL_PROD, "FR")
           for k in (1, 2, 3)]
    pia = Ev("pia-1", "pia", cutoff_start + 10 * MINUTE, URL_PROD, "FR")
    events = old + recent + sam + [pia]

    search = Search(es_url)
    index = indices(search)
    env = make_env()
    port = free_port()

    def write_config(raw_days):
        return agg_config(env, es_url, index, admin_port=port,
                          aggregation={"windows": RETENTION_WINDOWS},
                          retention={"raw_days": raw_days, "interval": "1h"})

    config = write_config(0)
    produce_events(env, events, rng)
    proc = env.start()
    want_before = expected_docs(events, index, RETENTION_WINDOWS_MS)
    wait_index_matches(search, index, want_before, proc, 120, "the first aggregates")
    wait_settled(env, proc)
    before = search.docs(index)
    db_before = agg_rows(env.db)
    assert metric(scrape(port), "clickloop_aggregation_windows_skipped_total",
                  reason="retention") == 0

    # Retention on, in place; its first run deletes everything before the cutoff.
    os.replace(write_config(RETENTION_DAYS), config)
    os.kill(proc.pid, signal.SIGHUP)
    pruned = {e.event_id for e in old + sam}
    harness.wait_until(
        lambda: env.db.scalar("SELECT COUNT(*) FROM click_data WHERE event_time < "
                              "TIMESTAMP'1970-01-01 00:00:00' + INTERVAL %s MICROSECOND",
                              (cutoff_start * 1000,)) == 0,
        60, "retention to delete the rows before the cutoff", check=proc.assert_running,
        describe=lambda: proc.log_tail(10))
    assert env.db.count("click_data") == len(events) - len(pruned)

    # Late events. The aggregates of the old window and of the day the cutoff
    # cuts through would shrink if recomputed from the rows left.
    old_doc, new_doc = old[0], recent[0]
    late = [Ev("late-old", "late-oldtimer", old_doc.ts + 1, old_doc.url, old_doc.geo),
            Ev("late-pia", "pia", pia.ts + 3 * MINUTE, URL_CART, "US"),
            Ev("late-new", "late-newcomer", new_doc.ts + 1, new_doc.url, new_doc.geo)]
    cutoff_lo = now_ms() - RETENTION_DAYS * DAY
    cutoff_hi = cutoff_lo + 4 * MINUTE   # the rest of the test takes far less
    assert pia.ts > cutoff_hi, "the test ran too slowly: pia's click would be deleted"
    freeze_lo, freeze_hi = cutoff_lo + FREEZE_MARGIN, cutoff_hi + FREEZE_MARGIN
    all_events = events + late
    want, unsure = frozen_expectation(want_before, all_events, index, freeze_lo, freeze_hi)
    full = expected_docs(all_events, index, RETENTION_WINDOWS_MS)
    old_id, new_id, edge_id = (day_doc_id(e.ts, e.url, e.country) for e in (old_doc, new_doc, pia))
    if pia.ts // DAY * DAY == day:   # else the cutoff lies in the last minutes of a day
        assert want_before[edge_id]["clicks"] == 4, "sam's and pia's clicks share a document"
        if edge_id not in unsure:
            assert want[edge_id] == want_before[edge_id]
    assert want[old_id] == want_before[old_id] and full[old_id] != want_before[old_id]
    assert want[new_id] == full[new_id] and full[new_id] != want_before[new_id]

    produce_events(env, late, rng)
    wait_stored(env, proc, late)
    wait_settled(env, proc)
    after = wait_index_matches_but(search, index, want, unsure, proc, 60,
                                   "only the recent window to change")
    db_after = agg_rows(env.db)
    frozen = {i for i in want if int(i.split(":")[1]) < freeze_lo}
    assert old_id in frozen
    for i in frozen:
        assert after[i]["version"] == before[i]["version"], f"{i}: a frozen document changed"
        assert after[i]["source"] == before[i]["source"], f"{i}: a frozen document changed"
        assert db_after[i] == db_before[i], f"{i}: a frozen agg_stats row changed"
    assert after[new_id]["version"] > before[new_id]["version"]
    assert db_after[new_id]["clicks"] == want_before[new_id]["clicks"] + 1
    assert set(db_after) - unsure == set(want), "agg_stats rows other than the expected"
    # The late events are stored (retention deletes the old one on its next
    # run) and consumed from the queue.
    assert env.db.count("agg_pending") == 0
    assert env.db.scalar("SELECT COUNT(*) FROM click_data WHERE event_id = 'late-old'") == 1
    skipped = metric(scrape(port), "clickloop_aggregation_windows_skipped_total",
                     reason="retention")
    # At least the old event's day and week, and the day and week of pia's clicks.
    assert skipped >= 4 - len(unsure), f"{skipped} windows skipped"

    # A restart: the new aggregator takes raw_days from the configuration.
    assert proc.stop() == 0, proc.log_tail()
    proc = env.start(config)
    harness.wait_until(lambda: metric(scrape_or_empty(port), "clickloop_retention_runs_total",
                                      result="ok") >= 1,
                       60, "the first retention run after the restart",
                       check=proc.assert_running, describe=lambda: proc.log_tail(10))
    late2 = [Ev("late-old-2", "late-oldtimer-2", old_doc.ts + 2, old_doc.url, old_doc.geo),
             Ev("late-new-2", "late-newcomer-2", new_doc.ts + 2, new_doc.url, new_doc.geo)]
    produce_events(env, late2, rng)
    wait_stored(env, proc, late2)
    wait_settled(env, proc)
    want2, unsure2 = frozen_expectation(want_before, all_events + late2, index, freeze_lo,
                                        freeze_hi)
    after2 = wait_index_matches_but(search, index, want2, unsure2, proc, 60,
                                    "only the recent window to change after the restart")
    assert after2[old_id] == before[old_id]
    assert agg_rows(env.db)[old_id] == db_before[old_id]
    assert after2[new_id]["version"] > after[new_id]["version"]
    assert metric(scrape(port), "clickloop_aggregation_windows_skipped_total",
                  reason="retention") >= 2
    assert now_ms() - RETENTION_DAYS * DAY <= cutoff_hi, "the test ran longer than planned"

    # Retention off, in place. Its runs recorded their cutoff; the last one,
    # after the restart, deleted the first late event.
    pruned_before = env.db.scalar(
        "SELECT TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', pruned_before) "
        "DIV 1000 FROM retention_state WHERE id = 1")
    assert pruned_before is not None and cutoff_lo <= pruned_before <= cutoff_hi, \
        f"retention_state.pruned_before {pruned_before} not in [{cutoff_lo}, {cutoff_hi}]"
    reloads = proc.log_text().count("reloaded ")
    os.replace(write_config(0), config)
    os.kill(proc.pid, signal.SIGHUP)
    harness.wait_until(lambda: proc.log_text().count("reloaded ") > reloads, 30,
                       "the reload that switches retention off", check=proc.assert_running,
                       describe=lambda: proc.log_tail(10))
    skipped_on = metric(scrape(port), "clickloop_aggregation_windows_skipped_total",
                        reason="retention")
    late3 = [Ev("late-old-3", "late-oldtimer-3", old_doc.ts + 3, old_doc.url, old_doc.geo),
             Ev("late-new-3", "late-newcomer-3", new_doc.ts + 3, new_doc.url, new_doc.geo)]
    produce_events(env, late3, rng)
    wait_stored(env, proc, late3)
    wait_settled(env, proc)
    # Recomputed from the rows left, the old window would hold the three late
    # events only.
    want3, unsure3 = frozen_expectation(want_before, all_events + late2 + late3, index,
                                        freeze_lo, freeze_hi)
    after3 = wait_index_matches_but(search, index, want3, unsure3, proc, 60,
                                    "only the recent window to change with retention off")
    assert after3[old_id] == before[old_id]
    assert agg_rows(env.db)[old_id] == db_before[old_id]
    assert after3[new_id]["version"] > after2[new_id]["version"]
    # The old event's day and week.
    assert metric(scrape(port), "clickloop_aggregation_windows_skipped_total",
                  reason="retention") >= skipped_on + 2
    assert env.db.scalar("SELECT COUNT(*) FROM click_data WHERE event_id = 'late-old-3'") == 1
    harness.report(request, f"seed {seed}: {len(want)} documents; the old window, the day the "
                   f"cutoff cuts through and their weeks ({len(frozen)} documents) kept "
                   f"their version through {len(late) + len(late2) + len(late3)} late events, "
                   f"the last ones with retention off; {len(unsure)} left unchecked (cutoff "
                   f"crossed a window start)")
    assert proc.stop() == 0, proc.log_tail()


# ================================================================ 3. Elasticsearch outage

def test_elasticsearch_outage_then_recovery_converges_without_duplicates(
        make_env, indices, es_url, request):
    rng, seed = make_rng()
    T = T0 + 20 * DAY
    first = clickstream(rng, T, "one", n_users=5)
    search = Search(es_url)
    index = indices(search)
    env = make_env()
    produce_events(env, first, rng)
    admin_port = free_port()
    agg_config(env, es_url, index, admin_port=admin_port)
    proc = env.start()
    wait_index_matches(search, index, expected_docs(first, index), proc, 180,
                       "the aggregates before the outage")

    # While Elasticsearch is down: new events on another day, and a few more in
    # the windows already indexed (their documents must be updated later).
    during = [clickstream(rng, T + DAY, f"two{k}", n_users=3) for k in range(3)]
    during[1] += [Ev(f"old-window-{i}", e.user, e.ts + 1, e.url, e.geo)
                  for i, e in enumerate(rng.sample(first, 5))]
    events = first + [e for chunk in during for e in chunk]
    want = expected_docs(events, index)

    log_mark = len(proc.log_text())
    t_down = time.monotonic()
    try:
        harness.services("down", "elasticsearch")
        t_stopped = time.monotonic()
        assert not search.up(), "Elasticsearch still answers after `deps/services down`"
        stored = len(first)
        for chunk in during:
            produce_events(env, chunk, rng)
            stored += len(chunk)
            harness.wait_until(lambda: env.db.count("click_data") == stored, 120,
                               f"{stored} events in click_data while Elasticsearch is down",
                               interval=0.3, check=proc.assert_running,
                               describe=proc.log_tail)
        # Aggregation goes on too: nothing is left pending, and the new
        # aggregates wait in MariaDB for the index.
        harness.wait_until(
            lambda: env.db.count("agg_pending") == 0 and env.db.scalar(
                "SELECT COUNT(*) FROM agg_stats WHERE needs_index = 1") > 0,
            60, "aggregation to run while Elasticsearch is down", check=proc.assert_running,
            describe=proc.log_tail)
        waiting = env.db.scalar("SELECT COUNT(*) FROM agg_stats WHERE needs_index = 1")
        harness.wait_until(lambda: "module=elasticsearch" in proc.log_text()[log_mark:], 60,
                           "clickloop to report the unreachable node", check=proc.assert_running,
                           describe=proc.log_tail)
        proc.assert_running()
        assert search.up() is False
    finally:
        harness.services("up", "elasticsearch")
    t_up = time.monotonic()
    got = wait_index_matches(search, index, want, proc, 240,
                             "the index to converge after Elasticsearch came back")
    t_done = time.monotonic()
    wait_settled(env, proc)
    got = search.docs(index)
    assert not doc_problems(got, want)
    n = search.count(index)
    assert n == len(want) == len(got), f"{n} documents, {len(want)} distinct ids expected"
    assert_db_agrees(env.db, got, want)
    m = scrape(admin_port)
    proc.assert_running()
    harness.report(request, f"seed {seed}: Elasticsearch stopped in {t_stopped - t_down:.1f}s, "
                   f"answering again {t_up - t_down:.1f}s after the stop began; meanwhile "
                   f"{len(events) - len(first)} events arrived ({waiting} aggregates waited in "
                   f"MariaDB); index converged {t_done - t_up:.1f}s after it was back: "
                   f"{n} documents = {len(want)} expected ids; retried attempts "
                   f"{metric(m, 'clickloop_index_documents_total', outcome='retried'):.0f}, "
                   f"failed bulk requests "
                   f"{metric(m, 'clickloop_index_bulk_requests_total', result='failed'):.0f}")


# ================================================================ 4. real 429s

SEARCH_USER = os.environ.get("CLICKLOOP_SEARCH_USER", "clickloop-search")
DEPS_CACHE = Path(os.environ.get("CLICKLOOP_DEPS_CACHE", harness.SOURCE_ROOT / "deps" / "cache"))


def java_home():
    if os.environ.get("CLICKLOOP_JAVA_HOME"):
        return os.environ["CLICKLOOP_JAVA_HOME"]
    if os.access("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", os.X_OK):
        return "/usr/lib/jvm/java-17-openjdk-amd64"
    java = shutil.which("java")
    assert java, "no java found (run deps/install)"
    return str(Path(os.path.realpath(java)).parent.parent)


class ExtraElasticsearch:
    """A throw-away single Elasticsearch node from the distribution that
    deps/services unpacked, launched the way deps/services launches its own
    (same user and JAVA), with a write thread pool of one thread and a queue
    of one, so that concurrent bulk requests are rejected with 429."""

    def __init__(self, http_port, transport_port):
        homes = sorted(DEPS_CACHE.glob("elasticsearch-*/.complete"))
        assert homes, f"no Elasticsearch distribution in {DEPS_CACHE} (run deps/services fetch)"
        self.home = homes[-1].parent
        self.port = http_port
        self.url = f"http://{harness.HOST}:{http_port}"
        self.dir = Path(tempfile.mkdtemp(prefix="clickloop-es429-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        for sub in ("data", "logs", "tmp"):
            (self.dir / sub).mkdir()
        conf = self.dir / "config"
        shutil.copytree(self.home / "config", conf)
        jvm = (conf / "jvm.options").read_text()
        logs = self.dir / "logs"
        for old, new in (("file=logs/gc.log", f"file={logs}/gc.log"),
                         ("file=gc.log", f"file={logs}/gc.log"),
                         ("ErrorFile=logs/hs_err", f"ErrorFile={logs}/hs_err"),
                         ("ErrorFile=hs_err", f"ErrorFile={logs}/hs_err"),
                         ("HeapDumpPath=data", f"HeapDumpPath={logs}")):
            jvm = jvm.replace(old, new)
        (conf / "jvm.options").write_text(jvm)
        yml = [f"cluster.name: clickloop-es429-{harness.random_suffix(6)}",
               "node.name: es429-1",
               f"network.host: {harness.HOST}",
               f"http.port: {http_port}",
               f"transport.port: {transport_port}",
               "discovery.type: single-node",
               f"path.data: {self.dir / 'data'}",
               f"path.logs: {logs}",
               "cluster.routing.allocation.disk.threshold_enabled: false",
               "thread_pool.write.size: 1",
               "thread_pool.write.queue_size: 1"]
        if (self.home / "modules" / "x-pack-security").is_dir():
            yml.append("xpack.security.enabled: false")
        (conf / "elasticsearch.yml").write_text("\n".join(yml) + "\n")
        pw = pwd.getpwnam(SEARCH_USER)
        for root, dirs, files in os.walk(self.dir):
            for name in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.chown(name, pw.pw_uid, pw.pw_gid)
        self.out = open(self.dir / "stdout.log", "wb")
        self.proc = subprocess.Popen(
            ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={self.dir}", "LANG=C.UTF-8",
             f"ES_JAVA_HOME={java_home()}", f"ES_PATH_CONF={conf}", f"ES_TMPDIR={self.dir / 'tmp'}",
             "ES_JAVA_OPTS=-Xms256m -Xmx256m",
             "setpriv", f"--reuid={SEARCH_USER}", f"--regid={SEARCH_USER}", "--init-groups", "--",
             str(self.home / "bin" / "elasticsearch")],
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
            start_new_session=True)

    def log_tail(self, n=30):
        text = ""
        for f in (self.dir / "stdout.log",):
            try:
                text += f.read_text(errors="replace")
            except OSError:
                pass
        return "\n".join(text.splitlines()[-n:])

    def wait_ready(self, timeout=180):
        def ready():
            try:
                r = requests.get(f"{self.url}/_cluster/health",
                                 params={"wait_for_status": "yellow", "timeout": "2s"}, timeout=5)
                return r.ok and r.json().get("status") in ("yellow", "green")
            except requests.RequestException:
                return False

        def alive():
            if self.proc.poll() is not None:
                raise AssertionError(f"the extra Elasticsearch node exited "
                                     f"({self.proc.returncode}):\n{self.log_tail()}")
        harness.wait_until(ready, timeout, "the extra Elasticsearch node to answer", interval=0.5,
                           check=alive, describe=self.log_tail)

    def write_rejections(self):
        r = requests.get(f"{self.url}/_nodes/stats/thread_pool", timeout=10)
        r.raise_for_status()
        return sum(n["thread_pool"]["write"]["rejected"] for n in r.json()["nodes"].values())

    def stop(self):
        """SIGTERM to the node's process group (the launcher and the server
        JVM), SIGKILL after 60 s; then remove its folder."""
        try:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=30)
            # The server JVM is a child in the same group: make sure it is gone.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)   # waiting for process exit, not for a condition elsewhere
            else:
                os.killpg(self.proc.pid, signal.SIGKILL)
        finally:
            self.out.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def pick_ports(preferred):
    if all(port_free(p) for p in preferred):
        return preferred
    return [free_port() for _ in preferred]


def unique_url_events(n, start, tag, rng):
    """n events, each on a URL of its own (one document per event and window)."""
    users = [f"{tag}-u{i}" for i in range(40)]
    return [Ev(f"{tag}-{i}", rng.choice(users), start + i * 3_000 + rng.randrange(3_000),
               f"https://shop.example.com/item/{i}?ref={tag}", rng.choice(["DE", "FR", "US"]),
               spent=rng.randrange(1_000, 100_000) if i % 3 == 0 else None)
            for i in range(n)]


def ingest_then_aggregate(env, events, rng, config_overrides):
    """Store every event with aggregation off, then start clickloop with it on:
    its first run then claims every event, so each aggregate gets one version
    only. Returns the running process."""
    produce_events(env, events, rng)
    env.write_config(name="ingest-only.json")
    loader = env.start()
    env.wait_caught_up(len(events), 0, timeout=300)
    assert loader.stop() == 0, loader.log_tail()
    assert env.db.count("agg_pending") == len(events)
    agg_config(env, **config_overrides)
    return env.start()


def test_real_429s_are_retried_and_everything_indexed_once(make_env, indices, request):
    rng, seed = make_rng()
    http_port, transport_port = pick_ports([19210, 19310])
    node = ExtraElasticsearch(http_port, transport_port)
    try:
        t0 = time.monotonic()
        node.wait_ready()
        harness.report(request, f"extra Elasticsearch node (write pool 1 thread, queue 1) up on "
                       f"port {http_port} in {time.monotonic() - t0:.1f}s")
        search = Search(node.url)
        index = indices(search)
        env = make_env()
        events = unique_url_events(4_000, T0 + 30 * DAY, "r", rng)
        want = expected_docs(events, index)
        admin_port = free_port()
        proc = ingest_then_aggregate(env, events, rng, dict(
            search_url=node.url, index=index, admin_port=admin_port,
            es={"max_in_flight": 8, "bulk_max_docs": 50, "retry_min_backoff": "50ms",
                "retry_max_backoff": "1s"}))
        t_start = time.monotonic()
        got = wait_index_matches(search, index, want, proc, 300,
                                 "every document on the 429-prone node", interval=2)
        t_done = time.monotonic()
        wait_settled(env, proc)
        got = search.docs(index)
        assert not doc_problems(got, want)
        n = search.count(index)
        assert n == len(want), f"{n} documents, {len(want)} expected"
        assert_db_agrees(env.db, got, want)
        # One aggregation run wrote every row once: each document is at its
        # first version.
        runs = [m.groups() for m in RUN_LINE.finditer(proc.log_text())]
        assert runs and int(runs[0][0]) == len(events), runs[:3]

        m = scrape(admin_port)
        retried = metric(m, "clickloop_index_documents_total", outcome="retried")
        indexed = metric(m, "clickloop_index_documents_total", outcome="indexed")
        superseded = metric(m, "clickloop_index_documents_total", outcome="superseded")
        failed = metric(m, "clickloop_index_documents_total", outcome="failed")
        bulk_failed = metric(m, "clickloop_index_bulk_requests_total", result="failed")
        bulk_ok = metric(m, "clickloop_index_bulk_requests_total", result="ok")
        rejected = node.write_rejections()
        harness.report(request, f"seed {seed}: {len(want)} documents in {bulk_ok:.0f} bulk "
                       f"requests (+{bulk_failed:.0f} refused whole) indexed in "
                       f"{t_done - t_start:.1f}s; the node rejected {rejected} write tasks; "
                       f"clickloop retried {retried:.0f} document attempts; indexed "
                       f"{indexed:.0f}, superseded {superseded:.0f}, failed {failed:.0f}")
        assert rejected > 0, "the node rejected nothing: no real 429 happened"
        assert retried > 0, "documents were rejected with 429 but none was retried"
        assert failed == 0
        assert indexed + superseded == len(want), \
            f"{indexed:.0f} indexed + {superseded:.0f} superseded for {len(want)} documents"
        proc.assert_running()
    finally:
        node.stop()


# ================================================================ 5. mapping conflict

def test_mapping_conflict_on_one_document_is_recorded_and_others_proceed(
        make_env, indices, es_url, request):
    rng, seed = make_rng()
    april = dt.datetime(2024, 4, 10, tzinfo=dt.timezone.utc).timestamp() * 1000
    may = dt.datetime(2024, 5, 10, tzinfo=dt.timezone.utc).timestamp() * 1000
    june = dt.datetime(2024, 6, 10, tzinfo=dt.timezone.utc).timestamp() * 1000
    events = (clickstream(rng, int(april), "apr", n_users=3, per_user=(6, 10))
              + clickstream(rng, int(may), "may", n_users=3, per_user=(6, 10))
              + clickstream(rng, int(june), "jun", n_users=3, per_user=(6, 10)))
    search = Search(es_url)
    prefix = indices(search)
    pattern = prefix + "-%Y.%m"
    bad_index = index_name(pattern, int(may))
    # The May index exists already, with `country` a number: every May document
    # fails with a mapping (document parsing) exception.
    r = search.http.put(f"{es_url}/{bad_index}",
                        json={"mappings": {"properties": {"country": {"type": "long"}}}},
                        timeout=30)
    assert r.ok, r.text
    want = expected_docs(events, pattern)
    want_ok = {i: d for i, d in want.items() if d["index"] != bad_index}
    want_bad = {i for i, d in want.items() if d["index"] == bad_index}
    assert want_ok and want_bad

    env = make_env()
    produce_events(env, events, rng)
    admin_port = free_port()
    agg_config(env, es_url, pattern, admin_port=admin_port)
    proc = env.start()
    wildcard = prefix + "-*"
    # Documents of April and June are all indexed, into their own indices.
    wait_index_matches(search, wildcard, want_ok, proc, 180,
                       "the documents of the months without a conflict")
    # The May ones are refused for good and recorded in agg_stats.
    state = {}

    def recorded():
        rows = agg_rows(env.db)
        state["rows"] = {i: rows.get(i) for i in want_bad}
        return all(r is not None and r["index_error"] and r["needs_index"] == 0
                   for r in state["rows"].values())
    harness.wait_until(recorded, 120, "index_error on every document of the conflicting month",
                       check=proc.assert_running,
                       describe=lambda: f"{list(state.get('rows', {}).items())[:3]}; "
                                        f"log:\n{proc.log_tail(20)}")
    errors = {i: agg_rows(env.db)[i]["index_error"] for i in want_bad}
    assert all("exception" in e.lower() for e in errors.values()), list(errors.values())[:3]
    assert all("country" in e for e in errors.values()), list(errors.values())[:3]
    assert search.count(bad_index) == 0
    ok_rows = agg_rows(env.db)
    assert all(not ok_rows[i]["index_error"] for i in want_ok)

    # clickloop keeps going: a new event in June is aggregated and indexed.
    extra = Ev("june-extra", "late-june", int(june) + 5 * HOUR, URL_HOME, "DE")
    produce_events(env, [extra], rng)
    want2 = expected_docs(events + [extra], pattern)
    want2_ok = {i: d for i, d in want2.items() if d["index"] != bad_index}
    got = wait_index_matches(search, wildcard, want2_ok, proc, 120,
                             "a later event to be indexed after the refusals")
    m = scrape(admin_port)
    failed = metric(m, "clickloop_index_documents_total", outcome="failed")
    assert failed >= len(want_bad)
    proc.assert_running()
    harness.report(request, f"seed {seed}: {len(want_bad)} documents of {bad_index} refused "
                   f"({failed:.0f} refusals counted), e.g. index_error "
                   f"{next(iter(errors.values()))[:160]!r}; {len(got)} documents of the other "
                   f"months indexed")


# ================================================================ 5b. oversized bulk responses

# es_sink.c holds at most this much of a bulk response: 16 MiB plus 8 KiB per
# document of the request.
RESPONSE_BASE_MAX = 16 << 20
RESPONSE_PER_DOC_MAX = 8192


class PaddingProxy:
    """A misbehaving HTTP proxy in front of a real node: it forwards every
    request and, for the _bulk requests `pad(docs)` picks, pads the node's
    answer with whitespace (still valid JSON) past what clickloop holds."""

    def __init__(self, upstream):
        import http.client
        import http.server
        import threading
        import urllib.parse
        self.pad = lambda docs: False
        self.padded = []    # documents of each padded request
        up = urllib.parse.urlsplit(upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "accept")}
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                answer = r.read()
                conn.close()
                if "_bulk" in self.path and body:
                    docs = body.count(b"\n") // 2
                    if proxy.pad(docs):
                        proxy.padded.append(docs)
                        limit = RESPONSE_BASE_MAX + RESPONSE_PER_DOC_MAX * docs
                        answer = answer[:1] + b" " * (limit + 1) + answer[1:]
                self.send_response(r.status)
                self.send_header("Content-Type", r.getheader("Content-Type") or
                                 "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                try:
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # clickloop stops reading at its limit

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer((harness.HOST, 0), Handler)
        self.url = f"http://{harness.HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_oversized_bulk_responses_are_split_down_and_a_lone_document_is_recorded(
        make_env, indices, es_url, request):
    """A bulk answer too large to hold does not lose documents: the request is
    retried in halves until the answers fit; a single document whose answer
    still does not fit is recorded in agg_stats.index_error, not dropped."""
    rng, seed = make_rng()
    search = Search(es_url)
    index = indices(search)
    proxy = PaddingProxy(es_url)
    try:
        proxy.pad = lambda docs: docs > 1
        env = make_env()
        events = unique_url_events(8, T0 + 40 * DAY, "pad", rng)
        want = expected_docs(events, index)
        assert len(want) >= 8
        admin_port = free_port()
        # Stored first with aggregation off, so that one run makes every
        # document and the first bulk request holds them all.
        env.produce([Message(e.payload(), partition=i % 4) for i, e in enumerate(events)])
        env.write_config(name="ingest-only.json")
        loader = env.start()
        env.wait_caught_up(len(events), 0, timeout=120)
        assert loader.stop() == 0, loader.log_tail()
        agg_config(env, proxy.url, index, admin_port=admin_port)
        proc = env.start()
        wait_index_matches(search, index, want, proc, 120,
                           "every document through the padding proxy")
        wait_settled(env, proc)
        assert_db_agrees(env.db, search.docs(index), want)
        m = scrape(admin_port)
        assert metric(m, "clickloop_index_documents_total", outcome="failed") == 0
        assert metric(m, "clickloop_index_bulk_requests_total", result="failed") == \
            len(proxy.padded)
        assert proxy.padded and proxy.padded[0] == len(want), proxy.padded
        assert re.search(r"the bulk answer was larger than \d+ bytes", proc.log_text()), \
            proc.log_tail(10)
        first_split = list(proxy.padded)

        # Now every answer is too large, even for one document: a late event
        # changes two documents (its quarter hour and its hour), each is
        # recorded as failed with the reason, and the rest stays as it was.
        proxy.pad = lambda docs: True
        proxy.padded.clear()
        late = events[0]
        extra = Ev("pad-late", "pad-late-user", late.ts + 1, late.url, late.geo)
        produce_events(env, [extra], rng)
        changed = set(expected_docs(events + [extra], index)) & set(want)
        changed = {i for i in changed
                   if expected_docs(events + [extra], index)[i] != want[i]}
        assert len(changed) == 2, changed
        state = {}

        def recorded():
            rows = agg_rows(env.db)
            state["rows"] = {i: rows[i] for i in changed}
            return all(r["index_error"] and r["needs_index"] == 0
                       for r in state["rows"].values())
        harness.wait_until(recorded, 120, "index_error on the two changed documents",
                           check=proc.assert_running,
                           describe=lambda: f"{state.get('rows')}; {proc.log_tail(10)}")
        for r in state["rows"].values():
            assert "larger than" in r["index_error"], r
        rows = agg_rows(env.db)
        assert all(not rows[i]["index_error"] for i in set(want) - changed)
        assert metric(scrape(admin_port), "clickloop_index_documents_total",
                      outcome="failed") == 2
        # The pair was tried together, then each alone.
        assert sorted(proxy.padded) == [1, 1, 2], proxy.padded
        proc.assert_running()
        harness.report(request, f"seed {seed}: {len(want)} documents; padded answers to "
                       f"requests of {first_split} documents, then every lone document "
                       f"recorded: {next(iter(state['rows'].values()))['index_error'][:120]!r}")
    finally:
        proxy.close()


# ================================================================ 6. incremental cost

def bench_messages(n, rng, start_ms, span_ms, tag, users=BENCH_USERS):
    countries = ["US", "DE", "FR", "JP", "BR", "IN"]
    step = span_ms / n
    for i in range(n):
        ts = start_ms + int(i * step) + rng.randrange(max(1, int(step)))
        spent = f',"time_spent_ms":{rng.randrange(60_000)}' if i % 2 else ""
        country = f',"country":"{countries[i % 6]}"' if i % 11 else ""
        payload = (f'{{"event_id":"{tag}-{i}","user_id":"user-{rng.randrange(users)}",'
                   f'"timestamp":{ts},"url":"https://shop.example.com/p/{rng.randrange(40)}"'
                   f'{country}{spent}}}')
        yield Message(payload.encode())


@pytest.mark.skipif(os.environ.get("CLICKLOOP_SANITIZED", "none") != "none",
                    reason="a benchmark of MariaDB's work: run in the plain build only")
def test_incremental_run_costs_a_fraction_of_full_recompute(make_env, request):
    rng, seed = make_rng()
    env = make_env()
    start = T0 - BENCH_DAYS * DAY
    span = BENCH_DAYS * DAY
    t0 = time.monotonic()
    env.produce(bench_messages(BENCH_EVENTS, rng, start, span, "bulk"), record=False)
    t_produced = time.monotonic()
    # Load with aggregation off; every event waits in agg_pending.
    env.write_config(name="ingest-only.json")
    loader = env.start()
    env.wait_caught_up(BENCH_EVENTS, 0, timeout=600)
    t_loaded = time.monotonic()
    assert loader.stop() == 0, loader.log_tail()
    assert env.db.count("agg_pending") == BENCH_EVENTS

    # Aggregation on. No search node answers at this address: the indexer
    # waits, so the runs are timed alone, not against indexing ~150 000
    # documents on the same database (indexing has its own tests above).
    dead = f"http://{harness.HOST}:{free_port()}"
    agg_config(env, dead, "clickloop-t-agg-bench", admin_port=free_port(),
               aggregation={"windows": ["1h", "1d"], "session_timeout": "30m"},
               mariadb={"read_timeout": "10m"})
    proc = env.start()

    def runs():
        return [tuple(map(int, m.groups())) for m in RUN_LINE.finditer(proc.log_text())]

    # The backlog: runs of at most CL_AGG_MAX_CLAIM events each, every one
    # costing what it claims.
    harness.wait_until(lambda: sum(r[0] for r in runs()) >= BENCH_EVENTS,
                       BENCH_FULL_RUN_DEADLINE_S,
                       f"the aggregation runs over {BENCH_EVENTS} events", interval=0.5,
                       check=proc.assert_running,
                       describe=lambda: f"statements running in MariaDB (id, s, text): "
                                        f"{statements_running(env.db)}; clickloop log ends "
                                        f"with:\n{proc.log_tail(5)}")
    backlog = runs()
    assert sum(r[0] for r in backlog) == BENCH_EVENTS, backlog
    backlog_ms = sum(r[4] for r in backlog)
    assert env.db.scalar("SELECT SUM(clicks) FROM agg_stats WHERE window_ms = %s",
                         (DAY,)) == BENCH_EVENTS

    # A full recompute (every window marked, as an operator does with the
    # statement `clickloop --recompute-sql` prints) changes no row: the
    # incremental history equals it.
    before = env.db.query("SELECT window_ms, window_start, url_hash, country, clicks, "
                          "unique_users, time_spent_sum, time_spent_samples, version "
                          "FROM agg_stats ORDER BY 1, 2, 3, 4")
    n_before = len(runs())
    printed = subprocess.run([str(env.binary), "--recompute-sql", str(env.config_path)],
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    env.db.query(printed.stdout.strip().rstrip(";"))
    n_marked = env.db.count("agg_dirty")
    # It marks exactly the windows that hold events, those with aggregates.
    assert n_marked == env.db.scalar("SELECT COUNT(*) FROM (SELECT DISTINCT window_ms, "
                                     "window_start FROM agg_stats) w"), n_marked
    # Each marked window is recomputed by exactly one run, which logs it.
    harness.wait_until(lambda: sum(r[1] for r in runs()[n_before:]) >= n_marked,
                       BENCH_FULL_RUN_DEADLINE_S, "the full recompute", interval=0.5,
                       check=proc.assert_running, describe=lambda: proc.log_tail(5))
    assert env.db.count("agg_dirty") == 0
    recompute = runs()[n_before:]
    full_ms = sum(r[4] for r in recompute)
    assert sum(r[3] for r in recompute) == 0, recompute
    assert env.db.query("SELECT window_ms, window_start, url_hash, country, clicks, "
                        "unique_users, time_spent_sum, time_spent_samples, version "
                        "FROM agg_stats ORDER BY 1, 2, 3, 4") == before
    full = (BENCH_EVENTS, sum(r[1] for r in recompute), sum(r[2] for r in recompute), 0)

    # 1 000 new events into the last day.
    n_before = len(runs())
    env.produce(bench_messages(BENCH_NEW_EVENTS, rng, T0 - DAY, DAY, "new"), record=False)
    harness.wait_until(lambda: sum(r[0] for r in runs()[n_before:]) >= BENCH_NEW_EVENTS, 120,
                       "the incremental run(s)", interval=0.2, check=proc.assert_running,
                       describe=lambda: proc.log_tail(10))
    incremental = runs()[n_before:]
    assert sum(r[0] for r in incremental) == BENCH_NEW_EVENTS, incremental
    inc_ms = sum(r[4] for r in incremental)
    assert env.db.scalar("SELECT SUM(clicks) FROM agg_stats WHERE window_ms = %s",
                         (DAY,)) == BENCH_EVENTS + BENCH_NEW_EVENTS
    assert env.db.scalar("SELECT SUM(clicks) FROM agg_stats WHERE window_ms = %s",
                         (HOUR,)) == BENCH_EVENTS + BENCH_NEW_EVENTS
    m = scrape_safe(proc, env)
    harness.report(request,
                   f"seed {seed}: produced {BENCH_EVENTS} events in {t_produced - t0:.1f}s, "
                   f"stored in {t_loaded - t_produced:.1f}s; backlog: {len(backlog)} runs, "
                   f"{backlog_ms} ms; full recompute of {n_marked} marked windows: "
                   f"{len(recompute)} runs, {full[1]} windows, {full[2]} scanned, 0 rows "
                   f"changed in {full_ms} ms; "
                   f"incremental: {len(incremental)} run(s) "
                   f"{[(r[0], r[1], r[2], r[3], r[4]) for r in incremental]} "
                   f"(events, windows, scanned, rows, ms) = {inc_ms} ms; ratio "
                   f"{full_ms / max(inc_ms, 1):.1f}{m}")
    assert inc_ms * BENCH_MIN_RATIO < full_ms, (
        f"incremental {inc_ms} ms is not below a fifth of the full recompute ({full_ms} ms)")
    proc.assert_running()


def scrape_safe(proc, env):
    """The run-duration histogram's count and sum, for the report."""
    try:
        port = int(json.loads(Path(env.config_path).read_text())["admin"]["listen"]
                   .rsplit(":", 1)[1])
        m = scrape(port)
        return (f"; clickloop_aggregation_run_duration_seconds count "
                f"{metric(m, 'clickloop_aggregation_run_duration_seconds_count'):.0f} sum "
                f"{metric(m, 'clickloop_aggregation_run_duration_seconds_sum'):.2f}s")
    except Exception as exc:
        return f"; (metrics not read: {exc!r})"
