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

.venv/bin/gunicorn vigil.wsgi --bind "$ADDR" --workers 2 --access-logfile - &
pids+=($!)
.venv/bin/celery -A vigil worker --beat --loglevel INFO --concurrency 2 \
  --schedule var/celerybeat-schedule &
pids+=($!)

for _ in $(seq 1 60); do
  curl -fsS "http://$ADDR/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
$PY manage.py send_demo_alerts --url "http://$ADDR/hooks/alertmanager"

cat <<MSG

  Vigil is running: http://$ADDR/
  $credentials
  Alertmanager webhook: http://$ADDR/hooks/alertmanager (bearer token in var/demo-token)
  Stop with Ctrl-C.

MSG
wait -n "${pids[@]}"
