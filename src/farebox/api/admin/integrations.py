"""The provider-credential vault (issue 14): the platform's provider keys
(``/admin/v1/integrations``: create, list, rotate, delete; a provider's config names one as
``api_key: "integration:NAME"``) and a tenant's own keys (``/admin/v1/tenants/{id}/
integrations/{provider}``: bring your own key). A key is sent once and never answered back:
every answer shows its last 4 characters only."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from farebox.api.context import Services
from farebox.core.credentials import NAME_PATTERN, Credential
from farebox.gateway.routing_table import provider_configs
from farebox.identity.integrations import MAX_SECRET, Integrations
from farebox.identity.tenancy import Tenancy
from farebox.identity.vault import Vault

KEY_DOC = "The provider's API key. Stored encrypted; never shown again (only its last 4)."


class IntegrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=64,
        examples=["openai-prod"],
        description='Referenced by a provider as api_key: "integration:NAME".',
    )
    provider: str = Field(
        pattern=NAME_PATTERN,
        max_length=64,
        examples=["openai"],
        description="What the key is for (openai, anthropic, ...).",
    )
    api_key: str = Field(min_length=1, max_length=MAX_SECRET, description=KEY_DOC)


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(min_length=1, max_length=MAX_SECRET, description=KEY_DOC)


class IntegrationOut(BaseModel):
    """A stored provider key: never the key itself."""

    name: str
    provider: str
    owner: str | None = Field(description="The tenant of a key of its own; null: the platform's.")
    last4: str = Field(description="The key's last 4 characters.")
    kek_version: str = Field(description="The key-encryption key version it is sealed under.")
    created_at: float
    rotated_at: float | None


class IntegrationsOut(BaseModel):
    data: list[IntegrationOut]


class RekeyOut(BaseModel):
    """What ``POST /admin/v1/integrations/rekey`` did."""

    kek_version: str = Field(description="The current key-encryption key version.")
    moved: int = Field(description="Credentials re-encrypted under it.")
    already: int = Field(description="Credentials that were under it already.")


def _out(credential: Credential) -> IntegrationOut:
    return IntegrationOut.model_validate(credential.public())


class IntegrationRoutes:
    """The handlers of ``/integrations`` and ``/tenants/{tenant_id}/integrations``."""

    def __init__(self, services: Services, tenancy: Tenancy) -> None:
        self.tenancy = tenancy
        settings = services.settings
        self.vault = Vault.of(settings.kek, services.secret)
        self._integrations = Integrations(
            services.store.credentials, self.vault, services.clock, provider_configs(settings)
        )

    @property
    def integrations(self) -> Integrations:
        """The service, once the vault can work: without ``cryptography`` (a base install,
        no ``farebox[identity]`` extra) every route answers 501 ``vault_unavailable``."""
        self.vault.ready()
        return self._integrations

    async def create(self, body: IntegrationIn) -> IntegrationOut:
        """Store a platform provider key (201); 409 if the name is taken (rotate it)."""
        return _out(await self.integrations.create(body.name, body.provider, body.api_key))

    async def list_all(self) -> IntegrationsOut:
        """The platform's provider keys (never the keys: their last 4 only)."""
        return IntegrationsOut(data=[_out(c) for c in await self.integrations.list()])

    async def rotate(self, name: str, body: KeyIn) -> IntegrationOut:
        """Replace the key; the next request in every worker and replica uses the new one."""
        return _out(await self.integrations.rotate(name, body.api_key))

    async def delete(self, name: str) -> IntegrationOut:
        """Delete the key (a provider that names it answers 503 provider_credential_missing)."""
        return _out(await self.integrations.delete(name))

    async def put_own(self, tenant_id: str, provider: str, body: KeyIn) -> IntegrationOut:
        """Store or replace the tenant's own key for a configured provider: its traffic to
        that provider then goes on that key (ledger ``byok``, cost 0, the plan's byok_fee)."""
        await self.tenancy.tenant(tenant_id)  # 404 for an unknown tenant
        made, _ = await self.integrations.put_own(tenant_id, provider, body.api_key)
        return _out(made)

    async def get_own(self, tenant_id: str, provider: str) -> IntegrationOut:
        """The tenant's own key for the provider (its last 4 only)."""
        await self.tenancy.tenant(tenant_id)
        return _out(await self.integrations.own(tenant_id, provider))

    async def delete_own(self, tenant_id: str, provider: str) -> IntegrationOut:
        """Delete the tenant's own key: its traffic goes on the platform's key again."""
        await self.tenancy.tenant(tenant_id)
        return _out(await self.integrations.delete(provider, tenant_id))

    async def rekey(self) -> RekeyOut:
        """Re-encrypt every credential (the platform's and tenants' own) under the current
        key-encryption key (the first of FAREBOX_KEK), a row at a time; until it is done every
        configured version still opens the rows not yet moved."""
        moved, already = await self.integrations.rekey()
        return RekeyOut(kek_version=self.vault.current, moved=moved, already=already)
