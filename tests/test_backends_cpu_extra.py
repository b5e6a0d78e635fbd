"""The OpenCV (YuNet, dnn_superres) and dlib Sessions on the real shared models and photos, their routing from the
manifest's `runtime:` field, and their BackendUnavailable paths (faked at the vendor-import seam)."""

from __future__ import annotations

import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from perch.accelerators import cpu_dlib, cpu_opencv
from perch.accelerators.base import (
    BackendUnavailable,
    InferenceError,
    ModelLoadError,
    OpenOptions,
    Session,
    backend_for_file,
    get_backend,
)
from perch.daemon.manifest import Variant, load_manifest

from conftest import IMAGES, MODELS

YUNET = MODELS / "face-detection/face_detection_yunet_2026may.onnx"
LANDMARKS = MODELS / "face-embedding/shape_predictor_5_face_landmarks.dat"
DESCRIPTOR = MODELS / "face-embedding/dlib_face_recognition_resnet_model_v1.dat"
ESPCN_X2 = MODELS / "superres/ESPCN_x2.pb"


def bgr(name: str) -> np.ndarray:
    image = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


@pytest.fixture(scope="module")
def yunet() -> Session:
    return get_backend("opencv-yunet").open(YUNET, OpenOptions())


@pytest.fixture(scope="module")
def dlib_session() -> Session:
    return get_backend("dlib").open(DESCRIPTOR, OpenOptions(extra={cpu_dlib.LANDMARKS: str(LANDMARKS)}))


def boxes_of(rows: np.ndarray) -> np.ndarray:
    return np.stack([rows[:, 0], rows[:, 1], rows[:, 0] + rows[:, 2], rows[:, 1] + rows[:, 3]], 1).astype(np.int32)


def largest_descriptor(yunet: Session, dlib_session: Session, image: np.ndarray) -> np.ndarray:
    rows = yunet.run([image])[0]
    assert len(rows) >= 1
    biggest = rows[np.argmax(rows[:, 2] * rows[:, 3])][None]
    out = dlib_session.run([cv2.cvtColor(image, cv2.COLOR_BGR2RGB), boxes_of(biggest)])[0]
    assert out.shape == (1, 128) and out.dtype == np.float32
    return out[0]


def test_manifest_routes_the_task_models_to_their_runtimes() -> None:
    manifest = load_manifest()
    expected = {"yunet_face": "opencv-yunet", "dlib_face_resnet": "dlib", "espcn_x2": "opencv-superres"}
    for model_id, runtime in expected.items():
        variant = manifest.models[model_id].variants[0]
        assert variant.runtime == runtime
        assert backend_for_file("cpu", Path(variant.file), variant.runtime) == runtime
    # Without a runtime the file suffix decides, as before.
    assert backend_for_file("cpu", Path("m.onnx")) == "cpu_onnx"
    assert backend_for_file("cpu", Path("m.tflite")) == "cpu_tflite"
    with pytest.raises(ValueError, match="unknown runtime"):
        Variant(accelerator="cpu", file="x.onnx", runtime="opencv-yunett")


def test_yunet_finds_four_faces_at_any_size(yunet: Session) -> None:
    image = bgr("face.jpg")
    rows = yunet.run([image, np.array(0.6, np.float32)])[0]
    assert rows.shape == (4, 15) and rows.dtype == np.float32
    assert (rows[:, 14] >= 0.6).all()
    # A new size resets the detector's input size; the same faces come back, in the smaller image's pixels.
    half = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    small = yunet.run([half])[0]
    assert len(small) == 4
    assert abs(float(np.sort(small[:, 0])[0]) * 2 - float(np.sort(rows[:, 0])[0])) < 8
    # The score threshold is a per-run input: above every score, nothing is left.
    assert yunet.run([image, np.array(0.999, np.float32)])[0].shape == (0, 15)


def test_yunet_rejects_a_grey_image(yunet: Session) -> None:
    with pytest.raises(InferenceError, match="HxWx3"):
        yunet.run([np.zeros((32, 32), np.uint8)])


def test_dlib_descriptors_tell_people_apart(yunet: Session, dlib_session: Session) -> None:
    obama1 = largest_descriptor(yunet, dlib_session, bgr("faces/train_obama_obama.jpg"))
    obama2 = largest_descriptor(yunet, dlib_session, bgr("faces/train_obama_obama2.jpg"))
    biden = largest_descriptor(yunet, dlib_session, bgr("faces/train_biden_biden.jpg"))
    assert np.linalg.norm(obama1 - obama2) < 0.6
    assert np.linalg.norm(obama1 - biden) > 0.6


def test_dlib_describes_every_box_and_none(yunet: Session, dlib_session: Session) -> None:
    image = bgr("face.jpg")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    boxes = boxes_of(yunet.run([image])[0])
    out = dlib_session.run([rgb, boxes])[0]
    assert out.shape == (4, 128)
    # Four different people, and a batch gives what one face at a time gives.
    assert min(np.linalg.norm(out[i] - out[j]) for i in range(4) for j in range(i + 1, 4)) > 0.6
    np.testing.assert_allclose(dlib_session.run([rgb, boxes[2:3]])[0][0], out[2], atol=1e-6)
    assert dlib_session.run([rgb, np.zeros((0, 4), np.int32)])[0].shape == (0, 128)


def test_dlib_needs_the_landmark_model_named() -> None:
    with pytest.raises(ModelLoadError, match="landmarks"):
        get_backend("dlib").open(DESCRIPTOR, OpenOptions())
    with pytest.raises(ModelLoadError, match="landmark model"):
        get_backend("dlib").open(DESCRIPTOR, OpenOptions(extra={cpu_dlib.LANDMARKS: str(DESCRIPTOR)}))


def test_superres_doubles_the_size() -> None:
    session = get_backend("opencv-superres").open(ESPCN_X2, OpenOptions())
    image = cv2.resize(bgr("face.jpg"), (160, 120), interpolation=cv2.INTER_AREA)
    out = session.run([image])[0]
    assert out.shape == (240, 320, 3) and out.dtype == np.uint8
    session.close()
    with pytest.raises(InferenceError, match="closed"):
        session.run([image])


def test_superres_algorithm_and_scale_from_the_name() -> None:
    assert cpu_opencv.superres_model(Path("ESPCN_x2.pb")) == ("espcn", 2)
    assert cpu_opencv.superres_model(Path("FSRCNN-small_x3.pb")) == ("fsrcnn", 3)
    assert cpu_opencv.superres_model(Path("LapSRN_x8.pb")) == ("lapsrn", 8)
    with pytest.raises(ModelLoadError, match="ESPCN"):
        cpu_opencv.superres_model(Path("upscaler.pb"))


def test_fsrcnn_x3_triples_the_size() -> None:
    session = get_backend("opencv-superres").open(MODELS / "superres/FSRCNN_x3.pb", OpenOptions())
    assert session.run([np.zeros((20, 30, 3), np.uint8)])[0].shape == (60, 90, 3)


def test_opencv_without_contrib_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    # The plain opencv-python wheel: cv2 imports, dnn_superres is not there.
    plain = types.SimpleNamespace(__version__="4.10.0", error=cv2.error)
    monkeypatch.setattr(cpu_opencv, "import_cv2", lambda: plain)
    with pytest.raises(BackendUnavailable, match=r"opencv-contrib-python-headless<5"):
        get_backend("opencv-superres").open(ESPCN_X2, OpenOptions())
    with pytest.raises(BackendUnavailable, match="FaceDetectorYN"):
        get_backend("opencv-yunet").open(YUNET, OpenOptions())


def test_missing_vendor_libraries_are_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_vendor(name: str, *args: object, **kwargs: object) -> object:
        if name in ("dlib", "cv2"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_vendor)
    with pytest.raises(BackendUnavailable, match="pip install dlib-bin"):
        get_backend("dlib").open(DESCRIPTOR, OpenOptions(extra={cpu_dlib.LANDMARKS: str(LANDMARKS)}))
    with pytest.raises(BackendUnavailable, match="opencv-contrib-python-headless<5"):
        get_backend("opencv-superres").open(ESPCN_X2, OpenOptions())


async def test_tasks_report_a_missing_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the registry: the face and super-resolution tasks say which package to install."""
    from perch.daemon.config import Settings
    from perch.daemon.core import Core
    from perch.daemon.registry import ModelUnavailable
    from perch.daemon.vision.enhance import get_superres_task
    from perch.daemon.vision.faces import get_face_task

    def no_dlib() -> object:
        raise BackendUnavailable("dlib is not installed: pip install dlib-bin")

    monkeypatch.setattr(cpu_dlib, "import_dlib", no_dlib)
    # An OpenCV without the contrib modules: YuNet is there, dnn_superres is not.
    plain = types.SimpleNamespace(__version__=cv2.__version__, error=cv2.error, FaceDetectorYN=cv2.FaceDetectorYN)
    monkeypatch.setattr(cpu_opencv, "import_cv2", lambda: plain)
    core = Core(Settings(model_dir=MODELS, state_dir=tmp_path / "s", cache_dir=tmp_path / "c", legacy_port=0,
                         cpu={"workers": 1, "threads": 1}))
    try:
        with pytest.raises(ModelUnavailable, match="dlib-bin"):
            await get_face_task(core.registry, 10_000_000)
        with pytest.raises(ModelUnavailable, match=r"ESPCN_x2\.pb.*opencv-contrib-python-headless<5"):
            await get_superres_task(core.registry, 10_000_000)
        assert {"faces", "superresolution"} <= set(core.registry.unavailable)
        # With the real libraries back, the same registry loads both, each worker holding Sessions.
        monkeypatch.undo()
        faces = await get_face_task(core.registry, 10_000_000)
        assert faces.loaded.files == [YUNET.name, LANDMARKS.name, DESCRIPTOR.name]
        assert len((await faces.detect(bgr("face.jpg"), 0.6)).faces) == 4
        superres = await get_superres_task(core.registry, 10_000_000)
        assert superres.scale == 2 and superres.loaded.kind == "cpu"
        assert all(isinstance(s, Session) for s in superres.loaded.pool.sessions)
    finally:
        core.registry.close()
