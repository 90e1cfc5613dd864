"""A bad config stops start-up with a message naming the file, the key and what was
expected; a good one loads and takes effect."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from farebox.app import create_app
from farebox.cli import main
from farebox.config.settings import Settings, load_settings
from farebox.errors import ConfigError

UNSET_VAR = "FAREBOX_TEST_SURELY_UNSET_VARIABLE"

# (id, YAML body (the database line is added), words the message must contain)
BAD: list[tuple[str, str, list[str]]] = [
    ("unknown-top-level-key", "colour: blue\n", ["colour", "unknown"]),
    (
        "unknown-nested-key",
        "providers:\n  x: {kind: mock, foo: 1}\n",
        ["providers.x.foo", "unknown"],
    ),
    ("port-not-int", "server:\n  port: abc\n", ["server.port", "integer", "abc"]),
    ("port-out-of-range", "server:\n  port: 70000\n", ["server.port", "65535"]),
    ("unknown-server-key", "server:\n  prot: 80\n", ["server.prot", "unknown"]),
    (
        "provider-kind-invalid",
        "providers:\n  x: {kind: azure}\n",
        ["providers.x.kind", "openai", "anthropic", "mock", "azure"],
    ),
    (
        "provider-kind-missing",
        "providers:\n  x: {base_url: 'http://127.0.0.1:1/v1'}\n",
        ["providers.x.kind"],
    ),
    (
        "api-key-literal",
        "providers:\n  openai: {kind: openai, api_key: sk-live-123}\n",
        ["providers.openai.api_key", "env:"],
    ),
    (
        "api-key-env-unset",
        f"providers:\n  openai: {{kind: openai, api_key: 'env:{UNSET_VAR}'}}\n",
        ["providers.openai.api_key", UNSET_VAR, "not set"],
    ),
    (
        "base-url-not-http",
        "providers:\n  local: {kind: openai, base_url: 'ftp://x'}\n",
        ["providers.local.base_url", "http"],
    ),
    (
        "alias-unknown-provider",
        "providers:\n  sim: {kind: mock}\n"
        "models:\n  fast:\n    - {provider: nowhere, model: gpt-4o-mini}\n",
        ["models.fast.0.provider", "nowhere", "sim"],
    ),
    (
        "alias-no-deployments",
        "providers:\n  sim: {kind: mock}\nmodels:\n  fast: []\n",
        ["models.fast"],
    ),
    (
        "model-not-in-catalog-without-price",
        "providers:\n  sim: {kind: mock}\n"
        "models:\n  house:\n    - {provider: sim, model: house-llm-7b}\n",
        ["models.house", "house-llm-7b", "price"],
    ),
    (
        "price-too-many-decimals",
        "pricing:\n  gpt-4o:\n    input: '0.1234567'\n",
        ["pricing.gpt-4o.input", "0.1234567", "6 decimal"],
    ),
    (
        "deployment-price-too-many-decimals",
        "providers:\n  sim: {kind: mock}\nmodels:\n  fast:\n"
        "    - {provider: sim, model: gpt-4o-mini, price: {input: '1', output: '0.00000001'}}\n",
        ["models.fast.0.price.output", "6 decimal"],
    ),
    (
        "price-as-float",
        "pricing:\n  gpt-4o:\n    input: 2.5\n",
        ["pricing.gpt-4o.input", "string"],
    ),
    (
        "price-not-a-number",
        "pricing:\n  gpt-4o:\n    input: 'cheap'\n",
        ["pricing.gpt-4o.input", "cheap"],
    ),
    (
        "price-unknown-field",
        "pricing:\n  gpt-4o:\n    inptu: '1'\n",
        ["pricing.gpt-4o.inptu", "unknown"],
    ),
    (
        "budget-limit-float",
        "plans:\n  free:\n    budgets:\n      - {period: day, limit_usd: 0.5}\n",
        ["plans.free.budgets.0.limit_usd", "string"],
    ),
    (
        "budget-limit-too-precise",
        "plans:\n  free:\n    budgets:\n      - {period: day, limit_usd: '0.0000000000001'}\n",
        ["plans.free.budgets.0.limit_usd"],
    ),
    (
        "budget-bad-scope",
        "plans:\n  free:\n    budgets:\n      - {scope: planet, limit_usd: '1'}\n",
        ["plans.free.budgets.0.scope", "planet"],
    ),
    (
        "plan-markup-and-resale",
        "plans:\n  pro:\n    pricing: {markup: '1.2', resale: {input: '1', output: '2'}}\n",
        ["plans.pro.pricing", "markup", "resale"],
    ),
    ("default-plan-unknown", "default_plan: gold\n", ["default_plan", "gold"]),
    ("anomaly-unknown-key", "anomaly: {treshold_pct: 500}\n", ["anomaly.treshold_pct"]),
    ("anomaly-bad-action", "anomaly: {action: explode}\n", ["anomaly.action", "pause_tenant"]),
    ("anomaly-window-not-minutes", "anomaly: {window_s: 90}\n", ["anomaly.window_s", "60"]),
    (
        "anomaly-spend-float",
        "anomaly: {min_spend_usd_per_hour: 1.5}\n",
        ["anomaly.min_spend_usd_per_hour", "string"],
    ),
    (
        "anomaly-money-too-precise",
        "anomaly: {floor_spend_usd_per_hour: '0.0000000000001'}\n",
        ["anomaly.floor_spend_usd_per_hour"],
    ),
    (
        "anomaly-pagerduty-literal-key",
        "anomaly:\n  pagerduty: {routing_key: abc123}\n",
        ["anomaly.pagerduty.routing_key", "env:"],
    ),
    (
        "anomaly-slack-unset-env",
        "anomaly:\n  slack: {webhook_url: 'env:FAREBOX_TEST_UNSET_SLACK'}\n",
        ["anomaly.slack.webhook_url", "FAREBOX_TEST_UNSET_SLACK"],
    ),
    (
        "plan-anomaly-unknown-key",
        "plans:\n  free:\n    anomaly: {pause: true}\n",
        ["plans.free.anomaly.pause"],
    ),
    ("plan-models-string", "plans:\n  free:\n    models: 7\n", ["plans.free.models"]),
    ("secret-literal", "secret: hunter2\n", ["secret", "env:"]),
    ("top-level-list", "- a\n- b\n", ["mapping"]),
    ("invalid-yaml", "providers:\n  x: {kind: mock\n", ["YAML"]),
    ("invalid-yaml-tabs", "server:\n\tport: 1\n", ["YAML"]),
]

GOOD = """\
providers:
  sim: {kind: mock, seed: 7}
  upstream: {kind: openai, api_key: "env:FAREBOX_TEST_OPENAI_KEY", base_url: "http://127.0.0.1:9/v1/"}
  claude: {kind: anthropic, api_key: "env:FAREBOX_TEST_ANTHROPIC_KEY"}
models:
  fast:
    - {provider: sim, model: gpt-4o-mini}
    - {provider: upstream, model: gpt-4o-mini}
  house:
    - {provider: sim, model: house-llm, price: {input: "0.50", output: "1.000001"}}
pricing:
  gpt-4o-mini: {input: "1", output: "2"}
plans:
  free:
    models: ["gpt-4o-mini", "fast"]
    budgets:
      - {period: day, limit_usd: "0.50"}
      - {period: month, limit_usd: "15"}
      - {scope: user, period: "rolling:1h", limit_usd: "0.01"}
    rate_limits:
      - {scope: ip, requests_per_minute: 10}
    max_tokens: 1024
    downgrade: {gpt-4o: gpt-4o-mini}
  pro:
    pricing: {markup: "1.25"}
default_plan: free
server:
  port: 9999
  upgrade_url: "https://example.com/upgrade"
"""
GOOD_ENV = {"FAREBOX_TEST_OPENAI_KEY": "sk-test-1", "FAREBOX_TEST_ANTHROPIC_KEY": "ak-test-2"}


def write(tmp_path: Path, body: str, name: str = "farebox.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"database: 'sqlite:///{tmp_path / 'cfg.db'}'\n" + body, encoding="utf-8")
    return path


def startup_error(path: Path, env: dict[str, str]) -> str:
    """The message that stops start-up: from validating the file, or from wiring the app."""
    with pytest.raises(ConfigError) as info:
        create_app(load_settings(path, env=env), announce=lambda _m: None)
    return info.value.message


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # nothing a config test does may touch the project directory
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(UNSET_VAR, raising=False)


@pytest.mark.parametrize(("body", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config_names_file_key_and_expectation(
    tmp_path: Path, body: str, words: list[str]
) -> None:
    path = write(tmp_path, body, name="my-gateway.yaml")
    message = startup_error(path, env={})
    assert str(path) in message or "my-gateway.yaml" in message, message
    for word in words:
        assert word in message, (word, message)
    assert "Traceback" not in message


@pytest.mark.parametrize(
    "case", ["unknown-top-level-key", "unknown-nested-key", "api-key-env-unset"]
)
def test_settings_loader_itself_rejects(tmp_path: Path, case: str) -> None:
    body, words = next((b, w) for name, b, w in BAD if name == case)
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(path) in info.value.message
    assert words[0] in info.value.message


def test_model_without_price_is_rejected_when_settings_load(tmp_path: Path) -> None:
    """Start-up validation is ``load_settings``' job: a deployment of a model that is not in
    the catalog and has no price must not get past it."""
    body = next(b for name, b, _ in BAD if name == "model-not-in-catalog-without-price")
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "models.house" in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "nope.yaml" in info.value.message
    assert "cannot read" in info.value.message


def test_env_reference_resolved_from_given_env_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UNSET_VAR, "from-process-env")
    path = write(tmp_path, f"providers:\n  o: {{kind: openai, api_key: 'env:{UNSET_VAR}'}}\n")
    with pytest.raises(ConfigError):
        load_settings(path, env={})  # an explicit env is the whole environment
    assert load_settings(path, env={UNSET_VAR: "k"}).provider_keys == {"o": "k"}
    with pytest.raises(ConfigError):
        load_settings(path, env={UNSET_VAR: ""})  # empty counts as unset


def test_valid_config_loads(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    settings = load_settings(path, env=GOOD_ENV)
    assert isinstance(settings, Settings)
    assert settings.source == str(path)
    assert settings.database_path == tmp_path / "cfg.db"
    cfg = settings.file
    assert set(cfg.providers) == {"sim", "upstream", "claude"}
    assert cfg.providers["sim"].seed == 7
    assert cfg.providers["upstream"].base_url == "http://127.0.0.1:9/v1"
    assert settings.provider_keys == {"sim": None, "upstream": "sk-test-1", "claude": "ak-test-2"}
    assert [d.provider for d in cfg.models["fast"]] == ["sim", "upstream"]
    assert cfg.pricing["gpt-4o-mini"].fields() == {"input": "1", "output": "2"}
    free = cfg.plans["free"]
    assert [b.limit_usd for b in free.budgets] == ["0.50", "15", "0.01"]
    assert free.budgets[2].scope == "user" and free.budgets[2].period == "rolling:1h"
    assert free.max_tokens == 1024
    assert free.downgrade == {"gpt-4o": "gpt-4o-mini"}
    assert cfg.plans["pro"].pricing.markup == "1.25"
    assert cfg.default_plan == "free"
    assert cfg.server.port == 9999
    create_app(settings, announce=lambda _m: None)  # wiring accepts it too


def test_empty_config_is_the_embedded_default(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    settings = load_settings(path, env={})
    assert settings.file.providers == {}
    assert settings.file.server.port == 8787
    assert load_settings(None, env={}).source == "(embedded default)"


async def test_valid_config_takes_effect(make_gateway: Any) -> None:
    data = yaml.safe_load(GOOD)
    async with make_gateway(data, env=GOOD_ENV) as gw:
        key = await gw.tenant_key("acme", "free")
        auth = {"Authorization": f"Bearer {key}"}
        r = await gw.client.get("/v1/models", headers=auth)
        assert r.status_code == 200, r.text
        models = {m["id"] for m in r.json()["data"]}
        assert models == {"gpt-4o-mini", "fast"}
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        # the pricing override (1 and 2 USD per 1M tokens) replaces the catalog price
        expected = usage["prompt_tokens"] * 1_000_000 + usage["completion_tokens"] * 2_000_000
        (entry,) = await gw.ledger("acme")
        assert entry.cost == expected
        assert entry.provider == "sim"
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            headers=auth,
        )
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "model_not_allowed"


# --- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail instead of serving, should a bad config get through."""
    import uvicorn

    started: list[Any] = []

    def fake_run(*args: Any, **kwargs: Any) -> None:
        started.append((args, kwargs))

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return started


CLI_CASES = [
    "unknown-top-level-key",
    "unknown-nested-key",
    "port-not-int",
    "provider-kind-invalid",
    "api-key-literal",
    "api-key-env-unset",
    "alias-unknown-provider",
    "model-not-in-catalog-without-price",
    "price-too-many-decimals",
    "invalid-yaml",
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_serve_stops_with_a_clean_message(
    tmp_path: Path, no_server: list[Any], case: str
) -> None:
    body, words = next((b, w) for name, b, w in BAD if name == case)
    path = write(tmp_path, body, name="bad-config.yaml")
    result = CliRunner().invoke(main, ["serve", "--config", str(path)], env={UNSET_VAR: None})
    assert no_server == [], "the server started with a bad config"
    assert result.exit_code != 0
    # a clean exit (click's error path), not an exception escaping as a traceback
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "bad-config.yaml" in result.output, result.output
    for word in words:
        assert word in result.output, (word, result.output)


def test_cli_serve_missing_file(tmp_path: Path, no_server: list[Any]) -> None:
    result = CliRunner().invoke(main, ["serve", "--config", str(tmp_path / "absent.yaml")])
    assert no_server == []
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "absent.yaml" in result.output
    assert "Traceback" not in result.output


def test_cli_serve_good_config_starts(tmp_path: Path, no_server: list[Any]) -> None:
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(main, ["serve", "--config", str(path)], env=GOOD_ENV)
    assert result.exit_code == 0, (result.output, result.exception)
    assert len(no_server) == 1
    _, kwargs = no_server[0]
    assert kwargs["port"] == 9999


@pytest.mark.parametrize("case", ["unknown-top-level-key", "model-not-in-catalog-without-price"])
def test_cli_admin_commands_report_bad_config_cleanly(tmp_path: Path, case: str) -> None:
    body, words = next((b, w) for name, b, w in BAD if name == case)
    path = write(tmp_path, body, name="admin.yaml")
    for args in (["tenants", "list"], ["keys", "revoke", "key_x"], ["usage"]):
        result = CliRunner().invoke(main, [*args, "--config", str(path)])
        assert result.exit_code != 0
        assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert "admin.yaml" in result.output and words[0] in result.output


def test_error_lists_every_problem(tmp_path: Path) -> None:
    body = textwrap.dedent(
        """\
        colour: blue
        server:
          port: abc
        providers:
          x: {kind: mock, foo: 1}
        """
    )
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    for key in ("colour", "server.port", "providers.x.foo"):
        assert key in info.value.message
