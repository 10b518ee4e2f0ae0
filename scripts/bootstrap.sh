#!/usr/bin/env bash
# Install what Tokencache needs on a fresh Debian machine, reusing whatever exists.
# Usage: scripts/bootstrap.sh [runtime|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-runtime}

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
