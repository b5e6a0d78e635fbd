"""The hardware probe on fake board trees (tests/fixtures/boards/*: /proc, /sys, /dev, /etc, /usr/lib)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from perch.accelerators.base import KINDS
from perch.accelerators.probe import HardwareReport, probe

BOARDS = Path(__file__).parent / "fixtures" / "boards"

# board -> (model, soc, cores, {kind: (present, usable, devices, words the reason must contain)})
# Kinds not listed must be absent (present=False, usable=False, no devices). CPU is checked for every board.
MATRIX: dict[str, tuple[str | None, str | None, int, dict[str, tuple[bool, bool, list[str], list[str]]]]] = {
    "orangepi5-rk3588s-vendor": ("Orange Pi 5", "rk3588", 8, {
        "rknn": (True, True, ["npu-core:0", "npu-core:1", "npu-core:2"], ["RK3588", "3 cores", "librknnrt"]),
    }),
    "radxa-zero3-rk3566-no-librknnrt": ("Radxa ZERO 3", "rk3566", 4, {
        "rknn": (True, False, ["npu-core:0"], ["librknnrt.so is missing", "install"]),
    }),
    "rock5b-rk3588-mainline-rocket": ("Radxa ROCK 5B", "rk3588", 8, {
        "rknn": (True, False, ["npu-core:0", "npu-core:1", "npu-core:2"],
                 ["rocket", "/dev/accel/accel0", "librknnrt cannot use", "vendor kernel"]),
    }),
    "rock4d-rk3576-vendor": ("Radxa ROCK 4D", "rk3576", 8, {
        "rknn": (True, True, ["npu-core:0", "npu-core:1"], ["RK3576", "2 cores"]),
    }),
    "pi5-coral-usb-bootloader": ("Raspberry Pi 5 Model B Rev 1.0", "bcm2712", 4, {
        "edgetpu": (True, True, ["usb:0"], ["udev", "plugdev"]),
    }),
    "pi5-coral-usb-x2": ("Raspberry Pi 5 Model B Rev 1.0", "bcm2712", 4, {
        "edgetpu": (True, True, ["usb:0", "usb:1"], ["x2", "USB 3"]),
    }),
    "pi5-coral-pcie-nodriver": ("Raspberry Pi 5 Model B Rev 1.0", "bcm2712", 4, {
        "edgetpu": (True, False, [], ["PCIe Coral found", "/dev/apex_0 is missing", "gasket/apex driver"]),
    }),
    "pi5-coral-pcie": ("Raspberry Pi 5 Model B Rev 1.0", "bcm2712", 4, {
        "edgetpu": (True, True, ["pci:0"], ["libedgetpu"]),
    }),
    "pi5-hailo8l": ("Raspberry Pi 5 Model B Rev 1.0", "bcm2712", 4, {
        "hailo": (True, True, ["hailo0"], ["Hailo-8"]),
    }),
    "jetson-orin-nano-jp6": ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "tegra234", 6, {
        "tensorrt": (True, True, ["cuda:0"], ["Orin", "TensorRT 10.3.0"]),
    }),
    "x86-plain": ("Intel Corporation NUC8i5BEH", None, 4, {}),
}


def test_every_fixture_is_in_the_matrix() -> None:
    boards = [p.name for p in BOARDS.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    assert sorted(boards) == sorted(MATRIX)


@pytest.mark.parametrize("board", sorted(MATRIX))
def test_fixture_matrix(board: str) -> None:
    model, soc, cores, expected = MATRIX[board]
    report = probe(BOARDS / board)
    assert report.board.model == model
    assert report.board.soc == soc
    assert report.board.cores == cores
    assert [a.kind for a in report.accelerators] == list(KINDS)
    for acc in report.accelerators:
        assert acc.reason, f"{board}/{acc.kind}: every kind needs a reason"
        if acc.kind == "cpu":
            assert (acc.present, acc.usable, acc.devices) == (True, True, ["cpu"])
            assert str(cores) in acc.reason
            continue
        present, usable, devices, words = expected.get(acc.kind, (False, False, [], []))
        assert (acc.present, acc.usable, acc.devices) == (present, usable, devices), (board, acc)
        for word in words:
            assert word in acc.reason, f"{board}/{acc.kind}: {word!r} not in {acc.reason!r}"
    usable = [k for k, v in expected.items() if v[1]] + ["cpu"]
    assert report.usable_kinds() == usable


def test_board_details() -> None:
    opi = probe(BOARDS / "orangepi5-rk3588s-vendor").board
    assert (opi.family, opi.arch, opi.kernel) == ("rockchip", "aarch64", "6.1.43-rockchip-rk3588")
    assert opi.cpu_model == "4x Cortex-A55 + 4x Cortex-A76"
    assert "rockchip,rk3588" in opi.compatible
    assert probe(BOARDS / "pi5-hailo8l").board.family == "raspberrypi"
    assert probe(BOARDS / "jetson-orin-nano-jp6").get("tensorrt").details["l4t"] == "R36.4.3"  # type: ignore[union-attr]
    x86 = probe(BOARDS / "x86-plain").board
    assert (x86.family, x86.arch, x86.cpu_model) == (None, "x86_64", "Intel(R) Core(TM) i5-8250U CPU @ 1.60GHz")


def test_rknn_details_name_the_toolkit_target() -> None:
    rknn = probe(BOARDS / "orangepi5-rk3588s-vendor").get("rknn")
    assert rknn is not None
    assert rknn.details["target"] == "rk3588"
    assert rknn.details["driver"] == "rknpu"
    assert rknn.details["node"] == "/dev/dri/renderD129"


def test_json_contract() -> None:
    """`perchd hardware --json` prints exactly to_dict(): the acceptance checks read these keys."""
    for board in MATRIX:
        data = json.loads(json.dumps(probe(BOARDS / board).to_dict()))
        assert set(data) >= {"accelerators", "board"}
        assert {"model", "soc"} <= set(data["board"])
        kinds = [a["kind"] for a in data["accelerators"]]
        assert kinds == ["rknn", "edgetpu", "tensorrt", "hailo", "cpu"]
        for acc in data["accelerators"]:
            assert isinstance(acc["present"], bool) and isinstance(acc["usable"], bool)
            assert isinstance(acc["reason"], str) and acc["reason"]
            assert all(isinstance(d, str) for d in acc["devices"])


def test_python_bindings_are_checked_when_asked() -> None:
    """With check_python the probe looks at this interpreter: rknnlite, hailo_platform and onnxruntime-gpu are
    not installed here, ai-edge-litert is."""
    rknn = probe(BOARDS / "orangepi5-rk3588s-vendor", check_python=True).get("rknn")
    assert rknn is not None and rknn.present and not rknn.usable
    assert "rknnlite" in rknn.reason and "rknn-toolkit-lite2" in rknn.reason
    tpu = probe(BOARDS / "pi5-coral-pcie", check_python=True).get("edgetpu")
    assert tpu is not None and tpu.usable
    trt = probe(BOARDS / "jetson-orin-nano-jp6", check_python=True).get("tensorrt")
    assert trt is not None and not trt.usable and "onnxruntime-gpu" in trt.reason
    hailo = probe(BOARDS / "pi5-hailo8l", check_python=True).get("hailo")
    assert hailo is not None and not hailo.usable and "hailo_platform" in hailo.reason


def test_missing_library_reasons(tmp_path: Path) -> None:
    tree = tmp_path / "board"
    shutil.copytree(BOARDS / "pi5-coral-usb-x2", tree, symlinks=True)
    (tree / "usr/lib/aarch64-linux-gnu/libedgetpu.so.1").unlink()
    tpu = probe(tree).get("edgetpu")
    assert tpu is not None and tpu.present and not tpu.usable
    assert "libedgetpu1-std" in tpu.reason
    assert tpu.devices == ["usb:0", "usb:1"]

    tree = tmp_path / "hailo"
    shutil.copytree(BOARDS / "pi5-hailo8l", tree, symlinks=True)
    (tree / "dev/hailo0").unlink()
    hailo = probe(tree).get("hailo")
    assert hailo is not None and hailo.present and not hailo.usable
    assert "/dev/hailo0 is missing" in hailo.reason


def test_probe_never_opens_device_nodes(tmp_path: Path) -> None:
    """Device nodes replaced by FIFOs: opening one would block forever, so a finished probe proves it only
    stat()s them."""
    tree = tmp_path / "board"
    shutil.copytree(BOARDS / "orangepi5-rk3588s-vendor", tree, symlinks=True)
    for node in ("dev/dri/renderD128", "dev/dri/renderD129", "dev/dri/card0"):
        (tree / node).unlink()
        os.mkfifo(tree / node)
    os.makedirs(tree / "dev", exist_ok=True)
    os.mkfifo(tree / "dev/apex_0")
    result: list[HardwareReport] = []
    worker = threading.Thread(target=lambda: result.append(probe(tree)), daemon=True)
    worker.start()
    worker.join(timeout=60)  # a hang guard, not a timing assertion
    assert result, "probe blocked on a device node"
    assert result[0].get("rknn").usable  # type: ignore[union-attr]
    assert result[0].get("edgetpu").devices == ["pci:0"]  # type: ignore[union-attr]


def test_live_probe_reports_all_kinds_with_reasons() -> None:
    report = probe("/")
    assert [a.kind for a in report.accelerators] == list(KINDS)
    cpu = report.get("cpu")
    assert cpu is not None and cpu.usable and cpu.devices == ["cpu"]
    assert report.board.cores >= 1
    for acc in report.accelerators:
        assert acc.reason
        if not acc.present:
            assert not acc.usable and acc.devices == []
