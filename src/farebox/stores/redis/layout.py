"""Where each Redis key of a deployment lives, and how values cross into the scripts.

``P`` is the deployment's prefix (``stores.redis.namespace``). Keys carry one of two kinds of
Redis Cluster hash tag:

- ``{P}``, the deployment's slot: ``{P}:owner``, ``{P}:auth_epoch``, ``{P}:breakers``,
  ``{P}:probe:<deployment>``, ``{P}:tenants`` (the tenant slots that may hold leases),
  ``{P}:layout`` (the key layout's version), and the counters no tenant owns (the global
  budget: a hold whose ``tenant`` is empty) with their reservation records and lease set;
- ``{P/t/<tenant>}``, one slot per tenant: every counter of the tenant (its budgets at tenant,
  key, feature and user scope, and its rate limits), its reservation records and its leases.

In a slot ``S``: ``S:c:<counter>`` is a counter (a hash: ``u<bucket>`` and ``r<bucket>``, the
used and reserved amounts of each bucket, and for rolling windows the running sums, see
``stores.redis.lua``), ``S:z:<counter>`` the buckets of a rolling window (a sorted set scored
by the bucket), ``S:res:<id>`` a reservation held in this slot and ``S:leases`` the slot's leases.

A tenant id is letters, digits, ``.``, ``_`` and ``-`` (``identity.tenancy``); anything else is
percent-encoded, so a ``{`` or ``}`` can never end a hash tag early.
"""

from __future__ import annotations

from urllib.parse import quote

from farebox.core.budgets import MONEY_UNITS, Hold

B = 10**9  # the limb of the scripts' numbers
CLAMP = 2**51 * B  # beyond any sum of counters; values past it compare as it (see lua.py)
INT64_MAX = 2**63 - 1


def dec(value: int) -> str:
    """A number for a script: its decimal string, clamped to +-CLAMP."""
    return str(max(min(value, CLAMP), -CLAMP))


def field(bucket: float) -> str:
    """A bucket as a hash field and score: round-trips exactly."""
    return repr(float(bucket))


def joined(high: int | bytes | str, low: int | bytes | str) -> int:
    """Two limbs from a script as one exact integer."""
    return int(high) * B + int(low)


def kind(hold: Hold) -> str:
    """``s``: one bucket (a calendar window, a lifetime, a concurrency count); ``w``: a rate
    limit's rolling window (buckets that leave it holding nothing are dropped); ``W``: a
    rolling budget (buckets kept)."""
    if hold.buckets_from == hold.bucket:
        return "s"
    return "W" if hold.unit in MONEY_UNITS else "w"


class Layout:
    """The keys of one deployment (``prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.home = "{" + prefix + "}"
        self.tenants = f"{self.home}:tenants"
        self.epoch = f"{self.home}:auth_epoch"
        self.marker = f"{self.home}:layout"
        self._tags: dict[str, str] = {}

    def slot(self, tenant: str) -> str:
        """The hash tag (with its braces) of a tenant's keys; the home slot for ""."""
        if not tenant:
            return self.home
        tag = self._tags.get(tenant)
        if tag is None:
            if len(self._tags) > 100_000:
                self._tags.clear()
            tag = self._tags[tenant] = "{" + f"{self.prefix}/t/{quote(tenant, safe='')}" + "}"
        return tag

    @staticmethod
    def counter(slot: str, key: str) -> str:
        return f"{slot}:c:{key}"

    @staticmethod
    def buckets(slot: str, key: str) -> str:
        return f"{slot}:z:{key}"

    @staticmethod
    def record(slot: str, rid: str) -> str:
        return f"{slot}:res:{rid}"

    @staticmethod
    def leases(slot: str) -> str:
        return f"{slot}:leases"

    def hold_keys(self, slot: str, hold: Hold) -> list[str]:
        return [self.counter(slot, hold.key), self.buckets(slot, hold.key)]


def hold_args(hold: Hold, held: int = 0) -> list[str]:
    """A hold's ARGV for the reserve and states scripts (``lua.PER_HOLD`` of them)."""
    carries = hold.rollover_bucket is not None and hold.rollover_cap != 0
    return [
        field(hold.bucket),
        field(hold.buckets_from),
        kind(hold),
        dec(hold.limit),
        dec(held),
        field(hold.rollover_bucket) if carries and hold.rollover_bucket is not None else "",
        dec(hold.rollover_cap),
        dec(hold.base_limit),
    ]


def reserve_args(hold: Hold, held: int) -> list[str]:
    """A hold's ARGV for ``hot.RESERVE``: mode (``kind``, plus ``r`` when the limit carries
    rollover), bucket, limit, held; the window start unless kind ``s``; the rollover bucket,
    cap and base limit with ``r``."""
    k = kind(hold)
    rolled = hold.rollover_bucket if hold.rollover_cap != 0 else None
    out = [k if rolled is None else k + "r", field(hold.bucket), dec(hold.limit), dec(held)]
    if k != "s":
        out.append(field(hold.buckets_from))
    if rolled is not None:
        out += [field(rolled), dec(hold.rollover_cap), dec(hold.base_limit)]
    return out
