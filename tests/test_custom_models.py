"""Custom models: sidecar scanning, `perchd models import`, and serving an imported model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from perch.daemon.__main__ import main
from perch.daemon.api.common import CODEPROJECT
from perch.daemon.app import create_app
from perch.daemon.config import Settings
from perch.daemon.core import Core
from perch.daemon.custom_models import CustomModelError, import_model, scan, valid_name
from perch.daemon.manifest import load_manifest

from conftest import MODELS, image_bytes

YOLOX = MODELS / "detection" / "yolox_nano.onnx"


@pytest.fixture
def coco_labels(tmp_path: Path) -> Path:
    path = tmp_path / "coco.txt"
    path.write_text("\n".join(load_manifest().label_sets["coco80"]) + "\n")
    return path


@pytest.mark.parametrize(("name", "ok"), [("ipcam-general", True), ("cars_2", True), ("A", True), ("..", False),
                                          ("a/b", False), ("a.b", False), ("-x", False), ("a\x00", False),
                                          ("", False), ("x" * 65, False)])
def test_names_are_plain_identifiers(name: str, ok: bool) -> None:
    assert valid_name(name) is ok


def test_import_detects_yolox_and_writes_sidecar(tmp_path: Path, coco_labels: Path) -> None:
    directory = tmp_path / "custom"
    sidecar = import_model(directory, YOLOX, coco_labels, name="my-yolox")
    meta = yaml.safe_load(sidecar.read_text())
    assert meta["decoder"] == "yolox" and meta["input"]["size"] == [416, 416] and meta["input"]["color"] == "BGR"
    assert (directory / "my-yolox.onnx").stat().st_size == YOLOX.stat().st_size
    entries, _, problems = scan(directory)
    assert list(entries) == ["my-yolox"] and problems == {}
    with pytest.raises(CustomModelError, match="--force"):
        import_model(directory, YOLOX, coco_labels, name="my-yolox")
    import_model(directory, YOLOX, coco_labels, name="my-yolox", force=True)


def test_import_refuses_what_it_cannot_serve(tmp_path: Path, coco_labels: Path) -> None:
    directory = tmp_path / "custom"
    three = tmp_path / "three.txt"
    three.write_text("cat\ndog\nbird\n")
    with pytest.raises(CustomModelError, match="no known detector head"):
        import_model(directory, YOLOX, three, name="wrong-labels")
    with pytest.raises(CustomModelError, match="plain identifier"):
        import_model(directory, YOLOX, coco_labels, name="../escape")
    with pytest.raises(CustomModelError, match="ONNX"):
        import_model(directory, MODELS / "detection" / "ssd_mobilenet_v1_coco_quant_postprocess.tflite", coco_labels)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"<html>not a model</html>")
    with pytest.raises(CustomModelError):
        import_model(directory, garbage, coco_labels)
    assert not directory.exists() or not list(directory.glob("*.yaml"))


def test_sidecar_cannot_point_outside_its_directory(tmp_path: Path) -> None:
    directory = tmp_path / "custom"
    directory.mkdir()
    (directory / "evil.yaml").write_text(yaml.safe_dump({"decoder": "yolox", "file": "../../etc/passwd",
                                                         "labels": ["a"]}))
    (directory / "abs.yaml").write_text(yaml.safe_dump({"decoder": "yolox", "file": str(YOLOX), "labels": ["a"]}))
    (directory / "bad.name.yaml").write_text(yaml.safe_dump({"decoder": "yolox", "labels": ["a"]}))
    (directory / "nodecoder.yaml").write_text(yaml.safe_dump({"labels": ["a"]}))
    (directory / "nodecoder.onnx").symlink_to(YOLOX)
    entries, _, problems = scan(directory)
    assert entries == {}
    assert set(problems) == {"evil.yaml", "abs.yaml", "bad.name.yaml", "nodecoder.yaml"}


async def test_cli_import_then_route(tmp_path: Path, coco_labels: Path, monkeypatch: pytest.MonkeyPatch,
                                     aiohttp_client: object, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PERCHD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PERCHD_MODEL_DIR", str(MODELS))
    monkeypatch.delenv("PERCHD_CONFIG", raising=False)
    assert main(["models", "import", str(YOLOX), "--labels", str(coco_labels), "--name", "porch"]) == 0
    assert "/v1/vision/custom/porch" in capsys.readouterr().out
    assert main(["models", "import", str(YOLOX)]) == 2  # --labels is required
    assert (tmp_path / "state" / "custom-models" / "porch.yaml").is_file()

    core = Core(Settings(model_dir=MODELS, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                         legacy_port=0, cpu={"workers": 1}))
    await core.start()
    try:
        client: TestClient = await aiohttp_client(create_app(core, CODEPROJECT))  # type: ignore[operator]
        body = await (await client.post("/v1/vision/custom/list")).json()
        assert "porch" in body["models"]
        fd = FormData()
        fd.add_field("image", image_bytes("dog_bicycle_car.jpg"), filename="x.jpg")
        body = await (await client.post("/v1/vision/custom/porch", data=fd)).json()
        assert body["success"] and body["predictions"][0]["label"] == "dog"
    finally:
        await core.close()
