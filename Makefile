# Tokencache: `make run` starts everything, `make test` runs the suite. Both set up first.
.PHONY: run test lint bench bench-cache setup setup-dev check-deploy clean

setup:
	scripts/bootstrap.sh runtime

setup-dev:
	scripts/bootstrap.sh dev

run: setup
	scripts/run.sh

test: setup-dev
	.venv/bin/pytest $(PYTEST_ARGS)

lint: setup-dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench: bench-cache

bench-cache: setup-dev
	.venv/bin/python bench/cache.py

# The production checklist, with production-like settings.
check-deploy: setup
	DEBUG=0 SECRET_KEY=$$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(50))') \
	ALLOWED_HOSTS=tokencache.example.com .venv/bin/python manage.py check --deploy --fail-level WARNING

clean:
	rm -rf .venv var/prometheus .pytest_cache .mypy_cache .ruff_cache
