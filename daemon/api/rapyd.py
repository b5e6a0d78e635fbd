"""RAPYD-style account routes (seed 002): `POST /v1/user/token` and `GET /v1/user/me`.

The token route takes {"email", "password"} as JSON whatever the Content-Type says (the seed's clients send
`text/plain` as well as `application/json`), or as form fields, and answers {token, account_id, token_type,
expires_in, expires_at}. The token then goes in `Authorization: Bearer …` (with `ACCOUNT-ID: <account_id>`) on any
route of any dialect; see auth.py for credits. `GET /v1/user/me` answers {account_id, email, credits, used}
(credits null = unlimited). Errors: {success: false, error, code} with the real HTTP status.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..accounts import TOKEN_TTL_S
from . import auth
from .common import json_response

NAME = "rapyd"
MAX_LOGIN_BODY = 16 * 1024


def _error(message: str, status: int) -> web.Response:
    return json_response({"success": False, "error": message, "code": status}, status)


def _refusal(request: web.Request, message: str, status: int) -> web.Response:
    return _error(message, status)


async def _credentials(request: web.Request) -> tuple[str, str]:
    if request.content_length is not None and request.content_length > MAX_LOGIN_BODY:
        raise ValueError("the request body is too large for a login")
    try:
        raw = await request.content.read(MAX_LOGIN_BODY + 1)
    except (HttpProcessingError, web.RequestPayloadError) as exc:  # e.g. a Content-Encoding the body is not in
        raise ValueError("the request body cannot be read: " + " ".join(str(exc).split())) from exc
    if len(raw) > MAX_LOGIN_BODY:
        raise ValueError("the request body is too large for a login")
    data: Any
    if request.content_type == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qs

        data = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    else:
        try:
            data = json.loads(raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError('the body must be JSON: {"email": "…", "password": "…"}') from exc
    if not isinstance(data, dict):
        raise ValueError('the body must be a JSON object: {"email": "…", "password": "…"}')
    email, password = data.get("email"), data.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        raise ValueError("email and password are required")
    return email, password


@auth.dialect(NAME)
async def token(request: web.Request) -> web.Response:
    try:
        email, password = await _credentials(request)
    except ValueError as exc:
        return _error(str(exc), 400)
    gate = request.app[auth.GATE]
    issued = await gate.accounts.alogin(email, password)
    if issued is None:
        return _error("invalid email or password", 401)
    account_id, value, expires = issued
    return json_response({
        "token": value,
        "account_id": account_id,
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL_S,
        "expires_at": datetime.fromtimestamp(expires, timezone.utc).isoformat(timespec="seconds"),
    })


@auth.dialect(NAME)
async def me(request: web.Request) -> web.Response:
    gate = request.app[auth.GATE]
    principal = request.get(auth.PRINCIPAL)
    if principal is None:
        # Auth may be off (no keys configured): this route still needs an account token.
        principal = await gate.authenticate(auth.header_secrets(request), request.headers.get("ACCOUNT-ID"))
    if principal is None or principal.kind != "account" or principal.account_id is None:
        return _error("an account token is required: Authorization: Bearer <token from POST /v1/user/token>", 401)
    account = await gate.accounts.aget(principal.account_id)
    if account is None:
        return _error("the account no longer exists", 401)
    return json_response(account.public())


def add_routes(app: web.Application) -> None:
    auth.install(app)
    auth.register_refusal(NAME, _refusal)
    app.router.add_post("/v1/user/token", token)
    app.router.add_get("/v1/user/me", me)
