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
import os
import pstats
import time
from datetime import UTC, datetime, timedelta

from .common import Config, env_int, process_cpu_seconds, table
from .ingest import bulk_template, renotify_bodies, single_template
from .loadgen import Bodies
from .pages import _explain, _QueryTimer


def _post(client, body: bytes, token: str, path: str = "/hooks/alertmanager"):
    return client.post(
        path,
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


def _profiler() -> cProfile.Profile:
    """cProfile on the wall clock (default), or on this process's CPU clock with
    BENCH_PROFILE_TIMER=cpu. On the wall clock a function that waits on PostgreSQL or the socket
    reads as slow (psycopg's `_send_query_prepared`: 0.33 ms a webhook on the wall clock, 9 µs of
    CPU); the ratio to the ceiling depends on the CPU, which the CPU clock shows (each reading
    is a system call, so the profile itself costs more)."""
    if os.environ.get("BENCH_PROFILE_TIMER", "wall").strip() == "cpu":
        return cProfile.Profile(time.process_time)
    return cProfile.Profile()


CEILING = "/bench/ceiling"  # vigil/urls.py, with VIGIL_BENCH_CEILING=1 (bench/__main__.py sets it)


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def in_process_cpu(client, token: str, cases: dict[str, tuple[str, Bodies]]) -> dict:
    """CPU per request in-process, this interpreter's and its PostgreSQL backend's, for each case
    and for the do-nothing view (VIGIL_BENCH_CEILING): what the hook adds to a request is what
    its ratio to the ceiling in `make bench` ingest depends on, and here it is measured without
    the other processes of a loaded machine. Each round opens a new connection (a new backend,
    its statements prepared anew, as in production every CONN_MAX_AGE) and takes the cases in
    turn; the figures are each case's median over the rounds.
    """
    from django.db import connection

    rounds = env_int("BENCH_PROFILE_CPU_ROUNDS", 3)
    requests = env_int("BENCH_PROFILE_CPU_REQUESTS", 1000)
    samples: dict[str, list[tuple[float, float | None]]] = {key: [] for key in cases}
    for number in range(rounds):
        for key, (path, bodies) in cases.items():
            n = requests if bodies.alerts_per_body == 1 else max(10, requests // 10)
            connection.close()
            pid = _backend_pid()
            sender = 16 + number * len(cases) + list(cases).index(key)
            for i in range(10):  # prepared statements, caches
                _post(client, bodies.body(sender, n + i, 1), token, path)
            python, backend = time.process_time(), process_cpu_seconds(pid)
            for i in range(n):
                _post(client, bodies.body(sender, i, 1), token, path)
            after = process_cpu_seconds(pid)
            samples[key].append(
                (
                    (time.process_time() - python) / n * 1000,
                    None if backend is None or after is None else (after - backend) / n * 1000,
                )
            )
    out = {}
    for key, rows in samples.items():
        python = sorted(r[0] for r in rows)[len(rows) // 2]
        known = sorted(r[1] for r in rows if r[1] is not None)
        postgres = known[len(known) // 2] if known else None
        out[key] = {"python_ms": round(python, 3), "postgres_ms": _round(postgres)}
    return {"rounds": rounds, "requests": requests, "cases": out}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


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
        profile = _profiler()
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
    cpu_cases = {
        "a": ("/hooks/alertmanager", single_template("pa", starts)),
        "b": ("/hooks/alertmanager", renotify),
        "c": ("/hooks/alertmanager", bulk_template("pc", starts)),
    }
    ceiling = single_template("px", starts)
    if _post(client, ceiling.body(0, 0, 1), token, CEILING).status_code == 200:
        cpu_cases = {"ceiling": (CEILING, ceiling), **cpu_cases}
    return {"cases": results, "cpu": in_process_cpu(client, token, cpu_cases)}


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
    cpu = result.get("cpu")
    if cpu:
        parts.append("\n" + cpu_report(cpu))
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


def cpu_report(cpu: dict) -> str:
    ceiling = cpu["cases"].get("ceiling")
    base = ceiling["python_ms"] + (ceiling["postgres_ms"] or 0) if ceiling else None
    rows = []
    for key, case in cpu["cases"].items():
        total = case["python_ms"] + (case["postgres_ms"] or 0)
        rows.append(
            [
                key,
                case["python_ms"],
                case["postgres_ms"],
                round(total, 3),
                None if base is None else round(total - base, 3),
            ]
        )
    return table(
        ["case", "python ms", "postgres ms", "total ms", "over the ceiling ms"],
        rows,
        title=(
            f"CPU per request in-process (median of {cpu['rounds']} rounds of "
            f"{cpu['requests']} requests, 1/10 as many for (c); postgres: this connection's "
            "backend)"
        ),
    )


def targets(result: dict) -> list[dict]:
    return []
