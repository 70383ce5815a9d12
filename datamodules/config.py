"""The argument groups of the data modules, one documented dataclass each.

``VQADataModule(..., prompts=PromptConfig, loader=LoaderConfig)`` and ``SFTDataModule(..., examples=SFTExampleConfig,
loader=SFTLoaderConfig)``; in YAML ``data.init_args.prompts.template``, ``data.init_args.prompts.max_pixels``,
``data.init_args.loader.batch_size``, ``data.init_args.examples.max_length``. What names the data (files, folders, the
checkpoint whose tokenizer renders it) stays a top-level argument of each module. jsonargparse reads each class's
``Args:`` section for ``--data.help``. Each dataclass checks its own values when it is built (``__post_init__``), so
a typo stops the run before a model loads. They are frozen: a module's defaults are shared instances.

``PromptConfig`` is also what ``VQADataset`` takes, so the arguments of how a row becomes a prompt are written once;
``SFTExampleConfig`` likewise for ``ShareGPTDataset``.

Checkpoints hold the groups as plain dicts (``plain_hparams``: they load with ``torch.load(weights_only=True)``), and
a module rebuilds them with ``from_plain``, as the training modules do theirs (``lightning_modules.config``, which
this layer cannot import).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Any, Literal, TypeVar

from rewards.problem_types import canonical_problem_type
from rewards.templates import get_template

# Qwen2.5-VL's processor's image bounds (4 to 16,384 image tokens of 28 x 28 pixels): the RL data's defaults.
MIN_PIXELS, MAX_PIXELS = 3136, 12845056

# Our field -> the column names tried in order when ``columns`` does not name one.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("image", "images"),
    "problem": ("problem", "question", "query", "prompt"),  # prompt: a conversation (Visionary-R1's README)
    "solution": ("solution", "answer"),
    "problem_type": ("problem_type",),
    "id": ("id",),
}

IMAGE_RESIZES = ("llamafactory", "qwen")


def _check_bounds(min_pixels: int | None, max_pixels: int | None) -> None:
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")


def _check_at_least(minimum: int, **values: int | None) -> None:
    """Each named value (None allowed: unset) is an int of at least ``minimum``."""
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or value < minimum):
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class PromptConfig:
    """How a row of RL data becomes a prompt: the columns read, the output template asked for, the image bounds and
    which rows are left out. ``VQADataModule`` and ``VQADataset`` take it.

    Args:
        template: the output format the prompt's system turn asks for (``rewards.templates``): ``caption``
            (Visionary-R1: caption, reasoning, answer), ``think`` (R1, Vision-R1: reasoning, answer) or ``plain`` (a
            bare answer). The rewards that check a format must name the same one
            (``${data.init_args.prompts.template}`` in YAML).
        columns: our field -> the dataset's column, for columns under other names (fields: image, problem, solution,
            problem_type, id); a field not named here takes the first of its usual names the data has (image or
            images; problem, question, query or prompt; solution or answer; problem_type; id).
        default_problem_type: the problem type of every row of data without a problem type column (numerical,
            multiple_choice, math, ocr or free_form; e.g. ``math`` for geometry3k). It picks the answer hint and how
            the accuracy reward compares answers.
        image_root: the folder relative image paths are resolved against (default: the data file's folder).
        min_pixels: the smallest image area in pixels (default: 3,136, Qwen2.5-VL's processor's). Images are resized
            here by Qwen's rule: sides multiples of the image token's side (28 pixels, 32 for Qwen3-VL), area within
            ``[min_pixels, max_pixels]``, aspect kept. None (``SyntheticVQADataModule``'s default): ``image_size``²
            there, so the images are read at the size they were drawn; 3,136 elsewhere.
        max_pixels: the largest image area in pixels (default: 12,845,056, Qwen2.5-VL's processor's); an image takes
            at most ``max_pixels / 28²`` tokens (``/ 32²`` for Qwen3-VL). None: as for ``min_pixels`` (12,845,056
            outside ``SyntheticVQADataModule``).
        max_prompt_length: the most tokens a prompt may take, its images' tokens included. A longer prompt is never
            cut (that would split an image's tokens from its pixels): see ``skip_long_prompts``.
        skip_long_prompts: skip prompts over ``max_prompt_length`` and count them (``prompt_too_long``, logged per
            epoch); false: stop with an error naming the row.
        skip_bad_rows: leave out the rows the scan at setup finds bad (``datamodules.scan``), and skip rows found
            unreadable when read, counting both, instead of stopping with an error naming the row.
        answer_hints: append the problem type's answer form to the question (e.g. "Answer with a number.";
            ``rewards.templates.ANSWER_HINTS``), so the expected answer is unambiguous.
    """

    template: str = "caption"
    columns: dict[str, str] | None = None
    default_problem_type: str | None = None
    image_root: str | None = None
    min_pixels: int | None = MIN_PIXELS
    max_pixels: int | None = MAX_PIXELS
    max_prompt_length: int = 1024
    skip_long_prompts: bool = True
    skip_bad_rows: bool = False
    answer_hints: bool = True

    def __post_init__(self) -> None:
        try:
            get_template(self.template)
        except ValueError as e:
            raise ValueError(f"template: {e}") from None
        unknown = sorted(set(self.columns or {}) - set(DEFAULT_COLUMNS))
        if unknown:
            raise ValueError(f"columns: unknown field(s) {unknown}; known: {sorted(DEFAULT_COLUMNS)}")
        if self.default_problem_type is not None:
            try:
                canonical_problem_type(self.default_problem_type)
            except ValueError as e:
                raise ValueError(f"default_problem_type: {e}") from None
        _check_bounds(self.min_pixels, self.max_pixels)
        _check_at_least(1, max_prompt_length=self.max_prompt_length)

    def with_image_bounds(self, min_pixels: int, max_pixels: int) -> PromptConfig:
        """These settings with an unset (None) image bound set to the value given here."""
        return replace(
            self,
            min_pixels=min_pixels if self.min_pixels is None else self.min_pixels,
            max_pixels=max_pixels if self.max_pixels is None else self.max_pixels,
        )


@dataclass(frozen=True)
class LoaderConfig:
    """How the RL rows are batched (``VQADataModule``).

    Args:
        batch_size: prompts per training step per device (each gets G completions in the rollout).
        val_batch_size: prompts per batch in validation, test and predict (default: ``batch_size``); a larger batch
            keeps a rollout engine busier.
        num_workers: DataLoader worker processes that read and resize the images (0: the training process itself).
        shuffle: draw the training rows in a new order each epoch (from ``seed``); false: in the data's order. A run
            resumed from a checkpoint continues at the next batch either way.
        seed: the training rows' order (epoch e's order is drawn from ``seed + e``).
        limit_val: read only the first N rows of each validation set (None: all of them).
    """

    batch_size: int = 8
    val_batch_size: int | None = None
    num_workers: int = 0
    shuffle: bool = True
    seed: int = 0
    limit_val: int | None = None

    def __post_init__(self) -> None:
        _check_at_least(1, batch_size=self.batch_size, val_batch_size=self.val_batch_size, limit_val=self.limit_val)
        _check_at_least(0, num_workers=self.num_workers)


@dataclass(frozen=True)
class SFTExampleConfig:
    """How a ShareGPT conversation becomes a tokenised SFT example: image size, length limit, which rows are left
    out, and two departures from LLaMA-Factory (off by default). ``SFTDataModule`` and ``ShareGPTDataset`` take it.

    Args:
        min_pixels: LLaMA-Factory's ``image_min_pixels`` (its default, 32 x 32, which Vision-R1's cold start leaves):
            a smaller image is scaled up to it, then the processor's own rule (the checkpoint's bounds) rounds each
            side to the nearest multiple of 28. With ``image_resize: qwen``: the lower bound of Qwen's rule.
        max_pixels: LLaMA-Factory's ``image_max_pixels`` (its default, 768 x 768): a larger image is scaled down to
            it, then rounded as above, so an image can take a few more than ``max_pixels / 784`` tokens (1280x720 at
            589824: 777). With ``image_resize: qwen``: the upper bound of Qwen's rule, never exceeded.
        image_resize: ``llamafactory`` (default) as above. ``qwen``, a departure from LLaMA-Factory: Qwen's resize
            rule within ``[min_pixels, max_pixels]`` applied here, as the RL data does; the area never exceeds
            ``max_pixels`` (sides rounded down when the nearest multiple of 28 would go over), so large images take
            fewer tokens than under LLaMA-Factory (1280x720 at 589824: 720, not 777).
        image_root: the folder relative image paths are resolved against (default: the data file's folder, or
            ``dataset_dir`` for named datasets, LLaMA-Factory's ``media_dir`` default).
        max_length: the most tokens an example may take, images included. A longer one is never cut (that could
            split an image's tokens from its pixels, or drop the answer): see ``skip_long``.
        skip_long: skip examples over ``max_length`` and count them (``too_long``); false: stop with an error naming
            the row. (LLaMA-Factory cuts them to ``cutoff_len``.)
        skip_bad_rows: skip and count unreadable rows (missing or corrupt images, turns that do not alternate, and
            unreadable JSON Lines lines) instead of stopping with an error naming the row.
        mask_newline_after_reply: a departure from LLaMA-Factory, off by default: the newline after each reply's
            ``<|im_end|>`` is not a label. LLaMA-Factory's ``qwen2_vl`` template learns it (its reply format is
            ``{content}<|im_end|>\\n``); generation stops at ``<|im_end|>``, so the model never produces it.
    """

    min_pixels: int = 1024
    max_pixels: int = 589824
    image_resize: Literal["llamafactory", "qwen"] = "llamafactory"
    image_root: str | None = None
    max_length: int = 4096
    skip_long: bool = True
    skip_bad_rows: bool = False
    mask_newline_after_reply: bool = False

    def __post_init__(self) -> None:
        if self.image_resize not in IMAGE_RESIZES:
            raise ValueError(f"image_resize must be 'llamafactory' or 'qwen', got {self.image_resize!r}")
        _check_bounds(self.min_pixels, self.max_pixels)
        _check_at_least(1, max_length=self.max_length)


@dataclass(frozen=True)
class SFTLoaderConfig:
    """How the SFT examples are batched (``SFTDataModule``). The training examples are shuffled every epoch.

    Args:
        batch_size: examples per micro-batch per device, in training and validation (the trainer's
            ``accumulate_grad_batches`` sets how many make an optimizer step).
        num_workers: DataLoader worker processes that read images and tokenise (0: the training process itself).
        seed: the training examples' order (epoch e's from ``seed + e``), and the rows an entry's ``num_samples``
            draws.
    """

    batch_size: int = 4
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_at_least(1, batch_size=self.batch_size)
        _check_at_least(0, num_workers=self.num_workers)


def plain(value: Any) -> Any:
    """``value`` with every dataclass inside it (lists included) as a dict."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def plain_hparams(hparams: MutableMapping[str, Any]) -> None:
    """Turn the dataclasses among a module's saved hyperparameters (data and training modules alike) into dicts, in
    place: a module built in Python holds the dataclasses themselves, which a checkpoint could then only load with
    ``torch.load(weights_only=False)``. The CLI hands a module plain values already."""
    for key, value in hparams.items():
        hparams[key] = plain(value)


T = TypeVar("T")


def from_plain(cls: type[T], value: T | dict[str, Any] | None, default: T | None = None) -> T | None:
    """``value`` as a ``cls`` instance: a dict (a group as a checkpoint stores it, see ``plain_hparams``, or as a
    notebook writes it) is rebuilt, its missing fields taken from ``default`` (a module's default instance, as the CLI
    takes them) or else from the class; an unknown field is a ``TypeError``. An instance or None is returned as it is.
    """
    if not isinstance(value, dict):
        return value
    return replace(default, **value) if default is not None else cls(**value)


def grouped_data_arguments(class_path: str, init_args: dict[str, Any]) -> dict[str, Any]:
    """A data section's ``init_args`` as written before the arguments were grouped (flat: ``batch_size``,
    ``template``, ``min_pixels`` ...), with each flat key moved into its group (``loader``, ``prompts``, or for
    ``SFTDataModule`` ``examples``); keys already grouped, and other keys, are left as they are. ``vlrl export`` reads
    a run's saved ``config.yaml`` through it, so runs made before the grouping still export."""
    sft = class_path.rsplit(".", 1)[-1] == "SFTDataModule"
    groups = (
        {"examples": SFTExampleConfig, "loader": SFTLoaderConfig}
        if sft
        else {
            "prompts": PromptConfig,
            "loader": LoaderConfig,
        }
    )
    out = dict(init_args)
    for group, cls in groups.items():
        names = {f.name for f in fields(cls)}
        moved = {key: out.pop(key) for key in list(out) if key in names}
        if moved:
            out[group] = {**moved, **(out.get(group) or {})}
    return out
