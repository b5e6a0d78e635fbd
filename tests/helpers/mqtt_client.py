"""A plain MQTT subscriber for tests: records every message it receives, in order, with its retain flag."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool
    t: float  # time.time() on arrival

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode(errors="replace")


class Subscriber:
    def __init__(
        self,
        port: int,
        topics: tuple[str, ...] = ("#",),
        client_id: str = "test-subscriber",
        tls_ca: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = True,
    ) -> None:
        self.port = port
        self.topics = topics
        self.messages: list[Msg] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        # clean_session=False: a persistent session; its subscriptions and undelivered QoS 1 messages survive a
        # broker restart (with persistence) and a reconnect.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.reconnect_delay_set(1, 2)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Msg(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    def start(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("subscriber could not connect")
        time.sleep(0.2)  # let the SUBACK and retained messages arrive
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def snapshot(self) -> list[Msg]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[Msg]:
        return [m for m in self.snapshot() if m.topic == topic]

    def events(self, kind: str | None = None, prefix: str = "perch") -> list[dict[str, Any]]:
        """Events of every box under `prefix` (<prefix>/<box>/events, or <prefix>/events in the legacy layout);
        pass prefix="perch/<box>" for one box's."""
        depth = prefix.count("/")
        out = [m.json() for m in self.snapshot() if m.topic == f"{prefix}/events" or (
            m.topic.startswith(f"{prefix}/") and m.topic.endswith("/events") and m.topic.count("/") == depth + 2)]
        return [e for e in out if kind is None or e["type"] == kind]

    async def wait_for(self, pred: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
        """Poll pred() without blocking the event loop the daemon runs on; return its first truthy value."""
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                topics = sorted({m.topic for m in self.snapshot()})
                raise AssertionError(f"timed out waiting for {what}; topics seen: {topics}")
            await asyncio.sleep(0.05)
