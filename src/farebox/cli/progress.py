"""Progress bars for the CLI's long commands (export replays, ``simulate``, the demo's
seeding): a ``rich`` bar on stderr when stderr is a terminal (see ``cli.terminal``), and
nothing at all otherwise, so piped and captured output is what it always was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypedDict, Unpack

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from farebox.cli.terminal import console, is_terminal


class BarChange(TypedDict, total=False):
    """What ``Bar.update`` may set: how far it is, how far it goes, what it says."""

    completed: float | None
    total: float | None
    description: str | None


class Bar:
    """A progress bar's handle. This base shows nothing (off a terminal)."""

    shown = False

    def advance(self, amount: float = 1) -> None:
        """Count ``amount`` more steps done."""

    def update(self, **change: Unpack[BarChange]) -> None:
        """Set how far it is, how far it goes, or what it says."""


class _RichBar(Bar):
    shown = True

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task, amount)

    def update(self, **change: Unpack[BarChange]) -> None:
        self._progress.update(self._task, **change)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None = None) -> Iterator[Bar]:
    """A bar for the ``with`` block: shown on a terminal, silent elsewhere. ``total`` None:
    an open-ended task (a spinner and a count)."""
    if not is_terminal(err=True):
        yield Bar()
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console(err=True), transient=False) as progress:
        yield _RichBar(progress, progress.add_task(description, total=total))
