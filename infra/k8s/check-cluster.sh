#!/usr/bin/env bash
# Check that a cluster is ready for the avatar-serve chart: the CRDs it renders, GPUs the
# device plugin advertises, and the node labels the GPU pools select. Read-only.
# Usage: infra/k8s/check-cluster.sh
set -uo pipefail

ok=1
check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@" >/dev/null 2>&1; then echo "ok    $what"; else echo "MISSING $what"; ok=0; fi
}

check "KubeRay CRD rayservices.ray.io" kubectl get crd rayservices.ray.io
check "prometheus-operator CRD podmonitors (monitoring.podMonitor)" \
  kubectl get crd podmonitors.monitoring.coreos.com
check "prometheus-operator CRD prometheusrules (monitoring.prometheusRule)" \
  kubectl get crd prometheusrules.monitoring.coreos.com

echo "GPU nodes (allocatable nvidia.com/gpu, product label from GPU feature discovery):"
kubectl get nodes -L nvidia.com/gpu.present,nvidia.com/gpu.product \
  -o custom-columns='NODE:.metadata.name,GPUS:.status.allocatable.nvidia\.com/gpu,PRESENT:.metadata.labels.nvidia\.com/gpu\.present,PRODUCT:.metadata.labels.nvidia\.com/gpu\.product' \
  || ok=0
if ! kubectl get nodes -l nvidia.com/gpu.present=true -o name 2>/dev/null | grep -q .; then
  echo "note  no node is labelled nvidia.com/gpu.present=true yet: fine while GPU node pools are"
  echo "      scaled to zero (the cluster-autoscaler must know their labels), else see README"
fi
check "RuntimeClass nvidia (only needed when pools.*.runtimeClassName is nvidia)" \
  kubectl get runtimeclass nvidia

[[ $ok == 1 ]] && echo "ready" || { echo "not ready: see infra/k8s/README.md"; exit 1; }
