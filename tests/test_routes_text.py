"""Text (sentiment, summary) and sound (YAMNet) routes: real lexicon and model, and the ways input goes wrong."""

from __future__ import annotations

import io
import struct
import wave
from functools import partial

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT, DEEPSTACK
from perch.daemon.vision.sound import read_wav
from perch.daemon.vision.text import split_sentences

import conftest
from conftest import MODELS, module_client, post_json

pytestmark = pytest.mark.asyncio(loop_scope="module")

cp = module_client(CODEPROJECT)
ds = module_client(DEEPSTACK)
form = partial(conftest.form, field="sound", filename="clip.wav", content_type="audio/wav")

SPEECH = (MODELS / "sound" / "test_speech_16k.wav").read_bytes()
ARTICLE = (
    "The appliance watches the driveway camera all night. "
    "It runs object detection on a small board beside the router. "
    "Detection results go to Home Assistant over MQTT. "
    "The board draws about five watts. "
    "When a car arrives, detection on the camera frame finds it and Home Assistant turns on the porch light. "
    "Nobody has to open a cloud account."
)


# ---- sentiment --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "positive"), [
    ("I love this camera, it works great!", True),
    ("Terrible, the box arrived broken", False),
])
async def test_sentiment(cp: TestClient, text: str, positive: bool) -> None:
    # Urlencoded, as the CodeProject.AI explorer sends it.
    body = await post_json(cp, "/v1/text/sentiment", {"text": text})
    assert body["success"] and body["is_positive"] is positive
    assert (body["positive_probability"] > 0.8) if positive else (body["positive_probability"] < 0.2)


@pytest.mark.parametrize("fields", [{"text": ""}, {"text": "   "}, {}])
async def test_sentiment_empty_text(cp: TestClient, ds: TestClient, fields: dict[str, str]) -> None:
    body = await post_json(cp, "/v1/text/sentiment", fields)
    assert body["success"] is False and body["code"] == 400 and "text" in body["error"]
    resp = await ds.post("/v1/text/sentiment", data=fields)
    assert resp.status == 400


# ---- summary ----------------------------------------------------------------------------------------------------

async def test_summary_picks_representative_sentences_in_order(cp: TestClient) -> None:
    body = await post_json(cp, "/v1/text/summarize", form(text=ARTICLE, num_sentences=2))
    assert body["success"], body
    chosen = split_sentences(body["summary"])
    sentences = split_sentences(ARTICLE)
    assert len(chosen) == 2 and all(s in sentences for s in chosen)
    assert [sentences.index(s) for s in chosen] == sorted(sentences.index(s) for s in chosen)
    # The sentences about detection and Home Assistant carry the text's recurring words; the wattage does not.
    assert "The board draws about five watts." not in chosen


async def test_summary_with_more_sentences_than_the_text(cp: TestClient) -> None:
    body = await post_json(cp, "/v1/text/summarize", form(text="Only one sentence here.", num_sentences=5))
    assert body["success"] and body["summary"] == "Only one sentence here."
    assert body["totalSentences"] == 1 and "only 1" in body["message"]


@pytest.mark.parametrize(("fields", "needle"), [
    ({"text": ARTICLE, "num_sentences": "two"}, "num_sentences"),
    ({"text": ARTICLE, "num_sentences": "0"}, "num_sentences"),
    ({"text": "", "num_sentences": "2"}, "text"),
])
async def test_summary_bad_input(cp: TestClient, fields: dict[str, str], needle: str) -> None:
    body = await post_json(cp, "/v1/text/summarize", fields)
    assert body["success"] is False and needle in body["error"]


# ---- sound ------------------------------------------------------------------------------------------------------

def wav_bytes(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """samples: float -1..1, shape [n] or [n, channels]; fmt: pcm8 | pcm16 | pcm24 | float32."""
    x = samples if samples.ndim == 2 else samples[:, None]
    channels = x.shape[1]
    if fmt == "float32":
        data, tag, bits = x.astype("<f4").tobytes(), 3, 32
    elif fmt == "pcm8":
        data, tag, bits = np.round(x * 127 + 128).astype(np.uint8).tobytes(), 1, 8
    elif fmt == "pcm24":
        v = np.round(x * (2**23 - 1)).astype(np.int32).reshape(-1)
        data = b"".join(struct.pack("<i", int(s))[:3] for s in v)
        tag, bits = 1, 24
    else:
        data, tag, bits = np.round(x * 32767).astype("<i2").tobytes(), 1, 16
    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def speech() -> np.ndarray:
    with wave.open(io.BytesIO(SPEECH)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


async def test_read_wav_formats_agree() -> None:
    ref, rate = read_wav(SPEECH)
    assert rate == 16000 and abs(len(ref) - 15_600) < 200
    for fmt in ("pcm8", "pcm24", "float32"):
        x, r = read_wav(wav_bytes(ref, 16000, fmt))
        assert r == 16000 and len(x) == len(ref)
        assert np.abs(x - ref).max() < (0.01 if fmt == "pcm8" else 1e-4)


async def test_speech_is_speech(cp: TestClient) -> None:
    body = await post_json(cp, "/v1/sound/classify", form(SPEECH))
    assert body["success"] and body["label"] == "Speech" and body["confidence"] > 0.8


async def test_resampled_stereo_float_and_longer_clip(cp: TestClient) -> None:
    x = speech()
    # 44.1 kHz stereo float, 3 s (the clip three times): framed, resampled and averaged.
    long = np.tile(x, 3)
    up = np.interp(np.arange(int(len(long) * 44100 / 16000)) * 16000 / 44100, np.arange(len(long)), long)
    stereo = np.stack([up, up * 0.5], axis=1)
    body = await post_json(cp, "/v1/sound/classify", form(wav_bytes(stereo, 44100, "float32")))
    assert body["success"] and body["label"] == "Speech", body


async def test_min_confidence_and_corrupt_wav(cp: TestClient, ds: TestClient) -> None:
    body = await post_json(cp, "/v1/sound/classify", form(SPEECH, min_confidence=1))
    assert body["success"] and body["label"] == "unknown"
    corrupt = [b"RIFF\x00\x00\x00\x00WAVEjunk", b"not a wav at all", SPEECH[:30],
               wav_bytes(np.zeros(100), 16000, "pcm16").replace(b"\x01\x00\x01\x00", b"\x07\x00\x01\x00", 1)]
    for data in corrupt:
        body = await post_json(cp, "/v1/sound/classify", form(data))
        assert body["success"] is False and body["code"] == 400 and "WAV" in body["error"], body
        resp = await ds.post("/v1/sound/classify", data=form(data))
        assert resp.status == 400
    body = await post_json(cp, "/v1/sound/classify", form())
    assert body["success"] is False and "sound" in body["error"]
