"""The value of a LaTeX answer, for MathVision's equivalence check (``evaluation.mathvision``): by default as MATH-V's
own code finds it, or, with ``lenient``, as a mathematician would.

MATH-V (``evaluation/utils.py`` ``is_equal``) takes ``eval(str(latex2sympy(text)))``: the text parsed by
``latex2sympy2`` (1.9.1, ANTLR 4.7.2), the parsed expression printed by sympy, and the printed text run by Python's
``eval`` among ``math``'s names. We parse with ``latex2sympy2_extended`` (math-verify's parser, already a dependency:
the two parsers' ANTLR runtimes cannot share one environment) and, by default, bring its reading to upstream's:

- Text with any character outside ASCII has no value: latex2sympy2's lexer rejects every such character (checked
  for each character from U+0080 to U+FFFF, alone and beside a digit). So ``−3`` (U+2212), ``–3`` (U+2013),
  fullwidth ``３`` or ``＋3``, ``3×4``, ``6÷3`` and ``π`` have no value, though latex2sympy2_extended reads some.
- Writing two factors side by side multiplies them. latex2sympy2_extended reads an integer beside a positive
  rational as a mixed number, so ``3\\frac{1}{2}`` is 7/2 there but 3 * 1/2 = 1.5 upstream (and ``2(3)`` is 5 there,
  6 upstream).
- The value is Python arithmetic on sympy's printed expression with only ``math``'s names (``pi``, ``e``,
  ``sqrt``, ``log``, ``factorial`` ...), so what prints as ``E`` (``e``, ``\\exp(1)``), ``oo``, ``I``, ``Abs``
  (``|-5|``) or a free symbol has no value, as upstream's ``eval`` raises ``NameError`` there. Never ``eval``: an
  ``ast`` walk over numbers, ``+ - * / **``, and ``math``'s constants and functions.
- Decimals are exact fractions, as latex2sympy2 reads them: ``1.0`` prints as ``1`` and evaluates to the integer 1
  (this shows in MathVision's tuples, whose elements are compared as printed: ``(1.0,2.0)`` equals ``(1,2)``).
- A text that is one brace group, ``{2}``, is its content (latex2sympy2 reads braces as a group;
  latex2sympy2_extended reads a set).

Still different from upstream (rarer; found by running upstream's ``is_equal`` beside ours): latex2sympy2 reads
``\\exp(1)`` as ``E`` (no value) where we get ``exp(1)``; ``\\{2\\}`` is 2 there and a set here; ``\\ln x`` is
``log(x, E)`` there (no value); upstream's ``eval`` also sees numpy and its own helpers, which sympy never prints.

``lenient=True`` keeps latex2sympy2_extended's reading and sympy's ``evalf``: a mixed number ``3\\frac{1}{2}`` (an
integer written in digits right before ``\\frac``) is 7/2, other factors side by side multiply; U+2212 minus,
``×``, ``÷``, ``π``, ``e`` and ``|x|`` are read; fullwidth characters and dashes still are not. A non-finite value
counts as no value. Each parse and evaluation is limited to a few seconds (in the main thread).
"""

from __future__ import annotations

import ast
import math
import operator
import signal
import threading
from contextlib import contextmanager
from typing import Any

PARSE_TIMEOUT_S = 3
MAX_INTEGER_EXPONENT = 10_000  # an integer power beyond this is refused (upstream would compute it, or hang)
MAX_COUNTING_ARGUMENT = 100_000  # factorial / comb / perm of more is refused (it cannot be interrupted)

_MATH_NAMES = {name: getattr(math, name) for name in dir(math) if not name.startswith("_")}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COUNTING = (math.factorial, math.comb, math.perm)


@contextmanager
def _time_limit(seconds: int):
    """Raise TimeoutError after ``seconds`` (SIGALRM: main thread only; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"LaTeX evaluation took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _converter(mixed_numbers: bool) -> Any:
    """latex2sympy2_extended's converter with side-by-side factors multiplied; with ``mixed_numbers``, digits right
    before ``\\frac`` make a mixed number. (The library's ``interpret_as_mixed_fractions`` switch is not consulted
    by its code, 1.11.0, so the rule is replaced here, where it sits: ``convert_postfix_list``.)"""
    import sympy
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    class Converter(_Latex2Sympy):
        def __init__(self):
            super().__init__()
            self.converted: dict[int, tuple[Any, Any]] = {}  # id(node) -> (node, value): each node converted once

        def convert_postfix(self, postfix):
            if id(postfix) not in self.converted:
                self.converted[id(postfix)] = (postfix, super().convert_postfix(postfix))
            return self.converted[id(postfix)][1]

        def convert_postfix_list(self, arr, i=0):
            left = self.convert_postfix(arr[i])
            if i == len(arr) - 1 or not getattr(left, "is_Integer", False):
                return super().convert_postfix_list(arr, i)  # the library's only mixed-number case is an integer
            right = self.convert_postfix_list(arr, i + 1)
            if getattr(right, "is_Matrix", False):
                return self.mat_mul_flat(left, right)
            mixed = arr[i].getText().isdigit() and arr[i + 1].getText().startswith(("\\frac", "\\dfrac", "\\tfrac"))
            if mixed_numbers and mixed and getattr(right, "is_Rational", False) and right > 0:
                return sympy.Rational(left * right.q + right.p, right.q)
            return self.mul_flat(left, right)

    return Converter()


def parse(latex: str, mixed_numbers: bool) -> Any:
    """latex2sympy2_extended's expression for ``latex`` (its default normalisation), with ``_converter``'s reading
    of side-by-side factors. Raises when the text does not parse."""
    from latex2sympy2_extended.math_normalization import NormalizationConfig, normalize_latex

    return _converter(mixed_numbers).parse(normalize_latex(latex, NormalizationConfig()))


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and abs(exponent) > MAX_INTEGER_EXPONENT and abs(base) > 1:
        raise OverflowError(f"{base} ** {exponent} is too large to compute")
    return base**exponent


def _call(function: Any, args: list[Any]) -> Any:
    if function in _COUNTING and any(isinstance(a, int) and a > MAX_COUNTING_ARGUMENT for a in args):
        raise OverflowError(f"{function.__name__}{tuple(args)} is too large to compute")
    return function(*args)


def python_value(text: str) -> Any:
    """What Python's ``eval`` gives for ``text`` among ``math``'s names, for the arithmetic sympy prints: numbers,
    ``+ - * / **``, signs, ``math``'s constants and calls of its functions. Raises ValueError for anything else (a
    name outside ``math``: ``E``, ``oo``, ``Abs``, ``x``), SyntaxError for text that is not Python, the arithmetic's
    own error (``ZeroDivisionError``), or OverflowError for a power or factorial too large to compute."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.Name) and node.id in _MATH_NAMES:
            return _MATH_NAMES[node.id]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](value(node.operand))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return _power(value(node.left), value(node.right))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            function = value(node.func)
            if callable(function):
                return _call(function, [value(arg) for arg in node.args])
        raise ValueError(f"{text!r}: {ast.dump(node)[:60]} is not arithmetic on math's names")

    return value(ast.parse(text, mode="eval").body)


def _unbraced(text: str) -> str:
    """``{2}`` -> ``2`` (repeatedly) when the whole text is one brace group; otherwise ``text``."""
    while text.startswith("{") and text.endswith("}"):
        depth = 0
        for i, c in enumerate(text):
            depth += {"{": 1, "}": -1}.get(c, 0)
            if depth == 0 and i < len(text) - 1:
                return text  # the first group closes before the end: ``{2}{3}``
        text = text[1:-1]
    return text


def _exact_decimals(expr: Any) -> Any:
    """``expr`` with each decimal (sympy ``Float``) as the fraction it writes: ``0.33`` -> 33/100, ``1.0`` -> 1."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return expr
    return expr.xreplace({f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float) if f.is_finite})


def upstream_value(latex: str) -> Any:
    """The value MATH-V's ``eval(str(latex2sympy(latex)))`` gives (see the module docstring): usually an int or a
    float; raises where upstream's raises (no parse, a name outside ``math``, a character outside ASCII)."""
    if not latex.isascii():
        raise ValueError(f"{latex!r}: latex2sympy2 reads ASCII only")
    with _time_limit(PARSE_TIMEOUT_S):
        return python_value(str(_exact_decimals(parse(_unbraced(latex), mixed_numbers=False))))


def lenient_value(latex: str) -> int | float:
    """The mathematical value of ``latex``: an int for an integer, else a float (sympy's ``evalf``). Raises for text
    that does not parse or has no finite real value (a free variable, an interval)."""
    with _time_limit(PARSE_TIMEOUT_S):
        expr = parse(latex, mixed_numbers=True)
        if getattr(expr, "is_Integer", False):
            return int(expr)
        value = float(expr.evalf())
    if not math.isfinite(value):
        raise ValueError(f"{latex!r} has no finite value")
    return value


def latex_value(latex: str, lenient: bool = False) -> Any:
    """``upstream_value`` by default, ``lenient_value`` with ``lenient``."""
    return lenient_value(latex) if lenient else upstream_value(latex)
