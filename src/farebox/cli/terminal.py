"""Whether the CLI talks to a person: a terminal gets ``rich`` tables and progress bars, a
pipe or a file gets the plain output scripts rely on (and ``--json`` is always plain).

The answer is the stream's ``isatty()``, read when a command prints. ``Terminal`` is the seam
to decide otherwise: pass one as the root context's object, e.g.
``CliRunner().invoke(main, args, obj=Terminal(force=True, width=160))``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import IO

import click
from rich.console import Console


@dataclass(frozen=True, slots=True)
class Terminal:
    """How to print: ``force`` True or False overrides the stream's ``isatty()`` (None: ask
    the stream); ``width`` and ``color`` override what rich detects."""

    force: bool | None = None
    width: int | None = None
    color: bool = True


def terminal() -> Terminal:
    """The ``Terminal`` the running command was given, or the default (ask the stream)."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(Terminal) if ctx is not None else None
    return found if found is not None else Terminal()


def _stream(err: bool) -> IO[str]:
    return sys.stderr if err else sys.stdout


def is_terminal(err: bool = False) -> bool:
    """Whether stdout (or stderr, ``err``) goes to a person."""
    chosen = terminal()
    if chosen.force is not None:
        return chosen.force
    stream = _stream(err)
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def console(err: bool = False) -> Console:
    """A rich console on stdout (or stderr) as the command sees it now."""
    chosen = terminal()
    return Console(
        file=_stream(err),
        force_terminal=chosen.force,
        width=chosen.width,
        no_color=not chosen.color,
        highlight=False,
        soft_wrap=False,
    )
