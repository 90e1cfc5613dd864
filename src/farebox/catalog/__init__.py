"""The shipped, dated price catalog: ``prices.json`` (price per token, model family and kind
of every known model) and ``load_catalog``, which parses it into ``core.pricing.Catalog``. It
may import only errors and core.
"""

from __future__ import annotations

import json
from importlib import resources

from farebox.core.pricing import Catalog, parse_catalog


def load_catalog() -> Catalog:
    """Read ``prices.json`` from the package."""
    text = resources.files(__package__).joinpath("prices.json").read_text(encoding="utf-8")
    return parse_catalog(json.loads(text))
