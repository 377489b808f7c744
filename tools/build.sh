#!/usr/bin/env bash
# Build the test control plane's binaries from Go modules, only those missing from the cache.
#
#   tools/build.sh                 build every tool that is missing
#   tools/build.sh kubernetes etcd  build only these (names: etcd kubernetes kwok helm minio)
#   tools/build.sh --print-dir      print the cache folder and exit
#   tools/build.sh --check          exit 1 if any tool is missing, build nothing
#
# Each tool lives in its own small Go module under tools/<dir>/ (its go.mod pins the version and
# go.sum the checksums). Each is a separate main module so that one tool's version selection
# never moves another's client-go, grpc or otel, and so that `replace` directives in the
# upstream go.mod files (which `go install pkg@version` refuses) do not apply.
# Binaries go to ${CARINA_TOOLS_DIR}/<name>-<version>/, outside the repository, so a fresh clone
# on the same machine reuses them. A build writes <name>-<version>.partial/ and renames it at the
# end, so an interrupted build is never mistaken for a finished one.
set -euo pipefail

TOOLS_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CARINA_TOOLS_DIR=${CARINA_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/carina/tools}
# Server binaries are static, as upstream builds them; no cgo toolchain is needed.
export CGO_ENABLED=0
# Never let a go line in a go.mod trigger a toolchain download mid-build: fail loudly instead.
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
# The modules carry go.sum; a build must not rewrite them.
export GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"

ALL_TOOLS=(etcd kubernetes kwok helm minio)

# module_version DIR MODULE: the version DIR/go.mod requires for MODULE (go.mod is the one
# place a version is written down; the Python launcher reads the same line).
module_version() {
  awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) && $0 !~ /=>/ {
    for (i = 1; i <= NF; i++) if ($i ~ /^v[0-9]/) { print $i; exit } }' "$1/go.mod"
}

# tool_spec NAME: sets DIR, MODULE and BINS for NAME.
tool_spec() {
  case $1 in
    etcd) DIR=etcd MODULE=go.etcd.io/etcd/server/v3 BINS="etcd" ;;
    kubernetes) DIR=k8s MODULE=k8s.io/kubernetes
      BINS="kube-apiserver kube-controller-manager kube-scheduler kubectl" ;;
    kwok) DIR=kwok MODULE=sigs.k8s.io/kwok BINS="kwok" ;;
    helm) DIR=helm MODULE=helm.sh/helm/v3 BINS="helm" ;;
    minio) DIR=minio MODULE=github.com/minio/minio BINS="minio" ;;
    *) echo "build.sh: unknown tool '$1' (known: ${ALL_TOOLS[*]})" >&2; exit 2 ;;
  esac
  VERSION=$(module_version "$TOOLS_SRC/$DIR" "$MODULE")
  [ -n "$VERSION" ] || { echo "build.sh: no version of $MODULE in tools/$DIR/go.mod" >&2; exit 2; }
  DEST=$CARINA_TOOLS_DIR/$1-${VERSION#v}
}

is_built() {
  local b
  for b in $BINS; do [ -x "$DEST/$b" ] || return 1; done
}

# ldflags NAME: version stamps, the same keys as each upstream release build.
ldflags() {
  local f="-s -w" p minor
  case $1 in
    kubernetes)
      # Without these /version says v0.0.0-master+$Format:%H$ (hack/lib/version.sh upstream),
      # which breaks helm kubeVersion constraints and kubectl's skew check.
      minor=$(echo "${VERSION#v}" | cut -d. -f2)
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        f="$f -X $p.gitVersion=$VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
      done ;;
    kwok)
      f="$f -X sigs.k8s.io/kwok/pkg/consts.Version=${VERSION#v}" ;;
    helm)
      # Helm's Makefile sets these; plain go builds would render .Capabilities.KubeVersion as
      # the client-go default. Pin it to the Kubernetes release the test cluster runs.
      minor=$(module_version "$TOOLS_SRC/k8s" k8s.io/kubernetes | cut -d. -f2)
      f="$f -X helm.sh/helm/v3/internal/version.version=$VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        f="$f -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
      done ;;
    minio)
      # MinIO's releases are tagged RELEASE.<time>, not semver, so Go knows them only by
      # pseudo-version v0.0.0-<yyyymmddhhmmss>-<commit>; rebuild the stamps upstream's
      # buildscripts/gen-ldflags.go would write from it.
      local ts=${VERSION#v0.0.0-} commit
      commit=${ts#*-}; ts=${ts%%-*}
      local iso="${ts:0:4}-${ts:4:2}-${ts:6:2}T${ts:8:2}:${ts:10:2}:${ts:12:2}Z"
      for p in "Version=$iso" "ReleaseTag=RELEASE.${iso//:/-}" "CopyrightYear=${ts:0:4}" \
               "CommitID=$commit" "ShortCommitID=$commit"; do
        f="$f -X github.com/minio/minio/cmd.$p"
      done ;;
  esac
  echo "$f"
}

build_one() {
  tool_spec "$1"
  if is_built; then echo "build.sh: $1 $VERSION is built ($DEST)"; return 0; fi
  local partial=$DEST.partial start=$SECONDS
  echo "build.sh: building $1 $VERSION into $DEST ..."
  rm -rf "$partial" && mkdir -p "$partial"
  (
    cd "$TOOLS_SRC/$DIR"
    if [ "$1" = etcd ]; then
      go build -ldflags "$(ldflags "$1")" -o "$partial/etcd" .
    else
      # The module's tool block lists the commands to build (go get -tool ...).
      GOBIN=$partial go install -ldflags "$(ldflags "$1")" tool
    fi
  )
  rm -rf "$DEST" && mv "$partial" "$DEST"
  echo "build.sh: built $1 $VERSION in $((SECONDS - start))s"
}

main() {
  local tools=() check=0 t
  for t in "$@"; do
    case $t in
      --print-dir) echo "$CARINA_TOOLS_DIR"; return 0 ;;
      --check) check=1 ;;
      -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; return 0 ;;
      *) tools+=("$t") ;;
    esac
  done
  [ ${#tools[@]} -gt 0 ] || tools=("${ALL_TOOLS[@]}")
  if [ $check = 1 ]; then
    local missing=0
    for t in "${tools[@]}"; do
      tool_spec "$t"; is_built || { echo "missing: $t $VERSION ($DEST)"; missing=1; }
    done
    return $missing
  fi
  command -v go >/dev/null || { echo "build.sh: Go is not installed (need go 1.26+)" >&2; exit 1; }
  mkdir -p "$CARINA_TOOLS_DIR"
  # Git-ignore-safe wherever CARINA_TOOLS_DIR points, even inside a checkout.
  [ -f "$CARINA_TOOLS_DIR/.gitignore" ] || echo '*' > "$CARINA_TOOLS_DIR/.gitignore"
  # Checkouts on one machine share the cache: one build at a time, the others wait and then
  # find the binaries built.
  if command -v flock >/dev/null; then
    exec 9>"$CARINA_TOOLS_DIR/.build.lock"
    flock 9
  fi
  for t in "${tools[@]}"; do build_one "$t"; done
}

main "$@"
