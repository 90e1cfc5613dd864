"""Every configuration in ``examples/`` loads as it is, through the real settings loader.

Each file documents the environment it needs at its top, one ``#   NAME=placeholder`` line per
variable; the test sets exactly those (and nothing the machine may have set), so a file that
uses an ``env:NAME`` it does not document fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from farebox.billing.exporter import build_runners
from farebox.config.settings import Settings, load_settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
PLACEHOLDER = re.compile(r"^#\s+([A-Z][A-Z0-9_]*)=(\S+)")
# What the machine running the tests may have set, and a file could silently rely on.
AMBIENT = ("FAREBOX_ADMIN_KEY", "FAREBOX_SECRET", "FAREBOX_DATABASE", "FAREBOX_REDIS")


def placeholders(text: str) -> dict[str, str]:
    """The ``#   NAME=value`` lines of the file's leading comment."""
    found = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if match := PLACEHOLDER.match(line):
            found[match.group(1)] = match.group(2)
    return found


def references(value: object) -> set[str]:
    """Every ``env:NAME`` the document names, as NAME."""
    if isinstance(value, dict):
        return set().union(*(references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(references(v) for v in value))
    if isinstance(value, str) and value.startswith("env:"):
        return {value[len("env:") :]}
    return set()


def test_the_examples_are_there() -> None:
    assert len(FILES) >= 8, [f.name for f in FILES]
    assert (EXAMPLES / "README.md").is_file()


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_an_example_loads_with_its_documented_environment(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = path.read_text(encoding="utf-8")
    env = placeholders(text)
    assert references(yaml.safe_load(text)) <= set(env), "an env: secret without a placeholder"
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(path)
    assert isinstance(settings, Settings)
    assert settings.file.providers, "examples run on the mock provider"
    assert {p.kind for p in settings.file.providers.values()} == {"mock"}
    assert len(build_runners(settings)) == len(settings.file.billing.sinks)
