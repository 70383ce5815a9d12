"""The HF engine on an FSDP2-sharded policy over two CPU processes: every forward all-gathers with the other rank,
so ranks with different work (more rows, none at all, images on one rank only) must still run the same forwards.
Greedy results on each rank equal those of the unsharded policy for the same prompts."""

import json

import pytest
from PIL import Image

from tests.distributed import run_on_ranks

pytestmark = pytest.mark.slow

QUESTIONS = ["What is two plus two?", "Name a colour.", "Say hello."]


def _prompt(processor, question: str, image: bool) -> str:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


def _work(processor, rank: int) -> list[tuple[list[str], list[list]]]:
    """Per rank, the ``generate`` calls of the scenario: (1) rank 0 has three text prompts (two engine calls of
    two rows), rank 1 none; (2) rank 0 one prompt with an image, rank 1 one text-only prompt."""
    red = Image.new("RGB", (56, 56), (200, 30, 30))
    if rank == 0:
        return [
            ([_prompt(processor, q, False) for q in QUESTIONS], [[] for _ in QUESTIONS]),
            ([_prompt(processor, "What colour is it?", True)], [[red]]),
        ]
    return [([], []), ([_prompt(processor, QUESTIONS[0], False)], [[]])]


def _generate(engine, calls) -> list[list[str]]:
    from rollout.engine import SamplingConfig

    greedy = SamplingConfig(temperature=0.0, max_new_tokens=6)
    return [engine.generate(prompts, images, 1, greedy).texts for prompts, images in calls]


def _worker(rank: int, checkpoint: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoProcessor

    from lightning_modules.policy import load_policy
    from lightning_modules.sharding import shard_model
    from rollout.hf import HFEngine

    processor = AutoProcessor.from_pretrained(checkpoint)
    policy = shard_model(load_policy(checkpoint, "float32"), init_device_mesh("cpu", (2,)))
    engine = HFEngine(generation_batch_size=2)
    engine.setup(policy, processor)
    assert engine.collective
    texts = _generate(engine, _work(processor, rank))
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(texts, f)


def test_sharded_hf_engine_keeps_ranks_in_step_and_matches_the_unsharded_policy(tiny_checkpoint, tmp_path):
    from transformers import AutoProcessor

    from lightning_modules.policy import load_policy
    from rollout.hf import HFEngine

    run_on_ranks(_worker, str(tiny_checkpoint), str(tmp_path))

    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    engine = HFEngine(generation_batch_size=2)
    engine.setup(load_policy(str(tiny_checkpoint), "float32"), processor)
    assert not engine.collective
    for rank in (0, 1):
        sharded = json.loads((tmp_path / f"rank{rank}.json").read_text())
        calls = _work(processor, rank)
        assert [len(texts) for texts in sharded] == [len(prompts) for prompts, _ in calls]  # fillers dropped
        expected = [_generate(engine, [call])[0] if call[0] else [] for call in calls]
        assert sharded == expected
