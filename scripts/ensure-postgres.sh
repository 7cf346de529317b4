#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl) and client tools (psql, pg_recvlogical)
# that fieldsync's tests, benchmarks and demo use are installed. Quiet and quick when they already
# are; otherwise installs the Debian/Ubuntu packages with apt-get (through sudo when not root).
# It never starts a system PostgreSQL service: tests run their own throwaway clusters (dev/src/devdb.rs).
set -euo pipefail

have_server() {
    if [[ -n "${FIELDSYNC_PG_BIN:-}" && -x "${FIELDSYNC_PG_BIN}/initdb" ]]; then
        return 0
    fi
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

have_clients() {
    command -v psql >/dev/null 2>&1 && command -v pg_recvlogical >/dev/null 2>&1
}

if have_server && have_clients; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL server binaries or psql/pg_recvlogical are missing and apt-get is" \
        "not available; install PostgreSQL 15 (server and client) or set FIELDSYNC_PG_BIN" >&2
    exit 1
fi

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "ensure-postgres: not root and no sudo; install postgresql and postgresql-client yourself" >&2
        exit 1
    fi
fi

echo "ensure-postgres: installing postgresql and postgresql-client" >&2

# Keep the package from starting a system cluster (policy-rc.d exit 101 = "action forbidden").
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    added_policy=1
fi
cleanup() {
    if [[ "$added_policy" -eq 1 ]]; then
        "${sudo[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null

if ! have_server || ! have_clients; then
    echo "ensure-postgres: installed packages but initdb/psql/pg_recvlogical are still missing" >&2
    exit 1
fi
echo "ensure-postgres: $(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)" >&2
