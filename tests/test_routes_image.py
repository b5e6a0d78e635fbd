"""Image routes: background removal, portrait filter, super-resolution and cartoonise with the real models."""

from __future__ import annotations

import asyncio
import base64
from functools import partial

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from perch.daemon.api.common import CODEPROJECT
from perch.daemon.core import Core
from perch.daemon.vision import enhance

import conftest
from conftest import image_bytes, module_client, post_json

pytestmark = pytest.mark.asyncio(loop_scope="module")

cp = module_client(CODEPROJECT)
form = partial(conftest.form, filename="photo.png", content_type="application/octet-stream")


def png(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    return buf.tobytes()


def decode(b64: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), flags)
    assert img is not None
    return img


@pytest.mark.parametrize("matting", ["false", "true"])
async def test_remove_background_gives_png_with_alpha(cp: TestClient, matting: str) -> None:
    body = await post_json(cp, "/v1/image/removebackground", form(image_bytes("grace_hopper.bmp"),
                                                                 use_alphamatting=matting))
    assert body["success"], body
    img = decode(body["imageBase64"])
    assert img.shape == (600, 512, 4)
    alpha = img[:, :, 3]
    # Grace Hopper fills the middle of the portrait; the top corners are backdrop.
    assert alpha[200:400, 170:340].mean() > 200
    assert alpha[:60, :60].mean() < 30 and alpha[:60, -60:].mean() < 30
    original = cv2.imdecode(np.frombuffer(image_bytes("grace_hopper.bmp"), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(img[:, :, :3], original), "colour channels are the photo's own"


async def test_remove_background_bad_flag(cp: TestClient) -> None:
    body = await post_json(cp, "/v1/image/removebackground", form(image_bytes("face.jpg"), use_alphamatting="maybe"))
    assert body["success"] is False and "use_alphamatting" in body["error"]


async def test_portrait_filter_blurs_only_the_background(cp: TestClient) -> None:
    original = cv2.imdecode(np.frombuffer(image_bytes("grace_hopper.bmp"), np.uint8), cv2.IMREAD_COLOR)
    strong = decode((await post_json(cp, "/v1/image/portraitfilter", form(image_bytes("grace_hopper.bmp"),
                                                                          strength=1)))["filtered_image"])
    none = decode((await post_json(cp, "/v1/image/portraitfilter", form(image_bytes("grace_hopper.bmp"),
                                                                        strength=0)))["filtered_image"])
    assert strong.shape == original.shape == none.shape

    def change(img: np.ndarray, ys: slice, xs: slice) -> float:
        return float(np.abs(img[ys, xs].astype(np.int16) - original[ys, xs].astype(np.int16)).mean())

    person, corner = (slice(250, 400), slice(180, 330)), (slice(0, 80), slice(0, 80))
    # Strength 0 only re-encodes; strength 1 blurs the backdrop far more than the person.
    assert change(none, *corner) < 3 and change(none, *person) < 3
    assert change(strong, *corner) > 2 * change(strong, *person)
    body = await post_json(cp, "/v1/image/portraitfilter", form(image_bytes("face.jpg"), strength=1.5))
    assert body["success"] is False and "strength" in body["error"]


async def test_super_resolution_beats_bicubic(cp: TestClient) -> None:
    original = cv2.imdecode(np.frombuffer(image_bytes("face.jpg"), np.uint8), cv2.IMREAD_COLOR)[:354, :512]
    small = cv2.resize(original, (256, 177), interpolation=cv2.INTER_AREA)
    body = await post_json(cp, "/v1/image/superresolution", form(png(small)))
    assert body["success"], body
    up = decode(body["imageBase64"], cv2.IMREAD_COLOR)
    assert up.shape == original.shape
    bicubic = cv2.resize(small, (512, 354), interpolation=cv2.INTER_CUBIC)
    # ESPCN is about 1 dB better than bicubic on this photo.
    assert cv2.PSNR(up, original) > cv2.PSNR(bicubic, original) + 0.3


async def test_super_resolution_refuses_huge_input(cp: TestClient) -> None:
    big = png(np.zeros((1200, 1600, 3), np.uint8))
    body = await post_json(cp, "/v1/image/superresolution", form(big))
    assert body["success"] is False and body["code"] == 400 and "megapixels" in body["error"]


async def test_cartoonise(cp: TestClient) -> None:
    original = cv2.imdecode(np.frombuffer(image_bytes("face.jpg"), np.uint8), cv2.IMREAD_COLOR)
    body = await post_json(cp, "/v1/image/cartoonise", form(image_bytes("face.jpg")))
    assert body["success"], body
    cartoon = decode(body["imageBase64"], cv2.IMREAD_COLOR)
    assert cartoon.shape == original.shape
    diff = np.abs(cartoon.astype(np.int16) - original.astype(np.int16)).mean()
    # Changed, but still the same picture (not noise): flat colours, same layout.
    assert 3 < diff < 60
    assert np.corrcoef(cv2.cvtColor(cartoon, cv2.COLOR_BGR2GRAY).ravel(),
                       cv2.cvtColor(original, cv2.COLOR_BGR2GRAY).ravel())[0, 1] > 0.7
    body = await post_json(cp, "/v1/image/cartoonise", form(image_bytes("face.jpg"), model="paprika"))
    assert body["success"] is False and "whitebox" in body["error"]


async def test_cartoon_model_is_unloaded_when_idle_and_reloaded_on_use(cp: TestClient, module_core: Core,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Long enough that the answer (encoded after the GAN ran) is back before the task goes, on a busy machine too.
    monkeypatch.setattr(enhance, "CARTOON_IDLE_S", 1.0)
    small = png(cv2.resize(cv2.imdecode(np.frombuffer(image_bytes("face.jpg"), np.uint8), 1), (128, 89)))
    assert (await post_json(cp, "/v1/image/cartoonise", form(small, model="whitebox_int8")))["success"]
    key = "cartoon:cartoon_gan_int8"
    assert key in module_core.registry.tasks
    pool = module_core.registry.tasks[key].pool
    for _ in range(50):
        await asyncio.sleep(0.1)
        if key not in module_core.registry.tasks:
            break
    assert key not in module_core.registry.tasks, "the GAN's memory is given back when unused"
    for _ in range(50):
        if all(not t.is_alive() for t in pool._threads):
            break
        await asyncio.sleep(0.1)
    assert all(not t.is_alive() for t in pool._threads)
    assert (await post_json(cp, "/v1/image/cartoonise", form(small, model="whitebox_int8")))["success"]
