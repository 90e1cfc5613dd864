"""The ``store`` fixture of the role contracts. Each test module names the backends that
implement its role in ``BACKENDS``; every test there that takes ``store`` runs once against
each (or against those of them its ``backends`` mark names), on a fresh store that is closed
(and removed from the servers) afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.contracts.backends import CLUSTER, opened


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): run a contract test against only these backends"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store" in metafunc.fixturenames:
        names = metafunc.module.BACKENDS
        only = metafunc.definition.get_closest_marker("backends")
        if only is not None:
            names = [n for n in names if n in only.args]
        metafunc.parametrize("store", names, indirect=True)


@pytest.fixture
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    cluster = request.getfixturevalue("redis_cluster_nodes") if request.param == CLUSTER else None
    async with opened(request.param, tmp_path, cluster.url if cluster else None) as s:
        yield s
