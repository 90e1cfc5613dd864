"""The size check CI runs (``scripts/check_sizes.py``): it names every module over 600 lines and
every function over 60 (decorators included), and passes a tree that has neither."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_sizes.py"


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, check=False
    )


def _function(name: str, body_lines: int, decorated: bool = False) -> str:
    head = ["@staticmethod"] if decorated else []
    return "\n".join([*head, f"def {name}() -> None:", *(["    pass"] * body_lines)]) + "\n"


def test_a_long_function_and_a_long_module_fail_naming_them(tmp_path: Path) -> None:
    root = tmp_path / "farebox"
    (root / "wing").mkdir(parents=True)
    (root / "__init__.py").write_text('"""Package."""\n')
    # 1 decorator + 1 def line + 59 body lines: 61 lines, the decorator counted
    (root / "wing" / "long_function.py").write_text(
        "class Holder:\n"
        + "".join(f"    {line}\n" for line in _function("too_long", 59, True).splitlines())
    )
    (root / "long_module.py").write_text("x = 1\n" * 601)
    (root / "fine.py").write_text(_function("just_right", 59))  # 60 lines: allowed
    result = _run(root)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert any(line.endswith("long_function.py:2 Holder.too_long 61 lines") for line in lines), (
        result.stdout
    )
    assert any(line.endswith("long_module.py:1 <module> 601 lines") for line in lines)
    assert "just_right" not in result.stdout


def test_a_clean_tree_passes_with_a_summary(tmp_path: Path) -> None:
    root = tmp_path / "farebox"
    root.mkdir()
    (root / "small.py").write_text(_function("small", 10) + "x = 1\n" * 500)
    result = _run(root)
    assert result.returncode == 0, result.stdout
    assert len(result.stdout.splitlines()) == 1
    assert result.stdout.startswith("sizes ok: 1 modules")


def test_the_ledger_entry_carries_the_token_counts_usage_declares() -> None:
    """One list of token counts (``TOKEN_FIELDS``, from ``Usage``): a ledger entry carries
    each, and they move between the two without loss."""
    import dataclasses

    from farebox.core.records import LedgerEntry
    from farebox.core.usage import TOKEN_FIELDS, Usage, token_counts, usage_of

    assert len(TOKEN_FIELDS) == 6
    entry_fields = {f.name: f for f in dataclasses.fields(LedgerEntry)}
    for name in TOKEN_FIELDS:
        assert entry_fields[name].default == 0
    usage = Usage(*range(1, 7))
    entry = LedgerEntry("r", "t", "k", "/v1/x", "m", "m", "p", "ok", 200, 0.0, 1.0)
    entry = dataclasses.replace(entry, **token_counts(usage))
    assert usage_of(entry) == usage
