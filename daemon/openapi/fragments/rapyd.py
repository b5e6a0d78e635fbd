"""RAPYD-style accounts: log in for a bearer token, read the account."""

from __future__ import annotations

from typing import Any

from ..parts import JSON, URLENCODED, dialect, integer, json_content, obj, operation, ref, routing_errors, string

ORDER = 90
TAG = "Accounts (RAPYD)"
TAGS = [{"name": TAG, "description": "Accounts made with `perchd users add`: a token from POST /v1/user/token "
                                     "goes in `Authorization: Bearer` (with `ACCOUNT-ID`) on any route of any "
                                     "dialect; each successful request takes one credit."}]

SCHEMAS = {
    "RapydError": obj({"success": {"const": False}, "error": string(), "code": integer()},
                      ["success", "error", "code"]),
}
CREDENTIALS = obj({"email": string(), "password": string()}, ["email", "password"])
TOKEN = obj({"token": string(), "account_id": string(), "token_type": {"const": "Bearer"},
             "expires_in": integer("Seconds (60 minutes)"), "expires_at": string("ISO 8601, UTC")},
            ["token", "account_id", "token_type", "expires_in", "expires_at"])
ACCOUNT = obj({"account_id": string(), "email": string(),
               "credits": {"type": ["integer", "null"], "description": "null: unlimited"}, "used": integer()},
              ["account_id", "email", "credits", "used"])


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(ref("RapydError"))}


PATHS: dict[str, Any] = {
    "/v1/user/token": {"post": operation(
        "Log in: a bearer token valid for 60 minutes", TAG,
        {"200": {"description": "The token", "content": json_content(TOKEN)},
         "400": _error("The body is not {email, password}, or is larger than 16 KiB"),
         "401": _error("Wrong email or password"), **routing_errors()},
        description="JSON whatever the Content-Type says (clients send text/plain too), or a urlencoded form.",
        body={"required": True, "content": {JSON: {"schema": CREDENTIALS}, "text/plain": {"schema": CREDENTIALS},
                                            URLENCODED: {"schema": CREDENTIALS}}},
        open_route=True)},
    "/v1/user/me": {"get": dialect(
        "The account of the bearer token: email, credits, used", TAG,
        {"description": "The account", "content": json_content(ACCOUNT)}, ref("RapydError"),
        {"401": "No account token, or the account no longer exists"})},
}
# Always needs an account token, whether keys are on or not.
PATHS["/v1/user/me"]["get"]["security"] = [{"bearer": [], "accountId": []}, {"bearer": []}]
