"""A plan's ``guardrails:`` section: what start-up refuses, and which engine reads which PII
type (the built-in recognisers for the types they know, presidio for names and places)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from farebox.config.guardrails import BUILTIN_ENTITIES, PII_ENTITIES
from farebox.config.settings import parse_settings
from farebox.errors import ConfigError
from farebox.gateway.guard_engines import presidio_plans
from farebox.guardrails import pii_patterns


def settings(tmp: Path, guardrails: dict[str, Any]) -> Any:
    data = {"database": f"sqlite:///{tmp / 'f.db'}", "providers": {"sim": {"kind": "mock"}},
            "plans": {"p": {"models": ["*"], "guardrails": guardrails}}}  # fmt: skip
    return parse_settings(data, source="test.yaml", env={"FAREBOX_ADMIN_KEY": "x" * 40},
                          base_dir=tmp)  # fmt: skip


def test_the_config_knows_the_builtin_recognisers_types() -> None:
    assert frozenset(pii_patterns.ENTITIES) == BUILTIN_ENTITIES
    assert BUILTIN_ENTITIES < PII_ENTITIES


def test_builtin_engine_with_a_name_type_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, {"pii": {"mode": "redact", "engine": "builtin",
                                    "entities": ["PERSON", "EMAIL_ADDRESS"]}})  # fmt: skip
    assert "PERSON" in caught.value.message and "presidio" in caught.value.message


@pytest.mark.parametrize(
    "section",
    [
        {"output": {"pii": "redact", "entities": ["PERSON"]}},
        {"pii": {"mode": "redact", "entities": ["SOCIAL_SECURITY"]}},
        {"prompt_injection": {"mode": "redact"}},
        {"secrets": {"mode": "sometimes"}},
        {"prompt_injection": {"mode": "block", "scan": []}},
        {"max_findings_per_hour": 0},
        {"unknown_check": {"mode": "block"}},
    ],
)
def test_bad_sections_stop_start_up_naming_the_problem(
    tmp_path: Path, section: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, section)
    assert "test.yaml" in caught.value.message
    assert "guardrails" in caught.value.message


def test_presidio_is_loaded_only_for_types_the_builtin_recognisers_lack(tmp_path: Path) -> None:
    patterns = settings(tmp_path, {"pii": {"mode": "redact", "engine": "presidio"}})
    names = settings(tmp_path, {"pii": {"mode": "flag", "entities": ["PERSON"]}})
    assert presidio_plans({"p": patterns.file.plans["p"].guardrails}) == []
    assert presidio_plans({"p": names.file.plans["p"].guardrails}) == ["p"]


async def test_presidio_redacts_a_name_and_the_builtin_an_email_both_restored(
    make_gateway: Any,
) -> None:
    from tests.guard_world import EMAIL, MODEL, EchoMock, config, plan

    pii = {"mode": "redact", "restore": True, "entities": ["PERSON", "EMAIL_ADDRESS"]}
    mock = EchoMock()
    plans = {"names": plan({"pii": pii})}
    async with make_gateway(config(plans), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="names")
        text = f"Please write to Margaret Hamilton at {EMAIL} about the launch."
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        r = await gw.client.post("/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == f"You said: {text}"
        sent = mock.sent()
        assert "Hamilton" not in sent and EMAIL not in sent
        assert "<PERSON_1>" in sent and "<EMAIL_1>" in sent
        (entry,) = await gw.ledger("acme")
        assert {f["category"] for f in entry.guardrails} == {"PERSON", "EMAIL_ADDRESS"}
