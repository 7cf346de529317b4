#!/usr/bin/env bash
# fieldsync's test command: makes sure PostgreSQL is installed (the integration tests start their own
# throwaway clusters) and the virtualenv of the vendors' client libraries exists, then runs the
# library, binary and integration tests (not the benchmarks).
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test it devdb`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-postgres.sh
# the vendors' official Stripe and Google client libraries, for tests/it/official_clients.rs
scripts/python-clients.sh >/dev/null

exec cargo test --locked "$@"
