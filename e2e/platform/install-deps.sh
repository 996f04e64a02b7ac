#!/usr/bin/env bash
# Installs the system packages Millrace's build, tests and local platform need, and the
# rustfmt/clippy components. Idempotent and non-interactive (CI: root, CI=true, no stdin):
# it only checks when everything is there (well under a second), and runs apt-get update +
# install only for what is missing.
#
#   e2e/platform/install-deps.sh          install what is missing
#   e2e/platform/install-deps.sh --check  report what is missing, install nothing (exit 1 if any)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHECK_ONLY=0
[[ "${1:-}" == --check ]] && CHECK_ONLY=1

# Debian packages, each with why we need it.
PACKAGES=(
  cmake                 # rdkafka's cmake-build of the bundled librdkafka
  build-essential       # C/C++ toolchain (gcc, g++, make) for librdkafka and other -sys crates
  pkg-config            # -sys crates find system libraries
  zlib1g-dev            # rdkafka feature libz
  libssl-dev            # openssl-sys, rdkafka ssl (when enabled)
  libsasl2-dev          # rdkafka gssapi/sasl (when enabled)
  protobuf-compiler     # protoc for prost/tonic build scripts
  libcurl4-openssl-dev  # librdkafka's bundled build compiles its OIDC support when curl is present
  postgresql-15         # private cluster for sqlx tests (e2e/platform/postgres.sh)
  postgresql-client-15  # psql, pg_isready
  openssl               # certificates for the local Kubernetes API server
  ca-certificates       # HTTPS to the package registries (Maven, crates.io)
  curl
  maven                 # fetches Kafka's jars (e2e/platform/kafka.sh install)
  python3
  python3-yaml          # docs/reference/generate.py reads the CRD YAML
  python3-venv          # venvs for moto (the local S3 endpoint, e2e/platform/s3.sh) and the benchmarks
  util-linux            # setpriv: run PostgreSQL as an unprivileged user when we are root
  passwd                # useradd: create that user
)
# A JDK (Kafka 4.x needs Java >= 17): Debian's 17, unless some JDK is already on PATH.
JDK_PACKAGE=openjdk-17-jdk-headless
RUST_COMPONENTS=(rustfmt clippy)

missing_packages() {
  local -a want=("${PACKAGES[@]}")
  command -v javac >/dev/null 2>&1 && command -v java >/dev/null 2>&1 || want+=("$JDK_PACKAGE")
  # One dpkg-query for all; unknown packages print nothing (and make it exit 1).
  local installed
  installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${want[@]}" 2>/dev/null || true)"
  local p
  for p in "${want[@]}"; do
    grep -qE "^$p ii" <<<"$installed" || echo "$p"
  done
  # The package can be there while the server binaries are not (a half-removed install).
  if [[ ! -x /usr/lib/postgresql/15/bin/initdb ]] && grep -q '^postgresql-15 ii' <<<"$installed"; then
    echo postgresql-15
  fi
}

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo -n "$@"
  else die "need root to run: $*"; fi
}

install_packages() {
  local -a pkgs=("$@")
  step "Installing Debian packages: ${pkgs[*]}"
  local start=$SECONDS
  # Don't let postgresql-15's install create and start the system's "main" cluster on 5432:
  # Millrace runs its own (postgres.sh). postgresql-common reads this drop-in directory.
  if [[ " ${pkgs[*]} " == *" postgresql-15 "* ]] && [[ ! -d /etc/postgresql/15/main ]]; then
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false  # Millrace: see e2e/platform/install-deps.sh" \
      | as_root tee /etc/postgresql-common/createcluster.d/millrace.conf >/dev/null
  fi
  local -a apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update -qq </dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
    "${pkgs[@]}" </dev/null
  info "installed in $((SECONDS - start))s"
}

missing_components() {
  command -v rustup >/dev/null 2>&1 || { echo "(rustup not found)"; return; }
  local installed c
  installed="$(rustup component list --installed 2>/dev/null || true)"
  for c in "${RUST_COMPONENTS[@]}"; do
    grep -q "^$c-" <<<"$installed" || echo "$c"
  done
}

main() {
  local -a pkgs comps
  mapfile -t pkgs < <(missing_packages | sort -u)
  mapfile -t comps < <(missing_components)

  if (( CHECK_ONLY )); then
    (( ${#pkgs[@]} )) && info "missing Debian packages: ${pkgs[*]}"
    (( ${#comps[@]} )) && info "missing Rust components: ${comps[*]}"
    (( ${#pkgs[@]} + ${#comps[@]} == 0 )) || exit 1
    info "all dependencies present"
    return 0
  fi

  (( ${#pkgs[@]} )) && install_packages "${pkgs[@]}"
  [[ -x /usr/lib/postgresql/15/bin/initdb ]] || die "postgresql-15 installed but /usr/lib/postgresql/15/bin/initdb is missing"

  if (( ${#comps[@]} )); then
    [[ "${comps[0]}" != "(rustup not found)" ]] || die "rustup not found: the Rust toolchain comes with the machine image"
    step "Adding Rust components: ${comps[*]}"
    rustup component add "${comps[@]}"
  fi
  return 0
}

main "$@"
