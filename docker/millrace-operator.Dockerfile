# syntax=docker/dockerfile:1
# millrace-operator — The operator: KafkaTopic and StreamJob controllers.
# Build from the repository root:
#   docker build -f docker/millrace-operator.Dockerfile -t ghcr.io/millrace/millrace-operator:0.1.0 .
# The image name is the chart's default (charts/millrace/values.yaml) and matches the pod
# runner's image table (e2e/pod-images.yaml), which maps it to the locally built binary.

FROM rust:1.95-bookworm AS build
# librdkafka is compiled by the rdkafka crate (cmake-build); protoc is not needed.
RUN apt-get update && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin millrace-operator \
 && install -D target/release/millrace-operator /out/millrace-operator

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/millrace-operator /usr/local/bin/millrace-operator
# Non-root (the chart also sets runAsNonRoot and a read-only root filesystem).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/millrace-operator"]
