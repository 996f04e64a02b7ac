#!/usr/bin/env bash
# Fuzzes the running API server with schemathesis (PyPI) against its own OpenAPI document:
# no request may produce a 5xx, invalid input (wrong types, unknown fields, malformed values)
# must be refused with a 4xx, and every response must have the content type the document
# declares (application/problem+json for errors).
#
#   e2e/platform/millrace.sh up && e2e/fuzz-api.sh [SECONDS_PER_PASS]
#
# Two passes: the admin's operations (tenants) with the admin token, then a tenant's
# operations with a key of a fresh tenant. Tenants created during the run are deleted at the
# end. schemathesis is installed into a venv under the Millrace cache on first use.
set -euo pipefail
source "$(dirname "$0")/platform/lib.sh"

BUDGET="${1:-60}"
VENV="$CACHE/schemathesis-venv"
ST_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"

if [[ -z "${MILLRACE_API_URL:-}" || -z "${MILLRACE_ADMIN_TOKEN:-}" ]]; then
  [[ -f "$LOCAL/api.env" ]] || die "MILLRACE_API_URL is not set and ${LOCAL#"$ROOT"/}/api.env is missing: run e2e/platform/millrace.sh up"
  set -a; source "$LOCAL/api.env"; set +a
fi
URL="$MILLRACE_API_URL"
ADMIN="$MILLRACE_ADMIN_TOKEN"

if [[ ! -x "$VENV/bin/schemathesis" ]]; then
  step "installing schemathesis $ST_VERSION into ${VENV/#$HOME/\~}"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
tenant="fuzz-$(date +%s)"
api() { curl -fsS -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' "$@"; }
api -X POST "$URL/v1/tenants" -d "{\"name\": \"$tenant\"}" >/dev/null
key="$(api -X POST "$URL/v1/tenants/$tenant/api-keys" -d '{"name": "fuzz"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

cleanup() {
  step "deleting the tenants created since $started"
  api "$URL/v1/tenants?limit=200" | python3 -c '
import json, sys
started = sys.argv[1]
for t in json.load(sys.stdin)["items"]:
    if t["createdAt"][:19] >= started[:19]:
        print(t["name"])' "$started" | while read -r name; do
    api -X DELETE "$URL/v1/tenants/$name?force=true" >/dev/null || info "could not delete tenant $name"
  done
}
trap cleanup EXIT

CHECKS=not_a_server_error,negative_data_rejection,content_type_conformance,response_schema_conformance
report="$LOCAL/test-results/fuzz-api"
mkdir -p "$report"
rc=0
step "fuzzing the admin's operations for ${BUDGET}s"
"$VENV/bin/schemathesis" run "$URL/openapi.json" --no-color --checks "$CHECKS" --max-time "$BUDGET" \
  --include-tag tenants -H "Authorization: Bearer $ADMIN" --report junit --report-dir "$report/admin" || rc=1
step "fuzzing a tenant's operations for ${BUDGET}s"
"$VENV/bin/schemathesis" run "$URL/openapi.json" --no-color --checks "$CHECKS" --max-time "$BUDGET" \
  --exclude-tag tenants -H "Authorization: Bearer $key" --report junit --report-dir "$report/tenant" || rc=1
if (( rc == 0 )); then info "no failures"; else info "failures: see the output above and ${report#"$ROOT"/}/"; fi
exit "$rc"
