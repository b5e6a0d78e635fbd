"""tests/device/gpu.sh on a machine without an NVIDIA GPU (this one, and CI): it must say so and exit 0 at once,
without creating a venv or downloading anything; its pytest module skips cleanly here too."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "tests" / "device" / "gpu.sh"


def test_gpu_script_skips_cleanly_without_a_gpu(tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PERCHD_GPU_VENV", "PERCHD_WHEELHOUSE")}
    env["PATH"] = "/usr/bin:/bin"  # no nvidia-smi on this machine either way
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "SKIPPED: no NVIDIA GPU" in proc.stdout
    assert not list(os.scandir(tmp_path))  # no venv was made


def test_gpu_tests_skip_without_a_gpu() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PERCHD_GPU_REQUIRED"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           str(REPO / "tests" / "device" / "test_gpu.py")], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 skipped" in proc.stdout and "no NVIDIA GPU here" in proc.stdout
    # Under gpu.sh a missing GPU is a failure, never a green run of skips.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "device" / "test_gpu.py")], env={**env, "PERCHD_GPU_REQUIRED": "1"},
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0 and "no NVIDIA GPU here" in proc.stdout
