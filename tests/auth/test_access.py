"""Every access rule with its close code, against every backend (memory, Redis, Cluster)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from auth import AccessDenied, GatewayAccessControl, Quotas
from tests.auth.conftest import MakeAccess

MODEL = "local.tiny.en"


async def _key(access: GatewayAccessControl, **fields: object) -> tuple[str, str]:
    record, secret = await access.store.create("test", **fields)
    return record.id, secret


async def _denied(awaitable: object) -> AccessDenied:
    with pytest.raises(AccessDenied) as info:
        await awaitable  # type: ignore[misc]
    assert len(info.value.reason.encode()) <= 123
    return info.value


async def test_unknown_missing_revoked_expired_keys_get_4401(make_access: MakeAccess) -> None:
    access = await make_access()
    assert (await _denied(access.authenticate(None))).code == "missing_key"
    assert (await _denied(access.authenticate("sg_live_nope"))).close_code == 4401
    key_id, secret = await _key(access)
    await access.authenticate(secret)
    await access.store.revoke(key_id)
    denied = await _denied(access.authenticate(secret))
    assert (denied.close_code, denied.code, denied.reason) == (4401, "key_revoked",
                                                               "API key revoked")
    _, soon = await _key(access, expires_at=time.time() + 0.2)
    await access.authenticate(soon)
    await asyncio.sleep(0.3)  # let the key's lifetime pass
    denied = await _denied(access.authenticate(soon))
    assert (denied.close_code, denied.code) == (4401, "key_expired")


async def test_key_never_appears_in_errors_or_logs(make_access: MakeAccess,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    access = await make_access(failed_auth_per_minute=2)
    key_id, secret = await _key(access, max_concurrent_streams=1)
    wrong = secret[:-4] + "AAAA"
    errors = []
    for attempt in (wrong, wrong, wrong, secret):
        with pytest.raises(AccessDenied) as info:
            await access.authenticate(attempt, client="192.0.2.7")
        errors.append(str(info.value) + repr(info.value.__dict__))
    principal = await access.authenticate(secret, client="192.0.2.8")
    admission = await access.admit(principal, MODEL)
    errors.append(repr((await _denied(access.admit(principal, MODEL))).__dict__))
    await admission.release()
    token, _ = await access.mint_token(principal, 30)
    await access.store.revoke(key_id)
    errors.append(repr((await _denied(access.authenticate(token))).__dict__))
    text = caplog.text + "".join(errors)
    for value in (secret, wrong, token, secret[8:], token[-20:]):
        assert value not in text


async def test_failed_attempts_per_client_get_4429(make_access: MakeAccess) -> None:
    access = await make_access(failed_auth_per_minute=3)
    _, secret = await _key(access)
    for _ in range(3):
        assert (await _denied(access.authenticate("sg_live_bad", client="198.51.100.1"))
                ).close_code == 4401
    denied = await _denied(access.authenticate("sg_live_bad", client="198.51.100.1"))
    assert (denied.close_code, denied.code) == (4429, "too_many_failed_attempts")
    assert denied.retry_after is not None and 0 < denied.retry_after <= 60
    # Even the right key is refused from that address for the rest of the minute...
    assert (await _denied(access.authenticate(secret, client="198.51.100.1"))).close_code == 4429
    # ...and that holds in another process sharing the store, while other clients are fine.
    other_process = await make_access(failed_auth_per_minute=3)
    assert (await _denied(other_process.authenticate(secret, client="198.51.100.1"))
            ).close_code == 4429
    assert (await other_process.authenticate(secret, client="198.51.100.2")).key.id


async def test_model_globs_and_origins_get_4403(make_access: MakeAccess) -> None:
    access = await make_access()
    _, secret = await _key(access, allowed_models=["local.*", "deepgram.nova-3"],
                           allowed_origins=["https://app.example.com", "https://*.example.org"])
    principal = await access.authenticate(secret)
    for model in ("local.tiny.en", "deepgram.nova-3"):
        await (await access.admit(principal, model)).release()
    denied = await _denied(access.admit(principal, "openai.gpt-4o-transcribe"))
    assert (denied.close_code, denied.code) == (4403, "model_not_allowed")
    assert "openai.gpt-4o-transcribe" in denied.reason
    for origin in ("https://app.example.com", "https://APP.example.com/", "https://a.example.org"):
        await (await access.admit(principal, MODEL, origin=origin)).release()
    denied = await _denied(access.admit(principal, MODEL, origin="https://evil.example"))
    assert (denied.close_code, denied.code) == (4403, "origin_not_allowed")
    await (await access.admit(principal, MODEL, origin=None)).release()  # not a browser


async def test_concurrent_streams_are_limited_across_processes(make_access: MakeAccess) -> None:
    one, two = await make_access(), await make_access()
    _, secret = await _key(one, max_concurrent_streams=2)
    p1, p2 = await one.authenticate(secret), await two.authenticate(secret)
    first = await one.admit(p1, MODEL)
    second = await two.admit(p2, MODEL)
    for access, principal in ((one, p1), (two, p2)):
        denied = await _denied(access.admit(principal, MODEL))
        assert (denied.close_code, denied.code) == (4429, "too_many_streams")
        assert denied.retry_after and denied.retry_after > 0
    await first.release()
    await first.release()  # idempotent
    third = await one.admit(p1, MODEL)
    await second.release()
    await third.release()


async def test_sessions_per_minute_are_limited(make_access: MakeAccess) -> None:
    one, two = await make_access(), await make_access()
    _, secret = await _key(one, sessions_per_minute=3)
    principal = await one.authenticate(secret)
    for access in (one, two, one):
        await (await access.admit(principal, MODEL)).release()
    denied = await _denied(two.admit(principal, MODEL))
    assert (denied.close_code, denied.code) == (4429, "rate_limited")
    assert denied.retry_after is not None and 55 < denied.retry_after <= 60


async def test_daily_quota_warns_at_90_percent_then_exhausts(make_access: MakeAccess) -> None:
    access = await make_access()
    _, secret = await _key(access, audio_seconds_per_day=10)
    principal = await access.authenticate(secret)
    admission = await access.admit(principal, MODEL)
    await admission.record_usage(5.0, MODEL)
    assert admission.warnings() == [] and not admission.exhausted
    await admission.record_usage(4.2, MODEL)
    (warning,) = admission.warnings()
    assert warning[0] == "quota_warning" and "daily" in warning[1]
    assert admission.warnings() == []  # once
    # Usage of another session of the same key counts too.
    other = await access.admit(principal, MODEL)
    await other.record_usage(1.0, MODEL)
    assert other.exhausted
    await admission.record_usage(0.1, MODEL)
    assert admission.exhausted and "daily" in admission.exhausted_reason
    await admission.release()
    await other.release()
    denied = await _denied(access.admit(principal, MODEL))
    assert (denied.close_code, denied.code) == (4402, "quota_exceeded")
    assert "daily" in denied.reason


async def test_monthly_quota_and_server_defaults(make_access: MakeAccess) -> None:
    access = await make_access(defaults=Quotas(max_concurrent_streams=1,
                                               audio_seconds_per_month=3.0))
    _, secret = await _key(access)  # no limits of its own: the server defaults apply
    principal = await access.authenticate(secret)
    admission = await access.admit(principal, MODEL)
    assert (await _denied(access.admit(principal, MODEL))).close_code == 4429
    await admission.record_usage(3.0, MODEL)
    assert admission.exhausted and "monthly" in admission.exhausted_reason
    await admission.release()
    assert (await _denied(access.admit(principal, MODEL))).close_code == 4402
    # 0 on the key = unlimited, overriding the defaults.
    _, free = await _key(access, max_concurrent_streams=0, audio_seconds_per_month=0)
    unlimited = await access.authenticate(free)
    held = [await access.admit(unlimited, MODEL) for _ in range(3)]
    for admission in held:
        await admission.release()


async def test_tokens_have_the_key_rights_and_die_with_it(make_access: MakeAccess) -> None:
    access = await make_access()
    key_id, secret = await _key(access, allowed_models=["local.*"])
    principal = await access.authenticate(secret)
    token, _ = await access.mint_token(principal, 60)
    via_token = await access.authenticate(token)
    assert via_token.via_token and via_token.key_id == key_id
    await (await access.admit(via_token, MODEL)).release()
    assert (await _denied(access.admit(via_token, "deepgram.nova-3"))).close_code == 4403
    assert (await _denied(access.mint_token(via_token, 60))).close_code == 4403
    other_process = await make_access()
    await other_process.authenticate(token)
    await access.store.revoke(key_id)
    for acc in (access, other_process):
        assert (await _denied(acc.authenticate(token))).close_code == 4401


async def test_crashed_process_leases_expire(make_access: MakeAccess) -> None:
    crashed = await make_access(lease_ttl=0.6)
    survivor = await make_access(lease_ttl=0.6)
    _, secret = await _key(crashed, max_concurrent_streams=1)
    principal = await crashed.authenticate(secret)
    await crashed.admit(principal, MODEL)
    assert crashed._heartbeat is not None
    crashed._heartbeat.cancel()  # the process dies: nobody renews or releases its lease
    assert (await _denied(survivor.admit(principal, MODEL))).close_code == 4429
    started = time.monotonic()
    while True:
        try:
            admission = await survivor.admit(principal, MODEL)
            break
        except AccessDenied:
            assert time.monotonic() - started < 5
            await asyncio.sleep(0.05)
    assert 0.3 < time.monotonic() - started < 2.0
    await admission.release()


async def test_heartbeat_keeps_live_leases(make_access: MakeAccess) -> None:
    holder = await make_access(lease_ttl=0.6)
    other = await make_access(lease_ttl=0.6)
    _, secret = await _key(holder, max_concurrent_streams=1)
    principal = await holder.authenticate(secret)
    admission = await holder.admit(principal, MODEL)
    for _ in range(8):  # 1.6 s: several lease lifetimes, renewed every 0.2 s
        await asyncio.sleep(0.2)
        assert (await _denied(other.admit(principal, MODEL))).close_code == 4429
    await admission.release()
    await (await other.admit(principal, MODEL)).release()
