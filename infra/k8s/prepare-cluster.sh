#!/usr/bin/env bash
# Prepare a Kubernetes cluster for the avatar-serve chart: KubeRay operator, NVIDIA GPU operator
# (device plugin, container toolkit, DCGM exporter) and kube-prometheus-stack. Idempotent
# (`helm upgrade --install`); runs against kubectl's current context.
#
# Usage: infra/k8s/prepare-cluster.sh [--dry-run] [--no-gpu-operator] [--drivers-preinstalled]
#                                     [--no-monitoring]
#   --dry-run               print the commands instead of running them
#   --no-gpu-operator       the cloud already runs the NVIDIA device plugin (e.g. GKE, AKS)
#   --drivers-preinstalled  GPU nodes ship the NVIDIA driver (most managed GPU node images)
#   --no-monitoring         you run Prometheus/Grafana some other way
# Pin versions with KUBERAY_VERSION, GPU_OPERATOR_VERSION, PROMETHEUS_STACK_VERSION (default:
# the repo's latest). Namespaces: KUBERAY_NAMESPACE (kuberay-system), GPU_NAMESPACE
# (gpu-operator), MONITORING_NAMESPACE (monitoring).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dry_run=0 gpu_operator=1 drivers=1 monitoring=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --no-gpu-operator) gpu_operator=0 ;;
    --drivers-preinstalled) drivers=0 ;;
    --no-monitoring) monitoring=0 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "prepare-cluster: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

KUBERAY_NAMESPACE="${KUBERAY_NAMESPACE:-kuberay-system}"
GPU_NAMESPACE="${GPU_NAMESPACE:-gpu-operator}"
MONITORING_NAMESPACE="${MONITORING_NAMESPACE:-monitoring}"

run() {
  echo "+ $*"
  if [[ $dry_run == 0 ]]; then "$@"; fi
}
version_flag() { if [[ -n "${1:-}" ]]; then echo "--version=$1"; fi; }

if [[ $dry_run == 0 ]]; then
  command -v helm >/dev/null || { echo "prepare-cluster: helm is required" >&2; exit 1; }
  command -v kubectl >/dev/null || { echo "prepare-cluster: kubectl is required" >&2; exit 1; }
  kubectl cluster-info >/dev/null || { echo "prepare-cluster: no cluster reachable" >&2; exit 1; }
fi

run helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update
if [[ $gpu_operator == 1 ]]; then
  run helm repo add nvidia https://helm.ngc.nvidia.com/nvidia --force-update
fi
if [[ $monitoring == 1 ]]; then
  run helm repo add prometheus-community https://prometheus-community.github.io/helm-charts \
    --force-update
fi
run helm repo update

# 1. Prometheus operator first, so the KubeRay/GPU charts' monitors find their CRDs.
if [[ $monitoring == 1 ]]; then
  run helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
    $(version_flag "${PROMETHEUS_STACK_VERSION:-}") \
    --namespace "$MONITORING_NAMESPACE" --create-namespace \
    --values "$here/kube-prometheus-stack-values.yaml" --wait
fi

# 2. KubeRay operator: owns RayService/RayCluster and runs the Ray autoscaler sidecars.
run helm upgrade --install kuberay-operator kuberay/kuberay-operator \
  $(version_flag "${KUBERAY_VERSION:-}") \
  --namespace "$KUBERAY_NAMESPACE" --create-namespace --wait

# 3. NVIDIA GPU operator: device plugin (nvidia.com/gpu), container toolkit, GPU feature
#    discovery (nvidia.com/gpu.present / gpu.product node labels), DCGM exporter.
if [[ $gpu_operator == 1 ]]; then
  gpu_flags=(--set "dcgmExporter.serviceMonitor.enabled=$([[ $monitoring == 1 ]] && echo true || echo false)")
  if [[ $drivers == 0 ]]; then gpu_flags+=(--set driver.enabled=false); fi
  run helm upgrade --install gpu-operator nvidia/gpu-operator \
    $(version_flag "${GPU_OPERATOR_VERSION:-}") \
    --namespace "$GPU_NAMESPACE" --create-namespace "${gpu_flags[@]}" --wait
fi

echo "Cluster prepared. Check it with: infra/k8s/check-cluster.sh"
