"""Plans change at run time: the config file is watched, and its plans (models allowed,
policy, budgets, rate limits, pricing) are applied without a restart, in every worker.

Each process polls the file's size and modification time (one ``stat`` every
``server.reload_interval_s``). A changed file is parsed in full; if it is invalid the old
plans stay and the error is logged. Sections other than ``plans`` and ``default_plan``
(providers, models, stores, server) still need a restart; a change to them is logged.

Before new plans apply, ``prepare`` (when given) readies what they need and the process lacks:
the guardrail engines a plan newly asks for (presidio, the injection classifier), loaded in a
worker thread so requests keep flowing. A ``ConfigError`` from it (a missing extra) keeps the
old plans, like an invalid file.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from farebox.config.settings import FileConfig, Settings, load_settings
from farebox.errors import ConfigError

log = logging.getLogger("farebox.reload")  # the name operators filter on
LIVE_SECTIONS = frozenset({"plans", "default_plan"})


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _restart_needed(old: FileConfig, new: FileConfig) -> list[str]:
    before, after = old.model_dump(), new.model_dump()
    return sorted(k for k in after if k not in LIVE_SECTIONS and before.get(k) != after.get(k))


class PlanReloader:
    def __init__(
        self,
        settings: Settings,
        apply: Callable[[Settings], None],
        interval_s: float,
        prepare: Callable[[Settings], None] | None = None,  # blocking: run in a thread
    ) -> None:
        self._path = Path(settings.source)
        self._current = settings
        self._apply = apply
        self._prepare = prepare
        self._preparing: asyncio.Future[bool] | None = None  # its thread, while one runs
        self._interval = interval_s
        self._stamp = _stamp(self._path)
        self._task: asyncio.Task[None] | None = None

    def check(self) -> bool:
        """Apply the file if it changed since the last look; True when plans were applied
        (``prepare`` runs here, in the caller's thread: ``check_soon`` runs it in another)."""
        settings = self._changed()
        if settings is None or not self._prepared(settings):
            return False
        return self._applied(settings)

    async def check_soon(self) -> bool:
        """``check``, with ``prepare`` in a worker thread: the event loop keeps serving."""
        settings = self._changed()
        if settings is None:
            return False
        if self._prepare is not None:
            loop = asyncio.get_running_loop()
            self._preparing = loop.run_in_executor(None, self._prepared, settings)
            # shielded: a stop while it runs waits for the thread (``stop``), so the engines
            # it loads are handed over before they are closed, never after
            if not await asyncio.shield(self._preparing):
                return False
        return self._applied(settings)

    def _changed(self) -> Settings | None:
        """The file's new settings, when it changed and parses; None otherwise."""
        stamp = _stamp(self._path)
        if stamp is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            return load_settings(self._path)
        except ConfigError as exc:
            log.error("config change ignored, the running plans stay: %s", exc.message)
            return None

    def _prepared(self, settings: Settings) -> bool:
        if self._prepare is None:
            return True
        try:
            self._prepare(settings)
        except ConfigError as exc:
            log.error("config change ignored, the running plans stay: %s", exc.message)
            return False
        except Exception:  # a model that fails to load in its own way (torch, spaCy)
            log.exception("config change ignored, the running plans stay: preparing it failed")
            return False
        return True

    def _applied(self, settings: Settings) -> bool:
        stale = _restart_needed(self._current.file, settings.file)
        if stale:
            log.warning("config sections %s changed: they apply after a restart", stale)
        self._apply(settings)
        self._current = settings
        log.info("plans reloaded from %s", self._path)
        return True

    def start(self) -> None:
        if self._interval > 0 and self._stamp is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._preparing is not None:  # a thread cannot be cancelled: let it finish
            await asyncio.gather(self._preparing, return_exceptions=True)
            self._preparing = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_soon()
            except Exception:
                log.exception("config reload failed")
