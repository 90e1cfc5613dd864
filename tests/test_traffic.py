"""``farebox demo --traffic``'s driver against a real server: what the simulated tenants were
charged, as seen in response headers, equals the ledger exactly, tenant by tenant."""

from __future__ import annotations

import asyncio
from pathlib import Path

from farebox.demo.drive import Profile, drive
from tests.e2e import create_tenant_key, db_path, ledger_rows, serve, write_config


async def test_traffic_costs_match_the_ledger(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with serve(config, cwd=tmp_path) as server:
        keys = {t: create_tenant_key(server.base_url, t, "pro") for t in ("a", "b")}
        profiles = [
            Profile("a", keys["a"], 40.0, ("gpt-4o", "gpt-4o-mini"), ("chat", "search")),
            Profile("b", keys["b"], 40.0, ("claude-sonnet-4-5", "text-embedding-3-small")),
        ]
        stop = asyncio.Event()
        reports: list[str] = []

        def report(line: str) -> None:
            reports.append(line)
            if len(reports) >= 3:
                stop.set()

        tallies = await asyncio.wait_for(drive(server.base_url, profiles, stop, report, 0.3), 30)
    assert reports[-1].startswith("traffic  a: ")
    for tenant, tally in tallies.items():
        rows = ledger_rows(db_path(tmp_path), "tenant_id = ?", (tenant,))
        assert tally.requests > 0 and tally.errors == 0
        assert tally.by_status == {200: tally.requests}
        assert len(rows) == tally.requests
        streamed = [r for r in rows if r["stream"]]
        # a stream's cost is not in a header; every other request's header matches the ledger
        assert tally.cost == sum(r["cost"] for r in rows if not r["stream"])
        assert all(r["status"] == "ok" for r in rows)
        assert {r["feature"] for r in rows} <= {"chat", "search"}
        assert len(streamed) < len(rows)
