#!/usr/bin/env bash
# Builds the real control plane the cluster tests run against (`make testenv`): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok, the Kubeflow training operator v1 and Kueue (queueing);
# what a real Kubernetes node runs: kubelet, kube-proxy, containerd (with containerd-shim-runc-v2 and ctr),
# the CNI plugins bridge, loopback, host-local and portmap (in cni-bin/, the node's CNI bin dir), CoreDNS
# and the pod sandbox's static `pause` (from pause/pause.c, built with gcc); and what builds and serves
# images offline: BuildKit (buildkitd, buildctl); and MinIO (minio: the tests' S3 server and the chart's;
# mc, its bucket Job's client). Each Go binary comes from its Go module at the version pinned in the go.mod
# beside this script, plus data files of those same releases: the PyTorchJob CRD, Kueue's CRDs and webhook
# manifests, and kwok's default node and pod Stages.
#
# Binaries land outside the clone, in $OKVQA_TESTENV_DIR (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/okvqa-k8s/testenv/bin). Each binary gets a stamp naming its module
# version and a hash of the go.mod/go.sum/sources it came from (pause: of pause.c and the gcc version): a
# binary whose stamp matches is skipped, so a second run is a no-op. If $KUBEBUILDER_ASSETS (what
# controller-runtime's setup-envtest fills) holds etcd and kube-apiserver, those two are linked from there
# instead of built.
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

# version_of DIR MODULE: the version of MODULE that the go.mod in DIR pins.
version_of() {
  (cd "$here/$1" && "$go" list -m -f '{{.Version}}' "$2")
}

# The stamp of a component: module@version, Go version, and a hash of every input file of its directory.
stamp_of() {
  local dir=$1 module=$2
  printf '%s@%s %s %s\n' "$module" "$(version_of "$dir" "$module")" "$goversion" \
    "$(cd "$here/$dir" && shopt -s nullglob && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)"
}

up_to_date() {
  local name=$1 stamp=$2
  [[ -x $out/$name && -f $stamps/$name && $(cat "$stamps/$name") == "$stamp" ]]
}

# build [--tags TAGS] DIR MODULE LDFLAGS NAME=PACKAGE...: one `go build` for all binaries of one module,
# so they share compiled packages; output goes to a temporary directory first so an interrupted build
# leaves no half-written binary behind a valid stamp. TAGS (space-separated build tags) become part of
# the stamp. A NAME may name a sub-directory of $out (cni-bin/bridge).
build() {
  local tags='' dir module ldflags stamp name pkg pkgs=() names=() pair tmp start
  if [[ $1 == --tags ]]; then
    tags=$2
    shift 2
  fi
  dir=$1 module=$2 ldflags=$3
  shift 3
  stamp=$(stamp_of "$dir" "$module")${tags:+ tags=${tags// /,}}
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
  (cd "$here/$dir" && "$go" build -p "$jobs" -trimpath ${tags:+"-tags=$tags"} -ldflags="-s -w $ldflags" \
    -o "$tmp/" "${pkgs[@]}")
  for i in "${!names[@]}"; do
    mkdir -p "$(dirname "$out/${names[$i]}")" "$(dirname "$stamps/${names[$i]}")"
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

# minio_ldflags PACKAGE PSEUDO-VERSION: what MinIO's buildscripts/gen-ldflags.go stamps into PACKAGE
# (github.com/minio/minio/cmd, github.com/minio/mc/cmd), from the commit time and hash that a
# pseudo-version (v0.0.0-yyyymmddhhmmss-abcdefabcdef) carries; without them both report DEVELOPMENT.GOGET.
minio_ldflags() {
  local pkg=$1 version=$2 ts hash when
  ts=${version%-*} hash=${version##*-}
  ts=${ts##*[-.]}
  if ! [[ $ts =~ ^[0-9]{14}$ && $hash =~ ^[0-9a-f]{12}$ ]]; then
    echo "build.sh: $pkg: $version is not a pseudo-version" >&2
    exit 1
  fi
  when="${ts:0:4}-${ts:4:2}-${ts:6:2}T${ts:8:2}:${ts:10:2}:${ts:12:2}Z"
  echo "-X $pkg.Version=$when -X $pkg.ReleaseTag=DEVELOPMENT.${when//:/-} -X $pkg.CommitID=$hash" \
    "-X $pkg.ShortCommitID=$hash -X $pkg.CopyrightYear=${ts:0:4}"
}

# build_pause: the pod sandbox's `pause` from pause/pause.c: a static C binary, so its image needs no libc.
build_pause() {
  local src=$here/pause/pause.c stamp tmp
  if ! command -v gcc >/dev/null 2>&1; then
    echo "build.sh: gcc is not installed (apt-get install gcc libc6-dev); it is needed to build pause" >&2
    exit 1
  fi
  stamp="pause $(sha256sum <"$src" | cut -c1-16) $(gcc --version | head -n1)"
  if up_to_date pause "$stamp"; then
    log "pause: up to date"
    return 0
  fi
  tmp=$(mktemp -d "$out/.build.XXXXXX")
  gcc -static -O2 -s -o "$tmp/pause" "$src"
  mv -f "$tmp/pause" "$out/pause"
  echo "$stamp" >"$stamps/pause"
  rmdir "$tmp"
  log "built pause with $(gcc --version | head -n1)"
}

k8s_version=$(version_of kubernetes k8s.io/kubernetes)
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
build kubernetes k8s.io/kubernetes "$k8s_ldflags" "${kube_servers[@]}" \
  kubelet=k8s.io/kubernetes/cmd/kubelet kube-proxy=k8s.io/kubernetes/cmd/kube-proxy
build kwok sigs.k8s.io/kwok "" kwok=sigs.k8s.io/kwok/cmd/kwok
build training-operator github.com/kubeflow/training-operator "" \
  training-operator=github.com/kubeflow/training-operator/cmd/training-operator.v1
kueue_version=$(version_of kueue sigs.k8s.io/kueue)
build kueue sigs.k8s.io/kueue "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$kueue_version" \
  kueue=sigs.k8s.io/kueue/cmd/kueue

# A real node's runtime and network, and what builds and serves images offline.
containerd_version=$(version_of containerd github.com/containerd/containerd/v2)
build --tags "no_btrfs no_devmapper no_zfs" containerd github.com/containerd/containerd/v2 \
  "-X github.com/containerd/containerd/v2/version.Version=$containerd_version" \
  containerd=github.com/containerd/containerd/v2/cmd/containerd \
  containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
  ctr=github.com/containerd/containerd/v2/cmd/ctr
# The CNI bin dir holds nothing but plugins, so they get a directory of their own.
cni_version=$(version_of cni-plugins github.com/containernetworking/plugins)
build cni-plugins github.com/containernetworking/plugins \
  "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$cni_version" \
  cni-bin/bridge=github.com/containernetworking/plugins/plugins/main/bridge \
  cni-bin/loopback=github.com/containernetworking/plugins/plugins/main/loopback \
  cni-bin/host-local=github.com/containernetworking/plugins/plugins/ipam/host-local \
  cni-bin/portmap=github.com/containernetworking/plugins/plugins/meta/portmap
build coredns github.com/coredns/coredns "" coredns=github.com/coredns/coredns
build_pause
buildkit_version=$(version_of buildkit github.com/moby/buildkit)
build buildkit github.com/moby/buildkit "-X github.com/moby/buildkit/version.Version=$buildkit_version" \
  buildkitd=github.com/moby/buildkit/cmd/buildkitd buildctl=github.com/moby/buildkit/cmd/buildctl
minio_ldflags=$(minio_ldflags github.com/minio/minio/cmd "$(version_of minio github.com/minio/minio)")
build minio github.com/minio/minio "$minio_ldflags" minio=github.com/minio/minio
mc_ldflags=$(minio_ldflags github.com/minio/mc/cmd "$(version_of mc github.com/minio/mc)")
build mc github.com/minio/mc "$mc_ldflags" mc=github.com/minio/mc

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
copy_from_module kueue sigs.k8s.io/kueue kueue-crds kueue-crds \
  config/components/crd/bases/kueue.x-k8s.io_{admissionchecks,clusterqueues,cohorts,localqueues,multikueueclusters,multikueueconfigs,provisioningrequestconfigs,resourceflavors,topologies,workloadpriorityclasses,workloads}.yaml
copy_from_module kueue sigs.k8s.io/kueue kueue-webhooks kueue-webhooks config/components/webhook/manifests.yaml
copy_from_module kwok sigs.k8s.io/kwok kwok-stages kwok-stages \
  kustomize/stage/node/fast/node-initialize.yaml \
  kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  kustomize/stage/pod/fast/pod-ready.yaml \
  kustomize/stage/pod/fast/pod-delete.yaml
log "done: $(cd "$out" && echo etcd kube-* kubelet kwok training-operator kueue minio mc containerd* ctr cni-bin/* \
  coredns pause buildkitd buildctl ./*.yaml kueue-crds/*.yaml kueue-webhooks/*.yaml \
  kwok-stages/*.yaml)"
