#!/usr/bin/env bash
# Check the Helm chart against a real Kubernetes control plane (`make helm-check`).
#
#   scripts/helm-check.sh            start a test cluster (python -m carina.testcluster),
#                                    check, stop it
#   KUBECONFIG=... scripts/helm-check.sh --use-kubeconfig
#                                    check against a cluster that is already running
#
# Steps, each of which must pass:
#   1. helm lint, with the default values and with each profile (helm/carina/profiles/*.yaml)
#   2. helm template with the same values sets, and with every optional integration turned on
#      (--api-versions monitoring.coreos.com/v1); the README matches values.yaml
#   3. kubectl apply --dry-run=server of each rendering: the API server admits every object
#      (and, on a cluster of its own, every example under examples/queues/)
#   4. helm install into the cluster (--wait: kwok's fake kubelet runs the pods, no image is
#      pulled), every object of the release exists, then helm upgrade to each profile, uninstall
#
# Binaries: helm and kubectl from the tools cache (make tools), Python from .venv (PY=...).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/helm/carina
PY=${PY:-$ROOT/.venv/bin/python}
RELEASE=${HELM_CHECK_RELEASE:-carina}
NAMESPACE=${HELM_CHECK_NAMESPACE:-carina-system}
WORK=$(mktemp -d -t carina-helm-check.XXXXXX)
CLUSTER_PID=""

log() { printf '\n== %s\n' "$*"; }
fail() { echo "helm-check: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  if [ -n "$CLUSTER_PID" ] && kill -0 "$CLUSTER_PID" 2>/dev/null; then
    kill -TERM "$CLUSTER_PID" 2>/dev/null || true  # the launcher stops every component
    wait "$CLUSTER_PID" 2>/dev/null || true
  fi
  [ $rc -eq 0 ] || { echo "helm-check: FAILED (logs in $WORK)" >&2; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT

tool() {  # tool NAME BINARY: the path tools/build.sh built it to (one place knows the layout)
  "$PY" -c "from carina.testcluster.binaries import tool_binary as t; print(t('$1', '$2'))" \
    || fail "$2 is not built: run make tools"
}
HELM=${HELM:-$(tool helm helm)}
KUBECTL=${KUBECTL:-$(tool kubernetes kubectl)}

# Helm says so on stderr every time it follows files/dashboards (a link to dashboards/).
helm() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

# name -> extra helm arguments; each is linted, rendered and dry-run applied.
declare -A VALUE_SETS=([default]="")
for profile in "$CHART"/profiles/*.yaml; do
  VALUE_SETS[$(basename "$profile" .yaml)]="-f $profile"
done
MONITORING="--set monitoring.serviceMonitor.enabled=true --set monitoring.podMonitor.enabled=true \
--set monitoring.prometheusRule.enabled=true --set monitoring.grafanaDashboards.enabled=true \
--api-versions monitoring.coreos.com/v1"

log "helm lint"
for name in "${!VALUE_SETS[@]}"; do
  # shellcheck disable=SC2086
  helm lint --strict "$CHART" ${VALUE_SETS[$name]} >"$WORK/lint-$name.txt" \
    || { cat "$WORK/lint-$name.txt"; fail "helm lint ($name) failed"; }
  echo "ok: $name"
done

log "helm template"
for name in "${!VALUE_SETS[@]}"; do
  # shellcheck disable=SC2086
  helm template "$RELEASE" "$CHART" -n "$NAMESPACE" ${VALUE_SETS[$name]} >"$WORK/$name.yaml"
  echo "ok: $name ($(grep -c '^kind:' "$WORK/$name.yaml") objects)"
done
# shellcheck disable=SC2086
helm template "$RELEASE" "$CHART" -n "$NAMESPACE" $MONITORING >"$WORK/monitoring.yaml"
for kind in ServiceMonitor PodMonitor PrometheusRule; do
  grep -q "^kind: $kind$" "$WORK/monitoring.yaml" || fail "monitoring on, but no $kind rendered"
done
echo "ok: monitoring ($(grep -c '^kind:' "$WORK/monitoring.yaml") objects)"
"$PY" "$ROOT/scripts/helm-readme.py" --check || fail "helm/carina/README.md is stale"
echo "ok: README.md matches values.yaml"

if [ "${1:-}" = "--use-kubeconfig" ]; then
  [ -n "${KUBECONFIG:-}" ] || fail "--use-kubeconfig needs KUBECONFIG"
else
  log "starting the test cluster"
  "$PY" -m carina.testcluster --no-prometheus --no-s3 >"$WORK/cluster.log" 2>&1 &
  CLUSTER_PID=$!
  for _ in $(seq 1 180); do
    line=$(grep -m1 '^export KUBECONFIG=' "$WORK/cluster.log" || true)
    [ -n "$line" ] && break
    kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$WORK/cluster.log"; fail "test cluster exited"; }
    sleep 1
  done
  [ -n "$line" ] || { cat "$WORK/cluster.log"; fail "test cluster did not start in 180 s"; }
  export KUBECONFIG=${line#export KUBECONFIG=}
  echo "ok: $KUBECONFIG"
fi
kubectl() { "$KUBECTL" "$@"; }

log "kubectl apply --dry-run=server"
# The API server can only admit a custom object whose CRD it serves: install the CRDs (Carina's
# and kopf's peering ones) for real, as helm install does first.
kubectl apply --server-side --force-conflicts -f "$CHART/crds/" -f "$CHART/charts/kopf-peering/crds/" >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# The queueing examples against the CRDs just installed (their LocalQueues need their
# namespaces, which only a cluster of our own gets).
if [ -n "$CLUSTER_PID" ]; then
  for ns in $(sed -n 's/^  namespace: *//p' "$ROOT"/examples/queues/*.yaml | sort -u); do
    kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  done
  kubectl apply --dry-run=server -f "$ROOT/examples/queues/" >"$WORK/dry-run-queues.txt" \
    || { cat "$WORK/dry-run-queues.txt"; fail "the API server refused examples/queues/"; }
  echo "ok: examples/queues ($(wc -l <"$WORK/dry-run-queues.txt") objects admitted)"
fi
for name in "${!VALUE_SETS[@]}"; do
  kubectl apply --dry-run=server -f "$WORK/$name.yaml" >"$WORK/dry-run-$name.txt" \
    || { cat "$WORK/dry-run-$name.txt"; fail "the API server refused the $name rendering"; }
  echo "ok: $name ($(wc -l <"$WORK/dry-run-$name.txt") objects admitted)"
done

log "helm install"
helm install "$RELEASE" "$CHART" -n "$NAMESPACE" --create-namespace --wait --timeout 5m \
  >"$WORK/install.txt" || { cat "$WORK/install.txt"; fail "helm install failed"; }
helm get manifest "$RELEASE" -n "$NAMESPACE" >"$WORK/release.yaml"
kubectl get -f "$WORK/release.yaml" -o name >"$WORK/release-objects.txt" \
  || fail "objects of the release are missing from the cluster"
expected=$(grep -c '^kind:' "$WORK/release.yaml")
found=$(wc -l <"$WORK/release-objects.txt")
[ "$expected" -eq "$found" ] || fail "release renders $expected objects, the cluster has $found"
echo "ok: installed, $found objects in the cluster"
kubectl rollout status -n "$NAMESPACE" "deployment/$RELEASE-operator" --timeout=120s >/dev/null
echo "ok: operator deployment rolled out"
for name in "${!VALUE_SETS[@]}"; do
  [ "$name" = default ] && continue
  # shellcheck disable=SC2086
  helm upgrade "$RELEASE" "$CHART" -n "$NAMESPACE" ${VALUE_SETS[$name]} --wait --timeout 5m \
    >"$WORK/upgrade-$name.txt" || { cat "$WORK/upgrade-$name.txt"; fail "upgrade to $name failed"; }
  echo "ok: upgraded to $name"
done
helm uninstall "$RELEASE" -n "$NAMESPACE" --wait >/dev/null
echo "ok: uninstalled"

log "helm-check passed"
