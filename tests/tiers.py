"""Test tiers: `make test-fast` runs, in seconds, the tests that need no server (gateway,
redis-server, provider fake) and no real model decoding speech; `make test` runs every test.

The rule is applied here, at collection, so a new test lands in its tier without anyone
remembering to mark it. Markers (registered in pyproject.toml):

* ``e2e``: every test under ``tests/e2e/`` (gateway processes, clusters, a browser).
* ``server``: a test that uses the ``gateway``, ``redis`` or ``cluster`` fixture, or whose
  module holds something that starts a server: a helper of ``tests/servers.py``
  (`running_gateway`, `redis_server`, `gateway_process`), of ``tests/auth/``
  (`redis_cluster`, `persistent_redis`), a provider fake (a ``tests/fakes`` class built on
  `RecordedSessions`) or `tests.fakes.providers.upstream` / `make_fake`. A fixture
  parametrized over backends marks its server params itself
  (``pytest.param("redis", marks=pytest.mark.server)``). The check is per module: pure unit
  tests (parsers, state machines) belong in a module that imports no server.
* ``slow``: set by hand where the real local model decodes speech (``tests/adapters/
  test_local.py``, the local engine in the adapter contract).

``make test-fast`` is ``pytest -m "not slow and not e2e and not server"``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

SERVER_FIXTURES = frozenset({"gateway", "redis", "cluster"})
SERVER_HELPERS = frozenset({
    "tests.servers.running_gateway", "tests.servers.redis_server",
    "tests.servers.gateway_process", "tests.auth.redis_cluster.redis_cluster",
    "tests.auth.redis_restart.persistent_redis", "tests.fakes.providers.upstream",
    "tests.fakes.providers.make_fake", "tests.fakes._server.RecordedSessions"})
E2E_DIR = Path(__file__).parent / "e2e"

_modules: dict[str, bool] = {}


def _qualified(value: object) -> str:
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"


def _starts_a_server(value: object) -> bool:
    if isinstance(value, type):
        return any(_qualified(cls) in SERVER_HELPERS for cls in value.__mro__)
    return callable(value) and _qualified(value) in SERVER_HELPERS


def _module_starts_servers(module: ModuleType) -> bool:
    found = _modules.get(module.__name__)
    if found is None:
        found = _modules[module.__name__] = any(
            _starts_a_server(value) for value in vars(module).values())
    return found


def _uses_a_server(item: pytest.Item) -> bool:
    if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    module = getattr(item, "module", None)
    return isinstance(module, ModuleType) and _module_starts_servers(module)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)
        if _uses_a_server(item):
            item.add_marker(pytest.mark.server)
