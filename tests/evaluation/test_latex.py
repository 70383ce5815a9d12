"""LaTeX values as MATH-V's ``eval(str(latex2sympy(x)))`` finds them (latex2sympy2 1.9.1, values printed there beside
each case) and, with ``lenient``, as worked out by hand."""

import math

import pytest

from evaluation.latex import latex_value, lenient_value, python_value, upstream_value


@pytest.mark.parametrize(
    ("latex", "value"),
    [
        ("3\\frac{1}{2}", 1.5),  # upstream prints 3*1/2
        ("-3\\frac{1}{2}", -1.5),  # -1*3*1/2
        ("3\\dfrac{1}{2}", 1.5),
        ("2(3)", 6),  # 2*3 (latex2sympy2_extended alone: 5)
        ("3\\sqrt{4}", 6.0),  # 3*sqrt(4): math.sqrt gives a float
        ("\\frac{7}{2}", 3.5),
        ("0.33", 0.33),  # 33/100
        ("1.0", 1),  # the integer 1, as latex2sympy2 reads decimals as fractions
        ("{2}", 2),  # a brace group
        ("\\pi", math.pi),
        ("\\tau", math.tau),  # the symbol tau prints as tau, which is math.tau
        ("e^{2}", math.exp(2)),  # exp(2)
        ("3!", 6),  # factorial(3)
        ("\\log_{10}100", 2.0),  # log(100, 10)
        ("10^{-2}", 0.01),
    ],
)
def test_upstream_values(latex, value):
    found = upstream_value(latex)
    assert found == pytest.approx(value) and type(found) is type(value)


@pytest.mark.parametrize(
    "latex",
    [
        "\u22123",  # U+2212 minus: latex2sympy2 parses no character outside ASCII
        "\u20133",  # en dash
        "\uff13",  # fullwidth 3
        "\uff0b3",  # fullwidth plus
        "3\u00d74",  # multiplication sign
        "\u03c0",
        "e",  # prints as E: a NameError for Python's eval among math's names
        "|-5|",  # Abs(-5)
        "\\infty",  # oo
        "x+1",  # a free symbol
        "\\frac{1}{0}",  # zoo here, a ZeroDivisionError upstream
        "\\frac12",  # does not parse
    ],
)
def test_no_upstream_value(latex):
    with pytest.raises(Exception):  # noqa: B017 - upstream's own failures differ in type (NameError, parse errors)
        upstream_value(latex)


def test_lenient_values_are_the_mathematical_ones():
    assert lenient_value("3\\frac{1}{2}") == 3.5  # a mixed number: digits right before \frac
    assert lenient_value("-3\\frac{1}{2}") == -3.5
    assert lenient_value("1\\dfrac{1}{2}") == 1.5
    assert lenient_value("2(3)") == 6  # not a mixed number: a product
    assert lenient_value("(3)\\frac{1}{2}") == 1.5
    assert lenient_value("\\frac{4}{2}\\frac{1}{2}") == 1
    assert lenient_value("\u22123") == -3 and lenient_value("3\u00d74") == 12  # read by latex2sympy2_extended
    assert lenient_value("e") == pytest.approx(math.e) and lenient_value("|-5|") == 5
    assert isinstance(lenient_value("3"), int) and isinstance(lenient_value("1.0"), float)
    for latex in ("\uff13", "\u20133", "\\infty", "x"):  # fullwidth, en dash: no parse; no finite value
        with pytest.raises(Exception):  # noqa: B017
            lenient_value(latex)
    assert latex_value("3\\frac{1}{2}") == 1.5 and latex_value("3\\frac{1}{2}", lenient=True) == 3.5


def test_python_value_computes_arithmetic_and_nothing_else():
    assert python_value("3*1/2") == 1.5 and python_value("-1*3*1/2") == -1.5
    assert python_value("sqrt(3)/2") == pytest.approx(0.866, abs=1e-3) and python_value("2**3") == 8
    assert python_value("log(100, 10)") == 2.0 and python_value("pi") == math.pi
    for text in ("E", "oo", "Abs(-5)", "__import__('os')", "sqrt.__doc__", "[1, 2]", "{2}", "'3'", "f(x=1)"):
        with pytest.raises(ValueError, match="is not arithmetic on math's names"):
            python_value(text)
    with pytest.raises(ZeroDivisionError):
        python_value("1/0")
    with pytest.raises(OverflowError, match="too large"):
        python_value("10**(10**10)")
    with pytest.raises(OverflowError, match="too large"):
        python_value("factorial(10**7)")
    assert python_value("factorial(5)") == 120
