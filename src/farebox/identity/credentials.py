"""Provider keys for the request path, from the vault (``ProviderKeys``).

For each attempt the gateway asks ``key(tenant, provider)``: the tenant's own key for that
provider when it stored one (bring your own key: ``byok`` true), else the platform's
credential the provider's config names (``api_key: "integration:NAME"``), else none (the
provider keeps the key it was built with).

The table of credentials is read once per auth epoch, which every credential change bumps and
which the request has already read to authenticate (a memory read on SQLite and on the
replicas); each key is opened once, when first used. So a rotation applies to the next request
in every worker and replica with no restart, and the hot path stays that read plus a dict
lookup: a tenant with no key of its own costs no query at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from farebox.core.credentials import PLATFORM, Credential
from farebox.errors import ProviderCredentialMissing, VaultError
from farebox.identity.vault import Vault
from farebox.stores.base import CredentialStore

log = logging.getLogger("farebox.identity.credentials")
Table = dict[tuple[str, str], Credential]


class ProviderKeys:
    def __init__(
        self,
        store: CredentialStore,
        epoch: Callable[[], Awaitable[int]],
        vault: Vault,
        platform: Mapping[str, str],
    ) -> None:
        self._store = store
        self._read_epoch = epoch  # the store's auth epoch (``AccountStore.auth_epoch``)
        self._vault = vault
        self._platform = dict(platform)  # provider -> credential name
        self._rows: Table = {}  # every credential, as of ``_epoch``
        self._opened: dict[tuple[str, str], str] = {}
        self._epoch = -1
        self._loading = asyncio.Lock()  # one read of the table per epoch change

    async def key(self, tenant_id: str, provider: str) -> tuple[str | None, bool]:
        """(the key to send, whether it is the tenant's own). ``ProviderCredentialMissing``
        when the provider's named credential is not in the vault (or does not open)."""
        epoch = await self._read_epoch()
        if epoch != self._epoch:
            await self._reload(epoch)
        if tenant_id and (tenant_id, provider) in self._rows:
            return self._secret(tenant_id, provider), True
        return self._shared(provider), False

    async def platform_key(self, provider: str) -> str | None:
        """The platform's key for ``provider`` from the vault (None: the provider's own); for
        calls made for no tenant (the semantic cache's embedder)."""
        epoch = await self._read_epoch()
        if epoch != self._epoch:
            await self._reload(epoch)
        return self._shared(provider)

    def _shared(self, provider: str) -> str | None:
        name = self._platform.get(provider)
        if name is None:
            return None
        if (PLATFORM, name) not in self._rows:
            raise ProviderCredentialMissing(
                f"Provider {provider!r} takes its key from integration {name!r}, which the "
                "vault does not hold; create it with farebox integrations create."
            )
        return self._secret(PLATFORM, name)

    async def _reload(self, epoch: int) -> None:
        async with self._loading:
            if self._epoch == epoch:
                return  # another request read it meanwhile
            rows = await self._store.list_credentials(None)
            self._rows = {(c.owner, c.name): c for c in rows}
            self._opened = {}
            # a change committed during the read shows as a newer epoch: read again then
            self._epoch = epoch if epoch == await self._read_epoch() else -1

    def _secret(self, owner: str, name: str) -> str:
        opened = self._opened.get((owner, name))
        if opened is not None:
            return opened
        try:
            opened = self._vault.open(self._rows[(owner, name)])
        except VaultError as exc:
            log.error("vault: %s", exc.message)  # names the row, never a secret
            raise ProviderCredentialMissing(
                f"The credential for {name!r} cannot be opened; see the server log."
            ) from None
        self._opened[(owner, name)] = opened
        return opened
