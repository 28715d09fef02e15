"""Schema acceptance tests: clickloop migrates a database that an earlier
version created, keeps its data, and ends with the schema a new database gets
(deps/services up).

The earlier schema is written out here as clickloop of schema version 2
created it (src/store.c of that version), not derived from the current code,
which no longer produces it. Its text columns used utf8mb4_bin, a PAD SPACE
collation: "pad" and "pad " compared equal. Migration 3 converts them to
utf8mb4_nopad_bin; migration 4 adds retention_state.

Each test has its own topic, group and database (harness.IngestEnv); clickloop
runs with aggregation off, so the rows written before the migration stay as
they were.

Run alone: .venv/bin/python -m pytest -q test/integration/test_schema.py
"""

import re

import pytest

import harness
from harness import Message

NO_PAD = "utf8mb4_nopad_bin"
SCHEMA_VERSION = 5

V2_TABLE_OPTIONS = (" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin "
                    "ROW_FORMAT=DYNAMIC")
V2_SCHEMA = [s + V2_TABLE_OPTIONS for s in (
    "CREATE TABLE clickloop_schema (id TINYINT UNSIGNED NOT NULL DEFAULT 1, "
    "version INT NOT NULL, applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), "
    "PRIMARY KEY (id), CONSTRAINT clickloop_schema_single_row CHECK (id = 1))",
    "CREATE TABLE click_data (row_key VARBINARY(400) NOT NULL, event_id VARCHAR(128) NULL, "
    "user_id VARCHAR(256) NOT NULL, event_time DATETIME(3) NOT NULL, url MEDIUMTEXT NOT NULL, "
    "time_spent_ms BIGINT NULL, kafka_topic VARCHAR(255) NOT NULL, "
    "kafka_partition INT NOT NULL, kafka_offset BIGINT NOT NULL, "
    "ingested_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), PRIMARY KEY (row_key), "
    "KEY idx_click_event_time (event_time), KEY idx_click_user_time (user_id, event_time))",
    "CREATE TABLE geo_data (row_key VARBINARY(400) NOT NULL, country CHAR(2) NULL, "
    "city VARCHAR(1024) NULL, PRIMARY KEY (row_key))",
    "CREATE TABLE user_agent_data (row_key VARBINARY(400) NOT NULL, "
    "browser VARCHAR(1024) NULL, os VARCHAR(1024) NULL, device VARCHAR(1024) NULL, "
    "user_agent VARCHAR(4096) NULL, PRIMARY KEY (row_key))",
    "CREATE TABLE rejected_events (id BIGINT NOT NULL AUTO_INCREMENT, "
    "kafka_topic VARCHAR(255) NOT NULL, kafka_partition INT NOT NULL, "
    "kafka_offset BIGINT NOT NULL, payload LONGBLOB NULL, reason VARCHAR(1024) NOT NULL, "
    "rejected_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), PRIMARY KEY (id), "
    "UNIQUE KEY uq_rejected_coordinates (kafka_topic, kafka_partition, kafka_offset))",
    "CREATE TABLE agg_pending (row_key VARBINARY(400) NOT NULL, "
    "user_id VARCHAR(256) NOT NULL, event_time DATETIME(3) NOT NULL, PRIMARY KEY (row_key))",
    "CREATE TABLE agg_dirty (window_ms BIGINT NOT NULL, window_start DATETIME(3) NOT NULL, "
    "marked_at DATETIME(6) NOT NULL, PRIMARY KEY (window_ms, window_start))",
    "CREATE TABLE agg_stats (window_ms BIGINT NOT NULL, window_start DATETIME(3) NOT NULL, "
    "url_hash BINARY(32) NOT NULL, country VARCHAR(16) NOT NULL, url MEDIUMTEXT NOT NULL, "
    "clicks BIGINT NOT NULL, unique_users BIGINT NOT NULL, "
    "time_spent_sum DECIMAL(38,0) NOT NULL, time_spent_samples BIGINT NOT NULL, "
    "version BIGINT NOT NULL, indexed_version BIGINT NOT NULL DEFAULT 0, "
    "needs_index TINYINT NOT NULL DEFAULT 1, index_error VARCHAR(1024) NULL, "
    "updated_at DATETIME(3) NOT NULL, "
    "PRIMARY KEY (window_ms, window_start, url_hash, country), "
    "KEY idx_agg_stats_needs_index (needs_index))",
)]
DATA_TABLES = ["click_data", "geo_data", "user_agent_data", "rejected_events", "agg_pending",
               "agg_dirty", "agg_stats"]
# Tables that version 2 did not have.
NEW_TABLES = ["retention_state", "agg_done", "agg_users", "agg_held"]
TABLES = ["clickloop_schema"] + DATA_TABLES + NEW_TABLES
TEXT_COLUMNS = {
    ("click_data", "event_id"), ("click_data", "user_id"), ("click_data", "url"),
    ("click_data", "kafka_topic"), ("geo_data", "country"), ("geo_data", "city"),
    ("user_agent_data", "browser"), ("user_agent_data", "os"), ("user_agent_data", "device"),
    ("user_agent_data", "user_agent"), ("rejected_events", "kafka_topic"),
    ("rejected_events", "reason"), ("agg_pending", "user_id"), ("agg_stats", "country"),
    ("agg_stats", "url"), ("agg_stats", "index_error"), ("agg_users", "country"),
    ("agg_users", "user_id"), ("agg_held", "reason"),
}

URL = "https://shop.example.com/pad"
# As version 2 stored them: two events whose event ids, users and URLs differ
# only in a trailing space, one with non-ASCII text, all three aggregated
# already, and one still waiting in agg_pending.
V2_EVENTS = [
    (b"e:x", "x", "pad", "2024-05-17 10:00:00.000", URL, None, "clicks", 0, 10),
    (b"e:x ", "x ", "pad ", "2024-05-17 10:01:00.000", URL + " ", 1500, "clicks", 1, 11),
    (b"e:j", "j", "jürgen 😀", "2024-05-17 10:02:00.000", URL + "/ü", None, "clicks", 2, 12),
    (b"e:k", "k", "kim", "2024-05-17 10:03:00.000", URL, None, "clicks", 2, 13),
]
V2_PENDING = [b"e:k"]
# The aggregates of "pad" and "pad " were computed as if they were one user.
MERGED_USERS_EVENTS = [b"e:x", b"e:x "]
NEW_EVENT_ID = "x  "   # produced after the migration: another event, not "x" again


def create_v2_database(db):
    """The schema of version 2 with a few rows in every table."""
    for statement in V2_SCHEMA:
        db.query(statement)
    db.query("INSERT INTO clickloop_schema (id, version) VALUES (1, 2)")
    for e in V2_EVENTS:
        db.query("INSERT INTO click_data (row_key, event_id, user_id, event_time, url, "
                 "time_spent_ms, kafka_topic, kafka_partition, kafka_offset) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", e)
        if e[0] in V2_PENDING:
            db.query("INSERT INTO agg_pending (row_key, user_id, event_time) "
                     "VALUES (%s, %s, %s)", (e[0], e[2], e[3]))
    db.query("INSERT INTO geo_data VALUES (%s, 'DE', 'Berlin'), (%s, NULL, 'Berlin ')",
             (b"e:x", b"e:x "))
    db.query("INSERT INTO user_agent_data VALUES (%s, 'Firefox', 'Linux', 'desktop', "
             "'Mozilla/5.0'), (%s, 'Firefox ', NULL, NULL, NULL)", (b"e:x", b"e:x "))
    db.query("INSERT INTO rejected_events (kafka_topic, kafka_partition, kafka_offset, payload, "
             "reason) VALUES ('clicks', 3, 13, %s, 'not JSON')", (b"\xff\xfe{",))
    db.query("INSERT INTO agg_dirty VALUES (3600000, '2024-05-17 10:00:00', "
             "'2024-05-17 12:00:00.000001')")
    db.query("INSERT INTO agg_stats (window_ms, window_start, url_hash, country, url, clicks, "
             "unique_users, time_spent_sum, time_spent_samples, version, updated_at) "
             "VALUES (3600000, '2024-05-17 10:00:00', UNHEX(SHA2(%s, 256)), 'DE', %s, 2, 1, "
             "60000, 1, 1715940000000000, '2024-05-17 12:00:00')", (URL, URL))


def snapshot(db, leave_out_key=None, tables=DATA_TABLES):
    """{table: sorted rows} of every table but clickloop_schema, without the
    rows whose first column (row_key) is leave_out_key."""
    out = {}
    for table in tables:
        rows = [r for r in db.query(f"SELECT * FROM {table}")
                if leave_out_key is None or r[0] != leave_out_key]
        out[table] = sorted(rows, key=repr)
    return out


def collations(db):
    """({(table, column): collation} of the text columns, {table: default collation})."""
    columns = {(t, c): coll for t, c, coll in db.query(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns "
        "WHERE table_schema = %s AND collation_name IS NOT NULL", (db.name,))}
    tables = dict(db.query("SELECT table_name, table_collation FROM information_schema.tables "
                           "WHERE table_schema = %s", (db.name,)))
    return columns, tables


def create_statements(db):
    """{table: SHOW CREATE TABLE}, without the AUTO_INCREMENT counter."""
    return {t: re.sub(r" AUTO_INCREMENT=\d+", "", db.query(f"SHOW CREATE TABLE {t}")[0][1])
            for t in TABLES}


def run_until_migrated(env, config_path=None, db=None):
    """Start clickloop, wait until the schema is at SCHEMA_VERSION, stop it;
    returns the process (stopped)."""
    db = db or env.db
    proc = env.start(config_path)
    harness.wait_until(
        lambda: db.table_exists("clickloop_schema") and db.scalar(
            "SELECT version FROM clickloop_schema") == SCHEMA_VERSION,
        60, f"the schema to reach version {SCHEMA_VERSION}", check=proc.assert_running,
        describe=lambda: proc.log_tail(20))
    assert proc.stop() == 0, proc.log_tail()
    return proc


@pytest.fixture
def env(clickloop_bin, kafka_bootstrap, mariadb_params, tmp_path, request):
    e = harness.IngestEnv(clickloop_bin, kafka_bootstrap, mariadb_params, tmp_path,
                          request.node.name, partitions=1)
    try:
        yield e
    finally:
        e.close()


def test_migration_from_version_2_makes_text_columns_no_pad_and_keeps_the_data(env):
    create_v2_database(env.db)
    # What the migration is for: under utf8mb4_bin "pad" and "pad " are one user.
    assert env.db.scalar("SELECT COUNT(*) FROM click_data WHERE user_id = 'pad'") == 2
    assert env.db.scalar("SELECT COUNT(DISTINCT user_id) FROM click_data") == 3
    # agg_pending gains the merged users' events (version 3); agg_dirty the
    # windows of agg_stats, to be recomputed with their users (version 5).
    unqueued = [t for t in DATA_TABLES if t not in ("agg_pending", "agg_dirty")]
    before = snapshot(env.db, tables=unqueued)
    marks_before = set(env.db.query("SELECT window_ms, window_start FROM agg_dirty"))
    windows = set(env.db.query("SELECT window_ms, window_start FROM agg_stats"))

    proc = env.start()
    new_event = ('{"event_id":"%s","user_id":"pad ","timestamp":"2024-05-17T10:03:00Z",'
                 '"url":"%s"}' % (NEW_EVENT_ID, URL)).encode()
    env.produce([Message(new_event)])
    env.wait_caught_up(rows=len(V2_EVENTS) + 1, rejected=1, timeout=60)
    assert proc.stop() == 0, proc.log_tail()
    assert "schema migrated from version 2 to 5" in proc.log_text()

    columns, tables = collations(env.db)
    assert columns == {c: NO_PAD for c in TEXT_COLUMNS}
    assert tables == {t: NO_PAD for t in TABLES}
    new_key = b"e:" + NEW_EVENT_ID.encode()
    assert snapshot(env.db, leave_out_key=new_key, tables=unqueued) == before
    assert env.db.query("SELECT event_id, user_id FROM click_data WHERE row_key = %s",
                        (new_key,)) == ((NEW_EVENT_ID, "pad "),)
    assert env.db.scalar("SELECT COUNT(DISTINCT user_id) FROM click_data") == 4
    assert env.db.scalar("SELECT COUNT(*) FROM click_data WHERE user_id = 'pad'") == 1
    # The merged users' events are queued to be aggregated again, with the
    # event that was waiting and the new one; nobody else's.
    pending = {r[0] for r in env.db.query("SELECT row_key FROM agg_pending")}
    assert pending == set(MERGED_USERS_EVENTS + V2_PENDING + [new_key])
    # The events aggregated before and not queued again are done; every
    # aggregated window is marked for the recomputation that counts its users
    # (the run that would consume the marks has not come: the interval is
    # 10 s).
    done = {r[0] for r in env.db.query("SELECT row_key FROM agg_done")}
    assert done == {e[0] for e in V2_EVENTS} - set(MERGED_USERS_EVENTS + V2_PENDING)
    assert set(env.db.query("SELECT window_ms, window_start FROM agg_dirty")) == \
        marks_before | windows


def test_migrations_from_version_2_run_again_change_nothing(env):
    """An interrupted migration is run again from its start: converting
    converted tables and creating existing ones must neither fail nor change
    a row."""
    create_v2_database(env.db)
    run_until_migrated(env)
    env.db.query("INSERT INTO retention_state (id, pruned_before) "
                 "VALUES (1, '2024-04-17 12:00:00.123')")
    migrated = snapshot(env.db, tables=DATA_TABLES + NEW_TABLES)
    statements = create_statements(env.db)
    env.db.query("UPDATE clickloop_schema SET version = 2")

    proc = run_until_migrated(env)
    assert "schema migrated from version 2 to 5" in proc.log_text()
    assert create_statements(env.db) == statements
    assert snapshot(env.db, tables=DATA_TABLES + NEW_TABLES) == migrated


def test_new_database_gets_the_schema_of_a_migrated_one(env, mariadb_params):
    create_v2_database(env.db)
    run_until_migrated(env)
    fresh = harness.Database(mariadb_params)
    try:
        config = env.write_config(overrides={"mariadb": {"database": fresh.name}},
                                  name="fresh.json")
        proc = run_until_migrated(env, config, fresh)
        assert "schema migrated from version 0 to 5" in proc.log_text()
        assert create_statements(fresh) == create_statements(env.db)
        assert collations(fresh) == collations(env.db)
    finally:
        fresh.drop()
