#!/usr/bin/env bash
# Creates or updates the virtualenv with the vendors' official client libraries
# (tests/clients/requirements.txt, pinned) and prints its Python interpreter's path on stdout.
# The venv lives in $FIELDSYNC_CLIENTS_VENV (default target/py-clients); it is rebuilt only when
# the requirements change. Progress and errors go to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

requirements=tests/clients/requirements.txt
venv="${FIELDSYNC_CLIENTS_VENV:-target/py-clients}"
python="${PYTHON:-python3}"

# a fresh Debian machine: install Python with venv and pip when we may (root with apt-get)
if ! { command -v "$python" >/dev/null 2>&1 && "$python" -c 'import venv, ensurepip' 2>/dev/null; }; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "python-clients: installing python3, python3-venv and python3-pip" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >&2
        python=python3
    fi
fi
if ! command -v "$python" >/dev/null 2>&1; then
    echo "python-clients: $python not found: install Python 3 with venv and pip (Debian: apt-get install python3 python3-venv python3-pip)" >&2
    exit 1
fi

stamp="$venv/.requirements"
if [[ -x "$venv/bin/python" ]] && cmp -s "$requirements" "$stamp"; then
    echo "$(cd "$venv" && pwd)/bin/python"
    exit 0
fi

echo "python-clients: installing $requirements into $venv" >&2
if ! "$python" -m venv "$venv" >&2; then
    echo "python-clients: '$python -m venv' failed: install the venv module (Debian: apt-get install python3-venv)" >&2
    exit 1
fi
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2; then
    echo "python-clients: pip could not install $requirements (PyPI must be reachable)" >&2
    exit 1
fi
cp "$requirements" "$stamp"
echo "$(cd "$venv" && pwd)/bin/python"
