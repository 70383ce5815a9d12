"""An oracle caption judge for the synthetic tasks: answers the question from the caption text alone, by rule.

What it is for: a demo-scale Visionary-R1 run where the caption reward should measure "is the caption informative"
and nothing else. A learned judge (the policy's own engine, the paper's setting, ``PolicyEngineJudge``) also measures
"can the judge read a caption and answer", which at demo scale is mostly noise; this judge is exact on the captions
``datamodules.synthetic`` and ``datamodules.shortcut`` write, and knows nothing else.

What it knows: objects (``a large red circle``, ``2 blue squares``: optional count, optional size word, colour,
shape, plural), bars (``the left bar is taller than the right bar``), digits (``the digit 3 on the left and the digit
5 on the right``) and written words (``the word "cat"``, a quoted word, or a vocabulary word). The vocabulary
(``colors``, ``shapes``, ``words``) is its own, equal by default to the datamodules' (rewards may not import them;
a test keeps the two equal). It answers the question kinds those modules ask: the colour of the shape, of a named
shape or of the largest shape, how many of a shape or of a colour, which bar is taller, the sum of the two digits,
the written word, the colour and shape of the object, which of two named shapes is larger. Option letters are read
from the question's ``Options: A. red B. green ...`` listing, never assumed. A shape the caption does not list is
absent: "how many circles" on a caption listing only squares is 0.

What it rejects (the reply is exactly the marker, Visionary-R1's "Hacking Sample"): a caption that reasons or states
an answer. By rule, a caption holding any of the whole words (case-insensitive) ``so``, ``therefore``, ``thus``,
``hence``, ``because``, ``answer(s)``, ``option(s)``, ``choice(s)``, ``which is``; an ``=`` sign; an arithmetic
``+``, ``*``, ``×`` or ``÷`` between digits; an ``<answer>`` or ``<think>`` tag; or an option letter in brackets
(``(A)``, ``[B]``). An LLM judge reads intent; this one reads words, so "the circle is blue, so is the square" is
rejected here and "3 and 5 make 8" is not.

Where the caption does not hold what the question needs (the shape is not mentioned, two objects could be "the
shape", the text is garbled or about something else), the reply is ``UNKNOWN_REPLY``, an empty ``<answer>`` block:
it scores 0 under every accuracy rule. (The word ``unknown`` would not: under ocr's ANLS it earns 1/7 against
``key`` and 2/7 against ``owl``.)
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from rewards.caption import JUDGE_PROMPT, REJECT_MARKER
from rewards.judges import Judge

UNKNOWN_REPLY = "<answer> </answer>"
_REASONING = re.compile(
    r"(?i:\b(?:so|therefore|thus|hence|because|answers?|options?|choices?|which\s+is)\b|</?(?:answer|think)>)"
    r"|=|\d\s*[+*×÷]\s*\d|[(\[][A-Z][)\]]"
)
_NUMBERS = dict(a=1, an=1, one=1, two=2, three=3, four=4, five=5, six=6, seven=7, eight=8, nine=9, ten=10)
_OTHER = {"left": "right", "right": "left"}
_SIZES = {"large": "large", "big": "large", "small": "small", "tiny": "small"}
_BAR = re.compile(r"\bthe (left|right) bar is (taller|shorter)(?: than the (?:left|right) bar)?", re.I)
_DIGIT = re.compile(r"\bdigit\s+(\d)\b", re.I)
_NAMED_WORD = re.compile(r"\bword\s+[\"“']?([A-Za-z]+)", re.I)
_QUOTED = re.compile(r"[\"“]([^\"“”]+)[\"”]")
_OPTION = re.compile(r"(?:^|\s)([A-Z])\.\s+(.*?)(?=\s+[A-Z]\.\s|\s*$)", re.DOTALL)
_Q_LARGEST = re.compile(r"colou?r is the (?:largest|biggest) (?:shape|object)", re.I)
_Q_BAR = re.compile(r"which bar\b.*?\b(taller|shorter)\b", re.I | re.DOTALL)
_Q_SUM = re.compile(r"\bsum of the (?:two )?digits\b", re.I)
_Q_WORD = re.compile(r"\bwhat word\b", re.I)
_Q_DESCRIBE = re.compile(r"\bname the colou?r and (?:the )?shape\b", re.I)
_Q_LARGER = re.compile(r"\bwhich (?:one |shape |object )?is (?:larger|bigger)\b", re.I)


@dataclass(frozen=True)
class _Object:
    color: str
    shape: str
    count: int | None  # None: a plural without a number ("red circles")
    size: str | None  # "large", "small" or None


@dataclass(frozen=True)
class _Scene:
    objects: list[_Object]
    taller: set[str]  # the side(s) the caption calls taller: one for a consistent caption
    digits: list[int]
    words: set[str]


def _alternation(names: Sequence[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def _template_regex(prompt: str, marker: str) -> re.Pattern[str]:
    """The rendered prompt as a regex: ``{caption}`` and ``{problem}`` named groups, ``{marker}`` the marker."""
    parts, seen = [], set()
    for literal, field, spec, conversion in string.Formatter().parse(prompt):
        parts.append(re.escape(literal))
        if field is None:
            continue
        if spec or conversion or field not in ("caption", "problem", "marker"):
            raise ValueError(f"the judge prompt has a field {{{field}}} the caption reward does not fill")
        if field == "marker":
            parts.append(re.escape(marker))
        else:
            # the caption is the policy's text and may itself hold "Question: ...": it takes all it can (greedy),
            # so the real question is the template's last one; the problem is ours, taken lazily
            group = f"(?P<{field}>.*)" if field == "caption" else f"(?P<{field}>.*?)"
            parts.append(f"(?P={field})" if field in seen else group)
            seen.add(field)
    if seen != {"caption", "problem"}:
        raise ValueError("the judge prompt needs a {caption} and a {problem} field")
    return re.compile("".join(parts), re.DOTALL)


def _options(problem: str) -> dict[str, str]:
    """``"... Options: A. red B. the left bar"`` -> ``{"A": "red", "B": "left bar"}`` (lower case, no article)."""
    listing = re.split(r"\boptions?:", problem, maxsplit=1, flags=re.I)
    if len(listing) < 2:
        return {}
    found = _OPTION.findall(listing[1])
    return {letter: re.sub(r"^(?:the|a|an)\s+", "", text.strip().rstrip(".").lower()) for letter, text in found}


def _letter(options: dict[str, str], value: str | None) -> str | None:
    """The one option letter whose text is ``value``."""
    hits = [letter for letter, text in options.items() if value is not None and text == value]
    return hits[0] if len(hits) == 1 else None


def _one(values: Sequence[str]) -> str | None:
    return values[0] if values and len(set(values)) == 1 else None


class OracleJudge(Judge):
    """A rule-based judge, exact on the synthetic tasks' captions (see the module docstring).

    Args:
        prompt: the caption reward's judge prompt, from which the caption and the question are read back; it must be
            the ``prompt`` of the ``CaptionReward`` this judge serves. A prompt that does not match it raises
            ``ValueError`` naming the prompt's index (a config error; the caption reward counts it as a judge failure).
        marker: the caption reward's rejection marker.
        colors, shapes, words: the vocabulary (defaults: ``datamodules.synthetic``'s COLORS, SHAPES, WORDS).
    """

    def __init__(
        self,
        prompt: str = JUDGE_PROMPT,
        marker: str = REJECT_MARKER,
        colors: Sequence[str] = ("red", "green", "blue", "yellow"),
        shapes: Sequence[str] = ("circle", "square", "triangle"),
        words: Sequence[str] = ("cat", "sun", "box", "map", "pen", "cup", "key", "owl", "jam", "fig", "hat", "bus"),
    ) -> None:
        self.prompt, self.marker = prompt, marker
        self.colors, self.shapes, self.words = tuple(colors), tuple(shapes), tuple(words)
        self._template = _template_regex(prompt, marker)
        color, shape = _alternation(self.colors), _alternation(self.shapes)
        count, size = r"\d{1,6}|" + _alternation(_NUMBERS), _alternation(_SIZES)  # 6 digits: int() stays cheap
        self._object = re.compile(
            rf"\b(?:(?P<count>{count})\s+)?(?:(?P<size>{size})\s+)?(?P<color>{color})\s+(?P<shape>{shape})(?P<s>s)?\b",
            re.I,
        )
        self._word = re.compile(rf"\b({_alternation(self.words)})\b", re.I)
        self._q_color_of = re.compile(rf"colou?r is the (?P<shape>{shape}|shape|object)\b", re.I)
        self._q_count = re.compile(rf"how many (?:(?P<color>{color})\s+)?(?P<shape>{shape}|shape|object)s\b", re.I)

    def generate(self, prompts: Sequence[str]) -> list[str | None]:
        replies: list[str | None] = []
        for i, prompt in enumerate(prompts):
            found = self._template.fullmatch(prompt)
            if found is None:
                hint = "give the judge the caption reward's prompt and marker"
                raise ValueError(f"OracleJudge: prompt {i} does not match the judge's prompt template; {hint}")
            replies.append(self.judge(found["caption"], found["problem"]))
        return replies

    def judge(self, caption: str, problem: str) -> str:
        """The reply for one caption and question: the marker, ``<answer> X </answer>`` or ``UNKNOWN_REPLY``."""
        if _REASONING.search(caption):
            return self.marker
        answer = self._answer(self._parse(caption), problem)
        return UNKNOWN_REPLY if answer is None else f"<answer> {answer} </answer>"

    def _parse(self, caption: str) -> _Scene:
        objects = []
        for m in self._object.finditer(caption):
            word = (m["count"] or "").lower()
            count = int(word) if word.isdigit() else _NUMBERS.get(word, None if m["s"] else 1)
            size = _SIZES.get((m["size"] or "").lower())
            objects.append(_Object(m["color"].lower(), m["shape"].lower(), count, size))
        bars = [(side.lower(), rel.lower()) for side, rel in _BAR.findall(caption)]
        taller = {side if rel == "taller" else _OTHER[side] for side, rel in bars}
        digits = [int(d) for d in _DIGIT.findall(caption)]
        words = _NAMED_WORD.findall(caption) or _QUOTED.findall(caption) or self._word.findall(caption)
        return _Scene(objects, taller, digits, {w.strip() for w in words})

    def _answer(self, scene: _Scene, problem: str) -> str | None:
        options, objects = _options(problem), scene.objects
        if _Q_LARGEST.search(problem):
            large = [o for o in objects if o.size == "large"] or (objects if len(objects) == 1 else [])
            return _letter(options, _one([o.color for o in large]))
        if found := self._q_color_of.search(problem):
            shape = found["shape"].lower()
            anyone = shape in ("shape", "object")
            named = [o for o in objects if o.shape == shape or (anyone and len(objects) == 1)]
            return _letter(options, _one([o.color for o in named]))
        if found := self._q_count.search(problem):
            color = found["color"] and found["color"].lower()
            return self._count(objects, color, found["shape"].lower())
        if found := _Q_BAR.search(problem):
            side = next(iter(scene.taller)) if len(scene.taller) == 1 else None
            if side and found[1].lower() == "shorter":
                side = _OTHER[side]
            return _letter(options, side and f"{side} bar")
        if _Q_SUM.search(problem):
            return str(sum(scene.digits)) if len(scene.digits) == 2 else None
        if _Q_WORD.search(problem):
            return next(iter(scene.words)) if len(scene.words) == 1 else None
        if _Q_DESCRIBE.search(problem):
            return f"{objects[0].color} {objects[0].shape}" if len(objects) == 1 and objects[0].count == 1 else None
        if _Q_LARGER.search(problem):
            return self._larger(objects, options)
        return None

    @staticmethod
    def _count(objects: list[_Object], color: str | None, shape: str) -> str | None:
        """How many objects of ``color`` (any when None) and ``shape`` ("shape"/"object": any); None when the caption
        lists no objects or a plural without a number."""
        picked = [o for o in objects if color in (None, o.color) and shape in (o.shape, "shape", "object")]
        if not objects or any(o.count is None for o in picked):
            return None
        return str(sum(o.count for o in picked if o.count is not None))

    @staticmethod
    def _larger(objects: list[_Object], options: dict[str, str]) -> str | None:
        """The letter of the larger of two options naming shapes, each shape one object with a size word."""
        sizes = {}
        for letter, text in options.items():
            named = [o for o in objects if o.shape == text]
            if len(named) != 1 or named[0].count != 1 or named[0].size is None:
                return None
            sizes[letter] = named[0].size
        large = [letter for letter, size in sizes.items() if size == "large"]
        return large[0] if len(sizes) == 2 and len(large) == 1 else None
