"""Key administration, short-lived tokens and usage over HTTP (shared/API.md §3).

- ``/v1/admin/keys`` …: admin token (``Authorization: Bearer $SPEECHGATE_ADMIN_TOKEN``).
- ``POST /v1/auth/tokens`` and ``GET /v1/usage``: an API key, found as for the WebSocket,
  and the key's ``allowed_origins`` checked against the Origin header.

Bodies are JSON objects parsed by `app.safejson.loads_bounded` (a bad one is a 400 naming the
cause). The routes are listed in the app's route table (`app.main.route_table`).

Errors are ``{"error": {"code", "message"}}`` with the HTTP status of the close-code table.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from app.credentials import key_from_request
from app.errors import GatewayError, to_gateway_error
from app.safejson import MAX_JSON_BYTES, BadJson, loads_bounded
from auth import AccessDenied, GatewayAccessControl, KeyNotFound, Principal, StoreUnavailable
from auth.access import check_origin

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def error_response(error: GatewayError) -> JSONResponse:
    """The JSON error of the HTTP endpoints (admin and batch), with Retry-After if known."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse({"error": {"code": error.code, "message": error.message}},
                        status_code=error.http_status, headers=headers)


def _access(request: Request) -> GatewayAccessControl:
    access: GatewayAccessControl = request.app.state.gateway.access
    return access


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read and parsed within `app.safejson`'s limits."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise GatewayError(4413, f"request body over {MAX_JSON_BYTES} bytes",
                               code="payload_too_large")
    if not raw.strip():
        return {}
    try:
        data = loads_bounded(bytes(raw))
    except BadJson as exc:
        raise GatewayError(4400, f"request body: {exc}", code="invalid_request") from None
    if not isinstance(data, dict):
        raise GatewayError(4400, "request body must be a JSON object")
    return data


def _errors_mapped(handler: Endpoint) -> Endpoint:
    """Turn every refusal into the JSON error shape; nothing leaks a secret."""
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientDisconnect:  # the client left mid-request: nobody to answer, no error
            logger.debug("%s %s: client disconnected", request.method, request.url.path)
            return Response(status_code=400)
        except KeyNotFound as exc:
            return error_response(GatewayError(4404, f"no key with id {exc.args[0]}"[:123],
                                               code="key_not_found"))
        except ValueError as exc:
            return error_response(GatewayError(4400, str(exc)[:200]))
        except StoreUnavailable:
            return error_response(GatewayError(4503, "key store unavailable, try again shortly",
                                               code="store_unavailable", retry_after=1.0))
        except (AccessDenied, GatewayError) as exc:
            return error_response(to_gateway_error(exc))
    return endpoint


async def _require_admin(request: Request) -> None:
    """Bearer admin token, compared in constant time. Wrong tokens are counted per address
    (apart from bad API keys: a client guessing keys does not lock the operator out), and an
    address over the limit is refused before its token is even looked at."""
    configured = request.app.state.gateway.settings.admin_token
    if configured is None:
        raise GatewayError(4403, "admin API disabled: set SPEECHGATE_ADMIN_TOKEN",
                           code="admin_disabled")
    access = _access(request)
    client = _client(request)
    if client:
        client = f"admin:{client}"
    if client and access.failed_auth_per_minute > 0:
        failures, remaining = await access.backend.auth_failures(client)
        if failures >= access.failed_auth_per_minute:
            raise AccessDenied(4429, "too many failed attempts from this address",
                               retry_after=max(1.0, remaining))
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = configured.get_secret_value().encode()
    if scheme.lower() == "bearer" and given.strip() and \
            hmac.compare_digest(given.strip().encode(), expected):
        return
    if client and access.failed_auth_per_minute > 0:
        await access.backend.note_auth_failure(client)
    raise GatewayError(4401, "missing or wrong admin token", code="unauthorized")


async def _principal(request: Request) -> Principal:
    """The key holder, refused (4403) from an Origin the key does not allow, as on the
    WebSocket and batch endpoints."""
    secret = key_from_request(request.headers, request.query_params)
    principal = await _access(request).authenticate(secret, client=_client(request))
    check_origin(principal.key, request.headers.get("origin"))
    return principal


# --- admin: keys --------------------------------------------------------------------------

@_errors_mapped
async def keys_collection(request: Request) -> Response:
    await _require_admin(request)
    store = _access(request).store
    if request.method == "GET":
        return JSONResponse({"keys": [r.public() for r in await store.list()]})
    body = await _json_body(request)
    name = body.pop("name", None)
    if not isinstance(name, str):
        raise ValueError("name is required (a non-empty string)")
    record, secret = await store.create(name, **body)
    logger.info("key %s created", record.id)
    return JSONResponse({"key": record.public(), "secret": secret}, status_code=201)


@_errors_mapped
async def key_item(request: Request) -> Response:
    await _require_admin(request)
    store = _access(request).store
    key_id = request.path_params["key_id"]
    if request.method == "GET":
        return JSONResponse((await store.require(key_id)).public())
    if request.method == "PATCH":
        record = await store.update(key_id, **await _json_body(request))
        logger.info("key %s updated", key_id)
        return JSONResponse(record.public())
    record = await store.revoke(key_id)
    logger.info("key %s revoked", key_id)
    return JSONResponse(record.public())


@_errors_mapped
async def key_rotate(request: Request) -> Response:
    await _require_admin(request)
    record, secret = await _access(request).store.rotate(request.path_params["key_id"])
    logger.info("key %s rotated", record.id)
    return JSONResponse({"key": record.public(), "secret": secret})


# --- key holders: tokens and usage --------------------------------------------------------

@_errors_mapped
async def mint_token(request: Request) -> Response:
    principal = await _principal(request)
    body = await _json_body(request)
    ttl = body.get("ttl_seconds", 600)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ValueError("ttl_seconds must be a number of seconds (at most 600)")
    token, expires_at = await _access(request).mint_token(principal, float(ttl))
    return JSONResponse({"token": token, "expires_at": expires_at}, status_code=201)


@_errors_mapped
async def usage(request: Request) -> Response:
    principal = await _principal(request)
    raw_days = request.query_params.get("days", "30")
    if not raw_days.isdigit() or not 1 <= int(raw_days) <= 400:
        raise ValueError("days must be a whole number from 1 to 400")
    return JSONResponse(await _access(request).store.usage(principal.key_id, int(raw_days)))
