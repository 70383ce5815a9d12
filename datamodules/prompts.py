"""Prompts: the chat messages for one RL row and the ShareGPT row of one cold-start SFT example.

The templates themselves (``caption``, ``think``, ``plain``: blocks, system prompt, answer hints) live in
``rewards.templates``, which the rewards read too; this module only lays them out as messages.
"""

from __future__ import annotations

from typing import Any

from rewards.templates import get_template


def build_messages(
    problem: str, num_images: int, template: str, problem_type: str | None = None, answer_hints: bool = True
) -> list[dict[str, Any]]:
    """Chat messages for one row: system instruction, then the images followed by the question.

    A ``<image>`` placeholder in the question marks where images go (ShareGPT convention); without one the images
    come first, as in Qwen2.5-VL's own examples.
    """
    spec = get_template(template)
    question = spec.question(problem, problem_type, answer_hints)
    content: list[dict[str, Any]] = []
    if "<image>" in question:
        pieces = question.split("<image>")
        if len(pieces) - 1 != num_images:
            raise ValueError(f"question has {len(pieces) - 1} <image> placeholders for {num_images} images")
        for i, piece in enumerate(pieces):
            if piece.strip():
                content.append({"type": "text", "text": piece.strip()})
            if i < num_images:
                content.append({"type": "image"})
    else:
        content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": question}]
    return [
        {"role": "system", "content": [{"type": "text", "text": spec.system_prompt}]},
        {"role": "user", "content": content},
    ]


def sharegpt_row(
    problem: str, problem_type: str | None, images: list[str], template: str, answer: str
) -> dict[str, Any]:
    """One SFT example in the ShareGPT shape ``datamodules.sft`` reads: the template's system prompt, the question
    as RL prompts it (answer hint included) after one ``<image>`` per image, and ``answer`` as the reply."""
    spec = get_template(template)
    human = "<image>" * len(images) + spec.question(problem, problem_type)
    return {
        "system": spec.system_prompt,
        "images": list(images),
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": answer}],
    }
