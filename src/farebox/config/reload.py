"""Plans change at run time: the config file is watched, and its plans (models allowed,
policy, budgets, rate limits, pricing) are applied without a restart, in every worker.

Each process polls the file's size and modification time (one ``stat`` every
``server.reload_interval_s``). A changed file is parsed in full; if it is invalid the old
plans stay and the error is logged. Sections other than ``plans`` and ``default_plan``
(providers, models, stores, server) still need a restart; a change to them is logged.
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
        self, settings: Settings, apply: Callable[[Settings], None], interval_s: float
    ) -> None:
        self._path = Path(settings.source)
        self._current = settings
        self._apply = apply
        self._interval = interval_s
        self._stamp = _stamp(self._path)
        self._task: asyncio.Task[None] | None = None

    def check(self) -> bool:
        """Apply the file if it changed since the last look; True when plans were applied."""
        stamp = _stamp(self._path)
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            settings = load_settings(self._path)
        except ConfigError as exc:
            log.error("config change ignored, the running plans stay: %s", exc.message)
            return False
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

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.check()
            except Exception:
                log.exception("config reload failed")
