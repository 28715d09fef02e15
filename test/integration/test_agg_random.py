"""Randomized aggregation test against an independent oracle.

A seeded generator builds a few hundred independent "cases", each a small
clickstream with users and URLs of its own (so cases never share a user, a
session or a document), and puts them all into one Kafka topic for one
clickloop process, one database and one Elasticsearch index. The oracle below
is plain Python written from the rules of include/clickloop/aggregate.h and
es_doc.h, not from the SQL:

- windows [start, start + size), start floored from the epoch;
- a user's events ordered by (event_time, row_key as bytes);
- an event's time spent is its own time_spent_ms when it has one, else the gap
  to the same user's next event (any URL) when that gap is at most the
  session timeout (inclusive), else none;
- "unknown" for an event without a country; URLs and users compared as bytes;
- row key "e:<event_id>", or "k:<topic>:<partition>:<offset>" for an event
  without event_id: a redelivered event_id is stored once, a keyless payload
  produced twice is two events, and a keyless message redelivered at the same
  offset (the group rewound) is stored once.

The cases mix many users and URLs (names differing only in case, trailing
spaces or Unicode normalisation, integer user ids also sent as strings), ties
across users and within one user in one millisecond (event ids and derived
keys whose byte order differs from their numeric order), quotes, backslashes
and control characters in ids and URLs, bursts, duplicates by event_id in
other serialisations, keyless events and keyless payloads sent
twice, gaps of exactly the session timeout and one millisecond either side,
events on window boundaries of every size, explicit time_spent_ms (0, large,
fractional), missing and NULL countries, every timestamp form the parser
takes. Windows: 1m, 45m (not a divisor of an hour), 1h, 1d, 7d (aligned to
the epoch, a Thursday); session timeout 5m; retention off. One case lies at
the epoch, one at the end of the DATETIME range (9999-12-31T23:59:59.999Z).

The run: the main stream settles (agg_pending empty, nothing needing
indexing), then every agg_stats row and every document equals the oracle and
there are no others. Two late batches follow (events minutes to days late,
into windows indexed already, each produced in parts while aggregation runs
go on); after each, again everything equals the oracle
and exactly the rows whose aggregate changed got a new version. Then the
group is rewound and part of the topic delivered again: nothing changes, not
even a version. Last, every window of every size holding an event is marked
in agg_dirty, as an operator would: the full recompute changes no row.

Settings (environment):
  CLICKLOOP_RANDOM_SEED   the seed (default: random; always printed)
  CLICKLOOP_RANDOM_CASES  cases in the stream (default 300: about 13 000
                          events, 46 000 documents)
  CLICKLOOP_RANDOM_ONLY   comma-separated case tags (e.g. c0012,c0107): run
                          only those cases of the seed's stream, to reduce a
                          failure (cases do not interact)

A longer run, e.g. before a release or after changing the aggregation SQL
(3000 cases: about 140 000 events, 470 000 documents, 12 minutes on the
plain build):
  CLICKLOOP_RANDOM_CASES=3000 CLICKLOOP_BIN=$PWD/build/clickloop \\
      .venv/bin/python -m pytest -q test/integration/test_agg_random.py

On a mismatch the assertion names the seed and the cases involved, and writes
each involved case's messages (JSON lines: phase, partition, offset, row key,
message) to /tmp/clickloop-agg-random-<seed>-*/.

Waits poll a condition against a deadline; nothing sleeps to let something
happen. Figures go through harness.report().
"""

import datetime as dt
import hashlib
import json
import math
import os
import random
import re
import tempfile
import time
import unicodedata
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import requests

import harness
from harness import Message

# ---------------------------------------------------------------- settings

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY

WINDOW_LABELS = ["1m", "45m", "1h", "1d", "7d"]
WINDOWS_MS = [MINUTE, 45 * MINUTE, HOUR, DAY, WEEK]
SESSION_TIMEOUT = "5m"
TIMEOUT_MS = 5 * MINUTE

DEFAULT_CASES = 300
LATE_BATCHES = 2

# Cases start within these days (2024-01-01 on), a fifth of them on one busy
# day so that many cases share every window there.
FIRST_DAY = 1_704_067_200_000          # 2024-01-01T00:00:00Z, a Monday
SPAN_DAYS = 120
BUSY_DAY = FIRST_DAY + 59 * DAY        # 2024-02-29
# The range of event times (event.h): the epoch to the last ms of 9999. Case
# 0 starts at the epoch, case 1 ends at the last millisecond.
TS_MAX = 253_402_300_799_999
# Integers below this are Unix seconds, at or above it milliseconds (event.h).
EPOCH_MS_FROM = 100_000_000_000

# avg_time_spent_ms is written with "%.3f" (es_doc.c) from a double division:
# the document holds the average rounded to 0.0005 ms, plus the division's and
# the parse's rounding (a few ulps). The exact sums are checked in agg_stats.
AVG_ROUNDING_MS = 0.0005

RUN_LINE = re.compile(r"aggregation run: (\d+) new events, (\d+) windows recomputed")

EPOCH = dt.datetime(1970, 1, 1)


def settings():
    seed_text = os.environ.get("CLICKLOOP_RANDOM_SEED")
    seed = int(seed_text) if seed_text else random.randrange(2**32)
    cases = int(os.environ.get("CLICKLOOP_RANDOM_CASES") or DEFAULT_CASES)
    only = {t.strip() for t in os.environ.get("CLICKLOOP_RANDOM_ONLY", "").split(",")
            if t.strip()}
    return seed, cases, only


def window_label(ms):
    """The label es_doc.h gives a window size: the largest unit dividing it."""
    for unit_ms, unit in ((DAY, "d"), (HOUR, "h"), (MINUTE, "m"), (SECOND, "s")):
        if ms % unit_ms == 0:
            return f"{ms // unit_ms}{unit}"
    return f"{ms}ms"


def floor_window(ms, size):
    return ms // size * size   # Python's // floors


def datetime_text(ms):
    """A DATETIME(3) literal (UTC)."""
    d = EPOCH + dt.timedelta(milliseconds=ms)
    return d.strftime("%Y-%m-%d %H:%M:%S") + f".{ms % 1000:03d}"


# ================================================================ the oracle

class StoredEvent:
    """One row of click_data as the rules see it."""
    __slots__ = ("row_key", "user", "ts", "url", "country", "spent")

    def __init__(self, row_key, user, ts, url, country, spent):
        self.row_key, self.user, self.ts = row_key, user, ts
        self.url, self.country, self.spent = url, country, spent

    def same_event(self, other):
        return (self.user, self.ts, self.url, self.country, self.spent) == \
            (other.user, other.ts, other.url, other.country, other.spent)


def time_spent(events, timeout_ms=TIMEOUT_MS):
    """{row_key: ms or None}: own time_spent_ms, else the gap to the same
    user's next event in (ts, row_key bytes) order when at most the timeout."""
    by_user = defaultdict(list)
    for e in events:
        by_user[e.user.encode()].append(e)
    spent = {}
    for evs in by_user.values():
        evs.sort(key=lambda e: (e.ts, e.row_key))
        for i, e in enumerate(evs):
            if e.spent is not None:
                spent[e.row_key] = e.spent
            elif i + 1 < len(evs) and evs[i + 1].ts - e.ts <= timeout_ms:
                spent[e.row_key] = evs[i + 1].ts - e.ts
            else:
                spent[e.row_key] = None
    return spent


class Aggregate:
    """What agg_stats holds for one (window size, start, URL, country)."""
    __slots__ = ("window_ms", "start", "url", "country", "clicks", "users", "spent_sum",
                 "samples")

    def __init__(self, window_ms, start, url, country):
        self.window_ms, self.start, self.url, self.country = window_ms, start, url, country
        self.clicks, self.users, self.spent_sum, self.samples = 0, set(), 0, 0

    @property
    def values(self):
        return (self.clicks, len(self.users), self.spent_sum, self.samples)

    @property
    def url_sha256(self):
        return hashlib.sha256(self.url.encode()).hexdigest()

    @property
    def doc_id(self):
        return f"{window_label(self.window_ms)}:{self.start}:{self.country}:{self.url_sha256}"

    def document(self):
        """The document's _source fields as es_doc.h describes them (all but
        updated_at)."""
        return {"window": window_label(self.window_ms), "window_start": self.start,
                "window_end": self.start + self.window_ms, "url": self.url,
                "url_sha256": self.url_sha256, "country": self.country,
                "clicks": self.clicks, "unique_users": len(self.users),
                "time_spent_samples": self.samples,
                "avg_time_spent_ms": self.spent_sum / self.samples if self.samples else None}


def oracle(events, windows_ms=WINDOWS_MS, timeout_ms=TIMEOUT_MS):
    """{document id: Aggregate} of the stored events."""
    spent = time_spent(events, timeout_ms)
    out = {}
    for e in events:
        s = spent[e.row_key]
        for w in windows_ms:
            a = Aggregate(w, floor_window(e.ts, w), e.url, e.country)
            a = out.setdefault(a.doc_id, a)
            a.clicks += 1
            a.users.add(e.user.encode())
            if s is not None:
                a.spent_sum += s
                a.samples += 1
    return out


# ================================================================ the generator

GEO_CODES = ["DE", "FR", "US", "JP", "BR", "IN", "NL"]
UNKNOWN_FORMS = ["absent", "null", "city-only", "null-with-city"]


class Event:
    """A logical event of a case: what its stored row holds, minus the row key
    (known for a keyless event only once it is produced)."""
    __slots__ = ("case", "event_id", "user", "ts", "url", "geo", "spent", "spent_wire")

    def __init__(self, case, event_id, user, ts, url, geo, spent=None, spent_wire=None):
        self.case = case
        self.event_id = event_id
        self.user = user                 # (identity text, [JSON values that mean it])
        self.ts = ts
        self.url = url
        self.geo = geo                   # a code, or one of UNKNOWN_FORMS
        self.spent = spent               # int or None
        self.spent_wire = spent_wire     # the JSON value sent (an int or a float)

    @property
    def country(self):
        return self.geo if self.geo in GEO_CODES else "unknown"

    @property
    def user_id(self):
        return self.user[0]


class Delivery:
    """One Kafka message carrying an event; partition and offset are known
    after producing."""
    __slots__ = ("event", "value", "partition", "offset", "phase")

    def __init__(self, event, value, partition, phase):
        self.event, self.value, self.partition, self.phase = event, value, partition, phase
        self.offset = None

    def row_key(self, topic):
        if self.event.event_id is not None:
            return b"e:" + self.event.event_id.encode()
        return f"k:{topic}:{self.partition}:{self.offset}".encode()

    def stored(self, topic):
        e = self.event
        return StoredEvent(self.row_key(topic), e.user_id, e.ts, e.url, e.country, e.spent)


def float_seconds_text(ms):
    """Unix seconds with a fraction that the parser (event.h: x 1000, 0.5 us
    allowance, truncated) reads back as ms, or None."""
    text = repr(ms / 1000)
    v = float(text)
    t = v if v >= 1e11 else v * 1000.0
    return text if math.floor(t + 0.0005) == ms else None


class RawNumber(str):
    """A JSON number to be written exactly as this text (serialise())."""


def wire_timestamp(rng, ms):
    """The instant ms in one of the timestamp forms of event.h: RFC 3339 with
    Z, z, an offset with or without a colon, "+00:00"/"-00:00", a lower-case
    t or a space, no fraction or digits past the millisecond (cut), a leap
    second for :59.999; Unix milliseconds, whole seconds, or seconds with a
    fraction."""
    form = rng.randrange(10)
    if form == 6 and ms >= EPOCH_MS_FROM:
        return ms
    if form in (6, 7) and ms % 1000 == 0 and ms // 1000 < EPOCH_MS_FROM:
        return ms // 1000
    if form == 8:
        text = float_seconds_text(ms)
        if text is not None:
            return RawNumber(text)
    offset_min = rng.choice([60, 120, 330, -300, -570, 14 * 60, -12 * 60]) \
        if form in (1, 2) else 0
    if not 0 <= ms + offset_min * MINUTE <= TS_MAX:
        offset_min = 0      # the local date must lie in 1970..9999 too
    d = EPOCH + dt.timedelta(milliseconds=ms + offset_min * MINUTE)
    sep = {3: "t", 4: " "}.get(form, "T")
    if ms % MINUTE == MINUTE - 1 and rng.random() < 0.4:
        # A leap second: ":60" (any fraction) is :59.999 of the minute.
        text = d.strftime(f"%Y-%m-%d{sep}%H:%M:60") + rng.choice(["", ".0", ".5", ".999999"])
    else:
        text = d.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
        if form == 5:
            text += f".{ms % 1000:03d}{rng.randrange(1000):03d}"
        elif ms % 1000 != 0 or rng.random() < 0.5:
            text += f".{ms % 1000:03d}"
    if form == 9:
        return text + rng.choice(["+00:00", "-00:00"])
    if offset_min == 0:
        return text + ("z" if form == 3 else "Z")
    sign = "-" if offset_min < 0 else "+"
    hh, mm = divmod(abs(offset_min), 60)
    return text + (f"{sign}{hh:02d}{mm:02d}" if form == 2 else f"{sign}{hh:02d}:{mm:02d}")


def serialise(rng, obj):
    """JSON text of obj with random key order, spacing and escaping."""
    items = list(obj.items())
    rng.shuffle(items)
    ascii_only = rng.random() < 0.4
    colon, comma = (": ", ", ") if rng.random() < 0.3 else (":", ",")
    parts = []
    for k, v in items:
        val = str(v) if isinstance(v, RawNumber) else json.dumps(v, ensure_ascii=ascii_only)
        parts.append(json.dumps(k) + colon + val)
    return ("{" + comma.join(parts) + "}").encode()


def payload(rng, e):
    """A message for event e, in a random one of the forms that mean it."""
    obj = {"user_id": rng.choice(e.user[1]), "timestamp": wire_timestamp(rng, e.ts),
           "url": e.url}
    if e.event_id is not None:
        obj["event_id"] = e.event_id
    if e.geo in GEO_CODES:
        obj["country"] = rng.choice([e.geo, e.geo.lower(), e.geo[0] + e.geo[1].lower()])
        if rng.random() < 0.5:
            obj["city"] = rng.choice(["Springfield", "Zürich", "東京"])
    elif e.geo == "null":
        obj["country"] = None
    elif e.geo == "city-only":
        obj["city"] = "Nowhere"
    elif e.geo == "null-with-city":
        obj["country"] = None
        obj["city"] = "Somewhere"
    if e.spent is not None:
        obj["time_spent_ms"] = e.spent_wire
    elif rng.random() < 0.2:
        obj["time_spent_ms"] = None        # null means absent
    if rng.random() < 0.3:
        obj["browser"] = "Firefox"
    if rng.random() < 0.2:
        obj["ignored_member"] = {"nested": [1, 2]}
    return serialise(rng, obj)


def random_spent(rng):
    """(stored ms, JSON value) of an explicit time_spent_ms."""
    kind = rng.randrange(6)
    if kind == 0:
        return 0, 0
    if kind == 1:
        return 0, 0.25                          # rounds to 0: still a sample
    if kind == 2:
        v = rng.randrange(1, 10**12 + 1)
        return v, v
    if kind == 3:
        whole = rng.randrange(0, 600_000)
        frac = rng.choice([0.1, 0.25, 0.75, 0.9])
        return whole + (1 if frac > 0.5 else 0), whole + frac
    v = rng.randrange(1, 900_000)
    return v, v


# Gaps between a user's consecutive clicks in a generated session.
GAPS = [0, 1, 2, 999, 1000, 30_000, TIMEOUT_MS - 1, TIMEOUT_MS, TIMEOUT_MS + 1,
        2 * TIMEOUT_MS, MINUTE - 1, MINUTE, 7 * MINUTE, HOUR, DAY + 1]


class Case:
    """One independent clickstream: its users, URLs and events all carry the
    case's tag."""

    def __init__(self, rng, index):
        self.rng = rng
        self.index = index
        self.tag = f"c{index:04d}"
        self.events = []          # every Event generated, in order
        self.seq = 0
        self.users = self._make_users()
        self.urls = self._make_urls()
        self.home = {u[0]: rng.choice(GEO_CODES + UNKNOWN_FORMS) for u in self.users}
        if index == 0:
            self.base = rng.randrange(0, HOUR)
        elif index == 1:
            self.base = TS_MAX - rng.randrange(0, 6 * HOUR)
        elif rng.random() < 0.2:
            self.base = BUSY_DAY + rng.randrange(0, 20 * HOUR)
        elif rng.random() < 0.15:
            # Just before a 7d boundary (the epoch's Thursdays).
            week = floor_window(FIRST_DAY + rng.randrange(SPAN_DAYS) * DAY, WEEK) + WEEK
            self.base = week - rng.randrange(1, 3 * HOUR)
        else:
            self.base = FIRST_DAY + rng.randrange(SPAN_DAYS) * DAY + rng.randrange(DAY)

    # -- names

    def _make_users(self):
        rng, tag = self.rng, self.tag
        users = []
        for j in range(rng.randint(2, 5)):
            users.append((f"{tag}-u{j}", [f"{tag}-u{j}"]))
        extra = rng.sample(["case", "space", "nfd", "int", "unicode", "escapes"],
                           rng.randint(1, 3))
        for kind in extra:
            if kind == "case":
                users += [(f"{tag}-Ann", [f"{tag}-Ann"]), (f"{tag}-ann", [f"{tag}-ann"])]
            elif kind == "space":
                users += [(f"{tag}-pad", [f"{tag}-pad"]), (f"{tag}-pad ", [f"{tag}-pad "])]
            elif kind == "nfd":
                nfc = f"{tag}-Zoé"
                nfd = unicodedata.normalize("NFD", nfc)
                users += [(nfc, [nfc]), (nfd, [nfd])]
            elif kind == "int":
                n = 10**9 + self.index * 100 + rng.randrange(100)
                users.append((str(n), [n, str(n)]))   # the integer is stored as its text
            elif kind == "unicode":
                users.append((f"{tag}-ユーザー-😀", [f"{tag}-ユーザー-😀"]))
            else:
                users += [(x, [x]) for x in (f"{tag}-o'brien", f"{tag}-back\\slash\"",
                                             f"{tag}-tab\tnl\n")]
        return users

    def _make_urls(self):
        rng, tag = self.rng, self.tag
        root = f"https://shop.test/{tag}"
        urls = [f"{root}/p{j}" for j in range(rng.randint(2, 4))]
        extra = rng.sample(["case", "slash", "space", "utf8", "escaped", "long", "odd"],
                           rng.randint(1, 3))
        for kind in extra:
            if kind == "case":
                urls += [f"{root}/Item", f"{root}/item"]
            elif kind == "slash":
                urls += [f"{root}/dir", f"{root}/dir/"]
            elif kind == "space":
                urls += [f"{root}/pad", f"{root}/pad "]
            elif kind == "utf8":
                urls += [f"{root}/ü?q=ñ", unicodedata.normalize("NFD", f"{root}/ü?q=ñ")]
            elif kind == "escaped":
                urls += [f"{root}/%C3%BC", f"{root}/%c3%bc"]
            elif kind == "odd":
                # What SQL and JSON must escape, and what JSON may leave raw.
                urls += [f"{root}/q?a=\"b\"&c=\\d'e", f"{root}/tab\tnl\n\x01\x7f",
                         f"{root}/\u2028\u2029😀"]
            elif rng.random() < 0.5:
                n = rng.randrange(2_000, 12_000)
                urls.append(f"{root}/search?q=" + "".join(
                    "abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + n) % 36] for i in range(n)))
        return urls

    # -- events

    def next_id(self, keyless_p=0.15):
        """A fresh event id (None: keyless). Ids of one case differ in digit
        count, so byte order and numeric order disagree."""
        if self.rng.random() < keyless_p:
            return None
        self.seq += 1
        return f"{self.tag}-{self.seq}"

    def add(self, user, ts, url=None, geo=None, spent="random", event_id="fresh"):
        rng = self.rng
        if event_id == "fresh":
            event_id = self.next_id()
        if geo is None:
            geo = self.home[user[0]] if rng.random() < 0.8 else rng.choice(GEO_CODES
                                                                           + UNKNOWN_FORMS)
        value = wire = None
        if spent == "random":
            if rng.random() < 0.2:
                value, wire = random_spent(rng)
        elif spent is not None:
            value, wire = spent, spent
        ts = min(max(ts, 0), TS_MAX)       # the epoch and end-of-time cases
        e = Event(self, event_id, user, ts, url or rng.choice(self.urls), geo, value, wire)
        self.events.append(e)
        return e

    def user(self):
        return self.rng.choice(self.users)

    def main_events(self):
        """The case's events for the main stream."""
        rng, t0 = self.rng, self.base
        if t0 < DAY:
            self.add(self.user(), 0, spent=None)       # 1970-01-01T00:00:00.000Z
        if t0 > TS_MAX - DAY:
            self.add(self.user(), TS_MAX, spent=None)  # 9999-12-31T23:59:59.999Z
        for u in self.users:                       # sessions
            t = t0 + rng.randrange(0, 4 * HOUR)
            for _ in range(rng.randint(1, 6)):
                self.add(u, t)
                t += rng.choice(GAPS) if rng.random() < 0.7 else rng.randrange(2 * TIMEOUT_MS)
        # Gaps at the session timeout and one ms either side, on one user.
        u, t = self.user(), t0 + rng.randrange(0, HOUR)
        for gap in rng.sample([TIMEOUT_MS - 1, TIMEOUT_MS, TIMEOUT_MS + 1], 3):
            self.add(u, t, spent=None)
            t += gap
        self.add(u, t, spent=None)
        # Window boundaries: the last ms before one and the first ms of it,
        # a dwell across it, for a random window size.
        w = rng.choice(WINDOWS_MS)
        b = floor_window(t0, w) + w
        u1, u2 = rng.sample(self.users, 2)
        self.add(u1, b - 1, spent=None)
        self.add(u2, b, spent=None)
        self.add(u1, b + rng.choice([0, 1, TIMEOUT_MS - 1, TIMEOUT_MS]), spent=None)
        if rng.random() < 0.5:                     # several users in one ms
            t = t0 + rng.randrange(0, 3 * HOUR)
            for u in rng.sample(self.users, rng.randint(2, len(self.users))):
                self.add(u, t)
        if rng.random() < 0.6:                     # one user, several events in one ms
            # Ids whose byte order is not their numeric order ("-10" < "-9"),
            # and UTF-8 ones, whose bytes sort after every ASCII letter.
            u, t = self.user(), t0 + rng.randrange(0, 3 * HOUR)
            self.seq += 1
            for n in rng.sample([1, 2, 9, 10, 11, 100, "Z", "a", "é", "😀", "o'k", "b\\s"],
                                rng.randint(2, 4)):
                self.add(u, t, event_id=f"{self.tag}-t{self.seq}-{n}", spent=None)
            self.add(u, t + rng.choice([1, 1000, TIMEOUT_MS]), spent=None)
        if rng.random() < 0.3:                     # event ids differing only in case
            u, t = self.user(), t0 + rng.randrange(0, 3 * HOUR)
            self.seq += 1
            self.add(u, t, event_id=f"{self.tag}-x{self.seq}", spent=None)
            self.add(u, t, event_id=f"{self.tag}-X{self.seq}", spent=None)
            self.add(u, t + 10, spent=None)
        if rng.random() < 0.25:                    # a burst
            users = rng.sample(self.users, rng.randint(1, 2))
            t = t0 + rng.randrange(0, 3 * HOUR)
            for _ in range(rng.randint(10, 30)):
                self.add(rng.choice(users), t + rng.randrange(0, rng.choice([3, 50, 2000])))
        return list(self.events)

    # -- late events

    def latest_of(self, user_id):
        evs = [e for e in self.events if e.user_id == user_id]
        return max(evs, key=lambda e: e.ts) if evs else None

    def late_events(self, kind):
        """Events for a late batch, chosen relative to the events so far."""
        rng = self.rng
        known = list(self.events)
        first = min(e.ts for e in known)
        last = max(e.ts for e in known)
        pick = rng.choice(known)
        u = pick.user
        out = []
        if kind == "between":
            mine = sorted((e.ts for e in known if e.user_id == u[0]))
            i = rng.randrange(len(mine))
            hi = mine[i + 1] if i + 1 < len(mine) else mine[i] + TIMEOUT_MS
            out.append(self.add(u, rng.randint(mine[i], hi)))
        elif kind == "after_exact":
            out.append(self.add(u, pick.ts + rng.choice([TIMEOUT_MS - 1, TIMEOUT_MS,
                                                         TIMEOUT_MS + 1]), spent=None))
        elif kind == "before_exact":
            out.append(self.add(u, pick.ts - rng.choice([TIMEOUT_MS - 1, TIMEOUT_MS,
                                                         TIMEOUT_MS + 1]), spent=None))
        elif kind == "same_ms":
            out.append(self.add(u, pick.ts, spent=None))
        elif kind == "interleave":
            # Several late clicks inside one user's session, aggregated in
            # one run or in consecutive ones.
            mine = [e.ts for e in known if e.user_id == u[0]]
            lo, hi = min(mine) - MINUTE, max(mine) + MINUTE
            for _ in range(rng.randint(2, 4)):
                out.append(self.add(u, rng.randint(lo, hi)))
        elif kind == "extend_last":
            # A user's last click gains a dwell time from a click on another
            # URL: its documents change without a click more.
            lasts = [self.latest_of(x[0]) for x in self.users]
            p = rng.choice([x for x in lasts if x is not None and x.spent is None]
                           or [x for x in lasts if x is not None])
            u = p.user
            others = [x for x in self.urls if x != p.url]
            out.append(self.add(u, p.ts + rng.randint(1, TIMEOUT_MS), url=rng.choice(others)))
        elif kind == "days_late":
            t = first - rng.randrange(1, 20) * DAY - rng.randrange(DAY)
            for _ in range(rng.randint(1, 3)):
                out.append(self.add(u, t))
                t += rng.choice(GAPS[:10])
        elif kind == "minutes_late":
            out.append(self.add(self.user(), last - rng.randrange(MINUTE, 30 * MINUTE)))
        elif kind == "boundary":
            w = rng.choice(WINDOWS_MS)
            b = floor_window(rng.randint(first, last), w)
            out.append(self.add(self.user(), b, spent=None))
            out.append(self.add(self.user(), b - 1, spent=None))
        elif kind == "new_user":
            self.seq += 1
            nu = (f"{self.tag}-late{self.seq}", [f"{self.tag}-late{self.seq}"])
            self.users.append(nu)
            self.home[nu[0]] = rng.choice(GEO_CODES + UNKNOWN_FORMS)
            out.append(self.add(nu, rng.randint(first, last)))
        return out


LATE_KINDS = ["between", "after_exact", "before_exact", "same_ms", "interleave",
              "extend_last", "days_late", "minutes_late", "boundary", "new_user",
              "duplicate", "keyless_again"]
# A late batch is produced in this many parts, one after the other without
# waiting, so that aggregation runs start while parts are still arriving.
LATE_PARTS = 6


class Stream:
    """Every case of a run and the messages that carry their events. All of
    it follows from the seed: generate every batch before producing any."""

    def __init__(self, rng, n_cases, only=()):
        self.rng = rng
        self.cases = [Case(rng, i) for i in range(n_cases)]
        self.only = set(only)

    def _deliver(self, event, phase, partition=None):
        p = self.rng.randrange(harness.DEFAULT_PARTITIONS) if partition is None else partition
        return Delivery(event, payload(self.rng, event), p, phase)

    def _keep(self, deliveries):
        if not self.only:
            return deliveries
        return [d for d in deliveries if d.event.case.tag in self.only]

    def main_batch(self):
        rng = self.rng
        out = []
        for case in self.cases:
            for e in case.main_events():
                out.append(self._deliver(e, "main"))
                if e.event_id is not None and rng.random() < 0.06:
                    out.append(self._deliver(e, "main"))          # delivered again
                elif e.event_id is None and rng.random() < 0.2:
                    out.append(self._deliver(e, "main"))          # a second keyless event
        rng.shuffle(out)
        # Partition 0 begins with seven messages, then, three times, two
        # keyless events of one user in one millisecond on two URLs: at
        # offsets 7-9 and 10-12, so "k:<topic>:0:10" sorts before
        # "k:<topic>:0:7" as bytes, against the offsets' order.
        pairs = []
        for case in rng.sample(self.cases, min(3, len(self.cases))):
            u, t = case.user(), case.base + 5 * HOUR + rng.randrange(HOUR)
            a = case.add(u, t, url=case.urls[0], spent=None, event_id=None)
            b = case.add(u, t, url=case.urls[1], spent=None, event_id=None)
            c = case.add(u, t + rng.randrange(1, TIMEOUT_MS), spent=None)
            pairs.append((a, b, c))
        front, rest = out[:7], out[7:]
        for d in front:
            d.partition = 0
        front += [self._deliver(a, "main", 0) for a, _, _ in pairs]
        front += [self._deliver(b, "main", 0) for _, b, _ in pairs]
        rest += [self._deliver(c, "main") for _, _, c in pairs]
        return self._keep(front + rest)

    def late_batch(self, number):
        """Late events for some of the cases (every kind at least once when
        there are enough cases)."""
        rng = self.rng
        n = min(len(self.cases), max(len(LATE_KINDS), len(self.cases) * 2 // 5))
        out = []
        phase = f"late{number}"
        for i, case in enumerate(rng.sample(self.cases, n)):
            kinds = [LATE_KINDS[i % len(LATE_KINDS)]] + rng.sample(LATE_KINDS,
                                                                   rng.randint(0, 2))
            for kind in kinds:
                if kind == "duplicate":
                    keyed = [e for e in case.events if e.event_id is not None]
                    out.append(self._deliver(rng.choice(keyed), phase))
                elif kind == "keyless_again":
                    keyless = [e for e in case.events if e.event_id is None]
                    if keyless:
                        out.append(self._deliver(rng.choice(keyless), phase))
                else:
                    out += [self._deliver(e, phase) for e in case.late_events(kind)]
        rng.shuffle(out)
        return self._keep(out)


def stored_rows(sent, topic):
    """{row_key: StoredEvent} of the messages sent: a row key seen again (the
    same event_id, or the same offset) is one row."""
    rows = {}
    for d in sent:
        s = d.stored(topic)
        old = rows.setdefault(s.row_key, s)
        assert old.same_event(s), f"generator bug: {s.row_key!r} sent with two contents"
    return rows


# ================================================================ coverage

def coverage(sent, rows):
    """Which edges the data holds, counted (guards against a generator that
    silently stops producing one)."""
    seen = defaultdict(int)
    by_user = defaultdict(list)
    for r in rows.values():
        by_user[r.user].append(r)
    for evs in by_user.values():
        evs.sort(key=lambda e: (e.ts, e.row_key))
        for a, b in zip(evs, evs[1:]):
            gap = b.ts - a.ts
            if a.spent is None:
                for name, g in (("gap = timeout", TIMEOUT_MS), ("gap = timeout - 1",
                                TIMEOUT_MS - 1), ("gap = timeout + 1", TIMEOUT_MS + 1)):
                    if gap == g:
                        seen[name] += 1
            if gap == 0:
                seen["one user, one ms"] += 1
                if a.row_key.startswith(b"k:") and b.row_key.startswith(b"k:"):
                    off_a = int(a.row_key.rsplit(b":", 1)[1])
                    off_b = int(b.row_key.rsplit(b":", 1)[1])
                    if off_a > off_b and a.url != b.url:
                        seen["keyless tie, byte order against offset order"] += 1
                elif a.row_key.startswith(b"e:") and b.row_key.startswith(b"e:"):
                    if len(a.row_key) > len(b.row_key) and a.url != b.url:
                        seen["keyed tie, byte order against numeric order"] += 1
    users_per_ms = defaultdict(set)
    for r in rows.values():
        users_per_ms[r.ts].add(r.user)
        for w in WINDOWS_MS:
            if r.ts % w == 0:
                seen[f"at a {window_label(w)} boundary"] += 1
        if r.spent == 0:
            seen["time_spent_ms 0"] += 1
        if r.spent is not None and r.spent > 10**9:
            seen["time_spent_ms > 1e9"] += 1
        if r.country == "unknown":
            seen["unknown country"] += 1
        if r.ts == 0:
            seen["at the epoch"] += 1
        if r.ts == TS_MAX:
            seen["at the last millisecond of 9999"] += 1
    seen["users sharing one ms"] = sum(1 for us in users_per_ms.values() if len(us) > 1)
    per_key = defaultdict(int)
    for d in sent:
        if d.event.event_id is not None:
            per_key[d.event.event_id] += 1
    seen["event_id delivered twice"] = sum(1 for n in per_key.values() if n > 1)
    keyless_same = defaultdict(int)
    for r in rows.values():
        if r.row_key.startswith(b"k:"):
            keyless_same[(r.user, r.ts, r.url, r.country, r.spent)] += 1
    seen["keyless payload stored twice"] = sum(1 for n in keyless_same.values() if n > 1)
    return seen


REQUIRED_EDGES = [
    "gap = timeout", "gap = timeout - 1", "gap = timeout + 1", "one user, one ms",
    "keyless tie, byte order against offset order",
    "keyed tie, byte order against numeric order", "users sharing one ms",
    "time_spent_ms 0", "time_spent_ms > 1e9", "unknown country", "event_id delivered twice",
    "keyless payload stored twice", "at the epoch",
    "at the last millisecond of 9999",
] + [f"at a {window_label(w)} boundary" for w in WINDOWS_MS]


# ================================================================ reading the results

class Index:
    """The one Elasticsearch index of the run. Reads retry while the node
    does not answer (other tests on the shared servers may restart it), up to
    a deadline."""

    UNREACHABLE_FOR_S = 180

    def __init__(self, base, name):
        self.base, self.name = base, name
        self.http = requests.Session()

    def _answering(self, call):
        deadline = time.monotonic() + self.UNREACHABLE_FOR_S
        while True:
            try:
                return call()
            except requests.ConnectionError as exc:
                if time.monotonic() >= deadline:
                    raise AssertionError(f"Elasticsearch at {self.base} did not answer for "
                                         f"{self.UNREACHABLE_FOR_S}s: {exc}") from exc
                time.sleep(1)   # waiting for the node to answer again

    def count(self):
        return self._answering(self._count)

    def documents(self):
        return self._answering(self._documents)

    def _count(self):
        self.http.post(f"{self.base}/{self.name}/_refresh", timeout=60).raise_for_status()
        r = self.http.get(f"{self.base}/{self.name}/_count", timeout=60)
        r.raise_for_status()
        return r.json()["count"]

    def _documents(self):
        """{id: (index, _version, _source)} of every document, by scrolling."""
        self.http.post(f"{self.base}/{self.name}/_refresh", timeout=60).raise_for_status()
        r = self.http.post(f"{self.base}/{self.name}/_search", params={"scroll": "2m"},
                           json={"size": 5000, "version": True, "sort": ["_doc"]}, timeout=120)
        r.raise_for_status()
        body = r.json()
        docs = {}
        scroll = body.get("_scroll_id")
        try:
            while body["hits"]["hits"]:
                for h in body["hits"]["hits"]:
                    assert h["_id"] not in docs, f"document {h['_id']} returned twice"
                    docs[h["_id"]] = (h["_index"], h["_version"], h["_source"])
                r = self.http.post(f"{self.base}/_search/scroll",
                                   json={"scroll": "2m", "scroll_id": scroll}, timeout=120)
                r.raise_for_status()
                body = r.json()
                scroll = body.get("_scroll_id", scroll)
        finally:
            if scroll:
                try:
                    self.http.delete(f"{self.base}/_search/scroll", json={"scroll_id": scroll},
                                     timeout=30)
                except requests.RequestException:
                    pass   # it expires by itself
        return docs

    def delete(self):
        self.http.delete(f"{self.base}/{self.name}", timeout=60)


class Row:
    __slots__ = ("values", "version", "indexed_version", "needs_index", "index_error", "url",
                 "country", "updated_at")


def stats_rows(db):
    """{document id: Row} of agg_stats, the id made from the row's key."""
    out = {}
    for (w, start, h, country, url, clicks, users, spent, samples, version, indexed, needs,
         error, updated_at) in db.query(
            "SELECT window_ms, TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', "
            "window_start) DIV 1000, LOWER(HEX(url_hash)), country, url, clicks, unique_users, "
            "time_spent_sum, time_spent_samples, version, indexed_version, needs_index, "
            "index_error, TIMESTAMPDIFF(MICROSECOND, TIMESTAMP'1970-01-01 00:00:00', "
            "updated_at) DIV 1000 FROM agg_stats"):
        r = Row()
        r.values = (int(clicks), int(users), int(spent), int(samples))
        r.version, r.indexed_version = int(version), int(indexed)
        r.needs_index, r.index_error, r.url, r.country = int(needs), error, url, country
        r.updated_at = int(updated_at)
        out[f"{window_label(int(w))}:{int(start)}:{country}:{h}"] = r
    return out


def avg_close(got, want):
    return abs(got - want) <= AVG_ROUNDING_MS + 8 * math.ulp(want)


def document_problems(index_name, want_doc, got):
    """Differences between one document and the oracle's."""
    problems = []
    index, _, source = got
    if index != index_name:
        problems.append(f"in index {index}")
    expected_fields = set(want_doc) | {"updated_at"}
    if set(source) != expected_fields:
        problems.append(f"fields {sorted(set(source) ^ expected_fields)} differ")
    for f, w in want_doc.items():
        g = source.get(f)
        if f == "avg_time_spent_ms":
            if (g is None) != (w is None) or (w is not None and not avg_close(g, w)):
                problems.append(f"avg_time_spent_ms {g!r}, want {w!r}")
        elif g != w or type(g) is not type(w):
            problems.append(f"{f} {str(g)[:60]!r}, want {str(w)[:60]!r}")
    return problems


# ================================================================ the run

class Run:
    """The world of the randomized test: environment, index, stream, and the
    checks, with enough context in every failure to reproduce it."""

    def __init__(self, env, index, stream, seed):
        self.env, self.index, self.stream, self.seed = env, index, stream, seed
        self.proc = None
        self.sent = []            # the deliveries produced so far
        self._case_of_hash = None
        self.dump_dir = None
        self.checking_s = 0.0     # time spent reading and comparing

    # -- Kafka and clickloop

    def produce(self, deliveries):
        messages = [Message(d.value, partition=d.partition) for d in deliveries]
        self.env.produce(messages)
        for d, m in zip(deliveries, messages):
            assert m.partition == d.partition
            d.offset = m.offset
        self.sent += deliveries

    def rows(self):
        return stored_rows(self.sent, self.env.topic)

    def settle(self, what, timeout=180):
        """Every stored event in click_data, the group at the end of the
        topic, nothing pending, nothing to index."""
        rows = self.rows()
        self.env.wait_caught_up(len(rows), 0, timeout=timeout, proc=self.proc)
        db = self.env.db

        def quiet():
            return (db.count("agg_pending") == 0 and db.count("agg_dirty") == 0
                    and db.table_exists("agg_stats")
                    and db.scalar("SELECT COUNT(*) FROM agg_stats WHERE needs_index = 1") == 0)
        harness.wait_until(quiet, timeout, f"aggregation and indexing to settle ({what})",
                           interval=0.3, check=self.proc.assert_running,
                           describe=lambda: self.proc.log_tail(15))
        return rows

    def run_lines(self, since=0):
        return [tuple(map(int, m.groups()))
                for m in RUN_LINE.finditer(self.proc.log_text()[since:])]

    # -- checks

    def check(self, what, rows):
        """agg_stats and the index equal the oracle of `rows`, exactly; every
        row is indexed at its version. Returns ({id: Aggregate}, {id: Row})."""
        t0 = time.monotonic()
        try:
            return self._check(what, rows)
        finally:
            self.checking_s += time.monotonic() - t0

    def _check(self, what, rows):
        want = oracle(rows.values())
        got_rows = stats_rows(self.env.db)
        docs = self.index.documents()
        problems = defaultdict(list)
        for i in set(want) - set(got_rows):
            problems[i].append("no agg_stats row")
        for i in set(got_rows) - set(want):
            problems[i].append(f"unexpected agg_stats row {got_rows[i].values}")
        for i in set(want) - set(docs):
            problems[i].append("no document")
        for i in set(docs) - set(want):
            problems[i].append(f"unexpected document {docs[i][2]}")
        for i, a in want.items():
            r = got_rows.get(i)
            if r is not None:
                if r.values != a.values:
                    problems[i].append(f"agg_stats (clicks, users, sum, samples) {r.values}, "
                                       f"want {a.values}")
                if r.url != a.url or r.country != a.country:
                    problems[i].append(f"agg_stats url/country {r.url[:60]!r}/{r.country!r}")
                if r.needs_index or r.indexed_version != r.version or r.index_error:
                    problems[i].append(f"not indexed: needs_index {r.needs_index}, version "
                                       f"{r.version}, indexed {r.indexed_version}, error "
                                       f"{r.index_error!r}")
            if i in docs:
                for p in document_problems(self.index.name, a.document(), docs[i]):
                    problems[i].append(p)
                if r is not None and docs[i][1] != r.version:
                    problems[i].append(f"_version {docs[i][1]}, agg_stats.version {r.version}")
                if r is not None and docs[i][2].get("updated_at") != r.updated_at:
                    problems[i].append(f"updated_at {docs[i][2].get('updated_at')}, "
                                       f"agg_stats.updated_at {r.updated_at}")
        count = self.index.count()
        if count != len(want):
            problems["(index)"].append(f"{count} documents, want {len(want)}")
        if problems:
            raise AssertionError(self.explain(what, problems))
        return want, got_rows

    def check_versions(self, what, want_before, rows_before, want_after, rows_after):
        """Exactly the rows whose aggregate changed got a new (greater)
        version; the others kept theirs (aggregate.h: a run writes the rows
        that changed)."""
        changed = {i for i, a in want_after.items()
                   if i not in want_before or want_before[i].values != a.values}
        problems = defaultdict(list)
        for i, r in rows_after.items():
            old = rows_before.get(i)
            if i in changed and old is not None and r.version <= old.version:
                problems[i].append(f"changed {old.values} -> {r.values} but version "
                                   f"{old.version} -> {r.version}")
            if i not in changed and (old is None or (r.version, r.updated_at)
                                     != (old.version, old.updated_at)):
                problems[i].append(f"unchanged {r.values} but (version, updated_at) "
                                   f"{old and (old.version, old.updated_at)} -> "
                                   f"{(r.version, r.updated_at)}")
        if problems:
            raise AssertionError(self.explain(what, problems))
        dwell_only = [i for i in changed if i in want_before
                      and want_before[i].clicks == want_after[i].clicks]
        return changed, dwell_only

    def explain(self, what, problems):
        """A failure message naming the seed and the cases, with each case's
        messages written to a file."""
        cases = defaultdict(list)
        for i, msgs in problems.items():
            cases[self.case_of(i)].append(f"{i}: {'; '.join(msgs)}")
        tags = sorted(c for c in cases if c)
        lines = [f"{what}: {len(problems)} aggregate(s) of {len(tags)} case(s) differ from "
                 f"the oracle (CLICKLOOP_RANDOM_SEED={self.seed}, "
                 f"CLICKLOOP_RANDOM_ONLY={','.join(tags[:20])}{',...' if len(tags) > 20 else ''})"]
        for tag in sorted(cases, key=str)[:6]:
            path = self.dump_case(tag) if tag else None
            lines.append(f"case {tag} (messages: {path}):")
            lines += [f"  {p}" for p in sorted(cases[tag])[:6]]
        return "\n".join(lines)

    def case_of(self, doc_id):
        if self._case_of_hash is None:
            self._case_of_hash = {hashlib.sha256(u.encode()).hexdigest(): case.tag
                                  for case in self.stream.cases for u in case.urls}
        return self._case_of_hash.get(doc_id.rsplit(":", 1)[-1])

    def dump_case(self, tag):
        # Not under tmp_path: other pytest sessions of the same user rotate
        # those directories away. Written on failure only.
        if self.dump_dir is None:
            self.dump_dir = Path(tempfile.mkdtemp(prefix=f"clickloop-agg-random-{self.seed}-"))
        path = self.dump_dir / f"case-{tag}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for d in self.sent:
                if d.event.case.tag == tag:
                    f.write(json.dumps({"phase": d.phase, "partition": d.partition,
                                        "offset": d.offset,
                                        "row_key": d.row_key(self.env.topic).decode(),
                                        "message": d.value.decode()},
                                       ensure_ascii=False) + "\n")
        return path


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def world(clickloop_bin, kafka_bootstrap, mariadb_params, es_url, tmp_path, request):
    """(IngestEnv, Index): a topic, group and database of its own, and an
    index name of its own; all removed at the end."""
    env = harness.IngestEnv(clickloop_bin, kafka_bootstrap, mariadb_params, tmp_path,
                            request.node.name)
    index = Index(es_url, f"clickloop-t-agg-random-{uuid.uuid4().hex[:12]}")
    try:
        yield env, index
    finally:
        for p in env.procs:
            if p.running():
                try:
                    p.stop(timeout=60)
                except AssertionError as exc:
                    print(f"clickloop did not stop: {exc}")
        stop_statements(env.db)
        env.close()
        try:
            index.delete()
        except requests.RequestException as exc:
            print(f"could not delete index {index.name}: {exc!r}")


def stop_statements(db):
    """KILL what still runs in the test's database (a statement outlives its
    client until it ends), so that the database can be dropped."""
    if db is None:
        return
    try:
        for (thread,) in db.query("SELECT id FROM information_schema.processlist WHERE db = %s "
                                  "AND id <> CONNECTION_ID()", (db.name,)):
            try:
                db.query(f"KILL {int(thread)}")
            except Exception:
                pass   # it ended meanwhile
    except Exception as exc:
        print(f"could not list the statements of {db.name}: {exc!r}")


def write_config(env, index):
    return env.write_config(overrides={
        # A short interval: a full recompute takes 200 marked windows per run.
        "aggregation": {"enabled": True, "interval": "200ms", "windows": WINDOW_LABELS,
                        "session_timeout": SESSION_TIMEOUT},
        "elasticsearch": {"urls": [index.base], "index": index.name, "bulk_max_docs": 1000,
                          "max_in_flight": 4, "request_timeout": "30s",
                          "retry_min_backoff": "100ms", "retry_max_backoff": "2s",
                          "node_down_for": "2s"},
        "retention": {"raw_days": 0},
    })


# ================================================================ tests

def test_oracle_follows_the_documented_rules_on_a_hand_computed_stream():
    """The oracle itself, on a stream small enough to compute by hand (1m
    windows, 5m timeout)."""
    T = FIRST_DAY + 59_999                 # 2024-01-01T00:00:59.999Z, last ms of a minute
    U1, U2 = "https://a.test/1", "https://a.test/2"
    ev = StoredEvent
    events = [
        ev(b"e:b", "u1", T, U1, "DE", None),      # 2nd by key; 5 min to the next: dwell
        ev(b"e:a", "u1", T, U2, "DE", None),      # 1st by key: dwell 0
        ev(b"k:t:0:10", "u1", T + 5 * MINUTE, U1, "unknown", None),   # 5 min 1 ms: none
        ev(b"k:t:0:9", "u1", T + 10 * MINUTE + 1, U1, "unknown", 0),  # own 0: a sample
        ev(b"e:z", "u2", T - 1, U1, "DE", None),  # alone: none
        # One ms, two keyless events: "k:u:0:10" < "k:u:0:9" as bytes, so the
        # offset-10 one comes first (dwell 0), the offset-9 one gets 1 s.
        ev(b"k:u:0:9", "u3", T + HOUR, U2, "FR", None),
        ev(b"k:u:0:10", "u3", T + HOUR, U1, "FR", None),
        ev(b"e:q", "u3", T + HOUR + 1000, U1, "FR", 7),
    ]
    got = {(a.start, a.url, a.country): a.values
           for a in oracle(events, [MINUTE], TIMEOUT_MS).values()}
    m0 = FIRST_DAY
    assert got == {
        (m0, U1, "DE"): (2, 2, 300_000, 1),
        (m0, U2, "DE"): (1, 1, 0, 1),
        (m0 + 5 * MINUTE, U1, "unknown"): (1, 1, 0, 0),
        (m0 + 11 * MINUTE, U1, "unknown"): (1, 1, 0, 1),
        (m0 + HOUR, U1, "FR"): (1, 1, 0, 1),
        (m0 + HOUR, U2, "FR"): (1, 1, 1000, 1),
        (m0 + HOUR + MINUTE, U1, "FR"): (1, 1, 7, 1),
    }
    # 7d windows start on the epoch's Thursdays: 2023-12-28 holds 2024-01-01.
    assert window_label(45 * MINUTE) == "45m" and window_label(WEEK) == "7d"
    assert floor_window(T, WEEK) == 1_703_721_600_000
    # Seconds with a fraction are read as the parser reads them.
    assert float_seconds_text(1_715_904_000_123) == "1715904000.123"


RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                     r"(?:[Zz]|([+-])(\d\d):?(\d\d))")


def read_message(value):
    """(event_id, user_id, ms, url, country, time spent) of a generated
    message, read by the rules of event.h (a model for the generator's own
    check, not of the C parser)."""
    m = json.loads(value)
    ts = m["timestamp"]
    if isinstance(ts, str):
        y, mo, d, h, mi, sec, frac, sign, zh, zm = RFC3339.fullmatch(ts).groups()
        assert 1970 <= int(y) <= 9999, ts
        days = (dt.date(int(y), int(mo), int(d)) - dt.date(1970, 1, 1)).days
        millis = 999 if sec == "60" else int((frac or "0")[:3].ljust(3, "0"))
        ms = (days * 86400 + int(h) * 3600 + int(mi) * 60 + min(int(sec), 59)) * 1000 + millis
        if sign:
            ms -= (1 if sign == "+" else -1) * (int(zh) * 60 + int(zm)) * MINUTE
    else:
        t = ts if ts >= EPOCH_MS_FROM else ts * 1000
        ms = math.floor(t + 0.0005) if isinstance(ts, float) else t
    country = m.get("country")
    spent = m.get("time_spent_ms")
    if isinstance(spent, float):
        spent = math.floor(spent + 0.5)      # to the nearest (no .5 is generated)
    return (m.get("event_id"), str(m["user_id"]), ms, m["url"],
            country.upper() if country else "unknown", spent)


def test_generated_messages_mean_what_the_oracle_assumes():
    """Every message of a generated stream, read by the rules of event.h,
    holds exactly the event the oracle counts (guards the generator)."""
    stream = Stream(random.Random(12345), 60)
    batches = [stream.main_batch()] + [stream.late_batch(k + 1) for k in range(LATE_BATCHES)]
    n = 0
    for d in (d for b in batches for d in b):
        e = d.event
        assert read_message(d.value) == (e.event_id, e.user_id, e.ts, e.url, e.country,
                                         e.spent), d.value
        assert 0 <= e.ts <= TS_MAX and d.partition in range(harness.DEFAULT_PARTITIONS)
        n += 1
    assert n > 2000
    # Every timestamp form at the edges of the range and of the seconds rule.
    rng = random.Random(1)
    for ms in (0, 1, 999, 1000, 59_999, 60_000, EPOCH_MS_FROM - 1, EPOCH_MS_FROM,
               EPOCH_MS_FROM * 1000, FIRST_DAY, FIRST_DAY + 123, FIRST_DAY - 1, TS_MAX - 999,
               TS_MAX - 1000, TS_MAX):
        for _ in range(100):
            value = serialise(rng, {"user_id": "u", "url": "x",
                                    "timestamp": wire_timestamp(rng, ms)})
            assert read_message(value)[2] == ms, value


def test_random_streams_match_the_oracle(world, request):
    seed, n_cases, only = settings()
    harness.report(request, f"seed {seed}, {n_cases} cases (CLICKLOOP_RANDOM_SEED={seed} "
                            f"CLICKLOOP_RANDOM_CASES={n_cases} repeat it)"
                            + (f", only {sorted(only)}" if only else ""))
    t_begin = time.monotonic()
    env, index = world
    rng = random.Random(seed)
    stream = Stream(rng, n_cases, only)
    # Generate everything first: the data depends on the seed alone.
    main = stream.main_batch()
    late = [stream.late_batch(k + 1) for k in range(LATE_BATCHES)]
    assert main, "nothing to send (CLICKLOOP_RANDOM_ONLY names no case?)"
    run = Run(env, index, stream, seed)
    timings = [("generate", time.monotonic() - t_begin)]

    # The main stream.
    t0 = time.monotonic()
    run.produce(main)
    config = write_config(env, index)
    run.proc = env.start(config)
    rows = run.settle("main stream")
    want, stats = run.check("after the main stream", rows)
    timings.append(("main", time.monotonic() - t0))
    if not only:
        seen = coverage(run.sent, rows)
        missing = [e for e in REQUIRED_EDGES if not seen.get(e)]
        assert not missing, f"seed {seed}: the generated data lacks {missing}"
    n_main = len(main)

    # Late batches, each after the previous one was aggregated and indexed.
    for k, batch in enumerate(late, 1):
        t0 = time.monotonic()
        for part in range(LATE_PARTS):
            if batch[part::LATE_PARTS]:
                run.produce(batch[part::LATE_PARTS])
        rows = run.settle(f"late batch {k}")
        want_after, stats_after = run.check(f"after late batch {k}", rows)
        changed, dwell_only = run.check_versions(f"late batch {k}", want, stats, want_after,
                                                 stats_after)
        if not only:
            assert changed and dwell_only, (
                f"seed {seed}: late batch {k} changed {len(changed)} aggregates, "
                f"{len(dwell_only)} by a dwell time alone: the batch tests too little")
        harness.report(request, f"late batch {k}: {len(batch)} messages changed "
                                f"{len(changed)} of {len(want_after)} aggregates "
                                f"({len(dwell_only)} by a dwell time only)")
        want, stats = want_after, stats_after
        timings.append((f"late {k}", time.monotonic() - t0))

    # Redelivery: rewind the group (keyless messages come again at their own
    # offsets) and restart. Nothing may change, not even a version.
    t0 = time.monotonic()
    assert run.proc.stop() == 0, run.proc.log_tail()
    ends = env.end_offsets()
    # Partition 0 from offset 7 (the keyless pairs of main_batch), the others
    # from somewhere in their last third.
    rewind = {p: min(7, ends[p]) if p == 0 else rng.randint(ends[p] * 2 // 3, ends[p])
              for p in env.partitions}
    harness.wait_until(lambda: try_set_offsets(env, rewind), 60,
                       "the group to accept rewound offsets")
    again = [d for d in run.sent if d.offset >= rewind[d.partition]]
    again_keys = {d.row_key(env.topic) for d in again}
    if not only:
        assert any(d.event.event_id is None for d in again), "no keyless message comes again"
    run.proc = env.start(config)
    rows = run.settle("redelivery")
    want_after, stats_after = run.check("after the redelivery", rows)
    unchanged(run, "the redelivery", stats, stats_after)
    claimed = sum(r[0] for r in run.run_lines())
    assert claimed >= len(again_keys), (
        f"{len(again)} messages ({len(again_keys)} rows) delivered again, but the runs "
        f"claimed {claimed} events")
    timings.append(("redelivery", time.monotonic() - t0))

    # Full recompute, as an operator marks it: every window of every size
    # that holds an event.
    t0 = time.monotonic()
    marks = sorted({(w, floor_window(r.ts, w)) for r in rows.values() for w in WINDOWS_MS})
    log_mark = len(run.proc.log_text())
    env.db.query("INSERT INTO agg_dirty (window_ms, window_start, marked_at) VALUES "
                 + ",".join(["(%s, %s, NOW(6))"] * len(marks))
                 + " ON DUPLICATE KEY UPDATE marked_at = VALUES(marked_at)",
                 [v for w, s in marks for v in (w, datetime_text(s))])
    run.settle("full recompute")
    recomputed = sum(r[1] for r in run.run_lines(log_mark))
    assert recomputed >= len(marks), f"{len(marks)} windows marked, {recomputed} recomputed"
    want_final, stats_final = run.check("after the full recompute", rows)
    unchanged(run, "the full recompute", stats_after, stats_final)
    timings.append(("recompute", time.monotonic() - t0))
    # A clean exit (under ASan, leaks would make it non-zero).
    assert run.proc.stop() == 0, run.proc.log_tail()

    harness.report(request, f"seed {seed}: {len(stream.cases)} cases, {len(run.sent)} "
                            f"messages ({n_main} main, "
                            f"{sum(len(b) for b in late)} late, {len(again)} delivered again), "
                            f"{len(rows)} stored events, {len(want_final)} documents, "
                            f"{len(marks)} windows recomputed; "
                            + ", ".join(f"{name} {s:.1f}s" for name, s in timings)
                            + f"; total {time.monotonic() - t_begin:.1f}s, of which "
                            f"{run.checking_s:.1f}s reading and comparing")


def try_set_offsets(env, offsets):
    """set_committed_offsets, False while the group still has a member."""
    try:
        env.set_committed_offsets(offsets)
        return True
    except Exception as exc:   # the broker's refusal comes as a KafkaException
        print(f"rewinding the group: {exc}")
        return False


def unchanged(run, what, before, after):
    """agg_stats rows are what they were: values, version and updated_at."""
    def state(rows, i):
        r = rows.get(i)
        return None if r is None else (r.values, r.version, r.updated_at)
    diff = {i: [f"(values, version, updated_at) {state(before, i)} -> {state(after, i)}"]
            for i in set(before) | set(after) if state(before, i) != state(after, i)}
    if diff:
        raise AssertionError(run.explain(f"{what} changed agg_stats rows", diff))
