"""The house's size rule: no module over 600 lines, no function over 60 (decorators included).

Usage: ``python scripts/check_sizes.py [ROOT]`` (ROOT defaults to ``src/farebox`` beside this
script). Every offender is printed as one line, ``path:line name N lines``, and the exit status
is 1; a clean tree prints a one-line summary and exits 0. Standard library only, so CI can run
it before anything is installed.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "src" / "farebox"

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def function_span(node: FunctionNode) -> tuple[int, int]:
    """First line (the first decorator, if any) and the length of a function, in lines."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    last = node.end_lineno or node.lineno
    return first, last - first + 1


def qualified_functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, FunctionNode]]:
    """Every function and method in a tree, named by its dotted path (``Class.method``)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + child.name
            yield name, child
            yield from qualified_functions(child, name + ".")
        elif isinstance(child, ast.ClassDef):
            yield from qualified_functions(child, prefix + child.name + ".")
        else:
            yield from qualified_functions(child, prefix)


def offenders(path: Path, shown: str) -> list[str]:
    """The lines to print for one module: itself if too long, then each function too long."""
    source = path.read_text(encoding="utf-8")
    found = []
    module_lines = len(source.splitlines())
    if module_lines > MAX_MODULE_LINES:
        found.append(f"{shown}:1 <module> {module_lines} lines")
    for name, node in qualified_functions(ast.parse(source, filename=str(path))):
        first, length = function_span(node)
        if length > MAX_FUNCTION_LINES:
            found.append(f"{shown}:{first} {name} {length} lines")
    return found


def shown_path(path: Path) -> str:
    """The path as printed: relative to the working directory when it lies below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def check(root: Path) -> tuple[list[str], int]:
    """All offenders under ``root`` and the number of modules read."""
    modules = sorted(root.rglob("*.py"))
    found = []
    for path in modules:
        found.extend(offenders(path, shown_path(path)))
    return found, len(modules)


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else DEFAULT_ROOT
    found, count = check(root)
    for line in found:
        print(line)
    if found:
        return 1
    print(
        f"sizes ok: {count} modules under {root.name}, none over {MAX_MODULE_LINES} lines, "
        f"no function over {MAX_FUNCTION_LINES}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
