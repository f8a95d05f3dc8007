"""The safe expression evaluator of specs: ``skip_if`` conditions and ``expected_streams`` numbers.

An expression is read with :mod:`ast` and every node is checked against what its kind
allows; evaluation walks the same tree. Nothing is ever handed to ``eval``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Expression", "ExpressionError", "ExpressionKind"]


class ExpressionError(ValueError):
    """An expression cannot be read, uses what is not allowed, or cannot be evaluated."""


_COMPARISONS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}
_NOT_ALLOWED = {
    ast.Call: "a function call",
    ast.Attribute: "an attribute",
    ast.Subscript: "an index",
    ast.Lambda: "a lambda",
    ast.NamedExpr: "an assignment",
    ast.IfExp: "an if-expression",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.JoinedStr: "an f-string",
    ast.Starred: "a starred expression",
    ast.BinOp: "arithmetic",
}
_HINTS = {
    "condition": "use names of variables or upstream processes, constants, comparisons and and/or/not, "
    "e.g. \"dither == 'undithered'\"",
    "number": 'use numbers, names of numeric variables and + - * / //, e.g. "5115 * scale"',
}
ExpressionKind = Literal["condition", "number"]


@dataclass(frozen=True)
class Expression:
    """A restricted Python expression: a ``skip_if`` condition or an arithmetic ``number``.

    Read with :mod:`ast` and walked here; nothing is ever passed to ``eval``.

    :param text: the expression as written.
    :param kind: ``"condition"`` or ``"number"``.
    :param names: the names it reads.
    """

    text: str
    kind: ExpressionKind
    names: frozenset[str]
    tree: ast.expr = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, kind: ExpressionKind) -> Expression:
        """Read an expression and refuse anything but what ``kind`` allows.

        :param text: e.g. ``"level1MakeTempExpCoadd in ('failed', 'terminated')"``.
        :param kind: ``"condition"`` or ``"number"``.
        :raises ExpressionError: naming the part that is not allowed and what to write instead.
        """
        source = text.strip()
        try:
            tree = ast.parse(source, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"cannot read {source!r}: {exc.msg}; {_HINTS[kind]}") from None
        names: set[str] = set()
        _Walker(source, kind, names).check(tree.body)
        return cls(text, kind, frozenset(names), tree.body)

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """Evaluate with the given names; a condition gives a bool.

        :param values: a value for every name in :attr:`names`.
        :raises ExpressionError: for a missing name or values that cannot be compared.
        """
        result = _evaluate(self.tree, values, self.text)
        return bool(result) if self.kind == "condition" else result


class _Walker:
    def __init__(self, source: str, kind: ExpressionKind, names: set[str]) -> None:
        self.source = source
        self.kind = kind
        self.names = names

    def refuse(self, node: ast.AST, what: str) -> ExpressionError:
        segment = ast.get_source_segment(self.source, node) or self.source
        return ExpressionError(f"{what} is not allowed (`{segment}`); {_HINTS[self.kind]}")

    def check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            self.names.add(node.id)
        elif isinstance(node, ast.Constant):
            self.constant(node)
        elif isinstance(node, ast.UnaryOp):
            allowed: tuple[type[ast.unaryop], ...] = (ast.USub, ast.UAdd)
            if self.kind == "condition":
                allowed = (ast.Not, ast.USub)
            if not isinstance(node.op, allowed):
                raise self.refuse(node, "this operator")
            self.check(node.operand)
        elif isinstance(node, ast.BinOp) and self.kind == "number":
            if type(node.op) not in _ARITHMETIC:
                raise self.refuse(node, "this operator")
            self.check(node.left)
            self.check(node.right)
        elif isinstance(node, ast.BoolOp | ast.Compare | ast.Tuple | ast.List) and self.kind == "condition":
            self.condition_part(node)
        else:
            what = _NOT_ALLOWED.get(type(node), "this")
            raise self.refuse(node, what)

    def constant(self, node: ast.Constant) -> None:
        value = node.value
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.refuse(node, "a constant that is not a number")
        elif value is not None and not isinstance(value, str | int | float | bool):
            raise self.refuse(node, "this constant")

    def condition_part(self, node: ast.BoolOp | ast.Compare | ast.Tuple | ast.List) -> None:
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARISONS:
                    raise self.refuse(node, "'is' / 'is not'")
            children: list[ast.expr] = [node.left, *node.comparators]
        elif isinstance(node, ast.BoolOp):
            children = list(node.values)
        else:
            children = list(node.elts)
        for child in children:
            self.check(child)


def _evaluate(node: ast.expr, values: Mapping[str, Any], text: str) -> Any:
    try:
        return _eval_node(node, values)
    except KeyError as exc:
        raise ExpressionError(f"{text!r}: no value for {exc.args[0]!r}") from None
    except (TypeError, ZeroDivisionError) as exc:
        raise ExpressionError(f"{text!r}: {exc}") from None


def _eval_node(node: ast.expr, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        operand = _eval_node(node.operand, values)
        return (
            not operand
            if isinstance(node.op, ast.Not)
            else (-operand if isinstance(node.op, ast.USub) else +operand)
        )
    if isinstance(node, ast.BinOp):
        return _ARITHMETIC[type(node.op)](_eval_node(node.left, values), _eval_node(node.right, values))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval_node(v, values) for v in node.values)
        return any(_eval_node(v, values) for v in node.values)
    if isinstance(node, ast.Compare):
        left = _eval_node(node.left, values)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval_node(right_node, values)
            if not _COMPARISONS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_eval_node(e, values) for e in node.elts)
    raise TypeError(f"cannot evaluate {type(node).__name__}")  # refused by Expression.parse
