"""Shared fixtures for the integration tests.

The servers are the real ones started by `deps/services up`; their addresses
come from the same environment variables that script reads, with the same
defaults, so a non-default port set for one is seen by both:

    CLICKLOOP_MARIADB_PORT     13306   user, password, database: clickloop
    CLICKLOOP_KAFKA_PORT       19092
    CLICKLOOP_ES_PORT          19200
    CLICKLOOP_OPENSEARCH_PORT  19201

A server that does not answer fails the test that needs it (it is not skipped:
a test run without its servers must not look green). Start them with
`deps/services up`.
"""

import os
import socket
import uuid
from pathlib import Path

import pytest

import harness

HOST = "127.0.0.1"
SOURCE_ROOT = Path(os.environ.get("CLICKLOOP_SOURCE_ROOT",
                                  Path(__file__).resolve().parents[2]))

MARIADB_USER = "clickloop"
MARIADB_PASSWORD = "clickloop"
MARIADB_DATABASE = "clickloop"


def _port(var, default):
    return int(os.environ.get(var, default))


def _require_listening(name, port):
    """Fail fast, with the fix in the message, when nothing listens."""
    try:
        with socket.create_connection((HOST, port), timeout=2):
            pass
    except OSError as exc:
        pytest.fail(f"{name} is not reachable on {HOST}:{port} ({exc}); "
                    f"start the test servers with `deps/services up`",
                    pytrace=False)


@pytest.fixture(scope="session")
def source_root():
    return SOURCE_ROOT


@pytest.fixture(scope="session")
def clickloop_bin():
    """The service binary: CLICKLOOP_BIN (set by meson test), else build/clickloop."""
    path = Path(os.environ.get("CLICKLOOP_BIN", SOURCE_ROOT / "build" / "clickloop"))
    if not path.is_file():
        pytest.fail(f"clickloop binary not found at {path}: build it (meson compile -C build)",
                    pytrace=False)
    return path


@pytest.fixture
def unique_name(request):
    """unique_name("prefix") -> "prefix-<test name>-<random>", lower case
    (index names must be), safe for topics, indices, groups and databases."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")

    def make(prefix="clickloop"):
        return f"{prefix}-{test[:40]}-{uuid.uuid4().hex[:10]}"
    return make


# ---------------------------------------------------------------- MariaDB

@pytest.fixture(scope="session")
def mariadb_params():
    """Keyword arguments for pymysql.connect as the clickloop user over TCP."""
    port = _port("CLICKLOOP_MARIADB_PORT", 13306)
    _require_listening("MariaDB", port)
    return dict(host=HOST, port=port, user=MARIADB_USER, password=MARIADB_PASSWORD,
                database=MARIADB_DATABASE, connect_timeout=5, read_timeout=60,
                write_timeout=60, charset="utf8mb4", autocommit=False)


@pytest.fixture
def mariadb_conn(mariadb_params):
    import pymysql
    conn = pymysql.connect(**mariadb_params)
    try:
        yield conn
    finally:
        conn.close()


# ---------------------------------------------------------------- Kafka

@pytest.fixture(scope="session")
def kafka_bootstrap():
    """bootstrap.servers of the test broker, e.g. "127.0.0.1:19092"."""
    port = _port("CLICKLOOP_KAFKA_PORT", 19092)
    _require_listening("Kafka", port)
    return f"{HOST}:{port}"


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


# ---------------------------------------------------------------- Elasticsearch / OpenSearch

@pytest.fixture(scope="session")
def es_url():
    """Base URL of the Elasticsearch 8.x test node, e.g. http://127.0.0.1:19200."""
    port = _port("CLICKLOOP_ES_PORT", 19200)
    _require_listening("Elasticsearch", port)
    return f"http://{HOST}:{port}"


@pytest.fixture(scope="session")
def opensearch_url():
    """Base URL of the OpenSearch 2.x test node, e.g. http://127.0.0.1:19201."""
    port = _port("CLICKLOOP_OPENSEARCH_PORT", 19201)
    _require_listening("OpenSearch", port)
    return f"http://{HOST}:{port}"


@pytest.fixture(scope="session")
def http():
    import requests
    with requests.Session() as session:
        yield session


@pytest.fixture
def env(clickloop_bin, kafka_bootstrap, mariadb_params, tmp_path, request):
    """An ingest environment of its own (topic, database, config) for the test;
    test files needing other topic settings define their own `env`."""
    e = harness.IngestEnv(clickloop_bin, kafka_bootstrap, mariadb_params, tmp_path,
                          request.node.name)
    try:
        yield e
    finally:
        e.close()
