"""The hostile input catalogue (issue 11, item 8), end to end: each kind of
hostile message is produced to a real Kafka topic, consumed by the real
clickloop binary and looked up in the real MariaDB.

Every message is either stored exactly (every column of click_data, geo_data
and user_agent_data compared with what was sent) or recorded in
rejected_events with a reason that names the problem (and its raw payload).
The committed offsets reach the end of the topic, the process is still
running and exits cleanly (in the AddressSanitizer build that includes the
leak check), and a thread asks GET /healthz every 100 ms from before the
messages are produced until they are all processed: every answer must be
200 "ok" (the event loop was never stalled long enough to fail it).

Kinds covered elsewhere are not repeated here: test_ingest.py covers invalid
UTF-8, unpaired surrogate escapes, single quotes, trailing commas, raw control
characters, arrays and scalars as the document, wrong types, an oversized
event at the default max_event_bytes, the event-time window edges at the
default window, and batches of 10 000 quote-heavy events against a 4 MiB
packet limit. Parser-level details of each reason are pinned in
test/unit/test_event.c.

Each test reports how long its messages took (from the end of producing to
the offsets committed at the end) and the slowest /healthz answer; the 10 MB
test also reports clickloop's peak RSS (VmHWM).

Run alone: .venv/bin/python -m pytest -q test/integration/test_hostile.py
"""

import json
import os
import random
import time

import pytest

import harness
from harness import Message

MIB = 1 << 20
# The broker's default message limit is about 1 MB (message.max.bytes
# 1048588); the topic of each test here takes up to 16 MiB, the largest
# ingest.max_event_bytes, plus room for the record's framing.
TOPIC_MAX_MESSAGE_BYTES = 16 * MIB + 64 * 1024
# The producer's own limit (librdkafka's message.max.bytes, 1 000 000 in
# harness.FAST_PRODUCER) must be raised as well.
BIG_PRODUCER = {"message.max.bytes": TOPIC_MAX_MESSAGE_BYTES}

SANITIZED = os.environ.get("CLICKLOOP_SANITIZED", "none") not in ("", "none")

TS_MS = 1_800_000_000_000   # 2027-01-15T08:00:00Z
DATETIME_MAX_MS = 253_402_300_799_999   # 9999-12-31T23:59:59.999Z
FIELDS = ("event_id", "user_id", "ts_ms", "url", "time_spent_ms", "country", "city", "browser",
          "os", "device", "user_agent")
GEO = ("country", "city")
UA = ("browser", "os", "device", "user_agent")


@pytest.fixture
def env(clickloop_bin, kafka_bootstrap, mariadb_params, tmp_path, request):
    """One partition (every partition must get a message for the committed
    offsets to reach the end) of a topic that takes messages up to 16 MiB."""
    e = harness.IngestEnv(clickloop_bin, kafka_bootstrap, mariadb_params, tmp_path,
                          request.node.name, partitions=1,
                          topic_config={"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES)})
    try:
        yield e
    finally:
        e.close()


# ---------------------------------------------------------------- building messages

def js(value):
    """A JSON value as text, non-ASCII kept as UTF-8."""
    return json.dumps(value, ensure_ascii=False)


def obj(members):
    """A JSON object as text from (name, value text) pairs: names may repeat
    and values are written as given (the hostile part of a message)."""
    return "{" + ",".join(f"{js(name)}:{value}" for name, value in members) + "}"


def base(eid, **values):
    """The members of a valid event with event_id `eid`; keyword arguments
    replace a member's value text (None drops the member) or add one."""
    members = {"event_id": js(eid), "user_id": js("u-1"), "timestamp": str(TS_MS),
               "url": js(f"https://example.com/{eid}")}
    for name, value in values.items():
        if value is None:
            members.pop(name, None)
        else:
            members[name] = value
    return list(members.items())


def expect(eid, **fields):
    """The row an event must become: every field of FIELDS, None when absent."""
    row = dict.fromkeys(FIELDS)
    row.update(event_id=eid, user_id="u-1", ts_ms=TS_MS, url=f"https://example.com/{eid}")
    row.update(fields)
    return row


class Case:
    """One message and its fate: `stored` (the expected row) or `reason`
    (the words the rejection reason must contain), with the raw payload kept
    whole (keep="exact") or cut to a prefix (keep="prefix")."""

    def __init__(self, name, payload, stored=None, reason=None, keep="exact"):
        assert (stored is None) != (reason is None)
        self.name = name
        self.payload = payload.encode("utf-8") if isinstance(payload, str) else payload
        self.stored, self.reason, self.keep = stored, reason, keep
        self.msg = Message(self.payload, partition=0)


def stored(name, members, **fields):
    return Case(name, obj(members), stored=expect(name, **fields))


def rejected(name, payload, *words, keep="exact"):
    if isinstance(payload, list):
        payload = obj(payload)
    return Case(name, payload, reason=list(words), keep=keep)


# ---------------------------------------------------------------- running and checking

def short(value, n=120):
    text = repr(value)
    return text if len(text) <= n else f"{text[:n]}... ({len(value)} long)"


def run_cases(env, request, cases, overrides=None, timeout=180, max_event_bytes=None):
    """Start clickloop (admin listener on port 0), probe /healthz, produce the
    cases' messages, wait until every one is stored or rejected with the
    offsets at the end; then check every row and every rejection. Returns
    (seconds from the end of producing to caught up, probe, proc)."""
    settings = {"admin": {"listen": f"{harness.HOST}:0"}}
    if max_event_bytes is not None:
        settings["ingest"] = {"max_event_bytes": max_event_bytes}
    env.write_config(overrides=harness.deep_merge(settings, overrides))
    proc = env.start()
    port = harness.admin_port_from_log(proc)
    probe = harness.HealthzProbe(port, proc).start()
    try:
        harness.wait_until(lambda: probe.answers, 30, "the first /healthz answer",
                           check=proc.assert_running)
        env.produce([c.msg for c in cases], config=BIG_PRODUCER)
        t0 = time.monotonic()
        n_stored = sum(c.stored is not None for c in cases)
        env.wait_caught_up(n_stored, len(cases) - n_stored, timeout=timeout, interval=0.2)
        elapsed = time.monotonic() - t0
    finally:
        probe.stop()
    check_rows(env, [c for c in cases if c.stored is not None])
    check_rejections(env, [c for c in cases if c.reason is not None])
    probe.assert_answered()
    proc.assert_running()
    lag = loop_lag(port)
    harness.report(request, f"{len(cases)} messages ({n_stored} stored, "
                   f"{len(cases) - n_stored} rejected) processed in {elapsed:.2f}s; "
                   f"{len(probe.answers)} /healthz probes, all 200, slowest "
                   f"{probe.slowest * 1000:.0f} ms; event loop lag {lag}")
    return elapsed, probe, proc


def loop_lag(port):
    """What clickloop's own heartbeat saw (clickloop_event_loop_lag_seconds):
    "<= B s in all N beats" for the smallest bucket bound B holding every
    beat. Unlike the probe's times, it leaves out the test process's own
    delays (its threads share one interpreter lock)."""
    m = harness.metrics(port)
    total = m[("clickloop_event_loop_lag_seconds_count", frozenset())]
    bounds = sorted((float(dict(labels)["le"]), v) for (name, labels), v in m.items()
                    if name == "clickloop_event_loop_lag_seconds_bucket")
    bound = next(le for le, v in bounds if v >= total)
    return f"<= {bound:g} s in all {total:.0f} heartbeats"


def row_key(env, case):
    eid = case.stored["event_id"]
    if eid is not None:
        return ("e:" + eid).encode()
    return f"k:{env.topic}:{case.msg.partition}:{case.msg.offset}".encode()


def check_rows(env, cases):
    """click_data, geo_data and user_agent_data hold exactly these events,
    every column equal to what was sent."""
    want = {row_key(env, c): c for c in cases}
    assert len(want) == len(cases), "two cases share a row key"
    rows = env.db.query(
        "SELECT c.row_key, c.event_id, c.user_id, c.event_time, c.url, c.time_spent_ms, "
        "c.kafka_topic, c.kafka_partition, c.kafka_offset, g.row_key IS NOT NULL, g.country, "
        "g.city, u.row_key IS NOT NULL, u.browser, u.os, u.device, u.user_agent "
        "FROM click_data c LEFT JOIN geo_data g USING (row_key) "
        "LEFT JOIN user_agent_data u USING (row_key)")
    got = {r[0]: r for r in rows}
    assert set(got) == set(want), (f"stored row keys: missing {sorted(set(want) - set(got))[:5]}, "
                                   f"unexpected {sorted(set(got) - set(want))[:5]}")
    problems = []
    for key, c in want.items():
        r = got[key]
        exp = c.stored
        have = {"event_id": r[1], "user_id": r[2], "ts_ms": harness.ms_from_datetime(r[3]),
                "url": r[4], "time_spent_ms": r[5], "country": r[10], "city": r[11],
                "browser": r[13], "os": r[14], "device": r[15], "user_agent": r[16]}
        for f in FIELDS:
            if have[f] != exp[f]:
                problems.append(f"{c.name}: {f} is {short(have[f])}, sent {short(exp[f])}")
        if (r[6], r[7], r[8]) != (env.topic, c.msg.partition, c.msg.offset):
            problems.append(f"{c.name}: stored from {r[6:9]}, sent to "
                            f"{(env.topic, c.msg.partition, c.msg.offset)}")
        # A geo_data row only for an event with a country or a city, a
        # user_agent_data row only for one with any of its fields (store.c).
        if bool(r[9]) != any(exp[f] is not None for f in GEO):
            problems.append(f"{c.name}: geo_data row present={bool(r[9])}")
        if bool(r[12]) != any(exp[f] is not None for f in UA):
            problems.append(f"{c.name}: user_agent_data row present={bool(r[12])}")
    for table in ("geo_data", "user_agent_data"):
        orphans = env.db.scalar(f"SELECT COUNT(*) FROM {table} t LEFT JOIN click_data c "
                                "USING (row_key) WHERE c.row_key IS NULL")
        if orphans:
            problems.append(f"{table}: {orphans} rows without a click_data row")
    assert not problems, f"{len(problems)} wrong value(s):\n" + "\n".join(problems[:20])


def check_rejections(env, cases):
    """rejected_events holds exactly these messages, each with a reason that
    contains the case's words and its payload kept as the case says."""
    rows = env.db.query("SELECT kafka_topic, kafka_partition, kafka_offset, payload, reason "
                        "FROM rejected_events")
    got = {(r[1], r[2]): r for r in rows}
    want = {(c.msg.partition, c.msg.offset): c for c in cases}
    assert set(got) == set(want), (f"rejected: {sorted(got)}, want {sorted(want)}; reasons: "
                                   f"{[r[4][:100] for r in rows][:10]}")
    problems = []
    for coord, c in want.items():
        topic, _, _, payload, reason = got[coord]
        if topic != env.topic:
            problems.append(f"{c.name}: topic {topic}")
        missing = [w for w in c.reason if w not in reason]
        if missing:
            problems.append(f"{c.name}: reason {reason!r} lacks {missing}")
        payload = payload or b""
        if c.keep == "exact" and payload != c.payload:
            problems.append(f"{c.name}: payload {short(payload)} != sent {short(c.payload)}")
        if c.keep == "prefix" and not (payload and c.payload.startswith(payload)):
            problems.append(f"{c.name}: payload of {len(payload)} bytes is not a prefix of "
                            f"the {len(c.payload)} sent")
    assert not problems, "\n".join(problems)
    return {c.name: got[(c.msg.partition, c.msg.offset)] for c in cases}


# ---------------------------------------------------------------- 1. nesting

DEPTH_REASON = ("not valid JSON: nesting too deep", "more than 32 levels")


def test_nesting_10000_deep_rejected_in_an_ignored_and_in_a_mapped_field(env, request):
    """json-c stops at 32 levels (RFC 8259 section 9 lets a parser limit
    depth): the whole document is parsed, so an ignored member counts too.
    Exactly 32 levels (the event object and 31 arrays) are stored."""
    deep_arrays = "[" * 10_000 + "]" * 10_000
    deep_objects = '{"a":' * 10_000 + "1" + "}" * 10_000
    cases = [
        rejected("ignored-arrays", base("a", x=deep_arrays), *DEPTH_REASON),
        rejected("ignored-objects", base("b", x=deep_objects), *DEPTH_REASON),
        rejected("mapped-url", base("c", url=deep_objects), *DEPTH_REASON),
        rejected("mapped-timestamp", base("d", timestamp=deep_arrays), *DEPTH_REASON),
        rejected("unclosed", base("e", x="[" * 10_000), *DEPTH_REASON),
        stored("depth-32", base("depth-32", x="[" * 31 + "]" * 31)),
        # Brackets inside a string are text, not nesting.
        stored("brackets-in-url", base("brackets-in-url", url=js("[{" * 10_000)),
               url="[{" * 10_000),
    ]
    run_cases(env, request, cases, max_event_bytes="256KB")


# ---------------------------------------------------------------- 2. many members

def test_object_with_100000_members_stored(env, request):
    """An event of 100 000 members (its four fields and 99 996 others), and
    one whose 100 000 members are all named "url" (the last one wins). About
    1.4 and 2.2 MB, under ingest.max_event_bytes = 4MB."""
    many = base("many") + [(f"m{i}", str(i)) for i in range(99_996)]
    same = base("same", url=None) + [("url", js(f"https://x/{i}")) for i in range(100_000)]
    cases = [Case("many", obj(many), stored=expect("many")),
             Case("same", obj(same), stored=expect("same", url="https://x/99999"))]
    assert len(many) == 100_000 and all(len(c.payload) < 4 * MIB for c in cases)
    run_cases(env, request, cases, max_event_bytes="4MB")


# ---------------------------------------------------------------- 3. byte order mark

BOM = "\ufeff"


def test_utf8_bom_before_the_object_rejected_inside_a_string_stored(env, request):
    """RFC 8259 section 8.1: senders MUST NOT add a byte order mark, parsers
    MAY ignore one. json-c does not skip it, and clickloop does not either: a
    producer that adds one is told so (docs/configuration.md, "Events"). As
    text inside a string, U+FEFF is a character like any other."""
    words = ("a UTF-8 byte order mark (EF BB BF)", "RFC 8259")
    cases = [
        rejected("bom-first", BOM + obj(base("a")), *words, "at byte 0"),
        rejected("bom-after-space", " " + BOM + obj(base("b")), *words, "at byte 1"),
        rejected("bom-after-object", obj(base("c")) + BOM, *words),
        rejected("two-boms", BOM + BOM + obj(base("d")), *words, "at byte 0"),
        stored("bom-in-city", base("bom-in-city", city=js(BOM + "Berlin")), city=BOM + "Berlin"),
        stored("bom-escaped-in-url", base("bom-escaped-in-url", url='"https://x/\\ufeff"'),
               url="https://x/" + BOM),
    ]
    run_cases(env, request, cases)


# ---------------------------------------------------------------- 4. NaN and the infinities

NON_JSON_NUMBERS = ("+Infinity", "-Infinity", "Infinity", "NaN", "-NaN")


def test_infinities_and_nan_rejected_by_name_wherever_they_are(env, request):
    """json-c accepts NaN, Infinity and -Infinity (and rejects +Infinity); RFC
    8259 has none of them. Each is refused by name in an ignored member, in
    the timestamp and in time_spent_ms."""
    cases = []
    for k, literal in enumerate(NON_JSON_NUMBERS):
        words = (f"not valid JSON: {literal} at byte", "is not a JSON number")
        cases += [rejected(f"ignored-{k}", base(f"i{k}", x=literal), *words),
                  rejected(f"in-array-{k}", base(f"a{k}", x=f"[1,{literal}]"), *words),
                  rejected(f"timestamp-{k}", base(f"t{k}", timestamp=literal), *words),
                  rejected(f"time-spent-{k}", base(f"s{k}", time_spent_ms=literal), *words)]
    cases.append(stored("as-strings", base("as-strings", x=js(list(NON_JSON_NUMBERS)),
                                           city=js("NaN")), city="NaN"))
    run_cases(env, request, cases)


# ---------------------------------------------------------------- 5. numbers beyond a double

def test_numbers_beyond_a_double_rejected_in_fields_stored_when_ignored(env, request):
    """1e400 is valid JSON but no double: json-c reads it as infinity. In a
    field it is out of range, quoted as sent; in an ignored member it is only
    syntax. 1e-400 reads as 0 (seconds: the epoch)."""
    out = "is out of range (beyond a double"
    cases = [
        rejected("ts-1e400", base("a", timestamp="1e400"), 'timestamp: "1e400" ' + out),
        rejected("ts-minus-1e400", base("b", timestamp="-1e400"), 'timestamp: "-1e400" ' + out),
        rejected("ts-1E+400", base("c", timestamp="1E+400"), 'timestamp: "1E+400" ' + out),
        rejected("ts-ms-1e400", base("d", timestamp="1.8e400"), 'timestamp: "1.8e400" ' + out),
        rejected("time-spent-1e400", base("e", time_spent_ms="1e400"),
                 'time_spent_ms: "1e400" ' + out),
        stored("ignored", base("ignored", x="[1e400,-1e400,1e-400,-1E+999]")),
        stored("ts-1e-400", base("ts-1e-400", timestamp="1e-400"), ts_ms=0),
        stored("time-spent-1e-400", base("time-spent-1e-400", time_spent_ms="1e-400"),
               time_spent_ms=0),
    ]
    run_cases(env, request, cases)


# ---------------------------------------------------------------- 6. overlong numbers

def test_overlong_numbers_rejected_in_fields_stored_when_ignored(env, request):
    """Numbers of 100 000 digits. json-c clamps integers beyond 64 bits
    without telling, so a field refuses them as out of range (never quoting
    the clamped value as if it had been sent); long fractions and exponents
    are exact enough as doubles and are read."""
    digits = "7" * 100_000
    out = "integer is out of range"
    cases = [
        rejected("ts-long", base("a", timestamp=digits), "timestamp: " + out),
        rejected("ts-long-negative", base("b", timestamp="-" + digits), "timestamp: " + out),
        rejected("user-id-long", base("c", user_id=digits), "user_id: " + out),
        rejected("user-id-2^64", base("d", user_id="18446744073709551616"), "user_id: " + out),
        rejected("time-spent-long", base("e", time_spent_ms=digits), "time_spent_ms: " + out),
        stored("ignored", base("ignored", x=f"[{digits},-{digits},0.{digits},1e-{digits}]")),
        stored("ts-long-fraction", base("ts-long-fraction", timestamp="1800000000.123" + digits),
               ts_ms=1_800_000_000_123),
        stored("time-spent-long-exponent",
               base("time-spent-long-exponent", time_spent_ms="1e" + "0" * 100_000 + "3"),
               time_spent_ms=1000),
        stored("user-id-2^64-2", base("user-id-2^64-2", user_id="18446744073709551614"),
               user_id="18446744073709551614"),
    ]
    run_cases(env, request, cases, max_event_bytes="512KB")


# ---------------------------------------------------------------- 7. escaped NUL

def test_escaped_nul_rejected_in_every_mapped_field(env, request):
    """Text columns cannot hold NUL and json-c cuts member names at it, so a
    \\u0000 escape is refused anywhere. An escaped backslash followed by
    "u0000" is six characters of text, stored as such."""
    nul = "a\\u0000b"
    words = ("\\u0000 (NUL) at byte", "is not accepted")
    cases = [rejected(f"nul-{f}", base(f"n-{f}", **{f: f'"{nul}"'}), *words)
             for f in ("event_id", "user_id", "url", "timestamp", "country", "city", "browser",
                       "os", "device", "user_agent")]
    cases += [
        # js() writes the NUL of this name as \u0000.
        rejected("nul-in-name", base("n-name", **{"url\x00x": js("y")}), *words),
        rejected("nul-alone", base("n-alone", city='"\\u0000"'), *words),
        rejected("nul-ignored", base("n-ignored", x=f'["{nul}"]'), *words),
        stored("escaped-backslash", base("escaped-backslash", url='"https://x/\\\\u0000"'),
               url="https://x/\\u0000"),
    ]
    run_cases(env, request, cases)


# ---------------------------------------------------------------- 8. repeated names

def test_duplicate_member_names_last_occurrence_wins(env, request):
    """json-c keeps the last of repeated members (so does Python's json);
    the event is judged by what it keeps, whatever came before."""
    later_ts = TS_MS + 12_345

    def dup(eid, extra):
        return base(eid) + extra

    cases = [
        Case("url-twice", obj(dup("url-twice", [("url", js("https://x/second"))])),
             stored=expect("url-twice", url="https://x/second")),
        Case("event-id-twice", obj(dup("first-id", [("event_id", js("second-id"))])),
             stored=expect("second-id", url="https://example.com/first-id")),
        Case("country-twice", obj(dup("country-twice", [("country", js("US")),
                                                        ("country", js("de"))])),
             stored=expect("country-twice", country="DE")),
        Case("bad-then-good-ts", obj(base("bad-then-good-ts", timestamp=js("yesterday"))
                                     + [("timestamp", str(later_ts))]),
             stored=expect("bad-then-good-ts", ts_ms=later_ts)),
        Case("object-then-scalar", obj(dup("object-then-scalar", [("x", '{"a":1}'),
                                                                  ("x", "2")])),
             stored=expect("object-then-scalar")),
        Case("user-id-thrice", obj(dup("user-id-thrice", [("user_id", js("u-2")),
                                                          ("user_id", "42")])),
             stored=expect("user-id-thrice", user_id="42")),
        rejected("good-then-bad-ts", dup("g", [("timestamp", js("yesterday"))]),
                 "timestamp: expected an RFC 3339 date-time", '"yesterday"'),
        rejected("good-then-null-url", dup("h", [("url", "null")]), "url: must not be null"),
    ]
    run_cases(env, request, cases)


# ---------------------------------------------------------------- 9. names differing in case

def test_member_names_differing_only_in_case_are_different_members(env, request):
    """The pointer /url finds "url" and nothing else: "URL" and "Url" are
    other (ignored) members, whichever order they come in."""
    cases = [
        Case("upper-after", obj(base("upper-after") + [("URL", js("https://x/upper")),
                                                       ("Url", js("https://x/mixed"))]),
             stored=expect("upper-after")),
        Case("upper-before", obj([("URL", js("https://x/upper")), ("Country", js("FR")),
                                  ("CITY", js("Paris"))] + base("upper-before")
                                 + [("city", js("Lyon"))]),
             stored=expect("upper-before", city="Lyon")),
        Case("user-id-variants", obj(base("user-id-variants")
                                     + [("User_Id", js("other")), ("USER_ID", js("x"))]),
             stored=expect("user-id-variants")),
        rejected("only-upper-url", base("a", url=None, URL=js("https://x/upper")),
                 "url (/url): required field is missing"),
        rejected("only-mixed-timestamp", base("b", timestamp=None, Timestamp=str(TS_MS)),
                 "timestamp (/timestamp): required field is missing"),
    ]
    run_cases(env, request, cases)


# ---------------------------------------------------------------- 10. the DATETIME range

def test_timestamps_at_both_edges_of_the_datetime_range(env, request):
    """The first and last instants an event may carry, 1970-01-01T00:00:00.000Z
    and 9999-12-31T23:59:59.999Z, in each form, are stored to the ms; one ms
    outside either is rejected (the harness's window accepts every date; the
    event-time window's edges are test_ingest's)."""
    edges = [("epoch-string", js("1970-01-01T00:00:00.000Z"), 0),
             ("epoch-offset", js("1970-01-01T01:00:00+01:00"), 0),
             ("epoch-seconds", "0", 0),
             ("epoch-fraction", "0.0009", 0),
             ("last-string", js("9999-12-31T23:59:59.999Z"), DATETIME_MAX_MS),
             ("last-leap-second", js("9999-12-31T23:59:60Z"), DATETIME_MAX_MS),
             ("last-ms", str(DATETIME_MAX_MS), DATETIME_MAX_MS),
             ("last-ms-fraction", "253402300799999.9", DATETIME_MAX_MS)]
    cases = [stored(name, base(name, timestamp=v), ts_ms=ms) for name, v, ms in edges]
    cases += [
        rejected("before-epoch", base("a", timestamp=js("1969-12-31T23:59:59.999Z")),
                 "timestamp: year 1969 is outside 1970..9999"),
        rejected("before-epoch-by-offset", base("b", timestamp=js("1970-01-01T00:59:59.999+01:00")),
                 "timestamp: instant earlier than 1970-01-01T00:00:00Z"),
        rejected("negative", base("c", timestamp="-1"), "timestamp: must not be negative"),
        rejected("after-last-ms", base("d", timestamp=str(DATETIME_MAX_MS + 1)),
                 "is later than 9999-12-31T23:59:59.999Z"),
        rejected("after-last-by-offset", base("e", timestamp=js("9999-12-31T23:59:59.999-00:01")),
                 "timestamp: instant later than 9999-12-31T23:59:59.999Z"),
        rejected("year-10000", base("f", timestamp=js("10000-01-01T00:00:00Z")),
                 "timestamp: expected an RFC 3339 date-time"),
    ]
    run_cases(env, request, cases)


# ---------------------------------------------------------------- 11. 10 000 escape-heavy events

# Every character JSON must escape (quote, backslash, U+0001..U+001F; U+0000 is
# refused), ones SQL escapes (quote, backslash, CR, LF, Ctrl-Z), DEL, the
# separators JavaScript chokes on, and multi-byte UTF-8 up to 4 bytes.
HEAVY = ['"', "\\", "'", "\\\\", "''", "\\'", '\\"', "\x7f", "\u2028", "\u2029", "é", "日",
         "😀", "/", " ", "%", "_"] + [chr(c) for c in range(1, 0x20)]


def heavy_text(rng, n_chars):
    return "".join(rng.choice(HEAVY) if rng.random() < 0.7 else chr(rng.randrange(0x20, 0x7f))
                   for _ in range(n_chars))


def utf8_cut(text, limit):
    """text cut to at most `limit` UTF-8 bytes, at a character boundary."""
    b = text.encode("utf-8")[:limit]
    return b.decode("utf-8", errors="ignore")


def test_10000_event_batch_of_quote_backslash_and_control_heavy_events_stored_byte_for_byte(
        env, request):
    """10 000 events whose every text field (the event id too) is mostly
    characters that need escaping in JSON or SQL, written in batches of up
    to 10 000 (ingest.batch_max_events; the packet limit closes them earlier);
    every column of every event is compared with what was sent. Some payloads
    escape all non-ASCII (surrogate pairs for emoji), some write "/" as "\\/"."""
    seed = int(os.environ.get("CLICKLOOP_TEST_SEED") or random.randrange(2**32))
    print(f"random seed {seed} (CLICKLOOP_TEST_SEED={seed} repeats it)")
    rng = random.Random(seed)
    cases = []
    for i in range(10_000):
        eid = utf8_cut(f"h{i}-" + heavy_text(rng, 40), 128)
        doc = {"event_id": eid, "user_id": utf8_cut(heavy_text(rng, 60), 256),
               "timestamp": TS_MS + i, "url": "https://x/" + heavy_text(rng, 300),
               "country": rng.choice(["US", "ie", "Jp"]), "city": heavy_text(rng, 30),
               "browser": heavy_text(rng, 20), "os": heavy_text(rng, 10),
               "device": heavy_text(rng, 5), "user_agent": heavy_text(rng, 200),
               "time_spent_ms": i}
        payload = json.dumps(doc, ensure_ascii=i % 3 == 0)
        if i % 5 == 0:
            payload = payload.replace("/", "\\/")
        assert json.loads(payload) == doc
        exp = {k: doc[k] for k in ("event_id", "user_id", "url", "city", "browser", "os",
                                   "device", "user_agent", "time_spent_ms")}
        cases.append(Case(eid, payload, stored=dict(exp, ts_ms=TS_MS + i,
                                                    country=doc["country"].upper())))
    payload_bytes = sum(len(c.payload) for c in cases)
    elapsed, _, proc = run_cases(
        env, request, cases, timeout=300,
        overrides={"ingest": {"batch_max_events": 10_000, "max_in_flight_events": 50_000}})
    port = harness.admin_port_from_log(proc)
    m = harness.metrics(port)
    batches = m[("clickloop_batches_total", frozenset())]
    failures = m[("clickloop_batch_failures_total", frozenset())]
    harness.report(request, f"seed {seed}: 10000 events, {payload_bytes / 10_000:.0f} bytes each, "
                   f"in {batches:.0f} batches, {failures:.0f} refused writes, {elapsed:.1f}s")
    assert failures == 0
    assert proc.stop() == 0


# ---------------------------------------------------------------- 12. 10 MB events

TEN_MB = 10 * MIB
# Characters of the big URL: mostly ASCII, with multi-byte UTF-8 and the
# characters that need escaping in JSON and SQL, so that the event stresses
# the escaping, not only the size.
BIG_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-._~" * 4 + "é日😀'\"\\\n\t"


def ten_mb_event(eid, rng):
    """A payload of exactly 10 MiB: an event whose URL makes up nearly all
    of it. Returns (payload, url)."""
    chunk = "".join(rng.choice(BIG_ALPHABET) for _ in range(64 * 1024))
    # JSON escapes character by character: the escaped URL is the escaped
    # chunks one after another.
    chunk_bytes = len(js(chunk).encode()) - 2
    head = {"event_id": eid, "user_id": "u-big", "timestamp": TS_MS, "country": "NZ",
            "city": "Wellington", "user_agent": "big/1.0"}
    url = "https://example.com/big?q="
    empty = len(js(dict(head, url=url)).encode())
    n = (TEN_MB - empty) // chunk_bytes
    url += chunk * n + "a" * (TEN_MB - empty - n * chunk_bytes)
    payload = js(dict(head, url=url)).encode()
    assert len(payload) == TEN_MB, len(payload)
    return payload, url


def test_10mb_event_stored_exactly_at_a_raised_max_event_bytes(env, request):
    """ingest.max_event_bytes = 12MB: a 10 MiB event (its URL 10 MiB, in the
    MEDIUMTEXT url column of up to 16 MiB) is stored exactly, with clickloop's
    Kafka defaults (librdkafka fetches a message larger than its per-partition
    fetch size whole) and the server's 16 MiB max_allowed_packet; a small event
    after it is stored too. Reports the peak RSS."""
    rng = random.Random(7)
    payload, url = ten_mb_event("big", rng)
    cases = [Case("big", payload, stored=expect("big", user_id="u-big", url=url, country="NZ",
                                                city="Wellington", user_agent="big/1.0")),
             stored("after", base("after"))]
    elapsed, probe, proc = run_cases(env, request, cases, max_event_bytes="12MB")
    peak_kb = proc.vm_hwm_kb()
    harness.report(request, f"a {len(payload)}-byte event stored in {elapsed:.2f}s; clickloop "
                   f"peak RSS (VmHWM) {peak_kb / 1024:.1f} MiB; slowest /healthz "
                   f"{probe.slowest * 1000:.0f} ms")
    assert proc.stop() == 0


def test_10mb_event_over_max_event_bytes_rejected_with_its_payload_kept(env, request):
    """ingest.max_event_bytes = 8MB: a 10 MiB message is not parsed; it is
    rejected with both sizes, and the first bytes of its payload are kept (up
    to max_event_bytes, fewer if the record would not fit a batch under the
    packet limit). The event after it is stored."""
    rng = random.Random(8)
    payload, _ = ten_mb_event("too-big", rng)
    cases = [rejected("too-big", payload, f"payload is {TEN_MB} bytes, over the limit of "
                      f"{8 * MIB}", keep="prefix"),
             stored("after", base("after"))]
    elapsed, probe, proc = run_cases(env, request, cases, max_event_bytes="8MB")
    kept = env.db.scalar("SELECT LENGTH(payload) FROM rejected_events")
    assert 0 < kept <= 8 * MIB
    harness.report(request, f"rejected in {elapsed:.2f}s, {kept} bytes of the payload kept; "
                   f"clickloop peak RSS (VmHWM) {proc.vm_hwm_kb() / 1024:.1f} MiB")
    assert proc.stop() == 0
