"""Scene classification (/v1/vision/scene): an ImageNet classifier, top-1 label and confidence.

No Places365 model with a usable licence was obtainable, so the scene label is the ImageNet class of the whole
picture (e.g. "military uniform", "macaw"); the manifest's `classification` model can be swapped for one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ...accelerators.base import Session
from ..registry import LoadedTask, ModelRegistry, ModelUnavailable
from .decoders import dequantize
from .image import decode_image
from .preprocess import Preprocessor

TASK = "scene"
MODEL = "mobilenet_v2_imagenet"


@dataclass(frozen=True, slots=True)
class Classification:
    label: str
    confidence: float
    inference_ms: float
    process_ms: float


def short_label(line: str) -> str:
    """ImageNet lines list synonyms ("tench, Tinca tinca"): the first one is the common name."""
    return line.split(",")[0].strip()


class SceneTask:
    def __init__(self, loaded: LoadedTask, pre: Preprocessor, labels: list[str], max_pixels: int) -> None:
        self.loaded = loaded
        self.pre = pre
        self.labels = [short_label(label) for label in labels]
        self.max_pixels = max_pixels

    def _run(self, session: Session, image: bytes | np.ndarray) -> Classification:
        t0 = time.perf_counter()
        bgr = decode_image(image, self.max_pixels) if isinstance(image, bytes) else image
        tensor, _ = self.pre(bgr)
        t1 = time.perf_counter()
        out = session.run([tensor])[0]
        t2 = time.perf_counter()
        scores = dequantize(out, session.outputs[0]).reshape(-1)
        # Index 0 is ImageNet's "background" in this 1001-class export: never a scene.
        start = 1 if len(scores) == len(self.labels) and self.labels[0] == "background" else 0
        best = start + int(np.argmax(scores[start:]))
        label = self.labels[best] if best < len(self.labels) else str(best)
        self.loaded.record((t2 - t1) * 1000)
        return Classification(label, float(np.clip(scores[best], 0.0, 1.0)), (t2 - t1) * 1000,
                              (time.perf_counter() - t0) * 1000)

    async def classify(self, image: bytes | np.ndarray) -> Classification:
        return await self.loaded.run(lambda s: self._run(s, image))


def _build(registry: ModelRegistry, max_pixels: int) -> LoadedTask:
    entry = registry.manifest.models[MODEL]
    if entry.input is None:
        raise ModelUnavailable(f"model {MODEL} has no input spec in the manifest")
    spec = entry.input
    labels = registry.labels(MODEL)

    def warm(session: Session) -> None:
        session.run([Preprocessor(spec, session.inputs[0])(np.zeros((32, 32, 3), np.uint8))[0]])

    opened = registry.open_sessions(MODEL, registry.task_workers(), warm)
    loaded = LoadedTask(TASK, registry.task_pool(TASK, list(opened.sessions)), opened.kind, [opened.path.name],
                        opened.fallback_reasons)
    loaded.engine = SceneTask(loaded, Preprocessor(spec, opened.sessions[0].inputs[0]), labels, max_pixels)
    return loaded


async def get_scene_task(registry: ModelRegistry, max_pixels: int) -> SceneTask:
    loaded = await registry.get_task(TASK, lambda: _build(registry, max_pixels),
                                     {MODEL: registry.task_workers()})
    task: SceneTask = loaded.engine
    return task
