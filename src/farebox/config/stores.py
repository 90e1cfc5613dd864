"""``redis:`` in ``farebox.yaml``: a URL, or a mapping that can name a Redis Cluster.

```yaml
redis: "redis://127.0.0.1:6379/0"                        # one Redis
redis: {url: "redis://127.0.0.1:7000", cluster: true}    # any one node of a Redis Cluster
```

The environment overrides the file: ``FAREBOX_REDIS`` the URL, ``FAREBOX_REDIS_CLUSTER``
(``1``/``0``, ``true``/``false``) the cluster flag. A cluster is reached over TCP (not a unix
socket) and has only database 0; anything else stops start-up naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import StrictBool, model_validator

from farebox.config.base import Strict
from farebox.errors import ConfigError

REDIS_ENV = "FAREBOX_REDIS"
REDIS_CLUSTER_ENV = "FAREBOX_REDIS_CLUSTER"
_FLAGS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}  # fmt: skip
_SCHEMES = ("redis://", "rediss://", "unix://")


class RedisSettings(Strict):
    """``redis:``: a URL (``"redis://HOST:6379/0"``) or ``{url: ..., cluster: true}``."""

    url: str
    cluster: StrictBool = False  # url names one node of a Redis Cluster

    @model_validator(mode="before")
    @classmethod
    def _url_or_mapping(cls, value: object) -> object:
        if isinstance(value, str):
            return {"url": value}
        if isinstance(value, dict | RedisSettings):
            return value
        raise ValueError('expected a redis:// URL or {url: "redis://...", cluster: true}')


def _cluster_flag(source: str, value: str) -> bool:
    flag = _FLAGS.get(value.strip().lower())
    if flag is None:
        raise ConfigError(
            f"{source}: {REDIS_CLUSTER_ENV}: expected 1 or 0 (true or false) (got {value!r})"
        )
    return flag


def redis_target(
    source: str, configured: RedisSettings | None, env: Mapping[str, str]
) -> tuple[str | None, bool]:
    """The Redis URL and whether it names a node of a Redis Cluster, checked."""
    url = env.get(REDIS_ENV) or (configured.url if configured else None)
    cluster = bool(configured and configured.cluster)
    where = "redis.cluster"
    if env.get(REDIS_CLUSTER_ENV):
        cluster = _cluster_flag(source, env[REDIS_CLUSTER_ENV])
        where = REDIS_CLUSTER_ENV
    if url and not url.startswith(_SCHEMES):
        raise ConfigError(f"{source}: redis: expected a redis:// URL (got {url!r})")
    if not cluster:
        return url, False
    if not url:
        raise ConfigError(f"{source}: {where}: a Redis Cluster needs redis.url (one of its nodes)")
    if url.startswith("unix://"):
        raise ConfigError(
            f"{source}: {where}: a Redis Cluster is reached over TCP, not a unix socket; "
            'give one node as url: "redis://HOST:PORT"'
        )
    if urlsplit(url).path.strip("/") not in ("", "0"):
        raise ConfigError(
            f"{source}: {where}: a Redis Cluster has only database 0 (got {url!r}); drop the /N"
        )
    return url, True
