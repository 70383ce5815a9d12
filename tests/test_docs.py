"""The documentation as a user reads it: README.md and every page under docs/.

1. Links. Every relative link (``[text](path)``, ``![alt](path)``) points at a file or folder of the repository, and
   an anchor (``page.md#section``, ``#section``) names a heading of that markdown page by GitHub's rules (lower case,
   punctuation other than ``-`` and ``_`` dropped, spaces to ``-``, ``-1``, ``-2`` ... on repeated headings). Text in
   code is not a link; ``http(s)://`` and ``mailto:`` addresses are not fetched.
2. Commands. Every ``vlrl ...`` line of a fenced code block (after any ``VAR=value`` prefix; ``-m vlrl_cli`` under
   torchrun counts too) and every inline code span that starts with ``vlrl `` is parsed in this process as the
   ``vlrl`` command parses it, and nothing runs: ``fit|validate|test|predict`` through the parser LightningCLI builds
   (``-c`` files read, ``--key=value`` overrides type-checked, unknown keys rejected, no class instantiated), every
   other command through its own parser (``parse_args`` and no further; ``vlrl plan``'s extra arguments as ``vlrl
   fit`` overrides of its ``-c`` files). ``-h`` and ``--help`` pass when they exit 0. A span that only names commands
   (``vlrl fit``, ``vlrl validate|test``: no arguments) is checked to name commands that exist.

Placeholders, the rule the pages follow: a documented command names real config files (each ``-c`` file is read);
values a user fills in are written in capitals (``CKPT``, ``FILE``, ``OUT_DIR``) and parse as the strings they are;
where an option takes a number or a choice, the page gives one. Usage notation is read as: ``...`` (the rest of the
user's arguments) dropped, ``[--option value]`` checked as if given, ``a|b|c`` checked as its first choice.
``SKIPPED`` lists the commands not parsed, each with its reason; the test counts what it checked (``MIN_COMMANDS``,
``MIN_LINKS``) so that it cannot pass on an empty set, and every command ``vlrl -h`` lists is documented.

The parsing is marked ``slow`` (about 25 s on the 2-core CPU, most of it jsonargparse); the links, the count and the
command names are checked in ``make test-fast`` too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MIN_COMMANDS = 70  # command lines parsed (79 when written; bare mentions not counted)
MIN_LINKS = 80  # relative links checked (101 when written)

SKIPPED = {  # command text -> why it is not parsed
    "vlrl <command> -h": "the generic form; each command's -h is the same parser's",
}

FENCE = re.compile(r"^\s*(```|~~~)")
SPAN = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")  # an inline code span, which may wrap across lines
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
STARTS_VLRL = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*vlrl\s")  # ``vlrl ...``, ``VAR=value vlrl ...``
CHOICES = re.compile(r"^[\w.-]+(\|[\w.-]+)+$")


@dataclass(frozen=True)
class Command:
    where: str  # page:line
    text: str  # as written
    argv: tuple[str, ...]  # after ``vlrl``, usage notation read as the module docstring says


def _lines_outside_code(page: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """The page's lines with fenced blocks blanked, and the fenced lines (line number, text)."""
    prose, fenced, inside = [], [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            prose.append("")
        elif inside:
            fenced.append((number, line))
            prose.append("")
        else:
            prose.append(line)
    return prose, fenced


def _usage(tokens: list[str]) -> list[str]:
    """Usage notation read as the docstring says: ``...`` dropped, ``[...]`` unwrapped, ``a|b`` its first choice."""
    out, optional = [], False
    for token in tokens:
        if token == "...":
            continue
        if token.startswith("[-"):
            token, optional = token[1:], True
        if optional and token.endswith("]"):
            token, optional = token[:-1], False
        out.append(token.split("|")[0] if CHOICES.match(token) else token)
    return out


def _vlrl_args(tokens: list[str]) -> list[str] | None:
    """The arguments after ``vlrl`` (or after ``-m vlrl_cli``), or None when the line runs something else."""
    while tokens and ENV.match(tokens[0]):
        tokens = tokens[1:]
    if tokens and tokens[0] == "vlrl":
        return tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "vlrl_cli":
            return tokens[i + 2 :]
    return None


def documented_commands() -> list[Command]:
    found = []
    for page in PAGES:
        name = page.relative_to(ROOT).as_posix()
        prose, fenced = _lines_outside_code(page)
        joined: list[tuple[int, str]] = []  # fenced lines with their ``\`` continuations joined
        for number, line in fenced:
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
            else:
                joined.append((number, line.strip()))
        for number, line in joined:
            args = _vlrl_args(shlex.split(line, comments=True)) if "vlrl" in line else None
            if args is not None:
                found.append(Command(f"{name}:{number}", line, tuple(_usage(args))))
        text = "\n".join(prose)
        for match in SPAN.finditer(text):
            span = " ".join(match.group(1).replace("\\|", "|").split())
            args = _vlrl_args(shlex.split(span)) if STARTS_VLRL.match(span) else None
            if args is not None:
                number = text.count("\n", 0, match.start()) + 1
                found.append(Command(f"{name}:{number}", span, tuple(_usage(args))))
    return found


DOCUMENTED = documented_commands()
TO_PARSE = [c for c in DOCUMENTED if c.text not in SKIPPED and len(c.argv) > 1]
MENTIONS = [c for c in DOCUMENTED if c.text not in SKIPPED and len(c.argv) <= 1]


# --- parsing without running ------------------------------------------------------------------------------------


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser, known: bool) -> None:
        self.parser, self.known = parser, known


def _raise_args(self, args=None, namespace=None):
    raise _Captured(self, known=False)


def _raise_known(self, args=None, namespace=None):
    raise _Captured(self, known=True)


# where a command's main does more than parse before it parses, the function that parses
PARSING_FUNCTION = {"cold-start": "tools.cold_start.pipeline:run_cli"}


def _tool_parser(target: str, argv: list[str]):
    """The parser ``target``'s ``main(argv)`` builds (argparse or jsonargparse), captured at its first parse call:
    nothing after it runs. Returns (parser, whether main parses known arguments only)."""
    from jsonargparse import capture_parser

    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", _raise_args),
        mock.patch.object(argparse.ArgumentParser, "parse_known_args", _raise_known),
    ):
        try:
            return capture_parser(main, argv), False
        except _Captured as captured:
            return captured.parser, captured.known


@contextlib.contextmanager
def _in_root():
    """Relative paths (``-c configs/...``) as typed at the repository root (``contextlib.chdir`` is Python 3.11+)."""
    before = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def lightning_parser():
    """The parser of ``vlrl fit|validate|test|predict``, captured before it parses (no class instantiated)."""
    from jsonargparse import capture_parser

    from tools.lightning_cli import main

    with _in_root():
        return capture_parser(main, ["fit"])


def _parse(parse, argv: list[str]) -> None:
    """Run ``parse(argv)``; a help exit (0) passes, any other exit fails with what the parser said."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            parse(argv)
    except SystemExit as e:
        said = err.getvalue()
        said = said[said.rfind("error:") :] if "error:" in said else said[-2000:]  # the parser's verdict, not its usage
        assert e.code in (0, None), f"exit {e.code}: {said}"


def parse_command(argv: list[str], lightning_parser) -> None:
    from tools.lightning_cli import expand_nested_help
    from vlrl_cli import BENCHMARKS, COMMANDS, LIGHTNING_COMMANDS, bench, entry

    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help"):
        assert entry([command]) == 0
        return
    if command in LIGHTNING_COMMANDS:
        _parse(lightning_parser.parse_args, expand_nested_help(argv))
        return
    assert command in COMMANDS, f"no such command: vlrl {command} (the commands: {[*LIGHTNING_COMMANDS, *COMMANDS]})"
    target = COMMANDS[command][0]
    if command == "bench":
        if not rest or rest[0] in ("-h", "--help"):
            assert bench(rest) == 0
            return
        assert rest[0] in BENCHMARKS, f"no such benchmark: vlrl bench {rest[0]} (the benchmarks: {list(BENCHMARKS)})"
        target, rest = BENCHMARKS[rest[0]][0], rest[1:]
    parser, known = _tool_parser(PARSING_FUNCTION.get(command, target), rest)
    if not known:
        _parse(parser.parse_args, rest)
        return
    known: list = []  # vlrl plan: its own options, then the rest as vlrl fit's overrides of its -c files
    _parse(lambda args: known.extend(parser.parse_known_args(args)), rest)
    namespace, overrides = known
    configs = [a for path in namespace.config for a in ("-c", path)]
    _parse(lightning_parser.parse_args, ["fit", *configs, *overrides])


def test_the_pages_document_commands():
    """Enough commands were found to mean something, and every command ``vlrl -h`` lists is documented."""
    from vlrl_cli import COMMANDS, LIGHTNING_COMMANDS

    assert len(TO_PARSE) >= MIN_COMMANDS, len(TO_PARSE)
    named = {name for c in DOCUMENTED for arg in c.argv[:1] for name in arg.split("|")}
    assert set(LIGHTNING_COMMANDS) | set(COMMANDS) <= named, sorted(set(LIGHTNING_COMMANDS) | set(COMMANDS) - named)
    assert all(any(c.text == text for c in DOCUMENTED) for text in SKIPPED), "a skipped command is no longer documented"


@pytest.mark.parametrize("command", MENTIONS, ids=lambda c: c.where)
def test_each_mentioned_command_exists(command):
    from vlrl_cli import COMMANDS, LIGHTNING_COMMANDS

    for name in command.argv[0].split("|") if command.argv else []:
        assert name in LIGHTNING_COMMANDS or name in COMMANDS or name in ("-h", "--help"), (command.where, name)


@pytest.mark.slow  # ~80 commands at 0.2-1 s each through jsonargparse: about 25 s on the 2-core CPU, imports included
@pytest.mark.parametrize("command", TO_PARSE, ids=lambda c: c.where)
def test_each_documented_command_parses(command, lightning_parser):
    with _in_root():
        try:
            parse_command(list(command.argv), lightning_parser)
        except AssertionError as e:
            raise AssertionError(f"{command.where}: {command.text}\n{e}") from None


# --- links ------------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link markup to its text, code marks and punctuation dropped, spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, counts = set(), {}
    for line in _lines_outside_code(page)[0]:
        if match := HEADING.match(line):
            base = slug(match.group(2))
            repeat = counts.get(base, 0)
            found.add(f"{base}-{repeat}" if repeat else base)
            counts[base] = repeat + 1
    return found


def relative_links() -> list[tuple[str, str, Path]]:
    found = []
    for page in PAGES:
        prose = "\n".join(_lines_outside_code(page)[0])
        prose = SPAN.sub(lambda m: "\n" * m.group(0).count("\n"), prose)  # code is not a link
        for match in LINK.finditer(prose):
            target = match.group(1)
            if re.match(r"^[a-z]+:", target):  # http(s)://, mailto:
                continue
            number = prose.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(ROOT).as_posix()}:{number}", target, page))
    return found


LINKS = relative_links()


def test_enough_links_are_checked():
    assert len(LINKS) >= MIN_LINKS, len(LINKS)


@pytest.mark.parametrize(("where", "target", "page"), LINKS, ids=[f"{w} {t}" for w, t, _ in LINKS])
def test_each_relative_link_resolves(where, target, page):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{where}: {target} is not a file or folder here"
    if anchor:
        assert resolved.suffix == ".md", f"{where}: {target}: an anchor into a file that is not markdown"
        assert anchor in anchors(resolved), f"{where}: {target}: no such heading (have: {sorted(anchors(resolved))})"
