"""Every YAML in configs/ parses and instantiates through the CLI, and each recipe runs one real step on the tiny
model at its own precision and learning rate, the GPU recipes on data in the published shapes (model path, device,
engine and data paths overridden); unknown keys are errors."""

from pathlib import Path

import pytest
import yaml

from tests.probes import moved_fraction, transformer_weights
from vlrl_cli import main

CONFIGS = Path(__file__).parents[1] / "configs"
RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if p.name not in ("lora.yaml", "cpu.yaml"))  # not switch files
# ``vlrl test`` recipes, one per benchmark: they train nothing, so they are not among the recipes run for a step here;
# tests/e2e/test_eval_recipes.py runs each on its benchmark's published shape
EVAL_CONFIGS = sorted((CONFIGS / "eval").glob("*.yaml"))


FIXTURES = Path(__file__).parent / "fixtures"
# The GPU recipes train on data in the published shapes (tests/fixtures/README.md); only the file paths change.
PUBLISHED_DATA = {
    "visionary_r1": [f"--data.init_args.train_data={FIXTURES / 'visionary_r1' / 'train.jsonl'}"],
    "grpo_baseline": [f"--data.init_args.train_data={FIXTURES / 'visionary_r1' / 'train.jsonl'}"],
    "vision_r1_ptst": [f"--data.init_args.train_data={FIXTURES / 'vision_r1_rl' / 'train.jsonl'}"],
    "vision_r1_cold_start": [f"--data.init_args.dataset_dir={FIXTURES / 'vision_r1_cold'}"],
    "sft_baseline": [f"--data.init_args.train_data={FIXTURES / 'vision_r1_cold' / 'vision_r1_mulberry_sft_full.json'}"],
}


def cpu_overrides(config: Path, tiny_checkpoint, synthetic_dir, tmp_path) -> list[str]:
    """Run a recipe for one step on CPU with the tiny model. The GPU recipes keep their own precision, dtype, lr,
    batch size and image bounds and read the published-shape fixtures; only the model, the device, the engine
    (HF generate, with short completions) and the data paths change. The demo recipes read the synthetic rows."""
    spec = yaml.safe_load(config.read_text())
    is_sft = spec["model"]["class_path"].endswith("SFTModule")
    args = [
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.max_steps=1",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",  # the recipe's own ModelCheckpoint stays in
    ]
    if config.stem in PUBLISHED_DATA:
        args += PUBLISHED_DATA[config.stem]
    elif is_sft:
        args += [
            f"--data.init_args.train_data={synthetic_dir / 'train_sft_think.jsonl'}",
            "--data.init_args.val_data=null",
            "--data.init_args.loader.batch_size=2",
        ]
    elif "Synthetic" in spec["data"]["class_path"]:
        args += [
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.train_size=4",
            "--data.init_args.val_size=2",
            "--data.init_args.image_size=56",
            "--data.init_args.loader.batch_size=2",
        ]
    if is_sft:
        if spec["model"]["init_args"].get("export_dir"):
            args.append(f"--model.init_args.export_dir={tmp_path / 'export'}")
        return args
    # the HF engine keeps this test fast; the vLLM engine runs a recipe in tests/e2e/test_vllm_fit.py
    args += [
        '--model.init_args.engine={"class_path": "rollout.hf.HFEngine"}',
        "--model.init_args.rollout.group_size=2",
        "--model.init_args.rollout.max_new_tokens=4",
        "--trainer.val_check_interval=null",
        "--trainer.limit_val_batches=0",
    ]
    if spec["model"]["init_args"].get("rollout_stages"):
        args.append("--model.init_args.rollout_stages=[{steps: 1, max_new_tokens: 4, group_size: 2}]")
    if (spec["model"]["init_args"].get("rollout") or {}).get("dynamic_sampling"):
        # a random-init model scores 0 everywhere: no group would be kept and no step taken (dynamic sampling
        # itself is tested in tests/e2e/test_grpo_cli.py)
        args.append("--model.init_args.rollout.dynamic_sampling=false")
    return args


def test_there_are_recipes():
    names = {p.stem for p in RECIPES}
    assert {"visionary_r1", "grpo_baseline", "sft_baseline", "vision_r1_cold_start", "vision_r1_ptst"} <= names


def with_probe_reward(config: Path) -> list[str]:
    """A GRPO recipe's rewards plus ``TextChecksumReward`` at weight 1: a random model scores 0 on every real reward,
    so without it no group has an advantage and the step would leave the weights where they were."""
    spec = yaml.safe_load(config.read_text())["model"]["init_args"]
    if "rewards" not in spec:
        return []
    weights = spec.get("reward_weights") or [1.0] * len(spec["rewards"])
    return [
        '--model.init_args.rewards+={"class_path": "tests.probes.TextChecksumReward"}',
        f"--model.init_args.reward_weights={[*weights, 1.0]}",
    ]


def fit_and_measure(args: list[str]):
    """Fit with ``args``; returns the CLI and the share of the decoder's and vision blocks' weights that moved."""
    cli = main(args, run=False)
    cli.model.configure_model()
    before = transformer_weights(cli.model.policy)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, moved_fraction(before, cli.model.policy)


@pytest.mark.slow
@pytest.mark.parametrize("config", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_one_step_on_the_tiny_model(config, tiny_checkpoint, synthetic_dir, tmp_path):
    """Each recipe at its own precision, dtype and learning rate (5e-7 for Visionary-R1): one step moves at least
    half of the trained weights (pure bf16 weights moved 0.9% of them at that lr)."""
    overrides = cpu_overrides(config, tiny_checkpoint, synthetic_dir, tmp_path)
    cli, moved = fit_and_measure(["-c", str(config), *overrides, *with_probe_reward(config)])
    assert cli.trainer.global_step == 1
    assert cli.datamodule.hparams.model_name_or_path == str(tiny_checkpoint)  # linked, not repeated
    spec = yaml.safe_load(config.read_text())
    assert cli.trainer.precision == spec["trainer"].get("precision", "32-true")  # not forced to 32-true
    assert moved >= 0.5, f"{config.stem}: one step moved {moved:.1%} of the decoder and vision weights"


@pytest.mark.slow
def test_pure_bf16_weights_cannot_take_the_visionary_r1_step(tiny_checkpoint, synthetic_dir, tmp_path):
    """The control for the test above: the same step with bf16 weights (``bf16-true``) rounds most updates away."""
    config = CONFIGS / "visionary_r1.yaml"
    overrides = cpu_overrides(config, tiny_checkpoint, synthetic_dir, tmp_path)
    pure_bf16 = ["--trainer.precision=bf16-true", "--model.init_args.policy.dtype=bfloat16"]
    cli, moved = fit_and_measure(["-c", str(config), *overrides, *with_probe_reward(config), *pure_bf16])
    assert cli.trainer.global_step == 1
    assert moved < 0.1, f"pure bf16 moved {moved:.1%}"


def test_lora_switch_composes_with_a_recipe(tiny_checkpoint, synthetic_dir, tmp_path):
    config = CONFIGS / "grpo_baseline.yaml"
    args = [
        "-c",
        str(config),
        "-c",
        str(CONFIGS / "lora.yaml"),
        *cpu_overrides(config, tiny_checkpoint, synthetic_dir, tmp_path),
    ]
    cli = main(args, run=False)
    cli.model.configure_model()
    assert cli.model.policy.peft_config["default"].r == 64
    assert cli.model.reference is None  # LoRA: the reference is the policy with adapters disabled


def test_interpolation_keeps_template_in_step(tiny_checkpoint, synthetic_dir, tmp_path):
    config = CONFIGS / "visionary_r1.yaml"
    overrides = cpu_overrides(config, tiny_checkpoint, synthetic_dir, tmp_path)
    cli = main(["-c", str(config), "--data.init_args.prompts.template=think", *overrides], run=False)
    format_reward = cli.model.rewards.rewards[1]
    assert format_reward.template == "think"
    assert cli.model.rewards.rewards[2].judge is not None


def test_fsdp_strategy_shards_every_decoder_layer_and_vision_block(tiny_checkpoint):
    """configs/strategy/fsdp.yaml parses into our FSDP2 strategy (Lightning's ModelParallelStrategy, every process
    sharding, full checkpoints), and the units it shards are exactly the real model's decoder layers and vision
    blocks (the sharded fit itself runs in tests/e2e/test_fsdp.py)."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import ModelParallelStrategy, Strategy

    from lightning_modules.policy import load_policy
    from lightning_modules.sharding import shard_units

    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    spec = yaml.safe_load((CONFIGS / "strategy" / "fsdp.yaml").read_text())["trainer"]["strategy"]
    strategy = parser.instantiate(parser.parse_object({"strategy": spec})).strategy
    assert isinstance(strategy, ModelParallelStrategy)
    assert strategy._tensor_parallel_size == 1 and not strategy._save_distributed_checkpoint
    model = load_policy(str(tiny_checkpoint), dtype="float32")
    names = sorted(type(m).__name__ for m in shard_units(model))
    config = model.config
    assert names == sorted(
        ["Qwen2_5_VLDecoderLayer"] * config.text_config.num_hidden_layers
        + ["Qwen2_5_VLVisionBlock"] * config.vision_config.depth
    )


def test_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "grpo_baseline.yaml").read_text().replace("micro_batch_size:", "micro_bach_size:"))
    with pytest.raises(SystemExit):
        main(["-c", str(bad)], run=False)


@pytest.mark.parametrize("recipe", sorted(PUBLISHED_DATA), ids=str)
def test_every_gpu_recipe_composes_with_the_cpu_overlay(recipe, tiny_checkpoint, tmp_path):
    """``-c configs/cpu.yaml`` after any GPU recipe: a CPU trainer, and nothing the preflight check refuses (a fit
    with the recipe's own vLLM engine on CPU runs in tests/e2e/test_vllm_fit.py)."""
    from lightning.pytorch.accelerators import CPUAccelerator

    from lightning_modules.preflight import config_problems

    config = CONFIGS / f"{recipe}.yaml"
    cli = main(
        [
            "-c",
            str(config),
            "-c",
            str(CONFIGS / "cpu.yaml"),
            f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
            *PUBLISHED_DATA[recipe],
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
    )
    assert isinstance(cli.trainer.accelerator, CPUAccelerator) and cli.trainer.num_devices == 1
    assert cli.trainer.precision == yaml.safe_load(config.read_text())["trainer"]["precision"]
    assert config_problems("fit", "cpu", cli.datamodule, cli.model.policy_config.attn_implementation) == []


def test_there_is_an_eval_recipe_per_benchmark():
    assert [p.stem for p in EVAL_CONFIGS] == ["mathverse", "mathvision", "mathvista", "mmbench", "mmstar"]


@pytest.mark.parametrize("config", EVAL_CONFIGS, ids=lambda p: p.stem)
def test_eval_recipe_parses_with_its_engine_and_greedy_sampling(config, tiny_checkpoint, tmp_path):
    """As shipped (with the CPU overlay): the benchmark named by the file, vLLM with room for the longest prompt and
    completion, greedy, one engine call per 64 questions, no frozen reference; Vision-R1's preset is one override."""
    from rollout.vllm import VLLMEngine

    args = [
        "-c",
        str(config),
        "-c",
        str(CONFIGS / "cpu.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        f"--model.init_args.policy.model_name_or_path={tiny_checkpoint}",
        f"--data.init_args.source={tmp_path / 'x.tsv'}",
    ]
    cli = main(args, run=False)
    model, data = cli.model, cli.datamodule
    assert data.benchmark == config.stem and data.loader_config.val_batch_size == 64 and data.template == "caption"
    assert not data.prompt_config.skip_long_prompts  # a question is never dropped from the count
    assert isinstance(model.engine, VLLMEngine) and model.eval_config.sampling.temperature == 0.0
    assert model.engine.kwargs["max_model_len"] >= data.max_prompt_length + model.eval_config.max_new_tokens
    assert model.beta0 == 0.0 and cli.trainer.precision == "bf16-true"
    assert cli.trainer.log_dir == str(tmp_path / "logs" / "version_0")  # where results_test.json lands
    preset = main([*args, "--model.init_args.evaluation.sampling={temperature: 0.6, top_p: 0.95}"], run=False)
    assert (preset.model.eval_config.sampling.temperature, preset.model.eval_config.sampling.top_p) == (0.6, 0.95)
