#!/usr/bin/env bash
# `make run`: the embedded default (SQLite + SQLite broker), web + worker + beat, demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p var
export VIGIL_DEBUG="${VIGIL_DEBUG:-1}"
ADDR="${VIGIL_ADDR:-127.0.0.1:8000}"

$PY manage.py migrate --noinput
credentials=$($PY manage.py setup_demo | tail -n 1)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

WEB_CONCURRENCY=2 .venv/bin/gunicorn vigil.wsgi -c python:vigil.gunicorn --bind "$ADDR" \
  --access-logfile - &
web=$!
pids+=($web)
.venv/bin/celery -A vigil worker --beat --loglevel INFO --concurrency 2 \
  --schedule var/celerybeat-schedule &
worker=$!
pids+=($worker)

for _ in $(seq 1 60); do
  curl -fsS "http://$ADDR/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
$PY manage.py send_demo_alerts --url "http://$ADDR/hooks/alertmanager"
# Realistic incidents: a few scenarios' worlds (Kubernetes stand-in, backfilled Prometheus when
# installed) served for as long as `make run` runs. One Prometheus per world, so not all of them
# by default: VIGIL_DEMO_SCENARIOS="scenarios/*.yaml" replays every one.
DEMO_SCENARIOS="${VIGIL_DEMO_SCENARIOS:-scenarios/01-*.yaml scenarios/02-*.yaml scenarios/03-*.yaml scenarios/04-*.yaml scenarios/06-*.yaml scenarios/09-*.yaml}"
# shellcheck disable=SC2086 # the list is a set of globs
$PY manage.py replay $DEMO_SCENARIOS --url "http://$ADDR" --keep > var/replay.log 2>&1 &
pids+=($!)

cat <<MSG

  Vigil is running: http://$ADDR/
  $credentials
  Alertmanager webhook: http://$ADDR/hooks/alertmanager (bearer token in var/demo-token)
  Scenario replays (addresses of their Kubernetes and Prometheus): var/replay.log
  Stop with Ctrl-C.

MSG
# Stop when web or worker stops; a failed replay only shows in var/replay.log.
wait -n "$web" "$worker"
