"""Vendor-specific inference backends and the read-only hardware probe.

Nothing in this package knows about HTTP, MQTT or cameras: it turns a model file into a Session.
"""
