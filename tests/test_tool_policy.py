"""Tool policy (``farebox.core.tools``): tool-name extraction from OpenAI and Anthropic request
bodies, and deny / allow / require_approval semantics."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farebox.core.tools import ToolPolicy, ToolVerdict, tool_names


def _fn(name: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


# --- extraction: OpenAI ---------------------------------------------------------------------


def test_openai_tools_in_order() -> None:
    body = {"model": "m", "messages": [], "tools": [_fn("b.search"), _fn("a.fetch")]}
    assert tool_names(body) == ["b.search", "a.fetch"]


def test_openai_custom_tool_type() -> None:
    body = {"tools": [{"type": "custom", "custom": {"name": "grammar"}}, _fn("f")]}
    assert tool_names(body) == ["grammar", "f"]


def test_openai_legacy_functions_and_function_call() -> None:
    body = {
        "functions": [{"name": "get_weather", "parameters": {}}],
        "function_call": {"name": "get_time"},
    }
    assert tool_names(body) == ["get_weather", "get_time"]


def test_openai_function_call_string_names_nothing() -> None:
    assert tool_names({"functions": [{"name": "f"}], "function_call": "auto"}) == ["f"]


def test_openai_tool_choice_naming_a_function() -> None:
    body = {"tools": [_fn("a")], "tool_choice": {"type": "function", "function": {"name": "b"}}}
    assert tool_names(body) == ["a", "b"]


@pytest.mark.parametrize("choice", ["auto", "none", "required", {"type": "auto"}, None])
def test_openai_tool_choice_without_name(choice: Any) -> None:
    assert tool_names({"tools": [_fn("a")], "tool_choice": choice}) == ["a"]


def test_openai_tool_calls_in_history() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "db.read"}},
                    {"id": "c2", "type": "function", "function": {"name": "db.delete"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "{}"},
            {"role": "assistant", "function_call": {"name": "legacy.fn", "arguments": "{}"}},
        ]
    }
    assert tool_names(body) == ["db.read", "db.delete", "legacy.fn"]


def test_deduplicated_across_sources() -> None:
    body = {
        "tools": [_fn("a"), _fn("b"), _fn("a")],
        "tool_choice": {"type": "function", "function": {"name": "b"}},
        "messages": [
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "a"}}]}
        ],
    }
    assert tool_names(body) == ["a", "b"]


# --- extraction: Anthropic ------------------------------------------------------------------


def test_anthropic_tools_and_server_tools() -> None:
    body = {
        "model": "claude",
        "max_tokens": 10,
        "tools": [
            {"name": "get_stock", "description": "d", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "custom", "name": "c_tool", "input_schema": {"type": "object"}},
        ],
    }
    assert tool_names(body) == ["get_stock", "web_search", "c_tool"]


def test_anthropic_tool_choice() -> None:
    body = {
        "tools": [{"name": "a", "input_schema": {}}],
        "tool_choice": {"type": "tool", "name": "z"},
    }
    assert tool_names(body) == ["a", "z"]


@pytest.mark.parametrize("choice", [{"type": "auto"}, {"type": "any"}, {"type": "none"}])
def test_anthropic_tool_choice_without_name(choice: dict[str, str]) -> None:
    assert tool_names({"tools": [{"name": "a"}], "tool_choice": choice}) == ["a"]


def test_anthropic_tool_use_in_history() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "what's AAPL?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "let me check"},
                    {"type": "tool_use", "id": "t1", "name": "get_stock", "input": {}},
                    {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "1"}],
            },
        ]
    }
    assert tool_names(body) == ["get_stock", "web_search"]


def test_no_tools() -> None:
    assert tool_names({}) == []
    assert tool_names({"model": "m", "messages": [{"role": "user", "content": "hi"}]}) == []


# --- extraction: malformed input ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"tools": None},
        {"tools": "get_weather"},
        {"tools": {"name": "x"}},
        {"tools": [None, 1, "x", [], {}]},
        {"tools": [{"type": "function"}, {"type": "function", "function": "x"}]},
        {"tools": [{"type": "function", "function": {"name": 5}}, {"name": None}, {"name": ""}]},
        {"tools": [{"type": 3, "name": ["x"]}, {"type": None}]},
        {"functions": [None, {"name": {"x": 1}}], "function_call": 7},
        {"tool_choice": {"type": "function", "function": None}},
        {"tool_choice": {"type": "tool", "name": 3}},
        {"tool_choice": ["a"]},
        {"messages": "hi"},
        {"messages": [None, "x", 3, {"tool_calls": "x"}, {"tool_calls": [None, {"function": 1}]}]},
        {
            "messages": [
                {"content": [None, "x", {"type": "tool_use"}, {"type": "tool_use", "name": 1}]}
            ]
        },
        {"messages": [{"content": {"type": "tool_use", "name": "x"}}]},
        {"messages": [{"function_call": "auto"}, {"function_call": {"name": None}}]},
    ],
)
def test_malformed_bodies_do_not_raise(body: dict[str, Any]) -> None:
    assert tool_names(body) == []


def test_malformed_items_are_skipped_not_fatal() -> None:
    body = {
        "tools": [None, _fn(7), _fn("ok"), {"name": "also_ok"}],
        "messages": [None, {"tool_calls": [1, {"type": "function", "function": {"name": "h"}}]}],
    }
    assert tool_names(body) == ["ok", "also_ok", "h"]


def test_non_mapping_body_does_not_raise() -> None:
    assert tool_names([]) == []  # type: ignore[arg-type]
    assert tool_names(None) == []  # type: ignore[arg-type]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "tools",
                        "functions",
                        "tool_choice",
                        "function_call",
                        "messages",
                        "tool_calls",
                        "content",
                        "type",
                        "function",
                        "name",
                        "custom",
                    ]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_never_raises(body: Any) -> None:
    names = tool_names(body if isinstance(body, dict) else {"tools": body, "messages": body})
    assert all(isinstance(name, str) and name for name in names)
    assert len(names) == len(set(names))


# --- policy semantics -----------------------------------------------------------------------


def test_empty_policy() -> None:
    policy = ToolPolicy()
    assert not policy.enabled
    assert policy.check(["anything", "database.delete_all"]) is None
    assert policy.check([]) is None


@pytest.mark.parametrize(
    "policy",
    [ToolPolicy(deny=("x",)), ToolPolicy(allow=("x",)), ToolPolicy(require_approval=("x",))],
)
def test_enabled(policy: ToolPolicy) -> None:
    assert policy.enabled


def test_deny_glob() -> None:
    policy = ToolPolicy(deny=("database.delete*",))
    assert policy.check(["database.read", "search"]) is None
    assert policy.check(["database.read", "database.delete_all"]) == ToolVerdict(
        "deny", "database.delete_all", "database.delete*"
    )


def test_deny_reports_first_denied_name_and_first_matching_pattern() -> None:
    policy = ToolPolicy(deny=("b*", "*"))
    assert policy.check(["a", "b"]) == ToolVerdict("deny", "a", "*")
    assert policy.check(["bee", "a"]) == ToolVerdict("deny", "bee", "b*")


def test_allow_list() -> None:
    policy = ToolPolicy(allow=("search.*", "calc"))
    assert policy.check(["search.web", "calc"]) is None
    assert policy.check(["search.web", "shell.exec"]) == ToolVerdict("deny", "shell.exec", None)
    assert policy.check(["calculator"]) == ToolVerdict("deny", "calculator", None)


def test_deny_beats_allow() -> None:
    policy = ToolPolicy(deny=("search.internal",), allow=("search.*",))
    assert policy.check(["search.web"]) is None
    assert policy.check(["search.internal"]) == ToolVerdict(
        "deny", "search.internal", "search.internal"
    )


def test_require_approval() -> None:
    policy = ToolPolicy(require_approval=("payments.*",))
    assert policy.check(["search"]) is None
    assert policy.check(["search", "payments.refund"]) == ToolVerdict(
        "require_approval", "payments.refund", "payments.*"
    )


def test_deny_beats_require_approval_regardless_of_order() -> None:
    policy = ToolPolicy(deny=("shell.*",), require_approval=("payments.*",))
    names = ["payments.refund", "shell.exec"]
    assert policy.check(names) == ToolVerdict("deny", "shell.exec", "shell.*")
    assert policy.check(reversed(names)) == ToolVerdict("deny", "shell.exec", "shell.*")


def test_same_name_denied_and_gated_is_denied() -> None:
    policy = ToolPolicy(deny=("payments.*",), require_approval=("payments.*",))
    assert policy.check(["payments.refund"]) == ToolVerdict("deny", "payments.refund", "payments.*")


def test_allow_miss_beats_require_approval() -> None:
    policy = ToolPolicy(allow=("payments.*",), require_approval=("payments.*",))
    assert policy.check(["payments.refund", "shell"]) == ToolVerdict("deny", "shell", None)
    assert policy.check(["payments.refund"]) == ToolVerdict(
        "require_approval", "payments.refund", "payments.*"
    )


def test_check_accepts_a_generator() -> None:
    policy = ToolPolicy(deny=("x",), require_approval=("y",))
    assert policy.check(n for n in ["a", "y"]) == ToolVerdict("require_approval", "y", "y")


def test_glob_is_case_sensitive() -> None:
    policy = ToolPolicy(deny=("Database.*",))
    assert policy.check(["database.delete"]) is None
    assert policy.check(["Database.delete"]) == ToolVerdict("deny", "Database.delete", "Database.*")
    assert ToolPolicy(allow=("search",)).check(["SEARCH"]) == ToolVerdict("deny", "SEARCH", None)


def test_glob_features() -> None:
    policy = ToolPolicy(deny=("tool?", "db.[dt]*"))
    assert policy.check(["tool1"]) == ToolVerdict("deny", "tool1", "tool?")
    assert policy.check(["tool12"]) is None
    assert policy.check(["db.drop"]) == ToolVerdict("deny", "db.drop", "db.[dt]*")
    assert policy.check(["db.read"]) is None
    # A literal pattern matches only itself: '.' is not a wildcard.
    assert ToolPolicy(deny=("a.b",)).check(["axb"]) is None


def test_policy_accepts_lists_but_not_a_bare_string() -> None:
    policy = ToolPolicy(deny=["a*"])  # type: ignore[arg-type]
    assert policy.deny == ("a*",)
    with pytest.raises(TypeError):
        ToolPolicy(deny="a*")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ToolPolicy(allow=(1,))  # type: ignore[arg-type]


def test_policy_on_extracted_names() -> None:
    body = {
        "tools": [_fn("search"), _fn("database.delete_all")],
        "messages": [{"role": "user", "content": "clean up"}],
    }
    verdict = ToolPolicy(deny=("database.delete*",)).check(tool_names(body))
    assert verdict is not None
    assert verdict.message() == (
        "The tool 'database.delete_all' is denied by your plan (pattern 'database.delete*')."
    )


# --- messages -------------------------------------------------------------------------------


def test_messages() -> None:
    assert ToolVerdict("deny", "database.delete_all", "database.delete*").message() == (
        "The tool 'database.delete_all' is denied by your plan (pattern 'database.delete*')."
    )
    assert ToolVerdict("deny", "x", None).message() == (
        "The tool 'x' is not in your plan's allowed tools."
    )
    assert ToolVerdict("require_approval", "payments.refund", "payments.*").message() == (
        "The tool 'payments.refund' requires approval (pattern 'payments.*'): "
        "route the request through your approval flow."
    )
    assert "weird" in ToolVerdict("weird", "x", None).message()


# --- properties -----------------------------------------------------------------------------

_names = st.lists(st.text(min_size=1, max_size=20))


@given(_names)
def test_empty_policy_never_objects(names: list[str]) -> None:
    assert ToolPolicy().check(names) is None


@given(_names.filter(bool))
def test_deny_everything_denies_any_non_empty_list(names: list[str]) -> None:
    verdict = ToolPolicy(deny=("*",)).check(names)
    assert verdict == ToolVerdict("deny", names[0], "*")


@given(_names.filter(bool), _names)
def test_deny_star_beats_any_approval(names: list[str], gated: list[str]) -> None:
    verdict = ToolPolicy(deny=("*",), require_approval=tuple(gated)).check(names)
    assert verdict is not None and verdict.kind == "deny"
