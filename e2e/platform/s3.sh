#!/usr/bin/env bash
# A local S3-compatible endpoint for checkpoint storage tests: moto's server (PyPI `moto`,
# the AWS API emulator), on 127.0.0.1:$S3_PORT, in a venv under the cache.
#
#   s3.sh install   create the venv and install moto[server] (once)
#   s3.sh up        start it, wait until it answers, create the bucket `millrace-checkpoints`
#   s3.sh down      stop it
#   s3.sh status    one line: running/stopped
#   s3.sh env       print the variables clients use (AWS_ENDPOINT_URL, credentials, bucket)
#
# moto keeps objects in memory: a restart empties the bucket (tests make their own prefixes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

S3_PORT="${S3_PORT:-19000}"
VENV="$CACHE/s3-venv"
MOTO_VERSION="5.2.5"
ENDPOINT="http://127.0.0.1:$S3_PORT"
BUCKET=millrace-checkpoints

install() {
  if [[ -x "$VENV/bin/moto_server" ]] && "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    return 0
  fi
  info "installing moto $MOTO_VERSION (S3 emulator) into ${VENV/#$HOME/\~}"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

answers() { curl -fsS -o /dev/null "$ENDPOINT/moto-api/"; }

up() {
  install
  start_daemon s3 "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT"
  wait_for "the S3 endpoint at $ENDPOINT" 60 answers
  # moto does not check signatures: a plain PUT creates the bucket (200 when it exists too).
  curl -fsS -o /dev/null -X PUT "$ENDPOINT/$BUCKET"
  info "S3 endpoint $ENDPOINT, bucket $BUCKET"
}

env_lines() {
  echo "AWS_ENDPOINT_URL=$ENDPOINT"
  echo "AWS_ACCESS_KEY_ID=millrace"
  echo "AWS_SECRET_ACCESS_KEY=millrace"
  echo "AWS_REGION=us-east-1"
  echo "AWS_ALLOW_HTTP=true"
  echo "MILLRACE_S3_BUCKET=$BUCKET"
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) stop_daemon s3 5 ;;
  status) if is_running s3; then echo "s3: running ($ENDPOINT)"; else echo "s3: stopped"; fi ;;
  env) env_lines ;;
  *) die "usage: s3.sh install|up|down|status|env" ;;
esac
