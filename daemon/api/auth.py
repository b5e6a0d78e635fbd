"""API keys and account tokens for every dialect, as one aiohttp middleware.

Off by default: Blue Iris and Frigate send no key. It switches on when `auth.api_keys` lists a key or an account
exists (`perchd users add`). Then every route but the open ones wants a credential, looked for where that dialect's
clients send it — and a bearer token is accepted everywhere:

- CodeProject/DeepStack: form field `api_key` (body or query); refused with HTTP 200 success:false code 401 on the
  CodeProject listener, HTTP 401 on the DeepStack one.
- RAYPACK: form field `apikey`; 401 with the RAYPACK container and an `error`.
- Ultralytics HUB: header `x-api-key`; 401 {success: false, message}.
- Roboflow hosted: query `api_key`; 403 {"Message": "User is not authorized to access this resource"}.
- Everywhere: `Authorization: Bearer <api key or account token>`, refused in the dialect's own shape.

A request authenticated by an account token (optionally with a matching `ACCOUNT-ID` header) takes one credit
before the work and gives it back unless the answer is a success. Secrets are compared in constant time and never
logged (the request log line carries method, path and status only; the query string is not logged).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..accounts import Accounts, accounts_path
from .common import CORE, ApiError, Handler, error_response, read_form

# Health checks and the login itself never need a credential.
OPEN_PATHS = frozenset({"/v1/status/ping", "/v1/server/status/ping", "/v1/user/token", "/",
                        "/openapi.json", "/docs"})
# The dashboard's page and its script and style files: static, they must load before the page can ask for a key.
OPEN_PREFIXES = ("/ui/",)
# Requests on these paths are not "API requests with a result object": they cost no credit.
UNBILLED_PREFIXES = ("/v1/status/", "/v1/server/", "/v1/user/", "/v1/log/", "/v1/module/", "/v1/settings/",
                     "/v1/train/", "/metrics", "/roboflow/", "/cameras/")
KEY_FIELDS = ("api_key", "apikey")
# Dialects whose clients put the key in the form body (read from the form parsed once per request).
FORM_KEY_DIALECTS = frozenset({"codeproject", "raypack"})
CODEPROJECT = "codeproject"

Refusal = Callable[[web.Request, str, int], web.StreamResponse]

_DIALECT_OF: dict[Callable[..., Any], str] = {}
_REFUSALS: dict[str, Refusal] = {}


def dialect(name: str) -> Callable[[Handler], Handler]:
    """Mark a route handler as belonging to a dialect, so refusals come in that dialect's shape."""

    def mark(handler: Handler) -> Handler:
        _DIALECT_OF[handler] = name
        return handler

    return mark


def register_refusal(name: str, refusal: Refusal) -> None:
    _REFUSALS[name] = refusal


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "key" (a configured API key) or "account" (a token from /v1/user/token)
    account_id: str | None = None


def _fingerprint(secret: str) -> bytes:
    # Comparing fixed-length digests hides the keys' lengths as well as their contents.
    return hashlib.sha256(secret.encode()).digest()


class Gate:
    """What the middleware checks against: the configured keys and the account store."""

    def __init__(self, api_keys: list[str], accounts: Accounts) -> None:
        self.keys = [_fingerprint(k) for k in api_keys if k]
        self.accounts = accounts

    async def enabled(self) -> bool:
        return bool(self.keys) or await self.accounts.ahas_accounts()

    def is_key(self, secret: str) -> bool:
        probe = _fingerprint(secret)
        match = False
        for key in self.keys:  # no early exit: every key is compared
            match |= hmac.compare_digest(probe, key)
        return match

    async def authenticate(self, secrets: list[str], account_header: str | None) -> Principal | None:
        for secret in secrets[:4]:
            if self.is_key(secret):
                return Principal("key")
            account_id = await self.accounts.atoken_account(secret)
            if account_id is not None:
                if account_header and not hmac.compare_digest(account_header.encode(), account_id.encode()):
                    return None  # a token used with another account's id
                return Principal("account", account_id)
        return None


GATE: web.AppKey[Gate] = web.AppKey("auth_gate", Gate)
# Who is calling, for handlers (request storage; typed keys where aiohttp has them, 3.13+).
PRINCIPAL: Any = web.RequestKey("perch_principal", Principal) if hasattr(web, "RequestKey") else "perch_principal"


def install(app: web.Application) -> None:
    """Add the auth middleware and its gate to an app (idempotent: every cloud dialect module calls it)."""
    if GATE in app:
        return
    core = app[CORE]
    gate = Gate(core.settings.auth.api_keys, Accounts(accounts_path(core.settings.state_dir)))
    app[GATE] = gate

    async def close(_: web.Application) -> None:
        await gate.accounts.aclose()

    app.on_cleanup.append(close)
    # Innermost: the shared middleware outside it still logs the line and catches what escapes.
    app.middlewares.append(auth_middleware)


def dialect_of(request: web.Request) -> str:
    return _DIALECT_OF.get(request.match_info.handler, CODEPROJECT)


def refuse(request: web.Request, name: str, message: str, status: int) -> web.StreamResponse:
    refusal = _REFUSALS.get(name)
    if refusal is not None:
        return refusal(request, message, status)
    return error_response(request, message, status)


def header_secrets(request: web.Request) -> list[str]:
    found: list[str] = []
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        found.append(value.strip())
    if request.headers.get("x-api-key", "").strip():
        found.append(request.headers["x-api-key"].strip())
    for name in KEY_FIELDS:
        value = request.query.get(name, "").strip()
        if value:
            found.append(value)
    return found


async def form_secrets(request: web.Request) -> list[str]:
    """Key fields from a multipart or urlencoded body (parsed once; the handler gets the same parsed form)."""
    if not request.can_read_body or request.content_type not in ("multipart/form-data",
                                                                 "application/x-www-form-urlencoded"):
        return []
    try:
        form = await read_form(request)
    except ApiError as exc:
        if exc.status == 413:
            raise
        return []  # a malformed body has no key; the handler reports what is wrong with it
    return [v.strip() for k in KEY_FIELDS for v in form.fields.getall(k, []) if v.strip()]


def succeeded(response: web.StreamResponse) -> bool:
    """A success for billing: a 2xx/3xx answer that is not a CodeProject-style `success:false` body."""
    if response.status >= 400:
        return False
    body = getattr(response, "body", None)
    return not (isinstance(body, bytes) and body.startswith(b'{"success":false'))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES)
            or request.match_info.http_exception is not None):
        return await handler(request)  # open route, or no route at all (404/405 answer as usual)
    gate = request.app[GATE]
    if not await gate.enabled():
        return await handler(request)
    name = dialect_of(request)
    found = header_secrets(request)
    if not found and name in FORM_KEY_DIALECTS:
        found = await form_secrets(request)
    principal = await gate.authenticate(found, request.headers.get("ACCOUNT-ID")) if found else None
    if principal is None:
        what = "missing" if not found else "invalid"
        return refuse(request, name, f"unauthorized: {what} API key or token", 401)
    request[PRINCIPAL] = principal
    if principal.kind != "account" or request.path.startswith(UNBILLED_PREFIXES):
        return await handler(request)

    account_id = principal.account_id or ""
    reserved = await gate.accounts.areserve(account_id)
    if reserved is None:
        return refuse(request, name, "unauthorized: the account no longer exists", 401)
    if reserved is False:
        return refuse(request, name, "no credits left on this account", 402)
    ok = False
    try:
        response = await handler(request)
        ok = succeeded(response)
        return response
    finally:
        # Shielded: a client that hangs up mid-request must not keep or lose a credit by accident.
        await asyncio.shield(gate.accounts.asettle(account_id, ok, reserved))
