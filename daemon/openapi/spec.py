"""Assemble /openapi.json from the fragments: one module per dialect or route group in `fragments/`, each next to
nothing but its own routes, so a new route means a new or longer fragment and never an edit of a shared file."""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
from functools import cache
from types import ModuleType
from typing import Any

from ..version import VERSION
from . import fragments, parts

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAIN_ONLY = "x-perch-listeners"
FUZZ = "x-perch-fuzz"

DESCRIPTION = """Perch (`perchd`) serves the REST dialects that tools already speak, on two listeners:

* the **main port** (32168): CodeProject.AI semantics for the CodeProject/DeepStack routes (a refusal is HTTP 200
  with `success: false`, `error` and the real status in `code`), plus the Ultralytics HUB, Roboflow, RAYPACK and
  RAPYD dialects, each with its own error shape and real statuses;
* the **DeepStack port** (`legacy_port`, 5000 by default, 0 turns it off): the same routes with real HTTP statuses
  (400 bad input, 401 bad key, 403 disabled, 500 server, 503 queue full). `/metrics` is served on the main port only.

Every route answers 404 (`{success: false, error}`) for paths that match no route, on both ports. API keys are off
by default; when `auth.api_keys` lists a key or an account exists, each dialect wants one where its clients send it
(see the security schemes), and `Authorization: Bearer` works everywhere. The only 5xx a healthy daemon gives is
503 when a model's queue is full (with `Retry-After: 1`)."""


def load_fragments(everything: bool = False) -> list[ModuleType]:
    """Every fragment module, by ORDER (then name): the order of the groups on the API page. One whose REQUIRES
    module is absent is left out, unless `everything` (tests check those fragments too)."""
    found = []
    for info in pkgutil.iter_modules(fragments.__path__):
        module = importlib.import_module(f"{fragments.__name__}.{info.name}")
        requires = getattr(module, "REQUIRES", None)
        if requires and not everything and importlib.util.find_spec(requires) is None:
            continue
        found.append(module)
    return sorted(found, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_spec(everything: bool = False) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    tags: list[dict[str, str]] = []
    schemas: dict[str, Any] = dict(parts.SCHEMAS)
    for module in load_fragments(everything):
        tags += getattr(module, "TAGS", [])
        for name, schema in getattr(module, "SCHEMAS", {}).items():
            if name in schemas and schemas[name] != schema:
                raise ValueError(f"{module.__name__}: schema {name!r} is already defined differently")
            schemas[name] = schema
        for path, item in module.PATHS.items():
            merged = paths.setdefault(path, {})
            clash = [m for m in item if m in METHODS and m in merged]
            if clash:
                raise ValueError(f"{module.__name__}: {', '.join(clash).upper()} {path} is described twice")
            merged.update(item)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Perch (perchd)", "version": VERSION, "description": DESCRIPTION,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "servers": [{"url": "/", "description": "The listener that serves this document"}],
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas, "securitySchemes": parts.SECURITY_SCHEMES},
    }


@cache
def spec_bytes() -> bytes:
    """The document, encoded once: it only changes with the code."""
    return json.dumps(build_spec(), separators=(",", ":"), ensure_ascii=False).encode()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every operation of the document."""
    return [(method.upper(), path, op) for path, item in spec["paths"].items()
            for method, op in item.items() if method in METHODS]
