import pytest

from agent.errors import ExpressionError
from agent.kernels.expr import compile_expression

NAMES = {"BM", "BK", "UNROLL", "ORDER", "M"}


@pytest.mark.parametrize("text, values, expected", [
    ("BK % UNROLL == 0", {"BK": 64, "UNROLL": 4}, True),
    ("BK % UNROLL == 0", {"BK": 64, "UNROLL": 3}, False),
    ("BM <= M", {"BM": 64, "M": 32}, False),
    ("ORDER == 'ikj' or UNROLL == 1", {"ORDER": "ijk", "UNROLL": 1}, True),
    ("ORDER != 'ijk' and not UNROLL > 2", {"ORDER": "ikj", "UNROLL": 4}, False),
    ("16 <= BM * UNROLL < 512", {"BM": 64, "UNROLL": 2}, True),
    ("BM // 2 - 1 if UNROLL > 1 else -BM", {"BM": 64, "UNROLL": 1}, -64),
    ("BK / 4", {"BK": 10}, 2.5),
])
def test_evaluates_arithmetic_comparison_and_logic(text, values, expected):
    assert compile_expression(text, NAMES).evaluate(values) == expected


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch /tmp/pwned')",
    "BM.__class__",
    "BM[0]",
    "BM ** 999999",
    "lambda: 1",
    "[BM for BM in range(10)]",
    "open('/etc/passwd')",
    "BM if BM else print(1)",
    "(BM := 3)",
    "b'bytes' == BM",
])
def test_rejects_anything_but_names_numbers_and_operators(text):
    with pytest.raises(ExpressionError):
        compile_expression(text, NAMES)


def test_unknown_names_are_named_in_the_error():
    with pytest.raises(ExpressionError, match="unknown name.*NOPE"):
        compile_expression("BM > NOPE", NAMES)


def test_syntax_error_is_reported_as_expression_error():
    with pytest.raises(ExpressionError, match="syntax error"):
        compile_expression("BM >", NAMES)


def test_division_by_zero_is_an_expression_error_not_a_crash():
    with pytest.raises(ExpressionError, match="division by zero"):
        compile_expression("BK % UNROLL", NAMES).evaluate({"BK": 4, "UNROLL": 0})
