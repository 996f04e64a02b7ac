#!/usr/bin/env bash
# `make bench`: every benchmark we have, results in docs/benchmarks.md (+ docs/benchmarks.png).
# Today that is the side-by-side race of bench/run-peers.sh (`make bench-peers`). Not built
# yet, and so not run: engine-only Nexmark, operator reconcile latency, API latency.
set -euo pipefail
exec bash "$(dirname "$0")/../bench/run-peers.sh" "$@"
