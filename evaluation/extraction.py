"""The text a benchmark scorer reads from a completion: the last ``<answer>...</answer>`` block, else the whole reply.

The official MathVista and MathVerse pipelines first ask a GPT model to extract the answer from the free-form reply,
VLMEvalKit falls back to a GPT option matcher when its rules find no letter, and MathVision cuts the reply with
phrase rules ("the answer is ..."). Our models are trained to put the answer in an ``<answer>`` block, so that block
is the extraction here; a reply without one (an untrained model, or a prompt template without tags) is read whole,
and each benchmark's own rules then apply to it as they would to the extractor's output.
"""

from __future__ import annotations

from rewards.parsing import extract_answer


def answer_text(completion: str) -> str:
    """The content of the last complete ``<answer>`` block (tags in any case), stripped; without one, the whole
    completion, stripped. An empty block gives ``""``, which each benchmark then treats by its own rules."""
    answer = extract_answer(completion, fallbacks=("text",))
    return "" if answer is None else answer
