"""`make bench` runs end to end at a tiny scale and writes valid JSON.

Benchmarks measure; these tests never look at a timing. They check that every benchmark ran on
real servers (PostgreSQL, Redis, gunicorn, a Celery worker), that the JSON has the machine, the
results and a summary line per target, and that the throwaway databases are gone afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
MACHINE_KEYS = {"date", "cpu_model", "cores", "ram_gib", "kernel", "python", "postgresql"}


def _servers() -> tuple[str, str]:
    """The suite's own PostgreSQL and Redis (as .ci/run sets them), without database names."""
    database = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not database.startswith(("postgres://", "postgresql://")) or not broker.startswith(
        "redis://"
    ):
        pytest.skip("the benchmarks need PostgreSQL and Redis (DATABASE_URL, CELERY_BROKER_URL)")
    db = urlsplit(database)
    redis = urlsplit(broker)
    return f"{db.scheme}://{db.netloc}", f"{redis.scheme}://{redis.netloc}"


def _run_bench(tmp_path: Path, *names: str, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    pg_url, redis_url = _servers()
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", *names, "--scale", "0.01", "--out", str(out)],
        cwd=ROOT,
        env={
            **os.environ,
            "BENCH_PG_URL": pg_url,
            "BENCH_REDIS_URL": redis_url,
            "BENCH_SCENARIOS": "scenarios/01-bad-deploy.yaml",
            "BENCH_ANALYSIS_WARMUP": "0",
            "BENCH_PAGES_REQUESTS": "2",
            "BENCH_STORM_SETTLE": "20",
            "BENCH_PROFILE_REQUESTS": "5",
            # Fewer processes start faster; the harness is what is tested here.
            "BENCH_GUNICORN_WORKERS": "2",
            "BENCH_CELERY_CONCURRENCY": "2",
            # Re-collection is debounced 30 s by default; the storm waits for it to settle.
            "VIGIL_COLLECT_DEBOUNCE": "1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-3000:]
    latest = out / "latest.json"
    document = json.loads(latest.read_text())
    assert (out / f"bench-{document['run_id']}.json").exists()
    return completed, document


def _databases_left(run_id: str) -> list[str]:
    import psycopg

    pg_url, _ = _servers()
    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"vigil_bench_%{run_id}"]
        ).fetchall()
    return [r[0] for r in rows]


def test_every_benchmark_runs_and_writes_json(tmp_path):
    completed, document = _run_bench(tmp_path)

    assert set(document["machine"]) >= MACHINE_KEYS
    assert document["scale"] == 0.01
    results = document["results"]
    assert set(results) == {"ingest", "storm", "analysis", "pages", "llm", "memory"}
    # Every figure the summary compares with a target is there, with a yes/no.
    summary = document["summary"]
    benchmarks = {line["benchmark"].split()[0] for line in summary}
    assert benchmarks == {"1", "2", "3", "4", "5", "6"}
    for line in summary:
        assert set(line) == {"benchmark", "figure", "value", "target", "met"}
        assert line["met"] in (True, False)

    ingest = results["ingest"]
    assert set(ingest["cases"]) == {"ceiling", "a", "b", "c"}
    for case in ingest["cases"].values():
        assert case["requests"] > 0
        assert {"p50", "p95", "p99"} <= set(case["latency_ms"])
        per_request = case["cpu_ms_per_request"]
        assert {"gunicorn", "postgres", "machine", "stolen", "client"} <= set(per_request)
        assert per_request["gunicorn"] == pytest.approx(
            case["server_cpu_s"]["gunicorn"] / case["requests"] * 1000, abs=1e-3
        )
    assert ingest["gunicorn"]["workers"] >= 1
    # (a) and (c) measure alerts joining open incidents: every group was opened before each.
    assert ingest["incidents_opened_in_cases"] == {"a": 0, "c": 0}
    # (a) and (b) are each divided by a ceiling measured just before them, (c) by the first.
    assert set(ingest["ceiling_just_before"]) == {"a", "b"}
    for key in ("a", "b", "c"):
        case = ingest["cases"][key]
        reference = ingest["ceiling_just_before"].get(key, ingest["cases"]["ceiling"]["rps"])
        assert case["ceiling_rps"] == reference > 0
        assert case["ratio_of_ceiling"] == pytest.approx(case["rps"] / reference, abs=1e-3)
    # Real servers took part: their processes were sampled for benchmark 6.
    roles = {p["role"] for p in results["memory"]["processes"]}
    assert {"gunicorn child", "celery child"} <= roles

    assert results["storm"]["notifications"] > 0
    assert results["storm"]["incidents"] >= 1
    assert [s["scenario"] for s in results["analysis"]["scenarios"]] == ["01-bad-deploy"]
    assert [s["scenario"] for s in results["llm"]["scenarios"]] == ["01-bad-deploy"]
    assert len(results["pages"]["steps"]) == 2
    for step in results["pages"]["steps"]:
        assert step["pages"]["list"]["queries"] > 0
        # How much of the machine the hypervisor took while each page was timed.
        assert all(0 <= page["stolen_share"] <= 1 for page in step["pages"].values())

    for title in ("1. Webhook ingestion", "2. Alert storm", "3. Time to analysis", "Summary"):
        assert title in completed.stdout
    assert _databases_left(document["run_id"]) == []


@pytest.mark.skipif(shutil.which("wrk") is None, reason="without wrk the asyncio client ran above")
def test_ingest_with_the_asyncio_client(tmp_path):
    _, document = _run_bench(tmp_path, "ingest", BENCH_CLIENT="asyncio")

    ingest = document["results"]["ingest"]
    assert ingest["client"] == "asyncio"
    assert all(case["requests"] > 0 for case in ingest["cases"].values())
    assert all(case["client_cpu_s"] >= 0 for case in ingest["cases"].values())


def test_the_webhook_profile_compares_each_case_with_the_ceiling_in_process(tmp_path):
    completed, document = _run_bench(
        tmp_path, "profile", BENCH_PROFILE_CPU_ROUNDS="1", BENCH_PROFILE_CPU_REQUESTS="20"
    )

    profile = document["results"]["profile"]
    assert {case["status"] for case in profile["cases"].values()} == {200}
    cpu = profile["cpu"]
    assert (cpu["rounds"], cpu["requests"]) == (1, 20)
    # The do-nothing view was reachable (bench/__main__.py turns it on for this child).
    assert list(cpu["cases"]) == ["ceiling", "a", "b", "c"]
    for case in cpu["cases"].values():
        assert case["python_ms"] > 0
        assert case["postgres_ms"] is not None  # the backend's /proc entry was read
    assert "CPU per request in-process" in completed.stdout
    assert _databases_left(document["run_id"]) == []


def test_the_storm_plan_paces_every_group_over_the_window():
    from bench.storm import NOTIFICATIONS, plan

    schedule = plan(groups=4, per_group=20, seconds=6.0, mode="cumulative")

    assert len(schedule) == 4 * NOTIFICATIONS
    assert all(0 <= at < 6.0 for at, _, _, _ in schedule)
    assert [at for at, _, _, _ in schedule] == sorted(at for at, _, _, _ in schedule)
    assert sum(new for _, _, _, new in schedule) == 80
    last = [json.loads(body) for _, group, body, _ in schedule if group == 0][-1]
    # As Alertmanager does: a group's notification carries all of its alerts so far.
    assert len(last["alerts"]) == 20
    assert len({a["fingerprint"] for a in last["alerts"]}) == 20


def test_generated_bodies_carry_new_fingerprints_on_every_request():
    from datetime import UTC, datetime

    from bench.ingest import bulk_template, single_template

    now = datetime.now(UTC)
    single = single_template("a", now)
    bodies = [json.loads(single.body(w, n)) for w in range(2) for n in range(50)]
    assert len({b["alerts"][0]["fingerprint"] for b in bodies}) == 100
    assert len({b["groupKey"] for b in bodies}) == 50

    bulk = json.loads(bulk_template("c", now).body(0, 1))
    assert len({a["fingerprint"] for a in bulk["alerts"]}) == 50
    assert "@" not in json.dumps(bulk)


def test_concurrent_senders_post_to_different_groups():
    """Alertmanager never sends two notifications of one group at once: 16 senders at the same
    step must not all land on one group's lock (they did, each counting from the same start)."""
    from datetime import UTC, datetime

    from bench.ingest import GROUPS, single_template

    single = single_template("a", datetime.now(UTC))
    for step in (1, 7, GROUPS + 3):
        same_step = [json.loads(single.body(w, step, 16))["groupKey"] for w in range(16)]
        assert len(set(same_step)) == 16
    # Each sender still goes round every group.
    one_sender = {json.loads(single.body(5, n, 16))["groupKey"] for n in range(GROUPS)}
    assert len(one_sender) == GROUPS


def test_percentiles_are_nearest_rank():
    from bench.common import latency_summary, percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([], 95) is None
    assert latency_summary([0.001, 0.002])["p50"] == 1.0


def test_cpu_per_request_divides_each_process_group_by_the_answered_requests():
    from bench.ingest import cpu_per_request

    case = {
        "requests": 4_000,
        "client_cpu_s": 1.0,
        "server_cpu_s": {"gunicorn": 4.4, "postgres": 2.0, "celery": None, "machine": 12.0},
    }
    assert cpu_per_request(case) == {
        "client": 0.25,
        "gunicorn": 1.1,
        "postgres": 0.5,
        "machine": 3.0,
    }
    assert cpu_per_request({**case, "requests": 0}) == {}


def test_cpu_tally_keeps_a_process_that_exited_during_the_span():
    """A PostgreSQL backend whose connection is replaced mid-case exits with its CPU: two
    snapshots lose it, the tally keeps what it last sampled."""
    from bench.common import CpuTally, cpu_delta, cpu_snapshot

    burn = (
        "import sys, time\n"
        "sys.stdin.readline()\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 1.0:\n"
        "    pass\n"
    )
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, text=True)
    roots = {"burner": child.pid}
    with CpuTally(roots, interval=0.05) as tally:
        child.communicate("go\n", timeout=60)
    assert child.returncode == 0
    assert tally.seconds()["burner"] >= 0.5
    assert cpu_delta(tally.before, cpu_snapshot(roots))["burner"] == 0


def test_the_machine_time_leaves_out_what_the_hypervisor_stole(monkeypatch):
    from bench import common

    ticks = "cpu  100 20 30 400 50 5 5 40 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
    monkeypatch.setattr(common, "_read", lambda path: ticks)
    monkeypatch.setattr(common, "CLK_TCK", 100)
    assert common.machine_cpu_seconds() == pytest.approx(1.6)  # user nice system irq softirq
    assert common.stolen_cpu_seconds() == pytest.approx(0.4)
    monkeypatch.setattr(common.os, "cpu_count", lambda: 2)
    assert common.stolen_share((1.0, 10.0), (1.5, 15.0)) == 0.05
    assert common.stolen_share((1.0, 10.0), (1.0, 10.0)) is None


@pytest.mark.parametrize(("timer", "sleep_counts"), [("wall", True), ("cpu", False)])
def test_the_webhook_profile_can_count_cpu_instead_of_waiting(monkeypatch, timer, sleep_counts):
    """On the CPU clock (BENCH_PROFILE_TIMER=cpu) a function that only waits, as psycopg does
    for PostgreSQL, costs nothing; on the wall clock it costs its wait."""
    import pstats
    import time

    from bench.profile_webhook import _profiler

    def waits() -> None:
        time.sleep(0.2)

    monkeypatch.setenv("BENCH_PROFILE_TIMER", timer)
    profile = _profiler()
    profile.enable()
    waits()
    profile.disable()
    stats = pstats.Stats(profile).stats
    waited = next(v[3] for k, v in stats.items() if k[2] == "waits")  # cumulative seconds
    assert (waited >= 0.15) is sleep_counts
