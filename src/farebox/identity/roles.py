"""Admin roles: who an admin key is (``AdminActor``) and what each role may do. Pure.

Every admin operation declares what it needs (``AdminRoute.need``: ``read``, ``operate``,
``billing`` or ``owner``) and whether a ``tenant_admin`` may call it on its own tenant
(``AdminRoute.tenant_ok``). A role grants a set of needs:

============  =====================================================================
role          may
============  =====================================================================
owner         everything: other admin keys, service keys, plans' money, credentials
operator      read + operate: tenants, keys, workspaces, budgets, limits, pauses, cache
billing       read + billing: export and dead letters, reconciliation, credits, parked
              grants (reports such as margins, usage and reprice are reads)
viewer        read
tenant_admin  read + operate, only on operations marked ``tenant_ok``, only on its own
              tenant, and within its plan's caps (``farebox.identity.role_caps``)
============  =====================================================================

``decide`` answers ``allow``, ``forbid`` (403 ``insufficient_role``, naming the least role
that has the need) or ``hide`` (404: a ``tenant_admin`` outside what it may see learns
nothing, not even that the operation exists).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, cast

from farebox.core.records import ADMIN_ROLES, AdminRole

Need = Literal["read", "operate", "billing", "owner"]
NEEDS: tuple[Need, ...] = ("read", "operate", "billing", "owner")
Verdict = Literal["allow", "forbid", "hide"]
ENV_KEY_ID = "env"  # the actor of FAREBOX_ADMIN_KEY (and of the local CLI's token)

GRANTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "owner": frozenset(NEEDS),
        "operator": frozenset({"read", "operate"}),
        "billing": frozenset({"read", "billing"}),
        "viewer": frozenset({"read"}),
        "tenant_admin": frozenset({"read", "operate"}),
    }
)
# the least role that has a need: what a 403 tells the caller to ask for
LEAST_ROLE: Mapping[str, str] = MappingProxyType(
    {"read": "viewer", "operate": "operator", "billing": "billing", "owner": "owner"}
)


@dataclass(frozen=True, slots=True)
class AdminActor:
    """Who called the admin API: an admin key's id (``env`` for ``FAREBOX_ADMIN_KEY``), its
    role, and for a ``tenant_admin`` its one tenant."""

    key_id: str
    role: AdminRole
    tenant: str | None = None

    @property
    def tenant_bound(self) -> bool:
        """A ``tenant_admin``: everything it does is on ``tenant`` only."""
        return self.role == "tenant_admin"

    def grants(self, need: str) -> bool:
        return need in GRANTS.get(self.role, frozenset())


OWNER = AdminActor(ENV_KEY_ID, "owner")


def role_of(value: str | None) -> AdminRole:
    """A stored role, checked: an unknown one is a ``ValueError`` (a corrupt row opens
    nothing)."""
    if value not in ADMIN_ROLES:
        raise ValueError(f"unknown admin role {value!r}")
    return cast(AdminRole, value)


def check_need(need: str) -> Need:
    for known in NEEDS:
        if need == known:
            return known
    raise ValueError(f"unknown need {need!r}; one of {', '.join(NEEDS)}")


def decide(actor: AdminActor, need: str, tenant_ok: bool) -> Verdict:
    """What ``actor`` may do with an operation needing ``need``: ``allow``, ``forbid``
    (a 403) or ``hide`` (a 404, for a ``tenant_admin``). A tenant_admin's own tenant is
    checked apart, against the operation's tenant (``scoped``)."""
    check_need(need)
    if actor.tenant_bound:
        return "allow" if tenant_ok and actor.grants(need) and actor.tenant else "hide"
    return "allow" if actor.grants(need) else "forbid"


def scoped(actor: AdminActor, tenant_id: str | None) -> bool:
    """``actor`` may act on ``tenant_id`` (any tenant, unless it is a tenant_admin)."""
    return not actor.tenant_bound or (tenant_id is not None and tenant_id == actor.tenant)


def refusal_message(need: str) -> str:
    """The 403's words: the role the operation needs (the least that has it)."""
    least = LEAST_ROLE[check_need(need)]
    having = [r for r in ("owner", "operator", "billing", "viewer") if need in GRANTS[r]]
    return (
        f"This operation needs the {least!r} role ({need} access); admin keys of role "
        f"{', '.join(having)} have it."
    )
