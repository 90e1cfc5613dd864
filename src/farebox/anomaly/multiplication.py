"""Account multiplication (issue 15): one client using keys of many free-plan tenants.

A client is the request's IP, and, as a client of its own, the device the SaaS names in
``X-Farebox-Device`` (believed from a trusted proxy or with a service key): a request is
recorded for both, and either crossing the limit opens an incident. The device never
replaces the IP (a client behind a proxy that passes headers on could make one up per
request); a service key's bare IP is never a client (the SaaS's own server).

An IP and a device seen on the same requests are **linked** (``seen_together`` records the
link, both ways, with the sightings). Links de-duplicate: the clients of a group (a client
and those linked to it: one hop) that are over the limit together are claimed all or
nothing, in one transaction, with the group's other clients claimed too when they are free,
so the IP and the device crossing in the same burst open ONE incident and one page;
``detail.clients`` lists the group. Links never widen a pause: what an incident pauses comes
from the clients it claimed that crossed the limit **on their own** (``detail.crossed``:
each one's own sightings), so a device passing once through an office NAT IP where a few
legitimate tenants work does not pause them. An open incident covers its clients
(``detail.clients``) and the clients linked to those it ``crossed``, so a linked client
crossing later on its own (or a device first named later) extends that incident (its own
tenants or keys are paused under it) instead of opening a second one. A client linked only
to a shared client of an incident (a second device passing through the same office IP) is
not covered: crossing on its own, it opens its own incident and is paged, even when the
office IP is claimed by another incident, open or resolved.

- **Recording** (the request path): ``seen`` adds (client, tenant, key) to an in-memory set,
  with the time; only tenants on the configured plans count. A dictionary write.
- **Flushing and checking** (every ``flush_interval_s`` and ``check_interval_s``, in every
  process): the set goes to the store (one row per client, tenant and key, keeping the last
  time); then the store's distinct count over every process and replica names the clients
  seen with more than ``max_tenants`` tenants in ``window_s``. For each, the store's
  ``claim`` lets exactly one process open the incident, once per client and window.
- **The incident** (kind ``account_multiplication``, in the anomaly incidents: metric
  ``account_multiplication``): its tenant is the one the client used last, ``observed`` the
  number of tenants, ``threshold`` the most allowed; ``detail`` names the client, the
  tenants and what was paused. ``pause_tenant`` pauses every tenant the crossing clients
  used in the window, ``pause_key`` every key they used (a JWT caller's synthetic key: its
  tenant),
  ``alert`` nothing. It is paged once, with ``dedup_key``
  ``farebox/account_multiplication/<client>``. Only what is not paused yet is paused, by the
  store's conditional pause (``stores.pausing``: one statement), so an operator's pause
  landing at any moment stays as it is; the pause reason names the incident.
- **While the incident is open** (its claim lasts one window), later rounds pause the tenants
  or keys the client goes on to use. Resolving it resumes what it paused, while the pause
  reason still names it (``AnomalyWatch.resolve``, by the store's conditional resume).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from itertools import permutations

from farebox.anomaly.paging import Pager
from farebox.anomaly.rounds import Rounds
from farebox.anomaly.watch import TARGETS, WatchStore, pause_mark
from farebox.config.anomaly import MultiplicationConfig
from farebox.core.anomaly import Incident
from farebox.core.keys import JWT_KEY_PREFIX
from farebox.notify.formats import summary
from farebox.stores.multiplication import LINK, Sighting, SightingStore
from farebox.stores.pausing import What, pauses_of

log = logging.getLogger("farebox.anomaly")
KIND = "account_multiplication"


class MultiplicationWatch:
    def __init__(
        self,
        store: WatchStore,
        sightings: SightingStore,
        cfg: MultiplicationConfig,
        pager: Pager,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
        flush_interval_s: float = 5.0,
        check_interval_s: float = 60.0,
    ) -> None:
        self._store = store
        self._sightings = sightings
        self._pager = pager
        self._clock = clock
        self._flush_s = flush_interval_s
        self._check_s = check_interval_s
        self._pending: dict[tuple[str, str, str], float] = {}
        self._rounds = Rounds(
            self.check,
            self.flush,
            check_s=check_interval_s,
            flush_s=flush_interval_s,
            what="account multiplication",
        )
        self._last: float | None = None  # when this process last checked
        self._cfg = cfg
        self._plans = frozenset(cfg.plans)
        self._on = enabled and cfg.enabled

    @property
    def enabled(self) -> bool:
        return self._on

    def reload(self, cfg: MultiplicationConfig, enabled: bool = True) -> None:
        self._cfg = cfg
        self._plans = frozenset(cfg.plans)
        self._on = enabled and cfg.enabled

    # recording: the request path ----------------------------------------------------------
    def seen(self, client: str | None, tenant_id: str, key_id: str, plan: str) -> None:
        """One request of ``client`` with a key of ``tenant_id`` (on ``plan``)."""
        self.seen_together([client] if client else [], tenant_id, key_id, plan)

    def seen_together(self, clients: Sequence[str], tenant_id: str, key_id: str, plan: str) -> None:
        """One request of ``clients`` (its IP and its device: linked, one client) with a key
        of ``tenant_id`` (on ``plan``)."""
        if not self._on or not clients or plan not in self._plans:
            return
        now = self._clock()
        for client in clients:
            self._pending[(client, tenant_id, key_id)] = now
        for a, b in permutations(clients, 2):  # the link, both ways
            self._pending[(a, LINK, b)] = now

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        rows = [Sighting(c, t, k, at) for (c, t, k), at in pending.items()]
        try:
            await self._sightings.add(rows)
        except Exception:
            for slot, at in pending.items():  # kept for the next flush
                self._pending[slot] = max(self._pending.get(slot, at), at)
            raise

    # checking -----------------------------------------------------------------------------
    async def check(self) -> list[Incident]:
        """Flush, then, for the clients over the limit: one covered by an open incident has
        its newly used tenants or keys paused under it; the others open an incident (claimed
        once per client and window), one per group of linked clients crossing together."""
        await self.flush()
        if not self._on:
            return []
        now = self._clock()
        since = now - self._cfg.window_s
        # only clients seen since the last round (with room for other processes' flushes)
        margin = 2 * (self._flush_s + self._check_s)
        touched = None if self._last is None else max(since, self._last - margin)
        self._last = now
        opened: list[Incident] = []
        done: set[str] = set()
        crowded = await self._sightings.crowded(since, self._cfg.max_tenants, touched)
        over = set(crowded)
        covering = await self._covering(since) if crowded else []
        for client in crowded:
            if client in done:
                continue  # in the group of a client before it, this round
            group = await self.group([client], since)
            crossed = sorted(over.intersection(group))  # a merely linked one is not claimed
            done.update(crossed)
            left = await self._extend(covering, crossed, since)
            if left and (incident := await self._claim(client, group, left, since, now)):
                opened.append(incident)
        await self._sightings.prune(since - self._cfg.window_s)  # claims: kept one window
        return opened

    async def _claim(
        self, client: str, group: list[str], left: list[str], since: float, now: float
    ) -> Incident | None:
        """Claim the crossing clients no open incident covers (``left``) all or nothing, the
        group's others only when free, so a shared IP claimed by another incident (even
        resolved) never hides them; failing that (one of them had its own incident this
        window, say resolved as a false positive), each one on its own. Open the incident
        of the first claim won, if any: at most one per group and round."""
        tries = [left, *([c] for c in left)] if len(left) > 1 else [left]
        for crossing in tries:
            rest = [c for c in group if c not in crossing]
            if await self._sightings.claim_all(crossing, now, since, linked=rest):
                first = client if client in crossing else crossing[0]
                return await self._open(first, group, crossing, since, now)
        return None

    async def group(self, clients: Iterable[str], since: float) -> list[str]:
        """``clients`` and the clients linked to any of them since ``since`` (one hop)."""
        found = dict.fromkeys(clients)
        for client in list(found):
            found.update(dict.fromkeys(await self._sightings.linked(client, since)))
        return list(found)

    async def _covering(self, since: float) -> list[tuple[Incident, set[str]]]:
        """The open incidents (not resolved) and the clients each covers: its own clients
        (``detail.clients``), and the clients linked to those that crossed the limit in it
        (the attacker's device first named later). A client merely linked to a shared
        client of the incident (a device passing through the office IP that an incident
        listed) is not covered: it crossed on its own, so it opens its own incident."""
        found = []
        for incident in await self._store.traffic.incidents(None, open_only=True):
            if incident.metric != KIND:
                continue
            crossed = incident.detail.get("crossed")
            subject = set(clients_of(incident))
            crossers = [str(c) for c in crossed] if isinstance(crossed, list) else subject
            subject.update(await self.group(crossers, since))
            found.append((incident, subject))
        return found

    async def _extend(
        self, covering: list[tuple[Incident, set[str]]], clients: list[str], since: float
    ) -> list[str]:
        """Clients over the limit that an open incident covers: that incident has its action
        applied to what THEY used since (their own sightings, not those of every client
        linked to the incident), idempotently (what is paused already stays as it is). Such
        a pause's reason names the incident, so resolving it resumes them too
        (``AnomalyWatch.resolve``). Returns the clients no open incident covers."""
        left = set(clients)
        for incident, subject in covering:
            mine = left.intersection(subject)
            if not mine:
                continue
            left.difference_update(mine)
            if incident.target == "none":
                continue  # covered: nothing to pause, no second incident
            _crossed, rows = await self._scope(mine, since)
            tenants, keys = _used(rows)
            more_tenants, more_keys = await self._pause(incident, tenants, keys)
            if more_tenants or more_keys:
                log.warning("incident %s: client %s went on: paused tenants %s, keys %s",
                            incident.id, incident.detail.get("client"), more_tenants,
                            more_keys)  # fmt: skip
        return sorted(left)

    async def _scope(
        self, clients: Iterable[str], since: float
    ) -> tuple[list[str], list[Sighting]]:
        """Those of ``clients`` seen with keys of more than ``max_tenants`` tenants since
        ``since`` on their own, and their own sightings, oldest first: what an incident
        pauses. A client merely linked to one (an office IP a device passed through) is
        left out, and so are the other tenants seen behind it."""
        crossed: list[str] = []
        rows: list[Sighting] = []
        for client in sorted(set(clients)):
            own = await self._sightings.sightings(client, since)
            if len({r.tenant_id for r in own}) > self._cfg.max_tenants:
                crossed.append(client)
                rows.extend(own)
        return crossed, sorted(rows, key=lambda r: (r.seen_at, r.tenant_id, r.key_id))

    async def _open(
        self, client: str, group: list[str], claimed: list[str], since: float, now: float
    ) -> Incident:
        crossed, rows = await self._scope(claimed, since)
        tenants, keys = _used(rows)
        target = TARGETS[self._cfg.action]
        incident_id = f"anom_{uuid.uuid4().hex[:20]}"
        last = rows[-1] if rows else Sighting(client, "", "", now)
        incident = Incident(
            id=incident_id,
            tenant_id=last.tenant_id,
            key_id="",
            target=target,
            target_key=last.key_id if target == "key" else "",
            metric=KIND,
            observed=len(tenants),
            baseline=self._cfg.max_tenants,
            threshold=self._cfg.max_tenants,
            opened_at=now,
            dedup_key=f"farebox/{KIND}/{client}",
            detail={
                "kind": KIND,
                "client": client,
                "clients": sorted(group),  # the client and those linked to it: one incident
                "crossed": crossed,  # those over the limit on their own: what is paused
                "tenants": sorted(tenants),
                "keys": len(keys),
                "plans": sorted(self._plans),
                "window_s": self._cfg.window_s,
                "unit": "tenants",
                "paused": [],  # what THIS incident paused: ``paused_tenants``, ``paused_keys``
            },
        )
        try:
            paused_tenants, paused_keys = await self._pause(incident, tenants, keys)
            incident.detail.update(
                paused=paused_tenants + paused_keys,
                paused_tenants=paused_tenants,
                paused_keys=paused_keys,
            )
        finally:
            await self._list(incident, tenants)
            log.warning("%s", summary(incident))
            self._pager.triggered(incident)  # paged once, even when a pause failed
        return incident

    async def _list(self, incident: Incident, tenants: list[str]) -> None:
        """Record the incident with the anomaly incidents, under the tenant used last, or,
        while that one has another open incident, the next one that has none."""
        first = incident.tenant_id
        for tenant in dict.fromkeys([first, *tenants]):
            incident.tenant_id = tenant
            if await self._store.traffic.open_incident(incident, float("inf")):
                return
        incident.tenant_id = first
        log.warning("incident %s not listed: every tenant of client %s has an open incident; "
                    "its pauses name it", incident.id, incident.detail["client"])  # fmt: skip

    async def _pause(
        self, incident: Incident, tenants: list[str], keys: list[str]
    ) -> tuple[list[str], list[str]]:
        """Pause what the incident targets and is not paused yet (an operator's pause, or
        another incident's, is left as it is); return the tenants and the keys it paused."""
        reason = (
            f"automatic pause on account multiplication {pause_mark(incident.id)}: one client "
            f"used keys of {incident.observed} tenants"
        )
        if incident.target == "none":
            return [], []
        if incident.target == "tenant":
            return [t for t in tenants if await self._pause_one("tenant", t, reason)], []
        # a JWT caller's key is not stored: its tenant is paused instead
        jwt = [k[len(JWT_KEY_PREFIX) :] for k in keys if k.startswith(JWT_KEY_PREFIX)]
        stored = [k for k in keys if not k.startswith(JWT_KEY_PREFIX)]
        return (
            [t for t in jwt if await self._pause_one("tenant", t, reason)],
            [k for k in stored if await self._pause_one("key", k, reason)],
        )

    async def _pause_one(self, what: What, ident: str, reason: str) -> bool:
        """Pause one tenant or key unless it is paused already (or gone): True if paused.
        One conditional step of the store: an operator's pause is never overwritten."""
        return await pauses_of(self._store).pause_unpaused(what, ident, reason)

    # the background loop ------------------------------------------------------------------
    def start(self) -> None:
        if self._on:
            self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()


def clients_of(incident: Incident) -> list[str]:
    """The clients an account-multiplication incident was opened for (its group)."""
    listed = incident.detail.get("clients") or [incident.detail.get("client", "")]
    return [str(c) for c in listed if c]


def _used(rows: list[Sighting]) -> tuple[list[str], list[str]]:
    """The tenants and the keys of a client's sightings, the latest used first."""
    tenants = list(dict.fromkeys(r.tenant_id for r in reversed(rows)))
    keys = list(dict.fromkeys(r.key_id for r in reversed(rows)))
    return tenants, keys
