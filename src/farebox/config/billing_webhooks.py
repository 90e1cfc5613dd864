"""``billing.webhooks``: the billing systems whose credit grants Farebox receives, one entry per
sink kind (``POST /billing/v1/webhooks/{kind}``; a kind not configured answers 404).

```yaml
billing:
  webhooks:
    stripe: {signing_secret: "env:STRIPE_WEBHOOK_SECRET"}          # whsec_...
    lago: {signing_secret: "env:LAGO_HMAC_KEY"}                    # the HMAC signature token
    metronome: {signing_secret: "env:METRONOME_WEBHOOK_SECRET"}
    openmeter: {signing_secret: "env:OPENMETER_WEBHOOK_SECRET", unit_usd: "0.001"}
```

``unit_usd``: what one unit of the payload's amount is worth, in USD of revenue (defaults:
Stripe and Metronome amounts are in cents, ``"0.01"``; Lago's ``amount`` is in the wallet's
currency, ``"1"``; OpenMeter grants are in the feature's units: required). ``currency``: the
only currency accepted where the payload names one (another is parked for review).
``billing_key``: the ``Tenant.billing`` entry that holds the customer's id in that system.
``tolerance_s``: how old a signed timestamp may be (Stripe, Metronome, OpenMeter).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, model_validator

from farebox.config.base import Decimal, EnvReference, Strict
from farebox.errors import ConfigError

SINK_KINDS = ("stripe", "lago", "metronome", "openmeter")
DEFAULT_UNIT_USD = {"stripe": "0.01", "lago": "1", "metronome": "0.01"}
DEFAULT_BILLING_KEY = {
    "stripe": "stripe_customer_id",
    "lago": "lago_external_customer_id",
    "metronome": "metronome_customer_id",
    "openmeter": "openmeter_subject",
}


class WebhookSink(Strict):
    """One billing system sending credit grants."""

    signing_secret: EnvReference
    unit_usd: Decimal | None = None
    currency: str = Field("usd", pattern=r"^[A-Za-z]{3}$")
    billing_key: str | None = Field(None, min_length=1, max_length=64)
    tolerance_s: float = Field(300.0, gt=0, le=86_400)


class BillingWebhooks(Strict):
    stripe: WebhookSink | None = None
    lago: WebhookSink | None = None
    metronome: WebhookSink | None = None
    openmeter: WebhookSink | None = None

    @model_validator(mode="after")
    def _units(self) -> BillingWebhooks:
        if self.openmeter is not None and self.openmeter.unit_usd is None:
            raise ValueError(
                "billing.webhooks.openmeter.unit_usd: required (USD per unit of the feature "
                'the grants are in, e.g. "0.001")'
            )
        return self

    def sink(self, kind: str) -> WebhookSink | None:
        found = getattr(self, kind, None) if kind in SINK_KINDS else None
        return found if isinstance(found, WebhookSink) else None

    def unit_usd(self, kind: str) -> str:
        sink = self.sink(kind)
        given = sink.unit_usd if sink is not None else None
        return (given or DEFAULT_UNIT_USD.get(kind, "1")).strip()

    def billing_key(self, kind: str) -> str:
        sink = self.sink(kind)
        return (sink.billing_key if sink else None) or DEFAULT_BILLING_KEY[kind]


def secret_key(kind: str) -> str:
    """Where ``Settings.sink_secrets`` keeps a webhook sink's signing secret."""
    return f"webhooks.{kind}.signing_secret"


def hook_secrets(source: str, hooks: BillingWebhooks, env: Mapping[str, str]) -> dict[str, str]:
    """Each configured sink's signing secret, from the environment ``settings`` hands in."""
    found: dict[str, str] = {}
    for kind in SINK_KINDS:
        sink = hooks.sink(kind)
        if sink is None:
            continue
        name = sink.signing_secret[len("env:") :]
        value = env.get(name)
        if not value:
            raise ConfigError(
                f"{source}: billing.webhooks.{kind}.signing_secret: environment variable "
                f"{name} is not set"
            )
        found[secret_key(kind)] = value
    return found
