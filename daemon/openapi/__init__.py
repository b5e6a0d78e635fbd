"""The OpenAPI 3.1 description of every route (GET /openapi.json) and the page that shows it (GET /docs).

spec.py assembles the document from fragments/ (one module per dialect or route group); parts.py holds the
shapes the dialects share (CodeProject envelope, each dialect's error shape, security schemes). Tests hold the
routers and the document to each other and fuzz a live daemon with schemathesis against it.
"""
