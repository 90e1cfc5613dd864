"""Properties of the audit chain (``farebox.identity.audit``): masking arbitrary JSON is
deterministic, idempotent and leaves no secret; a record's hash survives the stores' row
encoding; ``verify`` names the record of any single-field edit."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.core.audit import GENESIS, AuditEntry, AuditRecord
from farebox.identity.audit import chain_hash, mask, record_json, record_of, seal, verify
from farebox.stores.audit_rows import record_of as row_record
from farebox.stores.audit_rows import values

KEYS = st.sampled_from(["id", "name", "key", "api_key", "Authorization", "client_secret",
                        "note", "metadata", "budgets", "x-token", "password"])  # fmt: skip
SECRETS = st.builds(lambda p, t: p + t, st.sampled_from(["fbx_", "fbs_", "fba_"]),
                    st.text("abcdefXYZ0123456789_-", min_size=8, max_size=40))  # fmt: skip
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
           | SECRETS)  # fmt: skip
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8),
                                                                inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


def leaves(value: Any, name: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(v, k)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v, name)]
    return [(name, value)]


@given(JSON)
def test_masking_is_deterministic_idempotent_and_leaves_no_secret(value: Any) -> None:
    once = mask(value)
    assert mask(value) == once and mask(once) == once
    orjson.dumps(once, option=orjson.OPT_SORT_KEYS)  # always encodable
    for name, leaf in leaves(once):
        if isinstance(leaf, str) and leaf.startswith(("fbx_", "fbs_", "fba_")):
            assert len(leaf) <= 10  # a display prefix at most
        if (
            name.lower().replace("-", "_")
            in {"key", "api_key", "authorization", "password", "client_secret", "x_token"}
            and leaf is not None
        ):
            assert isinstance(leaf, str) and leaf.startswith("***") and len(leaf) <= 7


def chain(changes: list[Any]) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    for n, change in enumerate(changes):
        entry = AuditEntry("env", "owner", "POST /tenants", f"tenant:t{n}", {"after": change},
                           "127.0.0.1", f"req_{n}", "ok", 201)  # fmt: skip
        out.append(seal(entry, n + 1, out[-1].hash if out else GENESIS, 1_800_000_000.0 + n / 3))
    return out


@given(st.lists(JSON, min_size=1, max_size=6))
def test_hashes_are_deterministic_and_survive_the_row_encoding(changes: list[Any]) -> None:
    records = chain(changes)
    assert chain(changes) == records
    assert verify(records) is None
    through_rows = [row_record(values(r)) for r in records]
    through_json = [record_of(orjson.loads(orjson.dumps(record_json(r)))) for r in records]
    assert verify(through_rows) is None and verify(through_json) is None
    assert [chain_hash(r) for r in through_rows] == [r.hash for r in records]


FIELDS = [f.name for f in dataclasses.fields(AuditRecord)]


@settings(max_examples=200)
@given(st.lists(JSON, min_size=1, max_size=5), st.data())
def test_any_single_field_edit_is_named(changes: list[Any], data: st.DataObject) -> None:
    records = chain(changes)
    i = data.draw(st.integers(0, len(records) - 1))
    field = data.draw(st.sampled_from(FIELDS))
    old = getattr(records[i], field)
    new = data.draw(_other(old))
    edited = [*records[:i], dataclasses.replace(records[i], **{field: new}), *records[i + 1 :]]
    found = verify(edited)
    assert found is not None and found.seq == i + 1, (field, old, new, found)
    if i < len(records) - 1:  # a deleted row (not the last) is named too
        gone = verify(records[:i] + records[i + 1 :])
        assert gone is not None and gone.seq == i + 1


def _other(old: Any) -> st.SearchStrategy[Any]:
    if isinstance(old, bool):
        return st.just(not old)
    if isinstance(old, int):
        return st.integers(-(2**40), 2**40).filter(lambda v: v != old)
    if isinstance(old, float):
        return st.floats(0, 2e9).filter(lambda v: v != old)
    if isinstance(old, str):
        return st.text(max_size=64).filter(lambda v: v != old)
    return JSON.map(lambda v: {"edited": v}).filter(lambda v: v != dict(old))
