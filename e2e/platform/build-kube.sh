#!/usr/bin/env bash
# Builds the local Kubernetes control plane and its tools from the Go module proxy into $BIN:
#   etcd, etcdctl                                  go.etcd.io/etcd/{server,etcdctl}/v3@$ETCD_VERSION
#   kube-apiserver, kube-controller-manager, kubectl  k8s.io/kubernetes@$K8S_VERSION
#   helm                                           helm.sh/helm/v3@$HELM_VERSION
#   kubeconform                                    github.com/yannh/kubeconform@$KUBECONFORM_VERSION
#   helm-unittest                                  github.com/helm-unittest/helm-unittest@$HELM_UNITTEST_VERSION
# Idempotent: a binary whose stamp ($BIN/.stamps/NAME) matches the wanted version is skipped.
# Build modules, Go module and build caches all live under $CACHE, never in the repository.
# Set MILLRACE_REBUILD=1 to ignore the stamps.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Only the module proxy is reachable here (sum.golang.org is not), so checksums come from
# the go.sum files we generate. Override with MILLRACE_GOSUMDB=sum.golang.org where it works.
export GOSUMDB="${MILLRACE_GOSUMDB:-off}"
export GOTOOLCHAIN=local CGO_ENABLED=0
BUILD="$CACHE/kube-build"
STAMPS="$BIN/.stamps"
mkdir -p "$BUILD" "$STAMPS"

# Bump when the recipe (flags, ldflags) changes, so stamps from an older recipe are rebuilt.
RECIPE=1

stamp_ok() { # stamp_ok NAME WANT
  [[ "${MILLRACE_REBUILD:-0}" != 1 && -x "$BIN/$1" && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]
}
write_stamp() { printf '%s\n' "$2" >"$STAMPS/$1"; }
elapsed() { local s=$(( SECONDS - $1 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

started=$SECONDS
step "Building the Kubernetes platform tools into ${BIN/#$HOME/\~}"
info "the first build downloads ~1 GB of modules and compiles for many minutes (about 7-15 min on 2 cores); later runs take seconds"

# --- etcd -------------------------------------------------------------------------------
etcd_want="etcd $ETCD_VERSION recipe $RECIPE"
if stamp_ok etcd "$etcd_want" && stamp_ok etcdctl "$etcd_want"; then
  info "etcd $ETCD_VERSION: up to date"
else
  step "etcd $ETCD_VERSION"
  t=$SECONDS
  # server/v3 and etcdctl/v3 replace their sibling modules with ../ paths, so `go install
  # pkg@version` refuses them: build them from a small module that pins the siblings instead.
  dir="$BUILD/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<EOF
module millrace.local/etcd-build

go 1.26.0

require (
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
	go.etcd.io/etcd/etcdctl/v3 $ETCD_VERSION
)

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/server/v3 => go.etcd.io/etcd/server/v3 $ETCD_VERSION
)
EOF
  (cd "$dir" && go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 \
     && go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/etcdctl" go.etcd.io/etcd/etcdctl/v3)
  write_stamp etcd "$etcd_want"; write_stamp etcdctl "$etcd_want"
  info "etcd built in $(elapsed "$t"): $("$BIN/etcd" --version | head -1)"
fi

# --- kube-apiserver, kube-controller-manager, kubectl --------------------------------------
k8s_bins=(kube-apiserver kube-controller-manager kubectl)
k8s_want="kubernetes $K8S_VERSION recipe $RECIPE"
k8s_fresh=1
for b in "${k8s_bins[@]}"; do stamp_ok "$b" "$k8s_want" || k8s_fresh=0; done
if (( k8s_fresh )); then
  info "kubernetes $K8S_VERSION: up to date"
else
  step "kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl)"
  t=$SECONDS
  [[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "K8S_VERSION must look like v1.N.M, got $K8S_VERSION"
  k8s_minor="${BASH_REMATCH[1]}" k8s_patch="${BASH_REMATCH[2]}"
  staging_version="v0.$k8s_minor.$k8s_patch"
  dir="$BUILD/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  # k8s.io/kubernetes replaces its staging modules with ./staging/src/k8s.io/<m>; take that
  # list from its own go.mod so it always matches the version being built.
  info "fetching k8s.io/kubernetes@$K8S_VERSION (module zip is large)"
  meta="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION")"
  k8s_gomod="$(jq -r .GoMod <<<"$meta")"
  k8s_time="$(jq -r '.Time // empty' <<<"$meta")"
  mapfile -t staging < <(sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+)[[:space:]]+=>[[:space:]]+\./staging/.*#\1#p' "$k8s_gomod" | sort -u)
  (( ${#staging[@]} > 20 )) || die "found only ${#staging[@]} staging modules in $k8s_gomod"
  info "${#staging[@]} staging modules replaced by $staging_version"
  {
    printf 'module millrace.local/kube-build\n\ngo 1.26.0\n\ngodebug default=go1.26\n\n'
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
    for m in "${staging[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_version"; done
    printf ')\n'
  } >"$dir/go.mod.new"
  # Keep go.sum only while go.mod is unchanged.
  if ! cmp -s "$dir/go.mod.new" "$dir/go.mod.base" 2>/dev/null; then
    rm -f "$dir/go.sum"; cp "$dir/go.mod.new" "$dir/go.mod.base"
  fi
  cp "$dir/go.mod.base" "$dir/go.mod"; rm -f "$dir/go.mod.new"
  # buildDate is the module's publication time, so the link is reproducible.
  build_date="${k8s_time:-1970-01-01T00:00:00Z}"; build_date="${build_date%%.*}"; build_date="${build_date%Z}Z"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  pkgs=(); for b in "${k8s_bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  info "compiling (one go build for all three; shared packages are compiled once)"
  (cd "$dir" && go build -mod=mod -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}")
  for b in "${k8s_bins[@]}"; do write_stamp "$b" "$k8s_want"; done
  info "kubernetes built in $(elapsed "$t"): $("$BIN/kubectl" version --client 2>/dev/null | head -1)"
fi

# --- helm -------------------------------------------------------------------------------
helm_want="helm $HELM_VERSION recipe $RECIPE"
if stamp_ok helm "$helm_want"; then
  info "helm $HELM_VERSION: up to date"
else
  step "helm $HELM_VERSION"
  t=$SECONDS
  # Stamp what helm's release Makefile stamps: its version (else `helm version` says a bare
  # v3.N) and the Kubernetes version derived from its client-go (else `helm template` and
  # `helm lint` assume Kubernetes v1.20).
  helm_gomod="$(cd "$BUILD" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | jq -r .GoMod)"
  cg="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$helm_gomod")"
  [[ "$cg" =~ ^v0\.([0-9]+)\. ]] || die "cannot find helm's k8s.io/client-go version in $helm_gomod"
  hl="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    hl+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=${BASH_REMATCH[1]}"
  done
  GOBIN="$BIN" go install -trimpath -ldflags "$hl" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  write_stamp helm "$helm_want"
  info "helm built in $(elapsed "$t"): $("$BIN/helm" version --short 2>/dev/null)"
fi

# --- kubeconform ------------------------------------------------------------------------
kc_want="kubeconform $KUBECONFORM_VERSION recipe $RECIPE"
if stamp_ok kubeconform "$kc_want"; then
  info "kubeconform $KUBECONFORM_VERSION: up to date"
else
  step "kubeconform $KUBECONFORM_VERSION"
  t=$SECONDS
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X main.version=$KUBECONFORM_VERSION" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  write_stamp kubeconform "$kc_want"
  info "kubeconform built in $(elapsed "$t")"
fi

# --- helm-unittest (the chart's template tests, charts/millrace/tests/) ---------------------
hu_want="helm-unittest $HELM_UNITTEST_VERSION recipe $RECIPE"
if stamp_ok helm-unittest "$hu_want"; then
  info "helm-unittest $HELM_UNITTEST_VERSION: up to date"
else
  step "helm-unittest $HELM_UNITTEST_VERSION"
  t=$SECONDS
  # Its go.mod has a replace line, so `go install pkg@version` refuses it (as for etcd):
  # build it from a small module that repeats the replacement.
  dir="$BUILD/helm-unittest-$HELM_UNITTEST_VERSION"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<EOF
module millrace.local/helm-unittest-build

go 1.26.0

require github.com/helm-unittest/helm-unittest $HELM_UNITTEST_VERSION

replace github.com/vmware-labs/yaml-jsonpath v0.3.2 => github.com/helm-unittest/yaml-jsonpath v0.4.0
EOF
  (cd "$dir" && go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN/helm-unittest" \
     github.com/helm-unittest/helm-unittest/cmd/helm-unittest)
  write_stamp helm-unittest "$hu_want"
  info "helm-unittest built in $(elapsed "$t")"
fi

step "platform tools ready in $(elapsed "$started")"
for b in etcd etcdctl kube-apiserver kube-controller-manager kubectl helm kubeconform helm-unittest; do
  info "$(printf '%-24s %s' "$b" "$(cat "$STAMPS/$b")")"
done
