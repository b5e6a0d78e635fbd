"""Every CPU fallback states its reason, on every fixture board: the daemon started on the fake tree (this x86
machine has no vendor runtime, so every accelerator fails for real), then the served device is checked against the
probe's best usable accelerator; whenever they differ the reason is non-empty and says what to do — in the log,
`/v1/status/system-status`, the MQTT stats behind Home Assistant's "Accelerator status", and `perchd hardware`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from perch.daemon.__main__ import main as perchd
from perch.daemon.api.common import CODEPROJECT
from perch.daemon.app import create_app
from perch.daemon.cameras.runtime import registry_stats
from perch.daemon.config import Settings
from perch.daemon.core import Core
from perch.daemon.selection import best_usable

from conftest import MODELS, REPO

BOARDS = REPO / "tests" / "fixtures" / "boards"

# board -> (model served, device it runs on here, words the reason must contain; None = on the best usable device)
EXPECTED: dict[str, tuple[str, str, list[str] | None]] = {
    "jetson-orin-nano-jp6": ("yolox_nano", "cpu", ["tensorrt", "onnxruntime-gpu"]),
    "orangepi5-rk3588s-vendor": ("yolox_nano", "cpu", ["rknn", "rknn-toolkit-lite2"]),
    "pi5-coral-pcie": ("yolov8n", "cpu", ["edgetpu", "libedgetpu1-std"]),
    "pi5-coral-pcie-nodriver": ("ssd_mobilenet_v1", "cpu", None),
    "pi5-coral-usb-bootloader": ("yolov8n", "cpu", ["edgetpu", "libedgetpu1-std"]),
    "pi5-coral-usb-x2": ("yolov8n", "cpu", ["edgetpu", "libedgetpu1-std"]),
    "pi5-hailo8l": ("ssd_mobilenet_v1", "cpu", ["hailo", "hailo/yolov8n.hef", "perchd models import yolov8n.hef"]),
    "radxa-zero3-rk3566-no-librknnrt": ("ssd_mobilenet_v1", "cpu", None),
    "rock4d-rk3576-vendor": ("ssd_mobilenet_v1", "cpu",
                             ["RK3576", "rknn/yolox_nano_rk3576_fp16.rknn",
                              "perchd models convert yolox_nano --target rk3576"]),
    "rock5b-rk3588-mainline-rocket": ("ssd_mobilenet_v1", "cpu", None),
    "x86-plain": ("ssd_mobilenet_v1", "cpu", None),
}


def test_every_fixture_board_is_covered() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in BOARDS.iterdir() if p.is_dir())


# Edge TPU boards: ai-edge-litert's Delegate.__del__ raises on a delegate whose library failed to load (vendor bug).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("board", sorted(EXPECTED))
async def test_served_device_and_reason(board: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    model_id, device, words = EXPECTED[board]
    caplog.set_level(logging.INFO, logger="perch")
    settings = Settings(model_dir=MODELS, state_dir=tmp_path / "s", cache_dir=tmp_path / "c", legacy_port=0,
                        cpu={"workers": 1}, hardware_root=BOARDS / board)
    core = Core(settings)
    await core.start()
    try:
        best = best_usable(core.hardware)
        assert (words is None) == (best == device), f"{board}: best usable {best}, served on {device}"
        model = core.registry.loaded[model_id]
        assert model.kind == device
        async with TestClient(TestServer(create_app(core, CODEPROJECT))) as cp:
            status = await (await cp.get("/v1/status/system-status")).json()
        served = next(m for m in status["models"] if m["id"] == model_id)
        state = status["acceleratorStatus"]
        mqtt = registry_stats(core.registry)()
        if words is None:
            assert state["state"] == "cpu" and mqtt["accelerator_status"] == "cpu"
            return
        reason = "; ".join(served["fallbackReasons"])
        assert reason, f"{board}: served on {device} instead of {best} without a reason"
        for word in words:
            assert word in reason, (word, reason)
        assert state["state"] == "fallback" and state["reason"] == reason
        assert mqtt["accelerator_status"] == "fallback" and mqtt["accelerator_reason"] == reason
        assert f"model {model_id} runs on cpu after falling back" in caplog.text and words[-1] in caplog.text
    finally:
        await core.close()
    # `perchd hardware` on the same tree says the same before anything is loaded.
    monkeypatch.setenv("PERCHD_MODEL_DIR", str(MODELS))
    monkeypatch.setenv("PERCHD_CONFIG", "")
    assert perchd(["hardware", "--root", str(BOARDS / board)]) == 0
    printed = capsys.readouterr().out
    if board in ("pi5-hailo8l", "rock4d-rk3576-vendor"):
        # Nothing for the accelerator in the model directory: decided before loading.
        assert f"detection: {model_id} on cpu" in printed and words[-1] in printed
    else:
        # The file is here; whether its runtime loads shows when the daemon starts (above).
        assert f"on {best}" in printed
