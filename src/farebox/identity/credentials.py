"""Provider keys for the request path, from the vault (``ProviderKeys``).

For each attempt the gateway asks ``key(tenant, provider)``: the tenant's own key for that
provider when it stored one (bring your own key: ``byok`` true), else the platform's
credential the provider's config names (``api_key: "integration:NAME"``), else none (the
provider keeps the key it was built with). Opened keys are cached by the store's auth epoch,
which every credential change bumps and which the request has already read to authenticate
(a memory read on SQLite and on the replicas): a rotation applies to the next request in
every worker and replica, and the hot path stays that read plus a dict lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from farebox.core.credentials import PLATFORM
from farebox.errors import ProviderCredentialMissing, VaultError
from farebox.identity.vault import Vault
from farebox.stores.base import CredentialStore

log = logging.getLogger("farebox.identity.credentials")
CACHE_MAX = 50_000  # (owner, name) pairs remembered, found or not, per epoch


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
        self._opened: dict[tuple[str, str], str | None] = {}
        self._epoch = -1

    async def key(self, tenant_id: str, provider: str) -> tuple[str | None, bool]:
        """(the key to send, whether it is the tenant's own). ``ProviderCredentialMissing``
        when the provider's named credential is not in the vault (or does not open)."""
        epoch = await self._read_epoch()
        if epoch != self._epoch:
            self._opened.clear()
            self._epoch = epoch
        own = await self._secret(tenant_id, provider, epoch)
        if own is not None:
            return own, True
        name = self._platform.get(provider)
        if name is None:
            return None, False
        shared = await self._secret(PLATFORM, name, epoch)
        if shared is None:
            raise ProviderCredentialMissing(
                f"Provider {provider!r} takes its key from integration {name!r}, which the "
                "vault does not hold; create it with farebox integrations create."
            )
        return shared, False

    async def _secret(self, owner: str, name: str, epoch: int) -> str | None:
        if (owner, name) in self._opened:
            return self._opened[(owner, name)]
        credential = await self._store.get_credential(owner, name)
        secret = None
        if credential is not None:
            try:
                secret = self._vault.open(credential)
            except VaultError as exc:
                log.error("vault: %s", exc.message)  # names the row, never a secret
                raise ProviderCredentialMissing(
                    f"The credential for {name!r} cannot be opened; see the server log."
                ) from None
        if len(self._opened) >= CACHE_MAX:
            self._opened.clear()
        if epoch == self._epoch == await self._read_epoch():  # nothing changed meanwhile
            self._opened[(owner, name)] = secret
        return secret
