"""The tenant a request's host names, under ``auth.subdomain.base_domain``.

``acme.api.example.com`` names tenant ``acme`` when the base domain is ``api.example.com``.
Pure: the host is lowercased and its port dropped; exactly one label must stand in front of the
base domain, and it must be a valid tenant id (so a tenant whose id has capitals or dots cannot
be named by a host). Anything else (the base domain itself, a deeper name, another domain, an IP
address) names no tenant.
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,62})$")


def host_tenant(host: str | None, base_domain: str) -> str | None:
    """The tenant id ``host`` names under ``base_domain``, or None."""
    if not host:
        return None
    name = _without_port(host.strip().lower()).rstrip(".")
    suffix = "." + base_domain.lower().rstrip(".")
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    if "." in label or _LABEL.match(label) is None:
        return None
    return label


def _without_port(host: str) -> str:
    if host.startswith("["):  # an IPv6 literal: never a tenant's host
        return host
    name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    return name if port.isdigit() or not port else host
