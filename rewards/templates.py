"""The output templates, in one place: what the model is asked to write and what the rewards check.

- ``caption``: ``<info>..</info> <think>..</think> <answer>..</answer>``, caption -> reason -> answer (Visionary-R1):
  an image description, the reasoning, the final answer.
- ``think``: ``<think>..</think> <answer>..</answer>``, R1 style (Vision-R1, the vanilla GRPO baseline).
- ``plain``: a bare answer, a single word or phrase, no tags (SFT baseline, benchmark-style prompting).

The prompts (``datamodules.prompts``), the format check (``rewards.parsing.parse_template``, ``FormatReward``,
``HardFormatResultReward``), the cold-start targets (``datamodules.synthetic``) and the evaluation records (where to
read the answer) all read this registry, so a template cannot mean one thing to the prompt and another to a reward.

Departure from the papers: the system prompts are our wording. Visionary-R1 and Vision-R1 describe the formats but the
caption instruction here ("so that someone who cannot see the image could answer from your description alone") is
ours, written to ask for the caption the caption reward then tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Appended to the question, by problem type, so the expected answer form is unambiguous (every template alike).
ANSWER_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "numerical": "Answer with a number.",
        "multiple_choice": "Answer with the option's letter.",
        "math": "Answer with a number or a simplified expression.",
        "ocr": "Answer with the text exactly as written.",
        "free_form": "Answer briefly.",
    }
)


@dataclass(frozen=True)
class Template:
    """One output template.

    name: the key users write (``data.init_args.prompts.template``, ``FormatReward(template=...)``).
    blocks: the tags of the completion, in order (``()`` for a bare answer).
    system_prompt: the system instruction that asks for that format.
    answer_hints: problem type -> the sentence appended to the question (``question``).
    """

    name: str
    blocks: tuple[str, ...]
    system_prompt: str
    answer_hints: Mapping[str, str] = field(default_factory=lambda: ANSWER_HINTS, hash=False, repr=False)

    @property
    def answer_in_block(self) -> bool:
        """True when the answer sits in an ``<answer>`` block; False when the whole reply is the answer."""
        return "answer" in self.blocks

    @property
    def answer_fallbacks(self) -> tuple[str, ...]:
        """Where ``rewards.parsing.extract_answer`` reads this template's answer besides an ``<answer>`` block:
        nowhere for a tagged template, the whole reply (``"text"``) for a bare one."""
        return () if self.answer_in_block else ("text",)

    def question(self, problem: str, problem_type: str | None = None, hints: bool = True) -> str:
        """``problem`` (stripped) followed on a new line by the answer hint of ``problem_type``, when there is one."""
        question = problem.strip()
        if hints and problem_type in self.answer_hints:
            question = f"{question}\n{self.answer_hints[problem_type]}"
        return question

    def render(self, contents: Mapping[str, str]) -> str:
        """A completion in this template from block contents, blocks separated by one space:
        ``render({"think": "t", "answer": "4"})`` -> ``"<think>t</think> <answer>4</answer>"`` for ``think``; the
        bare ``contents["answer"]`` for ``plain``."""
        if not self.blocks:
            return contents["answer"]
        return " ".join(f"<{tag}>{contents[tag]}</{tag}>" for tag in self.blocks)


TEMPLATES: Mapping[str, Template] = MappingProxyType(
    {
        "caption": Template(
            name="caption",
            blocks=("info", "think", "answer"),
            system_prompt=(
                "You are shown an image and a question. First describe the image in detail inside <info> </info>, "
                "covering every object, number, text and relation needed to answer, so that someone who cannot see "
                "the image could answer from your description alone. Then reason step by step inside <think> "
                "</think>. Finally give only the final answer inside <answer> </answer>. Use exactly this format: "
                "<info> ... </info> <think> ... </think> <answer> ... </answer>"
            ),
        ),
        "think": Template(
            name="think",
            blocks=("think", "answer"),
            system_prompt=(
                "You are shown an image and a question. Think the problem through step by step inside <think> "
                "</think>, then give only the final answer inside <answer> </answer>. Use exactly this format: "
                "<think> ... </think> <answer> ... </answer>"
            ),
        ),
        "plain": Template(
            name="plain",
            blocks=(),
            system_prompt="Answer the question about the image with a single word or phrase.",
        ),
    }
)
TAGGED = tuple(name for name, template in TEMPLATES.items() if template.blocks)  # ("caption", "think")


def get_template(name: str) -> Template:
    """The template called ``name``; ValueError naming the known templates otherwise."""
    template = TEMPLATES.get(name) if isinstance(name, str) else None
    if template is None:
        raise ValueError(f"unknown template {name!r}; choose from {sorted(TEMPLATES)}")
    return template


def get_tagged_template(name: str) -> Template:
    """``get_template`` for a template whose format can be checked (it has blocks); ValueError for ``plain``, whose
    bare answer has no format to check, naming the templates that do."""
    template = get_template(name)
    if not template.blocks:
        raise ValueError(
            f"template {name!r} asks for a bare answer with no blocks to check; choose from {list(TAGGED)}"
        )
    return template
