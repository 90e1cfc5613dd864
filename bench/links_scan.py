"""``python -m bench.links_scan``: what restore's link check (``guardrails.links.in_link``)
costs on adversarial text, in process.

1. One placeholder after a 2048-character window (``links.WINDOW``) built from each token
   the scanner reacts to, alone, after a space, after 16 open reference definitions, and
   mixed at random (seeded): the worst time per placeholder.
2. Whole answers, restored at once and streamed in 4-character deltas: the review's 147 KB
   ``('\\ ' * 20 + '<EMAIL_1>') * 3000``, and answers that keep an ``<...>`` destination
   open (the state carried over the whole answer) or every token at once.

Run it against another checkout with ``PYTHONPATH=that/src`` to compare.
"""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Callable

from farebox.core.guardrails import Hit
from farebox.guardrails.links import WINDOW, in_link
from farebox.guardrails.placeholders import Redactor

TOKENS = ["](", "]:", "<", ">", "\\", "(", ")", "[", '"', "'", "=", " ", "\n", "%", "://",
          "\\ ", "] (", "](<", "]: <", "href=", "src", "data", "url(", "<A_1", "\r\n", "\n\f",
          "www.", "a.bc/", "\\\t", "[a]:x "]  # fmt: skip
PH = "<EMAIL_1>"


def _timed(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def windows() -> dict[str, str]:
    out = {}
    for tok in TOKENS:
        run = (tok * (WINDOW // len(tok) + 1))[:WINDOW]
        out[repr(tok)] = run
        out[repr(tok) + " after a space"] = "a " + run[: WINDOW - 2]
        out[repr(tok) + " after 16 refdefs"] = ("[a]:x " * 16 + run)[:WINDOW]
        out[repr(tok) + " after 16 open ](x"] = ("[a](x " * 16 + run)[:WINDOW]
        out[repr(tok) + " in a JSON string"] = '"' + run.replace("\\", "\\\\")[: WINDOW - 1]
    rng = random.Random(7)
    for i in range(40):
        text = "".join(rng.choice(TOKENS) for _ in range(WINDOW))
        out[f"random mix {i}"] = text[:WINDOW]
    return out


def _check() -> Callable[[str, bool], bool]:
    """``in_link`` as restore calls it: the ``<...>`` state carried along, not reread."""
    if "angle" in inspect.signature(in_link).parameters:
        return lambda w, j: in_link(w, j, False)  # type: ignore[call-arg]
    return in_link  # an older checkout: no state


def per_placeholder() -> None:
    worst: list[tuple[float, str]] = []
    check = _check()
    for name, window in windows().items():
        json = name.endswith("JSON string")
        worst.append((_timed(lambda w=window, j=json: check(w, j), 5), name))  # type: ignore[misc]
    worst.sort(reverse=True)
    print("in_link on a 2048-character window, worst five (ms per placeholder):")
    for dt, name in worst[:5]:
        print(f"  {dt * 1000:8.3f}  {name}")
    print(f"  median {sorted(w[0] for w in worst)[len(worst) // 2] * 1000:.3f} ms")


def answers() -> None:
    r = Redactor()
    r.redact("alice@corp.com", [Hit("pii", "EMAIL_ADDRESS", 1.0, 0, 14)])
    rng = random.Random(3)
    cases = {
        "review: ('\\\\ '*20 + ph)*3000": ("\\ " * 20 + PH) * 3000,
        "16 refdefs + '\\\\ '*200 + ph, x300": ("[a]:x " * 16 + "\\ " * 200 + PH) * 300,
        "open <dest, 'a\\\\<' runs + ph": "[a](<x " + ("a\\< " * 10 + PH) * 3000,
        "every token, random, 150 KB": "".join(rng.choice([*TOKENS, PH]) for _ in range(60000)),
        "prose, one line, 150 KB": ("The quarterly report covers revenue. " * 4 + PH) * 1000,
    }
    print("whole answers (s): restored at once / streamed in 4-character deltas")
    for name, text in cases.items():
        t0 = time.perf_counter()
        out, kept = r.restored(text, links=False)
        whole = time.perf_counter() - t0
        s = r.streaming(links=False)
        t0 = time.perf_counter()
        streamed = "".join(s.feed(text[i : i + 4]) for i in range(0, len(text), 4)) + s.flush()
        stream = time.perf_counter() - t0
        same = streamed == out and s.kept == kept
        print(f"  {name:38s} {len(text) // 1000:4d} KB  {whole:7.3f} / {stream:7.3f}"
              f"  kept {kept}/{text.count(PH)}  same={same}")  # fmt: skip


if __name__ == "__main__":
    per_placeholder()
    answers()
