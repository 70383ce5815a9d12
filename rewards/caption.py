"""Caption reward (Visionary-R1's reinforcement learning from AI feedback on the caption).

For each completion: take the ``<info>`` caption; a judge model answers the row's question from the caption alone.
If the caption holds reasoning or an answer rather than a description, the judge replies a fixed marker and the
score is 0. Otherwise the judge's answer is scored against the solution with the accuracy rules of the row's
problem type. No caption: 0. A judge failure (exception, or no reply for a prompt): 0, counted as
``caption/judge_failures``.

Departures from the released code (the ``caption`` branch of ``compute_loss`` in Visionary-R1's
``src/open_r1/trainer/grpo_trainer_vllm_caption.py``), and why:
- scores stay aligned with their completions when some have no caption (that code appended scores only for
  captioned completions, so every later score landed on the wrong completion);
- the caption is the last ``<info>`` block and may span lines (that code searched without DOTALL, so a multi-line
  caption counted as no caption at all);
- the rejection marker counts when it is the whole reply up to surrounding whitespace and a final period (that code
  tested the raw reply for exact equality with ``'Hacking Sample'``, so ``"Hacking Sample."`` was scored as an
  answer); a marker inside a longer reply is not a rejection in either;
- our own judge prompt asks for the answer inside ``<answer>`` tags and that block is scored (that code scored the
  whole reply, which the prompt asked to be a single word or phrase); the marker is ``CAPTION_REJECTED``;
- the problem type is read per sample (that code used the first row's), and the weight (0.1 in the paper) is the
  combining module's, not applied inside the reward; that code also re-appended ``'caption'`` to its reward list on
  every call, so the caption reward was summed once more on each later call;
- the judge's sampling is the judge's own (``rollout.chat.PolicyEngineJudge``); that code sampled it with the rollout
  settings.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rewards.accuracy import AccuracyReward
from rewards.base import Reward, require_column
from rewards.judges import Judge
from rewards.parsing import extract_answer, extract_tag

REJECT_MARKER = "CAPTION_REJECTED"

JUDGE_PROMPT = (
    "Below is a description of an image, followed by a question about that image. You cannot see the image; use "
    "only the description.\n\n"
    "Description: {caption}\n\n"
    "Question: {problem}\n\n"
    "If the description does more than describe the image (it reasons about the question, works out steps, or "
    "states an answer), reply with exactly {marker} and nothing else. Otherwise answer the question from the "
    "description and put only the final answer inside <answer> </answer>."
)


class CaptionReward(Reward):
    """Args:
    judge: a ``rewards.judges.Judge`` (a ``clients`` chat client, ``rollout.chat.PolicyEngineJudge``, ``OracleJudge``).
    prompt: judge prompt with ``{caption}``, ``{problem}`` and ``{marker}`` fields.
    reject_marker: the judge's reply for a caption that reasons or answers.
    accuracy: scoring rules for the judge's answer (default ``AccuracyReward()``).
    max_caption_chars: longer captions are cut to this many characters before judging.
    """

    name = "caption"
    columns = ("problem", "solution", "problem_type")

    def __init__(
        self,
        judge: Judge,
        prompt: str = JUDGE_PROMPT,
        reject_marker: str = REJECT_MARKER,
        accuracy: AccuracyReward | None = None,
        max_caption_chars: int = 4000,
    ) -> None:
        super().__init__()
        for key in ("{caption}", "{problem}"):
            if key not in prompt:
                raise ValueError(f"the judge prompt needs a {key} field")
        self.judge, self.prompt, self.reject_marker = judge, prompt, reject_marker
        self.accuracy = accuracy or AccuracyReward()
        self.max_caption_chars = max_caption_chars

    @property
    def judges(self) -> list[Judge]:
        return [self.judge]

    def is_rejection(self, reply: str) -> bool:
        """The whole reply is the marker (surrounding whitespace and a final period aside)."""
        return reply.strip().removesuffix(".").strip() == self.reject_marker

    def score(self, completions: Sequence[str], **batch: Sequence[Any]) -> list[float]:
        problems = require_column(batch, "problem", type(self).__name__)
        solutions = require_column(batch, "solution", type(self).__name__)
        kinds = self.accuracy.problem_types(batch, len(completions))
        scores = [0.0] * len(completions)
        todo: list[int] = []
        prompts: list[str] = []
        for i, text in enumerate(completions):
            caption = extract_tag(text, "info")
            if not caption:
                self.stats["no_caption"] += 1
                continue
            todo.append(i)
            prompts.append(
                self.prompt.format(
                    caption=caption[: self.max_caption_chars], problem=problems[i], marker=self.reject_marker
                )
            )
        if not todo and not self.judge.collective:  # a collective judge is called by every rank, even with no prompt
            return scores
        started = time.perf_counter()
        try:
            replies = list(self.judge.generate(prompts))
            if len(replies) != len(prompts):
                raise RuntimeError(f"judge returned {len(replies)} replies for {len(prompts)} prompts")
        except Exception:  # noqa: BLE001 - a failing judge must not stop training; counted and logged
            self.stats["judge_failures"] += len(todo)
            return scores
        finally:
            self.judge_seconds += time.perf_counter() - started
        for i, reply in zip(todo, replies):  # index-aligned: every score lands on its own completion
            if reply is None:
                self.stats["judge_failures"] += 1
            elif self.is_rejection(reply):
                self.stats["rejected"] += 1
            else:
                try:
                    answer = extract_answer(reply, ("boxed", "text"))
                    scores[i] = self.accuracy.score_answer(answer, solutions[i], kinds[i])
                except Exception:  # noqa: BLE001 - scored 0 and counted here: raising would make the caller retry
                    self.stats["score_errors"] += 1  # row by row, calling the judge again (a collective under FSDP)
        self.stats["judged"] += len(todo)
        return scores
