"""Admin, token and usage routes on a real gateway (uvicorn on loopback), memory and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis as redis_sync

from tests.servers import Gateway, RedisServer, running_gateway

ADMIN = "adm_" + "x" * 40
ADMIN_DB = 5


@pytest.fixture(scope="module", params=["memory", "redis"])
def admin_gateway(request: pytest.FixtureRequest) -> Iterator[Gateway]:
    overrides: dict[str, object] = {"admin_token": ADMIN, "failed_auth_per_minute": 100}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis")
        url = f"redis://127.0.0.1:{server.port}/{ADMIN_DB}"
        with redis_sync.Redis.from_url(url) as client:
            client.flushdb()
        overrides["redis_url"] = url
    with running_gateway(**overrides) as gw:
        yield gw


@pytest.fixture
async def http(admin_gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=admin_gateway.http_url, timeout=10) as client:
        yield client


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


async def test_key_lifecycle_over_http(http: httpx.AsyncClient) -> None:
    created = await http.post("/v1/admin/keys", headers=admin(), json={
        "name": "web", "allowed_models": ["local.*"], "sessions_per_minute": 30})
    assert created.status_code == 201
    body = created.json()
    key, secret = body["key"], body["secret"]
    assert secret.startswith("sg_live_") and key["sessions_per_minute"] == 30

    listed = (await http.get("/v1/admin/keys", headers=admin())).json()["keys"]
    assert key["id"] in [k["id"] for k in listed]
    assert secret not in str(listed) and "key_hash" not in str(listed)
    assert (await http.get(f"/v1/admin/keys/{key['id']}", headers=admin())).json() == key

    patched = await http.patch(f"/v1/admin/keys/{key['id']}", headers=admin(),
                               json={"audio_seconds_per_day": 120, "allowed_origins": ["https://a.b"]})
    assert patched.status_code == 200
    assert patched.json()["audio_seconds_per_day"] == 120
    assert patched.json()["sessions_per_minute"] == 30

    rotated = await http.post(f"/v1/admin/keys/{key['id']}/rotate", headers=admin())
    new_secret = rotated.json()["secret"]
    assert rotated.status_code == 200 and new_secret != secret
    assert (await http.get("/v1/usage", headers={"X-API-Key": secret})).status_code == 401
    assert (await http.get("/v1/usage", headers={"X-API-Key": new_secret})).status_code == 200

    revoked = await http.delete(f"/v1/admin/keys/{key['id']}", headers=admin())
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    refused = await http.get("/v1/usage", headers={"X-API-Key": new_secret})
    assert refused.status_code == 401
    assert refused.json()["error"] == {"code": "key_revoked", "message": "API key revoked"}


@pytest.mark.parametrize("method, path, body, status, code", [
    ("GET", "/v1/admin/keys/key_missing", None, 404, "key_not_found"),
    ("PATCH", "/v1/admin/keys/key_missing", {"name": "x"}, 404, "key_not_found"),
    ("POST", "/v1/admin/keys", {"name": "x", "max_concurrent_streams": -2}, 400,
     "invalid_request"),
    ("POST", "/v1/admin/keys", {"allowed_models": ["*"]}, 400, "invalid_request"),
    ("POST", "/v1/admin/keys", "not json", 400, "invalid_request"),
])
async def test_admin_errors(http: httpx.AsyncClient, method: str, path: str, body: object,
                            status: int, code: str) -> None:
    content = body if isinstance(body, str) else None
    response = await http.request(method, path, headers=admin(), content=content,
                                  json=None if content else body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_admin_token_is_required(http: httpx.AsyncClient, admin_gateway: Gateway) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Basic {ADMIN}"},
                    {"Authorization": f"Bearer {admin_gateway.dev_key}"}):
        response = await http.get("/v1/admin/keys", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


async def test_tokens_over_http(http: httpx.AsyncClient, admin_gateway: Gateway) -> None:
    created = (await http.post("/v1/admin/keys", headers=admin(), json={"name": "t"})).json()
    secret = created["secret"]
    for how in ({"headers": {"Authorization": f"Bearer {secret}"}},
                {"headers": {"X-API-Key": secret}}, {"params": {"api_key": secret}}):
        minted = await http.post("/v1/auth/tokens", json={"ttl_seconds": 60}, **how)  # type: ignore[arg-type]
        assert minted.status_code == 201, minted.text
    token = minted.json()["token"]
    usage = await http.get("/v1/usage", params={"api_key": token})
    assert usage.status_code == 200 and usage.json()["key_id"] == created["key"]["id"]
    too_long = await http.post("/v1/auth/tokens", json={"ttl_seconds": 601},
                               headers={"X-API-Key": secret})
    assert too_long.status_code == 400 and "ttl_seconds" in too_long.json()["error"]["message"]
    from_token = await http.post("/v1/auth/tokens", json={"ttl_seconds": 60},
                                 headers={"X-API-Key": token})
    assert from_token.status_code == 403
    assert (await http.post("/v1/auth/tokens", json={})).status_code == 401
    await http.delete(f"/v1/admin/keys/{created['key']['id']}", headers=admin())
    assert (await http.get("/v1/usage", params={"api_key": token})).status_code == 401


def test_admin_api_disabled_without_token(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.http_url}/v1/admin/keys", headers=admin())
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_disabled"


def test_failed_attempts_are_limited_per_address() -> None:
    with running_gateway(admin_token=ADMIN, failed_auth_per_minute=3) as gw:
        with httpx.Client(base_url=gw.http_url) as client:
            codes = [client.get("/v1/usage", headers={"X-API-Key": "sg_live_guess"}).status_code
                     for _ in range(4)]
            assert codes == [401, 401, 401, 429]
            blocked = client.get("/v1/usage", headers={"X-API-Key": gw.dev_key})
            assert blocked.status_code == 429 and 1 <= int(blocked.headers["Retry-After"]) <= 60
            assert client.get("/v1/admin/keys", headers=admin()).status_code == 200
