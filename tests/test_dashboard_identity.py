"""Issue [14] acceptance 4, the dashboard's half in process: a tenant_admin manages its own
tenant's workspaces and keys on ``/dashboard/tenants/{id}/workspaces`` (and nothing of another
tenant's), each role may post exactly what the matching admin API operation lets it do, every
dashboard mutation leaves exactly one audit record naming the session's actor, a new key's
secret is shown once and never recorded, and the owner's ``/dashboard/audit`` shows the log
with its chain check."""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.api.dashboard.audit_page import check_chain
from farebox.identity.audit import AuditLog
from tests.roles_world import CALLERS, A, B, World, cookie_of, csrf_of, dash, make_world, serial

WS_ACTION = "POST /dashboard/tenants/{tenant_id}/workspaces"
KEY_ACTION = "POST /dashboard/tenants/{tenant_id}/keys"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("dash-identity"))


@pytest.fixture(scope="module")
def sessions() -> dict[str, Session]:
    """Signed-in sessions by caller, kept across a property test's examples."""
    return {}


def records(world: World, **query: str) -> list[dict[str, Any]]:
    r = world.call("owner", "GET", "/admin/v1/audit", params={"limit": "1000", **query})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def head(world: World) -> int:
    found = records(world, limit="1")
    return int(found[0]["seq"]) if found else 0


def admin_key_id(world: World, role: str) -> str:
    r = world.call("owner", "GET", "/admin/v1/admin-keys")
    assert r.status_code == 200, r.text
    ids = [k["id"] for k in r.json()["data"] if k["role"] == role and k["name"] == role]
    assert len(ids) == 1, ids
    return str(ids[0])


class Session:
    """One signed-in dashboard session that posts forms and checks each leaves one record."""

    def __init__(self, world: World, caller: str) -> None:
        self.world, self.caller = world, caller
        self.cookie = cookie_of(world, caller)
        self.csrf = csrf_of(world, self.cookie) if self.cookie else ""

    def get(self, path: str) -> Any:
        return dash(self.world, "GET", path, self.cookie)

    def post(self, path: str, **form: str) -> tuple[Any, dict[str, Any]]:
        """Post a form; the answer and the one audit record it left."""
        before = head(self.world)
        r = dash(self.world, "POST", path, self.cookie, csrf_token=self.csrf, **form)
        new = [x for x in records(self.world) if x["seq"] > before]
        assert len(new) == 1, (path, r.status_code, new)
        record = new[0]
        assert record["status"] == r.status_code
        return r, record


def test_a_tenant_admin_manages_its_workspaces_and_keys(world: World) -> None:
    me = Session(world, "tenant_admin")
    actor = admin_key_id(world, "tenant_admin")
    page = me.get(f"/dashboard/tenants/{A}/workspaces")
    assert page.status_code == 200 and 'id="new-workspace"' in page.text
    assert f"/dashboard/tenants/{A}/workspaces" in me.get("/dashboard").text  # nav and link
    ws = f"ml-{serial()}"
    r, rec = me.post(f"/dashboard/tenants/{A}/workspaces", id=ws, name="ML team",
                     budget_usd="200")  # fmt: skip
    assert r.status_code == 303, r.text
    assert (rec["actor"], rec["role"], rec["outcome"]) == (actor, "tenant_admin", "ok")
    assert (rec["action"], rec["target"]) == (WS_ACTION, f"workspace:{ws}")
    assert rec["change"]["after"]["budgets"][0]["limit_usd"] == "200"
    assert "csrf_token" not in rec["change"]["request"]
    # the API sees the same workspace, with its monthly budget
    got = world.call("owner", "GET", f"/admin/v1/tenants/{A}/workspaces/{ws}").json()
    assert got["budgets"] == [{"scope": "workspace", "period": "month", "limit_usd": "200",
                               "basis": "cost"}]  # fmt: skip
    page = me.get(f"/dashboard/tenants/{A}/workspaces")
    row = re.search(rf'<tr data-workspace="{ws}">.*?</tr>', page.text, re.S)
    assert row and "$200" in row.group(0)

    r, rec = me.post(f"/dashboard/tenants/{A}/keys", name="ana", workspace=ws,
                     alert_threshold="80", metadata='{"user_email": "ana@acme.test"}')  # fmt: skip
    assert r.status_code == 200, r.text
    secret = re.search(r'data-secret="1">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    key_id = rec["change"]["after"]["id"]
    assert secret.startswith("fbx_") and r.text.count(secret) == 1
    assert (rec["action"], rec["target"], rec["actor"]) == (KEY_ACTION, f"key:{key_id}", actor)
    assert rec["change"]["after"]["workspace"] == ws
    assert rec["change"]["after"]["metadata"] == {"user_email": "ana@acme.test"}
    assert secret not in str(rec) and secret[-8:] not in str(records(world))
    me_page = world.run(world.client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}))
    assert me_page.status_code == 200  # the key works
    page = me.get(f"/dashboard/tenants/{A}/workspaces")
    assert secret not in page.text and key_id in page.text  # never shown again
    row = re.search(rf'<tr data-key="{key_id}">.*?</tr>', page.text, re.S)
    assert row and ws in row.group(0) and "80%" in row.group(0) and "ana@acme.test" in row.group(0)

    # a workspace with a live key cannot be deleted; revoke, then delete
    r, rec = me.post(f"/dashboard/tenants/{A}/workspaces/{ws}/delete")
    assert r.status_code == 409 and rec["outcome"] == "failed"
    r, rec = me.post(f"/dashboard/tenants/{A}/keys/{key_id}/revoke")
    assert r.status_code == 303 and rec["outcome"] == "ok" and rec["target"] == f"key:{key_id}"
    assert rec["change"]["before"]["revoked"] is False and rec["change"]["after"]["revoked"]
    assert world.call("owner", "GET", f"/admin/v1/tenants/{A}/keys").status_code == 200
    gone = world.run(world.client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}))
    assert gone.status_code == 401
    r, rec = me.post(f"/dashboard/tenants/{A}/workspaces/{ws}/delete")
    assert r.status_code == 303 and rec["outcome"] == "ok" and rec["change"]["before"]["id"] == ws
    assert world.call("owner", "GET", f"/admin/v1/tenants/{A}/workspaces/{ws}").status_code == 404


def test_a_tenant_admin_sees_and_touches_nothing_of_another_tenant(world: World) -> None:
    me = Session(world, "tenant_admin")
    made = world.call("owner", "POST", f"/admin/v1/tenants/{B}/workspaces",
                      json={"id": f"secret-{serial()}"}).json()  # fmt: skip
    b_key = world.key_ids[B]
    assert me.get(f"/dashboard/tenants/{B}/workspaces").status_code == 404
    own = me.get(f"/dashboard/tenants/{A}/workspaces").text
    assert b_key not in own and made["id"] not in own
    attempts = [
        (f"/dashboard/tenants/{B}/workspaces", {"id": f"x-{serial()}"}),
        (f"/dashboard/tenants/{B}/workspaces/{made['id']}/delete", {}),
        (f"/dashboard/tenants/{B}/keys", {"name": "x"}),
        (f"/dashboard/tenants/{B}/keys/{b_key}/revoke", {}),
        (f"/dashboard/tenants/{A}/keys/{b_key}/revoke", {}),  # B's key through A's page
        ("/dashboard/tenants/nobody/workspaces", {"id": "x"}),
    ]
    for path, form in attempts:
        r, rec = me.post(path, **form)
        assert r.status_code == 404, (path, r.status_code)
        assert rec["outcome"] == "refused" and rec["change"]["request"] is None, rec
        # the answer a missing key or page gets, naming only what was sent
        masked = r.text.replace(b_key, "key_missing").replace(made["id"], "ws_missing")
        twin, _ = me.post(path.replace(b_key, "key_missing").replace(made["id"], "ws_missing")
                          .replace(f"/{B}/", "/nobody/"), **form)  # fmt: skip
        assert masked == twin.text.replace("/nobody/", f"/{B}/"), path
    # nothing changed at globex
    keys = world.call("owner", "GET", f"/admin/v1/tenants/{B}/keys").json()["data"]
    assert [k["revoked"] for k in keys if k["id"] == b_key] == [False]
    spaces = world.call("owner", "GET", f"/admin/v1/tenants/{B}/workspaces").json()["data"]
    assert made["id"] in {s["id"] for s in spaces} and len(spaces) == 2


@pytest.mark.parametrize("caller", [c for c in CALLERS if c != "anonymous"])
def test_each_role_may_post_what_its_api_operation_allows(world: World, caller: str) -> None:
    """The dashboard's answer to each form is the API's for the same operation: allowed for
    both, 403 for both (a role without ``operate``), or 404 for both (a tenant_admin outside
    its tenant); each attempt leaves one record, refused ones as ``refused``."""
    me = Session(world, caller)
    for tenant in (A, B):
        ws = f"r-{serial()}"
        api = world.call(caller, "POST", f"/admin/v1/tenants/{tenant}/workspaces", json={"id": ws})
        r, rec = me.post(f"/dashboard/tenants/{tenant}/workspaces", id=f"d-{ws}")
        page = me.get(f"/dashboard/tenants/{tenant}/workspaces")
        if api.status_code == 201:
            assert r.status_code == 303 and rec["outcome"] == "ok", (caller, tenant)
            assert 'id="new-workspace"' in page.text and 'id="new-key"' in page.text
        else:
            assert r.status_code == api.status_code, (caller, tenant, r.status_code, api.text)
            assert rec["outcome"] == "refused" and rec["change"]["request"] is None
            if api.status_code == 403:  # may read, not change: the page shows no forms
                assert page.status_code == 200 and 'id="new-workspace"' not in page.text
                assert "Your role cannot" in r.text
        assert rec["role"] == ("owner" if caller == "owner" else caller)


def test_a_form_without_the_token_or_session_is_refused_and_recorded(world: World) -> None:
    me = Session(world, "operator")
    me.csrf = "forged"
    r, rec = me.post(f"/dashboard/tenants/{A}/workspaces", id=f"n-{serial()}")
    assert r.status_code == 403 and rec["outcome"] == "refused"
    assert rec["actor"] == admin_key_id(world, "operator")
    nobody = Session(world, "anonymous")
    r, rec = nobody.post(f"/dashboard/tenants/{A}/keys", name="x")
    assert r.status_code == 403 and (rec["actor"], rec["outcome"]) == ("anonymous", "refused")
    me = Session(world, "operator")
    r, rec = me.post(f"/dashboard/tenants/{A}/workspaces", id="bad id!")
    assert r.status_code == 400 and rec["outcome"] == "failed" and "id" in r.text
    r, rec = me.post(f"/dashboard/tenants/{A}/workspaces", id=f"b-{serial()}", budget_usd="-3")
    assert r.status_code == 400 and "monthly budget" in r.text
    r, rec = me.post(f"/dashboard/tenants/{A}/keys", metadata="[1]")
    assert r.status_code == 400 and "JSON object" in r.text
    for bad in ("101", "²", "0", "eighty", "1e2"):
        r, rec = me.post(f"/dashboard/tenants/{A}/keys", alert_threshold=bad)
        assert r.status_code == 400 and "alert_threshold" in r.text, bad


def test_the_older_dashboard_mutations_are_recorded_once(world: World) -> None:
    operator = Session(world, "operator")
    assert world.call("owner", "POST", f"/admin/v1/tenants/{A}/pause", json={}).status_code == 200
    r, rec = operator.post(f"/dashboard/tenants/{A}/resume")
    assert r.status_code == 303, r.text
    assert (rec["action"], rec["target"], rec["outcome"]) == (
        "POST /dashboard/tenants/{tenant_id}/resume", f"tenant:{A}", "ok")  # fmt: skip
    assert rec["actor"] == admin_key_id(world, "operator")
    r, rec = operator.post("/dashboard/anomalies/inc_missing/resolve")
    assert r.status_code == 404 and rec["outcome"] == "failed"
    assert rec["target"] == "incident:inc_missing"
    viewer = Session(world, "viewer")
    r, rec = viewer.post("/dashboard/sessions/revoke-all")
    assert r.status_code == 403 and rec["target"] == "sessions:all" and rec["role"] == "viewer"


def test_the_owner_reads_the_audit_page(world: World) -> None:
    ta = Session(world, "tenant_admin")
    ws = f"seen-{serial()}"
    ta.post(f"/dashboard/tenants/{A}/workspaces", id=ws)
    owner = Session(world, "owner")
    page = owner.get("/dashboard/audit")
    assert page.status_code == 200 and 'data-chain="intact"' in page.text
    assert "All " in page.text and "records verified" in page.text
    assert 'id="nav-audit"' in page.text
    actor = admin_key_id(world, "tenant_admin")
    row = re.search(rf'<tr data-seq="\d+" data-actor="{actor}" data-action="{WS_ACTION}" '
                    rf'data-target="workspace:{ws}">', page.text)  # fmt: skip
    assert row, page.text[:2000]
    # newest first
    seqs = [int(s) for s in re.findall(r'<tr data-seq="(\d+)"', page.text)]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) == 50
    filtered = owner.get(f"/dashboard/audit?actor={actor}&target=workspace:{ws}")
    assert re.findall(r'data-actor="([^"]+)"', filtered.text) == [actor]
    older = re.search(r'id="older" href="/dashboard/audit\?([^"]+)"', page.text)
    assert older and f"cursor={seqs[-1]}" in older.group(1)
    nxt = owner.get("/dashboard/audit?" + older.group(1).replace("&amp;", "&"))
    more = [int(s) for s in re.findall(r'<tr data-seq="(\d+)"', nxt.text)]
    assert more and max(more) < seqs[-1]
    for bad in ("x", "²", "-1", "9" * 30):
        assert owner.get(f"/dashboard/audit?cursor={bad}").status_code == 400, bad
    for caller in ("operator", "billing", "viewer", "tenant_admin"):
        other = Session(world, caller)
        r = other.get("/dashboard/audit")
        assert r.status_code == 404 and actor not in r.text, caller
        assert 'id="nav-audit"' not in other.get("/dashboard").text


def test_the_banner_bounds_its_check_and_names_a_broken_row(tmp_path: Path) -> None:
    made = make_world(tmp_path)
    world = next(made)
    try:
        owner = Session(world, "owner")
        for _ in range(3):
            owner.post(f"/dashboard/tenants/{A}/workspaces", id=f"w-{serial()}")
        log = AuditLog(world.app.state.services.store.audit, lambda: 0.0)
        total = head(world)
        whole = world.run(check_chain(log))
        assert (whole.whole, whole.checked, whole.broken) == (True, total, None)
        tail = world.run(check_chain(log, limit=2))
        assert (tail.whole, tail.checked, tail.first, tail.last) == (False, 2, total - 1, total)
        with sqlite3.connect(tmp_path / "farebox.db") as db:
            db.execute("UPDATE audit_log SET target = 'edited' WHERE seq = 2")
        page = owner.get("/dashboard/audit")
        assert 'data-chain="broken" data-seq="2"' in page.text
        assert "Chain broken at seq 2" in page.text
        assert world.run(check_chain(log, limit=2)).broken is None  # outside the tail checked
    finally:
        made.close()


def test_signed_out_the_pages_send_to_sign_in(world: World) -> None:
    for path in ("/dashboard/audit", f"/dashboard/tenants/{A}/workspaces"):
        r = dash(world, "GET", path, None)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/signin", path


FIELDS = ("id", "name", "budget_usd", "workspace", "alert_threshold", "metadata", "x")
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["200", "-1", "1e999", "NaN", "0", "²", "٣", "80", "101", "default",
                     '{"a": 1}', "[1]", "{", '{"n": 1e400}', "a" * 70, "$5", "80%"]),
)  # fmt: skip
FORM_PATHS = (
    f"/dashboard/tenants/{A}/workspaces",
    f"/dashboard/tenants/{A}/keys",
    f"/dashboard/tenants/{A}/workspaces/{{x}}/delete",
    f"/dashboard/tenants/{A}/keys/{{x}}/revoke",
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    caller=st.sampled_from(["operator", "tenant_admin", "viewer"]),
    path=st.sampled_from(FORM_PATHS),
    form=st.dictionaries(st.sampled_from(FIELDS), TEXT, max_size=6),
    query=st.dictionaries(st.sampled_from(["actor", "action", "target", "cursor"]), TEXT),
)
def test_any_form_or_filter_is_answered_never_with_a_5xx(
    world: World, sessions: dict[str, Session], caller: str, path: str, form: dict[str, str],
    query: dict[str, str],
) -> None:  # fmt: skip
    """Random form fields (and path segments) on every identity form, random audit filters:
    each answer is a redirect, the created key, or a 4xx naming the problem; each form leaves
    exactly one record."""
    cookies = sessions.get(caller) or sessions.setdefault(caller, Session(world, caller))
    segment = urllib.parse.quote(form.get("x", "") or "x", safe="")
    r, rec = cookies.post(path.replace("{x}", segment), **form)
    assert r.status_code in (200, 303, 400, 403, 404, 409), (path, form, r.status_code)
    assert rec["status"] == r.status_code
    owner = sessions.get("owner") or sessions.setdefault("owner", Session(world, "owner"))
    page = owner.get("/dashboard/audit?" + urllib.parse.urlencode(query))
    assert page.status_code in (200, 400), (query, page.status_code)


def test_a_tenant_key_reads_its_usage_but_manages_nothing(world: World) -> None:
    world.keys["acme-key"] = world.tenant_keys[A]
    me = Session(world, "acme-key")
    assert me.get(f"/dashboard/tenants/{A}/workspaces").status_code == 403
    assert 'id="nav-workspaces"' not in me.get("/dashboard").text
    r, rec = me.post(f"/dashboard/tenants/{A}/workspaces", id=f"t-{serial()}")
    assert r.status_code == 403
    assert (rec["actor"], rec["role"], rec["outcome"]) == (world.key_ids[A], "tenant", "refused")
