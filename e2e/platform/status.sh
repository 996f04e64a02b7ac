#!/usr/bin/env bash
# `make status`: one line per platform part, what runs where.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

bash "$ROOT/e2e/platform/kube.sh" status
bash "$ROOT/e2e/platform/kafka.sh" status
bash "$ROOT/e2e/platform/postgres.sh" status
bash "$ROOT/e2e/platform/s3.sh" status
bash "$ROOT/e2e/platform/pod-runner.sh" status
if [[ -f "$LOCAL/env" ]]; then echo "env: ${LOCAL#$ROOT/}/env"; else echo "env: not written (run make up)"; fi
bash "$ROOT/e2e/platform/millrace.sh" status 2>/dev/null || true
