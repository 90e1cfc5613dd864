"""Issue [14], acceptance 8 (the vault's part): a provider given a key both ways (a literal
in its headers and an integration reference), a literal key, a bad integration name, a bad
``FAREBOX_KEK`` or a ``byok_fee`` that is not exact money: each a start-up error naming the
key. Any body sent to the vault's admin operations is answered 2xx or a clear 4xx, never a
5xx (hypothesis over the real schema's fields)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.app import create_app
from farebox.config.settings import parse_settings
from farebox.core.money import MoneyFormatError
from farebox.errors import ConfigError
from farebox.gateway.routing_table import build_plans
from tests.conftest import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def settings_of(tmp_path: Path, provider: dict[str, Any], env: dict[str, str] | None = None,
                **extra: Any) -> Any:  # fmt: skip
    data = {"database": f"sqlite:///{tmp_path / 'f.db'}", "providers": {"sim": provider}, **extra}
    return parse_settings(data, source="f.yaml", env=env or {}, base_dir=tmp_path)


def test_a_literal_beside_an_integration_reference_is_a_start_up_error(tmp_path: Path) -> None:
    both = {"kind": "openai", "api_key": "integration:openai-prod",
            "headers": {"Authorization": "Bearer sk-literal"}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"providers\.sim\.headers\.Authorization") as caught:
        settings_of(tmp_path, both)
    assert "providers.sim.api_key" in str(caught.value) and "sk-literal" not in str(caught.value)
    alone = settings_of(tmp_path, {"kind": "openai", "api_key": "integration:openai-prod"})
    assert alone.provider_integrations == {"sim": "openai-prod"}
    assert alone.provider_keys == {"sim": None}


@pytest.mark.parametrize("api_key", ["sk-literal-key", "integration:", "integration:bad name"])
def test_a_literal_key_or_a_bad_integration_name_is_a_start_up_error(
    tmp_path: Path, api_key: str
) -> None:
    with pytest.raises(ConfigError, match=r"providers\.sim\.api_key") as caught:
        settings_of(tmp_path, {"kind": "openai", "api_key": api_key})
    assert "never as a literal" in str(caught.value) or "integration:NAME" in str(caught.value)
    assert "sk-literal-key" not in str(caught.value)  # a refused secret is not echoed


def test_the_kek_versions_come_from_the_environment(tmp_path: Path) -> None:
    k1, k2 = base64.b64encode(b"1" * 32).decode(), base64.b64encode(b"2" * 32).decode()
    got = settings_of(tmp_path, {"kind": "mock"}, {"FAREBOX_KEK": f"v2:{k2}, v1:{k1}"})
    assert got.kek == (("v2", b"2" * 32), ("v1", b"1" * 32))
    assert settings_of(tmp_path, {"kind": "mock"}, {"FAREBOX_KEK": k1}).kek == (("v1", b"1" * 32),)
    for bad, named in ((f"v1:{k1},v1:{k2}", "twice"), ("v1:AAAA", "not 32"),
                       ("v1:not base64!", "not base64"), (f"s1:{k1}", "bad version")):  # fmt: skip
        with pytest.raises(ConfigError, match="FAREBOX_KEK") as caught:
            settings_of(tmp_path, {"kind": "mock"}, {"FAREBOX_KEK": bad})
        assert named in str(caught.value)


def test_a_byok_fee_must_be_exact_money(tmp_path: Path) -> None:
    plans = {
        "pro": {"models": ["*"], "pricing": {"byok_fee": {"per_million_tokens_usd": "0.0000001"}}}
    }
    with pytest.raises((ConfigError, MoneyFormatError), match="byok_fee.per_million_tokens_usd"):
        build_plans(settings_of(tmp_path, {"kind": "mock"}, plans=plans))
    plans = {"pro": {"models": ["*"], "pricing": {"byok_fee": {"per_request": "1"}}}}
    with pytest.raises(ConfigError, match="byok_fee.per_request"):
        settings_of(tmp_path, {"kind": "mock"}, plans=plans)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6,
)  # fmt: skip
fields = st.fixed_dictionaries(
    {}, optional={"name": json_values | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}"),
                  "provider": json_values | st.sampled_from(["openai", "mock", "x"]),
                  "api_key": json_values | st.text(min_size=1, max_size=5000),
                  "extra": json_values},
)  # fmt: skip
PATHS = [("POST", "/admin/v1/integrations"), ("POST", "/admin/v1/integrations/real/rotate"),
         ("PUT", "/admin/v1/tenants/acme/integrations/mock"),
         ("PUT", "/admin/v1/tenants/acme/integrations/nosuch")]  # fmt: skip


def test_any_body_to_the_vault_is_answered_without_a_5xx(tmp_path: Path) -> None:
    data = {"database": f"sqlite:///{tmp_path / 'f.db'}"}
    app = create_app(parse_settings(data, source="f.yaml", env={"FAREBOX_ADMIN_KEY": ADMIN_KEY},
                                    base_dir=tmp_path), announce=lambda _m: None)  # fmt: skip
    with TestClient(app) as client:
        assert client.post("/admin/v1/tenants", json={"id": "acme"}, headers=ADMIN).is_success
        real = {"name": "real", "provider": "openai", "api_key": "sk-real-0123456789"}
        assert client.post("/admin/v1/integrations", json=real, headers=ADMIN).status_code == 201
        seen: set[int] = set()

        @settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
        @given(body=fields | json_values, where=st.sampled_from(PATHS))
        def check(body: Any, where: tuple[str, str]) -> None:
            r = client.request(where[0], where[1], json=body, headers=ADMIN)
            seen.add(r.status_code)
            assert r.status_code < 500, r.text
            if r.status_code >= 400:
                assert r.json()["error"]["message"]
            if isinstance(body, dict) and isinstance(body.get("api_key"), str):
                assert body["api_key"] not in r.text or len(body["api_key"]) < 5

        check()
        assert 400 in seen
