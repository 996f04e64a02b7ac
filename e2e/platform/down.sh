#!/usr/bin/env bash
# `make down`: stops what `make up` started, newest first. Data under .local/ is kept.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

step "stopping the local platform"
bash "$ROOT/e2e/platform/pod-runner.sh" down
bash "$ROOT/e2e/platform/s3.sh" down
bash "$ROOT/e2e/platform/postgres.sh" down
bash "$ROOT/e2e/platform/kafka.sh" down
bash "$ROOT/e2e/platform/kube.sh" down
