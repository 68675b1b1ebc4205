#!/usr/bin/env bash
# Builds the real control plane the cluster tests run against (`make testenv`): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok, the Kubeflow training operator v1 and SeaweedFS (S3),
# each from its Go module at the version pinned in the go.mod beside this script, plus data files of those
# same releases: the PyTorchJob CRD and kwok's default node and pod Stages.
#
# Binaries land outside the clone, in $OKVQA_TESTENV_DIR (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/okvqa-k8s/testenv/bin). Each binary gets a stamp naming its module
# version and a hash of the go.mod/go.sum/sources it came from: a binary whose stamp matches is skipped,
# so a second run is a no-op. If $KUBEBUILDER_ASSETS (what controller-runtime's setup-envtest fills) holds
# etcd and kube-apiserver, those two are linked from there instead of built.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${OKVQA_TESTENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/okvqa-k8s/testenv/bin}
stamps=$out/.stamps

if command -v go >/dev/null 2>&1; then
  go=$(command -v go)
elif [[ -x /usr/local/go/bin/go ]]; then
  go=/usr/local/go/bin/go
else
  echo "build.sh: Go is not installed (https://go.dev/dl/); it is needed to build the test control plane" >&2
  exit 1
fi

# One compile per core (more only costs memory); OKVQA_TESTENV_JOBS=1 where memory is short.
jobs=${OKVQA_TESTENV_JOBS:-$(nproc)}
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false"
goversion=$("$go" env GOVERSION)
mkdir -p "$out" "$stamps"
rm -rf "$out"/.build.*  # what an interrupted run left behind

log() { printf '[testenv] %s\n' "$*"; }

# The stamp of a component: module@version, Go version, and a hash of every input file of its directory.
stamp_of() {
  local dir=$1 module=$2 version
  version=$(cd "$here/$dir" && "$go" list -m -f '{{.Version}}' "$module")
  printf '%s@%s %s %s\n' "$module" "$version" "$goversion" \
    "$(cd "$here/$dir" && shopt -s nullglob && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)"
}

up_to_date() {
  local name=$1 stamp=$2
  [[ -x $out/$name && -f $stamps/$name && $(cat "$stamps/$name") == "$stamp" ]]
}

# build DIR MODULE LDFLAGS NAME=PACKAGE...: one `go build` for all binaries of one module, so they share
# compiled packages; output goes to a temporary directory first so an interrupted build leaves no
# half-written binary behind a valid stamp.
build() {
  local dir=$1 module=$2 ldflags=$3 stamp name pkg pkgs=() names=() pair tmp start
  shift 3
  stamp=$(stamp_of "$dir" "$module")
  for pair in "$@"; do
    name=${pair%%=*} pkg=${pair#*=}
    if up_to_date "$name" "$stamp"; then
      log "$name: up to date (${stamp%% *})"
    else
      names+=("$name") pkgs+=("$pkg")
    fi
  done
  ((${#names[@]})) || return 0
  log "building ${names[*]} from ${stamp%% *} (go build -p $jobs, first build takes minutes)"
  tmp=$(mktemp -d "$out/.build.XXXXXX")
  start=$SECONDS
  (cd "$here/$dir" && "$go" build -p "$jobs" -trimpath -ldflags="-s -w $ldflags" -o "$tmp/" "${pkgs[@]}")
  for i in "${!names[@]}"; do
    # go build names each binary after the last element of its package path.
    mv -f "$tmp/${pkgs[$i]##*/}" "$out/${names[$i]}"
    echo "$stamp" >"$stamps/${names[$i]}"
  done
  rmdir "$tmp"
  log "built ${names[*]} in $((SECONDS - start)) s"
}

# link_assets NAME...: take binaries from $KUBEBUILDER_ASSETS when it holds all of them.
link_assets() {
  local name
  [[ -n ${KUBEBUILDER_ASSETS:-} ]] || return 1
  for name in "$@"; do [[ -x $KUBEBUILDER_ASSETS/$name ]] || return 1; done
  for name in "$@"; do
    ln -sfn "$KUBEBUILDER_ASSETS/$name" "$out/$name"
    echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >"$stamps/$name"
    log "$name: linked from KUBEBUILDER_ASSETS ($KUBEBUILDER_ASSETS)"
  done
}

k8s_version=$(cd "$here/kubernetes" && "$go" list -m -f '{{.Version}}' k8s.io/kubernetes)
k8s_minor=${k8s_version#v1.}
k8s_minor=${k8s_minor%%.*}
# What Kubernetes' own hack/lib/version.sh stamps: without it the servers report v0.0.0-master, which
# clients comparing server versions (kwok, controller-runtime) misread.
k8s_ldflags="-X k8s.io/component-base/version.gitVersion=$k8s_version \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$k8s_minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$k8s_version \
-X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"

log "output directory: $out"
if link_assets etcd kube-apiserver; then
  kube_servers=(kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler)
else
  build etcd go.etcd.io/etcd/server/v3 "" etcd=okvqa-k8s/testenv/etcd
  kube_servers=(kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler)
fi
build kubernetes k8s.io/kubernetes "$k8s_ldflags" "${kube_servers[@]}"
build kwok sigs.k8s.io/kwok "" kwok=sigs.k8s.io/kwok/cmd/kwok
build training-operator github.com/kubeflow/training-operator "" \
  training-operator=github.com/kubeflow/training-operator/cmd/training-operator.v1
build seaweedfs github.com/seaweedfs/seaweedfs "" weed=github.com/seaweedfs/seaweedfs/weed

# copy_from_module DIR MODULE NAME DESTDIR FILE...: data files of a built module's release, taken from the
# module cache so they always match the binary (the PyTorchJob CRD; kwok's default node and pod Stages).
copy_from_module() {
  local dir=$1 module=$2 name=$3 dest=$out/$4 stamp src file
  shift 4
  stamp=$(stamp_of "$dir" "$module")
  if [[ -f $stamps/$name && $(cat "$stamps/$name") == "$stamp" ]]; then
    log "$name: up to date"
    return 0
  fi
  src=$(cd "$here/$dir" && "$go" mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$dest"
  for file in "$@"; do
    install -m 0644 "$src/$file" "$dest/"
  done
  echo "$stamp" >"$stamps/$name"
  log "$name: copied from $src"
}

copy_from_module training-operator github.com/kubeflow/training-operator pytorchjob-crd . \
  manifests/base/crds/kubeflow.org_pytorchjobs.yaml
copy_from_module kwok sigs.k8s.io/kwok kwok-stages kwok-stages \
  kustomize/stage/node/fast/node-initialize.yaml \
  kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  kustomize/stage/pod/fast/pod-ready.yaml \
  kustomize/stage/pod/fast/pod-delete.yaml
log "done: $(cd "$out" && echo etcd kube-* kwok training-operator weed ./*.yaml kwok-stages/*.yaml)"
