"""`python -m bench [NAME ...]` (`make bench`): run the benchmarks, print tables, write JSON.

Names: ingest (1), storm (2), analysis (3), pages (4), llm (5); memory (6) is read from what
ingest and analysis sampled. No names: all of them. `profile` (not in the default list) profiles
one webhook request per case in-process (cProfile, timed SQL, EXPLAIN), then measures each
case's CPU per request, the Python process's and its PostgreSQL backend's, against the
do-nothing view (BENCH_PROFILE_REQUESTS 200 profiled, on the wall clock or with
BENCH_PROFILE_TIMER=cpu on the CPU's; BENCH_PROFILE_CPU_ROUNDS 3 of BENCH_PROFILE_CPU_REQUESTS
1000).

Environment (or the matching options):
  BENCH_SCALE=0.1            multiply sizes and durations (default 1 = the issue's numbers)
  BENCH_PG_URL               the PostgreSQL server, default postgres://postgres@127.0.0.1:5432
  BENCH_REDIS_URL            the Redis server, default redis://127.0.0.1:6379
  BENCH_REDIS_DB             its database number (default: the first empty one of 15..8)
  BENCH_GUNICORN_CLASS       gthread (default, as production) or sync; BENCH_GUNICORN_THREADS 2
  BENCH_GUNICORN_WORKERS     default cores + 1 (gthread), 2 x cores + 1 (sync)
  BENCH_CELERY_CONCURRENCY   default 4, as docker-compose.yml runs the worker
  BENCH_CLIENT               wrk (default when installed) or asyncio
  BENCH_SCENARIOS            scenario files for 3 and 5 (default scenarios/*.yaml, scaled)
  BENCH_OUT                  results folder, default bench-results/
Each benchmark gets its own database vigil_bench_<name>_<run> (created, migrated, dropped) and
its own Celery queue on the Redis database; that database is flushed only if it was empty.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from vigil.gunicorn import DEFAULT_THREADS

from .common import PY, ROOT, Config, env_float, env_int, loadavg, machine_info, table

BENCHMARKS = ("ingest", "storm", "analysis", "pages", "llm")
EXTRAS = ("profile",)
TITLES = {
    "profile": "webhook profile",
    "ingest": "1 webhook ingestion",
    "storm": "2 alert storm",
    "analysis": "3 time to analysis",
    "pages": "4 pages at scale",
    "llm": "5 LLM cost",
    "memory": "6 memory",
}
MODULES = {
    "ingest": "bench.ingest",
    "storm": "bench.storm",
    "analysis": "bench.analysis",
    "pages": "bench.pages",
    "llm": "bench.llm_cost",
    "memory": "bench.memory",
    "profile": "bench.profile_webhook",
}
# Settings the children must not inherit: the benchmark decides them.
STRIPPED_ENV = (
    "VIGIL_TESTING",
    "VIGIL_DEBUG",
    "VIGIL_CELERY_EAGER",
    "VIGIL_CELERY_QUEUE",
    "VIGIL_VAR_DIR",
    "VIGIL_LLM",
    "VIGIL_LLM_BASE_URL",
    "VIGIL_LLM_API_KEY",
    "VIGIL_SSL_REDIRECT",
    "VIGIL_BENCH_CEILING",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "DJANGO_SETTINGS_MODULE",
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run: {', '.join((*BENCHMARKS, *EXTRAS))}"
    )
    parser.add_argument("--scale", type=float, default=env_float("BENCH_SCALE", 1.0))
    parser.add_argument("--out", default=os.environ.get("BENCH_OUT", str(ROOT / "bench-results")))
    parser.add_argument("--keep-db", action="store_true", help="do not drop the databases")
    parser.add_argument("--timeout", type=float, default=env_float("BENCH_CHILD_TIMEOUT", 3600))
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in (*BENCHMARKS, *EXTRAS)]
    if unknown:
        known = ", ".join((*BENCHMARKS, *EXTRAS))
        parser.error(f"unknown benchmark(s) {unknown}; known: {known}")
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    return args


# -- the servers --------------------------------------------------------------------------------


def pg_connect(pg_url: str, dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(f"{pg_url.rstrip('/')}/{dbname}", autocommit=True, connect_timeout=5)


def pg_version(pg_url: str) -> str:
    with pg_connect(pg_url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def create_database(pg_url: str, name: str) -> None:
    with pg_connect(pg_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(pg_url: str, name: str) -> None:
    with pg_connect(pg_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_client(redis_url: str, db: int):
    import redis

    return redis.Redis.from_url(f"{redis_url.rstrip('/')}/{db}", socket_connect_timeout=2)


def choose_redis_db(redis_url: str) -> tuple[int, bool]:
    """(db, owned): BENCH_REDIS_DB, or the first empty database of 15..8 (owned: flushable)."""
    explicit = os.environ.get("BENCH_REDIS_DB", "").strip()
    if explicit:
        db = int(explicit)
        return db, redis_client(redis_url, db).dbsize() == 0
    for db in range(15, 7, -1):
        if redis_client(redis_url, db).dbsize() == 0:
            return db, True
    raise SystemExit("no empty Redis database among 8..15: set BENCH_REDIS_DB")


def clean_redis(redis_url: str, db: int, owned: bool, queue: str) -> None:
    client = redis_client(redis_url, db)
    if owned:
        client.flushdb()
        return
    # Shared database: only this run's queue and its bindings (results expire by themselves).
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)


# -- running --------------------------------------------------------------------------------------


def child_env(cfg: Config, database: str, queue: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
    broker = cfg.broker_url()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "vigil.settings",
            "DATABASE_URL": cfg.database_url(database),
            "CELERY_BROKER_URL": broker,
            "CELERY_RESULT_BACKEND": broker,
            "VIGIL_CELERY_QUEUE": queue,
            "VIGIL_SECRET_KEY": "bench-" + secrets.token_urlsafe(32),
            "VIGIL_ALLOWED_HOSTS": "127.0.0.1",
            "VIGIL_VAR_DIR": str(Path(cfg.workdir) / "var"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def collect_static(cfg: Config) -> None:
    """Production settings serve hashed static files (whitenoise's manifest): collect them once."""
    env = child_env(cfg, "postgres", cfg.queue)
    subprocess.run(
        [PY, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )


def run_child(name: str, cfg: Config, args: argparse.Namespace) -> dict:
    database = f"vigil_bench_{name}_{cfg.run_id}"
    queue = f"{cfg.queue}-{name}"
    workdir = Path(cfg.workdir)
    config_path = workdir / f"config-{name}.json"
    result_path = workdir / f"result-{name}.json"
    child_cfg = Config(**{**cfg.__dict__, "queue": queue})
    child_cfg.dump(config_path)
    create_database(cfg.pg_url, database)
    started = time.monotonic()
    try:
        log = workdir / f"child-{name}.log"
        with open(log, "wb") as out:
            completed = subprocess.run(
                [PY, "-m", "bench.child", name, str(config_path), str(result_path)],
                cwd=ROOT,
                env=child_env(child_cfg, database, queue)
                # The profile compares the hook with the do-nothing view in-process.
                | ({"VIGIL_BENCH_CEILING": "1"} if name == "profile" else {}),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
            )
        if result_path.exists():
            outcome = json.loads(result_path.read_text())
        else:
            outcome = {
                "name": name,
                "error": f"the child exited {completed.returncode} without a result",
                "log_tail": log.read_text(errors="replace")[-4000:],
            }
    except subprocess.TimeoutExpired:
        outcome = {"name": name, "error": f"timed out after {args.timeout:g}s"}
    finally:
        if not args.keep_db:
            drop_database(cfg.pg_url, database)
        clean_redis(cfg.redis_url, cfg.redis_db, cfg.extra.get("redis_owned", False), queue)
    outcome["database"] = database
    outcome["wall_s"] = round(time.monotonic() - started, 1)
    return outcome


def scenario_list(scale: float) -> list[str]:
    raw = os.environ.get("BENCH_SCENARIOS", "").split()
    paths = []
    for pattern in raw or ["scenarios/*.yaml"]:
        matches = sorted(ROOT.glob(pattern)) if not Path(pattern).is_absolute() else []
        paths.extend(str(p) for p in (matches or [Path(pattern)]))
    if not raw and scale < 1:
        # Spread the subset over the whole list rather than taking the first few.
        count = max(1, math.ceil(len(paths) * scale))
        step = len(paths) / count
        paths = [paths[int(i * step)] for i in range(count)]
    return paths


def module(name: str):
    return importlib.import_module(MODULES[name])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    names = args.names or list(BENCHMARKS)
    pg_url = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
    try:
        pg = pg_version(pg_url)
    except Exception as exc:
        print(f"cannot reach PostgreSQL at {pg_url}: {exc}", file=sys.stderr)
        return 2
    try:
        redis_db, owned = choose_redis_db(redis_url)
        redis_version = redis_client(redis_url, redis_db).info("server").get("redis_version", "")
    except Exception as exc:
        print(f"cannot reach Redis at {redis_url}: {exc}", file=sys.stderr)
        return 2
    from .loadgen import choose_client

    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
    workdir = Path(tempfile.mkdtemp(prefix=f"vigil-bench-{run_id}-"))
    cores = os.cpu_count() or 2
    cfg = Config(
        run_id=run_id,
        scale=args.scale,
        workdir=str(workdir),
        pg_url=pg_url,
        redis_url=redis_url,
        redis_db=redis_db,
        queue=f"vigil-bench-{run_id}",
        # As production runs it (vigil/gunicorn.py): gthread, cores + 1 workers of 2 threads.
        gunicorn_workers=env_int(
            "BENCH_GUNICORN_WORKERS",
            cores + 1
            if os.environ.get("BENCH_GUNICORN_CLASS", "gthread") == "gthread"
            else 2 * cores + 1,
        ),
        gunicorn_class=os.environ.get("BENCH_GUNICORN_CLASS", "gthread"),
        gunicorn_threads=env_int("BENCH_GUNICORN_THREADS", DEFAULT_THREADS),
        celery_concurrency=env_int("BENCH_CELERY_CONCURRENCY", 4),
        client=choose_client(os.environ.get("BENCH_CLIENT", "auto")),
        wrk_threads=env_int("BENCH_WRK_THREADS", 1),
        scenarios=scenario_list(args.scale),
        extra={"redis_owned": owned},
    )
    machine = machine_info(pg_version=pg, redis_version=redis_version)
    print(
        f"vigil bench {run_id}: scale {args.scale:g}, {machine['cpu_model']}, {machine['cores']} "
        f"cores, {machine['ram_gib']} GiB, load {machine['loadavg_start']}, PostgreSQL {pg}, "
        f"Redis db {redis_db}, client {cfg.client}, workdir {workdir}",
        flush=True,
    )
    print("collecting static files (production settings serve the manifest)...", flush=True)
    collect_static(cfg)

    results: dict[str, dict] = {}
    outcomes: dict[str, dict] = {}
    for name in names:
        print(f"\n== {TITLES[name]} ==", flush=True)
        outcome = run_child(name, cfg, args)
        outcomes[name] = outcome
        if "error" in outcome:
            print(f"FAILED: {outcome['error']}\n{outcome.get('traceback', '')}", flush=True)
            print(outcome.get("log_tail", ""), flush=True)
            continue
        results[name] = outcome["result"]
        print(module(name).report(results[name]), flush=True)
        print(f"({outcome['wall_s']:g}s, database {outcome['database']})", flush=True)

    if "ingest" in results or "analysis" in results:
        results["memory"] = module("memory").summarize(results)
        print(f"\n== {TITLES['memory']} ==", flush=True)
        print(module("memory").report(results["memory"]), flush=True)

    summary = []
    for name in [*names, "memory"]:
        if name in results:
            try:
                summary.extend(module(name).targets(results[name]))
            except Exception as exc:  # a malformed result must not hide the others
                summary.append(
                    {
                        "benchmark": TITLES[name],
                        "figure": f"(summary failed: {exc})",
                        "value": None,
                        "target": "",
                        "met": None,
                    }
                )
        elif name in outcomes:
            summary.append(
                {
                    "benchmark": TITLES[name],
                    "figure": "did not run: " + outcomes[name]["error"][:80],
                    "value": None,
                    "target": "",
                    "met": False,
                }
            )
    print(
        "\n"
        + table(
            ["benchmark", "figure", "value", "target", "met"],
            [
                [
                    s["benchmark"],
                    s["figure"],
                    s["value"],
                    s["target"],
                    "n/a" if s["met"] is None else s["met"],
                ]
                for s in summary
            ],
            title=f"Summary (scale {args.scale:g}; load average now {loadavg()})",
        ),
        flush=True,
    )
    machine["loadavg_end"] = loadavg()
    document = {
        "run_id": run_id,
        "date": machine["date"],
        "scale": args.scale,
        "machine": machine,
        "config": {k: v for k, v in cfg.__dict__.items() if k not in ("workdir",)},
        "vigil_env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("VIGIL_", "BENCH_"))
            and not any(word in k for word in ("KEY", "TOKEN", "SECRET", "PASSWORD"))
        },
        "results": results,
        "runs": {
            n: {k: v for k, v in o.items() if k not in ("result",)} for n, o in outcomes.items()
        },
        "summary": summary,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-{run_id}.json"
    path.write_text(json.dumps(document, indent=2, default=str))
    shutil.copyfile(path, out_dir / "latest.json")
    print(f"\nwrote {path} (and {out_dir / 'latest.json'})")
    failed = [n for n, o in outcomes.items() if "error" in o]
    if not failed and not os.environ.get("BENCH_KEEP_WORKDIR"):
        shutil.rmtree(workdir, ignore_errors=True)
    elif failed:
        print(f"logs of the failed run(s) kept in {workdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
