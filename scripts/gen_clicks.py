#!/usr/bin/env python3
"""Print a sample clickstream as JSON lines (one event per line) on stdout.

usage: gen_clicks.py [COUNT] [--bad N] [--seed S]

Events use the flat layout of config.example.json. With --bad, N malformed
messages are mixed in so the demo shows rejected_events too.
"""
import argparse
import json
import random
import time

URLS = ["/", "/pricing", "/docs/start", "/blog/clickloop-1-0", "/signup", "/cart", "/checkout"]
COUNTRIES = [("DE", "Berlin"), ("FR", "Paris"), ("US", "Austin"), ("JP", "Osaka"), ("BR", "Recife")]
BROWSERS = [("Firefox", "Linux", "desktop"), ("Chrome", "Android", "mobile"), ("Safari", "iOS", "mobile")]
BAD = ['{"user_id": 1', '[1,2,3]', '{"url": "/x", "timestamp": 1764338400}',
       '{"user_id": "u1", "url": "/x", "timestamp": "2026-11-28T14:00:00"}',
       '{"user_id": "u1", "url": "", "timestamp": 1764338400}']


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("count", type=int, nargs="?", default=10000)
    ap.add_argument("--bad", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    now = int(time.time())
    bad_at = set(rnd.sample(range(a.count + a.bad), a.bad)) if a.bad else set()
    for i in range(a.count + a.bad):
        if i in bad_at:
            print(rnd.choice(BAD))
            continue
        country, city = rnd.choice(COUNTRIES)
        browser, os_, device = rnd.choice(BROWSERS)
        ev = {
            "event_id": f"demo-{a.seed}-{i}",
            "user_id": f"user-{rnd.randrange(500)}",
            "timestamp": now - rnd.randrange(3 * 86400),
            "url": "https://shop.example" + rnd.choice(URLS),
            "country": country,
            "city": city,
            "browser": browser,
            "os": os_,
            "device": device,
        }
        if rnd.random() < 0.3:
            ev["time_spent_ms"] = rnd.randrange(500, 120000)
        print(json.dumps(ev, separators=(",", ":")))


if __name__ == "__main__":
    main()
