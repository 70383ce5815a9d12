"""A small byte-level BPE vocabulary for the synthetic tasks, so the tiny model's LM head is not 151,936 rows wide.

The random tiny Qwen2.5-VL spends ~95% of a GRPO step in the LM head and its log-softmax over Qwen's vocabulary,
which no synthetic task needs. This vocabulary is learned offline from the text the synthetic tasks produce: both
prompt templates and the plain one, the answer hints, the chat template's fixed text, the caption judge's prompt,
and every task's questions, chain-of-thought targets and answers (``datamodules.synthetic`` and
``datamodules.shortcut``). It keeps Qwen2's pre-tokenizer (digits one by one) and byte-level fallback, so any text
still encodes and decodes exactly, only in more tokens than Qwen's vocabulary would use. Qwen's chat, vision and
tool special tokens follow the learned entries, in Qwen's order, so their ids are ``first_special_id + offset``
as in the real vocabulary (where ``first_special_id`` is 151643).

Training is deterministic: the corpus is built from fixed seeds and the BPE trainer breaks ties by pair order, so
the same package versions always give the same ids (``tests/lightning_modules/test_tiny_model.py`` trains it in
another process and compares). ``BPE_SIZE`` is the trainer's cap: on this corpus it stops at 746 learned entries,
768 rows with the specials.
"""

from __future__ import annotations

from collections.abc import Iterator

from datamodules.shortcut import SPLITS as SHORTCUT_SPLITS
from datamodules.shortcut import make_shortcut_row
from datamodules.synthetic import TASKS, make_row
from rewards.caption import JUDGE_PROMPT, REJECT_MARKER
from rewards.templates import ANSWER_HINTS, TEMPLATES

BPE_SIZE = 2048  # at most this many learned entries (the 256 byte symbols included); the specials come after
ROWS_PER_TASK = 64  # rows drawn per synthetic task and per shortcut split for the corpus
TEMPLATE_TEXT = ("system", "user", "assistant", "You are a helpful assistant.", "Hacking Sample")


def task_corpus() -> Iterator[str]:
    """The text the synthetic tasks put in front of the model or expect from it. Pure (fixed seeds)."""
    yield from TEMPLATE_TEXT
    yield from (template.system_prompt for template in TEMPLATES.values())
    yield from ANSWER_HINTS.values()
    for marker in (REJECT_MARKER, "Hacking Sample"):
        yield JUDGE_PROMPT.format(caption="", problem="", marker=marker)
    rows = [make_row(i, seed=0, image_size=28, tasks=(task,)) for task in TASKS for i in range(ROWS_PER_TASK)]
    for split in SHORTCUT_SPLITS:
        rows += [make_shortcut_row(i, split, image_size=28)[0] for i in range(ROWS_PER_TASK)]
    for row in rows:
        yield TEMPLATES["plain"].question(row.problem, row.problem_type)  # the question as every template asks it
        for template in TEMPLATES:
            yield row.target(template)
        yield f"<answer> {row.answer} </answer>"


def train_task_bpe(pattern: str, vocab_size: int = BPE_SIZE):
    """A ``tokenizers.Tokenizer``: byte-level BPE with Qwen2's pre-tokenizer ``pattern``, learned on the corpus."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(task_corpus(), trainer)
    return backend
