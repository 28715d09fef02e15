"""The reference of scripts/bench-ingest: the Kafka -> MariaDB consumer that a
user would otherwise glue together in Python, written plainly and fairly.

confluent-kafka consumer (librdkafka underneath, as in clickloop) with
enable.auto.commit=false; PyMySQL on one connection with the session settings
clickloop uses. Each round takes up to --batch messages (waiting at most
--batch-delay-ms, like clickloop's batch_max_events / batch_max_delay), turns
every event into the same rows clickloop stores (same row keys, same column
values), writes them in one transaction with executemany() and INSERT ... ON
DUPLICATE KEY UPDATE (PyMySQL sends each as multi-row INSERTs), and after
COMMIT commits the next offsets of the batch synchronously. Malformed events
go to rejected_events in the same transaction.

It runs until SIGTERM or SIGINT. It is started by scripts/bench-ingest, not by
a test, and must not be imported by anything that is measured.
"""

import argparse
import json
import signal
import sys
import time

import pymysql
from confluent_kafka import Consumer, KafkaException, TopicPartition

EPOCH_MS_FROM = 100_000_000_000  # numbers at or above this are milliseconds (event.h)

CLICK_SQL = ("INSERT INTO click_data (row_key,event_id,user_id,event_time,url,time_spent_ms,"
             "kafka_topic,kafka_partition,kafka_offset) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
             "ON DUPLICATE KEY UPDATE row_key=row_key")
PENDING_SQL = ("INSERT INTO agg_pending (row_key,user_id,event_time) VALUES (%s,%s,%s) "
               "ON DUPLICATE KEY UPDATE row_key=row_key")
GEO_SQL = ("INSERT INTO geo_data (row_key,country,city) VALUES (%s,%s,%s) "
           "ON DUPLICATE KEY UPDATE row_key=row_key")
AGENT_SQL = ("INSERT INTO user_agent_data (row_key,browser,os,device,user_agent) "
             "VALUES (%s,%s,%s,%s,%s) ON DUPLICATE KEY UPDATE row_key=row_key")
REJECTED_SQL = ("INSERT INTO rejected_events (kafka_topic,kafka_partition,kafka_offset,payload,"
                "reason) VALUES (%s,%s,%s,%s,%s) ON DUPLICATE KEY UPDATE id=id")


class Rejected(Exception):
    pass


def text(ev, name, required=False):
    v = ev.get(name)
    if v is None:
        if required:
            raise Rejected(f"{name}: missing")
        return None
    if not isinstance(v, str):
        raise Rejected(f"{name}: expected a string")
    if v == "":
        raise Rejected(f"{name}: must not be empty")
    return v


def event_time(v):
    """`timestamp` as a DATETIME(3) literal in UTC (epoch numbers or RFC 3339)."""
    if isinstance(v, bool) or v is None:
        raise Rejected("timestamp: missing or not a number or string")
    if isinstance(v, (int, float)):
        if v < 0:
            raise Rejected("timestamp: negative")
        ms = int(v) if v >= EPOCH_MS_FROM else int(v * 1000 + 0.0005)
    elif isinstance(v, str):
        from datetime import datetime
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise Rejected("timestamp: not RFC 3339") from None
        if dt.tzinfo is None:
            raise Rejected("timestamp: no time zone")
        ms = int(dt.timestamp() * 1000)
    else:
        raise Rejected("timestamp: expected a number or a string")
    sec, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec)) + f".{milli:03d}"


def rows_of(msg):
    """(click, geo or None, agent or None) rows of one message; raises Rejected."""
    try:
        ev = json.loads(msg.value())
    except (TypeError, ValueError) as exc:
        raise Rejected(f"not JSON: {exc}") from None
    if not isinstance(ev, dict):
        raise Rejected("not a JSON object")
    event_id = text(ev, "event_id")
    user_id = ev.get("user_id")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    else:
        user_id = text(ev, "user_id", required=True)
    when = event_time(ev.get("timestamp"))
    url = text(ev, "url", required=True)
    country = text(ev, "country")
    if country is not None:
        if len(country) != 2 or not country.isascii() or not country.isalpha():
            raise Rejected("country: not an ISO 3166-1 alpha-2 code")
        country = country.upper()
    city, browser, os_, device, agent = (text(ev, n) for n in
                                         ("city", "browser", "os", "device", "user_agent"))
    spent = ev.get("time_spent_ms")
    if spent is not None:
        if isinstance(spent, bool) or not isinstance(spent, (int, float)) or spent < 0:
            raise Rejected("time_spent_ms: expected a non-negative number")
        spent = int(spent + 0.5)
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    key = f"e:{event_id}" if event_id is not None else f"k:{topic}:{partition}:{offset}"
    click = (key, event_id, user_id, when, url, spent, topic, partition, offset)
    geo = (key, country, city) if country is not None or city is not None else None
    agent_row = ((key, browser, os_, device, agent)
                 if (browser, os_, device, agent) != (None, None, None, None) else None)
    return click, geo, agent_row


def write_batch(conn, msgs, agg_pending):
    clicks, pending, geos, agents, rejected = [], [], [], [], []
    for m in msgs:
        try:
            click, geo, agent = rows_of(m)
        except Rejected as exc:
            rejected.append((m.topic(), m.partition(), m.offset(), m.value(), str(exc)))
            continue
        clicks.append(click)
        if agg_pending:
            pending.append((click[0], click[2], click[3]))
        if geo is not None:
            geos.append(geo)
        if agent is not None:
            agents.append(agent)
    with conn.cursor() as cur:
        for sql, rows in ((CLICK_SQL, clicks), (PENDING_SQL, pending), (GEO_SQL, geos),
                          (AGENT_SQL, agents), (REJECTED_SQL, rejected)):
            if rows:
                cur.executemany(sql, rows)
    conn.commit()


def next_offsets(msgs):
    last = {}
    for m in msgs:
        key = (m.topic(), m.partition())
        last[key] = max(last.get(key, -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--db-host", default="127.0.0.1")
    ap.add_argument("--db-port", type=int, default=3306)
    ap.add_argument("--db-user", required=True)
    ap.add_argument("--db-password", required=True)
    ap.add_argument("--database", required=True)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--batch-delay-ms", type=int, default=200)
    ap.add_argument("--no-agg-pending", action="store_true",
                    help="write only click_data, geo_data and user_agent_data")
    a = ap.parse_args()

    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))

    conn = pymysql.connect(host=a.db_host, port=a.db_port, user=a.db_user,
                           password=a.db_password, database=a.database, charset="utf8mb4",
                           autocommit=False,
                           init_command="SET SESSION sql_mode='STRICT_ALL_TABLES,"
                                        "NO_ENGINE_SUBSTITUTION', time_zone='+00:00'")
    consumer = Consumer({"bootstrap.servers": a.brokers, "group.id": a.group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": False})
    consumer.subscribe([a.topic])
    try:
        while not stopping:
            msgs = consumer.consume(num_messages=a.batch, timeout=a.batch_delay_ms / 1000)
            for m in msgs:
                if m.error() is not None:
                    raise KafkaException(m.error())
            if msgs:
                write_batch(conn, msgs, not a.no_agg_pending)
                consumer.commit(offsets=next_offsets(msgs), asynchronous=False)
    finally:
        consumer.close()
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
