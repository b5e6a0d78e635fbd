"""MQTT publisher: availability (LWT), counts, snapshots, events, stats and Home Assistant discovery.

paho-mqtt 2 runs its network loop on its own thread and reconnects by itself (connect_async + loop_start), so a
broker outage never blocks or stops the camera loops. The publisher keeps the latest retained state (counts,
camera availability, snapshots) and publishes it again on every (re)connect, because a restarted broker without
persistence has forgotten it, and re-sends discovery whenever Home Assistant announces `online`.

Events (QoS 1) raised while the broker is unreachable wait in a bounded queue and go out, in order, right after the
reconnect; when it is full the oldest are dropped, counted and logged. All topics and ids come from the box
identity (identity.py), so several boxes share one broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt

from ..cameras.config import CameraConfig
from .config import MqttConfig
from .discovery import DeviceInfo, box_entity, discovery_configs
from .identity import BoxIdentity
from .legacy import LegacyCleanup
from .topics import OFFLINE, ONLINE

log = logging.getLogger(__name__)

HA_STATUS = "status"  # <discovery_prefix>/status carries Home Assistant's birth / last-will messages
# How long after connecting retained leftovers (entities of removed cameras) are collected and cleared.
CLEANUP_WINDOW_S = 3.0


class MqttPublisher:
    """Implements the cameras' EventSink; `start`/`stop` are async, the sink methods never block."""

    def __init__(
        self,
        cfg: MqttConfig,
        cameras: Sequence[CameraConfig],
        device: DeviceInfo | None = None,
        stats: Callable[[], dict[str, Any]] | None = None,
        identity: BoxIdentity | None = None,
    ) -> None:
        self.cfg = cfg
        self.box = identity or BoxIdentity.from_config(cfg)
        self.topics = self.box.topics
        self.cameras = list(cameras)
        self.device = device or DeviceInfo()
        self._stats_fn = stats
        self._lock = threading.Lock()
        self._retained: dict[str, bytes] = {}  # topic -> payload to restore on reconnect
        self._connected = threading.Event()
        self._stopping = False
        self._stats_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cleanup_timer: threading.Timer | None = None
        self._cleanup_until = 0.0
        self.connects = 0
        self.dropped_events = 0
        self.last_error: str | None = None
        # Events raised while disconnected (JSON payloads, oldest first); guarded by _lock with _connected.
        self._pending: deque[str] = deque()
        self._outage_drops = 0
        self._legacy = LegacyCleanup(self.box)
        self._discovery = discovery_configs(self.box, self.cameras, self.device) if cfg.discovery else {}
        self._commands: dict[str, Callable[[bytes], None]] = {}  # command topic -> handler (add_entity)
        self._client = self._make_client()

    # -- connection ---------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.box.client_id, protocol=mqtt.MQTTv311)
        client.will_set(self.topics.available, OFFLINE, qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls.enabled:
            client.tls_set(
                ca_certs=str(cfg.tls.ca_certs) if cfg.tls.ca_certs else None,
                certfile=str(cfg.tls.certfile) if cfg.tls.certfile else None,
                keyfile=str(cfg.tls.keyfile) if cfg.tls.keyfile else None,
            )
            client.tls_insecure_set(cfg.tls.insecure)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        # Bound memory if the broker is slow; QoS 1 messages beyond this are refused, not queued forever.
        client.max_queued_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        cfg = self.cfg
        log.info("MQTT: connecting to %s:%d as %s (topics under %s/)", cfg.host, cfg.port, self.box.client_id,
                 self.box.base)
        self._loop = asyncio.get_running_loop()
        # connect_async never raises for an unreachable broker: the network thread keeps retrying.
        self._client.connect_async(cfg.host, cfg.port, cfg.keepalive)
        self._client.loop_start()
        self._stats_task = asyncio.create_task(self._stats_loop(), name="mqtt-stats")

    async def stop(self, timeout: float = 3.0) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        if self._cleanup_timer is not None:
            self._cleanup_timer.cancel()
        self._stopping = True
        if self.connected:
            # A clean disconnect suppresses the LWT, so say "offline" ourselves: each camera, then the box. The
            # broker handles one connection's messages in order, so the last acknowledgement covers all of them.
            for cam in self.cameras:
                self._retain(self.topics.camera_available(cam.name), OFFLINE.encode())
            info = self._client.publish(self.topics.available, OFFLINE, qos=1, retain=True)
            await asyncio.to_thread(_wait, info, timeout)
        elif self._pending:
            log.warning("MQTT: stopping while disconnected; %d queued event(s) are lost", len(self._pending))
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- paho callbacks (network thread) ------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        if reason.is_failure:
            self.last_error = f"connect refused: {reason}"
            log.warning("MQTT: %s", self.last_error)
            return
        self.connects += 1
        self.last_error = None
        log.info("MQTT: connected to %s:%d", self.cfg.host, self.cfg.port)
        client.publish(self.topics.available, ONLINE, qos=1, retain=True)
        self._publish_discovery()
        with self._lock:
            # Under the lock: what the cameras raise meanwhile goes out after this, never before, never lost, and a
            # newer count is never overwritten by the older one restored here.
            if self._outage_drops:
                log.warning("MQTT: sending %d event(s) held during the outage; %d older one(s) were dropped",
                            len(self._pending), self._outage_drops)
            elif self._pending:
                log.info("MQTT: sending %d event(s) held during the outage", len(self._pending))
            self._outage_drops = 0
            while self._pending:
                client.publish(self.topics.events, self._pending.popleft(), qos=1)
            for topic, payload in self._retained.items():
                client.publish(topic, payload, qos=1, retain=True)
            self._connected.set()
        if self.cfg.discovery:
            client.subscribe(f"{self.cfg.discovery_prefix}/{HA_STATUS}", qos=1)
        for command_topic in list(self._commands):
            client.subscribe(command_topic, qos=1)
        self._start_cleanup(client)
        # Diagnostics right away rather than one stats interval later (built on the event loop's thread).
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.publish_stats)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stopping:
            self.last_error = f"disconnected: {reason}"
            log.warning("MQTT: connection lost (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == f"{self.cfg.discovery_prefix}/{HA_STATUS}":
            if msg.payload.decode(errors="replace").strip().lower() == ONLINE:
                log.info("MQTT: Home Assistant came online; publishing discovery again")
                self._publish_discovery()
            return
        handler = self._commands.get(msg.topic)
        if handler is not None:
            # A retained command would run again on every reconnect: only live ones count.
            if not msg.retain:
                handler(bytes(msg.payload))
            return
        if msg.retain and self._legacy.offer(msg.topic, msg.payload):
            return
        # A retained message from an earlier run: keep it if it is still ours, clear it if not.
        if msg.retain and msg.payload and time.monotonic() < self._cleanup_until and not self._owned(msg.topic):
            log.info("MQTT: clearing stale retained %s", msg.topic)
            client.publish(msg.topic, b"", qos=1, retain=True)

    # -- what is ours -------------------------------------------------------------------------------------------

    def _owned(self, topic: str) -> bool:
        if topic in self._discovery or topic in self._retained:
            return True
        t = self.topics
        for cam in self.cameras:
            if topic == t.camera_available(cam.name):
                return True
            for label in cam.detect.labels:
                if topic in (t.count(cam.name, label), t.snapshot(cam.name, label)):
                    return True
        return False

    def _start_cleanup(self, client: mqtt.Client) -> None:
        """Subscribe briefly to what earlier runs may have retained; leftovers are cleared in _on_message.

        This is how removing a camera (or a label) from the config removes its Home Assistant entities: the
        broker remembers the old retained configs, we answer each one that is no longer ours with an empty one.
        """
        p = self.topics.prefix
        wildcards = [f"{p}/+/+", f"{p}/+/+/snapshot"]
        if self.cfg.discovery:
            wildcards.append(self.box.discovery_wildcard)
        wildcards += self._legacy.wildcards()
        self._cleanup_until = time.monotonic() + CLEANUP_WINDOW_S
        client.subscribe([(w, 1) for w in wildcards])

        def done() -> None:
            # Otherwise every snapshot we publish would come back to us.
            client.unsubscribe(wildcards)
            stale = self._legacy.stale_topics()
            if stale:
                log.info("MQTT: removing %d retained topic(s) of the single-box layout (upgrade)", len(stale))
            for topic in stale:
                client.publish(topic, b"", qos=1, retain=True)

        if self._cleanup_timer is not None:
            self._cleanup_timer.cancel()
        self._cleanup_timer = threading.Timer(CLEANUP_WINDOW_S, done)
        self._cleanup_timer.daemon = True
        self._cleanup_timer.start()

    def _publish_discovery(self) -> None:
        for topic, payload in self._discovery.items():
            self._client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1, retain=True)

    # -- entities owned by other parts of the daemon (daemon/update) -------------------------------------------

    def add_entity(self, component: str, object_id: str, config: dict[str, Any], command_topic: str | None = None,
                   on_command: Callable[[bytes], None] | None = None) -> str:
        """A box-level entity: its discovery config is kept and re-published like ours; `on_command` gets the
        payloads sent to `command_topic` (on paho's network thread). Returns the config topic."""
        topic, payload = box_entity(self.box, self.device, component, object_id, config)
        # New dicts rather than changes in place: paho's thread may be iterating over the old ones.
        if command_topic and on_command:
            self._commands = {**self._commands, command_topic: on_command}
            if self.connected:
                self._client.subscribe(command_topic, qos=1)
        if self.cfg.discovery:
            self._discovery = {**self._discovery, topic: payload}
            if self.connected:
                self._client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1, retain=True)
        return topic

    def retain(self, topic: str, payload: bytes) -> None:
        """Publish retained state now (when connected) and again after every reconnect."""
        self._retain(topic, payload)

    # -- EventSink ----------------------------------------------------------------------------------------------

    def _retain(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self._retained[topic] = payload
            if self._connected.is_set():
                self._client.publish(topic, payload, qos=1, retain=True)

    def camera_state(self, camera: str, online: bool) -> None:
        self._retain(self.topics.camera_available(camera), (ONLINE if online else OFFLINE).encode())

    def counts(self, camera: str, label: str, count: int) -> None:
        self._retain(self.topics.count(camera, label), str(count).encode())

    def snapshot(self, camera: str, label: str, jpeg: bytes) -> None:
        self._retain(self.topics.snapshot(camera, label), jpeg)

    def event(self, kind: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        payload = json.dumps({"type": kind, "before": before, "after": after}, separators=(",", ":"))
        with self._lock:
            if self._connected.is_set():
                self._client.publish(self.topics.events, payload, qos=1)
                return
            self._pending.append(payload)
            overflow = len(self._pending) - self.cfg.event_queue
            if overflow <= 0:
                return
            # The newest events tell what is true now; the oldest are worth least.
            for _ in range(overflow):
                self._pending.popleft()
            self.dropped_events += overflow
            self._outage_drops += overflow
            first = self._outage_drops == overflow
        if first:  # once per outage; the reconnect logs the total
            log.warning("MQTT: broker unreachable and %d events queued: dropping the oldest", self.cfg.event_queue)

    # -- stats --------------------------------------------------------------------------------------------------

    def publish_stats(self) -> None:
        if self._stats_fn is None or not self.connected:
            return
        try:
            stats = self._stats_fn()
        except Exception:
            log.exception("MQTT: building stats failed")
            return
        stats["mqtt"] = {"connects": self.connects, "dropped_events": self.dropped_events,
                         "queued_events": len(self._pending)}
        self._client.publish(
            self.topics.stats, json.dumps(stats, separators=(",", ":"), default=str), qos=0, retain=True
        )

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.stats_interval_s)
            self.publish_stats()

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "connects": self.connects,
            "dropped_events": self.dropped_events,
            "queued_events": len(self._pending),
            "box": self.box.id,
            "topics": self.box.base,
            "last_error": self.last_error,
        }


def _wait(info: mqtt.MQTTMessageInfo, timeout: float) -> None:
    # Not connected any more / queue full: the broker's LWT says "offline" for us then.
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout)
