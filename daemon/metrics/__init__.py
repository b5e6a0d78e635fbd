"""Prometheus metrics: request counts per dialect and route, inference-time histograms, and gauges read from the
live daemon (queues, models, cameras, MQTT, temperature) when Prometheus scrapes `GET /metrics`."""
