"""Plans reloaded while serving get the guardrail engines they ask for: a plan edited onto
presidio (names) or the injection classifier loads it, off the event loop, before the new
plans apply, so a name is redacted at once instead of going upstream unread; an engine that
cannot load keeps the old plans, with the extra named in the log."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from farebox.app import create_app
from farebox.config.reload import PlanReloader
from farebox.config.settings import load_settings
from farebox.errors import GuardrailUnavailable
from farebox.gateway import guard_engines
from tests.conftest import ADMIN_KEY
from tests.guard_world import EMAIL, MODEL, EchoMock, plan

NAME = "Margaret Hamilton"
TEXT = f"Please write to {NAME} at {EMAIL} about the launch."
BUILTIN = plan({"pii": {"mode": "redact", "restore": True, "engine": "builtin"}})
NAMES = plan({"pii": {"mode": "redact", "restore": True, "entities": ["PERSON", "EMAIL_ADDRESS"]}})
CLASSIFIER = plan({"prompt_injection": {"mode": "flag", "classifier": "on"}})


class World:
    def __init__(self, tmp_path: Path, app: Any, client: httpx.AsyncClient, mock: EchoMock):
        self.path, self.app, self.client, self.mock = tmp_path / "farebox.yaml", app, client, mock
        self.key = ""

    def write(self, plans: dict[str, Any]) -> None:
        data = yaml.safe_load(self.path.read_text())
        data["plans"] = plans
        self.path.write_text(yaml.safe_dump(data))

    async def chat(self, text: str) -> dict[str, Any]:
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        auth = {"Authorization": f"Bearer {self.key}"}
        r = await self.client.post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 200, r.text
        return dict(r.json())


@asynccontextmanager
async def world(tmp_path: Path, plans: dict[str, Any]) -> AsyncIterator[World]:
    path = tmp_path / "farebox.yaml"
    data = {
        "database": f"sqlite:///{tmp_path / 'f.db'}",
        "providers": {"sim": {"kind": "mock"}},
        "plans": plans,
        "server": {"reload_interval_s": 0},  # the test calls the reloader itself
    }
    path.write_text(yaml.safe_dump(data))
    mock = EchoMock()
    settings = load_settings(path, env={"FAREBOX_ADMIN_KEY": ADMIN_KEY})
    app = create_app(settings, providers={"sim": mock}, announce=lambda _m: None)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            w = World(tmp_path, app, client, mock)
            r = await client.post("/admin/v1/tenants", json={"id": "t", "plan": "p"}, headers=admin)
            assert r.status_code in (200, 201), r.text
            r = await client.post("/admin/v1/tenants/t/keys", json={"name": "k"}, headers=admin)
            w.key = r.json()["key"]
            yield w


async def test_a_plan_reloaded_onto_presidio_redacts_names_at_once(tmp_path: Path) -> None:
    async with world(tmp_path, {"p": BUILTIN}) as w:
        assert w.app.state.services.gateway.guardrails.presidio is None  # no plan needed it
        await w.chat(TEXT)
        assert NAME in w.mock.sent()  # the built-in recognisers do not read names
        w.write({"p": NAMES})
        assert await w.app.state.reloader.check_soon()  # presidio loads in a worker thread
        assert w.app.state.services.gateway.guardrails.presidio is not None
        w.mock.bodies.clear()
        answer = await w.chat(TEXT)
        sent = w.mock.sent()
        assert NAME not in sent and EMAIL not in sent and "<PERSON_1>" in sent
        assert answer["choices"][0]["message"]["content"] == f"You said: {TEXT}"  # restored


async def test_a_plan_reloaded_onto_the_classifier_scores_with_it(tmp_path: Path) -> None:
    async with world(tmp_path, {"p": BUILTIN}) as w:
        stage = w.app.state.services.gateway.guardrails
        assert stage.classifier is None
        w.write({"p": CLASSIFIER})
        assert w.app.state.reloader.check()  # the blocking form loads it in this thread
        assert stage.classifier is not None
        before = stage.classifier.timeouts
        await w.chat("What is the capital of France?")
        assert stage.classifier.timeouts == before  # it answered: not "unavailable"


async def test_an_engine_that_cannot_load_keeps_the_old_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing(*_a: Any) -> Any:
        raise GuardrailUnavailable(
            "test.yaml: plans.p.guardrails.pii.engine: presidio needs the extra farebox[pii]"
        )

    async with world(tmp_path, {"p": BUILTIN}) as w:
        monkeypatch.setattr(guard_engines, "_presidio", missing)
        w.write({"p": NAMES, "q": BUILTIN})
        with caplog.at_level(logging.ERROR, logger="farebox.reload"):
            assert not await w.app.state.reloader.check_soon()
        assert "farebox[pii]" in caplog.text and "running plans stay" in caplog.text
        assert "q" not in w.app.state.services.gateway.plans()  # nothing of the new file applied
        await w.chat(TEXT)
        assert EMAIL not in w.mock.sent()  # the old plan still redacts with the built-ins


async def test_an_engine_failing_its_own_way_keeps_the_old_plans_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_a: Any) -> Any:
        raise RuntimeError("the checkpoint's weights do not fit its graph")

    async with world(tmp_path, {"p": BUILTIN}) as w:
        monkeypatch.setattr(guard_engines, "_presidio", broken)
        w.write({"p": NAMES, "q": BUILTIN})
        with caplog.at_level(logging.ERROR, logger="farebox.reload"):
            assert not await w.app.state.reloader.check_soon()
        assert "running plans stay" in caplog.text and "do not fit" in caplog.text
        assert "q" not in w.app.state.services.gateway.plans()


async def test_stopping_waits_for_engines_being_loaded(tmp_path: Path) -> None:
    """A thread cannot be cancelled: a stop during a reload waits for the engines it loads,
    so that the stage they are handed to is closed after them, and they with it."""
    settings_path = tmp_path / "farebox.yaml"
    settings_path.write_text(yaml.safe_dump({"plans": {"p": BUILTIN}}))
    entered, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow(_settings: Any) -> None:
        entered.set()
        release.wait()
        done.set()

    reloader = PlanReloader(load_settings(settings_path), lambda _s: None, 0, slow)
    settings_path.write_text(yaml.safe_dump({"plans": {"p": NAMES}}))
    checking = asyncio.create_task(reloader.check_soon())
    await asyncio.to_thread(entered.wait)
    stopping = asyncio.create_task(reloader.stop())
    checking.cancel()
    finished, _ = await asyncio.wait({stopping}, timeout=0.5)
    assert not finished and not done.is_set()  # still loading: the stop waits
    release.set()
    await stopping
    assert done.is_set()
