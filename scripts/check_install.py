"""The set-up's last step: check that the installed stack loads together, and, on a GPU machine, that torch sees
CUDA. Exits 1 with the reason when it does not (``scripts/setup.sh`` then stops without writing its stamp, so the next
run installs again).

    python scripts/check_install.py --target gpu|cpu
"""

from __future__ import annotations

import argparse
import sys


def problems(target: str) -> list[str]:
    """What is wrong with this install for ``target`` (empty when nothing is)."""
    import torch
    import torchvision

    out = []
    try:  # fails when torch and torchvision were built for each other's strangers
        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as e:  # noqa: BLE001 - reported, with the fix
        out.append(f"torchvision {torchvision.__version__} does not load beside torch {torch.__version__}: {e}")
    if target == "gpu" and not torch.cuda.is_available():
        out.append(
            f"the GPU stack was installed (nvidia-smi lists a GPU, or VLRL_TARGET=gpu) but torch {torch.__version__} "
            "cannot see CUDA "
            f"(built for CUDA {torch.version.cuda}); check the driver against that CUDA version (nvidia-smi), "
            "CUDA_VISIBLE_DEVICES, and that the GPU build of torch was installed; on a machine without a GPU (a login "
            "node) set VLRL_TARGET=cpu"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=["cpu", "gpu"], required=True, help="the stack setup.sh installed")
    target = parser.parse_args(argv).target
    import lightning
    import torch
    import torchvision
    import transformers

    print(
        f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}, transformers "
        f"{transformers.__version__}, lightning {lightning.__version__}, cuda={torch.cuda.is_available()}"
    )
    try:
        import vllm

        print(f"[setup] vllm {vllm.__version__}")
    except Exception as e:  # noqa: BLE001 - report and go on; rollouts fall back to the HF engine
        print(f"[setup] vllm not importable: {e}")
    if target == "gpu":
        from lightning_modules.policy import flash_attn_problem

        problem = flash_attn_problem()
        print(f"[setup] attention: {'flash_attention_2' if problem is None else 'sdpa (' + problem + ')'}")
    found = problems(target)
    for problem in found:
        print(f"[setup] FAILED: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
