"""The test servers of deps/services are real, reachable and of the expected
versions: a message goes through the Kafka broker, SQL round-trips through
MariaDB as the clickloop user, and a document is indexed and fetched back on
Elasticsearch and on OpenSearch.

Run: deps/services up && .venv/bin/python -m pytest -q test/integration/test_servers.py
"""

import glob
import os
import re
import subprocess
import time

import pytest

TIMEOUT = 30  # seconds for any single wait on a server


# ---------------------------------------------------------------- MariaDB

def test_mariadb_sql_round_trip(mariadb_conn):
    with mariadb_conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        (version,) = cur.fetchone()
        assert "MariaDB" in version, version
        cur.execute("CREATE TEMPORARY TABLE t_servers "
                    "(id INT PRIMARY KEY, url VARCHAR(255) NOT NULL) ENGINE=InnoDB")
        cur.executemany("INSERT INTO t_servers (id, url) VALUES (%s, %s)",
                        [(1, "https://example.org/a"), (2, "https://example.org/ü")])
    mariadb_conn.commit()
    with mariadb_conn.cursor() as cur:
        cur.execute("SELECT id, url FROM t_servers ORDER BY id")
        assert cur.fetchall() == ((1, "https://example.org/a"), (2, "https://example.org/ü"))


def test_mariadb_durability_setting(mariadb_conn):
    # The crash tests of the service rely on a flush at every commit.
    with mariadb_conn.cursor() as cur:
        cur.execute("SELECT @@innodb_flush_log_at_trx_commit, @@bind_address")
        flush, bind = cur.fetchone()
    assert int(flush) == 1
    assert bind == "127.0.0.1"


def test_mariadb_user_may_create_test_databases(mariadb_conn, unique_name):
    # GRANT ALL ON `clickloop\_%`.*: tests can have a database of their own.
    db = unique_name("clickloop").replace("-", "_")[:64]
    with mariadb_conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}`")
        try:
            cur.execute(f"CREATE TABLE `{db}`.t (id INT PRIMARY KEY)")
            cur.execute(f"INSERT INTO `{db}`.t VALUES (42)")
            mariadb_conn.commit()
            cur.execute(f"SELECT id FROM `{db}`.t")
            assert cur.fetchall() == ((42,),)
        finally:
            cur.execute(f"DROP DATABASE `{db}`")


# ---------------------------------------------------------------- Kafka

def test_kafka_produce_consume(kafka_bootstrap, kafka_admin, unique_name):
    from confluent_kafka import Consumer, KafkaError, Producer
    from confluent_kafka.admin import NewTopic

    topic = unique_name("clickloop-servers")
    futures = kafka_admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                                        operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    futures[topic].result(timeout=TIMEOUT)

    sent = [f'{{"n":{i},"topic":"{topic}"}}'.encode() for i in range(10)]
    delivered, errors = [], []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or msg.value())

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all",
                         "enable.idempotence": True})
    for value in sent:
        producer.produce(topic, value=value, key=b"k", on_delivery=on_delivery)
    assert producer.flush(TIMEOUT) == 0, "messages still queued after flush"
    assert errors == []
    assert delivered == sent

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    received = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT
        while len(received) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(timeout=max(0.1, deadline - time.monotonic()))
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                continue
            received.append(msg.value())
    finally:
        consumer.close()
        kafka_admin.delete_topics([topic], operation_timeout=TIMEOUT)
    assert received == sent


def _kafka_listener_jars(port):
    """Jar names on the classpath of the process listening on the broker port
    (needs to see other users' processes: root, or the same user)."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                         text=True, check=False).stdout
    m = re.search(r"pid=(\d+)", out)
    if not m:
        return None
    with open(f"/proc/{m.group(1)}/cmdline", "rb") as f:
        args = f.read().decode(errors="replace").split("\0")
    cp = args[args.index("-cp") + 1] if "-cp" in args else ""
    jars = []
    for entry in cp.split(":"):
        jars += [os.path.basename(p) for p in glob.glob(entry)]
    return jars


def test_kafka_broker_is_3_9(kafka_bootstrap):
    jars = _kafka_listener_jars(int(kafka_bootstrap.rsplit(":", 1)[1]))
    if jars is None:
        pytest.skip("cannot see the broker process to read its version")
    versions = [m.group(1) for j in jars if (m := re.fullmatch(r"kafka_2\.13-(.+)\.jar", j))]
    assert versions, f"no kafka_2.13 jar on the broker classpath: {jars}"
    assert all(v.startswith("3.9.") for v in versions), versions


# ---------------------------------------------------------------- Elasticsearch / OpenSearch

def _index_and_fetch(http, base, index):
    """Create an index, index one document with refresh, fetch it by id and by search."""
    doc = {"url": "https://example.org/ü", "clicks": 3, "window": "2024-01-01T00:00:00Z"}
    r = http.put(f"{base}/{index}", json={"settings": {"number_of_shards": 1,
                                                       "number_of_replicas": 0}},
                 timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    try:
        r = http.put(f"{base}/{index}/_doc/doc-1", params={"refresh": "true"}, json=doc,
                     timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        assert r.json()["result"] == "created"

        r = http.get(f"{base}/{index}/_doc/doc-1", timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        assert r.json()["found"] is True
        assert r.json()["_source"] == doc

        r = http.post(f"{base}/{index}/_search", json={"query": {"term": {"clicks": 3}}},
                      timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]["hits"]
        assert [h["_id"] for h in hits] == ["doc-1"]
    finally:
        http.delete(f"{base}/{index}", timeout=TIMEOUT)


def _node_version(http, base):
    """Version of the (single) node. Not `GET /`: Elasticsearch's integ-test-zip
    lacks the rest-root module that serves it (405 there)."""
    r = http.get(f"{base}/_nodes/_local", params={"filter_path": "nodes.*.version"},
                 timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    (node,) = r.json()["nodes"].values()
    return r, node["version"]


def test_elasticsearch_8(http, es_url, unique_name):
    r, version = _node_version(http, es_url)
    assert r.headers.get("X-elastic-product") == "Elasticsearch", dict(r.headers)
    assert version.startswith("8."), version
    _index_and_fetch(http, es_url, unique_name("clickloop-servers"))


def test_opensearch_2(http, opensearch_url, unique_name):
    info = http.get(opensearch_url, timeout=TIMEOUT).json()
    assert info["version"].get("distribution") == "opensearch", info
    _, version = _node_version(http, opensearch_url)
    assert version.startswith("2."), version
    assert info["version"]["number"] == version
    _index_and_fetch(http, opensearch_url, unique_name("clickloop-servers"))
