"""Checks of a run's configuration that would otherwise fail minutes in: after the model has loaded, or after a
vLLM engine has started. Called from the training modules' ``setup``, which Lightning runs before
``configure_model`` (so before any weights load) and before ``on_fit_start`` (where engines start).

Each problem is reported with the option to change and how; all of them at once, in one error.
"""

from __future__ import annotations

from typing import Any

from rewards import CombinedReward, Reward
from rewards.templates import get_template
from rollout.hf import HFEngine

# The data split each evaluation stage reads. A fit without validation data trains without validation.
EVAL_SPLITS = {"validate": "val", "test": "test", "predict": "predict"}


def _has_split(datamodule: Any, split: str) -> bool:
    h = getattr(datamodule, "hparams", None)
    if h is None:
        return True  # not one of ours: its own loaders decide
    names = [f"{split}_data"] + (["val_datasets"] if split == "val" else [])
    known = [n for n in names if n in h]
    return not known or any(h[n] for n in known)


def is_fsdp2(strategy: Any) -> bool:
    """Whether ``strategy`` shards with FSDP2 (Lightning's ``ModelParallelStrategy``, as configs/strategy/fsdp.yaml)."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    return isinstance(strategy, ModelParallelStrategy)


def config_problems(
    stage: str, accelerator: str, datamodule: Any, attn_implementation: str | None = None, strategy: Any = None
) -> list[str]:
    """Problems that a run of ``stage`` (fit, validate, test, predict) on ``accelerator`` (``cpu`` or ``gpu``) with
    the trainer's ``strategy`` would hit. Pure over its arguments, so it is tested without starting anything."""
    problems: list[str] = []
    split = EVAL_SPLITS.get(stage)
    if split and datamodule is not None and not _has_split(datamodule, split):
        problems.append(
            f"`vlrl {stage}` reads data.init_args.{split}_data, which is not set: set it to a file or folder of rows"
        )
    if accelerator == "cpu" and attn_implementation == "flash_attention_2":
        problems.append(
            "model.init_args.policy.attn_implementation=flash_attention_2 needs a GPU: use sdpa (or auto, "
            "which picks flash-attn on GPUs that have it)"
        )
    if type(strategy).__name__ == "FSDPStrategy":  # Lightning's FSDP1 wrapper: our modules shard themselves (FSDP2)
        problems.append(
            "trainer.strategy: Lightning's FSDPStrategy (FSDP1) is not supported; add "
            "configs/strategy/fsdp.yaml after the recipe instead (FSDP2: GPUs or CPU processes)"
        )
    return problems


def check_run(trainer: Any, stage: str, attn_implementation: str | None = None, engine: Any = None) -> None:
    """Raise one ``ValueError`` listing every problem of this run's configuration (see ``config_problems``).

    Also: ``vlrl predict`` with the HF engine on an FSDP policy over several processes. Lightning's predict sampler
    does not pad, so ranks can run different numbers of batches, and generating on a sharded policy needs every rank
    in step; the vLLM engine (its own copy of the weights) or one process has no such constraint."""
    from lightning.pytorch.accelerators import CPUAccelerator

    accelerator = "cpu" if isinstance(trainer.accelerator, CPUAccelerator) else "gpu"
    stage = stage if stage in EVAL_SPLITS else "fit"  # Lightning's stage names: fit, validate, test, predict
    problems = config_problems(stage, accelerator, trainer.datamodule, attn_implementation, trainer.strategy)
    if stage == "predict" and trainer.world_size > 1 and is_fsdp2(trainer.strategy) and isinstance(engine, HFEngine):
        problems.append(
            "`vlrl predict` with rollout.hf.HFEngine on an FSDP-sharded policy over several processes can "
            "leave ranks waiting for each other: use rollout.vllm.VLLMEngine, or --trainer.devices=1 "
            "without configs/strategy/fsdp.yaml"
        )
    if problems:
        raise ValueError("the configuration cannot run:\n  - " + "\n  - ".join(problems))


def data_template(datamodule: Any) -> str | None:
    """The output template the datamodule's prompts ask for (``rewards.templates``), or None for data without one."""
    return getattr(datamodule, "template", None)


def check_templates(datamodule: Any, rewards: CombinedReward) -> None:
    """Rewards that check a template (format, hard format-result) check the one the prompts ask for: the data's
    ``template`` and each such reward's name the same ``rewards.templates`` entry."""
    name = data_template(datamodule)
    for reward_name, reward in zip(rewards.names, rewards.rewards):
        if name is not None and reward.template is not None and reward.template != name:
            raise ValueError(
                f"data.init_args.prompts.template is {name!r} but the {reward_name} reward checks template "
                f"{reward.template!r}: set its init_args.template: {name} (or ${{data.init_args.prompts.template}})"
            )


def evaluation_fallbacks(datamodule: Any, rewards: CombinedReward, accuracy: Reward) -> tuple[str, ...] | None:
    """The accuracy reward reads the ``<answer>`` block only (as the published rewards do). Prompts of a template
    without one (``plain``) ask for a bare answer, which that would score 0 on every row: evaluation then reads the
    whole reply (the returned fallbacks; None: nothing to change), and a configured accuracy reward must say so itself
    (``answer_fallbacks: [text]``), or the run stops here."""
    name = data_template(datamodule)
    if name is None or get_template(name).answer_in_block or accuracy.answer_fallbacks:
        return None
    if "accuracy" in rewards.names:
        raise ValueError(
            f"data.init_args.prompts.template is {name!r} (no <answer> tags) but rewards.AccuracyReward reads "
            "the <answer> block only: set its init_args.answer_fallbacks: [text]"
        )
    return get_template(name).answer_fallbacks
