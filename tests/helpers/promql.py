"""What a PromQL expression names, read from its syntax tree (promql-parser, the Rust parser's binding):
the metrics it selects and, per metric, the labels it matches or groups by.

Grafana's variables (`$__rate_interval`, `$__range`) are replaced by a duration first, as Grafana does
before it sends a query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import promql_parser

GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|range|interval)")


@dataclass
class Names:
    """Metrics an expression selects, and the labels it uses over each group of them."""

    metrics: set[str] = field(default_factory=set)
    uses: list[tuple[frozenset[str], frozenset[str]]] = field(default_factory=list)
    """(labels, the metrics they must be found on): matchers on one selector, `by`/`on` over a subtree."""


def parse(expr: str) -> Any:
    """The syntax tree; ValueError with the parser's message when the expression is not PromQL."""
    return promql_parser.parse(GRAFANA_VARIABLES.sub("5m", expr))


def names(expr: str) -> Names:
    found = Names()
    _walk(parse(expr), found)
    return found


def _walk(node: Any, found: Names) -> set[str]:
    """The metrics selected under `node`, recording the labels used on them."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        found.metrics.add(node.name)
        labels = {m.name for m in node.matchers.matchers if m.name != "__name__"}
        found.uses.append((frozenset(labels), frozenset({node.name})))
        return {node.name}
    selected: set[str] = set()
    for attribute in ("vector_selector", "expr", "lhs", "rhs", "param"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, (int, float, str)):
            selected |= _walk(child, found)
    for argument in getattr(node, "args", None) or []:
        selected |= _walk(argument, found)
    modifier = getattr(node, "modifier", None)
    grouping = getattr(modifier, "labels", None) or getattr(getattr(modifier, "matching", None), "labels", None)
    if grouping and selected:
        found.uses.append((frozenset(grouping), frozenset(selected)))
    return selected
