"""The argument groups of the training modules, one documented dataclass each.

``GRPOModule(policy=PolicyConfig, optim=OptimConfig, update=UpdateConfig, rollout=RolloutSettings,
rollout_stages=[RolloutStage, ...], evaluation=EvalConfig, ...)`` and ``SFTModule(policy=PolicyConfig,
optim=OptimConfig, ...)``; in YAML ``model.init_args.policy.model_name_or_path``, ``model.init_args.optim.lr``,
``model.init_args.update.micro_batch_size``, ``model.init_args.rollout.group_size``,
``model.init_args.evaluation.sampling``.
jsonargparse reads each class's ``Args:`` section for ``--help``. Each dataclass checks its own values when it is
built (``__post_init__``), so a typo stops the run before a model loads. They are frozen: a module's defaults are
shared instances.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

from torch import nn

from lightning_modules.optim import OPTIMIZERS, SCHEDULES, adamw_with_warmup, beta_at, warmup_steps_for
from lightning_modules.policy import DTYPES, LoRAConfig, load_policy
from rollout.engine import SamplingConfig

LOGPS_FORWARDS = ("shared_prefix", "grouped", "per_row")


@dataclass(frozen=True)
class PolicyConfig:
    """The trained policy: which checkpoint, in which dtype, what is trained.

    Args:
        model_name_or_path: checkpoint folder or hub id of a supported family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).
        dtype: the policy's weights (the optimizer's master weights): ``float32``. Compute in bf16 with the trainer's
            ``precision: bf16-mixed``. ``bfloat16`` weights cannot take a fine-tuning step: bf16 keeps ~3 significant
            digits and an Adam update is about lr (5e-7), so almost every update rounds away.
        reference_dtype: GRPO's frozen reference weights (default: the policy's); ``bfloat16`` halves its memory.
            SFT has no reference and ignores it.
        attn_implementation: transformers attention kernel (``sdpa``, ``flash_attention_2``, ``eager``, or ``auto``:
            flash-attn where installed on a GPU, else sdpa).
        gradient_checkpointing: recompute activations in the backward pass: less memory, more compute.
        freeze_vision_tower: keep the vision encoder fixed.
        freeze_embeddings: keep the token embeddings and LM head fixed (see ``load_policy``).
        lora: LoRA settings, or None for a full fine-tune.
        trust_remote_code: let transformers run model code shipped with the checkpoint (non-Qwen models).
    """

    model_name_or_path: str
    dtype: str = "float32"
    reference_dtype: str | None = None
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    freeze_vision_tower: bool = False
    freeze_embeddings: bool = False
    lora: LoRAConfig | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        for name in ("dtype", "reference_dtype"):
            value = getattr(self, name)
            if value is not None and value not in DTYPES:
                raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {value!r}")

    def load(self) -> nn.Module:
        """The policy these settings describe (``lightning_modules.policy.load_policy``)."""
        return load_policy(
            self.model_name_or_path,
            dtype=self.dtype,
            attn_implementation=self.attn_implementation,
            gradient_checkpointing=self.gradient_checkpointing,
            freeze_vision_tower=self.freeze_vision_tower,
            lora=self.lora,
            trust_remote_code=self.trust_remote_code,
            freeze_embeddings=self.freeze_embeddings,
        )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW over the trainable parameters and its learning-rate schedule (``lightning_modules.optim``).

    Args:
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up optimizer steps from 0 to ``lr``; the warm-up lasts
            ``max(warmup_steps, ceil(warmup_ratio x optimizer steps))``.
        warmup_ratio: warm-up as a share of the run's optimizer steps (Vision-R1's cold start: 0.05).
        lr_schedule: after warm-up, ``constant`` or ``cosine`` (to 0 at the last step; Vision-R1's cold start: cosine).
        optimizer: ``adamw`` (torch's), ``adamw_fused`` (torch's fused kernel: no full-size temporary in the step) or
            ``adamw_8bit`` (torchao's 8-bit moments, a quarter of the state: ``configs/memory/adamw_8bit.yaml``).
    """

    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    lr_schedule: str = "constant"
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use one of {OPTIMIZERS}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; use one of {SCHEDULES}")
        warmup_steps_for(1, self.warmup_steps, self.warmup_ratio)  # raises on a ratio outside [0, 1)

    @property
    def needs_total_steps(self) -> bool:
        """Whether the schedule needs the run's number of optimizer steps (cosine decay, a warm-up ratio)."""
        return self.lr_schedule != "constant" or self.warmup_ratio > 0

    def build(self, model: nn.Module, total_steps: Callable[[], int]) -> dict:
        """``configure_optimizers``' value for ``model`` (``lightning_modules.optim.adamw_with_warmup``);
        ``total_steps`` is asked only when the schedule needs the run's optimizer steps."""
        return adamw_with_warmup(
            model,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            schedule=self.lr_schedule,
            total_steps=total_steps() if self.needs_total_steps else None,
            warmup_ratio=self.warmup_ratio,
            optimizer=self.optimizer,
        )


@dataclass(frozen=True)
class UpdateConfig:
    """How GRPO turns one rollout batch into optimizer steps.

    Args:
        micro_batch_size: rows (completions) per forward/backward.
        num_iterations: mu, optimizer steps per rollout batch (old log-probs frozen at rollout time).
        max_grad_norm: gradient clipping norm per optimizer step.
        beta_schedule: the KL coefficient (the loss's ``beta`` at step 0): ``constant`` or ``cosine`` (to 0 over the
            run's steps).
        logps_chunk_size: positions per LM-head and log-softmax chunk (extra memory is about chunk x vocab floats).
        logps_forward: how policy, reference and old log-probs are computed. ``shared_prefix`` (default): each
            prompt's images through the vision tower once and its tokens through the language model once, the G
            completions attending to the shared keys and values; ``grouped``: images once, prompt and completion
            together per row (what ``shared_prefix`` falls back to under gradient checkpointing); ``per_row``: the
            model's own forward on every (prompt, completion) row. The three give the same log-probs on Qwen2-VL and
            Qwen2.5-VL; Qwen3-VL always uses ``per_row`` (DeepStack: ``models.families``), said once at the start.
            Measured in ``bench/grpo_update.py``.
        tis_cap: truncated importance sampling (off when None): each token's policy-gradient term is weighted by
            ``min(exp(old_logps - engine_logps), tis_cap)``, correcting for the engine's sampling distribution
            differing from the trained policy's (precision, kernels). Needs engine log-probs.
        parity_check_every_n_steps: with an engine that reports sampling log-probs (vLLM), log the mean and max
            |policy log-prob - engine log-prob| over the sampled tokens every N steps (0: never; not logged when
            top-k or top-p truncates sampling, where the engine's log-probs are renormalised over the kept tokens).
            It costs nothing: the policy's log-probs of the first iteration are the ones the loss needs anyway.
    """

    micro_batch_size: int = 8
    num_iterations: int = 1
    max_grad_norm: float = 1.0
    beta_schedule: str = "constant"
    logps_chunk_size: int = 1024
    logps_forward: str = "shared_prefix"
    tis_cap: float | None = None
    parity_check_every_n_steps: int = 1

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1 or self.num_iterations < 1:
            raise ValueError(
                f"micro_batch_size and num_iterations must be >= 1, got {self.micro_batch_size}, {self.num_iterations}"
            )
        if self.tis_cap is not None and self.tis_cap <= 0:
            raise ValueError(f"tis_cap must be positive, got {self.tis_cap}")
        if self.logps_forward not in LOGPS_FORWARDS:
            raise ValueError(f"logps_forward must be one of {LOGPS_FORWARDS}, got {self.logps_forward!r}")
        beta_at(0, 1, 1.0, self.beta_schedule)  # raises on an unknown schedule name


@dataclass(frozen=True)
class EvalConfig:
    """Validation, test and predict.

    Args:
        max_new_tokens: generation length (default: the rollout's).
        sampling: how completions are sampled (default greedy; its own ``max_new_tokens`` is replaced by the one
            above); Vision-R1's inference preset is ``{temperature: 0.6, top_p: 0.95}``.
        predictions_path: where ``vlrl predict`` writes JSONL (default ``<log dir>/predictions.jsonl``).
        shortcut_diagnostics: in validation and test, also image-blind accuracy, visual dependency, caption
            sufficiency and reasoning length against correctness (``evaluation.diagnostics``); costs one more
            generation per held-out row (and judge calls with a caption reward).
        short_reasoning_words: reasoning shorter than this counts as short in ``short_correct_share``.
    """

    max_new_tokens: int | None = None
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.0))
    predictions_path: str | None = None
    shortcut_diagnostics: bool = False
    short_reasoning_words: int = 10


@dataclass(frozen=True)
class RolloutSettings:
    """How completions are sampled for a training step and turned into advantages.

    Args:
        group_size: completions per prompt (G).
        max_new_tokens: longest completion, in tokens.
        temperature: sampling temperature (the log-probs of the loss are taken at the same temperature).
        top_p: nucleus sampling threshold (1: off).
        top_k: keep the k most likely tokens (0: off).
        scale_std: divide advantages by the group's std (False for Dr. GRPO).
        advantage_eps: added to the group's std before dividing (bounds the advantages of near-equal rewards).
        log_samples_every_n_steps: write prompts, completions and rewards to ``samples.jsonl`` in the log dir
            (0: never).
        num_logged_samples: completions written per logged step (the batch's first ones).
        dynamic_sampling: DAPO's dynamic sampling. The data batch is the pool of prompts drawn for a step; groups
            whose rewards are all equal (no advantage, nothing to learn) are dropped, and the step trains on at most
            ``prompts_per_step`` of the others, in pool order. Oversample by making the data batch larger than
            ``prompts_per_step`` (DAPO draws about 3x). Where we depart from DAPO: one draw per step, bounded by the
            pool, where DAPO keeps drawing generation batches until the train batch is full; a step with no
            informative group takes no update and is counted in ``rollout/uninformative_steps``. Under DDP/FSDP
            every rank trains on the fewest groups any rank kept.
        prompts_per_step: with ``dynamic_sampling``, the most prompts (groups) trained on per step (default: every
            informative one); unused without it.
        max_uninformative_in_a_row: with ``dynamic_sampling``, stop the run with an error after more than this many
            pools in a row without an informative group (DAPO's bound on draws).
        dead_reward_steps: warn once when a reward has given every rollout the same value for this many steps in a
            row (it teaches nothing; ``rollout/dead_rewards`` counts such rewards). 0: off.
    """

    group_size: int = 8
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    scale_std: bool = True
    advantage_eps: float = 1e-4
    log_samples_every_n_steps: int = 50
    num_logged_samples: int = 4
    dynamic_sampling: bool = False
    prompts_per_step: int | None = None
    max_uninformative_in_a_row: int = 20
    dead_reward_steps: int = 20

    def __post_init__(self) -> None:
        if self.prompts_per_step is not None and self.prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1 or None, got {self.prompts_per_step}")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_p, self.top_k, self.max_new_tokens)


@dataclass(frozen=True)
class RolloutStage:
    """One stage of a staged rollout schedule: for ``steps`` optimizer steps, sample ``group_size`` completions of at
    most ``max_new_tokens``. Vision-R1's progressive thinking suppression (PTST) is 4K/G16 -> 8K/G8 -> 16K/G4."""

    steps: int
    max_new_tokens: int
    group_size: int


T = TypeVar("T")


def from_plain(cls: type[T], value: T | dict[str, Any] | None) -> T | None:
    """``value`` as a ``cls`` instance: a dict (a group's hyperparameters as a checkpoint stores them, see
    ``plain_hparams``) is rebuilt, with the dataclasses inside it (``lora``, ``sampling``) rebuilt too; an instance
    or None is returned as it is. What lets ``load_from_checkpoint`` rebuild a module."""
    if not isinstance(value, dict):
        return value
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in value:
            continue
        kwargs[f.name] = value[f.name]
        nested = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if is_dataclass(t)]
        if nested and isinstance(value[f.name], dict):
            kwargs[f.name] = from_plain(nested[0], value[f.name])
    return cls(**kwargs)
