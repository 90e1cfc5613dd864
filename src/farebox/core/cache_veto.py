"""THROWAWAY (stage helper): the semantic veto's signature, vetoing nothing; the lead replaces
it with the semantic helper's at merge."""

from __future__ import annotations


def vetoed(cached: str, new: str) -> str | None:
    return None
