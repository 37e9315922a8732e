"""A small, safe expression language for constraints and array shapes.

Expressions are parsed with :mod:`ast` (parsing only, nothing is executed) and then
checked against a whitelist: names, int/float/string/bool literals, ``+ - * // / %``,
unary ``- not``, comparisons (chains included), ``and``/``or`` and ``x if c else y``.
Calls, attributes, subscripts, ``**``, lambdas and everything else are rejected when
the expression is compiled, so a spec file can never run code through it.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from agent.errors import ExpressionError

__all__ = ["Expression", "compile_expression"]

Value = Union[int, float, str, bool]

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_MAX_LENGTH = 500
_NO_BUILTINS: dict[str, Any] = {"__builtins__": {}}


@dataclass(frozen=True)
class Expression:
    """A validated expression; ``evaluate(values)`` computes it over named values."""

    text: str
    names: frozenset[str]
    _tree: ast.expr
    _code: Any = field(default=None, compare=False, repr=False)

    def evaluate(self, values: Mapping[str, Value]) -> Value:
        """Evaluate over ``values``; a missing name or a division by zero raises ExpressionError."""
        if self._code is None:
            return _evaluate(self._tree, values, self.text)
        # The tree passed the whitelist (no calls, attributes or subscripts), so Python may run it:
        # ~50x faster than walking it, which matters when a space of thousands is enumerated.
        try:
            return eval(self._code, _NO_BUILTINS, values)
        except (ZeroDivisionError, TypeError, NameError):
            return _evaluate(self._tree, values, self.text)  # the walker words the error


def compile_expression(text: str, allowed_names: frozenset[str] | set[str]) -> Expression:
    """Parse and validate ``text``; every name must be in ``allowed_names``."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"expression must be a non-empty string, got {text!r}")
    if len(text) > _MAX_LENGTH:
        raise ExpressionError(f"expression longer than {_MAX_LENGTH} characters: {text[:40]!r}...")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error in expression {text!r}: {exc.msg}") from None
    names: set[str] = set()
    _check(tree, text, names)
    unknown = sorted(names - set(allowed_names))
    if unknown:
        raise ExpressionError(
            f"expression {text!r} uses unknown name(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(allowed_names)) or '(none)'}"
        )
    code = compile(ast.Expression(body=tree), "<expression>", "eval")
    return Expression(text=text.strip(), names=frozenset(names), _tree=tree, _code=code)


def _check(node: ast.AST, text: str, names: set[str]) -> None:
    if isinstance(node, ast.Name):
        names.add(node.id)
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (bool, int, float, str)):
            return
        raise ExpressionError(f"expression {text!r}: literal {node.value!r} is not allowed")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, text, names)
        _check(node.right, text, names)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        _check(node.operand, text, names)
        return
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, text, names)
        return
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        _check(node.left, text, names)
        for comparator in node.comparators:
            _check(comparator, text, names)
        return
    if isinstance(node, ast.IfExp):
        for part in (node.test, node.body, node.orelse):
            _check(part, text, names)
        return
    what = type(node.op).__name__ if isinstance(node, (ast.BinOp, ast.UnaryOp)) else type(node).__name__
    raise ExpressionError(
        f"expression {text!r}: {what} is not allowed (only names, numbers, strings, "
        "arithmetic, comparison, and/or/not)"
    )


def _evaluate(node: ast.expr, values: Mapping[str, Value], text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        try:
            return values[node.id]
        except KeyError:
            raise ExpressionError(f"expression {text!r}: no value for {node.id!r}") from None
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, values, text)
        right = _evaluate(node.right, values, text)
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ExpressionError(f"expression {text!r}: division by zero") from None
        except TypeError as exc:
            raise ExpressionError(f"expression {text!r}: {exc}") from None
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values, text)
        if isinstance(node.op, ast.Not):
            return not operand
        try:
            return -operand if isinstance(node.op, ast.USub) else +operand
        except TypeError as exc:
            raise ExpressionError(f"expression {text!r}: {exc}") from None
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = _evaluate(value, values, text)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = _evaluate(value, values, text)
            if result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values, text)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comparator, values, text)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except TypeError as exc:
                raise ExpressionError(f"expression {text!r}: {exc}") from None
            left = right
        return True
    if isinstance(node, ast.IfExp):
        test = _evaluate(node.test, values, text)
        return _evaluate(node.body if test else node.orelse, values, text)
    raise ExpressionError(f"expression {text!r}: cannot evaluate {type(node).__name__}")
