#!/usr/bin/env bash
# `make bench`: every benchmark we have, results in docs/benchmarks.md (+ docs/benchmarks.png):
# the side-by-side race of bench/run-peers.sh (`make bench-peers`, on the local Kafka), then
# the engine-only Nexmark queries of bench/nexmark.sh (no Kafka; its own section of the page,
# which run-peers.sh keeps), then the checkpoint benchmark of bench/checkpoints.sh (state size,
# recovery after kill -9, rescale from a savepoint; its own section too), then the control
# plane's latency under a fixed request rate (bench/api.sh; its own section), then the
# operator's reconcile latency with 1,000 KafkaTopics and 200 StreamJobs (bench/reconcile.sh;
# its own section). Arguments go to run-peers.sh; --smoke goes to all five.
set -euo pipefail
here="$(dirname "$0")"
bash "$here/../bench/run-peers.sh" "$@"
smoke=()
for arg in "$@"; do [[ "$arg" == --smoke ]] && smoke=(--smoke); done
bash "$here/../bench/nexmark.sh" "${smoke[@]}"
bash "$here/../bench/checkpoints.sh" "${smoke[@]}"
bash "$here/../bench/api.sh" "${smoke[@]}"
bash "$here/../bench/reconcile.sh" "${smoke[@]}"
