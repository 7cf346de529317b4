#!/usr/bin/env bash
# fieldsync's demo: installs PostgreSQL when missing, then runs `fieldsync-dev demo` from the dev
# crate (a throwaway cluster with the default schema, the daemon, scripted wedding edits and a live
# view; Ctrl-C stops it and removes everything). Extra arguments go to `fieldsync-dev demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-postgres.sh

exec cargo run --release --quiet -p fieldsync-dev --bin fieldsync-dev -- demo "$@"
