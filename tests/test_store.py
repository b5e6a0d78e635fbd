"""The SQLite store: averaged face descriptors, run-time settings, and surviving kill -9 mid-registration."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from perch.daemon.config import Settings
from perch.daemon.store import Store, StoreError, apply_saved_settings, apply_settings

from conftest import MODELS


def vec(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 128)).astype(np.float32)


def test_register_averages_and_reports_added_then_updated(tmp_path: Path) -> None:
    store = Store(tmp_path / "perch.db")
    a, bc = vec(1), vec(2, 2)
    assert store.register_face("ada", a) == "added"
    assert store.register_face("ada", bc) == "updated"
    gallery = store.gallery()
    assert gallery.userids == ("ada",)
    # The mean over all three registered descriptors, not the mean of the two means.
    np.testing.assert_allclose(gallery.vectors[0], np.concatenate([a, bc]).mean(axis=0), rtol=1e-5)
    assert store.register_face("bob", vec(3)) == "added"
    assert store.list_faces() == ["ada", "bob"]
    assert store.delete_face("ada") is True
    assert store.delete_face("ada") is False
    assert store.list_faces() == ["bob"]
    store.close()
    reopened = Store(tmp_path / "perch.db")
    assert reopened.list_faces() == ["bob"]
    assert reopened.integrity_check() == "ok"
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_gallery_is_cached_until_a_change(tmp_path: Path) -> None:
    store = Store(tmp_path / "perch.db")
    store.register_face("ada", vec(1))
    first = store.gallery()
    assert store.gallery() is first
    store.register_face("bob", vec(2))
    assert store.gallery() is not first and len(store.gallery()) == 2
    store.close()


@pytest.mark.parametrize("userid", ["", "   ", "a\x00b", "x" * 300])
def test_bad_userids_are_refused(tmp_path: Path, userid: str) -> None:
    store = Store(tmp_path / "perch.db")
    with pytest.raises(StoreError):
        store.register_face(userid, vec(1))
    store.close()


def test_descriptor_size_mismatch_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "perch.db")
    store.register_face("ada", vec(1))
    with pytest.raises(StoreError, match="size"):
        store.register_face("ada", np.zeros((1, 64), np.float32))
    with pytest.raises(StoreError):
        store.register_face("ada", np.zeros((0, 128), np.float32))
    store.close()


def test_settings_persist_and_apply(tmp_path: Path) -> None:
    settings = Settings(model_dir=MODELS, state_dir=tmp_path)
    store = Store(tmp_path / "perch.db")
    apply_settings(settings, "detection", {"min_confidence": "0.55"})
    assert settings.detection.min_confidence == 0.55
    # Out of range, not a run-time setting, a section that cannot change at run time:
    for section, values in (("detection", {"min_confidence": "7"}), ("detection", {"threads": "2"}),
                            ("queue", {"max_depth": "3"})):
        with pytest.raises(StoreError):
            apply_settings(settings, section, values)
    assert settings.detection.min_confidence == 0.55
    store.set_setting("detection", "model", "yolox_nano")
    store.set_setting("faces", "min_confidence", "0.8")
    store.set_setting("faces", "min_confidence", "0.75")
    store.set_setting("detection", "min_confidence", "not a number")
    fresh = Settings(model_dir=MODELS, state_dir=tmp_path)
    problems = apply_saved_settings(fresh, store)
    # The bad value is reported and skipped for its section; the good sections apply.
    assert len(problems) == 1 and "min_confidence" in problems[0]
    assert fresh.faces.min_confidence == 0.75
    assert fresh.detection.model == "auto"
    store.close()


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from pathlib import Path
    from perch.daemon.store import Store

    store = Store(Path(sys.argv[1]))
    rng = np.random.default_rng(int(sys.argv[2]))
    print("ready", flush=True)
    i = 0
    while True:
        # Registrations and deletions as fast as SQLite commits them: a kill lands inside one.
        store.register_face(f"user{i % 40}", rng.normal(size=(1 + i % 3, 128)).astype(np.float32))
        if i % 7 == 6:
            store.delete_face(f"user{(i * 3) % 40}")
        i += 1
""")


def test_kill_minus_nine_mid_registration_keeps_earlier_faces(tmp_path: Path) -> None:
    db = tmp_path / "perch.db"
    store = Store(db)
    ada = vec(42, 3)
    store.register_face("ada", ada)
    store.close()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, str(script), str(db), str(round_)], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            time.sleep(0.3 + 0.2 * round_)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
        store = Store(db)
        try:
            assert store.integrity_check() == "ok"
            gallery = store.gallery()
            assert "ada" in gallery.userids
            np.testing.assert_allclose(gallery.vectors[gallery.userids.index("ada")], ada.mean(axis=0), rtol=1e-6)
            rows = store._db.execute("SELECT userid, dims, images, length(embedding) FROM faces").fetchall()
            assert len(rows) > 1, "the child registered faces before it was killed"
            assert all(dims == 128 and images >= 1 and size == 128 * 4 for _, dims, images, size in rows)
        finally:
            store.close()
