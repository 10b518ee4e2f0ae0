#!/usr/bin/env bash
# Install what Tokencache needs on a fresh Debian machine, reusing whatever exists.
# Usage: scripts/bootstrap.sh [runtime|dev|postgres]
#   postgres: dev, plus the PostgreSQL server binaries that the PostgreSQL test pass runs
#   its own private server from (tests/postgres_plugin.py); no server is configured here.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-runtime}
case "$profile" in
    runtime | dev | postgres) ;;
    *) echo "Usage: scripts/bootstrap.sh [runtime|dev|postgres]" >&2; exit 2 ;;
esac

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "Need root to install: $*  (run: sudo apt-get install -y $*)" >&2
        exit 1
    fi
    if [ -z "${_apt_updated:-}" ]; then
        apt-get update -qq
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Tokencache needs Python 3.11 or newer"'

command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server
# The browser tests drive Debian's Chromium through Playwright (never a browser Playwright downloads).
if [ "$profile" != runtime ]; then
    command -v chromium >/dev/null || apt_install chromium fonts-dejavu-core
fi
if [ "$profile" = postgres ]; then
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null || apt_install postgresql
    profile=dev
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv 2>/dev/null || { apt_install python3-venv && rm -rf .venv && "$PYTHON" -m venv .venv; }
fi

requirements=requirements.txt
[ "$profile" = dev ] && requirements=requirements-dev.txt
stamp=.venv/.installed-$profile
# Reinstall only when a requirements file changed since the last install.
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ "$requirements" -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
    touch "$stamp"
fi
mkdir -p var
