"""A granted session: its lease, its usage metering and its quota state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from auth.backend import Period, Quotas
from auth.base import Admission

if TYPE_CHECKING:
    from auth.access import GatewayAccessControl

WARN_FRACTION = 0.9


class GatewayAdmission(Admission):
    """Created by `GatewayAccessControl.admit`; the access control renews its lease."""

    def __init__(self, access: GatewayAccessControl, key_id: str, lease_id: str,
                 model_id: str, quotas: Quotas, day_used: float, month_used: float) -> None:
        self._access = access
        self.key_id = key_id
        self.lease_id = lease_id
        self.model_id = model_id
        self.quotas = quotas
        self.day_used = day_used
        self.month_used = month_used
        self.audio_seconds = 0.0
        self.exhausted = False
        self.exhausted_reason = ""
        self.released = False
        self._period = Period.at()
        self._warned: set[str] = set()
        self._pending_warnings: list[tuple[str, str]] = []
        self._check_quotas()

    async def record_usage(self, audio_seconds: float, model_id: str) -> None:
        """Add a delta of audio seconds. Written to the store at once; if the store is down
        the seconds are kept and written by the heartbeat when it is back."""
        if audio_seconds <= 0:
            return
        self.audio_seconds += audio_seconds
        period = Period.at()
        if period != self._period:  # a new UTC day/month: the counters start again
            if period.month != self._period.month:
                self.month_used = 0.0
            self._period = period
            self._warned.clear()
            self.day_used = 0.0
        self._access.buffer_usage(self.key_id, period, model_id or self.model_id, audio_seconds)
        totals = await self._access.flush_usage(self.key_id, period)
        if totals is None:
            self.day_used += audio_seconds
            self.month_used += audio_seconds
        else:
            self.day_used, self.month_used = totals
        self._check_quotas()

    def _check_quotas(self) -> None:
        for kind, used, limit in (("day", self.day_used, self.quotas.audio_seconds_per_day),
                                  ("month", self.month_used,
                                   self.quotas.audio_seconds_per_month)):
            if not limit:
                continue
            label = "daily" if kind == "day" else "monthly"
            if used >= limit:
                self.exhausted = True
                self.exhausted_reason = f"{label} audio quota exhausted ({limit:g} s)"
            elif used >= WARN_FRACTION * limit and kind not in self._warned:
                self._warned.add(kind)
                self._pending_warnings.append((
                    "quota_warning",
                    f"{used / limit:.0%} of the {label} audio quota used "
                    f"({used:.0f} of {limit:g} s)"))

    def warnings(self) -> list[tuple[str, str]]:
        pending, self._pending_warnings = self._pending_warnings, []
        return pending

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        await self._access.release_admission(self)
