#!/usr/bin/env bash
# fieldsync's test command: makes sure PostgreSQL is installed (the integration tests start their own
# throwaway clusters) and the virtualenv of the vendors' client libraries exists, then runs the
# library, binary and integration tests of the whole workspace, the product and the dev crate
# (not the benchmarks).
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test it devdb`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-postgres.sh
# the vendors' official Stripe and Google client libraries, for tests/it/official_clients.rs
scripts/python-clients.sh >/dev/null

# the VSCO Workspace OpenAPI document is in no package: without it its conformance checks cannot run
vsco=vsco-workspace-v2.openapi.json
if [[ -f "${FIELDSYNC_API_SPECS:-/nonexistent}/$vsco" || -f ../shared/api-specs/$vsco ]]; then
    missing=""
else
    missing="VENDOR SPEC MISSING: $vsco is neither in \$FIELDSYNC_API_SPECS nor in ../shared/api-specs/, so the
VSCO Workspace (Tave) conformance checks (sandbox_tave_every_exchange_matches_the_vendor_spec and the
checker's own test) do NOT run; everything else does. Save the vendor's published openapi.json as
$vsco in a directory and set FIELDSYNC_API_SPECS to it."
    printf '\n%s\n\n' "$missing" >&2
fi

status=0
cargo test --workspace --locked "$@" || status=$?
[[ -z "$missing" ]] || printf '\n%s\n' "$missing" >&2
exit "$status"
