"""The daemon describing itself: Prometheus metrics, this OpenAPI document and the page that shows it."""

from __future__ import annotations

from typing import Any

from ..parts import json_content, obj, operation, ref, routing_errors, string

ORDER = 95
TAG = "Monitoring and API description"
TAGS = [{"name": TAG, "description": "Prometheus metrics (main port only), the OpenAPI document, the API page."}]

PATHS: dict[str, Any] = {
    "/metrics": {
        "x-perch-listeners": ["main"],
        "get": operation(
            "Prometheus metrics", TAG,
            {"200": {"description": "Prometheus text exposition (OpenMetrics when the Accept header asks for it)",
                     "content": {"text/plain": {"schema": string()},
                                 "application/openmetrics-text": {"schema": string()}}},
             "401": {"description": "API keys are on and none was sent (a real 401, not CodeProject's HTTP 200, with "
                                    "WWW-Authenticate: Bearer)", "content": json_content(ref("PerchError"))},
             "402": {"description": "Bearer token of an account without credits (never: metrics cost none)",
                     "content": json_content(ref("PerchError"))},
             **routing_errors()},
            description="perch_requests_total{dialect,route,status}, perch_inference_seconds{model,device} "
                        "(histogram), perch_queue_depth{model}, perch_queue_rejected_total{model}, "
                        "perch_model_loaded{model,device}, perch_camera_fps/up{camera}, perch_mqtt_connected, "
                        "perch_temperature_celsius, perch_info, process_*. When API keys are on, send one as "
                        "a bearer token (Prometheus: `authorization: {credentials: KEY}`) or ?api_key=.",
            keys=("codeprojectKey",)),
    },
    "/openapi.json": {"get": operation(
        "This document (OpenAPI 3.1)", TAG,
        {"200": {"description": "The OpenAPI document", "content": json_content(
            obj({"openapi": string(), "paths": {"type": "object"}}, ["openapi", "paths"]))},
         **routing_errors()}, open_route=True)},
    "/docs": {"get": operation(
        "The API page: this document, readable, served from the box (no other host is asked)", TAG,
        {"200": {"description": "HTML", "content": {"text/html": {"schema": string()}}}, **routing_errors()},
        open_route=True)},
}
