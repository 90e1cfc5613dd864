"""What no GraphQL query may exceed, and the validation that enforces it before anything runs.

A document is refused before it runs (a clear error in ``errors``, no resolver called) when it
nests deeper than ``MAX_DEPTH`` (introspection aside: it reads the schema, not the stores), has
more than ``MAX_ALIASES`` aliases or ``MAX_TOKENS`` tokens, or costs more than ``MAX_COST``:
each field selected costs 1, or its ``FIELD_COST`` when it reads a store, counted through
fragments as executed (a fragment spread 1 more), so a query can make at most a handful of
store reads; ``precheck``, which the endpoint runs first, also refuses fragment cycles.
Arguments are bounded where they are read: page sizes (``MAX_PAGE``), series ranges
(``RANGE_CAP_S``) and the entries a series grouped by user or tag may scan (``MAX_SCAN``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)
from strawberry.extensions import (
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
# what a field costs beyond 1: a series, a page of the request log or of guardrail findings, a
# ranking, plan profitability, upsell conversion or a what-if reads rollups or entries (at most
# five per query); a listing of budgets, incidents, tenants or keys, a tenant's cache, credits
# or invoice reads rows
FIELD_COST: Mapping[str, int] = MappingProxyType(
    dict.fromkeys(
        (
            "series",
            "requests",
            "topSpenders",
            "caches",
            "planProfitability",
            "upsell",
            "reprice",
            "guardrailFindings",
        ),
        100,
    )
    | dict.fromkeys(
        ("budgets", "anomalies", "tenants", "keys", "tenant", "cache", "credits", "invoice"), 10
    )
)
MAX_PAGE = 200  # requests(first:), guardrailFindings(first:)
MAX_TOP = 1000  # topSpenders(n:)
# points a series may return (the stores refuse more than MAX_SERIES_POINTS, 20,000, as they
# read them: stores/rollup_rows.py; this is the lower, so the GraphQL message says it first)
MAX_POINTS = 10_000
MAX_GROUPS = 5_000  # distinct groups a scanned series (user, tag) may hold
MAX_SCAN = 200_000  # entries a series grouped by user or tag may read
SCAN_PAGE = 500  # entries per page of that scan
DAY_S = 86_400
# the longest range each bucket may cover; "scan": a series grouped by user or metadata tag,
# which reads the request log rather than the rollups. Days and months within these are few
# enough (at most 732 and 240) for the stores to sum each bucket in SQL, so a series reads
# about a row per point it answers, whatever its group (the stores' MAX_BOUNDARIES)
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


class TooCostly(Exception):
    """The document's cost is over ``MAX_COST``, or its fragments form a cycle."""


class _Cost:
    """The cost of selections with fragments expanded, each fragment's cost computed once
    (per position: at the root or below), so it takes time linear in the document even when
    its expansion is exponential (a fragment spreading another twice, thirty times over)."""

    def __init__(self, fragments: Mapping[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments
        self.known: dict[tuple[str, bool], int] = {}

    def of(self, selections: SelectionSetNode | None, root: bool, path: frozenset[str]) -> int:
        total = 0
        for node in selections.selections if selections else ():
            if isinstance(node, FieldNode):
                total += FIELD_COST.get(node.name.value, 1) if root else 1
                total += self.of(node.selection_set, False, path)
            elif isinstance(node, InlineFragmentNode):
                total += self.of(node.selection_set, root, path)
            elif isinstance(node, FragmentSpreadNode):
                total += 1 + self.spread(node.name.value, root, path)  # 1: bounds the walk
        return total

    def spread(self, name: str, root: bool, path: frozenset[str]) -> int:
        if name in path:
            raise TooCostly(f"The fragment {name!r} spreads itself (a cycle).")
        fragment = self.fragments.get(name)
        if fragment is None:  # the standard rules say it is unknown
            return 0
        if (name, root) not in self.known:
            self.known[(name, root)] = self.of(fragment.selection_set, root, path | {name})
        return self.known[(name, root)]


def query_cost(document: DocumentNode) -> int:
    """The cost of a document's operations: a root field its ``FIELD_COST`` (1 when not
    listed), any other field 1, counted through fragments as executed."""
    definitions = document.definitions
    fragments = {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}
    cost = _Cost(fragments)
    return sum(
        cost.of(d.selection_set, True, frozenset())
        for d in definitions
        if isinstance(d, OperationDefinitionNode)
    )


def precheck(query: str) -> str | None:
    """Why ``query`` is refused before validation (its cost, or a fragment cycle), or None.
    Run before strawberry's own limits, whose walks through fragments are not memoised. A
    syntax error or an oversized document is left to the parser's own message."""
    try:
        document = parse(query, no_location=True, max_tokens=MAX_TOKENS)
        cost = query_cost(document)
    except GraphQLError:
        return None
    except TooCostly as exc:
        return str(exc)
    if cost > MAX_COST:
        return (
            f"This query costs {cost}, over the limit of {MAX_COST} (a field 1, a listing 10, "
            "a series, request page or ranking 100); split it into smaller queries."
        )
    return None


def extensions() -> list[type[SchemaExtension] | Callable[[], SchemaExtension]]:
    """The limit extensions, as factories: strawberry makes new ones for each operation (an
    extension holds the operation's state)."""
    return [
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        partial(QueryDepthLimiter, max_depth=MAX_DEPTH, should_ignore=_introspection),
        partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
    ]
