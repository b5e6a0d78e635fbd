"""`perchd models convert` and `perchd models import FILE.hef` where no vendor tool is installed: every refusal says
what to do. The real conversion runs in the RKNN simulator job (tests/rknn_sim); serving an imported .hef is in
tests/test_vendor_seam.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from perch.daemon import accel_models
from perch.daemon.__main__ import main as perchd
from perch.daemon.config import Settings
from perch.daemon.custom_models import CustomModelError, scan
from perch.daemon.manifest import load_manifest

from conftest import MODELS


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    model_dir = tmp_path / "models"
    (model_dir / "detection").mkdir(parents=True)
    (model_dir / "detection" / "yolox_nano.onnx").symlink_to(MODELS / "detection" / "yolox_nano.onnx")
    monkeypatch.setenv("PERCHD_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("PERCHD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PERCHD_CONFIG", "")
    monkeypatch.delenv("PERCHD_RKNN_PYTHON", raising=False)
    return model_dir


def test_convert_refusals_say_what_to_do(cli_env: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(accel_models, "TOOLKIT_VENV", tmp_path / "no-venv" / "python")
    assert perchd(["models", "convert", "yolox_nano", "--target", "rk3576"]) == 3
    assert "rknn-toolkit2 is not installed" in capsys.readouterr().err
    # A Python without the toolkit: the converter script itself says so.
    assert perchd(["models", "convert", "yolox_nano", "--target", "rk3566", "--python", sys.executable]) == 3
    assert "rknn-toolkit2 is not importable" in capsys.readouterr().err
    assert perchd(["models", "convert", "yolox_nano", "--target", "rk9999"]) == 1
    assert "unknown Rockchip SoC" in capsys.readouterr().err
    assert perchd(["models", "convert", "ssd_mobilenet_v1", "--target", "rk3588"]) == 1
    assert "no RKNN variant for rk3588" in capsys.readouterr().err
    assert perchd(["models", "convert", "yolox_nano"]) == 2
    assert not (cli_env / "rknn").exists()


def test_every_rockchip_npu_has_a_manifest_slot() -> None:
    from perch.accelerators.probe import _ROCKCHIP_NPU

    variants = [v for v in load_manifest().models["yolox_nano"].variants if v.accelerator == "rknn"]
    for soc, (_, target) in _ROCKCHIP_NPU.items():
        slot = next(v for v in variants if soc in (v.soc or []))
        assert slot.file == f"rknn/yolox_nano_{target}_fp16.rknn" and slot.url is None
        assert f"perchd models convert yolox_nano --target {target}" in (slot.build or "")


def hef_files(tmp: Path, labels: int = 80) -> tuple[Path, Path]:
    hef, names = tmp / "yolov8n.hef", tmp / "labels.txt"
    hef.write_bytes(b"compiled network")
    names.write_text("\n".join(f"class{i}" for i in range(labels)) + "\n")
    return hef, names


def test_hef_import_checks(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "models", state_dir=tmp_path / "state")
    manifest = load_manifest()
    hef, labels = hef_files(tmp_path)
    (tmp_path / "three").mkdir()
    with pytest.raises(CustomModelError, match="has 80 labels"):
        accel_models.import_hef(settings, manifest, hef, hef_files(tmp_path / "three", 3)[1], "yolov8")
    with pytest.raises(CustomModelError, match="decodes with yolov8"):
        accel_models.import_hef(settings, manifest, hef, labels, "yolox")
    with pytest.raises(CustomModelError, match="without a Hailo variant"):
        accel_models.import_hef(settings, manifest, hef, labels, "yolov8", name="yolox_nano")
    with pytest.raises(CustomModelError, match="needs --decoder"):
        accel_models.import_hef(settings, manifest, hef, labels, None, name="gatecam")
    with pytest.raises(CustomModelError, match=r"not a non-empty \.hef"):
        accel_models.import_hef(settings, manifest, labels, labels, "yolov8")
    assert "Hailo build of yolov8n" in accel_models.import_hef(settings, manifest, hef, labels, "yolov8")
    assert (settings.model_dir / "hailo" / "yolov8n.hef").read_bytes() == b"compiled network"
    with pytest.raises(CustomModelError, match="--force"):
        accel_models.import_hef(settings, manifest, hef, labels, None)
    # Any other name: a custom model that runs only on the Hailo.
    accel_models.import_hef(settings, manifest, hef, labels, "yolov8", name="gatecam", size="512x384")
    entries, _, problems = scan(settings.effective_custom_model_dir)
    assert problems == {}
    entry = entries["gatecam"]
    assert [(v.accelerator, Path(v.file).name) for v in entry.variants] == [("hailo", "gatecam.hef")]
    assert entry.input is not None and entry.input.size == (512, 384) and entry.decoder == "yolov8"


def test_pull_wants_only_this_socs_rknn_build() -> None:
    from perch.daemon.pull import wanted_files

    files = [i.ref.file for i in wanted_files(load_manifest(), ["yolox_nano"], ["rknn", "cpu"], "rk3576")]
    assert files == ["rknn/yolox_nano_rk3576_fp16.rknn", "detection/yolox_nano.onnx"]
