"""Prompt templates: the system instruction and the chat messages for one RL row.

- ``caption``: caption -> reason -> answer (Visionary-R1): ``<info>`` image description, ``<think>`` reasoning,
  ``<answer>`` final answer. Our own wording of that instruction.
- ``think``: R1 style reasoning then answer (Vision-R1, vanilla GRPO baseline).
- ``plain``: answer with a single word or phrase, no tags (SFT baseline, benchmark-style prompting).
"""

from __future__ import annotations

from typing import Any

SYSTEM_PROMPTS: dict[str, str] = {
    "caption": (
        "You are shown an image and a question. First describe the image in detail inside <info> </info>, "
        "covering every object, number, text and relation needed to answer, so that someone who cannot see the "
        "image could answer from your description alone. Then reason step by step inside <think> </think>. "
        "Finally give only the final answer inside <answer> </answer>. Use exactly this format: "
        "<info> ... </info> <think> ... </think> <answer> ... </answer>"
    ),
    "think": (
        "You are shown an image and a question. Think the problem through step by step inside <think> </think>, "
        "then give only the final answer inside <answer> </answer>. Use exactly this format: "
        "<think> ... </think> <answer> ... </answer>"
    ),
    "plain": "Answer the question about the image with a single word or phrase.",
}

# Appended to the question, by problem type, so the expected answer form is unambiguous.
ANSWER_HINTS: dict[str, str] = {
    "numerical": "Answer with a number.",
    "multiple_choice": "Answer with the option's letter.",
    "math": "Answer with a number or a simplified expression.",
    "ocr": "Answer with the text exactly as written.",
    "free_form": "Answer briefly.",
}


def check_template(template: str) -> str:
    if template not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown prompt template {template!r}; choose from {sorted(SYSTEM_PROMPTS)}")
    return template


def build_messages(
    problem: str, num_images: int, template: str, problem_type: str | None = None, answer_hints: bool = True
) -> list[dict[str, Any]]:
    """Chat messages for one row: system instruction, then the images followed by the question.

    A ``<image>`` placeholder in the question marks where images go (ShareGPT convention); without one the images
    come first, as in Qwen2.5-VL's own examples.
    """
    check_template(template)
    question = problem.strip()
    if answer_hints and problem_type in ANSWER_HINTS:
        question = f"{question}\n{ANSWER_HINTS[problem_type]}"
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
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPTS[template]}]},
        {"role": "user", "content": content},
    ]
