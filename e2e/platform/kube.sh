#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.
# No kubelet and no scheduler; the e2e pod runner binds and runs Pods itself.
#
#   kube.sh up       generate PKI/tokens once, start what is not running, wait until usable
#   kube.sh down     stop the three daemons (data is kept)
#   kube.sh status   one line per component
#   kube.sh reset    down, then delete all cluster state ($LOCAL/kube and $LOCAL/kubeconfig)
#
# After `up`: export KUBECONFIG=$LOCAL/kubeconfig (admin, group system:masters).
# Binaries come from build-kube.sh (run automatically if one is missing).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE="$LOCAL/kube"
PKI="$KUBE/pki"
KUBECONFIG_ADMIN="$LOCAL/kubeconfig"
KCM_KUBECONFIG="$KUBE/controller-manager.kubeconfig"
KCM_PORT="${KCM_PORT:-10357}"             # not the default 10257, to avoid clashes
SERVICE_CIDR="${SERVICE_CIDR:-10.96.0.0/16}" # only allocated from, never routed
SERVICE_IP="10.96.0.1"                    # first IP of SERVICE_CIDR: the `kubernetes` Service
ISSUER="https://kubernetes.default.svc"
ETCD_URL="http://127.0.0.1:$ETCD_CLIENT_PORT"
APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"
KCM_URL="https://127.0.0.1:$KCM_PORT"

exec 9>&2 # wait_for silences its probe; probes report a dead daemon through fd 9

# ---------------------------------------------------------------------------------------------
# PKI, tokens and kubeconfigs

gen_pki() {
  [[ -f "$PKI/.complete" ]] && return 0
  step "generating PKI and tokens in ${PKI#$ROOT/}"
  command -v openssl >/dev/null || die "openssl is required"
  local tmp; tmp="$(mktemp -d "$KUBE/pki.tmp.XXXXXX")"
  (
    cd "$tmp"
    openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=millrace-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    openssl req -new -nodes -newkey rsa:2048 -sha256 \
      -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    cat >apiserver.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_IP
EOF
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    rm -f apiserver.csr apiserver.ext ca.srl
    # One RSA key signs and verifies service-account tokens.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # Static tokens: token,user,uid,"groups". The controller-manager gets its real identity;
    # RBAC's bootstrap policy binds system:kube-controller-manager to it.
    local admin kcm
    admin="$(openssl rand -hex 32)"; kcm="$(openssl rand -hex 32)"
    printf '%s\n' "$admin" >admin-token
    printf '%s\n' "$kcm" >controller-manager-token
    {
      printf '%s,admin,admin,"system:masters"\n' "$admin"
      printf '%s,system:kube-controller-manager,system:kube-controller-manager\n' "$kcm"
    } >tokens.csv
    chmod 600 ./*.key ./*-token tokens.csv
    touch .complete
  )
  rm -rf "$PKI"
  mv "$tmp" "$PKI"
  cp "$PKI/admin-token" "$KUBE/admin-token"
}

# write_kubeconfig FILE USER TOKEN
write_kubeconfig() {
  local file="$1" user="$2" token="$3" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: millrace
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    token: $token
contexts:
- name: millrace
  context:
    cluster: millrace
    user: $user
    namespace: default
current-context: millrace
EOF
  chmod 600 "$tmp"
  mv "$tmp" "$file"
}

# ---------------------------------------------------------------------------------------------
# Probes (run by wait_for with output silenced)

# alive NAME : fails the whole script, with the log tail, when the daemon has died.
alive() {
  is_running "$1" && return 0
  {
    printf 'error: %s exited; last lines of %s:\n' "$1" "${LOGS#$ROOT/}/$1.log"
    tail -n 25 "$LOGS/$1.log" 2>/dev/null | sed 's/^/    /'
  } >&9
  exit 1
}
etcd_healthy() { alive etcd && curl -fsS --max-time 2 "$ETCD_URL/health" | grep -q '"health":"true"'; }
apiserver_ready() {
  alive kube-apiserver && curl -fsS --max-time 3 --cacert "$PKI/ca.crt" "$APISERVER_URL/readyz" | grep -qx ok
}
kcm_healthy() { alive kube-controller-manager && curl -fsSk --max-time 3 "$KCM_URL/healthz" | grep -qx ok; }
default_sa_exists() {
  alive kube-controller-manager && "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=3s \
    get serviceaccount default --namespace default -o name
}

# port_in_use PORT : something already listens on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
check_port() { # check_port NAME PORT : before starting NAME, its port must be free
  is_running "$1" && return 0
  port_in_use "$2" && die "port $2 (for $1) is already in use by a process this script did not start; stop it or set another port"
  return 0
}

# ---------------------------------------------------------------------------------------------

ensure_binaries() {
  local b
  for b in etcd kube-apiserver kube-controller-manager kubectl; do
    [[ -x "$BIN/$b" ]] && continue
    step "$b is missing from ${BIN/#$HOME/\~}: running build-kube.sh"
    "$(dirname "${BASH_SOURCE[0]}")/build-kube.sh"
    return 0
  done
}

cmd_up() {
  ensure_binaries
  mkdir -p "$KUBE"
  gen_pki
  write_kubeconfig "$KUBECONFIG_ADMIN" admin "$(cat "$PKI/admin-token")"
  write_kubeconfig "$KCM_KUBECONFIG" system:kube-controller-manager "$(cat "$PKI/controller-manager-token")"
  cp "$PKI/admin-token" "$KUBE/admin-token"

  step "etcd on $ETCD_URL"
  check_port etcd "$ETCD_CLIENT_PORT"; check_port etcd "$ETCD_PEER_PORT"
  mkdir -p "$KUBE/etcd"; chmod 700 "$KUBE/etcd"
  # --unsafe-no-fsync as controller-runtime's envtest: a throwaway dev cluster, speed over durability.
  start_daemon etcd "$BIN/etcd" \
    --name millrace-etcd \
    --data-dir "$KUBE/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "millrace-etcd=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new --initial-cluster-token millrace-local \
    --unsafe-no-fsync=true --log-level warn
  wait_for "etcd health" 60 etcd_healthy

  step "kube-apiserver on $APISERVER_URL"
  check_port kube-apiserver "$APISERVER_PORT"
  mkdir -p "$KUBE/apiserver"
  # --endpoint-reconciler-type=none: the apiserver would publish its advertise address in the
  # `kubernetes` Endpoints, and validation refuses loopback there; pods reach the apiserver
  # at 127.0.0.1:$APISERVER_PORT directly instead.
  start_daemon kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "$ETCD_URL" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --cert-dir "$KUBE/apiserver" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --token-auth-file "$PKI/tokens.csv" \
    --authorization-mode Node,RBAC \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer "$ISSUER" --api-audiences "$ISSUER" \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --allow-privileged=true \
    --endpoint-reconciler-type "${KUBE_ENDPOINT_RECONCILER:-none}"
  wait_for "kube-apiserver /readyz" 180 apiserver_ready

  step "kube-controller-manager on $KCM_URL"
  check_port kube-controller-manager "$KCM_PORT"
  mkdir -p "$KUBE/controller-manager"
  # The Endpoints/EndpointSlice controllers are off: Pods here have loopback IPs, which the
  # apiserver refuses in endpoint addresses, so they would only fail and emit Warning events
  # forever. The pod runner resolves Services from Pods itself (docs/pod-runner.md).
  # No --authentication/--authorization-kubeconfig: delegated authn would look for a
  # request-header CA the apiserver does not have (error spam); /healthz is always allowed.
  start_daemon kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$KCM_KUBECONFIG" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$KUBE/controller-manager" \
    --controllers '*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller' \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --leader-elect=false
  wait_for "kube-controller-manager /healthz" 120 kcm_healthy
  wait_for "ServiceAccount default/default (controllers running)" 120 default_sa_exists

  step "control plane ready: export KUBECONFIG=${KUBECONFIG_ADMIN}"
}

cmd_down() {
  step "stopping the control plane (data kept in ${KUBE#$ROOT/})"
  stop_daemon kube-controller-manager
  stop_daemon kube-apiserver
  stop_daemon etcd
}

cmd_status() {
  local name addr
  for name in etcd kube-apiserver kube-controller-manager; do
    case "$name" in
      etcd) addr="$ETCD_URL" ;;
      kube-apiserver) addr="$APISERVER_URL" ;;
      kube-controller-manager) addr="$KCM_URL" ;;
    esac
    if is_running "$name"; then
      printf '%-24s running  pid %-8s %s\n' "$name" "$(cat "$RUN/$name.pid")" "$addr"
    else
      printf '%-24s stopped  %-12s %s\n' "$name" "" "$addr"
    fi
  done
}

cmd_reset() {
  cmd_down
  step "deleting ${KUBE#$ROOT/} and ${KUBECONFIG_ADMIN#$ROOT/}"
  rm -rf "$KUBE" "$KUBECONFIG_ADMIN"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  *) echo "usage: $0 up|down|status|reset" >&2; exit 2 ;;
esac
