#!/usr/bin/env bash
# Start the whole system: Redis (our config), web server, Celery worker and beat.
# A process of deploy/Procfile that exits or dies is restarted (scripts/supervise.py) while the
# others keep serving. Ctrl-C stops everything this script started; a Redis that was already
# running is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

port=$(awk '$1 == "port" {print $2}' deploy/redis.conf)
started_redis=""
stop_redis() {
    if [ -n "$started_redis" ]; then
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
}
trap stop_redis EXIT

if redis-cli -p "$port" ping >/dev/null 2>&1; then
    echo "Reusing the Redis already answering on 127.0.0.1:$port"
else
    # Daemonized rather than supervised: Redis stopped by hand stays down, and the site
    # degrades (as it would in production) instead of the supervisor restarting it.
    redis-server deploy/redis.conf --daemonize yes --pidfile "$PWD/var/redis.pid" --logfile "$PWD/var/redis.log"
    started_redis=1
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# Metrics from every web and worker process are merged through this directory.
export PROMETHEUS_MULTIPROC_DIR="$PWD/var/prometheus"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py seed_demo
# Questions left hanging by processes that stopped mid-turn get an error answer (beat repeats this).
.venv/bin/python manage.py mark_interrupted_turns

cat <<MSG

  Tokencache is starting at  http://127.0.0.1:${TOKENCACHE_PORT:-8000}/
  Admin:                     http://127.0.0.1:${TOKENCACHE_PORT:-8000}/admin/
  Metrics, health:           /metrics  /healthz  /readyz
  Stop everything with Ctrl-C.

MSG
.venv/bin/python scripts/supervise.py deploy/Procfile || true
