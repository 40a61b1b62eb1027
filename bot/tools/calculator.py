"""Arithmetic worked out for the LLM, from the words of a spoken question.

A small local model answers "What is one hundred minus thirty five?" with "Seventy-five"
(bench.spoken_qa). A calculator does not guess: `worked_arithmetic` finds the sums in a
question ("twelve squared", "ten percent of two hundred", "fifteen plus twenty seven") and
states their results, which the LLM is given with the turn (processors/turn_notes.py).
Numbers may be spoken as words; `text2num` turns them into digits first.
"""

from __future__ import annotations

import ast
import math
import operator
import re

from text_to_num import alpha2digit

NUMBER = r"\d+(?:\.\d+)?"
_WORD_OPERATORS = [
    (r"\bmultiplied by\b|\btimes\b|[x×*]", "*"),
    (r"\bdivided by\b|\bover\b|[÷/]", "/"),
    (r"\bplus\b|\+", "+"),
    (r"\bminus\b|\btake away\b|[−-]", "-"),
]
_EXPRESSION = re.compile(rf"{NUMBER}(?:\s*[-+*/]\s*{NUMBER})+")
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(expression: str) -> float | None:
    """+ - * / over numbers, with the usual precedence; None for anything else."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(expression)

    try:
        return value(ast.parse(expression, mode="eval").body)
    except (ValueError, SyntaxError, ZeroDivisionError, RecursionError):
        return None


def _spoken(x: float) -> str:
    if math.isclose(x, round(x), abs_tol=1e-9):
        return str(int(round(x)))
    return f"{x:.4f}".rstrip("0").rstrip(".")


def worked_arithmetic(question: str) -> str:
    """The results of the arithmetic in `question`, one per line ("100 - 35 = 65"), or ""."""
    text = alpha2digit(question.lower(), "en", threshold=0)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000
    results = []
    for pattern, unary in (
        (rf"({NUMBER}) squared", lambda a: (f"{a} squared", float(a) ** 2)),
        (rf"({NUMBER}) cubed", lambda a: (f"{a} cubed", float(a) ** 3)),
        (rf"square root of ({NUMBER})", lambda a: (f"the square root of {a}", math.sqrt(float(a)))),
        (rf"half of ({NUMBER})", lambda a: (f"half of {a}", float(a) / 2)),
    ):
        for match in re.finditer(pattern, text):
            said, x = unary(match.group(1))
            results.append(f"{said} = {_spoken(x)}")
    for match in re.finditer(rf"({NUMBER}) ?(?:percent|%) of ({NUMBER})", text):
        a, b = match.groups()
        results.append(f"{a} percent of {b} = {_spoken(float(a) * float(b) / 100)}")
        text = text.replace(match.group(0), " ")
    for pattern, symbol in _WORD_OPERATORS:
        text = re.sub(rf"(?<=\d)\s*(?:{pattern})\s*(?=\d)", f" {symbol} ", text)
    for match in _EXPRESSION.finditer(text):
        expression = " ".join(match.group(0).split())
        result = _evaluate(expression)
        if result is not None:
            results.append(f"{expression} = {_spoken(result)}")
    return "\n".join(results)
