"""Provider keys for the request path, from the vault (``ProviderKeys``).

For each attempt the gateway asks ``key(tenant, provider)``: the tenant's own key for that
provider when it stored one (bring your own key: ``byok`` true), else the platform's
credential the provider's config names (``api_key: "integration:NAME"``), else none (the
provider keeps the key it was built with).

Credentials are read per owner, on demand: the platform's at their first use (never, when no
provider names ``integration:...``), a tenant's own when its first request comes. Each owner's
rows are cached for the current auth epoch (which every credential change bumps, and which the
request has already read to authenticate: a memory read on SQLite and on the replicas), in an
LRU bounded to ``max_owners``; each key is opened once, when first used. So a rotation applies
to the next request in every worker and replica with no restart, a change reloads only the
owners that are asked for again, and the hot path stays the epoch read plus a dict lookup.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

from farebox.core.credentials import PLATFORM, Credential
from farebox.errors import ProviderCredentialMissing, VaultError, VaultUnavailable
from farebox.identity.vault import Vault
from farebox.stores.base import CredentialStore

log = logging.getLogger("farebox.identity.credentials")
MAX_OWNERS = 4096  # tenants whose credentials stay cached (least recently used dropped)


class _Owned:
    """One owner's credentials as of an epoch, and the keys opened from them so far."""

    __slots__ = ("opened", "rows")

    def __init__(self, rows: list[Credential]) -> None:
        self.rows = {c.name: c for c in rows}
        self.opened: dict[str, str] = {}


class ProviderKeys:
    def __init__(
        self,
        store: CredentialStore,
        epoch: Callable[[], Awaitable[int]],
        vault: Vault,
        platform: Mapping[str, str],
        max_owners: int = MAX_OWNERS,
    ) -> None:
        self._store = store
        self._read_epoch = epoch  # the store's auth epoch (``AccountStore.auth_epoch``)
        self._vault = vault
        self._platform = dict(platform)  # provider -> credential name
        self._max = max(1, max_owners)
        self._owners: OrderedDict[str, _Owned] = OrderedDict()  # as of ``_epoch``; LRU
        self._epoch = -1
        self._loading = asyncio.Lock()  # one read per owner per epoch change

    async def key(self, tenant_id: str, provider: str) -> tuple[str | None, bool]:
        """(the key to send, whether it is the tenant's own). ``ProviderCredentialMissing``
        when the provider's named credential is not in the vault (or does not open)."""
        await self._current()
        if tenant_id:
            own = await self._owned(tenant_id)
            if provider in own.rows:
                return self._secret(own, provider), True
        return await self._shared(provider), False

    async def platform_key(self, provider: str) -> str | None:
        """The platform's key for ``provider`` from the vault (None: the provider's own); for
        calls made for no tenant (the semantic cache's embedder)."""
        await self._current()
        return await self._shared(provider)

    async def _current(self) -> None:
        epoch = await self._read_epoch()
        if epoch != self._epoch:  # a credential (or key) changed: every owner is read again
            self._owners.clear()
            self._epoch = epoch

    async def _shared(self, provider: str) -> str | None:
        name = self._platform.get(provider)
        if name is None:
            return None
        platform = await self._owned(PLATFORM)
        if name not in platform.rows:
            raise ProviderCredentialMissing(
                f"Provider {provider!r} takes its key from integration {name!r}, which the "
                "vault does not hold; create it with farebox integrations create."
            )
        return self._secret(platform, name)

    async def _owned(self, owner: str) -> _Owned:
        found = self._owners.get(owner)
        if found is not None:
            self._owners.move_to_end(owner)
            return found
        async with self._loading:
            found = self._owners.get(owner)
            if found is not None:  # another request read it meanwhile
                return found
            epoch = self._epoch
            found = _Owned(await self._store.list_credentials(owner))
            # a change committed during the read shows as a newer epoch: not kept then
            if epoch == self._epoch == await self._read_epoch():
                self._owners[owner] = found
                while len(self._owners) > self._max:
                    self._owners.popitem(last=False)
            return found

    def _secret(self, owned: _Owned, name: str) -> str:
        opened = owned.opened.get(name)
        if opened is not None:
            return opened
        row = owned.rows[name]
        try:
            opened = self._vault.open(row)
        except VaultUnavailable:
            raise  # no cryptography: a clear 501 naming farebox[identity], not a failover
        except VaultError as exc:
            log.error("vault: %s", exc.message)  # names the row, never a secret
            raise ProviderCredentialMissing(
                f"The credential for {name!r} cannot be opened; see the server log."
            ) from None
        owned.opened[name] = opened
        return opened
