"""`make bench`: the benchmarks of issue 10, measured against real servers on throwaway databases.

Layout: `python -m bench` (bench/__main__.py) is the runner. It records the machine, then runs
each benchmark in a child process (`python -m bench.child NAME`) whose environment points Django
at that benchmark's own PostgreSQL database (created, migrated, dropped afterwards) and its own
Redis database number and Celery queue. A child starts gunicorn (production settings) and a real
Celery worker when its benchmark needs them (bench/servers.py), measures, and writes its result
as JSON; the runner prints the tables and the summary and writes everything under bench-results/.

One module per benchmark: ingest (1), storm (2), analysis (3), pages (4), llm_cost (5), memory
(6: the peak RSS sampled during 1 and 3). Benchmarks measure; nothing here changes the app.
"""
