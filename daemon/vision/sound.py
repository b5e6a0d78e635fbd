"""Sound classification (/v1/sound/classify): WAV in, YAMNet's AudioSet label out.

YAMNet takes 0.975 s of 16 kHz mono audio in [-1, 1]; longer clips are cut into half-overlapping frames and the
class scores are averaged, which is how the model card scores a whole clip.
"""

from __future__ import annotations

import csv
import io
import struct
import time
from dataclasses import dataclass

import cv2
import numpy as np

from ...accelerators.base import Session
from ..manifest import ModelFileError, resolve
from ..registry import LoadedTask, ModelRegistry, ModelUnavailable

TASK = "sound"
MODEL = "yamnet"
RATE = 16_000
FRAME = 15_600
HOP = FRAME // 2
MAX_SECONDS = 60.0  # longer uploads are classified on their first minute


class AudioError(ValueError):
    """The upload is not a WAV file this server can read; the message is for the client."""


@dataclass(frozen=True, slots=True)
class SoundResult:
    label: str
    confidence: float
    seconds: float
    frames: int
    inference_ms: float
    process_ms: float


_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sample rate) from a RIFF/WAVE file: 8/16/24/32-bit PCM or 32/64-bit float.

    Python's `wave` module reads PCM only (not the float or extensible WAVs many recorders write), hence this.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError("the upload is not a WAV file (no RIFF/WAVE header)")
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise AudioError("the WAV file's format chunk is truncated")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _WAVE_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            samples = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        raise AudioError("the WAV file has no format or no data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1000:
        raise AudioError(f"the WAV file claims {channels} channels at {rate} Hz")
    width = bits // 8
    usable = len(samples) - len(samples) % (width * channels) if width else 0
    if tag == _WAVE_PCM and bits in (8, 16, 32):
        dtype = {8: np.uint8, 16: np.dtype("<i2"), 32: np.dtype("<i4")}[bits]
        raw = np.frombuffer(samples[:usable], dtype=dtype).astype(np.float32)
        x = (raw - 128.0) / 128.0 if bits == 8 else raw / float(2 ** (bits - 1))
    elif tag == _WAVE_PCM and bits == 24:
        b = np.frombuffer(samples[:usable], np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)).astype(np.float32)
    elif tag == _WAVE_FLOAT and bits in (32, 64):
        x = np.frombuffer(samples[:usable], dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    else:
        raise AudioError(f"unsupported WAV encoding (format {tag}, {bits} bits); send PCM or float WAV")
    if x.size < channels:
        raise AudioError("the WAV file holds no samples")
    x = x.reshape(-1, channels).mean(axis=1)
    return np.clip(np.nan_to_num(x), -1.0, 1.0), rate


def resample(x: np.ndarray, rate: int, target: int = RATE) -> np.ndarray:
    if rate == target:
        return x
    n = max(1, round(len(x) * target / rate))
    # INTER_AREA averages when shrinking (a crude anti-alias filter), interpolates when growing.
    interp = cv2.INTER_AREA if target < rate else cv2.INTER_LINEAR
    return cv2.resize(x.reshape(1, -1), (n, 1), interpolation=interp).reshape(-1)


def frames(x: np.ndarray) -> np.ndarray:
    if len(x) <= FRAME:
        return np.pad(x, (0, FRAME - len(x)))[None]
    starts = range(0, len(x) - FRAME + HOP, HOP)
    return np.stack([np.pad(x[s : s + FRAME], (0, max(0, FRAME - len(x[s : s + FRAME])))) for s in starts])


class SoundTask:
    def __init__(self, loaded: LoadedTask, labels: list[str]) -> None:
        self.loaded = loaded
        self.labels = labels

    def _run(self, session: Session, data: bytes, min_confidence: float) -> SoundResult:
        t0 = time.perf_counter()
        x, rate = read_wav(data)
        x = resample(x[: int(MAX_SECONDS * rate)], rate)
        chunks = frames(x.astype(np.float32))
        t1 = time.perf_counter()
        total = None
        for chunk in chunks:
            scores = session.run([chunk[None].astype(np.float32)])[0].reshape(-1)
            total = scores if total is None else total + scores
        t2 = time.perf_counter()
        self.loaded.record((t2 - t1) * 1000)
        assert total is not None
        mean = total / len(chunks)
        best = int(np.argmax(mean))
        confidence = float(mean[best])
        label = self.labels[best] if best < len(self.labels) else str(best)
        if confidence < min_confidence:
            label = "unknown"
        return SoundResult(label, confidence, len(x) / RATE, len(chunks), (t2 - t1) * 1000,
                           (time.perf_counter() - t0) * 1000)

    async def classify(self, data: bytes, min_confidence: float) -> SoundResult:
        return await self.loaded.run(lambda s: self._run(s, data, min_confidence))


def class_names(text: str) -> list[str]:
    """yamnet_class_map.csv: index,mid,display_name (with a header row)."""
    rows = list(csv.reader(io.StringIO(text)))
    return [r[2] for r in rows[1:] if len(r) >= 3]


def _build(registry: ModelRegistry) -> LoadedTask:
    entry = registry.manifest.models[MODEL]
    try:
        assert entry.labels is not None
        labels = class_names(resolve(registry.settings.model_dir, entry.labels).read_text())
    except ModelFileError as exc:
        raise ModelUnavailable(str(exc)) from exc

    def warm(session: Session) -> None:
        session.run([np.zeros((1, FRAME), np.float32)])

    opened = registry.open_sessions(MODEL, registry.task_workers(), warm)
    loaded = LoadedTask(TASK, registry.task_pool(TASK, list(opened.sessions)), opened.kind, [opened.path.name],
                        opened.fallback_reasons)
    loaded.engine = SoundTask(loaded, labels)
    return loaded


async def get_sound_task(registry: ModelRegistry) -> SoundTask:
    loaded = await registry.get_task(TASK, lambda: _build(registry), {MODEL: registry.task_workers()})
    task: SoundTask = loaded.engine
    return task
