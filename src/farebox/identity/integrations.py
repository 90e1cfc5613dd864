"""The provider-credential vault administered (``Integrations``), shared by the admin API and
the CLI: the platform's credentials (``integration:NAME`` in a provider's config) and
tenants' own keys (bring your own key: owner the tenant, name the provider). A secret goes
in once and never comes out: every answer is ``Credential.public()`` (its last 4 only)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from farebox.core.credentials import PLATFORM, Credential, valid_name
from farebox.errors import Conflict, InvalidRequest, NotFound
from farebox.identity.vault import Vault, rekey
from farebox.stores.base import CredentialStore

MAX_SECRET = 4096


def check_secret(secret: str) -> str:
    """A provider key: printable, no whitespace, at most 4096 characters."""
    if not 0 < len(secret) <= MAX_SECRET or not secret.isprintable() or _spaced(secret):
        raise InvalidRequest(
            "'api_key' must be 1-4096 printable characters without whitespace.", param="api_key"
        )
    return secret


def _spaced(secret: str) -> bool:
    return any(c.isspace() for c in secret)


def check_name(name: str, what: str = "name") -> str:
    if not valid_name(name):
        raise InvalidRequest(
            f"{what!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit.",
            param=what,
        )
    return name


class Integrations:
    def __init__(
        self,
        store: CredentialStore,
        vault: Vault,
        clock: Callable[[], float],
        providers: Collection[str],
    ) -> None:
        self._store = store
        self._vault = vault
        self._clock = clock
        self._providers = frozenset(providers)  # the configured provider names (BYOK)

    # the platform's ------------------------------------------------------------------
    async def create(self, name: str, provider: str, secret: str) -> Credential:
        sealed = self._vault.seal(
            PLATFORM, check_name(name), check_name(provider, "provider"), check_secret(secret),
            self._clock(),
        )  # fmt: skip
        await self._store.create_credential(sealed)  # Conflict when the name is taken
        return sealed

    async def list(self, owner: str = PLATFORM) -> list[Credential]:
        return await self._store.list_credentials(owner)

    async def rotate(self, name: str, secret: str, owner: str = PLATFORM) -> Credential:
        check_secret(secret)
        for _ in range(8):  # a concurrent rotation wins the compare-and-set: read again
            before = await self._found(owner, name)
            after = self._vault.rotated(before, secret, self._clock())
            if await self._store.replace_credential(before, after):
                return after
        raise Conflict(f"Credential {name!r} is being rotated concurrently; retry.")

    async def delete(self, name: str, owner: str = PLATFORM) -> Credential:
        """Delete it; what it was (its last 4 only ever shown)."""
        found = await self._found(owner, name)
        if not await self._store.delete_credential(owner, name):
            raise NotFound(self._missing(owner, name))
        return found

    async def rekey(self) -> tuple[int, int]:
        """Move every credential to the current key-encryption key: (moved, already there)."""
        return await rekey(self._store, self._vault)

    # a tenant's own (bring your own key) -----------------------------------------------
    async def put_own(self, tenant_id: str, provider: str, secret: str) -> tuple[Credential, bool]:
        """Store (True: created) or replace the tenant's own key for ``provider``."""
        self._check_provider(provider)
        if await self._store.get_credential(tenant_id, provider) is not None:
            return await self.rotate(provider, secret, tenant_id), False
        sealed = self._vault.seal(tenant_id, provider, provider, check_secret(secret),
                                  self._clock())  # fmt: skip
        await self._store.create_credential(sealed)
        return sealed, True

    async def own(self, tenant_id: str, provider: str) -> Credential:
        return await self._found(tenant_id, provider)

    def _check_provider(self, provider: str) -> None:
        if provider not in self._providers:
            known = ", ".join(sorted(self._providers))
            raise InvalidRequest(
                f"No provider named {provider!r} is configured (configured: {known}).",
                param="provider",
            )

    async def _found(self, owner: str, name: str) -> Credential:
        found = await self._store.get_credential(owner, name)
        if found is None:
            raise NotFound(self._missing(owner, name))
        return found

    @staticmethod
    def _missing(owner: str, name: str) -> str:
        if owner:
            return f"Tenant {owner!r} has no key of its own for provider {name!r}."
        return f"No integration named {name!r}."
