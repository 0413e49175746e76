"""The metric names a PromQL expression reads: its selectors' names, without functions,
aggregations, keywords, label matchers, grouping lists, durations, strings or numbers."""

from __future__ import annotations

import re

#: Keywords and operators spelled as words; never metric names.
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and",
     "or", "unless", "atan2", "inf", "nan", "start", "end"}
)  # fmt: skip

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_TOKEN = re.compile(r"\d[\w.]*|[A-Za-z_:][\w:]*(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (a Grafana ``label_values(selector, label)``
    query reads its selector's)."""
    if (m := _LABEL_VALUES.match(expr)) is not None:
        expr = m.group(1)
    expr = _STRING.sub(" ", expr)
    expr = _VARIABLE.sub(" ", expr)
    expr = _BRACES.sub(" ", expr)
    expr = _RANGE.sub(" ", expr)
    expr = _GROUPING.sub(" ", expr)
    names = set()
    for token in _TOKEN.finditer(expr):
        text = token.group(0)
        if text[0].isdigit() or token.group(1):  # a number, a duration, or a call
            continue
        if text.lower() not in KEYWORDS:
            names.add(text)
    return names


def histogram_base(name: str) -> str | None:
    """``x`` for ``x_bucket``, ``x_sum`` or ``x_count``; else None."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return None
