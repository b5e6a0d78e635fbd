"""Home Assistant MQTT discovery: retained configs under <discovery_prefix>/<component>/<node_id>/<object_id>/config.

Topics, unique_ids and device identifiers come from the box identity (identity.py), so two boxes on one broker
have distinct entities and devices.

Per-component topics (not the newer device-based `cmps` form) work on every Home Assistant version. Every entity
has a unique_id (without one Home Assistant does not register it) and belongs to a device with identifiers. Home
Assistant drops unknown keys silently but rejects an entity with an invalid value in a known key, so only
well-known keys are used here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..cameras.config import CameraConfig
from .identity import BoxIdentity
from .topics import OFFLINE, ONLINE, Topics, label_slug


@dataclass(frozen=True)
class DeviceInfo:
    """What Home Assistant shows for the appliance device."""

    model: str = "perchd"
    sw_version: str = "0"
    manufacturer: str = "Perch"
    # Diagnostic sensors that make sense on this box.
    has_temperature: bool = False


def _availability(topics: Topics, camera: str | None) -> dict[str, Any]:
    items = [{"topic": topics.available, "payload_available": ONLINE, "payload_not_available": OFFLINE}]
    if camera is not None:
        # Camera entities are unavailable while either the daemon or that camera's stream is down.
        items.append(
            {"topic": topics.camera_available(camera), "payload_available": ONLINE, "payload_not_available": OFFLINE}
        )
    return {"availability": items, "availability_mode": "all"}


def _title(label: str) -> str:
    return label[:1].upper() + label[1:]


def box_device(box: BoxIdentity, device: DeviceInfo) -> dict[str, Any]:
    """The appliance device: box-level entities belong to it, camera devices hang off it (via_device)."""
    return box.device(device.model, device.sw_version, device.manufacturer)


def box_entity(box: BoxIdentity, device: DeviceInfo, component: str, object_id: str,
               payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(config topic, config) for an entity of the box owned elsewhere in the daemon (the update entity), with
    the same device, availability and unique_id scheme as the entities below."""
    config = {**payload, "unique_id": box.unique_id(object_id), "device": box_device(box, device),
              **_availability(box.topics, None)}
    return box.discovery_topic(component, object_id), config


def discovery_configs(
    box: BoxIdentity, cameras: Sequence[CameraConfig], device: DeviceInfo
) -> dict[str, dict[str, Any]]:
    """topic -> config payload for every entity this daemon owns now."""
    topics = box.topics
    out: dict[str, dict[str, Any]] = {}
    root_id = box.device_id
    root_device = box_device(box, device)

    def add(component: str, object_id: str, payload: dict[str, Any]) -> None:
        payload["unique_id"] = box.unique_id(object_id)
        out[box.discovery_topic(component, object_id)] = payload

    stats = topics.stats
    # Appliance diagnostics, from the periodic stats message.
    add(
        "sensor",
        "inference_ms",
        {
            "name": "Inference time",
            "state_topic": stats,
            # A JSON null renders as "None", which Home Assistant's MQTT sensor reads as "unknown"; an empty
            # string would be an invalid number for a measurement sensor.
            "value_template": "{{ value_json.inference_ms }}",
            "unit_of_measurement": "ms",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "icon": "mdi:timer-outline",
            "device": root_device,
            **_availability(topics, None),
        },
    )
    add(
        "sensor",
        "accelerator",
        {
            "name": "Accelerator",
            "state_topic": stats,
            "value_template": "{{ value_json.device }}",
            "entity_category": "diagnostic",
            "icon": "mdi:chip",
            "device": root_device,
            **_availability(topics, None),
        },
    )
    add(
        "sensor",
        "accelerator_status",
        {
            "name": "Accelerator status",
            "state_topic": stats,
            # accelerator | cpu | fallback | degraded; why, as an attribute (a state is limited to 255 characters).
            "value_template": "{{ value_json.accelerator_status }}",
            "json_attributes_topic": stats,
            "json_attributes_template": "{{ {'reason': value_json.accelerator_reason} | tojson }}",
            "entity_category": "diagnostic",
            "icon": "mdi:chip",
            "device": root_device,
            **_availability(topics, None),
        },
    )
    if device.has_temperature:
        add(
            "sensor",
            "temperature",
            {
                "name": "SoC temperature",
                "state_topic": stats,
                "value_template": "{{ value_json.temperature }}",
                "device_class": "temperature",
                "unit_of_measurement": "°C",
                "state_class": "measurement",
                "entity_category": "diagnostic",
                "device": root_device,
                **_availability(topics, None),
            },
        )

    for cam in cameras:
        name = cam.name
        cam_device = {
            "identifiers": [f"{root_id}_{name}"],
            "name": cam.display_name,
            "manufacturer": device.manufacturer,
            "model": "Camera",
            "sw_version": device.sw_version,
            "via_device": root_id,
        }
        for label in cam.detect.labels:
            ls = label_slug(label)
            count_topic = topics.count(name, label)
            add(
                "binary_sensor",
                f"{name}_{ls}_occupancy",
                {
                    "name": f"{_title(label)} occupancy",
                    "state_topic": count_topic,
                    "value_template": "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}",
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "device_class": "occupancy",
                    "device": cam_device,
                    **_availability(topics, name),
                },
            )
            add(
                "sensor",
                f"{name}_{ls}_count",
                {
                    "name": f"{_title(label)} count",
                    "state_topic": count_topic,
                    "state_class": "measurement",
                    "icon": "mdi:counter",
                    "device": cam_device,
                    **_availability(topics, name),
                },
            )
            if cam.snapshot.enabled:
                add(
                    "image",
                    f"{name}_{ls}_snapshot",
                    {
                        "name": f"{_title(label)} snapshot",
                        "image_topic": topics.snapshot(name, label),
                        "content_type": "image/jpeg",
                        "device": cam_device,
                        # The last snapshot stays worth seeing while the camera is down: daemon availability only.
                        **_availability(topics, None),
                    },
                )
        add(
            "sensor",
            f"{name}_fps",
            {
                "name": "Camera FPS",
                "state_topic": stats,
                "value_template": f"{{{{ value_json.cameras['{name}'].fps }}}}",
                "unit_of_measurement": "fps",
                "state_class": "measurement",
                "entity_category": "diagnostic",
                "icon": "mdi:speedometer",
                "device": cam_device,
                **_availability(topics, None),
            },
        )
        add(
            "sensor",
            f"{name}_detect_fps",
            {
                "name": "Detection FPS",
                "state_topic": stats,
                "value_template": f"{{{{ value_json.cameras['{name}'].detect_fps }}}}",
                "unit_of_measurement": "fps",
                "state_class": "measurement",
                "entity_category": "diagnostic",
                "icon": "mdi:speedometer-slow",
                "device": cam_device,
                **_availability(topics, None),
            },
        )
        add(
            "binary_sensor",
            f"{name}_stream",
            {
                "name": "Stream",
                "state_topic": topics.camera_available(name),
                "payload_on": ONLINE,
                "payload_off": OFFLINE,
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "device": cam_device,
                **_availability(topics, None),
            },
        )
    return out
