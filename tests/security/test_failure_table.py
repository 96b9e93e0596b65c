"""The in-memory failed-attempt table: O(1) per attempt, bounded, still throttling.

Past 10,000 addresses the old table rescanned itself on every failure. Here 12,000 addresses
fail, the throttle still blocks the ones over the limit, expired windows leave as new failures
arrive (lazily, without a scan), and the table never holds more than its bound. The work per
attempt is counted (entries touched), not timed.
"""

from __future__ import annotations

import tracemalloc
from collections import OrderedDict

import pytest

from auth import memory
from auth.access import GatewayAccessControl
from auth.base import AccessDenied
from auth.memory import RATE_WINDOW, MemoryBackend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingDict(OrderedDict[str, tuple[int, float]]):
    """The table, counting how many entries each operation reads or removes."""

    touched = 0

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        CountingDict.touched += 1
        return super().get(key, default)

    def items(self):  # type: ignore[no-untyped-def]
        for item in super().items():
            CountingDict.touched += 1
            yield item

    def popitem(self, last: bool = True) -> tuple[str, tuple[int, float]]:
        CountingDict.touched += 1
        return super().popitem(last)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(memory.time, "monotonic", fake)
    return fake


async def test_twelve_thousand_addresses_are_all_throttled(clock: Clock) -> None:
    backend = MemoryBackend()
    access = GatewayAccessControl(backend, failed_auth_per_minute=3)
    addresses = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(12_000)]
    for address in addresses:
        for _ in range(3):
            with pytest.raises(AccessDenied) as denied:
                await access.authenticate("sg_live_wrong", client=address)
            assert denied.value.close_code == 4401
        clock.now += 0.001
    assert backend.tracked_clients == 12_000
    for address in (addresses[0], addresses[10_500], addresses[-1]):
        with pytest.raises(AccessDenied) as denied:
            await access.authenticate("sg_live_wrong", client=address)
        assert denied.value.close_code == 4429  # blocked for the rest of its window
    clock.now += RATE_WINDOW + 1
    with pytest.raises(AccessDenied) as denied:
        await access.authenticate("sg_live_wrong", client=addresses[0])
    assert denied.value.close_code == 4401  # its window ended: counted afresh
    # That one failure expired every finished window; only the new one is left.
    assert backend.tracked_clients == 1


async def test_each_attempt_touches_a_bounded_number_of_entries(clock: Clock) -> None:
    backend = MemoryBackend()
    backend._failures = CountingDict()
    for i in range(20_000):
        await backend.note_auth_failure(f"addr-{i}")
        clock.now += 0.0005
    CountingDict.touched = 0
    for i in range(2_000):
        await backend.note_auth_failure(f"addr-{i % 50}")  # ongoing windows, no expiry
    per_attempt = CountingDict.touched / 2_000
    assert per_attempt <= 3, per_attempt
    # Windows ending in bulk: each expired entry is removed once, by the attempt that finds
    # it, and never looked at again.
    clock.now += RATE_WINDOW
    CountingDict.touched = 0
    for i in range(2_000):
        await backend.note_auth_failure(f"late-{i}")
    assert CountingDict.touched <= 2_000 * 3 + 20_000 * 2, CountingDict.touched
    assert backend.tracked_clients <= 2_000 + 20_000


async def test_the_table_is_bounded(clock: Clock) -> None:
    backend = MemoryBackend(max_tracked_clients=1_000)
    tracemalloc.start()
    try:
        for i in range(12_000):
            count, remaining = await backend.note_auth_failure(f"203.0.{i >> 8}.{i & 255}")
            assert (count, remaining) == (1, RATE_WINDOW)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert backend.tracked_clients == 1_000
    assert current < 1024 * 1024, current  # 1,000 entries, not 12,000
    # The newest addresses are the ones kept, with their counts.
    assert await backend.auth_failures("203.0.46.223") == (1, RATE_WINDOW)
    assert await backend.auth_failures("203.0.0.0") == (0, 0.0)
    assert MemoryBackend().__dict__["_max_tracked_clients"] == memory.MAX_TRACKED_CLIENTS
