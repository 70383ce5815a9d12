"""RolloutCallback: before each training step, sample G completions per prompt, score them, and hand the module
one ``RolloutStep`` in ``batch["rollout"]``: the rollout batch (token ids, masks, rewards, group-normalised
advantages) to train on, the step's rollout metrics, and its status (``train``, ``uninformative``, ``empty``).

The rewards receive the dataset columns they declare (``CombinedReward.columns``), each repeated for the G
completions of its prompt. Judges that answer with the policy's own engine are bound to it when a stage starts.
After each step that trained, the engine syncs the policy's new weights (a no-op for the HF engine, which samples
from the live policy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from lightning import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lightning_modules.config import RolloutSettings, RolloutStage
from lightning_modules.phases import PhaseClock
from lightning_modules.reward_watch import DeadRewardWatch
from lightning_modules.run_state import resolve_log_dir
from rewards import CombinedReward
from rollout.advantages import group_advantages, informative_groups
from rollout.batch import RolloutBatch
from rollout.engine import VISION_TOKENS, Rollout, RolloutEngine, StepShape


def settings_at(step: int, base: RolloutSettings, stages: list[RolloutStage] | None) -> RolloutSettings:
    """The rollout settings in force at ``step``: the base ones, overridden by the current stage (the last stage
    continues past its end). Pure, so a resumed run picks the same stage from its restored step."""
    if not stages:
        return base
    boundary = 0
    for stage in stages:
        boundary += stage.steps
        if step < boundary:
            break
    return replace(base, max_new_tokens=stage.max_new_tokens, group_size=stage.group_size)


def stage_index(step: int, stages: list[RolloutStage] | None) -> int | None:
    """The index of the stage in force at ``step`` (the last one past the end), or None without stages. Pure."""
    if not stages:
        return None
    boundary = 0
    for i, stage in enumerate(stages):
        boundary += stage.steps
        if step < boundary:
            return i
    return len(stages) - 1


def stage_schedule_problems(max_steps: int, stages: list[RolloutStage] | None) -> list[str]:
    """What a run of ``max_steps`` optimizer steps does not do of its stages (-1: no step bound): stages it never
    reaches, or a last stage that runs past its own length. Pure."""
    if not stages or max_steps is None or max_steps < 0:
        return []
    total, reached = sum(stage.steps for stage in stages), stage_index(max(max_steps - 1, 0), stages) + 1
    if max_steps < total:
        return [
            f"rollout_stages: max_steps={max_steps} ends in stage {reached} of {len(stages)} (the stages add up to "
            f"{total} steps): stage(s) {reached + 1}-{len(stages)} never run; raise max_steps or shorten the stages"
        ]
    if max_steps > total:
        return [
            f"rollout_stages: the stages add up to {total} steps and max_steps={max_steps}: the last stage "
            f"continues for {max_steps - total} more"
        ]
    return []


STATUSES = ("train", "uninformative", "empty")


@dataclass
class RolloutStep:
    """What the callback hands the module for one training step, as ``batch["rollout"]``.

    ``status``: ``train`` (``batch`` holds the groups to train on), ``uninformative`` (sampled and scored, but no
    group is left to train on: dynamic sampling kept none, or another rank has none; ``batch`` is None and the
    metrics are still logged), ``empty`` (every row of the data batch was skipped at loading: nothing was sampled).
    """

    status: Literal["train", "uninformative", "empty"]
    batch: RolloutBatch | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if (self.batch is not None) != (self.status == "train"):
            raise ValueError(f"a {self.status!r} step {'needs' if self.status == 'train' else 'has no'} rollout batch")


class RolloutCallback(Callback):
    """See the module docstring. The callback is given what it uses: the engine, the rewards, the settings, and
    (``attach``) the policy and its processor once the module that owns them has built them. It reads nothing else
    of the module. ``clock`` receives the rollout's phases (``lightning_modules.phases``); the module that owns it
    adds its own phases and logs them."""

    def __init__(
        self,
        engine: RolloutEngine,
        rewards: CombinedReward,
        settings: RolloutSettings,
        stages: list[RolloutStage] | None = None,
        clock: PhaseClock | None = None,
    ) -> None:
        self.engine, self.rewards, self.settings, self.stages = engine, rewards, settings, stages
        self.policy, self.processor = None, None  # given by attach
        self.clock = clock if clock is not None else PhaseClock()
        self.stage: int | None = None  # the rollout stage announced last
        self.counter_keys: set[str] = set()  # reward counters seen so far (logged every step from then on)
        self.uninformative_steps = 0  # dynamic sampling: steps whose pool had no informative group
        self.uninformative_in_a_row = 0
        self.reward_watch = DeadRewardWatch(settings.dead_reward_steps)

    def attach(self, policy, processor) -> None:
        """The policy the engine samples from (and syncs weights from) and its processor. The module builds them in
        ``configure_model``, after the callbacks are configured, and hands them over there."""
        self.policy, self.processor = policy, processor

    # The engine starts at these hooks, once the policy is attached.
    def _start_engine(self, step: StepShape | None = None) -> None:
        if self.policy is None:
            raise RuntimeError("RolloutCallback: no policy attached (the module calls attach in configure_model)")
        self.engine.setup(self.policy, self.processor, step)
        for judge in self.rewards.judges:  # judges that answer with the policy's own engine bind to it
            judge.bind(self.engine, self.processor)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.log_dir = resolve_log_dir(trainer)  # a collective under DDP/FSDP: every rank, here

    def on_fit_start(self, trainer, pl_module) -> None:
        for problem in stage_schedule_problems(trainer.max_steps, self.stages):
            rank_zero_warn(problem)
        self._start_engine(self.step_shape(trainer.datamodule))

    def step_shape(self, datamodule) -> StepShape | None:
        """The largest rollout of a training step (the stage with the most tokens), from the rollout settings and the
        datamodule's batch size, prompt length and pixel bounds (``VQADataModule``'s properties); None when the
        datamodule does not say them."""
        batch_size = getattr(datamodule, "batch_size", None)
        prompt = getattr(datamodule, "max_prompt_length", None)
        if batch_size is None or prompt is None:
            return None
        stages = self.stages or [RolloutStage(0, self.settings.max_new_tokens, self.settings.group_size)]
        largest = max(stages, key=lambda stage: stage.group_size * (prompt + stage.max_new_tokens))
        pixels = getattr(datamodule, "min_pixels", None), getattr(datamodule, "max_pixels", None)
        return StepShape(batch_size, largest.group_size, prompt, largest.max_new_tokens, *pixels)

    def on_train_start(self, trainer, pl_module) -> None:
        # a run resumed into its own log folder logs the steps after the checkpoint again: drop the killed run's
        # samples of those steps, so samples.jsonl reads as one uninterrupted run
        samples = self.log_dir / "samples.jsonl"
        if trainer.global_step > 0 and trainer.is_global_zero and samples.is_file():
            lines = samples.read_text().splitlines(keepends=True)
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] < trainer.global_step]
            if len(kept) < len(lines):
                samples.write_text("".join(kept))

    # One wake for a whole evaluation loop, on every rank (a pending weight load gathers under FSDP), rather than one
    # per batch.
    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit":  # attached at fit start; re-attaching would re-sync a vLLM engine for nothing
            self._start_engine()
        self.engine.wake_up()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.engine.go_to_sleep()

    def on_test_start(self, trainer, pl_module) -> None:
        self._start_engine()
        self.engine.wake_up()

    def on_test_end(self, trainer, pl_module) -> None:
        self.engine.go_to_sleep()

    def on_predict_start(self, trainer, pl_module) -> None:
        self._start_engine()
        self.engine.wake_up()

    def on_predict_end(self, trainer, pl_module) -> None:
        self.engine.go_to_sleep()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        # the end of fit/validate/test/predict: free the engine's weights and KV cache; a later entry point
        # restarts it (what runs one after another in a notebook or a study need)
        self.engine.close()

    # -- one step's rollout ----------------------------------------------------------------------------------------
    def reward_columns(self, batch: dict[str, Any], group_size: int) -> dict[str, list]:
        """The dataset columns the rewards declare that the batch has, each value repeated for its G completions."""
        declared = self.rewards.columns
        return {key: [value for value in batch[key] for _ in range(group_size)] for key in declared if key in batch}

    def make_rollout(self, batch: dict[str, Any], settings: RolloutSettings) -> tuple[RolloutBatch, dict]:
        """Sample G completions per prompt, score them, group-normalise the rewards. Returns the rollout batch and
        ``{"metrics", "texts", "components"}`` (the last two for ``samples.jsonl``)."""
        g = settings.group_size
        with self.clock.phase("rollout"):
            out = self.engine.generate(batch["prompt"], batch["images"], g, settings.sampling())
        with self.clock.phase("rewards"):
            total, components = self.rewards(out.texts, **self.reward_columns(batch, g))  # [N], {..}
        judge = self.rewards.judge_seconds()  # the judge's wait, inside the rewards phase: charged apart
        if judge:
            self.clock.add("judge", judge)
            self.clock.add("rewards", -min(judge, self.clock.seconds["rewards"]))
        advantages, zero_var = group_advantages(total, g, settings.scale_std, settings.advantage_eps)  # [N]
        tok = self.processor.tokenizer
        rollout = RolloutBatch.from_rollout(
            out,
            advantages=advantages,
            rewards=total,
            temperature=settings.temperature,  # greedy (0) is stored as 1
            truncated_sampling=settings.top_p < 1.0 or settings.top_k > 0,
            vision_token_ids=tok.convert_tokens_to_ids(list(VISION_TOKENS)),
            pad_token_id=tok.pad_token_id,
        )
        metrics = {
            **self._rollout_metrics(out, total, components, zero_var),
            "perf/completion_tokens_per_s": float(out.lengths.sum()) / max(self.clock.seconds["rollout"], 1e-9),
            "rollout/vision_tokens_masked": float(rollout.vision_tokens_masked),
            **self._counter_metrics(),
        }
        return rollout, {"metrics": metrics, "texts": out.texts, "components": components}

    def _rollout_metrics(self, out: Rollout, total: torch.Tensor, components: dict, zero_var: int) -> dict[str, float]:
        lengths = out.lengths.float()  # [N]
        metrics = {f"reward/{name}": v.mean().item() for name, v in components.items()}
        metrics.update(
            {
                "reward/total": total.mean().item(),
                "reward/total_std": total.std().item() if total.numel() > 1 else 0.0,
                "rollout/completion_length_mean": lengths.mean().item(),
                "rollout/completion_length_max": lengths.max().item(),
                "rollout/truncated_rate": out.truncated.float().mean().item(),
                "rollout/zero_variance_groups": float(zero_var),
                "rollout/groups": float(out.prompt_ids.shape[0]),
            }
        )
        if self.engine.weight_version is not None:
            metrics["rollout/weight_version"] = float(self.engine.weight_version)
        return metrics

    def _counter_metrics(self) -> dict[str, float]:
        """This step's reward counters (judge failures, reward errors, ...). Every counter seen so far is logged every
        step (0 when quiet): Lightning repeats a key's last value at steps where it is not logged, which would
        multiply counts that only appear now and then."""
        counters = self.rewards.metrics()
        self.counter_keys.update(counters)
        return {key: counters.get(key, 0.0) for key in sorted(self.counter_keys)}

    def on_train_batch_start(self, trainer, pl_module, batch: dict[str, Any], batch_idx: int) -> None:
        # one wake per step, shared by the rollout and the judge, on every rank (a pending weight load gathers)
        self.clock.start_step()
        self.rewards.judge_seconds()  # from this step on: judge time charged outside a step is dropped
        with self.clock.phase("weight_sync"):
            self.engine.wake_up()
        try:
            self._rollout_step(trainer, batch)
        finally:
            with self.clock.phase("weight_sync"):
                self.engine.go_to_sleep()

    def _rollout_step(self, trainer, batch: dict[str, Any]) -> None:
        settings = settings_at(trainer.global_step, self.settings, self.stages)
        stage = stage_index(trainer.global_step, self.stages)
        if stage is not None and stage != self.stage:  # a PTST stage begins (or a resumed run is inside one)
            self.stage = stage
            rank_zero_info(
                f"rollout stage {stage + 1}/{len(self.stages)} from step {trainer.global_step}: "
                f"max_new_tokens {settings.max_new_tokens}, group size {settings.group_size}"
            )
        if not batch["prompt"]:  # every row skipped: the module counts the skips and does nothing else
            self._join_the_other_ranks(trainer, settings)
            batch["rollout"] = RolloutStep("empty")
            return
        rollout, info = self.make_rollout(batch, settings)
        kept = self._kept_groups(trainer, rollout, settings)
        metrics = {
            **info["metrics"],
            "rollout/group_size": float(settings.group_size),
            "rollout/max_new_tokens": float(settings.max_new_tokens),
            "rollout/groups_kept": float(len(kept)),
        }
        if settings.dynamic_sampling:
            metrics["rollout/uninformative_steps"] = float(self.uninformative_steps)
        for warning in self.reward_watch.update(info["components"]):
            rank_zero_warn(warning)
        metrics["rollout/dead_rewards"] = float(len(self.reward_watch.dead))
        if len(kept) < rollout.num_groups:
            rollout = rollout.select_groups(kept) if kept else None
        if rollout is None:
            batch["rollout"] = RolloutStep("uninformative", metrics=metrics)
        else:
            batch["rollout"] = RolloutStep("train", rollout.to(trainer.strategy.root_device), metrics)
        every = self.settings.log_samples_every_n_steps
        if every and trainer.global_step % every == 0 and trainer.is_global_zero:
            self._write_samples(trainer, batch, info, settings.group_size)

    def _join_the_other_ranks(self, trainer, settings: RolloutSettings) -> None:
        """A rank without rows still takes part in the step's collectives, so that the others do not wait forever."""
        if self.engine.collective:  # an FSDP policy: join the other ranks' generation and judge forwards
            out = self.engine.generate([], [], settings.group_size, settings.sampling())
            self.rewards(out.texts, **{key: [] for key in self.rewards.columns})
        self._fewest_across_ranks(trainer, 0)  # the other ranks wait for this rank's count: all skip

    def _kept_groups(self, trainer, rollout: RolloutBatch, settings: RolloutSettings) -> list[int]:
        """The groups trained on: all of them, or with dynamic sampling the informative ones (at most
        ``prompts_per_step``); under DDP/FSDP no more on any rank than the fewest any rank kept."""
        if not settings.dynamic_sampling:  # rows skipped at loading can leave ranks with different numbers of groups
            return list(range(self._fewest_across_ranks(trainer, rollout.num_groups)))
        kept = informative_groups(rollout.rewards, settings.group_size)[: settings.prompts_per_step]
        kept = kept[: self._fewest_across_ranks(trainer, len(kept))]
        self.uninformative_steps += not kept
        self.uninformative_in_a_row = 0 if kept else self.uninformative_in_a_row + 1
        if self.uninformative_in_a_row > settings.max_uninformative_in_a_row:
            raise RuntimeError(
                f"dynamic sampling: {self.uninformative_in_a_row} pools in a row (step {trainer.global_step}) had "
                "no group whose rewards differ, so no update was taken; every completion scores the same "
                "(check the rewards against samples.jsonl, or raise the sampling temperature)"
            )
        return kept

    @staticmethod
    def _fewest_across_ranks(trainer, kept: int) -> int:
        """The smallest kept-group count over all ranks: every rank trains on as many groups, so DDP and FSDP run
        the same number of forwards and backwards (their collectives would otherwise wait forever)."""
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return kept
        count = torch.tensor(kept, device=trainer.strategy.root_device)
        torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MIN)
        return int(count)

    def state_dict(self) -> dict[str, Any]:
        return {"uninformative_steps": self.uninformative_steps, "reward_watch": self.reward_watch.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.uninformative_steps = state_dict.get("uninformative_steps", 0)
        self.reward_watch.load_state_dict(state_dict.get("reward_watch", {}))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch["rollout"].status == "train":  # loaded at the engine's next wake (the next rollout or validation)
            self.engine.sync_weights(self.policy)

    def _write_samples(self, trainer, batch: dict[str, Any], info: dict[str, Any], g: int) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "samples.jsonl").open("a") as f:
            for row in range(min(self.settings.num_logged_samples, len(info["texts"]))):
                prompt = row // g
                record = {
                    "step": trainer.global_step,
                    "id": batch["id"][prompt],
                    # each image's file (images stored inside the data, as bytes, have none)
                    "images": [im.info.get("vlrl_source", "embedded") for im in batch["images"][prompt]],
                    "problem": batch["problem"][prompt],
                    "solution": batch["solution"][prompt],
                    "completion": info["texts"][row],
                    "rewards": {k: float(v[row]) for k, v in info["components"].items()},
                }
                f.write(json.dumps(record) + "\n")
