"""Building blocks the fragments describe their routes with: request bodies, dialect error shapes, the CodeProject
envelope, and the operation helpers that attach each dialect's responses and security to a route.

Schemas say what a client can rely on (required fields and their types) and leave room for more fields
(additionalProperties stays open): clients of these APIs ignore fields they do not know, so adding one is never a
breaking change, and the fuzzer still catches a missing or mistyped field.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]
Operation = dict[str, Any]

JSON = "application/json"
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: list[str] | tuple[str, ...] = (), **extra: Any) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), **extra}


def string(description: str | None = None, **extra: Any) -> Schema:
    return {"type": "string", **({"description": description} if description else {}), **extra}


def number(description: str | None = None, **extra: Any) -> Schema:
    return {"type": "number", **({"description": description} if description else {}), **extra}


def integer(description: str | None = None, **extra: Any) -> Schema:
    return {"type": "integer", **({"description": description} if description else {}), **extra}


def boolean(description: str | None = None) -> Schema:
    return {"type": "boolean", **({"description": description} if description else {})}


def array(items: Schema, description: str | None = None) -> Schema:
    return {"type": "array", "items": items, **({"description": description} if description else {})}


def binary(description: str) -> Schema:
    """A file part of a multipart form."""
    return {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
            "description": description}


def fraction(description: str, default: float) -> Schema:
    """A 0..1 form value (sent as text, like every form field); text that is no such number is refused."""
    return {"type": "number", "minimum": 0, "maximum": 1, "default": default, "description": description}


def form_text(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def json_content(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def form_body(fields: dict[str, Schema], required: list[str] | tuple[str, ...] = (), *,
              urlencoded: bool = True, description: str | None = None) -> dict[str, Any]:
    """A form request body: multipart (files and text fields) and, where the route takes it, urlencoded text
    fields. Fields may also come in the query string; the body wins."""
    schema = obj(fields, required)
    content: dict[str, Any] = {MULTIPART: {"schema": schema}}
    if urlencoded:
        text_only = {k: v for k, v in fields.items() if v.get("format") != "binary"}
        content[URLENCODED] = {"schema": obj(text_only, [r for r in required if r in text_only])}
    body: dict[str, Any] = {"required": bool(required), "content": content}
    if description:
        body["description"] = description
    return body


def query(name: str, schema: Schema, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def path_param(name: str, description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}


# ---- error shapes and security, per dialect -------------------------------------------------------------------

ROUTE_ERROR = "PerchError"
# Status codes a CodeProject-semantics route may stand for: on the main port they come as HTTP 200 with the
# status in `code`; on the DeepStack port (legacy_port) as the real HTTP status.
CODEPROJECT_STATUSES = {
    "400": "Bad input: no or undecodable image, a value out of range, an unknown name",
    "401": "API keys are on and the key or token is missing or wrong",
    "402": "The account of the bearer token has no credits left",
    "403": "Refused on this device (training routes)",
    "413": "The upload exceeds limits.max_upload_mb",
    "500": "The model cannot be loaded or inference failed; the message says why",
    "503": "The model's queue is full (backpressure; Retry-After: 1). The only 5xx a healthy daemon gives",
    "504": "The request waited longer than queue.timeout_s",
}

SCHEMAS: dict[str, Schema] = {
    ROUTE_ERROR: obj({
        "success": {"const": False},
        "error": string("What went wrong, in words"),
        "code": integer("On the main port (CodeProject semantics, HTTP 200): the status this error stands for"),
    }, ["success", "error"], description="Perch's error shape: every CodeProject/DeepStack route, status and "
                                         "settings routes, unknown routes (404) and wrong methods (405)"),
    "Envelope": obj({
        "success": {"const": True},
        "message": string(),
        "inferenceMs": integer(), "processMs": integer(), "analysisRoundTripMs": integer(),
        "moduleId": string(), "moduleName": string(), "command": string(),
        "inferenceDevice": string("CPU, GPU, TPU, Multi-TPU or NPU"), "executionProvider": string(),
        "canUseGPU": boolean(),
        "requestId": string(), "processedBy": string("Host name of the box"), "timestampUTC": string(),
        "code": {"const": 200},
    }, ["success", "code", "requestId", "timestampUTC"], description="Fields every CodeProject.AI answer carries"),
}

# `{}` first: keys are off by default (Blue Iris and Frigate send none); once `auth.api_keys` lists a key or an
# account exists, one of the others is required.
SECURITY_SCHEMES: dict[str, Schema] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key, or an account token from "
               "POST /v1/user/token (then optionally with the ACCOUNT-ID header). Accepted on every route."},
    "codeprojectKey": {"type": "apiKey", "in": "query", "name": "api_key", "description": "CodeProject.AI / "
                       "DeepStack: `api_key` as a form field or in the query string"},
    "raypackKey": {"type": "apiKey", "in": "query", "name": "apikey", "description": "RAYPACK: `apikey` as a "
                   "form field or in the query string"},
    "ultralyticsKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "Ultralytics HUB"},
    "roboflowKey": {"type": "apiKey", "in": "query", "name": "api_key", "description": "Roboflow"},
    "accountId": {"type": "apiKey", "in": "header", "name": "ACCOUNT-ID", "description": "RAPYD: the account id "
                  "that goes with a bearer token (optional; when sent it must match the token's account)"},
}


def security(*schemes: str) -> list[dict[str, list[str]]]:
    return [{}, *({name: []} for name in schemes), {"bearer": []}]


def _json_response(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": json_content(schema)}


def routing_errors(error: Schema | None = None, not_found: str | None = None) -> dict[str, Any]:
    """404 and 405 as every route has them: a path that matches no route and a method a route does not take
    answer in Perch's shape; a dialect's own 404 (unknown model, say) comes in its shape."""
    shape = ref(ROUTE_ERROR) if error is None else {"anyOf": [error, ref(ROUTE_ERROR)]}
    return {
        "404": _json_response(not_found or "No such route (or, for a dialect, no such model)", shape),
        "405": _json_response("This route does not take that method", ref(ROUTE_ERROR)),
    }


def codeproject(summary: str, tag: str, ok: Schema | None, *, description: str = "", body: dict[str, Any] | None = None,
                parameters: list[dict[str, Any]] | None = None, ok_description: str = "The result",
                keys: tuple[str, ...] = ("codeprojectKey",), fuzz: int | None = None) -> Operation:
    """A route with CodeProject/DeepStack semantics: errors are HTTP 200 `success:false` with `code` on the main
    port and the real status on the DeepStack port, both in Perch's error shape. `ok=None`: a route that
    always refuses."""
    refusal = ("On the main port (CodeProject semantics) a refusal is HTTP 200, with success:false and the status "
               "in `code`")
    responses: dict[str, Any] = {
        "200": _json_response(f"{ok_description}. {refusal}", {"oneOf": [ok, ref(ROUTE_ERROR)]})
        if ok is not None else _json_response(refusal, ref(ROUTE_ERROR)),
    }
    for status, why in CODEPROJECT_STATUSES.items():
        responses[status] = _json_response(f"DeepStack port: {why}", ref(ROUTE_ERROR))
    responses.update(routing_errors())
    return operation(summary, tag, responses, description=description, body=body, parameters=parameters,
                     keys=keys, fuzz=fuzz)


def dialect(summary: str, tag: str, ok: dict[str, Any], error: Schema, statuses: dict[str, str], *,
            description: str = "", body: dict[str, Any] | None = None,
            parameters: list[dict[str, Any]] | None = None, keys: tuple[str, ...] = (),
            fuzz: int | None = None, error_overrides: dict[str, dict[str, Any]] | None = None) -> Operation:
    """A route of a cloud dialect: real HTTP statuses, errors in that dialect's own shape.
    `ok` is the 200 response object (content may be JSON or an image)."""
    responses: dict[str, Any] = {"200": ok}
    responses.update(routing_errors(error))
    for status, why in statuses.items():
        responses[status] = _json_response(why, error)
    responses.update(error_overrides or {})
    return operation(summary, tag, responses, description=description, body=body, parameters=parameters,
                     keys=keys, fuzz=fuzz)


def operation(summary: str, tag: str, responses: dict[str, Any], *, description: str = "",
              body: dict[str, Any] | None = None, parameters: list[dict[str, Any]] | None = None,
              keys: tuple[str, ...] = (), fuzz: int | None = None, open_route: bool = False) -> Operation:
    """`fuzz`: examples the schemathesis test draws for this operation (None = the test's default, 0 = none;
    costly models get few). `open_route`: never needs a key, even when keys are on."""
    op: Operation = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    op["security"] = [] if open_route else security(*keys)
    if fuzz is not None:
        op["x-perch-fuzz"] = fuzz
    return op


def envelope(properties: dict[str, Schema], required: list[str] | tuple[str, ...] = ()) -> Schema:
    """A CodeProject.AI success answer: the envelope plus the route's own fields."""
    return {"allOf": [ref("Envelope"), obj(properties, required)]}


BOX = {"x_min": integer(), "y_min": integer(), "x_max": integer(), "y_max": integer()}
BOX_REQUIRED = ("x_min", "y_min", "x_max", "y_max")
