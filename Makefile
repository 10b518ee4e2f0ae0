# Tokencache: `make run` starts everything, `make test` runs the suite on SQLite, then on
# PostgreSQL (`make test-postgres`). Both set up first.
.PHONY: run test test-postgres test-cluster test-faults lint bench bench-cache bench-dashboards bench-warming bench-concurrency bench-throughput bench-stages bench-prefix bench-load setup setup-dev setup-postgres check-deploy clean

setup:
	scripts/bootstrap.sh runtime

setup-dev:
	scripts/bootstrap.sh dev

setup-postgres:
	scripts/bootstrap.sh postgres

run: setup
	scripts/run.sh

test: setup-dev
	.venv/bin/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-postgres

# The whole suite again, on a private PostgreSQL server that the tests start on 127.0.0.1
# and delete afterwards (tests/postgres_plugin.py): production's database, same code.
test-postgres: setup-postgres
	TOKENCACHE_TEST_POSTGRES=1 .venv/bin/pytest $(PYTEST_ARGS)

# Past one Redis, on loopback: a 3-primary, 3-replica Redis Cluster and a Sentinel deployment
# that the tests start (tests/cluster_plugin.py). The cache core's specifications on the
# cluster, primaries killed under load, and two web servers with two workers sharing one
# cluster. `make test` deselects these (`cluster` marker). About a minute.
test-cluster: setup-dev
	.venv/bin/pytest -m cluster $(PYTEST_ARGS)

# Faults injected into real processes (uvicorn, Redis, a Celery worker, the loopback model
# server) under a small chat load: Redis killed, stalled, full; the model server down or
# cutting streams; the web process killed mid-stream; the database busy; nothing may be lost
# (tests/faults/). `make test` deselects these (`faults` marker). About two and a half minutes;
# each scenario's figures go to var/faults.json (docs/reliability.md).
test-faults: setup-dev
	.venv/bin/pytest -m faults $(PYTEST_ARGS)

lint: setup-dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# Every benchmark; each writes its tables into bench/results.md and exits non-zero when a figure
# misses its target (`make -k bench` runs the rest anyway). docs/performance.md reads them.
bench: bench-cache bench-dashboards bench-warming bench-concurrency bench-throughput bench-stages bench-prefix bench-load

bench-cache: setup-dev
	bash -o pipefail -c '.venv/bin/python bench/cache.py | .venv/bin/python bench/report.py cache "Cache core (bench/cache.py)"'

# Hundreds of streaming turns at once through the OpenAI-compatible API and the websocket (minutes).
bench-concurrency: setup-dev
	.venv/bin/python bench/concurrency.py --baseline

bench-throughput: setup-dev
	.venv/bin/python bench/throughput.py --baseline

bench-stages: setup-dev
	.venv/bin/python bench/stages.py

bench-prefix: setup-dev
	.venv/bin/python bench/prefix.py

# A mix of new and repeated questions over the JSON API, the streamed OpenAI-compatible API and
# the websocket for 30 s (`--seconds`), against deploy/Procfile's web line on loopback.
bench-load: setup-dev
	.venv/bin/python bench/load.py

bench-dashboards: setup-dev
	.venv/bin/python bench/dashboards.py

bench-warming: setup-dev
	.venv/bin/python bench/warming.py

# The production checklist, with production-like settings.
check-deploy: setup
	DEBUG=0 SECRET_KEY=$$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(50))') \
	ALLOWED_HOSTS=tokencache.example.com .venv/bin/python manage.py check --deploy --fail-level WARNING

clean:
	rm -rf .venv var/prometheus .pytest_cache .mypy_cache .ruff_cache
