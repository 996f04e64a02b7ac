# Millrace front door. Every target installs what it needs; see docs/development.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help up down status demo test test-static test-unit test-platform bench bench-peers build crds docs-reference

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

up: ## install what is missing, start the local platform, write .local/env
	@bash e2e/platform/up.sh

down: ## stop everything `make up` started
	@bash e2e/platform/down.sh

status: ## say what runs where
	@bash e2e/platform/status.sh

demo: ## platform up, then the main job end to end
	@bash e2e/demo.sh

test: ## fmt, clippy, unit tests, then the platform up and every integration and e2e test
	@bash e2e/run-tests.sh all

test-static: ## fmt check and clippy only
	@bash e2e/run-tests.sh static

test-unit: ## unit tests only (no platform)
	@bash e2e/run-tests.sh unit

test-platform: ## integration and e2e tests against the running platform
	@bash e2e/run-tests.sh platform

build: ## build every binary (debug)
	@bash -c 'source e2e/platform/lib.sh && cargo build --workspace --all-features --bins'

crds: ## regenerate charts/millrace/crds/ from the Rust types
	@bash -c 'source e2e/platform/lib.sh && cargo run -q -p millrace-crds --bin crdgen -- --out-dir charts/millrace/crds'

docs-reference: ## regenerate docs/reference/ (crds.md from charts/millrace/crds, rest.md from the running API)
	@bash -c 'set -euo pipefail; source e2e/platform/lib.sh; set -a; source "$$LOCAL/env"; set +a; \
	  python3 docs/reference/generate.py crds; \
	  python3 docs/reference/generate.py rest --openapi-url "$$MILLRACE_API_URL/openapi.json"'

bench-peers: ## Millrace beside Kafka Streams, Flink, Quix, the seed loop and an rdkafka passthrough (docs/benchmarks.md)
	@bash bench/run-peers.sh

bench: ## benchmarks (docs/benchmarks.md)
	@bash e2e/bench.sh
