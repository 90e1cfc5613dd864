"""What no GraphQL query may exceed, and the validation that enforces it before anything runs.

A document is refused at validation (a clear error in ``errors``, no resolver called) when it
nests deeper than ``MAX_DEPTH`` (introspection aside: it reads the schema, not the stores), has
more than ``MAX_ALIASES`` aliases or ``MAX_TOKENS`` tokens, or costs more than ``MAX_COST``:
each field selected costs 1, or its ``FIELD_COST`` when it reads a store, counted through
fragments as executed, so a query can make at most a handful of store reads. Arguments are bounded where they are read:
page sizes (``MAX_PAGE``), series ranges (``RANGE_CAP_S``) and the entries a series grouped
by user or tag may scan (``MAX_SCAN``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.extensions.query_depth_limiter import IgnoreContext

MAX_DEPTH = 6
MAX_ALIASES = 10
MAX_TOKENS = 2000
MAX_COST = 600
# what a field costs beyond 1: a series, a page of the request log or a ranking reads rollups or
# entries (at most five per query); a listing of budgets, incidents, tenants or keys reads rows
FIELD_COST: Mapping[str, int] = MappingProxyType(
    {"series": 100, "requests": 100, "topSpenders": 100}
    | dict.fromkeys(("budgets", "anomalies", "tenants", "keys", "tenant"), 10)
)
MAX_PAGE = 200  # requests(first:)
MAX_TOP = 1000  # topSpenders(n:)
MAX_POINTS = 10_000  # points a series may return
MAX_GROUPS = 5_000  # distinct groups a scanned series (user, tag) may hold
MAX_SCAN = 200_000  # entries a series grouped by user or tag may read
SCAN_PAGE = 500  # entries per page of that scan
DAY_S = 86_400
# the longest range each bucket may cover; "scan": a series grouped by user or metadata tag,
# which reads the request log rather than the rollups
RANGE_CAP_S: Mapping[str, int] = MappingProxyType(
    {
        "hour": 31 * DAY_S,
        "day": 732 * DAY_S,
        "month": 20 * 366 * DAY_S,
        "all": 20 * 366 * DAY_S,
        "scan": 31 * DAY_S,
    }
)


def _introspection(context: IgnoreContext) -> bool:
    """Introspection reads the schema only; its own nesting (``ofType``) is not counted."""
    return context.field_name.startswith("__")


def _walk(
    selections: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    seen: frozenset[str],
    depth: int = 1,
) -> Iterable[tuple[FieldNode, int]]:
    """Every field under ``selections`` with its depth (1: a root field), fragments expanded
    (a cycle is expanded once: the standard rules refuse it anyway)."""
    for node in selections.selections if selections else ():
        if isinstance(node, FieldNode):
            yield node, depth
            yield from _walk(node.selection_set, fragments, seen, depth + 1)
        elif isinstance(node, InlineFragmentNode):
            yield from _walk(node.selection_set, fragments, seen, depth)
        elif isinstance(node, FragmentSpreadNode):
            name = node.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:
                yield from _walk(fragment.selection_set, fragments, seen | {name}, depth)


def query_cost(document_definitions: Iterable[Any]) -> int:
    """The cost of a document's operations (see the module's docstring): a root field by its
    ``FIELD_COST``, any other field 1. Counting stops once over the limit, so a fragment
    bomb is cut short."""
    definitions = list(document_definitions)
    fragments = {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}
    total = 0
    for op in definitions:
        if not isinstance(op, OperationDefinitionNode):
            continue
        for field, depth in _walk(op.selection_set, fragments, frozenset()):
            total += FIELD_COST.get(field.name.value, 1) if depth == 1 else 1
            if total > MAX_COST:
                return total
    return total


class CostLimit(ValidationRule):
    """Refuse a document whose cost is over ``MAX_COST``."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        cost = query_cost(context.document.definitions)
        if cost > MAX_COST:
            context.report_error(
                GraphQLError(
                    f"This query costs more than {MAX_COST} (a field 1, a listing 10, a series, "
                    "request page or ranking 100); split it into smaller queries."
                )
            )


def extensions() -> list[type[SchemaExtension] | Callable[[], SchemaExtension]]:
    """The limit extensions, as factories: strawberry makes new ones for each operation (an
    extension holds the operation's state)."""
    return [
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        partial(QueryDepthLimiter, max_depth=MAX_DEPTH, should_ignore=_introspection),
        partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
        partial(AddValidationRules, [CostLimit]),
    ]
