"""Where a webhook request's time goes: `python -m bench profile` (not part of the six).

In this process, on its own database: the hook is called through Django's test client (the
whole middleware stack, production settings) for the three cases of benchmark 1, first to time
every SQL statement of one request (perf_counter around each execute), then under cProfile for
BENCH_PROFILE_REQUESTS requests. Prints, per case: wall ms per request, the SQL share, the
statements, and the functions with the most cumulative and own time. The slowest statements of
the 50-alert case are EXPLAINed (ANALYZE, BUFFERS) into the JSON.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from datetime import UTC, datetime, timedelta

from .common import Config, env_int, table
from .ingest import bulk_template, renotify_bodies, single_template
from .loadgen import Bodies
from .pages import _explain, _QueryTimer


def _post(client, body: bytes, token: str):
    return client.post(
        "/hooks/alertmanager",
        data=body,
        content_type="application/json",
        secure=True,
        headers={"Authorization": f"Bearer {token}"},
    )


def _stats(profile: cProfile.Profile, sort: str, limit: int | None = None) -> str:
    limit = limit or env_int("BENCH_PROFILE_LINES", 25)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats(sort).print_stats(limit)
    text = out.getvalue()
    start = text.find("   ncalls")
    return text[start:] if start >= 0 else text


def run(cfg: Config) -> dict:
    from django.db import connection
    from django.test import Client

    from .ingest import _integration_token

    token = _integration_token()
    client = Client(HTTP_HOST="127.0.0.1")
    requests = env_int("BENCH_PROFILE_REQUESTS", 200)
    starts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    # Some history first, so the queries run against a table that is not empty.
    history = renotify_bodies("h", starts, 2_000)
    for item in history.items:
        _post(client, item.encode(), token)
    renotify = renotify_bodies("b", starts, requests + 5)
    for item in renotify.items:
        _post(client, item.encode(), token)
    # (d) what a storm sends most: a group's notification repeating its 100 known alerts.
    storm_group = bulk_template("d", starts, size=100).template
    storm_body = storm_group.replace("@ID@", "0").replace("@GRP@", "storm")
    _post(client, storm_body.encode(), token)
    cases = {
        "a": single_template("a", starts),
        "b": renotify,
        "c": bulk_template("c", starts),
        "d": Bodies(mode="list", items=[storm_body], alerts_per_body=100),
    }
    results = {}
    for key, bodies in cases.items():
        n = requests if key in ("a", "b") else max(10, requests // 10)
        # One request with every statement timed.
        timer = _QueryTimer()
        body = bodies.body(0, 0, 1)
        with connection.execute_wrapper(timer):
            started = time.perf_counter()
            response = _post(client, body, token)
            one_ms = (time.perf_counter() - started) * 1000
        # Then many, under the profiler and without it.
        plain = []
        for i in range(1, n + 1):
            started = time.perf_counter()
            _post(client, bodies.body(1, i, 1), token)
            plain.append(time.perf_counter() - started)
        profile = cProfile.Profile()
        profile.enable()
        for i in range(1, n + 1):
            _post(client, bodies.body(2, i, 1), token)
        profile.disable()
        results[key] = {
            "status": response.status_code,
            "requests": n,
            "mean_ms": round(sum(plain) / len(plain) * 1000, 2),
            "one_request_ms": round(one_ms, 2),
            "sql_ms": round(sum(q["ms"] for q in timer.queries), 2),
            "queries": timer.queries,
            "cumulative": _stats(profile, "cumulative"),
            "own_time": _stats(profile, "tottime"),
        }
        if key in ("c", "d"):
            results[key]["explain"] = _explain(sorted(timer.queries, key=lambda q: -q["ms"]))
    return {"cases": results}


def report(result: dict) -> str:
    parts = []
    rows = [
        [
            key,
            c["status"],
            c["mean_ms"],
            c["one_request_ms"],
            c["sql_ms"],
            len(c["queries"]),
        ]
        for key, c in result["cases"].items()
    ]
    parts.append(
        table(
            ["case", "status", "mean ms (in-process)", "one request ms", "its SQL ms", "queries"],
            rows,
            title=(
                "Webhook profile (in-process test client; a = 1 new alert, b = 1 re-notified, "
                "c = 50 new, d = 100 re-notified: a storm's repeat)"
            ),
        )
    )
    for key, c in result["cases"].items():
        parts.append(f"\n-- case {key}: statements of one request")
        for q in c["queries"]:
            parts.append(f"{q['ms']:8.3f} ms  {q['sql'][:150]}")
        parts.append(f"\n-- case {key}: cumulative\n{c['cumulative']}")
        parts.append(f"-- case {key}: own time\n{c['own_time']}")
    for key in ("c", "d"):
        for plan in result["cases"].get(key, {}).get("explain", []):
            parts.append(f"-- ({key}) EXPLAIN of {plan['sql'][:200]}\n{plan['plan'][:3000]}")
    return "\n".join(parts)


def targets(result: dict) -> list[dict]:
    return []
