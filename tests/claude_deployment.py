"""A gateway whose alias ``smart`` is served by one Anthropic deployment (the fake Anthropic
upstream, its key read from the environment), for tests that cross the two formats."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fakes.anthropic_upstream import AnthropicUpstream


def claude_config(upstream: AnthropicUpstream, plans: Mapping[str, Any]) -> dict[str, Any]:
    """The config: ``smart`` on the fake Anthropic upstream, its key from ``CLAUDE_KEY``."""
    return {
        "providers": {"claude": {"kind": "anthropic", "base_url": upstream.base_url,
                                 "api_key": "env:CLAUDE_KEY"}},
        "models": {"smart": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
        "plans": plans,
    }  # fmt: skip


def claude_gateway(
    make_gateway: Any, upstream: AnthropicUpstream, plans: Mapping[str, Any], **more: Any
) -> Any:
    """``async with claude_gateway(make_gateway, upstream, plans) as gw:`` (``more``: other
    top-level config sections, merged over the Anthropic deployment's)."""
    config = claude_config(upstream, plans)
    for section, value in more.items():
        config[section] = {**config.get(section, {}), **value}
    return make_gateway(config, env={"CLAUDE_KEY": "sk-ant-test"})
