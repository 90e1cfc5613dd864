"""Issue 11, acceptance 7: reports at scale, over HTTP. Loads ``--tenants`` (2,000) tenants
and ``--entries`` (5,000,000) ledger entries (``bench.report_data``: Zipf-like tenants, from
the first of last month to now, 5% errors, tags) into SQLite, or with ``--backend postgres``
into a PostgreSQL database of its own (dropped at the end), starts a real ``farebox serve`` on
it and times, best of ``--repeat`` (5) after a warm-up:

(a) the dashboard (signed in as the admin): the overview, the biggest tenant's view, the
    request log filtered by that tenant and by a tag;
(b) the top spenders of last month (top 10 by cost, top 10% by revenue);
(c) last month's series by day grouped by model, and by month grouped by tenant (a series
answers at most 20,000 points: 30 days x 2,000 tenants would be refused with a 400);
(d) last month's margins and reconciliation.

(a) and (b) PASS under ``--budget-ms`` (500). Prints a table; writes
``bench/results/report_scale-<backend>.json``; exits 1 on a FAIL. Not a test.

```
.venv/bin/python -m bench.report_scale --entries 20000            # a quick look
.venv/bin/python -m bench.report_scale                            # 5M entries on SQLite
.venv/bin/python -m bench.report_scale --db /tmp/big.db           # keep the file; again: reuse it
.venv/bin/python -m bench.report_scale --backend postgres         # 127.0.0.1:5432 and Redis
```
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import secrets
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from bench import fleet_services
from bench.fleet_services import postgres_database
from bench.gateway import GatewayError
from bench.report_data import (
    HEAVY_TENANT,
    TEAMS,
    PreloadedGateway,
    Shape,
    bulk_load,
    drop_redis_prefix,
    log,
    month_range,
    postgres_store,
    sqlite_store,
    stores_yaml,
)

RESULTS = Path(__file__).parent / "results"
UNUSED_UPSTREAM = "http://127.0.0.1:9/v1"  # no traffic here: never called


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.report_scale", description=__doc__)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--tenants", type=int, default=2_000, help="tenants (2,000)")
    p.add_argument("--entries", type=int, default=5_000_000, help="ledger entries (5,000,000)")
    p.add_argument("--batch", type=int, default=50_000, help="entries per transaction (50,000)")
    p.add_argument("--db", help="SQLite file, kept (loaded when new; reused when loaded)")
    p.add_argument("--postgres-url", help="a PostgreSQL database to load (or reuse), kept")
    p.add_argument("--keep-db", action="store_true", help="keep the PostgreSQL database made")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis, for PostgreSQL")
    p.add_argument("--repeat", type=int, default=5, help="timed runs after the warm-up (5)")
    p.add_argument("--budget-ms", type=float, default=500.0, help="(a), (b) PASS under (500)")
    p.add_argument("--output", help="JSON results (bench/results/report_scale-<backend>.json)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the gateway's dir and log")
    return p


@dataclasses.dataclass
class Loaded:
    shape: Shape
    seconds: float
    check: list[str]
    reused: bool = False  # loaded by an earlier run (its seconds and check are that run's)


def sidecar(db: Path | str) -> Path:
    """Where a loaded database's shape is kept: beside a SQLite file, or in the temp dir for
    a PostgreSQL database (by its name)."""
    if isinstance(db, Path):
        return db.with_name(db.name + ".bench.json")
    return Path(tempfile.gettempdir()) / f"farebox-scale-{db.rsplit('/', 1)[1]}.bench.json"


def load_or_reuse(
    opts: argparse.Namespace, db: Path | str, shape: Shape, fresh: bool, batch: int
) -> Loaded:
    """Load ``db``, or reuse it when a run loaded it before (its shape in ``sidecar``)."""
    if sidecar(db).exists():
        saved = json.loads(sidecar(db).read_text())
        log(f"reusing {db} ({saved['shape']['entries']:,} entries)")
        return Loaded(Shape(**saved["shape"]), saved["seconds"], saved["check"], reused=True)
    if not fresh:
        raise SystemExit(f"{db} exists but was not loaded by this script: remove it")
    log(f"loading {db}")

    def open_store() -> Awaitable[Any]:
        return sqlite_store(db) if isinstance(db, Path) else postgres_store(db)

    seconds, check = asyncio.run(bulk_load(open_store, shape, batch, log))
    if isinstance(db, Path) or opts.keep_db or opts.postgres_url:  # kept: reusable
        doc = {"shape": dataclasses.asdict(shape), "seconds": seconds, "check": check}
        sidecar(db).write_text(json.dumps(doc))
    return Loaded(shape, seconds, check)


class Client:
    """Blocking HTTP/1.1 on one kept-alive connection; the dashboard's cookie once signed in."""

    def __init__(self, port: int, admin_key: str) -> None:
        self.port, self.admin_key = port, admin_key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.cookie = ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        return resp.status, resp.read(), resp

    def sign_in(self) -> None:
        """POST the admin key to the sign-in form, from the same origin, and keep the cookie."""
        form = urllib.parse.urlencode({"key": self.admin_key}).encode()
        origin = f"http://127.0.0.1:{self.port}"
        status, _, resp = self.request("POST", "/dashboard/signin", form, {
            "Content-Type": "application/x-www-form-urlencoded", "Origin": origin})  # fmt: skip
        cookie = resp.getheader("set-cookie") or ""
        if status != 303 or not cookie:
            raise SystemExit(f"dashboard sign-in: HTTP {status}, cookie {bool(cookie)}")
        self.cookie = cookie.split(";", 1)[0]

    def get(self, path: str) -> tuple[int, int, float]:
        """Status, body bytes, ms."""
        headers = {"Cookie": self.cookie} if path.startswith("/dashboard") else {
            "Authorization": f"Bearer {self.admin_key}"}  # fmt: skip
        began = time.perf_counter()
        status, body, _ = self.request("GET", path, headers=headers)
        return status, len(body), (time.perf_counter() - began) * 1000


def targets(month: str, start: float, end: float) -> list[tuple[str, str, str]]:
    """(group, name, path): what is timed."""
    span = f"start={start:.0f}&end={end:.0f}"
    return [
        ("a", "dashboard overview", "/dashboard"),
        ("a", f"dashboard tenant view ({HEAVY_TENANT})", f"/dashboard/tenants/{HEAVY_TENANT}"),
        ("a", "dashboard request log, tenant filter", f"/dashboard/requests?tenant={HEAVY_TENANT}"),
        ("a", "dashboard request log, tag filter", f"/dashboard/requests?tag=team%3D{TEAMS[7]}"),
        ("b", f"top spenders {month}, top 10 by cost",
         f"/admin/v1/top-spenders?{span}&by=cost&n=10"),
        ("b", f"top spenders {month}, top 10% by revenue",
         f"/admin/v1/top-spenders?{span}&by=revenue&top_percent=10"),
        ("c", f"series {month} by day, by model",
         f"/admin/v1/series?{span}&bucket=day&group_by=model"),
        ("c", f"series {month} by month, by tenant",
         f"/admin/v1/series?{span}&bucket=month&group_by=tenant"),
        ("d", f"margins {month}", f"/admin/v1/margins?month={month}"),
        ("d", f"reconciliation {month}", f"/admin/v1/reconciliation?month={month}"),
    ]  # fmt: skip


def time_all(client: Client, month: str, start: float, end: float, repeat: int,
             budget_ms: float) -> list[dict[str, Any]]:  # fmt: skip
    client.sign_in()
    rows = []
    for group, name, path in targets(month, start, end):
        status, size, warm = client.get(path)  # the warm-up
        runs = [client.get(path) for _ in range(repeat)]
        statuses = {status} | {r[0] for r in runs}
        best = min(r[2] for r in runs)
        gated = group in ("a", "b")
        ok = statuses == {200}
        verdict = ("PASS" if ok and best < budget_ms else "FAIL") if gated else "-"
        rows.append({"group": group, "name": name, "path": path, "statuses": sorted(statuses),
                     "bytes": size, "warmup_ms": round(warm, 1), "best_ms": round(best, 1),
                     "median_ms": round(statistics.median(r[2] for r in runs), 1),
                     "runs_ms": [round(r[2], 1) for r in runs], "verdict": verdict if ok else
                     "FAIL (HTTP " + ",".join(map(str, sorted(statuses))) + ")"})  # fmt: skip
        log(f"  {name}: best {best:,.1f} ms")
    return rows


def render(doc: dict[str, Any]) -> str:
    load = f"{doc['load_s']:,.1f} s" + (
        " (an earlier run's; file reused)" if doc["load_reused"] else ""
    )
    lines = [f"\n{doc['backend']}: {doc['tenants']:,} tenants, {doc['entries']:,} entries "
             f"({doc['first_day']} to now), load {load}",
             *(f"  {line}" for line in doc["check"]),
             f"  {'':2} {'what':<44} {'warm-up':>9} {'best':>9} {'median':>9}  "
             f"verdict (a, b: < {doc['budget_ms']:.0f} ms)"]  # fmt: skip
    for r in doc["timings"]:
        lines.append(f"  ({r['group']}) {r['name']:<44} {r['warmup_ms']:>9,.1f} "
                     f"{r['best_ms']:>9,.1f} {r['median_ms']:>9,.1f}  {r['verdict']}")  # fmt: skip
    return "\n".join(lines)


def postgres_url(opts: argparse.Namespace, stack: contextlib.ExitStack) -> str:
    """A new database of the bench's own: dropped at the end, unless ``--keep-db``."""
    if not opts.keep_db:
        return stack.enter_context(postgres_database())
    user, name = fleet_services._pg_user(), "farebox_bench_" + secrets.token_hex(6)
    asyncio.run(fleet_services._admin(user, f'CREATE DATABASE "{name}"'))
    url = f"postgresql://{user}@{fleet_services.PG_HOST}:{fleet_services.PG_PORT}/{name}"
    log(f"keeping {url}: run again with --postgres-url {url}; drop it by hand after")
    return url


def measure(opts: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    now = time.time()
    month, start, end = month_range(None)  # last month: the data run from its first day
    shape = Shape(opts.tenants, opts.entries, start, now)
    if opts.backend == "sqlite":
        if opts.db:
            db = Path(opts.db)
        else:  # a temp file, removed at the end (``--db F`` keeps one)
            db = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="farebox-scale-")))
            db = db / "s.db"
        loaded = load_or_reuse(opts, db, shape, not db.exists(), opts.batch)
        stores = stores_yaml(db, None, opts.redis)
    else:
        url = opts.postgres_url or postgres_url(opts, stack)
        loaded = load_or_reuse(opts, url, shape, not opts.postgres_url, min(opts.batch, 20_000))
        prefix = "fbx-bench-" + secrets.token_hex(6)
        stores = stores_yaml(Path(), url, opts.redis, prefix)
        stack.callback(lambda: drop_redis_prefix(opts.redis, prefix))
    gw = PreloadedGateway(lambda _: None, lambda _: stores, UNUSED_UPSTREAM, "unused",
                          keep_dir=opts.keep_tmp)  # fmt: skip
    stack.callback(gw.stop)
    try:
        gw.start()
    except GatewayError:
        log(gw.log_tail())
        raise
    log(f"gateway on {gw.url} (log {gw.log_path}); timing")
    timings = time_all(Client(gw.port, gw.admin_key), month, start, end, opts.repeat,
                       opts.budget_ms)  # fmt: skip
    first_day = dt.datetime.fromtimestamp(loaded.shape.start, dt.UTC)
    return {"backend": opts.backend, "tenants": loaded.shape.tenants,
            "entries": loaded.shape.entries, "first_day": f"{first_day:%Y-%m-%d}", "month": month,
            "load_s": round(loaded.seconds, 1), "load_reused": loaded.reused,
            "check": loaded.check, "budget_ms": opts.budget_ms, "repeat": opts.repeat,
            "timings": timings}  # fmt: skip


def main() -> int:
    opts = parser().parse_args()
    with contextlib.ExitStack() as stack:
        doc = measure(opts, stack)
    print(render(doc))
    path = Path(opts.output) if opts.output else RESULTS / f"report_scale-{opts.backend}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    print(f"\nresults written to {path}")
    bad = any(r["verdict"].startswith("FAIL") for r in doc["timings"])
    return 1 if bad or any(not c.startswith(("OK", "ledger")) for c in doc["check"]) else 0


if __name__ == "__main__":
    sys.exit(main())
