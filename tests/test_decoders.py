"""Each detection model and decoder on real photos: same objects as MODELS.md reports."""

from __future__ import annotations

import pytest

from perch.daemon.config import Settings
from perch.daemon.core import Core

from conftest import image_bytes


@pytest.mark.parametrize(
    ("model_id", "photo", "expected"),
    [
        ("yolox_nano", "dog_bicycle_car.jpg", {"dog", "bicycle", "car"}),
        ("yolox_nano", "pets.jpg", {"dog"}),
        ("yolov8n", "dog_bicycle_car.jpg", {"dog", "bicycle", "truck"}),
        ("ssd_mobilenet_v1", "kite_and_cold.jpg", {"person", "kite"}),
    ],
)
async def test_model_on_photo(settings: Settings, model_id: str, photo: str, expected: set[str]) -> None:
    core = Core(settings)
    try:
        model = await core.registry.get(model_id)
        result = await model.detect_bytes(image_bytes(photo), 0.4, 50_000_000)
        labels = [d.label for d in result.detections]
        assert expected <= set(labels), labels
        scores = [d.confidence for d in result.detections]
        assert scores == sorted(scores, reverse=True)
        for d in result.detections:
            assert 0 <= d.x_min < d.x_max <= result.width and 0 <= d.y_min < d.y_max <= result.height
    finally:
        await core.close()


async def test_two_dogs_are_not_merged_by_nms(settings: Settings) -> None:
    core = Core(settings)
    try:
        model = await core.registry.get("yolox_nano")
        result = await model.detect_bytes(image_bytes("pets.jpg"), 0.5, 50_000_000)
        dogs = [d for d in result.detections if d.label == "dog"]
        assert len(dogs) == 2, dogs
        left, right = sorted(dogs, key=lambda d: d.x_min)
        assert left.x_max < right.x_min, dogs  # side by side, not one box merged over both
    finally:
        await core.close()
